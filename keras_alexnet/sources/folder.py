"""`folder:PATH`: an image folder in either layout of keras_alexnet.image_folder (PATH/<class>/*,
about a fifth of each class held out by file name; or PATH/train/<class>/* and PATH/val/<class>/*);
JPEG, PNG, GIF, BMP, WebP; classes sorted by name."""

import os

import numpy as np
import tensorflow as tf

from keras_alexnet.errors import counted, few
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
        split_note = None
        if is_flat(self.root):
            split_note = (f"held out: about {HELD_OUT_PERCENT}% of each class folder of {self.root} (at least one "
                          "file of each class of two or more), chosen by file name (the same files every run); "
                          f"make {self.root}/train/ and {self.root}/val/ to choose them yourself")
        notes = [split_note,
                 _unmeasured_note(self.root, self.class_names, folder_files(self.root, "validation")[1]),
                 _imbalance_note(self.class_names, folder_files(self.root, "train")[1])]
        return DatasetInfo(self.spec, self.num_classes, list(self.class_names), counts,
                           notes=[note for note in notes if note])

    def records(self, split, training, input_context, seed, shuffle_buffer):
        paths, labels = folder_files(self.root, split)
        num_pipelines, pipeline_id = pipeline_share(input_context)
        paths, labels = paths[pipeline_id::num_pipelines], labels[pipeline_id::num_pipelines]
        records = tf.data.Dataset.from_tensor_slices((list(paths), np.array(labels, np.int32), list(paths)))
        if training:
            records = records.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
        return records, lambda path, label: (tf.io.read_file(path), label)


def _unmeasured_note(root, names, held_out_labels):
    """One line naming the classes with no held-out image (a class of one file in a flat folder,
    or a class without a folder in val/): the held-out figures say nothing about them."""
    missing = [names[label] for label in sorted(set(range(len(names))) - set(held_out_labels))]
    if not missing:
        return None
    fix = ("give each class folder two or more files" if is_flat(root)
           else f"add {'its folder' if len(missing) == 1 else 'their folders'} to {root}/val/")
    return (f"note: no held-out image of {counted(len(missing), 'class', 'classes')} "
            f"({few(missing, 3)}): the held-out figures do not measure {'it' if len(missing) == 1 else 'them'}; {fix}")


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
