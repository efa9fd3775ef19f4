"""Write the small real-photo datasets of keras_alexnet.photos as folders train.py reads.

    pip install scikit-image scikit-learn          # the packages whose photographs are used
    python scripts/make_photo_sets.py --out /tmp/photo_sets
    python scripts/train.py --dataset folder:/tmp/photo_sets/colour6 --image_size 67 --epochs 15 --batch_size 32
"""

import os

from absl import flags

import _cli as cli

flags.DEFINE_string("out", None, "Folder to write the sets into, one sub-folder per set.", required=True)
flags.DEFINE_list("sets", None, "Sets to write (default: all of keras_alexnet.photos.PHOTO_SETS).")
flags.DEFINE_integer("train_per_class", 200, "Training patches per class.")
flags.DEFINE_integer("validation_per_class", 50, "Held-out patches per class.")
flags.DEFINE_integer("seed", 0, "Seed of the patch positions and sizes.")

FLAGS = flags.FLAGS


def main(argv):
    from keras_alexnet import photos
    from keras_alexnet.run_config import check_writable

    names = photos.set_names(FLAGS.sets)
    check_writable(FLAGS.out, "--out")
    config = photos.PatchConfig(train_per_class=FLAGS.train_per_class,
                                validation_per_class=FLAGS.validation_per_class, seed=FLAGS.seed)
    for name in names:
        out_dir = os.path.join(FLAGS.out, name)
        counts = photos.write_photo_set(out_dir, photos.PHOTO_SETS[name], config)
        print(f"{out_dir}: {len(photos.PHOTO_SETS[name])} classes, {counts['train']} train / "
              f"{counts['validation']} held-out patches  ->  --dataset folder:{out_dir}")


if __name__ == "__main__":
    cli.run(main)
