"""Flags that several scripts share, defined once: the tf.distribute strategy and the data to read.

Like _cli.py it imports only absl: the scripts define their flags (and answer --help and bad
flags) before TensorFlow loads. A script calls these at import time, beside its own
flags.DEFINE_* lines.
"""

from absl import flags

# The names keras_alexnet.distribute.STRATEGIES accepts (tests/test_architecture.py checks that they
# agree); repeated here because importing keras_alexnet loads TensorFlow.
STRATEGIES = ("auto", "default", "one_device", "mirrored", "multi_worker", "tpu")
DATASET_FORMS = "shapes | synthetic | folder:PATH | tfrecord:GLOB | tfds:NAME"


def define_strategy_flags():
    """--strategy, --tpu and --num_gpus (keras_alexnet.distribute.get_strategy)."""
    flags.DEFINE_enum("strategy", "auto", list(STRATEGIES),
                      "tf.distribute strategy. auto: TPU if --tpu is set, mirrored for 2+ GPUs, one_device for one GPU, "
                      "default otherwise. multi_worker reads TF_CONFIG.")
    flags.DEFINE_string("tpu", None, "TPU for --strategy=tpu (or auto): 'local' on a TPU VM, else a TPU name or grpc:// address.")
    flags.DEFINE_integer("num_gpus", None, "Use only the first N GPUs (default: all).")


def define_run_data_flags(split, help_split):
    """--dataset, --split, --data_dir and --manual_dir for a script that reads a training run's data
    by default (evaluate.py, nearest_neighbors.py)."""
    flags.DEFINE_string("dataset", None, f"{DATASET_FORMS} (default: the run's).")
    flags.DEFINE_enum("split", split, ["train", "validation"], help_split)
    flags.DEFINE_string("data_dir", None, "TFDS data_dir (default: the run's).")
    flags.DEFINE_string("manual_dir", None, "TFDS manual_dir (default: the run's).")
