"""The paper's optimizer and learning-rate schedules (§5).

SGD with momentum 0.9 and weight decay 5e-4, lr 0.01 at batch 128, divided by 10 when the
validation error stops improving, three times. The decay is *coupled* (inside the momentum):
v <- 0.9 v - 0.0005 lr w - lr grad. It is added to the loss as an L2 penalty of wd/2 on every
kernel by `keras_alexnet.build(weight_decay=...)`, whose gradient is exactly wd * w; biases are
not decayed. (keras.optimizers.SGD(weight_decay=...) is decoupled and would decay biases too.)
"""

import math

import keras
import tensorflow as tf

SCHEDULES = ("plateau", "step", "cosine")
OPTIMIZERS = ("sgd", "adam")
PAPER_BATCH_SIZE = 128
PAPER_LEARNING_RATE = 0.01


def scaled_learning_rate(global_batch_size, base=PAPER_LEARNING_RATE):
    """Linear scaling rule: the paper's 0.01 at batch 128, in proportion for other batches."""
    return base * global_batch_size / PAPER_BATCH_SIZE


class AlexNetSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up, then `plateau`, `step` or `cosine`.

    plateau: the base rate times `scale`, a variable that `PlateauTracker` divides by 10 when the
        held-out error stops improving (§5; the paper did it three times).
    step: divided by 10 every `decay_steps` steps (Caffe: every 100k iterations of batch 256).
    cosine: half a cosine from the base rate to 0 over the steps after warm-up.
    """

    def __init__(self, base_rate, kind, total_steps, warmup_steps=0, decay_steps=None, scale=None):
        if kind not in SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {SCHEDULES}, got {kind!r}.")
        self.base_rate = float(base_rate)
        self.kind = kind
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.decay_steps = int(decay_steps) if decay_steps else None
        self.scale = scale  # a tf.Variable shared with PlateauTracker, or None

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warmup = tf.cast(self.warmup_steps, tf.float32)
        rate = tf.constant(self.base_rate, tf.float32)
        if self.kind == "plateau" and self.scale is not None:
            rate = rate * tf.cast(self.scale, tf.float32)
        elif self.kind == "step" and self.decay_steps:
            rate = rate * tf.pow(0.1, tf.floor(step / float(self.decay_steps)))
        elif self.kind == "cosine":
            span = max(self.total_steps - self.warmup_steps, 1)
            progress = tf.clip_by_value((step - warmup) / float(span), 0.0, 1.0)
            rate = rate * 0.5 * (1.0 + tf.cos(math.pi * progress))
        if self.warmup_steps:
            rate = rate * tf.minimum(1.0, (step + 1.0) / warmup)
        return rate

    def get_config(self):
        return {
            "base_rate": self.base_rate, "kind": self.kind, "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps, "decay_steps": self.decay_steps,
        }


class PlateauTracker:
    """Divides the learning rate by 10 when the held-out error has not improved for `patience`
    epochs, at most `max_drops` times (§5). Its state lives in variables, so it is checkpointed."""

    def __init__(self, patience=2, max_drops=3, min_delta=1e-4):
        self.patience = patience
        self.max_drops = max_drops
        self.min_delta = min_delta
        self.scale = tf.Variable(1.0, trainable=False, name="lr_scale")
        self.best_error = tf.Variable(float("inf"), trainable=False, name="plateau_best_error")
        self.wait = tf.Variable(0, trainable=False, dtype=tf.int64, name="plateau_wait")
        self.drops = tf.Variable(0, trainable=False, dtype=tf.int64, name="plateau_drops")

    def update(self, error, chance_error=None):
        """Record one epoch's held-out error; returns True if the rate was divided by 10.

        While the best error so far is still above `chance_error` (the error of a result within
        noise of guessing, `evaluation.chance_ceiling`), no epoch counts towards a plateau: the
        run has not started learning, and a smaller rate would only keep it where it is.
        """
        if error < float(self.best_error.numpy()) - self.min_delta:
            self.best_error.assign(error)
            self.wait.assign(0)
            return False
        if chance_error is not None and float(self.best_error.numpy()) > chance_error:
            return False
        self.wait.assign_add(1)
        if int(self.wait.numpy()) >= self.patience and int(self.drops.numpy()) < self.max_drops:
            self.drops.assign_add(1)
            self.scale.assign(0.1 ** int(self.drops.numpy()))
            self.wait.assign(0)
            return True
        return False

    def checkpoint_items(self):
        return {"lr_scale": self.scale, "plateau_best_error": self.best_error,
                "plateau_wait": self.wait, "plateau_drops": self.drops}


def make_optimizer(schedule, momentum=0.9, precision="float32", name="sgd"):
    """The paper's SGD with momentum (§5), or Adam; wrapped for dynamic loss scaling under mixed_float16.

    Adam (`momentum` is its beta_1) is there for short runs from scratch: its per-weight step
    size does not depend on the gradient's scale, which at init differs by orders of magnitude
    between conv1 (inputs in 0..255) and the dense layers.
    """
    if name == "sgd":
        optimizer = keras.optimizers.SGD(learning_rate=schedule, momentum=momentum)
    elif name == "adam":
        optimizer = keras.optimizers.Adam(learning_rate=schedule, beta_1=momentum)
    else:
        raise ValueError(f"unknown optimizer {name!r}; expected one of {OPTIMIZERS}")
    if precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer
