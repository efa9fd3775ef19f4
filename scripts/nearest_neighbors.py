"""Fig. 4 of the paper (§6.1): query images beside the training images nearest to them in the
4096-d fc7 activations (Euclidean distance, exact), with the neighbours' labels.

    python scripts/nearest_neighbors.py --model_dir runs/alexnet --out fig4.png
        # 5 held-out images of the run's dataset as queries, 6 neighbours each from its train split
    python scripts/nearest_neighbors.py --weights bvlc_alexnet.keras --dataset folder:/data/imagenet \\
        --queries dog.jpg,car.jpg --features_dir /scratch/fc7 --out fig4.png

The activations of the whole split are streamed to --features_dir (16 KB per image: 20 GB for
ImageNet's 1.28M training images), never held in memory; the search reads them in chunks.
"""

import os

from absl import flags

import _cli as cli
import _flags

flags.DEFINE_string("model_dir", None, "A training run's directory (config.json and checkpoints/).")
flags.DEFINE_string("weights", None, "A weight file instead: .keras, Caffe .caffemodel/.npz/.npy, torchvision .pth.")
flags.DEFINE_bool("allow_pickle", False, "Read a pickled .npy (unpickling a file can run code: only files you trust).")
_flags.define_run_data_flags("train", "The split to search.")
flags.DEFINE_list("queries", [], "Query image files (JPEG, PNG, GIF, BMP, WebP), comma-separated. Default: --num_queries images of --query_split.")
flags.DEFINE_enum("query_split", "validation", ["train", "validation"], "Where queries come from when --queries is empty.")
flags.DEFINE_integer("num_queries", 5, "Queries taken from --query_split (the paper shows 5).")
flags.DEFINE_integer("k", 6, "Neighbours per query (the paper shows 6).")
flags.DEFINE_integer("batch_size", 64, "Images per batch when computing activations.")
flags.DEFINE_string("features_dir", None, "Where to write the activations (default: a temporary directory, removed after).")
flags.DEFINE_string("out", "fig4.png", "The figure to write: .png, or .pdf, .svg, .jpg by its name.")

FLAGS = flags.FLAGS


def load_queries(paths, image_size):
    """Model inputs [Q, S, S, 3] of image files: the evaluation centre view (augment.center_view)."""
    import numpy as np
    import tensorflow as tf

    from keras_alexnet import augment
    from keras_alexnet.errors import UsageError

    views = []
    for path in paths:
        if not tf.io.gfile.exists(path):
            raise FileNotFoundError(f"--queries: {path} does not exist.")
        try:
            image = augment.decode_for_view(tf.io.read_file(path), image_size)
        except (tf.errors.InvalidArgumentError, ValueError) as error:
            reason = str(error).split("}}")[-1].split("[Op:")[0].strip()  # TensorFlow's message without its op prefix
            raise UsageError(f"--queries: {path} is not a JPEG, PNG, GIF, BMP or WebP image ({reason}).") from None
        views.append(np.asarray(augment.center_view(image, image_size)))
    return np.stack(views)


def run():
    from keras_alexnet import checkpoints, figures
    from keras_alexnet.errors import UsageError
    from keras_alexnet.run_config import check_writable

    # Both are written after the whole split's activations are computed (an hour on ImageNet).
    figures.check_format(FLAGS.out)
    check_writable(os.path.dirname(os.path.abspath(FLAGS.out)), "the folder of --out")
    if FLAGS.features_dir:
        check_writable(FLAGS.features_dir, "--features_dir")

    config = checkpoints.read_config(FLAGS.model_dir) if FLAGS.model_dir else {}
    spec = FLAGS.dataset or config.get("dataset")
    if not spec:
        raise UsageError("--dataset is needed with --weights (e.g. --dataset folder:/data/imagenet).")
    model, _ = figures.load_model(FLAGS.model_dir, FLAGS.weights, FLAGS.allow_pickle)
    queries = titles = None
    if FLAGS.queries:
        queries = load_queries(FLAGS.queries, int(model.input_shape[1]))
        titles = [os.path.basename(path) for path in FLAGS.queries]
    result = figures.neighbors_figure(
        model, spec, FLAGS.out, split=FLAGS.split, queries=queries, query_titles=titles, query_split=FLAGS.query_split,
        num_queries=FLAGS.num_queries, k=FLAGS.k, batch_size=FLAGS.batch_size, features_dir=FLAGS.features_dir,
        data_dir=FLAGS.data_dir or config.get("data_dir"), manual_dir=FLAGS.manual_dir or config.get("manual_dir"),
    )
    print(f"wrote {FLAGS.out}: {len(result['indices'])} queries, {result['indices'].shape[1]} neighbours each")


def main(argv):
    cli.require_model_source(FLAGS.model_dir, FLAGS.weights)
    for name in ("num_queries", "k", "batch_size"):
        if getattr(FLAGS, name) < 1:
            cli.fail(f"--{name}={getattr(FLAGS, name)}: use a positive number.")
    run()


if __name__ == "__main__":
    cli.run(main)
