"""What every data source shares: DatasetInfo, the split names and the small parsers."""

import dataclasses
import re

from keras_alexnet.errors import UsageError

SPLITS = ("train", "validation")
# ImageNet (ILSVRC-2012) split sizes, for the standard TFRecord shards and for `synthetic`.
IMAGENET_EXAMPLES = {"train": 1_281_167, "validation": 50_000}


@dataclasses.dataclass
class DatasetInfo:
    """What a training run needs to know about a dataset."""

    spec: str
    num_classes: int
    class_names: list
    num_examples: dict  # split -> number of examples
    mean_rgb: list = None  # the per-channel mean the pipeline subtracts, when not the ImageNet mean
    notes: list = dataclasses.field(default_factory=list)  # lines for the run's header: how the held-out
    # images were chosen, when the source chose them; classes far apart in size


def parse_options(text, spec, allowed):
    """{key: int} of "key=INT&key=INT" (or commas); a UsageError names any other option."""
    options = {}
    for item in filter(None, re.split(r"[&,]", text)):
        key, _, value = item.partition("=")
        if key not in allowed or not re.fullmatch(r"-?\d+", value):
            raise UsageError(f"bad option {item!r} in {spec!r}; allowed: {', '.join(f'{k}=INT' for k in allowed)}")
        options[key] = int(value)
    return options


def check_split(split):
    if split not in SPLITS:
        raise UsageError(f"unknown split {split!r}; expected 'train' or 'validation'")


def pipeline_share(input_context):
    """(number of input pipelines, this pipeline's index) of a tf.distribute.InputContext or None."""
    return (input_context.num_input_pipelines, input_context.input_pipeline_id) if input_context else (1, 0)
