"""tf.data input pipelines: one dataset string -> batches of (images, labels) for AlexNet.

Each kind of dataset string is a source, one module of keras_alexnet/sources (listed in
`sources.SOURCES`), which lists a split's examples; this module is the pipeline that every
source feeds. Dataset strings (`spec`):
    "shapes" / "shapes:train=N,validation=M,seed=S,size=P"
                     the built-in demo dataset (keras_alexnet/shapes.py); no files.
    "synthetic" / "synthetic:num_classes=N"
                     random batches already at the model's input size (throughput measurement).
    "folder:PATH"    PATH/train/<class>/* and PATH/val/<class>/* (or PATH/validation/...), the
                     ImageNet / ImageFolder layout, or PATH/<class>/* with about a fifth of each class
                     held out by file name; JPEG, PNG, GIF, BMP, WebP; classes sorted by name.
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

import random
import re
import socket
import sys
import threading

import numpy as np
import tensorflow as tf
from absl import logging

from keras_alexnet import augment, image_folder, sources
from keras_alexnet.sources.common import check_split, pipeline_share
from keras_alexnet.errors import UsageError, counted

# Records held in the shuffle buffer for record-based sources (tfrecord, tfds); file lists and
# in-memory datasets are shuffled whole.
DEFAULT_SHUFFLE_BUFFER = 10_000


class BadImageLog:
    """Counts examples skipped because they could not be read or decoded; warns once.

    Shared by every pipeline in the process (`BAD_IMAGES`). Pipelines sent to a tf.data service
    cannot call back into Python: there each skip is printed to the worker's stderr instead.
    """

    FIRST_FEW = 5

    def __init__(self):
        self._lock = threading.Lock()
        self.count = 0  # skips: a training file that fails is skipped again every epoch
        self.first_names = []
        self.names = set()  # the distinct files skipped

    def record(self, name):
        name = name.numpy().decode("utf-8", "replace") if hasattr(name, "numpy") else str(name)
        with self._lock:
            self.count += 1
            if name not in self.names and len(self.first_names) < self.FIRST_FEW:
                self.first_names.append(name)
            self.names.add(name)
            first = self.count == 1
        if first:
            logging.warning(
                "skipped an image that could not be read or decoded (truncated, empty, not an image, "
                "or a bad label): %s. Further ones are skipped too and counted (keras_alexnet.data.BAD_IMAGES.summary())",
                name,
            )
        return False

    def summary(self):
        """One line: how many files were skipped and the first few names ('' when none)."""
        with self._lock:
            if not self.count:
                return ""
            count = len(self.names)
            return f"{counted(count, 'undecodable image')} skipped; first: {', '.join(self.first_names)}"

    def fix(self):
        """What to do about the files skipped: convert or remove them (TIFF can go through
        scripts/prepare_data.py, which reads it)."""
        fix = f"convert or remove them ({image_folder.DECODED_FORMATS})"
        with self._lock:
            if any(name.lower().endswith(image_folder.CONVERTIBLE_EXTENSIONS) for name in self.names):
                fix += "; TIFF files can also be written as TFRecords by scripts/prepare_data.py, which reads them"
        return fix

    def reset(self):
        with self._lock:
            self.count = 0
            self.first_names = []
            self.names = set()


BAD_IMAGES = BadImageLog()


def dataset_info(spec, data_dir=None, manual_dir=None):
    """DatasetInfo (num_classes, class_names, num_examples per split) of a dataset string."""
    return sources.open_source(spec, data_dir, manual_dir).info()


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
            # A copy, not x[:keep]: at sizes where the views are memory-aligned (S a multiple of
            # 4) that slice shares the group's buffer, and rebatch then logs an E line per group.
            return tf.nest.map_structure(lambda x: tf.gather(x, tf.range(keep)), (views, labels_))

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
    check_split(split)
    source = sources.open_source(spec, data_dir, manual_dir)
    _check_dataset_arguments(training, batch_size, augmentation, crops, mean_image, image_dtype)
    if seed is None:
        seed = random.SystemRandom().randrange(2**31)
    options = tf.data.Options()
    options.deterministic = deterministic

    if hasattr(source, "batches"):  # synthetic: finished batches, no records
        dataset = source.batches(split, image_size, batch_size, training, crops, input_context, seed, image_dtype)
        return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)

    records, load = source.records(split, training, input_context, seed, shuffle_buffer)
    pipeline_id = pipeline_share(input_context)[1]
    if training:
        records = records.repeat()
    # A stateless seed per example: [seed, pipeline, index] packed into two int64s, so the
    # augmentation of an example does not depend on thread scheduling.
    records = records.enumerate().map(
        lambda index, record: record + (tf.stack([tf.constant(seed, tf.int64), pipeline_id * 2**40 + index]),))

    # mean=channel (tfrecord): the evaluation views subtract it; the training views fold its
    # difference from the ImageNet mean into their lighting shifts, which finish_views subtracts
    # with the ImageNet mean (also on the accelerator), giving crops - dataset mean + lighting.
    dataset_mean = source.mean_rgb
    if dataset_mean is not None and mean_image is not None:
        raise UsageError(f"{spec!r} asks for the training set's mean (mean=channel): do not pass mean_image as well")
    if dataset_mean is not None and not training:
        mean_image = np.array(dataset_mean, np.float32)
    shift_offset = (np.array(augment.IMAGENET_MEAN_RGB, np.float32) - np.array(dataset_mean, np.float32)
                    if dataset_mean is not None else np.zeros(3, np.float32))

    view, placeholder = _view_function(training, crops, image_size, augmentation, mean_image, shift_offset)
    report = _report_in_graph if data_service else _report_in_python
    # Evaluation keeps the file order (results line up with the files); training need not.
    dataset = skip_bad_examples(records, load, view, placeholder, source.num_classes, report,
                                keep_order=None if training else True)
    dataset = dataset.rebatch(batch_size, drop_remainder=training)
    if training and image_dtype == "float32":
        dataset = dataset.map(lambda views, labels: (augment.finish_views(*views, mean_image), labels),
                              num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.with_options(options)
    if data_service:
        dataset = _distribute(dataset, data_service, training)
    return dataset.prefetch(tf.data.AUTOTUNE)


def check_readable(spec, image_size, data_dir=None, manual_dir=None):
    """A UsageError when no example of the training or the held-out split can be read and
    decoded: training skips bad images and repeats its data, so it would wait forever for a first
    batch. Reads each split up to its first good example (one, when the data are fine)."""
    for split in ("train", "validation"):
        before = BAD_IMAGES.count
        dataset = make_dataset(spec, split, image_size=image_size, batch_size=1, training=False,
                               data_dir=data_dir, manual_dir=manual_dir)
        if next(iter(dataset.take(1)), None) is None:
            first = BAD_IMAGES.first_names[0] if BAD_IMAGES.first_names else "?"
            raise UsageError(f"none of the {BAD_IMAGES.count - before} {split} examples of --dataset={spec} could be read "
                             f"and decoded as an image (the first: {first}): give {image_folder.DECODED_FORMATS} files.")


def _check_dataset_arguments(training, batch_size, augmentation, crops, mean_image, image_dtype):
    if augmentation not in augment.AUGMENTATIONS:
        raise UsageError(f"unknown augmentation {augmentation!r}; expected one of {', '.join(augment.AUGMENTATIONS)}")
    if crops not in (1, 10) or (training and crops != 1):
        raise UsageError(f"crops={crops} is not supported; use 1, or 10 for evaluation")
    if batch_size < 1:
        raise UsageError(f"batch_size must be positive, got {batch_size}")
    if image_dtype not in ("float32", "uint8") or (image_dtype == "uint8" and (not training or mean_image is not None)):
        raise UsageError(f"image_dtype={image_dtype!r} is not supported here: use float32, or uint8 for training "
                         "without mean_image (pass the mean to augment.finish_views instead)")


def _view_function(training, crops, image_size, augmentation, mean_image, shift_offset):
    """(view(image_bytes, example_seed), a placeholder of its output's structure) for one example:
    a training crop and its lighting shift, the ten views, or the centre view (§4.1)."""
    if training:
        # Only the crop is made per image; the float work happens per batch (finish_views).
        def view(image_bytes, example_seed):
            return (augment.train_crop(image_bytes, image_size, example_seed, augmentation),
                    augment.lighting_shift(example_seed, augmentation) + shift_offset)
        return view, (tf.zeros([image_size, image_size, 3], tf.uint8), tf.zeros([3], tf.float32))
    if crops == 10:
        def view(image_bytes, example_seed):
            return augment.ten_crop(augment.decode_for_view(image_bytes, image_size), image_size, mean_image)
        return view, tf.zeros([10, image_size, image_size, 3], tf.float32)

    def view(image_bytes, example_seed):
        return augment.center_view(augment.decode_for_view(image_bytes, image_size), image_size, mean_image)
    return view, tf.zeros([image_size, image_size, 3], tf.float32)


def check_dispatcher(address, timeout=10.0):
    """A UsageError, at once, for a data service address that is malformed or where nothing
    listens: tf.data's client waits for the dispatcher without a word (a training run sat silent
    before its first line, seen), so a typo or a dispatcher not started is caught here."""
    if not re.fullmatch(r"grpc://[^:/]+:\d+", address):
        raise UsageError(f"data service address {address!r} must look like grpc://host:port")
    host, port = address[len("grpc://"):].rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as error:
        raise UsageError(f"--data_service={address}: no tf.data service dispatcher answers at {host}:{port} "
                         f"({error.strerror or error}): start it first (docs/input.md), or leave --data_service out") from None


def _distribute(dataset, address, training):
    """Run the pipeline on the workers of a tf.data service dispatcher at `address`.

    ShardingPolicy.DYNAMIC: the dispatcher hands the source's elements (files, records) out to
    the workers, so in evaluation each example is seen once, and in training two workers do not
    produce the same stream (with ShardingPolicy.OFF every worker would run the whole pipeline
    with the same seed).
    """
    check_dispatcher(address)
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
