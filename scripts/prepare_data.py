"""Prepare a dataset once as sharded TFRecords, the paper's way (§2; keras_alexnet/prepare.py, docs/imagenet.md).

An image folder (DIR/<class>/*, about a fifth of each class held out; or DIR/train/<class>/*, DIR/val/<class>/*):

    python scripts/prepare_data.py --input_dir /data/images --output_dir /data/images_tfrecord

ImageNet as distributed (ILSVRC2012_img_train.tar extracted into its per-synset tars, the flat
validation folder and a ground-truth file of synsets):

    python scripts/prepare_data.py --train_dir ilsvrc/train --val_dir ilsvrc/val \\
        --val_labels imagenet_2012_validation_synset_labels.txt --synset_names LOC_synset_mapping.txt \\
        --output_dir gs://bucket/imagenet

Prints the --dataset string for scripts/train.py. Rerun the same command after a crash or
SIGKILL: finished shards are kept. Split one job over N machines with --num_workers=N
--worker_index=i (no coordination; whoever finishes last writes the manifest, or run --finalize).
"""

import os
import sys

from absl import flags

import _cli as cli

FLAGS = flags.FLAGS
flags.DEFINE_string("input_dir", None, "An image folder: DIR/<class>/* (about a fifth of each class held out, as --dataset folder:DIR does), "
                    "or DIR/train/<class>/* and DIR/val/<class>/* (or validation/).")
flags.DEFINE_string("train_dir", None, "ILSVRC2012: a folder of per-synset tars (n01440764.tar) or their extracted folders.")
flags.DEFINE_string("val_dir", None, "ILSVRC2012: the flat folder of ILSVRC2012_val_*.JPEG.")
flags.DEFINE_string("val_labels", None, "ILSVRC2012: the validation ground truth: one synset per line in file order "
                    "(tensorflow/models' imagenet_2012_validation_synset_labels.txt), NAME SYNSET lines, or "
                    "Kaggle's LOC_val_solution.csv.")
flags.DEFINE_string("synset_names", None, "Optional: readable class names, lines 'n01440764 tench, Tinca tinca' "
                    "(synset_words.txt, LOC_synset_mapping.txt).")
flags.DEFINE_string("output_dir", None, "Where the shards go: a local folder or a TensorFlow filesystem (gs://...).")
flags.DEFINE_enum("resize", "paper", ["paper", "shorter"], "paper: shorter side to --size, central --size square "
                  "(§2); shorter: the shorter side only (keeps the whole image for other crops).")
flags.DEFINE_integer("size", 256, "The shorter side (and square side), 256 in the paper.")
flags.DEFINE_integer("quality", 90, "JPEG quality of the re-encoded images.")
flags.DEFINE_integer("train_shards", None, "Training shards, at most one per image (default: one per 256 images, "
                     "at most 1024 as ImageNet's).")
flags.DEFINE_integer("validation_shards", None, "Validation shards, at most one per image (default: one per 256 "
                     "images, at most 128 as ImageNet's).")
flags.DEFINE_integer("num_processes", None, "Processes on this machine (default: every core).")
flags.DEFINE_integer("num_workers", 1, "Machines sharing the job; each writes shards i, i+N, ...")
flags.DEFINE_integer("worker_index", 0, "This machine's index, 0..num_workers-1.")
flags.DEFINE_integer("seed", 0, "Seed of the training examples' shuffle into shards (the same on every machine).")
flags.DEFINE_bool("finalize", False, "Only write the manifest and the mean image, once every shard is complete.")


def check_flags():
    """Every flag checked before anything is read or written: one error line naming the flag."""
    if not FLAGS.output_dir:
        cli.fail("--output_dir is required: a local folder or gs://bucket/path for the shards.")
    if not FLAGS.finalize and bool(FLAGS.input_dir) == bool(FLAGS.train_dir):
        cli.fail("pass exactly one source: --input_dir (<class>/*, or train/<class>/* and val/<class>/*) or --train_dir "
                 "(ILSVRC2012 per-synset tars) with --val_dir and --val_labels.")
    for name in ("input_dir", "train_dir", "val_dir"):
        if FLAGS[name].value and not os.path.isdir(FLAGS[name].value):
            cli.fail(f"--{name}={FLAGS[name].value} is not a directory.")
    for name in ("val_labels", "synset_names"):
        if FLAGS[name].value and not os.path.isfile(FLAGS[name].value):
            cli.fail(f"--{name}={FLAGS[name].value}: no such file.")
    for name in ("size", "train_shards", "validation_shards", "num_workers"):
        if FLAGS[name].value is not None and FLAGS[name].value < 1:
            cli.fail(f"--{name}={FLAGS[name].value} must be at least 1.")
    if FLAGS.num_processes is not None and FLAGS.num_processes < 1:
        cli.fail(f"--num_processes={FLAGS.num_processes} must be at least 1.")
    if not 0 <= FLAGS.worker_index < FLAGS.num_workers:
        cli.fail(f"--worker_index={FLAGS.worker_index} must be in 0..{FLAGS.num_workers - 1}.")
    if not 1 <= FLAGS.quality <= 100:
        cli.fail(f"--quality={FLAGS.quality} must be 1..100.")


def report(manifest):
    """What was written, the files skipped (the first 20) and the --dataset string to train with."""
    from keras_alexnet.errors import counted

    for split, entry in manifest["splits"].items():
        skipped = entry["skipped"]
        shards = len(entry["shards"])
        examples = entry["num_examples"]
        print(f"{split}: {counted(examples, 'example')} in {counted(shards, 'shard')}; "
              f"{counted(len(skipped), 'file')} skipped" + (f", {entry['upscaled']} enlarged" if entry.get("upscaled") else "")
              + "".join(f"\n  skipped {path}: {why}" for path, why in skipped[:20])
              + (f"\n  ... and {len(skipped) - 20} more (manifest.json)" if len(skipped) > 20 else ""))
    from keras_alexnet import augment, min_input_size

    enlarged = sum(entry.get("upscaled", 0) for entry in manifest["splits"].values())
    smallest = augment.scaled_size(min_input_size())  # 76: what a 67-px run rescales to, enlarging as it must
    if enlarged and manifest["size"] > smallest:
        print(f"note: {enlarged} images had a shorter side under --size={manifest['size']} and were enlarged, which adds "
              f"no detail: for small photos a --size between the training --image_size x 256/227 "
              f"({smallest} for {min_input_size()}) and the photos' own takes less room and decodes faster.")
    print(f"training mean (RGB, per channel): {manifest.get('mean_rgb')}")
    print(f"--dataset=tfrecord:{FLAGS.output_dir}   (or tfrecord:{FLAGS.output_dir}?mean=channel to subtract this "
          "training set's own mean, §2)")


def main(argv):
    check_flags()
    from keras_alexnet import prepare
    from keras_alexnet.run_config import check_outside_data, check_writable

    if FLAGS.input_dir:  # inside it, the shards' folder would be listed as a class, now and by later runs
        check_outside_data(FLAGS.output_dir, "--output_dir", f"folder:{FLAGS.input_dir}")
    prepare.check_holds_only_shards(FLAGS.output_dir)
    check_writable(FLAGS.output_dir, "--output_dir")  # before any image is read
    if FLAGS.finalize:
        manifest = prepare.finalize(FLAGS.output_dir)
    else:
        names = prepare.read_synset_names(FLAGS.synset_names) if FLAGS.synset_names else None
        if FLAGS.input_dir:
            plan = prepare.list_folder(FLAGS.input_dir, names)
        else:
            plan = prepare.list_ilsvrc(FLAGS.train_dir, FLAGS.val_dir, FLAGS.val_labels, names)
        print(f"{len(plan.class_names)} classes; " + ", ".join(f"{len(v)} {k} files" for k, v in plan.splits.items()),
              flush=True)
        manifest = prepare.prepare(
            plan, FLAGS.output_dir, num_shards={"train": FLAGS.train_shards, "validation": FLAGS.validation_shards},
            resize_mode=FLAGS.resize, size=FLAGS.size, quality=FLAGS.quality,
            num_processes=FLAGS.num_processes or os.cpu_count(), num_workers=FLAGS.num_workers,
            worker_index=FLAGS.worker_index, seed=FLAGS.seed, stream=sys.stdout,
        )
    if manifest is None:
        print("other workers' shards are not complete yet: the last worker to finish writes the manifest "
              "(or run this command with --finalize once all have finished)")
        return 0
    report(manifest)
    return 0


if __name__ == "__main__":
    cli.run(main)
