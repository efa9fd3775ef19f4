"""Test set-up: quiet TensorFlow, and two logical CPUs so MirroredStrategy runs without GPUs.

The logical devices must be configured before TensorFlow initializes its runtime, so this runs
at import time of the test session, before any test touches a tensor.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)


@pytest.fixture(autouse=True)
def forget_traced_gradients():
    """What train() does around its run (training.forgetting_traced_gradients), around every test:
    tests that drive a Trainer or a GradientTape in a tf.function directly would otherwise keep
    each traced graph, and the variables it captured, for the rest of the session."""
    from keras_alexnet import training

    with training.forgetting_traced_gradients():
        yield


@pytest.fixture
def policy():
    """Set a Keras dtype policy for one test and restore float32 afterwards."""

    def set_policy(name):
        keras.mixed_precision.set_global_policy(name)

    yield set_policy
    keras.mixed_precision.set_global_policy("float32")
