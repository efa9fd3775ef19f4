"""Tests for keras_alexnet.benchmarks and scripts/benchmark.py (tiny sizes: they test the
plumbing and that every figure is positive and finite, never the speed)."""

import json
import math
import os
import re
import subprocess
import sys

import pytest
from PIL import Image

import keras_alexnet
from keras_alexnet import benchmarks, distribute

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--num_images=8", "--width=96", "--height=72", "--image_size=67", "--batch_size=4",
        "--num_batches=2", "--runs=2"]


def test_write_jpeg_folder(tmp_path):
    benchmarks.write_jpeg_folder(tmp_path, num_images=5, width=50, height=30, num_classes=2)
    files = sorted(tmp_path.glob("train/*/*.jpg"))
    assert len(files) == 5 and {f.parent.name for f in files} == {"class_0", "class_1"}
    with Image.open(files[0]) as image:
        assert image.size == (50, 30) and image.format == "JPEG"


def test_input_benchmark_returns_rates_and_ratios():
    result = benchmarks.input_benchmark(num_images=8, width=96, height=72, image_size=67, batch_size=4,
                                        num_batches=2, runs=2)
    assert result["mode"] == "input" and len(result["runs"]) == 2
    for key in ("images_per_sec", "decode_images_per_sec", "images_per_sec_per_core", "ratio"):
        assert result[key] > 0
    for run in result["runs"]:
        assert abs(run["ratio"] - run["images_per_cpu_sec"] / run["decode_images_per_cpu_sec"]) < 1e-9
    assert result["source_images"].startswith("96x72 JPEG, mean ")
    assert set(benchmarks.MODES) == {"input", "train", "infer"}


def test_input_benchmark_steps_are_rated_against_the_plain_decode_of_the_same_run():
    result = benchmarks.input_benchmark(num_images=8, width=96, height=72, image_size=67, batch_size=4,
                                        num_batches=2, runs=2, steps=True)
    names = [row["name"] for row in result["steps"]]
    assert names[0].startswith("read + full decode") and names[-1].startswith("the whole pipeline") and len(names) == 4
    assert result["steps"][0]["ratio"] == 1.0
    assert result["steps"][-1]["ratio"] == result["ratio"]
    assert result["steps"][-1]["images_per_cpu_sec"] == result["images_per_sec_per_core"]
    assert all(row["images_per_cpu_sec"] > 0 and row["ratio"] > 0 for row in result["steps"])


def test_script_steps_prints_them_and_draws_the_png(tmp_path):
    path = tmp_path / "steps.png"
    result = _script("input", "--steps", f"--plot={path}", *TINY)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "step by step" in result.stdout and "fused decode-and-crop" in result.stdout
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] > 300


def _script(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    return subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "benchmark.py"), *args],
                          capture_output=True, text=True, env=env, timeout=120)


def test_script_json_prints_one_object_per_run():
    result = _script("input", "--json", *TINY)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 2 and all(line["images_per_sec"] > 0 for line in lines)


def test_model_flops_is_the_paper_hand_count():
    """2 FLOPs per multiply-add of conv1-5 and fc6-8 (docs/paper.md: 724.4 M at 227)."""
    model = keras_alexnet.build(input_shape=(227, 227, 3))
    per_layer = {layer.name: benchmarks.layer_flops(layer) for layer in model.layers}
    assert per_layer["conv1"] == 2 * 55 * 55 * 96 * 11 * 11 * 3
    assert per_layer["conv2"] == 2 * 27 * 27 * 256 * 5 * 5 * 48  # two columns: each sees 48 maps
    assert per_layer["conv3"] == 2 * 13 * 13 * 384 * 3 * 3 * 256
    assert per_layer["fc6"] == 2 * 9216 * 4096
    assert per_layer["lrn1"] == per_layer["pool1"] == 0
    assert benchmarks.model_flops(model) == 2 * 724_406_816 == 1_448_813_632
    one_column = keras_alexnet.build(input_shape=(227, 227, 3), groups=1)
    extra = per_layer["conv2"] + per_layer["conv4"] + per_layer["conv5"]  # each column sees all maps
    assert benchmarks.model_flops(one_column) == benchmarks.model_flops(model) + extra


def _assert_figures(summary, batch_size, runs):
    assert len(summary["runs"]) == runs
    for row in summary["runs"] + [summary]:
        for key in ("images_per_sec", "ms_per_step", "gflops_per_sec", "matmul_gflops_per_sec", "ceiling_fraction"):
            assert math.isfinite(row[key]) and row[key] > 0, (key, row[key])
    for run in summary["runs"]:
        assert run["ms_per_step"] == pytest.approx(1000 * batch_size / run["images_per_sec"])
        assert run["ceiling_fraction"] == pytest.approx(run["gflops_per_sec"] / run["matmul_gflops_per_sec"])


def test_train_benchmark_runs_real_steps_and_reports_positive_figures():
    result = benchmarks.train_benchmark(image_size=67, batch_size=4, num_batches=1, runs=2, warmup_batches=1,
                                        matmul_size=128, num_classes=10)
    _assert_figures(result, 4, runs=2)
    assert result["mode"] == "train" and result["precision"] == "float32"
    assert result["xla"] is True  # the resolved default at 67 px: on, on every CPU measured
    assert result["gflop_per_image"] == pytest.approx(3 * 0.125462592 - 3 * 2 * 4096 * 990 / 1e9)
    assert all(math.isfinite(run["loss"]) for run in result["runs"])


def test_infer_benchmark_times_keras_and_saved_model():
    result = benchmarks.infer_benchmark(image_size=67, batch_size=2, num_batches=1, latency_calls=2, runs=2,
                                        matmul_size=128, num_classes=10)
    for engine in ("keras", "saved_model"):
        summary = result[engine]
        assert summary["engine"] == engine
        _assert_figures(summary, 2, runs=2)
        assert all(run["latency_ms"] > 0 for run in summary["runs"])


def test_train_and_infer_under_mirrored_strategy_on_two_logical_cpus():
    tiny = dict(image_size=67, batch_size=4, num_batches=1, runs=1, matmul_size=128, num_classes=10, strategy="mirrored")
    train = benchmarks.train_benchmark(warmup_batches=1, **tiny)
    infer = benchmarks.infer_benchmark(latency_calls=1, **tiny)
    assert train["replicas"] == infer["replicas"] == 2
    assert train["ceiling_fraction"] > 0 and infer["keras"]["images_per_sec"] > 0


def test_layer_profile_times_every_layer_and_the_grouped_reference():
    rows = benchmarks.layer_profile(image_size=67, batch_size=2, repeats=1)
    names = [row["layer"] for row in rows]
    assert names[0] == "conv1" and names[-1] == "model" and "conv2 as Conv2D(groups=2)" in names and "lrn1" in names
    assert all(row["forward_ms"] > 0 and row["forward_backward_ms"] > 0 for row in rows)
    assert next(row for row in rows if row["layer"] == "conv1")["output_shape"] == [15, 15, 96]


def test_cpu_description_names_the_model_and_the_features_that_matter(tmp_path):
    from keras_alexnet import distribute

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8481C\n"
                       "flags\t\t: fpu sse2 avx2 fma avx512f avx512_bf16 amx_bf16 amx_tile amx_int8\n")
    assert distribute.cpu_description(str(cpuinfo)) == "Intel(R) Xeon(R) Platinum 8481C (avx2 fma avx512f avx512_bf16 amx_bf16 amx_tile)"
    cpuinfo.write_text("model name\t: AMD EPYC 7551\nflags\t\t: fpu sse2 avx2 fma\n")
    assert distribute.cpu_description(str(cpuinfo)) == "AMD EPYC 7551 (avx2 fma)"


@pytest.mark.parametrize("kind,size,features,expected", [
    ("cpu", 227, {"avx2", "fma"}, True),  # AVX2 only (AMD Zen 1): XLA +34% at 227
    ("cpu", 227, {"avx2", "fma", "avx512f", "avx512_bf16"}, False),  # AVX-512: oneDNN x1.39 at 227
    ("cpu", 99, {"avx2", "avx512f"}, False),
    ("cpu", 67, {"avx2", "avx512f", "amx_bf16"}, True),  # small inputs: XLA ahead on AVX-512 too
    ("gpu", 227, set(), True),
    ("tpu", 227, set(), True),
])
def test_default_xla_follows_the_machine_and_the_input_size(kind, size, features, expected):
    from keras_alexnet import distribute

    assert distribute.default_xla(kind, size, features) is expected
    # bfloat16 on a CPU: XLA off at every size (oneDNN's bfloat16 kernels); elsewhere unchanged.
    assert distribute.default_xla(kind, size, features, precision="mixed_bfloat16") is (kind != "cpu")
    # float16 on a CPU: XLA on at every size (without it the convolutions fall back to slow kernels).
    assert distribute.default_xla(kind, size, features, precision="mixed_float16") is True


def _json_lines(result):
    assert result.returncode == 0, result.stderr[-2000:]
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def test_script_infer_json_prints_one_object_per_run_and_engine():
    """train prints through the same function, one object per run (its figures: the test above)."""
    result = _script("infer", "--image_size=67", "--batch_size=2", "--num_batches=1", "--runs=2",
                     "--latency_calls=1", "--matmul_size=128", "--json")
    lines = _json_lines(result)
    assert sorted(line["engine"] for line in lines) == ["keras", "keras", "saved_model", "saved_model"]
    for line in lines:
        assert line["mode"] == "infer" and line["batch_size"] == 2
        assert line["machine"].startswith("CPU ") and line["machine"] == lines[0]["machine"]  # names the machine
        for key in ("images_per_sec", "ceiling_fraction", "ms_per_step", "latency_ms"):
            assert math.isfinite(line[key]) and line[key] > 0


def test_script_prints_train_infer_and_per_layer_as_tables():
    """The output people read (the tests above check --json's figures)."""
    tiny = ("--image_size=67", "--batch_size=2", "--num_batches=1", "--runs=1", "--matmul_size=128")
    result = _script("train", *tiny)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith("machine: CPU ") and lines[1].startswith("train: paper AlexNet, S=67, batch 2, float32")
    assert re.match(r"  train step +[\d.]+ \[[\d.]+-[\d.]+\] images/s", lines[2]) and "ceiling fraction" in lines[3]
    result = _script("infer", *tiny, "--latency_calls=1")
    assert result.returncode == 0, result.stderr[-2000:]
    engines = [line.split()[0] for line in result.stdout.splitlines() if re.match(r"  \w", line)]
    assert engines == ["keras", "saved_model"] and result.stdout.count("batch-1 latency") == 2
    result = _script("train", "--per_layer", "--image_size=67", "--batch_size=2", "--runs=1")
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line.split()[0] for line in result.stdout.splitlines()[3:-1]]
    assert rows[:3] == ["conv1", "lrn1", "pool1"] and rows[-1] == "model" and "conv2 as Conv2D(groups=2)" in result.stdout
    # A tf.function per layer made TensorFlow warn twice about retracing, 600 characters each.
    assert "retracing" not in result.stderr, result.stderr


def test_script_compare_times_the_default_and_each_setting():
    result = _script("compare", "--image_size=67", "--batch_size=2", "--num_batches=1", "--runs=1", "--matmul_size=128")
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    rows = [line[2:36].strip() for line in lines if line.startswith("  ")]
    # On a CPU with bfloat16 instructions, oneDNN's bfloat16 math for float32 too, in its own process.
    bf16_cpu = {"avx512_bf16", "amx_bf16"} & distribute.cpu_features()
    assert rows == ["default", "float32, XLA on", "float32, XLA off", "mixed_bfloat16, XLA on", "mixed_bfloat16, XLA off"] + (
        ["float32, XLA off, new process", "the same, oneDNN bf16 math"] if bf16_cpu else [])
    assert "x1.00 the default" in lines[2] and "the default here is float32, XLA on" in lines[1]


def test_a_setting_read_once_per_process_is_timed_in_a_child_that_has_it():
    result = benchmarks.train_benchmark_in_child(benchmarks.FPMATH_BF16, image_size=67, batch_size=2, num_batches=1,
                                                 runs=1, matmul_size=64, precision="float32", xla=False)
    assert result["environment"] == {"TF_SET_ONEDNN_FPMATH_MODE": "BF16"} and "TF_SET_ONEDNN_FPMATH_MODE" not in os.environ
    assert result["precision"] == "float32" and not result["xla"] and result["images_per_sec"] > 0
    with pytest.raises(RuntimeError, match=r"^the benchmark with \{'TF_SET_ONEDNN_FPMATH_MODE': 'BF16'\} failed in its own "
                                           r"process: .*image_size"):
        benchmarks.train_benchmark_in_child(benchmarks.FPMATH_BF16, image_size=3, batch_size=2, runs=1)


@pytest.mark.parametrize("args, message", [
    (["train", "--batch_size=0"], "error: --batch_size=0 must be at least 1."),
    (["infer", "--per_layer=maybe"], None),
    (["train", "--no_such_flag"], None),
    (["nonsense"], "error: unknown mode 'nonsense'; expected input, train, infer or compare"),
    (["compare", "--precision=float32"], "error: compare times every precision and XLA setting itself: leave out --precision and --xla."),
    (["input", "--per_layer"], "error: --per_layer is for train and infer."),
    (["train", "--steps"], "error: --steps and --plot are for the input mode."),
    (["input", "--plot=steps.png"], "error: --plot draws the step breakdown: add --steps."),
    (["input", "--steps", "--augmentation=none"], "error: --steps needs a random crop: use --augmentation=paper or inception."),
])
def test_script_bad_input_is_one_line_and_exit_2(args, message):
    result = _script(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr
    if message:
        assert lines[0] == message


def test_peer_benchmark_times_the_pytorch_alexnet_and_counts_its_flops():
    """The torch engine of scripts/peer_benchmark.py on this CPU (its keras_jax engine needs JAX,
    which the test environment does not install: it was run by hand, docs/performance.md)."""
    result = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "peer_benchmark.py"), "--engines=torch",
                             "--batch_size=1", "--steps=1", "--runs=1", "--warmup_steps=1", "--matmul_size=64", "--json"],
                            capture_output=True, text=True, timeout=300)
    (line,) = _json_lines(result)
    assert line["engine"] == "torch" and line["image_size"] == 224 and line["images_per_sec"] > 0
    assert line["gflop_per_image"] == pytest.approx(3 * 1.42837696)  # torchvision's AlexNet: 0.714 GMAC forward
    bad = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "peer_benchmark.py"), "--engines=mxnet"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.strip() == "error: --engines: unknown mxnet; choose from keras_jax, torch."
