"""Tests for keras_alexnet.benchmarks and scripts/benchmark.py (tiny sizes: they test the
plumbing, not the speed)."""

import json
import os
import subprocess
import sys

from PIL import Image

from keras_alexnet import benchmarks

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
    assert set(benchmarks.MODES) >= {"input"}


def _script(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    return subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "benchmark.py"), *args],
                          capture_output=True, text=True, env=env, timeout=120)


def test_script_json_prints_one_object_per_run():
    result = _script("input", "--json", *TINY)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 2 and all(line["images_per_sec"] > 0 for line in lines)


def test_script_modes_not_implemented_are_one_line_errors():
    result = _script("train")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == "error: benchmark mode 'train' is not implemented yet (only 'input' is)"
    assert "Traceback" not in result.stderr
    assert _script("nonsense").returncode == 2
