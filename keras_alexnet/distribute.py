"""Choosing a `tf.distribute` strategy, in the manner of tensorflow/models' distribute_utils.

For TPUs the strategy (and its scope) must exist before any dataset or model is built.
"""

import functools
import json
import os
import sys

import tensorflow as tf

from keras_alexnet.errors import UsageError, first_line

STRATEGIES = ("auto", "default", "one_device", "mirrored", "multi_worker", "tpu")


def get_strategy(name="auto", tpu=None, num_gpus=None, stream=None):
    """Return the tf.distribute strategy called `name`.

    auto: TPU if `tpu` is given, MirroredStrategy for 2+ GPUs, OneDeviceStrategy on the one GPU,
    the default strategy otherwise. mirrored: all local GPUs (or all logical CPUs if there are no
    GPUs, which is how the tests run it; one device: OneDeviceStrategy). multi_worker: MultiWorkerMirroredStrategy from TF_CONFIG.
    tpu: TPUStrategy on `tpu` ("local" on a TPU VM, or a TPU name or grpc:// address).
    `num_gpus` limits the GPUs used (None: all). A multi-worker run says on `stream` (None: stdout)
    that it waits for the other workers, since TensorFlow waits for them without a word.
    """
    if name not in STRATEGIES:
        raise UsageError(f"--strategy={name!r} is unknown: use one of {', '.join(STRATEGIES)}.")
    if name == "multi_worker":
        # Must come before anything initializes the TensorFlow runtime (listing devices does).
        return _multi_worker_strategy(stream)
    if name == "tpu" or (name == "auto" and tpu):
        # Before anything lists devices: connecting to a TPU cluster resets the runtime's context.
        return _tpu_strategy(tpu)
    if num_gpus is not None and num_gpus < 0:  # gpus[:-1] would silently leave one GPU out
        raise UsageError(f"--num_gpus={num_gpus} must be 0 or more (leave it unset to use every GPU).")
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    if num_gpus is not None:
        if num_gpus > len(gpus):
            raise UsageError(f"--num_gpus={num_gpus} but this machine has {len(gpus)} GPU(s): lower --num_gpus.")
        gpus = gpus[:num_gpus]
    if name == "auto":
        name = "mirrored" if len(gpus) >= 2 else "one_device" if gpus else "default"
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy(gpus[0] if gpus else "/cpu:0")
    return _mirrored_or_one(tuple(gpus or [d.name for d in tf.config.list_logical_devices("CPU")]))


def _mirrored_or_one(devices):
    """MirroredStrategy over `devices`; over one device, a OneDeviceStrategy, which computes the
    same and keeps the update compiled with the step under XLA (`--strategy mirrored` on a
    one-GPU or CPU machine: the mirrored step ran 7-9% slower on this CPU, docs/performance.md)."""
    if len(devices) == 1:
        return tf.distribute.OneDeviceStrategy(devices[0])
    return _mirrored(devices)


@functools.lru_cache(maxsize=None)
def _mirrored(devices):
    # One MirroredStrategy per device set per process. Every new MirroredStrategy numbers its
    # collective ops from the same keys, and the runtime remembers each key's tensor shape, so a
    # second strategy that all-reduces a different model fails with "Shape mismatch in the
    # collective instance". One strategy hands out fresh keys to every model it trains.
    return tf.distribute.MirroredStrategy(list(devices))


TF_CONFIG_EXAMPLE = '{"cluster": {"worker": ["host1:port", "host2:port"]}, "task": {"type": "worker", "index": 0}}'


def tf_config():
    """TF_CONFIG's cluster and task, checked: a UsageError names what is wrong and the fix."""
    if "TF_CONFIG" not in os.environ:
        raise UsageError("--strategy=multi_worker needs the TF_CONFIG environment variable (cluster and task): set it on every worker.")
    try:
        value = json.loads(os.environ["TF_CONFIG"])
    except json.JSONDecodeError as error:
        raise UsageError(f"TF_CONFIG is not valid JSON ({error.msg} at character {error.pos}): set it like {TF_CONFIG_EXAMPLE}.") from None
    cluster = value.get("cluster") if isinstance(value, dict) else None
    task = value.get("task") if isinstance(value, dict) else None
    if not isinstance(cluster, dict) or not (cluster.get("worker") or cluster.get("chief")):
        raise UsageError(f"TF_CONFIG has no \"cluster\" with a \"worker\" (or \"chief\") list of host:port addresses: set it like {TF_CONFIG_EXAMPLE}.")
    if not isinstance(task, dict):
        raise UsageError('TF_CONFIG has no "task": give each machine its own {"type": "worker", "index": i} beside the cluster.')
    kind, index = task.get("type"), task.get("index")
    if kind not in ("chief", "worker") or not isinstance(index, int) or not 0 <= index < len(cluster.get(kind) or ()):
        raise UsageError(f"TF_CONFIG's \"task\" {json.dumps(task)} is not one of its cluster's chief or worker entries "
                         f"({json.dumps(cluster)}): give each machine its own {{\"type\": \"worker\", \"index\": i}}.")
    return cluster, task


def _multi_worker_strategy(stream):
    cluster, task = tf_config()
    addresses = {(kind, i): address for kind in ("chief", "worker") for i, address in enumerate(cluster.get(kind) or ())}
    me = (task["type"], task["index"])
    if len(addresses) > 1:
        others = ", ".join(address for key, address in addresses.items() if key != me)
        print(f"multi_worker: this is {me[0]} {me[1]} of {len(addresses)} ({addresses[me]}); waiting for the others to "
              f"connect ({others}): start the same command on each, with its own TF_CONFIG task.", file=stream or sys.stdout, flush=True)
    return tf.distribute.MultiWorkerMirroredStrategy()


def _tpu_strategy(tpu):
    # The documented TF 2.x sequence (tensorflow.org/guide/tpu): resolve, connect, initialize.
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "")
        if tpu not in (None, "", "local"):
            tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, OSError, tf.errors.OpError) as error:  # OSError: a TPU name not resolved
        raise UsageError(
            f"--strategy=tpu: no TPU found (--tpu={tpu or ''!r}: {first_line(error, 120)}); run on a TPU VM with --tpu=local or name a TPU."
        ) from None
    return tf.distribute.TPUStrategy(resolver)


def is_chief(strategy):
    """True on the one worker that writes checkpoints, logs and exports."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type is None:
        return True
    if task_type == "chief":
        return True
    has_chief = "chief" in tf_config()[0]
    return task_type == "worker" and task_id == 0 and not has_chief


def worker_id(strategy):
    """A short name for this worker, for temporary files of non-chief workers."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or resolver.task_type is None:
        return "worker0"
    return f"{resolver.task_type}{resolver.task_id}"


def _is_default(strategy):
    # TensorFlow's private _DefaultDistributionStrategy: no tf.distribute strategy asked for.
    return type(strategy).__name__.startswith("_Default")


def is_single_device(strategy):
    """TensorFlow's default strategy or a OneDeviceStrategy: one replica, no cross-device merge."""
    return isinstance(strategy, tf.distribute.OneDeviceStrategy) or _is_default(strategy)


def strategy_name(strategy):
    """The strategy's class name for people: "default strategy" for TensorFlow's private
    _DefaultDistributionStrategy (no tf.distribute strategy asked for)."""
    return "default strategy" if _is_default(strategy) else type(strategy).__name__


def device_kind():
    """'tpu', 'gpu' or 'cpu': what the default precision and XLA choices depend on."""
    if tf.config.list_logical_devices("TPU"):
        return "tpu"
    if tf.config.list_physical_devices("GPU"):
        return "gpu"
    return "cpu"


def default_precision(kind, strategy=None):
    """mixed_bfloat16 on TPU and on GPUs of compute capability 8.0+ (Ampere), mixed_float16 on
    older GPUs (Volta, Turing: fast float16, no bfloat16), float32 on CPU."""
    if kind == "tpu" or isinstance(strategy, tf.distribute.TPUStrategy):
        return "mixed_bfloat16"
    if kind == "gpu":
        details = tf.config.experimental.get_device_details(tf.config.list_physical_devices("GPU")[0])
        capability = details.get("compute_capability", (0, 0))
        return "mixed_bfloat16" if capability >= (8, 0) else "mixed_float16"
    return "float32"


# The CPU features that decide how fast (and in which precision) the training step runs: AVX2/FMA
# (every x86 server since 2013), AVX-512, bfloat16 dot products (AVX512-BF16) and the AMX tile unit.
CPU_FEATURES = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def _cpuinfo_fields(cpuinfo="/proc/cpuinfo"):
    """The first processor's fields of /proc/cpuinfo ({} where there is none: not Linux)."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return {}
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:
            fields[key.strip()] = value.strip()
    return fields


def cpu_features(cpuinfo="/proc/cpuinfo"):
    """Which of CPU_FEATURES this CPU has (a set; empty where /proc/cpuinfo is not there)."""
    flags = set(_cpuinfo_fields(cpuinfo).get("flags", "").split())
    return {feature for feature in CPU_FEATURES if feature in flags}


def cpu_description(cpuinfo="/proc/cpuinfo"):
    """'MODEL (feature feature ...)': the CPU model name and which of CPU_FEATURES it has, read
    from /proc/cpuinfo (Linux); the platform's processor name elsewhere."""
    import platform

    fields = _cpuinfo_fields(cpuinfo)
    if not fields:
        return platform.processor() or platform.machine()
    present = cpu_features(cpuinfo)
    names = [feature for feature in CPU_FEATURES if feature in present]
    return f"{fields.get('model name', platform.machine())} ({' '.join(names) or 'none of ' + '/'.join(CPU_FEATURES)})"


# XLA for the training step on CPU, by what was measured (docs/performance.md, "XLA on CPU, by
# machine"): on AVX2-only CPUs it is faster at every size (+34% at 227, AMD EPYC Zen 1); on
# AVX-512 CPUs TensorFlow's own oneDNN kernels beat it from about 96 px (x1.21 at 99, x1.28 at
# 131, x1.39 at 227 on an AMD EPYC with AVX-512; x1.38 at 227 on an Intel Sapphire Rapids) while
# XLA stays ahead below (x1.02-1.16 at 67-83 px). An AVX-512 core capped at AVX2 behaved like
# the AVX-512 machines (XLA off x1.09 at 227), but it is an emulation, not a measured AVX2 machine.
XLA_OFF_FROM_SIZE_ON_AVX512 = 96


def default_xla(kind, image_size, features=None, precision="float32"):
    """Whether the training step compiles with XLA when --xla is not given: always on GPUs and
    TPUs; on CPUs by `features` (default: this CPU's), the input size and the precision, as
    measured. bfloat16 on a CPU runs faster without XLA at every size measured (x1.15 at 67 px,
    x2.0 at 227 on an AMD EPYC with AVX512-BF16; docs/performance.md), whose XLA CPU backend
    lacks oneDNN's bfloat16 kernels. float16 on a CPU is the reverse: without XLA it ran
    4.3x slower at 227 and 3.0x slower at 67 px on the same machine (no oneDNN float16 kernels)."""
    if kind != "cpu":
        return True
    if precision == "mixed_bfloat16":
        return False
    if precision == "mixed_float16":
        return True
    features = cpu_features() if features is None else features
    return "avx512f" not in features or image_size < XLA_OFF_FROM_SIZE_ON_AVX512


def onednn_settings(environ=None):
    """The environment variables, as set, that change what TensorFlow's oneDNN kernels compute on
    a CPU, each as a few words for a benchmark's header ([] when none is set). TensorFlow reads
    both once per process: TF_ENABLE_ONEDNN_OPTS=0 turns oneDNN off; TF_SET_ONEDNN_FPMATH_MODE=BF16
    (that spelling only) lets it multiply float32 in bfloat16, which its convolutions do on AMX
    CPUs alone (docs/performance.md)."""
    environ = os.environ if environ is None else environ
    settings = []
    if environ.get("TF_ENABLE_ONEDNN_OPTS", "").strip().lower() in ("0", "false"):
        settings.append("oneDNN off (TF_ENABLE_ONEDNN_OPTS=0)")
    if environ.get("TF_SET_ONEDNN_FPMATH_MODE") == "BF16":
        settings.append("float32 math in bfloat16 where oneDNN has it (TF_SET_ONEDNN_FPMATH_MODE=BF16)")
    return settings


def machine_description():
    """One line naming what a benchmark ran on: the CPU and its relevant features, the oneDNN
    settings that change its results, and the GPUs (name, compute capability) or TPUs TensorFlow
    sees."""
    parts = [f"CPU {cpu_description()}, {os.cpu_count()} cores", *onednn_settings()]
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        details = tf.config.experimental.get_device_details(gpu)
        capability = ".".join(map(str, details.get("compute_capability", ()))) or "?"
        parts.append(f"GPU {details.get('device_name', gpu.name)} (compute capability {capability})")
    tpus = tf.config.list_logical_devices("TPU")
    if tpus:
        parts.append(f"{len(tpus)} TPU cores")
    return "; ".join(parts)
