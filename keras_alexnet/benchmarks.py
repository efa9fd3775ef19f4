"""Benchmarks, one function per mode, each returning a dict (scripts/benchmark.py prints them).

    input: the training input pipeline's images/s (read, fused decode-and-crop, flip, lighting,
           mean subtraction, batch) on a folder of ImageNet-sized JPEGs it writes itself,
           against the plain full-image decode rate of the same files, with the same number of
           threads, in the same run.

Modes `train` and `infer` are added by their owners next to `input_benchmark`.
"""

import os
import statistics
import tempfile
import time

import numpy as np
import tensorflow as tf
from PIL import Image

from keras_alexnet import data


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


def _plain_decode_dataset(root, batch_size, threads):
    """Read and fully decode every file, nothing else: the reference rate."""
    paths, _ = data._folder_files(root, "train")
    dataset = tf.data.Dataset.from_tensor_slices(list(paths)).repeat()
    dataset = dataset.map(lambda path: tf.io.decode_jpeg(tf.io.read_file(path), channels=3),
                          num_parallel_calls=tf.data.AUTOTUNE)
    # Images differ in size only if the folder does; count them, do not stack them.
    dataset = dataset.map(lambda image: tf.shape(image)[0]).batch(batch_size)
    return dataset.with_options(_threading(threads)).prefetch(2)


def input_benchmark(*, image_dir=None, num_images=200, width=500, height=375, image_size=227, batch_size=32,
                    num_batches=20, runs=5, threads=1, augmentation="paper", seed=0):
    """Training input pipeline vs plain decode, images/s, `runs` times; medians and per-run ratios.

    Args:
        image_dir: a folder in the layout `DIR/train/<class>/*.jpg`; None: write `num_images`
            JPEGs of `width` x `height` to a temporary folder.
        threads: tf.data threads for both pipelines (1 gives the per-core rate).
    Returns:
        dict with images_per_sec (training pipeline, median), decode_images_per_sec (median),
        ratio (median of the per-run ratios), *_per_core, runs (the per-run figures) and the setup.
    """
    with tempfile.TemporaryDirectory() as scratch:
        if image_dir is None:
            image_dir = write_jpeg_folder(os.path.join(scratch, "jpegs"), num_images, width, height, seed=seed)
        pipeline = data.make_dataset(f"folder:{image_dir}", "train", image_size=image_size, batch_size=batch_size,
                                     training=True, seed=seed, augmentation=augmentation)
        pipeline = pipeline.with_options(_threading(threads))
        decode = _plain_decode_dataset(image_dir, batch_size, threads)
        results = []
        for _ in range(runs):
            decode_wall, decode_cpu = _rates(decode, batch_size, num_batches)
            pipeline_wall, pipeline_cpu = _rates(pipeline, batch_size, num_batches)
            results.append({
                "images_per_sec": pipeline_wall, "decode_images_per_sec": decode_wall,
                "images_per_cpu_sec": pipeline_cpu, "decode_images_per_cpu_sec": decode_cpu,
                "ratio": pipeline_cpu / decode_cpu,
            })
        mean_bytes = float(np.mean([os.path.getsize(p) for p in data._folder_files(image_dir, "train")[0]]))
    median = statistics.median
    return {
        "mode": "input",
        "images_per_sec": median(r["images_per_sec"] for r in results),
        "decode_images_per_sec": median(r["decode_images_per_sec"] for r in results),
        "ratio": median(r["ratio"] for r in results),
        # Per core: images per CPU-second the process spent (robust to other load on the machine).
        "images_per_sec_per_core": median(r["images_per_cpu_sec"] for r in results),
        "decode_images_per_sec_per_core": median(r["decode_images_per_cpu_sec"] for r in results),
        "runs": results,
        "threads": threads,
        "image_size": image_size,
        "batch_size": batch_size,
        "images_per_run": batch_size * num_batches,
        "augmentation": augmentation,
        "source_images": f"{width}x{height} JPEG, mean {mean_bytes / 1000:.0f} kB" if image_dir else "",
    }


MODES = {"input": input_benchmark}
