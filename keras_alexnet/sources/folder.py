"""`folder:PATH`: PATH/train/<class>/* and PATH/val/<class>/* (or PATH/validation/...), the
ImageNet / ImageFolder layout; JPEG, PNG, GIF, BMP; classes sorted by name."""

import functools
import os

import numpy as np
import tensorflow as tf

from keras_alexnet.errors import UsageError
from keras_alexnet.sources.common import SPLITS, DatasetInfo, pipeline_share

# What tf.io.decode_image reads; scripts/predict.py keeps the same list (a test checks).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp")
LAYOUT = "PATH/train/<class>/*.jpg and PATH/val/<class>/*.jpg"


class Folder:
    KIND, FORM, NEEDS_ARGUMENT = "folder", "folder:PATH", True

    def __init__(self, spec, argument, data_dir=None, manual_dir=None):
        self.spec = spec
        self.root = os.path.expanduser(argument)
        self.class_names = class_names(self.root)
        self.num_classes = len(self.class_names)
        self.mean_rgb = None

    def info(self):
        counts = {}
        for split in SPLITS:
            try:
                counts[split] = len(folder_files(self.root, split)[0])
            except UsageError:
                if split == "train":
                    raise
        return DatasetInfo(self.spec, self.num_classes, list(self.class_names), counts)

    def records(self, split, training, input_context, seed, shuffle_buffer):
        paths, labels = folder_files(self.root, split)
        num_pipelines, pipeline_id = pipeline_share(input_context)
        paths, labels = paths[pipeline_id::num_pipelines], labels[pipeline_id::num_pipelines]
        records = tf.data.Dataset.from_tensor_slices((list(paths), np.array(labels, np.int32), list(paths)))
        if training:
            records = records.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
        return records, lambda path, label: (tf.io.read_file(path), label)


def _split_dir(root, split):
    names = ("train",) if split == "train" else ("val", "validation")
    for name in names:
        path = os.path.join(root, name)
        if os.path.isdir(path):
            return path
    return None


@functools.lru_cache(maxsize=8)
def class_names(root):
    """The class folder names under root's train/ (or val/), sorted; UsageErrors name the layout."""
    if not os.path.isdir(root):
        raise UsageError(f"data directory {root} does not exist; expected {LAYOUT.replace('PATH', root)}")
    source = _split_dir(root, "train") or _split_dir(root, "validation")
    if source is None:
        raise UsageError(f"{root} has no train/ or val/ folder; expected {LAYOUT.replace('PATH', root)}")
    classes = sorted(entry.name for entry in os.scandir(source) if entry.is_dir() and not entry.name.startswith("."))
    if not classes:
        raise UsageError(f"{source} has no class folders; expected {source}/<class>/*.jpg")
    if len(classes) == 1:  # it trains to 100% and says "done": a classifier of nothing
        raise UsageError(f"{source} has one class folder ({classes[0]}); a classifier needs two or more: "
                         f"give each class its own folder, {source}/<class>/*.jpg")
    return tuple(classes)


@functools.lru_cache(maxsize=8)
def folder_files(root, split):
    """(paths, labels) of one split, sorted by class then file name."""
    index = {name: i for i, name in enumerate(class_names(root))}
    split_dir = _split_dir(root, split)
    if split_dir is None:
        raise UsageError(f"{root} has no {'train' if split == 'train' else 'val'}/ folder; expected "
                         f"{LAYOUT.replace('PATH', root)}")
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
