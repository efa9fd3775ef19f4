"""`synthetic` / `synthetic:num_classes=N`: random batches already at the model's input size,
for measuring throughput without any input work. It makes whole batches (`batches`), not records."""

import numpy as np
import tensorflow as tf

from keras_alexnet.sources.common import IMAGENET_EXAMPLES, DatasetInfo, parse_options, pipeline_share


class Synthetic:
    KIND, FORM, NEEDS_ARGUMENT = "synthetic", "synthetic", False

    def __init__(self, spec, argument, data_dir=None, manual_dir=None):
        self.spec = spec
        self.num_classes = parse_options(argument, spec, ("num_classes",)).get("num_classes", 1000)
        self.mean_rgb = None

    def info(self):
        return DatasetInfo(self.spec, self.num_classes, [str(i) for i in range(self.num_classes)], dict(IMAGENET_EXAMPLES))

    def batches(self, split, image_size, batch_size, training, crops, input_context, seed, image_dtype):
        """The finished batches of data.make_dataset: one random batch repeated (forever when
        training; as many examples as the split has otherwise)."""
        shape = [batch_size] + ([10] if crops == 10 else []) + [image_size, image_size, 3]
        rng = np.random.default_rng(seed)
        if image_dtype == "uint8":  # training only (make_dataset checks): crops and zero shifts
            views = (rng.integers(0, 256, shape).astype(np.uint8), np.zeros([batch_size, 3], np.float32))
            labels = rng.integers(0, self.num_classes, batch_size).astype(np.int32)
            return tf.data.Dataset.from_tensors((views, labels)).repeat()
        images = rng.normal(0.0, 60.0, shape).astype(np.float32)
        labels = rng.integers(0, self.num_classes, batch_size).astype(np.int32)
        dataset = tf.data.Dataset.from_tensors((images, labels))
        if training:
            return dataset.repeat()
        num_pipelines, pipeline_id = pipeline_share(input_context)
        share = len(range(pipeline_id, IMAGENET_EXAMPLES[split], num_pipelines))
        full, rest = divmod(share, batch_size)
        dataset = dataset.repeat(full)
        if rest:
            dataset = dataset.concatenate(tf.data.Dataset.from_tensors((images[:rest], labels[:rest])))
        return dataset
