"""How learnable is a real-photo set? A classifier without a network, as a yardstick for AlexNet.

    python scripts/make_photo_sets.py --out /tmp/photo_sets
    python scripts/photo_reference.py --photo_dir /tmp/photo_sets

For every set of keras_alexnet.photos it trains scikit-learn's extra-trees (500 trees) on
hand-made features of the training patches (`photos.reference_features`: colour and edge
histograms of the patch at 67 px, the size learning_check.py trains at) and prints the held-out
top-1 and the confusion matrix. Orderless statistics, nothing learned from pixels' positions. If
this reaches a held-out top-1 that the network does not, the set is not the limit;
docs/recipes.md has both.
"""

import os

from absl import flags

import _cli as cli

flags.DEFINE_string("photo_dir", None, "Where the photo sets are (scripts/make_photo_sets.py writes them).", required=True)
flags.DEFINE_list("sets", None, "Sets to check (default: all of keras_alexnet.photos.PHOTO_SETS).")
flags.DEFINE_integer("seed", 0, "Seed of the trees.")

FLAGS = flags.FLAGS


def main(argv):
    try:
        from sklearn.ensemble import ExtraTreesClassifier
        from sklearn.metrics import confusion_matrix
    except ImportError:
        cli.fail('scikit-learn is not installed: pip install -e ".[photos]"')

    from keras_alexnet import photos

    for name in photos.set_names(FLAGS.sets):
        root = os.path.join(FLAGS.photo_dir, name)
        if not os.path.isdir(os.path.join(root, "train")):
            cli.fail(f"{root}/train is missing: write the sets first with scripts/make_photo_sets.py --out {FLAGS.photo_dir}")
        x_train, y_train, classes = photos.reference_split(os.path.join(root, "train"))
        x_val, y_val, _ = photos.reference_split(os.path.join(root, "val"))
        forest = ExtraTreesClassifier(n_estimators=500, random_state=FLAGS.seed, n_jobs=1).fit(x_train, y_train)
        predicted = forest.predict(x_val)
        print(f"{name:16s} held-out top-1 {(predicted == y_val).mean():.3f} ({len(y_val)} patches)")
        print("  confusion (rows: true, columns: predicted): " + ", ".join(classes))
        for row in confusion_matrix(y_val, predicted):
            print("   " + " ".join(f"{count:3d}" for count in row))


if __name__ == "__main__":
    cli.run(main)
