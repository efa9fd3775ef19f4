"""Fig. 3 of the paper (§6.1): the conv1 kernels of a model as 11x11 RGB tiles, one block per column.

    python scripts/visualize_filters.py --model_dir runs/alexnet --out conv1.png
    python scripts/visualize_filters.py --weights bvlc_alexnet.keras --out conv1.png

Each kernel is scaled to its own range. In the paper's two-column net the kernels that feed
column 1 (GPU 1) and column 2 (GPU 2) are drawn as two blocks of 48.
"""

import os
import sys

from absl import app, flags

flags.DEFINE_string("model_dir", None, "A training run's directory (config.json and checkpoints/).")
flags.DEFINE_string("weights", None, "A weight file instead: .keras, Caffe .caffemodel/.npz/.npy, torchvision .pth.")
flags.DEFINE_bool("allow_pickle", False, "Read a pickled .npy (unpickling a file can run code: only files you trust).")
flags.DEFINE_string("out", "conv1.png", "The PNG to write.")
flags.DEFINE_integer("per_row", 16, "Kernels per row.")

FLAGS = flags.FLAGS


def parse_flags(argv):
    """absl's parser, but a bad flag is one line on stderr and exit code 2."""
    try:
        return FLAGS(argv)
    except flags.Error as error:
        print(f"error: {error}. See --helpfull.", file=sys.stderr)
        sys.exit(2)


def main(argv):
    if len(argv) > 1:
        print(f"error: unexpected arguments {argv[1:]}: flags are --name=value.", file=sys.stderr)
        sys.exit(2)
    if bool(FLAGS.model_dir) == bool(FLAGS.weights):
        print("error: pass exactly one of --model_dir (a training run) or --weights (a weight file).", file=sys.stderr)
        sys.exit(2)
    # Checked before TensorFlow is imported, so a wrong path answers at once.
    if FLAGS.weights and not os.path.isfile(FLAGS.weights):
        print(f"error: --weights={FLAGS.weights}: no such file.", file=sys.stderr)
        sys.exit(2)
    if FLAGS.model_dir and not os.path.isfile(os.path.join(FLAGS.model_dir, "config.json")):
        print(f"error: --model_dir={FLAGS.model_dir} has no config.json: pass a directory written by scripts/train.py.", file=sys.stderr)
        sys.exit(2)
    if FLAGS.per_row < 1:
        print(f"error: --per_row={FLAGS.per_row}: use a positive number.", file=sys.stderr)
        sys.exit(2)
    from keras_alexnet import figures
    from keras_alexnet.errors import UsageError

    try:
        model, _ = figures.load_model(FLAGS.model_dir, FLAGS.weights, FLAGS.allow_pickle)
        path = figures.plot_conv1_kernels(model, FLAGS.out, per_row=FLAGS.per_row)
    except (UsageError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    print(f"wrote {path}")


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
