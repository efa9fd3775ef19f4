"""`shapes`: the built-in demo dataset (keras_alexnet/shapes.py), JPEG-encoded in memory."""

import numpy as np
import tensorflow as tf

from keras_alexnet import shapes
from keras_alexnet.sources.common import DatasetInfo, pipeline_share


class Shapes:
    KIND, FORM, NEEDS_ARGUMENT = "shapes", "shapes", False

    def __init__(self, spec, argument, data_dir=None, manual_dir=None):
        self.spec = spec
        self.config = shapes.parse_spec(spec)
        self.num_classes = len(shapes.CLASS_NAMES)
        self.mean_rgb = None

    def info(self):
        return DatasetInfo(self.spec, self.num_classes, list(shapes.CLASS_NAMES), self.config.num_examples())

    def records(self, split, training, input_context, seed, shuffle_buffer):
        encoded, labels = shapes.encoded_split(self.config, split)
        names = np.array([f"shapes/{split}/{i}" for i in range(len(labels))])
        records = tf.data.Dataset.from_tensor_slices((encoded.astype(bytes), labels, names))
        records = records.shard(*pipeline_share(input_context))
        if training:
            records = records.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
        return records, lambda image, label: (image, label)
