"""tf.data input pipelines: one dataset string -> batches of (images, labels) for AlexNet.

Dataset strings (`spec`):
    "shapes" / "shapes:train=N,validation=M,seed=S,size=P"
                     the built-in demo dataset (keras_alexnet/shapes.py); no files.
    "synthetic" / "synthetic:num_classes=N"
                     random batches already at the model's input size (throughput measurement).
    "folder:PATH"    PATH/train/<class>/* and PATH/val/<class>/* (or PATH/validation/...), the
                     ImageNet / ImageFolder layout; JPEG, PNG, GIF, BMP; classes sorted by name.
    "tfrecord:GLOB"  TFRecords of tf.train.Examples with `image/encoded` and `image/class/label`
                     (the tensorflow/models and Cloud TPU ImageNet format). GLOB is a directory
                     holding train-* and validation-* files, or a pattern containing "{split}".
                     Options after "?": label_offset (default 1: those scripts write 1..1000,
                     0 is "background"), num_classes (default 1000), e.g.
                     "tfrecord:/data/in/{split}-*?label_offset=0&num_classes=10".
                     A directory written by scripts/prepare_data.py holds a manifest.json: its
                     label_offset, num_classes, class names and counts are used, and a listed
                     shard that is missing or truncated is a UsageError naming it. With
                     "?mean=channel" the training set's per-channel mean from the manifest is
                     subtracted instead of the ImageNet mean (§2; docs/imagenet.md).
    "tfds:NAME"      any TFDS image classification dataset, e.g. "tfds:imagenet2012"; read from
                     `data_dir`; if it is not prepared and `manual_dir` is given, it is built
                     from the files there (ImageNet: ILSVRC2012_img_train.tar, _val.tar).

The pipeline (make_dataset), per input pipeline (tf.distribute.InputContext):
    records (this pipeline's share of the files, or of the records) -> shuffle -> repeat
    (training) -> per-example seed -> decode + augment in parallel, in groups that skip
    undecodable images -> rebatch (per-replica batch size) -> [training: the batch's float work,
    augment.finish_views, unless image_dtype="uint8" leaves it to the accelerator] -> [tf.data
    service] -> prefetch.

Bad input never stops a run and never passes silently: an example that cannot be read or decoded
(truncated or empty file, not an image, bad label) is skipped, counted in `BAD_IMAGES`, and the
first one is logged as a warning; `BAD_IMAGES.summary()` names the first few.
"""

import dataclasses
import functools
import glob
import os
import random
import re
import sys
import threading

import numpy as np
import tensorflow as tf
from absl import logging

from keras_alexnet import augment, prepare, shapes
from keras_alexnet.errors import UsageError, first_line

SPLITS = ("train", "validation")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp")
# Records held in the shuffle buffer for record-based sources (tfrecord, tfds); file lists and
# in-memory datasets are shuffled whole.
DEFAULT_SHUFFLE_BUFFER = 10_000
_FOLDER_LAYOUT = "PATH/train/<class>/*.jpg and PATH/val/<class>/*.jpg"
_KINDS = "shapes, synthetic, folder:PATH, tfrecord:GLOB or tfds:NAME"
# ImageNet (ILSVRC-2012) split sizes, for the standard TFRecord shards and for `synthetic`.
_IMAGENET_EXAMPLES = {"train": 1_281_167, "validation": 50_000}


@dataclasses.dataclass
class DatasetInfo:
    """What a training run needs to know about a dataset."""

    spec: str
    num_classes: int
    class_names: list
    num_examples: dict  # split -> number of examples
    mean_rgb: list = None  # the per-channel mean the pipeline subtracts, when not the ImageNet mean


class BadImageLog:
    """Counts examples skipped because they could not be read or decoded; warns once.

    Shared by every pipeline in the process (`BAD_IMAGES`). Pipelines sent to a tf.data service
    cannot call back into Python: there each skip is printed to the worker's stderr instead.
    """

    FIRST_FEW = 5

    def __init__(self):
        self._lock = threading.Lock()
        self.count = 0
        self.first_names = []

    def record(self, name):
        name = name.numpy().decode("utf-8", "replace") if hasattr(name, "numpy") else str(name)
        with self._lock:
            self.count += 1
            if len(self.first_names) < self.FIRST_FEW:
                self.first_names.append(name)
            first = self.count == 1
        if first:
            logging.warning(
                "skipped an image that could not be read or decoded (truncated, empty, not an image, "
                "or a bad label): %s. Further ones are skipped and counted: keras_alexnet.data.BAD_IMAGES.summary()",
                name,
            )
        return False

    def summary(self):
        """One line: how many were skipped and the first few names ('' when none)."""
        with self._lock:
            if not self.count:
                return ""
            return f"{self.count} undecodable images skipped; first: {', '.join(self.first_names)}"

    def reset(self):
        with self._lock:
            self.count = 0
            self.first_names = []


BAD_IMAGES = BadImageLog()


# ----------------------------------------------------------------------------- dataset strings


def _parse_spec(spec):
    if not isinstance(spec, str) or not spec:
        raise UsageError(f"empty dataset string; expected {_KINDS}")
    kind, _, rest = spec.partition(":")
    if kind in ("shapes", "synthetic"):
        return kind, rest
    if kind in ("folder", "tfrecord", "tfds") and rest:
        return kind, rest
    raise UsageError(f"unknown dataset {spec!r}; expected {_KINDS}")


def _parse_options(text, spec, allowed):
    options = {}
    for item in filter(None, re.split(r"[&,]", text)):
        key, _, value = item.partition("=")
        if key not in allowed or not re.fullmatch(r"-?\d+", value):
            raise UsageError(f"bad option {item!r} in {spec!r}; allowed: {', '.join(f'{k}=INT' for k in allowed)}")
        options[key] = int(value)
    return options


def _check_split(split):
    if split not in SPLITS:
        raise UsageError(f"unknown split {split!r}; expected 'train' or 'validation'")


def dataset_info(spec, data_dir=None, manual_dir=None):
    """DatasetInfo (num_classes, class_names, num_examples per split) of a dataset string."""
    kind, rest = _parse_spec(spec)
    if kind == "shapes":
        config = shapes.parse_spec(spec)
        return DatasetInfo(spec, len(shapes.CLASS_NAMES), list(shapes.CLASS_NAMES), config.num_examples())
    if kind == "synthetic":
        num_classes = _parse_options(rest, spec, ("num_classes",)).get("num_classes", 1000)
        return DatasetInfo(spec, num_classes, [str(i) for i in range(num_classes)], dict(_IMAGENET_EXAMPLES))
    if kind == "folder":
        root = os.path.expanduser(rest)
        class_names = _folder_classes(root)
        counts = {}
        for split in SPLITS:
            try:
                counts[split] = len(_folder_files(root, split)[0])
            except UsageError:
                if split == "train":
                    raise
        return DatasetInfo(spec, len(class_names), list(class_names), counts)
    if kind == "tfrecord":
        config = _tfrecord_config(spec)
        manifest = config["manifest"]
        if manifest:  # written by scripts/prepare_data.py: counts and names without reading the shards
            counts = {split: _tfrecord_files(config, split) and manifest["splits"][split]["num_examples"]
                      for split in SPLITS if split in manifest["splits"]}
            return DatasetInfo(spec, config["num_classes"], list(manifest["class_names"]), counts, config["mean_rgb"])
        counts = {split: _tfrecord_count(config, split) for split in SPLITS if _tfrecord_files(config, split, check=False)}
        return DatasetInfo(spec, config["num_classes"], _tfrecord_class_names(config["num_classes"]), counts)
    builder = _tfds_builder(rest, data_dir, manual_dir)
    label_key = builder.info.supervised_keys[1]
    feature = builder.info.features[label_key]
    counts = {split: _tfds_count(builder, split) for split in SPLITS if _tfds_split_name(builder, split, check=False)}
    return DatasetInfo(spec, feature.num_classes, list(feature.names), counts)


# ----------------------------------------------------------------------------- folder:PATH


def _folder_split_dir(root, split):
    names = ("train",) if split == "train" else ("val", "validation")
    for name in names:
        path = os.path.join(root, name)
        if os.path.isdir(path):
            return path
    return None


@functools.lru_cache(maxsize=8)
def _folder_classes(root):
    if not os.path.isdir(root):
        raise UsageError(f"data directory {root} does not exist; expected {_FOLDER_LAYOUT.replace('PATH', root)}")
    source = _folder_split_dir(root, "train") or _folder_split_dir(root, "validation")
    if source is None:
        raise UsageError(f"{root} has no train/ or val/ folder; expected {_FOLDER_LAYOUT.replace('PATH', root)}")
    classes = sorted(entry.name for entry in os.scandir(source) if entry.is_dir() and not entry.name.startswith("."))
    if not classes:
        raise UsageError(f"{source} has no class folders; expected {source}/<class>/*.jpg")
    return tuple(classes)


@functools.lru_cache(maxsize=8)
def _folder_files(root, split):
    """(paths, labels) of one split, sorted by class then file name."""
    classes = _folder_classes(root)
    split_dir = _folder_split_dir(root, split)
    if split_dir is None:
        raise UsageError(f"{root} has no {'train' if split == 'train' else 'val'}/ folder; expected "
                         f"{_FOLDER_LAYOUT.replace('PATH', root)}")
    index = {name: i for i, name in enumerate(classes)}
    paths, labels = [], []
    for entry in sorted(os.scandir(split_dir), key=lambda e: e.name):
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        if entry.name not in index:
            raise UsageError(f"class folder {entry.path} is not among the train classes in {root}/train")
        files = sorted(f.path for f in os.scandir(entry.path) if f.is_file() and not f.name.startswith("."))
        if not any(path.lower().endswith(IMAGE_EXTENSIONS) for path in files):
            raise UsageError(f"class folder {entry.path} has no images; expected {entry.path}/*.jpg (or .png)")
        # Every file is kept: a non-image is skipped and counted at decode time, never silently.
        paths.extend(files)
        labels.extend([index[entry.name]] * len(files))
    if not paths:
        raise UsageError(f"{split_dir} has no class folders with images; expected {split_dir}/<class>/*.jpg")
    return tuple(paths), tuple(labels)


def _folder_records(root, split, training, pipeline, seed):
    paths, labels = _folder_files(root, split)
    num_pipelines, pipeline_id = pipeline
    paths, labels = paths[pipeline_id::num_pipelines], labels[pipeline_id::num_pipelines]
    records = tf.data.Dataset.from_tensor_slices((list(paths), np.array(labels, np.int32), list(paths)))
    if training:
        records = records.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    return records, lambda path, label: (tf.io.read_file(path), label)


# ----------------------------------------------------------------------------- tfrecord:GLOB


def _tfrecord_config(spec):
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
    config.update(_parse_options(options, spec, ("label_offset", "num_classes")))
    if mean:
        if not manifest or "mean_rgb" not in manifest:
            raise UsageError(f"{spec!r}: mean=channel needs the manifest.json with the training mean that "
                             f"scripts/prepare_data.py writes beside the shards; none in {pattern}")
        config["mean_rgb"] = list(manifest["mean_rgb"])
    return config


def _is_dir(path):
    return tf.io.gfile.isdir(path) if "://" in path else os.path.isdir(path)


def _tfrecord_files(config, split, check=True):
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


def _tfrecord_count(config, split):
    files = _tfrecord_files(config, split)
    names = [os.path.basename(f) for f in files]
    if re.fullmatch(rf"{split}-\d{{5}}-of-{len(files):05d}", names[0] or "") and len(files) in (1024, 128):
        return _IMAGENET_EXAMPLES[split]  # the standard ImageNet shards: do not read 150 GB to count
    return int(tf.data.TFRecordDataset(files).reduce(np.int64(0), lambda count, _: count + 1))


@functools.lru_cache(maxsize=4)
def _tfrecord_class_names(num_classes):
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


_TFRECORD_FEATURES = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/class/label": tf.io.FixedLenFeature([], tf.int64),
}


def _tfrecord_records(config, split, training, pipeline, seed, shuffle_buffer):
    files = _tfrecord_files(config, split)
    num_pipelines, pipeline_id = pipeline
    file_ds = tf.data.Dataset.from_tensor_slices(files)
    shard_records = len(files) < num_pipelines
    if not shard_records:
        file_ds = file_ds.shard(num_pipelines, pipeline_id)
    if training:
        file_ds = file_ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    records = file_ds.interleave(
        lambda f: tf.data.TFRecordDataset(f).map(lambda r: (r, tf.constant(-1, tf.int32), f)),
        cycle_length=min(16, len(files)), block_length=1, num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=None if training else True,  # evaluation keeps the record order (module docstring)
    )
    if shard_records:  # fewer files than pipelines: every pipeline reads all, keeps its share
        records = records.shard(num_pipelines, pipeline_id)
    if training:
        records = records.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    offset = config["label_offset"]

    def parse(record, _):
        example = tf.io.parse_single_example(record, _TFRECORD_FEATURES)
        return example["image/encoded"], tf.cast(example["image/class/label"] - offset, tf.int32)

    return records, parse


# ----------------------------------------------------------------------------- tfds:NAME


def _tfds_builder(name, data_dir, manual_dir):
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as error:  # DatasetNotFoundError and friends
        raise UsageError(f"unknown TFDS dataset {name!r}: {first_line(error)}") from None
    if not builder.is_prepared() and manual_dir:
        # Builds offline from the files in manual_dir (ImageNet: the two ILSVRC2012 tars).
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    return builder


def _not_prepared(builder):
    return UsageError(
        f"TFDS dataset {builder.name} is not prepared in {builder.data_dir}; prepare it with "
        f"`tfds build {builder.name} --data_dir=DIR [--manual_dir=DIR_WITH_ILSVRC2012_TARS]` "
        "or pass manual_dir (--manual_dir)"
    )


def _tfds_split_name(builder, split, check=True):
    known = list(builder.info.splits.keys())
    if not known:  # not prepared (or mocked by tfds.testing.mock_data): use the usual names
        return "train" if split == "train" else "validation"
    for name in (("train",) if split == "train" else ("validation", "test")):
        if name in known:
            return name
    if check:
        raise UsageError(f"TFDS dataset {builder.name} has no {split} split; it has {', '.join(known)}")
    return None


def _tfds_count(builder, split):
    name = _tfds_split_name(builder, split)
    if name in builder.info.splits:
        return builder.info.splits[name].num_examples
    try:  # not prepared; tfds.testing.mock_data still serves it
        return int(builder.as_dataset(split=name).cardinality())
    except (AssertionError, FileNotFoundError, tf.errors.NotFoundError):
        raise _not_prepared(builder) from None


def _tfds_records(builder, split, training, input_context, seed, shuffle_buffer):
    import tensorflow_datasets as tfds

    name = _tfds_split_name(builder, split)
    image_key, label_key = builder.info.supervised_keys
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
            decoders={image_key: tfds.decode.SkipDecoding()},
        )
    except (AssertionError, FileNotFoundError, tf.errors.NotFoundError):
        raise _not_prepared(builder) from None
    records = dataset.map(lambda ex: (ex[image_key], tf.cast(ex[label_key], tf.int32), ex["tfds_id"]))
    if training:
        records = records.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    return records, lambda image, label: (image, label)


# ----------------------------------------------------------------------------- shapes, synthetic


def _shapes_records(spec, split, training, pipeline, seed):
    config = shapes.parse_spec(spec)
    encoded, labels = shapes.encoded_split(config, split)
    names = np.array([f"shapes/{split}/{i}" for i in range(len(labels))])
    records = tf.data.Dataset.from_tensor_slices((encoded.astype(bytes), labels, names))
    records = records.shard(*pipeline)
    if training:
        records = records.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
    return records, lambda image, label: (image, label)


def _synthetic_dataset(spec, split, image_size, batch_size, training, crops, pipeline, seed, image_dtype):
    info = dataset_info(spec)
    shape = [batch_size] + ([10] if crops == 10 else []) + [image_size, image_size, 3]
    rng = np.random.default_rng(seed)
    if image_dtype == "uint8":  # training only (make_dataset checks): crops and zero shifts
        views = (rng.integers(0, 256, shape).astype(np.uint8), np.zeros([batch_size, 3], np.float32))
        labels = rng.integers(0, info.num_classes, batch_size).astype(np.int32)
        return tf.data.Dataset.from_tensors((views, labels)).repeat()
    images = rng.normal(0.0, 60.0, shape).astype(np.float32)
    labels = rng.integers(0, info.num_classes, batch_size).astype(np.int32)
    dataset = tf.data.Dataset.from_tensors((images, labels))
    if training:
        return dataset.repeat()
    num_pipelines, pipeline_id = pipeline
    share = len(range(pipeline_id, info.num_examples[split], num_pipelines))
    full, rest = divmod(share, batch_size)
    dataset = dataset.repeat(full)
    if rest:
        dataset = dataset.concatenate(tf.data.Dataset.from_tensors((images[:rest], labels[:rest])))
    return dataset


# ----------------------------------------------------------------------------- the pipeline


def _report_in_python(failed_names):
    def record_all(names):
        for name in names.numpy():
            BAD_IMAGES.record(name.decode("utf-8", "replace"))
        return True

    return tf.reshape(tf.py_function(record_all, [failed_names], tf.bool), [])


def _report_in_graph(failed_names):
    # A tf.data service worker cannot call back into this process: print there instead.
    with tf.control_dependencies([tf.print("keras_alexnet: skipped undecodable images:", failed_names,
                                           output_stream=sys.stderr)]):
        return tf.constant(True)


# Examples tried together: one small dataset per group instead of one per example (the per-example
# version cost ~20% of the training pipeline's CPU, docs/input.md).
GROUP_SIZE = 8


def skip_bad_examples(records, load, view, placeholder, num_classes, report=_report_in_python, keep_order=None):
    """Map (payload, label, name, seed) -> groups of (views, labels), skipping examples that fail.

    `placeholder`: tensors with the structure, shapes and dtypes of a view.

    tf.data has no try/except. Records are taken GROUP_SIZE at a time; each group runs in its own
    small dataset, `map(view)` then `ignore_errors()`, which drops the examples that fail, then
    one placeholder (so a group in which every example failed still yields), all batched into
    one element. The group's examples that are missing from it are reported by name (`report`),
    the placeholder dropped. A parallel interleave runs the groups in parallel. Each element is
    a group: views and labels batched, at most GROUP_SIZE of them (none if all failed); `rebatch`
    them (one copy per view, where unbatch + batch makes two). `keep_order=True` keeps the
    records' order whatever the dataset options say; None leaves it to
    `tf.data.Options.deterministic`.
    """
    def run(payload, label, name, seed, index):
        image_bytes, label = load(payload, label)
        check = tf.debugging.assert_less(tf.cast(label, tf.uint32), tf.cast(num_classes, tf.uint32),
                                         message="label out of range")
        with tf.control_dependencies([check]):
            return view(image_bytes, seed), tf.identity(label), index

    def attempt(payloads, labels, names, seeds):
        indices = tf.range(tf.shape(names)[0])
        good = tf.data.Dataset.from_tensor_slices((payloads, labels, names, seeds, indices)).map(run).ignore_errors()
        end = tf.data.Dataset.from_tensors((placeholder, labels[0], tf.constant(-1)))
        return good.concatenate(end).batch(GROUP_SIZE + 1).map(
            lambda views, labels_, done: (views, labels_, done, names))

    def report_and_trim(views, labels_, done, names):
        decoded = tf.reduce_any(tf.equal(tf.range(tf.shape(names)[0])[:, None], done[None, :]), axis=1)
        failed = tf.boolean_mask(names, tf.logical_not(decoded))
        reported = tf.cond(tf.size(failed) > 0, lambda: report(failed), lambda: tf.constant(True))
        with tf.control_dependencies([reported]):
            keep = tf.shape(done)[0] - 1  # the placeholder is last
            return tf.nest.map_structure(lambda x: x[:keep], (views, labels_))

    groups = records.batch(GROUP_SIZE).interleave(attempt, cycle_length=tf.data.AUTOTUNE, block_length=1,
                                                  num_parallel_calls=tf.data.AUTOTUNE, deterministic=keep_order)
    return groups.map(report_and_trim)


def make_dataset(
    spec,
    split,
    *,
    image_size,
    batch_size,
    training,
    input_context=None,
    data_dir=None,
    manual_dir=None,
    seed=None,
    deterministic=False,
    augmentation="paper",
    crops=1,
    data_service=None,
    mean_image=None,
    shuffle_buffer=DEFAULT_SHUFFLE_BUFFER,
    image_dtype="float32",
):
    """Batches of (images float32 [B, S, S, 3] (or [B, 10, S, S, 3] with crops=10), labels int32 [B]).

    With training=True and image_dtype="uint8" the images come as `(crops, shifts)`: the uint8
    crops [B, S, S, 3] and their lighting shifts float32 [B, 3], for `augment.finish_views` to
    turn into the model's input on the accelerator (the Trainer does, inside its compiled step).
    The host then never writes float32 pixels: a quarter of the bytes to batch and to copy.

    Args:
        spec: dataset string (module docstring).
        split: "train" or "validation".
        image_size: S, the model's input size (227 for the paper).
        batch_size: examples per batch of THIS input pipeline (the per-replica batch size).
        training: True: shuffled, augmented (`augmentation`), repeated forever, full batches only.
            False: the centre view (crops=1) or the ten views (crops=10), one pass, every example
            exactly once across all input pipelines, the last batch may be smaller.
        input_context: tf.distribute.InputContext; this pipeline reads only its share (files
            where there are enough, else records).
        data_dir, manual_dir: for tfds: where the prepared data is / the raw files to build it.
        seed: int; the same seed gives the same shuffles and augmentations. None: random.
        deterministic: keep the training element order fixed despite parallelism (slower).
            Evaluation (training=False) always keeps the order of the files or records.
        augmentation: "paper", "inception" or "none" (augment.py).
        crops: 1 or 10 (evaluation only).
        data_service: "grpc://host:port" of a tf.data service dispatcher: decoding and
            augmentation run on its workers.
        mean_image: per-pixel mean float32 [S, S, 3] (compute_mean_image) instead of the
            per-channel ImageNet mean.
        shuffle_buffer: records in the shuffle buffer of tfrecord and tfds sources.
        image_dtype: "float32" (the model's input) or, for training, "uint8" (see above).
    """
    _check_split(split)
    kind, rest = _parse_spec(spec)
    if augmentation not in augment.AUGMENTATIONS:
        raise UsageError(f"unknown augmentation {augmentation!r}; expected one of {', '.join(augment.AUGMENTATIONS)}")
    if crops not in (1, 10) or (training and crops != 1):
        raise UsageError(f"crops={crops} is not supported; use 1, or 10 for evaluation")
    if batch_size < 1:
        raise UsageError(f"batch_size must be positive, got {batch_size}")
    if image_dtype not in ("float32", "uint8") or (image_dtype == "uint8" and (not training or mean_image is not None)):
        raise UsageError(f"image_dtype={image_dtype!r} is not supported here: use float32, or uint8 for training "
                         "without mean_image (pass the mean to augment.finish_views instead)")
    if seed is None:
        seed = random.SystemRandom().randrange(2**31)
    pipeline = (input_context.num_input_pipelines, input_context.input_pipeline_id) if input_context else (1, 0)
    options = tf.data.Options()
    options.deterministic = deterministic

    if kind == "synthetic":
        dataset = _synthetic_dataset(spec, split, image_size, batch_size, training, crops, pipeline, seed, image_dtype)
        return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)

    if kind == "shapes":
        records, load = _shapes_records(spec, split, training, pipeline, seed)
    elif kind == "folder":
        records, load = _folder_records(os.path.expanduser(rest), split, training, pipeline, seed)
    elif kind == "tfrecord":
        records, load = _tfrecord_records(_tfrecord_config(spec), split, training, pipeline, seed, shuffle_buffer)
    else:
        builder = _tfds_builder(rest, data_dir, manual_dir)
        records, load = _tfds_records(builder, split, training, input_context, seed, shuffle_buffer)
    num_classes = dataset_info(spec, data_dir, manual_dir).num_classes if kind != "tfrecord" \
        else _tfrecord_config(spec)["num_classes"]

    if training:
        records = records.repeat()
    # A stateless seed per example: [seed, pipeline, index] packed into two int64s, so the
    # augmentation of an example does not depend on thread scheduling.
    records = records.enumerate().map(
        lambda index, record: record + (tf.stack([tf.constant(seed, tf.int64), pipeline[1] * 2**40 + index]),))

    # mean=channel (tfrecord): the evaluation views subtract it; the training views fold its
    # difference from the ImageNet mean into their lighting shifts, which finish_views subtracts
    # with the ImageNet mean (also on the accelerator), giving crops - dataset mean + lighting.
    dataset_mean = _tfrecord_config(spec)["mean_rgb"] if kind == "tfrecord" else None
    if dataset_mean is not None and mean_image is not None:
        raise UsageError(f"{spec!r} asks for the training set's mean (mean=channel): do not pass mean_image as well")
    if dataset_mean is not None and not training:
        mean_image = np.array(dataset_mean, np.float32)
    shift_offset = (np.array(augment.IMAGENET_MEAN_RGB, np.float32) - np.array(dataset_mean, np.float32)
                    if dataset_mean is not None else np.zeros(3, np.float32))

    if training:
        # Only the crop is made per image; the float work happens per batch (finish_views).
        def view(image_bytes, example_seed):
            return (augment.train_crop(image_bytes, image_size, example_seed, augmentation),
                    augment.lighting_shift(example_seed, augmentation) + shift_offset)
        placeholder = (tf.zeros([image_size, image_size, 3], tf.uint8), tf.zeros([3], tf.float32))
    elif crops == 10:
        def view(image_bytes, example_seed):
            return augment.ten_crop(augment.decode_for_view(image_bytes, image_size), image_size, mean_image)
        placeholder = tf.zeros([10, image_size, image_size, 3], tf.float32)
    else:
        def view(image_bytes, example_seed):
            return augment.center_view(augment.decode_for_view(image_bytes, image_size), image_size, mean_image)
        placeholder = tf.zeros([image_size, image_size, 3], tf.float32)

    report = _report_in_graph if data_service else _report_in_python
    # Evaluation keeps the file order (results line up with the files); training need not.
    dataset = skip_bad_examples(records, load, view, placeholder, num_classes, report,
                                keep_order=None if training else True)
    dataset = dataset.rebatch(batch_size, drop_remainder=training)
    if training and image_dtype == "float32":
        dataset = dataset.map(lambda views, labels: (augment.finish_views(*views, mean_image), labels),
                              num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.with_options(options)
    if data_service:
        dataset = _distribute(dataset, data_service, training)
    return dataset.prefetch(tf.data.AUTOTUNE)


def _distribute(dataset, address, training):
    """Run the pipeline on the workers of a tf.data service dispatcher at `address`.

    ShardingPolicy.DYNAMIC: the dispatcher hands the source's elements (files, records) out to
    the workers, so in evaluation each example is seen once, and in training two workers do not
    produce the same stream (with ShardingPolicy.OFF every worker would run the whole pipeline
    with the same seed).
    """
    if not re.fullmatch(r"grpc://[^:/]+:\d+", address):
        raise UsageError(f"data service address {address!r} must look like grpc://host:port")
    policy = tf.data.experimental.service.ShardingPolicy
    return dataset.apply(tf.data.experimental.service.distribute(processing_mode=policy.DYNAMIC, service=address))


def compute_mean_image(spec, image_size, *, num_images=10_000, data_dir=None, manual_dir=None, batch_size=64):
    """The per-pixel mean of the training set's centre views, float32 [S, S, 3] on 0..255 (§2).

    Pass it to make_dataset(mean_image=...) for the paper's per-pixel mean subtraction. Uses the
    first `num_images` training images (in file order).
    """
    dataset = make_dataset(spec, "train", image_size=image_size, batch_size=batch_size, training=False,
                           data_dir=data_dir, manual_dir=manual_dir, seed=0)
    total = np.zeros([image_size, image_size, 3], np.float64)
    count = 0
    for images, _ in dataset:
        images = images.numpy()[: num_images - count]
        total += images.sum(axis=0)
        count += len(images)
        if count >= num_images:
            break
    if count == 0:
        raise UsageError(f"{spec} has no decodable training images to average")
    return (total / count + np.array(augment.IMAGENET_MEAN_RGB)).astype(np.float32)
