"""The layout of a training run's `model_dir`, and restoring a model from it.

    model_dir/
      config.json        the resolved training configuration (flags after defaults), including
                         the model's variant, groups, image_size, num_classes and class_names
      checkpoints/       tf.train.CheckpointManager files: ckpt-<step>.index/.data-*, "checkpoint"
      history.jsonl      one JSON object per epoch (see keras_alexnet.training)
      logs/              TensorBoard event files

A checkpoint holds `tf.train.Checkpoint(model=..., optimizer=..., step=..., epoch=..., ...)`;
restoring only the model reads just its variables (`expect_partial`).

Every file goes through `tf.io.gfile`, so model_dir may be a local folder or any filesystem
TensorFlow reads and writes, e.g. `gs://bucket/run` (what TPU VMs and multi-worker jobs share).
"""

import json
import os

import tensorflow as tf

from keras_alexnet.model import build

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"
HISTORY_FILE = "history.jsonl"
LOG_DIR = "logs"

# The keys of config.json that decide the model's shape.
MODEL_KEYS = ("variant", "groups", "image_size", "num_classes")


def checkpoint_dir(model_dir):
    return os.path.join(model_dir, CHECKPOINT_DIR)


def write_config(model_dir, config):
    """Write `config` (a JSON-serializable dict) to model_dir/config.json, atomically."""
    tf.io.gfile.makedirs(model_dir)
    path = os.path.join(model_dir, CONFIG_FILE)
    tmp = path + ".tmp"
    with tf.io.gfile.GFile(tmp, "w") as f:
        f.write(json.dumps(config, indent=2, sort_keys=True) + "\n")
    tf.io.gfile.rename(tmp, path, overwrite=True)


def read_config(model_dir):
    """The config.json of a training run; a one-line error if there is none."""
    path = os.path.join(model_dir, CONFIG_FILE)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"{path} not found: --model_dir must be a directory written by scripts/train.py.")
    with tf.io.gfile.GFile(path) as f:
        return json.loads(f.read())


def build_from_config(config, **kwargs):
    """The model that a training run with this config trained (fresh weights)."""
    size = int(config["image_size"])
    return build(
        num_classes=int(config["num_classes"]),
        input_shape=(size, size, 3),
        variant=config.get("variant", "paper"),
        groups=int(config.get("groups", 2)),
        **kwargs,
    )


def class_names(config):
    """The run's class names; "0", "1", ... for a config written without them."""
    return config.get("class_names") or [str(i) for i in range(int(config["num_classes"]))]


def latest_checkpoint(model_dir):
    """Path prefix of the newest checkpoint in model_dir, or None."""
    return tf.train.latest_checkpoint(checkpoint_dir(model_dir))


def restore_model(model_dir, checkpoint=None):
    """Rebuild the model of a training run and load its newest (or the given) checkpoint.

    Returns (model, config). Raises FileNotFoundError with a one-line message when model_dir has
    no config or no checkpoint.
    """
    config = read_config(model_dir)
    path = checkpoint or latest_checkpoint(model_dir)
    if path is None:
        raise FileNotFoundError(f"no checkpoint in {checkpoint_dir(model_dir)}: train first, or pass another --model_dir.")
    model = build_from_config(config)
    status = tf.train.Checkpoint(model=model).restore(path).expect_partial()
    status.assert_existing_objects_matched()
    return model, config
