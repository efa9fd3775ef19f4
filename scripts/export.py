"""Export a training run's newest checkpoint as a SavedModel for TensorFlow Serving.

    python scripts/export.py --model_dir runs/alexnet                    # -> the run's --export_dir/<next>
    python scripts/export.py --model_dir runs/alexnet --export_dir /models/alexnet --version 3
    python scripts/export.py --model_dir runs/alexnet --precision mixed_bfloat16   # bfloat16 servers

Writes <export_dir>/<version>/ (the next free integer by default; an existing version is never
overwritten) with the `serving_default` (JPEG/PNG bytes) and `predict_images` signatures and
TF Serving warm-up requests. See docs/serving.md. A run whose last held-out top-1 was within noise
of chance is exported too, since it was asked for, with a warning line on stderr.
"""

import sys

from absl import flags

import _cli as cli

flags.DEFINE_string("model_dir", None, "A training run's directory (config.json and checkpoints/).", required=True)
flags.DEFINE_string("checkpoint", None, "A checkpoint path prefix in --model_dir (default: the newest).")
flags.DEFINE_string("export_dir", None, "TF Serving's model_base_path: versions are folders inside it, as for "
                    "scripts/train.py (default: the run's own --export_dir, else saved_models/alexnet).")
flags.DEFINE_alias("export_base", "export_dir")  # its name before it took train.py's
flags.DEFINE_integer("version", None, "Version number (default: the next free integer).")
flags.DEFINE_string("model_name", None, "Model name in the warm-up requests (default: the basename of --export_dir).")
flags.DEFINE_enum("precision", "float32", ["float32", "mixed_bfloat16"],
                  "What the export computes in: float32 (every server), or mixed_bfloat16 for servers with bfloat16 "
                  "units (AVX512-BF16/AMX CPUs, recent GPUs; slower elsewhere). Inputs and outputs stay float32. "
                  "docs/serving.md.")

FLAGS = flags.FLAGS
DEFAULT_EXPORT_BASE = "saved_models/alexnet"  # scripts/train.py's --export_dir default


def warn_if_at_chance(model_dir, config):
    """One warning line when the run's last held-out top-1 (history.jsonl) was within noise of
    chance: scripts/train.py does not export such a run; here the user asked explicitly."""
    from keras_alexnet import evaluation
    from keras_alexnet.figures import read_history

    try:
        last = read_history(model_dir)[-1]
    except (FileNotFoundError, IndexError):
        return
    top1, examples, classes = last["val_top1"], last.get("val_examples", 0), int(config["num_classes"])
    majority = last.get("val_majority_share")  # not in the histories of older runs
    if evaluation.at_chance(top1, classes, examples, majority):
        print(f"warning: the run's last held-out top-1 ({top1:.3f} at epoch {last['epoch']}, {examples} images) is within "
              f"noise of chance ({evaluation.describe_chance(classes, majority)}): this model learned nothing; exporting it "
              "as asked.", file=sys.stderr)


def main(argv):
    from keras_alexnet import checkpoints, export

    model, config = checkpoints.restore_model(FLAGS.model_dir, FLAGS.checkpoint)
    warn_if_at_chance(FLAGS.model_dir, config)
    class_names = checkpoints.class_names(config)
    # Where the run itself exports, so that a served model's versions stay in one folder.
    export_base = FLAGS.export_dir or config.get("export_dir") or DEFAULT_EXPORT_BASE
    path = export.export_saved_model(
        model, export_base, class_names=class_names, image_size=int(config["image_size"]),
        version=FLAGS.version, model_name=FLAGS.model_name, mean_image=config.get("mean_rgb"), precision=FLAGS.precision,
    )
    print(path)
    note = export.leftover_note(export_base)
    if note:
        print(note, file=sys.stderr)


if __name__ == "__main__":
    cli.run(main)
