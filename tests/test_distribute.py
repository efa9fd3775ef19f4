"""keras_alexnet.distribute on its own: strategy choice, one-line errors, and the machine facts the
precision and XLA defaults read (tests/test_benchmarks.py has default_xla's table)."""

import dataclasses
import json
import os

import pytest
import tensorflow as tf

from keras_alexnet import distribute
from keras_alexnet.errors import UsageError

ZEN5_CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9B45
flags\t\t: fpu sse2 avx2 fma avx512f avx512_bf16 avx512_vnni

processor\t: 1
model name\t: a second core, not read
"""


@pytest.mark.parametrize("name, expected", [("auto", "_DefaultDistributionStrategy"), ("default", "_DefaultDistributionStrategy"),
                                            ("one_device", "OneDeviceStrategy"), ("mirrored", "MirroredStrategy")])
def test_strategies_on_a_cpu_only_machine(name, expected):
    strategy = distribute.get_strategy(name)
    assert type(strategy).__name__ == expected
    assert distribute.is_chief(strategy) and distribute.worker_id(strategy) == "worker0"


def test_mirrored_over_one_device_is_the_one_device_strategy():
    # The same computation without the cross-device merge of the update: 7-9% faster per step at
    # 67 px on a 2-core CPU (scripts/benchmark.py train --strategy mirrored|default).
    one = distribute._mirrored_or_one(("/cpu:0",))
    assert isinstance(one, tf.distribute.OneDeviceStrategy) and distribute.is_single_device(one)
    assert isinstance(distribute._mirrored_or_one(tuple(d.name for d in tf.config.list_logical_devices("CPU"))),
                      tf.distribute.MirroredStrategy)  # the tests' two logical CPUs


def test_the_same_devices_give_the_same_mirrored_strategy():
    assert distribute.get_strategy("mirrored") is distribute.get_strategy("mirrored")


def test_strategy_names_for_people():
    assert distribute.strategy_name(tf.distribute.get_strategy()) == "default strategy"
    assert distribute.strategy_name(distribute.get_strategy("one_device")) == "OneDeviceStrategy"


@pytest.mark.parametrize("call, message", [
    (lambda: distribute.get_strategy("gpu"), "--strategy='gpu' is unknown: use one of auto, default"),
    (lambda: distribute.get_strategy("auto", num_gpus=1), "--num_gpus=1 but this machine has 0 GPU(s): lower --num_gpus."),
    (lambda: distribute.get_strategy("mirrored", num_gpus=-1), "--num_gpus=-1 must be 0 or more (leave it unset to use every GPU)."),
])
def test_bad_strategy_input_is_a_usage_error(call, message):
    with pytest.raises(UsageError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        call()


def test_multi_worker_without_tf_config_names_the_variable(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(UsageError, match="needs the TF_CONFIG environment variable"):
        distribute.get_strategy("multi_worker")


@pytest.mark.parametrize("tf_config, message", [
    ("{bad", "TF_CONFIG is not valid JSON (Expecting property name enclosed in double quotes at character 1): set it like"),
    ("[]", 'TF_CONFIG has no "cluster" with a "worker" (or "chief") list'),
    ('{"cluster": {"ps": ["a:1"]}, "task": {"type": "ps", "index": 0}}', 'TF_CONFIG has no "cluster" with a "worker"'),
    ('{"cluster": {"worker": ["a:1"]}}', 'TF_CONFIG has no "task": give each machine its own'),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 1}}',
     'TF_CONFIG\'s "task" {"type": "worker", "index": 1} is not one of its cluster\'s chief or worker entries ({"worker": ["a:1"]})'),
])
def test_a_bad_tf_config_is_a_usage_error_before_tensorflow_reads_it(monkeypatch, tf_config, message):
    monkeypatch.setenv("TF_CONFIG", tf_config)
    monkeypatch.setattr(tf.distribute, "MultiWorkerMirroredStrategy", lambda: pytest.fail("TensorFlow read a bad TF_CONFIG"))
    with pytest.raises(UsageError) as error:
        distribute.get_strategy("multi_worker")
    assert str(error.value).startswith(message)


def test_a_multi_worker_run_says_that_it_waits_for_the_others(monkeypatch, capsys):
    # TensorFlow waits for every worker in TF_CONFIG before the strategy exists, silently (its
    # "Waiting for 1/2 tasks" is an INFO log line the scripts hide).
    cluster = {"chief": ["a:1"], "worker": ["b:2", "c:3"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 1}}))
    monkeypatch.setattr(tf.distribute, "MultiWorkerMirroredStrategy", lambda: "strategy")
    assert distribute.get_strategy("multi_worker") == "strategy"
    assert capsys.readouterr().out == ("multi_worker: this is worker 1 of 3 (c:3); waiting for the others to connect (a:1, b:2): "
                                       "start the same command on each, with its own TF_CONFIG task.\n")
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 0}}))
    distribute.get_strategy("multi_worker")
    assert capsys.readouterr().out == ""  # a cluster of one waits for no one


def test_precision_on_a_cpu_is_float32():
    assert distribute.device_kind() == "cpu"
    assert distribute.default_precision("cpu") == "float32"
    assert distribute.default_precision("tpu") == "mixed_bfloat16"


def test_cpu_features_and_description_read_the_first_processor(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(ZEN5_CPUINFO)
    assert distribute.cpu_features(str(cpuinfo)) == {"avx2", "fma", "avx512f", "avx512_bf16"}
    assert distribute.cpu_description(str(cpuinfo)) == "AMD EPYC 9B45 (avx2 fma avx512f avx512_bf16)"


def test_a_machine_without_proc_cpuinfo_has_no_features(tmp_path):
    missing = str(tmp_path / "no_cpuinfo")
    assert distribute.cpu_features(missing) == set()
    assert distribute.cpu_description(missing)  # the platform's own name, never an error


def test_this_machine_is_described_with_its_core_count():
    assert f"{os.cpu_count()} cores" in distribute.machine_description()


@pytest.mark.parametrize("environ, expected", [
    ({}, []),
    ({"TF_ENABLE_ONEDNN_OPTS": "1", "TF_SET_ONEDNN_FPMATH_MODE": ""}, []),
    ({"TF_SET_ONEDNN_FPMATH_MODE": "bf16"}, []),  # TensorFlow compares with "BF16" exactly
    ({"TF_ENABLE_ONEDNN_OPTS": "False"}, ["oneDNN off (TF_ENABLE_ONEDNN_OPTS=0)"]),
    ({"TF_ENABLE_ONEDNN_OPTS": "0", "TF_SET_ONEDNN_FPMATH_MODE": "BF16"},
     ["oneDNN off (TF_ENABLE_ONEDNN_OPTS=0)",
      "float32 math in bfloat16 where oneDNN has it (TF_SET_ONEDNN_FPMATH_MODE=BF16)"]),
])
def test_the_onednn_settings_that_change_results_are_named(environ, expected):
    assert distribute.onednn_settings(environ) == expected


def test_a_benchmark_header_names_bfloat16_math_for_float32(monkeypatch):
    monkeypatch.setenv("TF_SET_ONEDNN_FPMATH_MODE", "BF16")
    assert "(TF_SET_ONEDNN_FPMATH_MODE=BF16)" in distribute.machine_description()


def test_resolve_turns_xla_off_for_bfloat16_on_a_cpu():
    from keras_alexnet import recipes
    from keras_alexnet.run_config import TrainConfig, resolve
    from keras_alexnet.sources.common import DatasetInfo

    info = DatasetInfo("shapes", 10, [str(i) for i in range(10)], {"train": 64, "validation": 16})
    strategy = distribute.get_strategy("default")
    config = recipes.apply(TrainConfig(dataset="shapes", image_size=67), 64)
    assert resolve(dataclasses.replace(config, precision="mixed_bfloat16"), strategy, info).xla is False
    # float32 at 67 px keeps the machine's rule; a flag given wins over both.
    assert resolve(config, strategy, info).xla is distribute.default_xla("cpu", 67)
    assert resolve(dataclasses.replace(config, precision="mixed_bfloat16", xla=True), strategy, info).xla is True
