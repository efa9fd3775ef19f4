"""Benchmarks: `python scripts/benchmark.py input|train|infer [flags]`.

    input   the training input pipeline (read, fused decode-and-crop, flip, lighting, mean, batch)
            on a folder of ImageNet-sized JPEGs it writes itself, against the plain full-image
            decode of the same files, same threads, same run. Prints medians over --runs and the
            ratio measured within each run; --json prints one JSON object per run.
    train, infer: not implemented yet.

Example:
    python scripts/benchmark.py input --threads=1 --runs=5
"""

import json
import sys

from absl import app, flags

FLAGS = flags.FLAGS
_IMPLEMENTED = ("input",)  # keras_alexnet.benchmarks.MODES
flags.DEFINE_integer("image_size", 227, "Model input size S.")
flags.DEFINE_integer("batch_size", 32, "Images per batch.")
flags.DEFINE_integer("runs", 5, "Timed runs; medians are reported.")
flags.DEFINE_integer("num_batches", 20, "Batches timed per run (after 3 warm-up batches).")
flags.DEFINE_integer("threads", 1, "tf.data threads (1: the per-core rate).")
flags.DEFINE_integer("num_images", 200, "JPEGs written for the input benchmark.")
flags.DEFINE_integer("width", 500, "Width of the written JPEGs.")
flags.DEFINE_integer("height", 375, "Height of the written JPEGs.")
flags.DEFINE_string("image_dir", None, "Use this folder (DIR/train/<class>/*.jpg) instead of writing JPEGs.")
flags.DEFINE_enum("augmentation", "paper", ["paper", "inception", "none"], "Training augmentation.")
flags.DEFINE_bool("json", False, "Print one JSON object per run (key images_per_sec) instead of a summary.")


def main(argv):
    if len(argv) != 2:
        raise app.UsageError("usage: benchmark.py input|train|infer [flags]")
    mode = argv[1]
    # Checked before importing TensorFlow, so a wrong mode fails at once.
    if mode not in ("input", "train", "infer"):
        print(f"error: unknown mode {mode!r}; expected input, train or infer", file=sys.stderr)
        return 2
    if mode not in _IMPLEMENTED:
        print(f"error: benchmark mode {mode!r} is not implemented yet (only 'input' is)", file=sys.stderr)
        return 2
    from keras_alexnet import benchmarks
    from keras_alexnet.errors import UsageError

    try:
        result = benchmarks.input_benchmark(
            image_dir=FLAGS.image_dir, num_images=FLAGS.num_images, width=FLAGS.width, height=FLAGS.height,
            image_size=FLAGS.image_size, batch_size=FLAGS.batch_size, num_batches=FLAGS.num_batches,
            runs=FLAGS.runs, threads=FLAGS.threads, augmentation=FLAGS.augmentation,
        )
    except (UsageError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if FLAGS.json:
        for run in result["runs"]:
            print(json.dumps({"mode": mode, **run, "threads": result["threads"],
                              "image_size": result["image_size"], "batch_size": result["batch_size"]}))
        return 0
    print(f"input pipeline ({result['augmentation']}, S={result['image_size']}, batch {result['batch_size']}, "
          f"{result['threads']} thread(s), {result['source_images']}), medians of {len(result['runs'])} runs:")
    print(f"  training pipeline  {result['images_per_sec']:8.1f} images/s   "
          f"{result['images_per_sec_per_core']:8.1f} images per CPU-second")
    print(f"  plain full decode  {result['decode_images_per_sec']:8.1f} images/s   "
          f"{result['decode_images_per_sec_per_core']:8.1f} images per CPU-second")
    ratios = ", ".join(f"{r['ratio']:.2f}" for r in result["runs"])
    print(f"  pipeline / decode per CPU-second: {result['ratio']:.2f} (median; per run: {ratios})")
    return 0


if __name__ == "__main__":
    app.run(main)
