"""`folder:PATH`: an image folder in either layout of keras_alexnet.image_folder (PATH/<class>/*,
a fifth of each class held out by file name; or PATH/train/<class>/* and PATH/val/<class>/*);
JPEG, PNG, GIF, BMP, WebP; classes sorted by name."""

import os

import numpy as np
import tensorflow as tf

from keras_alexnet.image_folder import HELD_OUT_PERCENT, class_names, folder_files, is_flat
from keras_alexnet.sources.common import SPLITS, DatasetInfo, pipeline_share


class Folder:
    KIND, FORM, NEEDS_ARGUMENT = "folder", "folder:PATH", True

    def __init__(self, spec, argument, data_dir=None, manual_dir=None):
        self.spec = spec
        self.root = os.path.expanduser(argument)
        self.class_names = class_names(self.root)
        self.num_classes = len(self.class_names)
        self.mean_rgb = None

    def info(self):
        """Class names and examples per split. A train/ folder without a val/ beside it is refused
        here, before a training run spends an epoch to find it out."""
        counts = {split: len(folder_files(self.root, split)[0]) for split in SPLITS}
        notes = []
        if is_flat(self.root):
            notes.append(f"held out: {HELD_OUT_PERCENT}% of each class folder of {self.root}, chosen by file name "
                         f"(the same files every run); make {self.root}/train/ and {self.root}/val/ to choose them yourself")
        imbalance = _imbalance_note(self.class_names, folder_files(self.root, "train")[1])
        if imbalance:
            notes.append(imbalance)
        return DatasetInfo(self.spec, self.num_classes, list(self.class_names), counts, notes=notes)

    def records(self, split, training, input_context, seed, shuffle_buffer):
        paths, labels = folder_files(self.root, split)
        num_pipelines, pipeline_id = pipeline_share(input_context)
        paths, labels = paths[pipeline_id::num_pipelines], labels[pipeline_id::num_pipelines]
        records = tf.data.Dataset.from_tensor_slices((list(paths), np.array(labels, np.int32), list(paths)))
        if training:
            records = records.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
        return records, lambda path, label: (tf.io.read_file(path), label)


# Classes this many times apart in training images are named in the run's header.
IMBALANCE_RATIO = 3


def _imbalance_note(names, labels):
    """One line naming the largest and the smallest class when they are IMBALANCE_RATIO or more
    apart: a network can then score the largest class's share by answering it always, which is
    what a run's "learned" is measured against (evaluation.chance_level)."""
    counts = np.bincount(np.array(labels, np.int64), minlength=len(names))
    largest, smallest = int(np.argmax(counts)), int(np.argmin(counts))
    if counts[largest] < IMBALANCE_RATIO * counts[smallest]:
        return None
    return (f"note: the classes are imbalanced: {names[largest]} has {counts[largest]} training images, "
            f"{names[smallest]} {counts[smallest]}; always answering {names[largest]} scores its share of the held-out "
            "images, and the run counts as learned only above that")
