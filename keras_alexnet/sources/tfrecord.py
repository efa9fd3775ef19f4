"""`tfrecord:GLOB`: TFRecords of tf.train.Examples with `image/encoded` and `image/class/label`
(the tensorflow/models and Cloud TPU ImageNet format), or shards written by scripts/prepare_data.py
(their manifest.json gives the labels, names, counts and the training mean). data.py's
docstring lists the options."""

import functools
import glob
import os
import re

import numpy as np
import tensorflow as tf

from keras_alexnet import prepare
from keras_alexnet.errors import UsageError
from keras_alexnet.sources.common import IMAGENET_EXAMPLES, SPLITS, DatasetInfo, parse_options, pipeline_share

_FEATURES = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/class/label": tf.io.FixedLenFeature([], tf.int64),
}


class TFRecord:
    KIND, FORM, NEEDS_ARGUMENT = "tfrecord", "tfrecord:GLOB", True

    def __init__(self, spec, argument, data_dir=None, manual_dir=None):
        self.spec = spec
        self.config = tfrecord_config(spec)
        self.num_classes = self.config["num_classes"]
        self.mean_rgb = self.config["mean_rgb"]

    def info(self):
        config, manifest = self.config, self.config["manifest"]
        if manifest:  # written by scripts/prepare_data.py: counts and names without reading the shards
            counts = {split: tfrecord_files(config, split) and manifest["splits"][split]["num_examples"]
                      for split in SPLITS if split in manifest["splits"]}
            return DatasetInfo(self.spec, self.num_classes, list(manifest["class_names"]), counts, self.mean_rgb)
        counts = {split: _count(config, split) for split in SPLITS if tfrecord_files(config, split, check=False)}
        notes = []
        if "num_classes" not in config["given"]:  # a 5-class set read this way trained a 1000-way classifier without a word
            notes.append(f"{config['pattern']} has no manifest.json (scripts/prepare_data.py writes one): reading it as "
                         "ImageNet's TFRecords, 1000 classes with labels 1..1000; for other data give "
                         f"tfrecord:{config['pattern']}?num_classes=N&label_offset=0 (or 1 for labels from 1)")
        return DatasetInfo(self.spec, self.num_classes, _class_names(self.num_classes), counts, notes=notes)

    def records(self, split, training, input_context, seed, shuffle_buffer):
        files = tfrecord_files(self.config, split)
        num_pipelines, pipeline_id = pipeline_share(input_context)
        file_ds = tf.data.Dataset.from_tensor_slices(files)
        shard_records = len(files) < num_pipelines
        if not shard_records:
            file_ds = file_ds.shard(num_pipelines, pipeline_id)
        if training:
            file_ds = file_ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
        records = file_ds.interleave(
            lambda f: tf.data.TFRecordDataset(f).map(lambda r: (r, tf.constant(-1, tf.int32), f)),
            cycle_length=min(16, len(files)), block_length=1, num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=None if training else True,  # evaluation keeps the record order (data.py)
        )
        if shard_records:  # fewer files than pipelines: every pipeline reads all, keeps its share
            records = records.shard(num_pipelines, pipeline_id)
        if training:
            records = records.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        offset = self.config["label_offset"]

        def parse(record, _):
            example = tf.io.parse_single_example(record, _FEATURES)
            return example["image/encoded"], tf.cast(example["image/class/label"] - offset, tf.int32)

        return records, parse


def tfrecord_config(spec):
    """{pattern, label_offset, num_classes, manifest, mean_rgb, given} of a tfrecord: dataset string
    (`given`: the options the string set)."""
    pattern, _, options = spec[len("tfrecord:"):].partition("?")
    pattern = os.path.expanduser(pattern)
    mean = re.search(r"(^|[&,])mean=([^&,]*)", options)
    if mean and mean.group(2) != "channel":
        raise UsageError(f"bad option mean={mean.group(2)!r} in {spec!r}; allowed: mean=channel (the manifest's training mean)")
    options = re.sub(r"(^|[&,])mean=channel", "", options)
    manifest = prepare.read_manifest(pattern) if _is_dir(pattern) else None
    config = {"pattern": pattern, "label_offset": 1, "num_classes": 1000, "manifest": manifest, "mean_rgb": None}
    if manifest:
        config.update(label_offset=manifest["label_offset"], num_classes=manifest["num_classes"])
    given = parse_options(options, spec, ("label_offset", "num_classes"))
    config.update(given, given=sorted(given))
    if mean:
        if not manifest or "mean_rgb" not in manifest:
            raise UsageError(f"{spec!r}: mean=channel needs the manifest.json with the training mean that "
                             f"scripts/prepare_data.py writes beside the shards; none in {pattern}")
        config["mean_rgb"] = list(manifest["mean_rgb"])
    return config


def _is_dir(path):
    return tf.io.gfile.isdir(path) if "://" in path else os.path.isdir(path)


def tfrecord_files(config, split, check=True):
    """The files of one split, sorted; with `check`, a UsageError when there are none or when the
    manifest lists a shard that is missing or truncated."""
    pattern = config["pattern"]
    if _is_dir(pattern):
        split_pattern = pattern.rstrip("/") + f"/{split}-*"
    elif "{split}" in pattern:
        split_pattern = pattern.replace("{split}", split)
    else:
        raise UsageError(f"tfrecord:{pattern} must be a directory holding train-* and validation-* files "
                         "or a pattern with {split} in it, e.g. tfrecord:/data/imagenet/{split}-*")
    files = sorted(tf.io.gfile.glob(split_pattern) if "://" in split_pattern else glob.glob(split_pattern))
    if check and config.get("manifest"):
        prepare.check_shards(pattern, config["manifest"], split, files)
    if check and not files:
        raise UsageError(f"no TFRecord files match {split_pattern}; expected the ImageNet TFRecord layout "
                         "(train-00000-of-01024 ..., validation-00000-of-00128 ...)")
    return files


def _count(config, split):
    files = tfrecord_files(config, split)
    names = [os.path.basename(f) for f in files]
    if re.fullmatch(rf"{split}-\d{{5}}-of-{len(files):05d}", names[0] or "") and len(files) in (1024, 128):
        return IMAGENET_EXAMPLES[split]  # the standard ImageNet shards: do not read 150 GB to count
    return int(tf.data.TFRecordDataset(files).reduce(np.int64(0), lambda count, _: count + 1))


@functools.lru_cache(maxsize=4)
def _class_names(num_classes):
    if num_classes == 1000:
        try:
            from tensorflow_datasets.datasets.imagenet2012 import imagenet_common

            with open(imagenet_common.label_names_file(), encoding="utf-8") as f:
                names = [line.strip() for line in f if line.strip()]
            if len(names) == 1000:
                return names  # WordNet IDs in sorted order: the label order of the TFRecord scripts
        except (ImportError, OSError):
            pass
    return [str(i) for i in range(num_classes)]
