"""Fig. 3 of the paper (§6.1): the conv1 kernels of a model as 11x11 RGB tiles, one block per column.

    python scripts/visualize_filters.py --model_dir runs/alexnet --out conv1.png
    python scripts/visualize_filters.py --weights bvlc_alexnet.keras --out conv1.png

Each kernel is scaled to its own range. In the paper's two-column net the kernels that feed
column 1 (GPU 1) and column 2 (GPU 2) are drawn as two blocks of 48.
"""

from absl import flags

import _cli as cli

flags.DEFINE_string("model_dir", None, "A training run's directory (config.json and checkpoints/).")
flags.DEFINE_string("weights", None, "A weight file instead: .keras, Caffe .caffemodel/.npz/.npy, torchvision .pth.")
flags.DEFINE_bool("allow_pickle", False, "Read a pickled .npy (unpickling a file can run code: only files you trust).")
flags.DEFINE_string("out", "conv1.png", "The figure to write: .png, or .pdf, .svg, .jpg by its name.")
flags.DEFINE_integer("per_row", 16, "Kernels per row.")

FLAGS = flags.FLAGS


def main(argv):
    cli.require_model_source(FLAGS.model_dir, FLAGS.weights)
    if FLAGS.per_row < 1:
        cli.fail(f"--per_row={FLAGS.per_row}: use a positive number.")
    from keras_alexnet import figures

    model, _ = figures.load_model(FLAGS.model_dir, FLAGS.weights, FLAGS.allow_pickle)
    path = figures.plot_conv1_kernels(model, FLAGS.out, per_row=FLAGS.per_row)
    print(f"wrote {path}")


if __name__ == "__main__":
    cli.run(main)
