"""Training curves: loss, top-1/top-5 error and learning rate per epoch of a training run.

    python scripts/plot_history.py runs/alexnet                 # writes runs/alexnet/history.png
    python scripts/plot_history.py runs/alexnet --out curves.png

Reads MODEL_DIR/history.jsonl (one JSON object per epoch, written by scripts/train.py).
"""

import os
import sys

from absl import app, flags

flags.DEFINE_string("out", None, "The PNG to write (default: MODEL_DIR/history.png).")

FLAGS = flags.FLAGS


def parse_flags(argv):
    """absl's parser, but a bad flag is one line on stderr and exit code 2."""
    try:
        return FLAGS(argv)
    except flags.Error as error:
        print(f"error: {error}. See --helpfull.", file=sys.stderr)
        sys.exit(2)


def main(argv):
    if len(argv) != 2:
        print("error: usage: plot_history.py MODEL_DIR [--out FILE.png]", file=sys.stderr)
        sys.exit(2)
    model_dir = argv[1]
    history = model_dir if os.path.isfile(model_dir) else os.path.join(model_dir, "history.jsonl")
    if not os.path.isfile(history):  # checked before TensorFlow is imported, so the answer is immediate
        print(f"error: {history} not found: pass a model_dir written by scripts/train.py.", file=sys.stderr)
        sys.exit(2)
    from keras_alexnet import figures

    try:
        records = figures.read_history(model_dir)
        if not records:
            raise ValueError(f"{model_dir}: history.jsonl has no finished epoch yet.")
        out = FLAGS.out or os.path.join(model_dir if os.path.isdir(model_dir) else os.path.dirname(model_dir), "history.png")
        path = figures.plot_history(records, out, title=f"training history of {os.path.abspath(model_dir)}")
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    print(f"wrote {path} ({len(records)} epochs)")


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
