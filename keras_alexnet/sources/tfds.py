"""`tfds:NAME`: any TFDS image classification dataset, e.g. "tfds:imagenet2012", read from
`data_dir`; if it is not prepared and `manual_dir` is given, it is built from the files there
(ImageNet: ILSVRC2012_img_train.tar and _val.tar)."""

import contextlib
import logging

import tensorflow as tf

from keras_alexnet.errors import UsageError, first_line
from keras_alexnet.sources.common import SPLITS, DatasetInfo


class TFDS:
    KIND, FORM, NEEDS_ARGUMENT = "tfds", "tfds:NAME", True

    def __init__(self, spec, argument, data_dir=None, manual_dir=None):
        self.spec = spec
        self.builder = _builder(argument, data_dir, manual_dir)
        self.image_key, self.label_key = self.builder.info.supervised_keys
        self.num_classes = self.builder.info.features[self.label_key].num_classes
        self.mean_rgb = None

    def info(self):
        counts = {split: self._count(split) for split in SPLITS if self._split_name(split, check=False)}
        return DatasetInfo(self.spec, self.num_classes, list(self.builder.info.features[self.label_key].names), counts)

    def records(self, split, training, input_context, seed, shuffle_buffer):
        import tensorflow_datasets as tfds

        builder = self.builder
        name = self._split_name(split)
        num_pipelines = input_context.num_input_pipelines if input_context else 1
        shards = builder.info.splits[name].num_shards if name in builder.info.splits else 0
        read_context = None
        if num_pipelines > 1:
            if training and shards >= num_pipelines:
                read_context = input_context  # TFDS shards the files across pipelines
            else:  # exactly once across pipelines, by record ranges
                name = tfds.even_splits(name, num_pipelines)[input_context.input_pipeline_id]
        read_config = tfds.ReadConfig(input_context=read_context, shuffle_seed=seed, add_tfds_id=True)
        try:
            dataset = builder.as_dataset(
                split=name, shuffle_files=training, read_config=read_config,
                decoders={self.image_key: tfds.decode.SkipDecoding()},
            )
        except (AssertionError, FileNotFoundError, tf.errors.NotFoundError):
            raise _not_prepared(builder) from None
        records = dataset.map(lambda ex: (ex[self.image_key], tf.cast(ex[self.label_key], tf.int32), ex["tfds_id"]))
        if training:
            records = records.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        return records, lambda image, label: (image, label)

    def _split_name(self, split, check=True):
        known = list(self.builder.info.splits.keys())
        if not known:  # not prepared (or mocked by tfds.testing.mock_data): use the usual names
            return "train" if split == "train" else "validation"
        for name in (("train",) if split == "train" else ("validation", "test")):
            if name in known:
                return name
        if check:
            raise UsageError(f"TFDS dataset {self.builder.name} has no {split} split; it has {', '.join(known)}")
        return None

    def _count(self, split):
        name = self._split_name(split)
        if name in self.builder.info.splits:
            return self.builder.info.splits[name].num_examples
        try:  # not prepared; tfds.testing.mock_data still serves it
            return int(self.builder.as_dataset(split=name).cardinality())
        except (AssertionError, FileNotFoundError, tf.errors.NotFoundError):
            raise _not_prepared(self.builder) from None


def _builder(name, data_dir, manual_dir):
    import tensorflow_datasets as tfds

    with _without_absl_warning("has no dataset_info.json"):
        try:
            builder = tfds.builder(name, data_dir=data_dir)
        except Exception as error:  # DatasetNotFoundError and friends
            raise UsageError(f"unknown TFDS dataset {name!r}: {first_line(error)}") from None
        prepared = builder.is_prepared()
    if not prepared and manual_dir:
        # Builds offline from the files in manual_dir (ImageNet: the two ILSVRC2012 tars).
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    return builder


@contextlib.contextmanager
def _without_absl_warning(fragment):
    """absl's log records that contain `fragment` dropped inside the block. tfds.builder warns
    "Variant folder .../cifar10/3.0.2 has no dataset_info.json" for a dataset not prepared, a
    folder that need not exist; `_not_prepared` then says what to do, in one line."""
    def drop(record):
        return fragment not in record.getMessage()

    logger = logging.getLogger("absl")
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


def _not_prepared(builder):
    """How to prepare it: with the files of a manually downloaded dataset (ImageNet's tars), or
    by TFDS's own download, on a machine that can reach the data's hosts."""
    where = f"TFDS dataset {builder.name} is not prepared in {builder.data_dir}"
    if getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None):
        return UsageError(f"{where}: pass --manual_dir=DIR holding its downloaded files to build it there, or build it "
                          f"with `tfds build {builder.name} --data_dir=DIR --manual_dir=FILES` and pass --data_dir=DIR")
    return UsageError(f"{where}: build it with `tfds build {builder.name} --data_dir=DIR` (it downloads the data; on a "
                      "machine without internet, build it elsewhere and copy DIR) and pass --data_dir=DIR")
