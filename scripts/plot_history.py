"""Training curves: loss, top-1/top-5 error and learning rate per epoch of a training run.

    python scripts/plot_history.py runs/alexnet                 # writes runs/alexnet/history.png
    python scripts/plot_history.py --model_dir runs/alexnet --out curves.png   # as the other scripts take it

Reads MODEL_DIR/history.jsonl (one JSON object per epoch, written by scripts/train.py).
"""

import os

from absl import flags

import _cli as cli

flags.DEFINE_string("model_dir", None, "The training run's directory (or give it as the one argument).")
flags.DEFINE_string("out", None, "The figure to write: .png, or .pdf, .svg, .jpg by its name (default: MODEL_DIR/history.png).")

FLAGS = flags.FLAGS


def main(argv):
    if len(argv) + bool(FLAGS.model_dir) != 2:
        cli.fail("usage: plot_history.py MODEL_DIR (or --model_dir MODEL_DIR) [--out FILE.png]")
    model_dir = FLAGS.model_dir or argv[1]
    history = model_dir if os.path.isfile(model_dir) else os.path.join(model_dir, "history.jsonl")
    if not os.path.isfile(history):  # checked before TensorFlow is imported, so the answer is immediate
        cli.fail(f"{history} not found: pass a model_dir written by scripts/train.py.")
    from keras_alexnet import checkpoints, figures
    from keras_alexnet.errors import UsageError, counted

    try:  # the run's class count decides whether top-5 is drawn; a history without its run is drawn whole
        num_classes = checkpoints.read_config(os.path.dirname(history)).get("num_classes")
    except (FileNotFoundError, UsageError):
        num_classes = None
    try:
        records = figures.read_history(model_dir)
        if not records:
            raise ValueError(f"{model_dir}: history.jsonl has no finished epoch yet.")
        out = FLAGS.out or os.path.join(model_dir if os.path.isdir(model_dir) else os.path.dirname(model_dir), "history.png")
        path = figures.plot_history(records, out, title=f"training history of {model_dir}", num_classes=num_classes)
    except ValueError as error:  # not only UsageError: figures' own ValueErrors name the file too
        cli.fail(error)
    print(f"wrote {path} ({counted(len(records), 'epoch')})")


if __name__ == "__main__":
    cli.run(main, positional=True)
