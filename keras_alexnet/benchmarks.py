"""Benchmarks, one function per mode, each returning a dict (scripts/benchmark.py prints them;
docs/performance.md has the figures and what they mean).

    train: `train_benchmark`, steps of the project's training engine (`training.Trainer`) on a
           synthetic batch already on the device: images/s, ms/step, achieved GFLOP/s and the
           ceiling fraction (achieved over a large matmul in the same dtype, same device, same run).
    infer: `infer_benchmark`, the Keras model and the exported SavedModel: batch-1 latency and
           batch-N throughput, with the same figures.
    input: `input_benchmark`, the training input pipeline's images/s (read, fused decode-and-crop,
           flip, lighting, mean subtraction, batch) on a folder of ImageNet-sized JPEGs it writes
           itself, against the plain full-image decode rate of the same files, with the same
           number of threads, in the same run.

`model.model_flops` counts a model's FLOPs from its own layers; `layer_profile` times each layer on its
own (forward and backward) to show where a step's time goes.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import types

import keras
import numpy as np
import tensorflow as tf
from PIL import Image

from keras_alexnet import augment, data, distribute, export, logs, recipes, run_config, training
from keras_alexnet.errors import UsageError, first_line
from keras_alexnet.layers import TwoColumnConv2D
from keras_alexnet.model import build, layer_flops, model_flops
from keras_alexnet import image_folder


def write_jpeg_folder(root, num_images=200, width=500, height=375, num_classes=2, seed=0, quality=90):
    """Write `num_images` photo-like JPEGs (smooth colour fields plus texture, ~ImageNet file sizes)
    as root/train/class_k/*.jpg. Returns root."""
    rng = np.random.default_rng(seed)
    for k in range(num_classes):
        os.makedirs(os.path.join(root, "train", f"class_{k}"), exist_ok=True)
    for index in range(num_images):
        coarse = rng.uniform(0, 255, (height // 25 + 1, width // 25 + 1, 3)).astype(np.uint8)
        image = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC), np.float32)
        image += rng.normal(0, 12, image.shape)
        path = os.path.join(root, "train", f"class_{index % num_classes}", f"{index:05d}.jpg")
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(path, "JPEG", quality=quality)
    return root


def _describe_images(paths):
    """'500x375 JPEG, mean 79 kB' (or the range of sizes) for the files the benchmark read."""
    sizes, formats = set(), set()
    for path in paths:
        with Image.open(path) as image:  # reads the header only
            sizes.add(image.size)
            formats.add(image.format)
    by_area = sorted(sizes, key=lambda size: size[0] * size[1])
    smallest, largest = (f"{width}x{height}" for width, height in (by_area[0], by_area[-1]))
    size = smallest if smallest == largest else f"{smallest} to {largest}"
    mean_bytes = float(np.mean([os.path.getsize(path) for path in paths]))
    return f"{size} {'/'.join(sorted(formats))}, mean {mean_bytes / 1000:.0f} kB"


def _threading(threads):
    options = tf.data.Options()
    options.threading.private_threadpool_size = threads
    options.threading.max_intra_op_parallelism = 1
    options.autotune.cpu_budget = threads
    return options


def _rates(dataset, batch_size, num_batches, warmup_batches=3):
    """(images per wall-clock second, images per CPU second of this process)."""
    iterator = iter(dataset)
    for _ in range(warmup_batches):
        next(iterator)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(num_batches):
        next(iterator)
    images = num_batches * batch_size
    return images / (time.perf_counter() - wall), images / (time.process_time() - cpu)


def _plain_decode_dataset(paths, batch_size, threads):
    """Read and fully decode every file, nothing else: the reference rate."""
    dataset = tf.data.Dataset.from_tensor_slices(paths).repeat()
    dataset = dataset.map(lambda path: tf.io.decode_jpeg(tf.io.read_file(path), channels=3),
                          num_parallel_calls=tf.data.AUTOTUNE)
    # Images differ in size only if the folder does; count them, do not stack them.
    dataset = dataset.map(lambda image: tf.shape(image)[0]).batch(batch_size)
    return dataset.with_options(_threading(threads)).prefetch(2)


def _step_datasets(paths, image_size, batch_size, threads, augmentation, seed):
    """The training pipeline's per-image work one step at a time, on the same files: the fused
    decode-and-crop of the random window alone, then `augment.train_crop` (+ flip, resize to S)."""
    examples = tf.data.Dataset.from_tensor_slices(paths).repeat().enumerate().map(
        lambda index, path: (tf.io.read_file(path), tf.stack([tf.constant(seed, tf.int64), index])))

    def crop(image_bytes, example_seed):
        window_fn = augment.crop_window_fn(augmentation, image_size, example_seed)
        return tf.shape(augment.decode_random_crop(image_bytes, window_fn, min_side=image_size))[0]

    def crop_flip_resize(image_bytes, example_seed):
        return augment.train_crop(image_bytes, image_size, example_seed, augmentation)

    steps = {"fused decode-and-crop": crop, "+ flip, resize to S (train_crop)": crop_flip_resize}
    return {name: examples.map(fn, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size)
            .with_options(_threading(threads)).prefetch(2) for name, fn in steps.items()}


def input_benchmark(*, image_dir=None, dataset=None, num_images=200, width=500, height=375, image_size=227, batch_size=32,
                    num_batches=20, runs=5, threads=1, augmentation="paper", image_dtype="uint8", seed=0,
                    steps=False):
    """Training input pipeline vs plain decode, images/s, `runs` times; medians and per-run ratios.

    Args:
        image_dir: a folder in the layout `DIR/train/<class>/*.jpg`; None: write `num_images`
            JPEGs of `width` x `height` to a temporary folder.
        dataset: a dataset string for the training pipeline instead of `folder:image_dir`, e.g.
            the same photos prepared as "tfrecord:DIR" (scripts/prepare_data.py); the plain decode
            still reads image_dir's files, the reference.
        threads: tf.data threads for both pipelines (1 gives the per-core rate).
        image_dtype: "uint8" (default): the batches the Trainer gets, uint8 crops and lighting
            shifts; "float32": the model's input, finished on the host (data.make_dataset).
        steps: also time the pipeline's per-image steps on their own (`_step_datasets`), in
            each run, to show where the time goes ("paper" and "inception" only).
    Returns:
        dict with images_per_sec (training pipeline, median), decode_images_per_sec (median),
        ratio (median of the per-run ratios), *_per_core, runs (the per-run figures) and the setup;
        with steps=True, "steps": [{name, images_per_cpu_sec, ratio}] (medians), the plain
        decode first and the whole pipeline last.
    """
    if steps and augmentation == "none":
        raise UsageError("the step breakdown needs a random crop: use --augmentation=paper or inception")
    with tempfile.TemporaryDirectory() as scratch:
        if image_dir is None:
            image_dir = write_jpeg_folder(os.path.join(scratch, "jpegs"), num_images, width, height, seed=seed)
        pipeline = data.make_dataset(dataset or f"folder:{image_dir}", "train", image_size=image_size, batch_size=batch_size,
                                     training=True, seed=seed, augmentation=augmentation, image_dtype=image_dtype)
        pipeline = pipeline.with_options(_threading(threads))
        paths = list(image_folder.folder_files(image_dir, "train")[0])
        decode = _plain_decode_dataset(paths, batch_size, threads)
        step_datasets = _step_datasets(paths, image_size, batch_size, threads, augmentation, seed) if steps else {}
        results = []
        for _ in range(runs):
            decode_wall, decode_cpu = _rates(decode, batch_size, num_batches)
            step_rates = {name: _rates(dataset, batch_size, num_batches)[1] for name, dataset in step_datasets.items()}
            pipeline_wall, pipeline_cpu = _rates(pipeline, batch_size, num_batches)
            results.append({
                "images_per_sec": pipeline_wall, "decode_images_per_sec": decode_wall,
                "images_per_cpu_sec": pipeline_cpu, "decode_images_per_cpu_sec": decode_cpu,
                "ratio": pipeline_cpu / decode_cpu,
            })
            if steps:
                results[-1]["steps_images_per_cpu_sec"] = {
                    "read + full decode (plain)": decode_cpu, **step_rates,
                    "the whole pipeline (make_dataset)": pipeline_cpu}
        source_images = _describe_images(paths) + (f"; pipeline reads {dataset}" if dataset else "")
    return {
        "mode": "input",
        **_input_medians(results, steps),
        "runs": results,
        "threads": threads,
        "image_size": image_size,
        "batch_size": batch_size,
        "images_per_run": batch_size * num_batches,
        "augmentation": augmentation,
        "image_dtype": image_dtype,
        "source_images": source_images,
    }


def _input_medians(results, steps):
    """The medians over input_benchmark's runs, and with `steps` each step's row."""
    median = statistics.median
    summary = {
        "images_per_sec": median(r["images_per_sec"] for r in results),
        "decode_images_per_sec": median(r["decode_images_per_sec"] for r in results),
        "ratio": median(r["ratio"] for r in results),
        # Per core: images per CPU-second the process spent (robust to other load on the machine).
        "images_per_sec_per_core": median(r["images_per_cpu_sec"] for r in results),
        "decode_images_per_sec_per_core": median(r["decode_images_per_cpu_sec"] for r in results),
    }
    if steps:
        summary["steps"] = []
        for name in results[0]["steps_images_per_cpu_sec"]:
            rates = [r["steps_images_per_cpu_sec"][name] for r in results]
            summary["steps"].append({"name": name, "images_per_cpu_sec": median(rates),
                                     "ratio": median(rate / r["decode_images_per_cpu_sec"] for rate, r in zip(rates, results))})
    return summary


# -- FLOP count (forward: model.model_flops) -----------------------------------------------------

# Training one image: the forward pass, the gradient with respect to the activations and the
# gradient with respect to the weights each cost about one forward pass (the usual convention,
# 4.35 GFLOP per image at 227, docs/performance.md). It slightly overcounts: conv1 needs no input gradient.
TRAINING_FLOPS_FACTOR = 3


# -- the ceiling: a large matmul ---------------------------------------------------------------

def _compute_dtype(precision):
    return {"mixed_float16": tf.float16, "mixed_bfloat16": tf.bfloat16}.get(precision, tf.float32)


def matmul_benchmark(strategy, dtype=tf.float32, size=4096, repeats=1):
    """A function that returns the FLOP/s of a `size`^3 matmul in `dtype`, one on every replica
    at once (so logical devices sharing the same cores share the rate), timed over `repeats`
    calls. The first call compiles and warms up; call the result once per timed run."""
    operands = strategy.experimental_distribute_values_from_function(
        lambda context: tf.cast(tf.random.uniform([size, size], -1.0, 1.0, seed=context.replica_id_in_sync_group), dtype))

    @tf.function
    def multiply(a):
        # The sum keeps the whole product live; it costs size^2 against the matmul's size^3.
        sums = strategy.run(lambda x: tf.reduce_sum(tf.cast(tf.matmul(x, x), tf.float32)), args=(a,))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, sums, axis=None)

    multiply(operands).numpy()
    flops = 2.0 * size ** 3 * strategy.num_replicas_in_sync * repeats

    def rate():
        start = time.perf_counter()
        for _ in range(repeats):
            multiply(operands).numpy()
        return flops / (time.perf_counter() - start)

    return rate


# -- train ---------------------------------------------------------------------------------------

class _SameBatch:
    """An iterator that yields one per-replica batch forever. `next()` runs when the training
    loop's tf.function is traced, so the batch becomes a constant already on each device: the
    steps pay nothing for input."""

    def __init__(self, batch):
        self.batch = batch

    def __iter__(self):
        return self

    def __next__(self):
        return self.batch


def synthetic_batch(strategy, batch_size, image_size, num_classes, seed=0):
    """Per-replica (images, labels) for a global `batch_size`: images uniform in [-128, 128)
    (the range of mean-subtracted pixels), labels uniform, created on each replica's device."""
    per_replica = batch_size // strategy.num_replicas_in_sync

    def make(context):
        images = tf.random.uniform([per_replica, image_size, image_size, 3], -128.0, 128.0,
                                   seed=seed + context.replica_id_in_sync_group)
        labels = tf.random.uniform([per_replica], 0, num_classes, tf.int64, seed=seed + 1)
        return images, labels

    return strategy.experimental_distribute_values_from_function(make)


def _median_summary(mode, results, setup):
    median = statistics.median
    keys = [key for key in results[0] if isinstance(results[0][key], (int, float))]
    return {"mode": mode, **{key: median(r[key] for r in results) for key in keys}, "runs": results, **setup}


def train_benchmark(*, variant="paper", image_size=227, batch_size=64, precision=None, xla=None, strategy="default",
                    tpu=None, num_gpus=None, steps_per_loop=1, num_batches=3, runs=5, warmup_batches=2, matmul_size=4096,
                    num_classes=1000, seed=0):
    """Training steps of the project's engine (`training.Trainer`: forward, backward, coupled
    weight decay, SGD with momentum) on a synthetic batch already on the device.

    `precision` and `xla` default as `run_config.resolve` chooses them for this device. Each run
    times a `matmul_size`^3 matmul in the compute dtype (the ceiling), then `num_batches` steps
    (in calls of `steps_per_loop` steps). Returns a dict with the medians over runs of
    images_per_sec, ms_per_step, gflops_per_sec (achieved: 3 x the model's forward FLOPs per
    image), matmul_gflops_per_sec and ceiling_fraction (the per-run ratio of the two), the
    per-run figures ("runs") and the setup.
    """
    strategy_object = distribute.get_strategy(strategy, tpu=tpu, num_gpus=num_gpus)
    calls = max(1, num_batches // steps_per_loop)
    # The paper's step (SGD with momentum, coupled weight decay), whatever the dataset's recipe would be.
    config = recipes.apply(run_config.TrainConfig(
        recipe="paper", variant=variant, image_size=image_size, batch_size=batch_size, precision=precision, xla=xla,
        strategy=strategy, steps_per_loop=steps_per_loop, epochs=1,
        steps_per_epoch=warmup_batches + runs * calls * steps_per_loop, seed=seed), num_train_examples=0)
    run_config.check_config(config)
    info = types.SimpleNamespace(num_examples={"train": config.steps_per_epoch * batch_size})
    config = run_config.resolve(config, strategy_object, info)
    previous_policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(config.precision)
    try:
        with training.forgetting_traced_gradients():  # `compare` makes five Trainers in one process
            trainer = training.Trainer(config, strategy_object, num_classes)
            flops_per_image = TRAINING_FLOPS_FACTOR * model_flops(trainer.model)
            batches = _SameBatch(synthetic_batch(strategy_object, batch_size, image_size, num_classes, seed))
            matmul_rate = matmul_benchmark(strategy_object, _compute_dtype(config.precision), matmul_size)
            for _ in range(warmup_batches):  # the first call traces (and with XLA compiles)
                trainer.train_steps(batches, steps_per_loop)
            results = []
            for _ in range(runs):
                matmul = matmul_rate()
                start = time.perf_counter()
                for _ in range(calls):
                    totals = trainer.train_steps(batches, steps_per_loop)
                seconds = time.perf_counter() - start
                images_per_sec = calls * steps_per_loop * batch_size / seconds
                results.append(_figures(images_per_sec, flops_per_image, matmul, batch_size,
                                      loss=float(totals[0] / totals[3])))
            parameters = trainer.model.count_params()
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
    return _median_summary("train", results, {
        "variant": variant, "image_size": image_size, "batch_size": batch_size, "precision": config.precision,
        "xla": bool(config.xla), "strategy": type(strategy_object).__name__,
        "replicas": strategy_object.num_replicas_in_sync, "steps_per_loop": steps_per_loop,
        "steps_per_run": calls * steps_per_loop, "gflop_per_image": flops_per_image / 1e9,
        "matmul_size": matmul_size, "parameters": parameters, "device": _device_name(),
    })


# (precision, xla) of the settings `compare_train_settings` times beside the default.
COMPARED_SETTINGS = (("float32", True), ("float32", False), ("mixed_bfloat16", True), ("mixed_bfloat16", False))


# oneDNN's bfloat16 math for float32 layers: TensorFlow reads it once per process, and oneDNN's
# convolutions take it on AMX CPUs only (docs/performance.md), so `compare` times it in a child
# process on CPUs with bfloat16 instructions, where it is the float32 speed-up to look for.
FPMATH_BF16 = {"TF_SET_ONEDNN_FPMATH_MODE": "BF16"}


def compare_train_settings(settings=COMPARED_SETTINGS, **train_flags):
    """The training step with this machine's defaults (precision and XLA as `run_config.resolve`
    picks them), then with each (precision, xla) of `settings`, in one process, one after the
    other; on a CPU with avx512_bf16 or amx_bf16, also float32 without XLA in two child processes,
    without and with FPMATH_BF16 (a fresh process can run faster than a setting timed after four
    others in one process, so the variable is compared with a child of its own). Returns the
    `train_benchmark` summaries, the default first, each with "setting" (a label) and "ratio"
    (its median images/s over the default's)."""
    default = train_benchmark(**train_flags)
    default["setting"] = "default"
    results = [default]
    for precision, xla in settings:
        result = train_benchmark(**{**train_flags, "precision": precision, "xla": xla})
        result["setting"] = f"{precision}, XLA {'on' if xla else 'off'}"
        results.append(result)
    bf16_cpu = {"avx512_bf16", "amx_bf16"} & distribute.cpu_features()
    if distribute.device_kind() == "cpu" and bf16_cpu and not distribute.onednn_settings():
        for environment, setting in (({}, "float32, XLA off, new process"), (FPMATH_BF16, "the same, oneDNN bf16 math")):
            result = train_benchmark_in_child(environment, **{**train_flags, "precision": "float32", "xla": False})
            result["setting"] = setting
            results.append(result)
    for result in results:
        result["ratio"] = result["images_per_sec"] / default["images_per_sec"]
    return results


def train_benchmark_in_child(environment, **train_flags):
    """`train_benchmark(**train_flags)` in a fresh Python whose environment adds `environment`
    (settings that TensorFlow reads once per process); the summary gets "environment", the
    variables' values as the child read them."""
    code = ("import json, os, sys\nfrom keras_alexnet import benchmarks\n"
            "summary = benchmarks.train_benchmark(**json.loads(sys.argv[1]))\n"
            "print(json.dumps({**summary, 'environment': {k: os.environ.get(k) for k in json.loads(sys.argv[2])}}))")
    done = subprocess.run([sys.executable, "-c", code, json.dumps(train_flags), json.dumps(list(environment))],
                          capture_output=True, text=True, env={**os.environ, **environment, "TF_CPP_MIN_LOG_LEVEL": "2"})
    if done.returncode:
        errors = done.stderr.strip().splitlines()
        reason = first_line(errors[-1]) if errors else f"exit code {done.returncode}"
        raise RuntimeError(f"the benchmark with {environment} failed in its own process: {reason}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _figures(images_per_sec, flops_per_image, matmul_flops_per_sec, batch_size, **extra):
    achieved = images_per_sec * flops_per_image
    return {
        "images_per_sec": images_per_sec,
        "ms_per_step": 1000.0 * batch_size / images_per_sec,
        "gflops_per_sec": achieved / 1e9,
        "matmul_gflops_per_sec": matmul_flops_per_sec / 1e9,
        "ceiling_fraction": achieved / matmul_flops_per_sec,
        **extra,
    }


def _device_name():
    kind = distribute.device_kind()
    if kind == "cpu":
        return f"cpu ({os.cpu_count()} cores)"
    devices = tf.config.list_logical_devices(kind.upper())
    return f"{kind} x{len(devices)}"


# -- infer ---------------------------------------------------------------------------------------

def export_precision(precision):
    """The precision an export of a model trained or run in `precision` computes in: bfloat16 for
    mixed_bfloat16, float32 for the rest (export.EXPORT_PRECISIONS has no float16)."""
    return precision if precision in export.EXPORT_PRECISIONS else "float32"


def infer_benchmark(*, variant="paper", image_size=227, batch_size=64, precision=None, xla=None, strategy="default",
                    tpu=None, num_gpus=None, num_batches=5, latency_calls=10, runs=5, matmul_size=4096, num_classes=1000, seed=0):
    """Inference of the Keras model (a compiled predict step, XLA if `xla`) and of the exported
    SavedModel (`export.export_saved_model`, then `tf.saved_model.load` and its `predict_images`
    signature, which adds softmax and top-5), on synthetic preprocessed images.

    Per run and engine: batch-1 latency (median of `latency_calls` calls, one device) and batch
    `batch_size` throughput (`num_batches` calls; the Keras step splits the batch over the
    strategy's replicas), with the achieved GFLOP/s (the model's forward FLOPs) over a
    `matmul_size`^3 matmul in the compute dtype timed in the same run. The SavedModel is exported
    in bfloat16 when `precision` is mixed_bfloat16 (export's opt-in), float32 otherwise, and runs
    on the default device. Returns {"keras": summary,
    "saved_model": summary, ...setup}, each summary as `train_benchmark`'s.
    """
    strategy_object = distribute.get_strategy(strategy, tpu=tpu, num_gpus=num_gpus)
    kind = distribute.device_kind()
    precision = precision or distribute.default_precision(kind, strategy_object)
    exported_in = export_precision(precision)
    # XLA by default on GPU and TPU only: on CPU inference without it was faster at every size
    # measured (docs/performance.md), and the exported SavedModel never carries it. (Training
    # decides per machine and input size: distribute.default_xla.)
    xla = xla if xla is not None else kind in ("gpu", "tpu")
    if batch_size % strategy_object.num_replicas_in_sync:
        raise UsageError(f"--batch_size={batch_size} is not divisible by the "
                                  f"{strategy_object.num_replicas_in_sync} replicas.")
    previous_policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(precision)
    try:
        with strategy_object.scope():
            model = build(num_classes=num_classes, input_shape=(image_size, image_size, 3), variant=variant, seed=seed)
        flops_per_image = model_flops(model)
        forward = tf.function(lambda images: model(images, training=False), jit_compile=xla)

        @tf.function
        def predict_batch(images):
            # Each replica's logits stay on its device (no collective): what a sharded server does.
            return strategy_object.experimental_local_results(strategy_object.run(forward, args=(images,)))

        one_image = tf.random.uniform([1, image_size, image_size, 3], -128.0, 128.0, seed=seed)
        batch, _ = synthetic_batch(strategy_object, batch_size, image_size, num_classes, seed)
        full_batch = tf.random.uniform([batch_size, image_size, image_size, 3], -128.0, 128.0, seed=seed)  # one device
        engines = {"keras": (lambda: forward(one_image).numpy(), lambda: [x.numpy() for x in predict_batch(batch)])}
        with tempfile.TemporaryDirectory() as scratch:
            path = export.export_saved_model(model, scratch, class_names=[str(i) for i in range(num_classes)],
                                             image_size=image_size, precision=exported_in)
            signature = tf.saved_model.load(path).signatures[export.IMAGES_SIGNATURE]
            engines["saved_model"] = (lambda: signature(images=one_image)["probabilities"].numpy(),
                                      lambda: signature(images=full_batch)["probabilities"].numpy())
            matmul_rate = matmul_benchmark(strategy_object, _compute_dtype(precision), matmul_size)
            results = _time_engines(engines, matmul_rate, runs, latency_calls, num_batches, batch_size, flops_per_image)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
    setup = {
        "variant": variant, "image_size": image_size, "batch_size": batch_size, "precision": precision, "xla": bool(xla),
        "export_precision": exported_in,
        "strategy": type(strategy_object).__name__, "replicas": strategy_object.num_replicas_in_sync,
        "gflop_per_image": flops_per_image / 1e9, "matmul_size": matmul_size, "device": _device_name(),
    }
    return {"mode": "infer", **{name: _median_summary("infer", rows, {"engine": name}) for name, rows in results.items()},
            **setup}


def _time_engines(engines, matmul_rate, runs, latency_calls, num_batches, batch_size, flops_per_image):
    """{engine: [per-run figures]} of {engine: (one-image call, batch call)}, after two warm-up
    calls of each (tracing, compiling); the matmul is timed before each run."""
    results = {name: [] for name in engines}
    for call in [call for pair in engines.values() for call in pair] * 2:
        call()
    for _ in range(runs):
        matmul = matmul_rate()
        for name, (one, many) in engines.items():
            latency, seconds = _time_inference(one, many, latency_calls, num_batches)
            results[name].append(_figures(num_batches * batch_size / seconds, flops_per_image, matmul, batch_size,
                                          latency_ms=1000.0 * latency))
    return results


def _time_inference(one, many, latency_calls, num_batches):
    """(median seconds of `latency_calls` calls of `one`, seconds of `num_batches` calls of `many`)."""
    latencies = []
    for _ in range(latency_calls):
        start = time.perf_counter()
        one()
        latencies.append(time.perf_counter() - start)
    start = time.perf_counter()
    for _ in range(num_batches):
        many()
    return statistics.median(latencies), time.perf_counter() - start


# -- per layer -----------------------------------------------------------------------------------

def _median_seconds(function, argument, repeats):
    function(argument)  # trace, compile, warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function(argument)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _layer_timers(layer, input_shape, xla, input_gradient):
    """(forward, forward+backward) tf.functions of one layer that return a scalar (so the output
    leaves the device as one number); the backward pass uses a random output gradient."""

    def forward(x):
        return tf.reduce_sum(tf.cast(layer(x, training=True), tf.float32))

    def forward_backward(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
        sources = layer.trainable_weights + ([x] if input_gradient else [])
        if not sources:
            return tf.reduce_sum(tf.cast(y, tf.float32))
        gradients = tape.gradient(y, sources, output_gradients=tf.ones_like(y))
        return tf.add_n([tf.reduce_sum(tf.cast(g, tf.float32)) for g in gradients])

    return tf.function(forward, jit_compile=xla), tf.function(forward_backward, jit_compile=xla)


def layer_profile(*, variant="paper", image_size=227, batch_size=64, xla=False, repeats=3, backward=True,
                  grouped_reference=True, seed=0):
    """Time each layer of the model on its own: forward, and forward+backward (weight gradients,
    and input gradients for every layer but the first, as training computes them), median of
    `repeats` calls at `batch_size`, float32.

    With `grouped_reference`, each two-column convolution is also timed as one Keras
    `Conv2D(groups=...)` of the same shape (which Keras runs under XLA on the TensorFlow backend).
    Returns a list of dicts (layer, output_shape, gflop, forward_ms, forward_backward_ms), then a
    row "model" for the whole network in one function.
    """
    keras.utils.set_random_seed(seed)
    model = build(input_shape=(image_size, image_size, 3), variant=variant, seed=seed)
    rows = []

    def timed(name, layer, input_shape, flops, input_gradient):
        x = tf.random.uniform((batch_size,) + tuple(input_shape[1:]), -1.0, 1.0)
        forward, forward_backward = _layer_timers(layer, x.shape, xla, input_gradient)
        row = {"layer": name, "output_shape": list(layer.compute_output_shape(x.shape)[1:]),
               "gflop": batch_size * flops / 1e9, "forward_ms": 1000.0 * _median_seconds(forward, x, repeats)}
        if backward:
            row["forward_backward_ms"] = 1000.0 * _median_seconds(forward_backward, x, repeats)
        rows.append(row)

    # A tf.function a layer is the point here, and TensorFlow warns about retracing at the sixth.
    with logs.tensorflow_warnings_off():
        for index, layer in enumerate(model.layers[1:]):
            timed(layer.name, layer, layer.input.shape, layer_flops(layer), input_gradient=index > 0)
            if grouped_reference and isinstance(layer, TwoColumnConv2D) and layer.groups > 1:
                grouped = keras.layers.Conv2D(layer.filters, layer.kernel_size, strides=layer.strides, padding=layer.padding,
                                              groups=layer.groups, activation="relu", name=f"{layer.name}_keras_groups")
                grouped.build(layer.input.shape)
                timed(f"{layer.name} as Conv2D(groups={layer.groups})", grouped, layer.input.shape, layer_flops(layer),
                      input_gradient=True)
        timed("model", model, model.input.shape, model_flops(model), input_gradient=False)
    return rows


MODES = {"input": input_benchmark, "train": train_benchmark, "infer": infer_benchmark}
