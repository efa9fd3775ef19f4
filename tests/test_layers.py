import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_alexnet import LocalResponseNormalization, TwoColumnConv2D


def lrn_numpy(a, size, k, alpha, beta):
    """The paper's formula (§3.3), written out channel by channel."""
    a = a.astype(np.float64)
    channels = a.shape[-1]
    out = np.empty_like(a)
    for c in range(channels):
        lo, hi = max(0, c - size // 2), min(channels - 1, c + size // 2)
        window = np.sum(a[..., lo : hi + 1] ** 2, axis=-1)
        out[..., c] = a[..., c] / (k + alpha * window) ** beta
    return out


def caffe_lrn_numpy(a, local_size, alpha, beta, k=1.0):
    """Caffe's ACROSS_CHANNELS LRN: scale = k + alpha/n * sum(a^2)."""
    return lrn_numpy(a, local_size, k, alpha / local_size, beta)


@pytest.fixture
def activations():
    # Post-ReLU-like activations with a large range, so the normalization is far from identity.
    rng = np.random.default_rng(0)
    return (np.abs(rng.normal(size=(2, 5, 5, 12))) * 60.0).astype(np.float32)


def test_lrn_matches_the_paper_formula(activations):
    layer = LocalResponseNormalization()
    got = np.asarray(layer(activations))
    want = lrn_numpy(activations, 5, 2.0, 1e-4, 0.75)
    assert np.max(np.abs(got - want) / np.abs(want).clip(1e-6)) <= 1e-5
    # The constants matter: the result is far from the identity for these inputs.
    assert np.max(np.abs(want - activations)) > 1.0


def test_lrn_matches_tf_nn(activations):
    got = np.asarray(LocalResponseNormalization(size=5, k=2.0, alpha=1e-4, beta=0.75)(activations))
    want = tf.nn.local_response_normalization(activations, depth_radius=2, bias=2.0, alpha=1e-4, beta=0.75).numpy()
    assert np.max(np.abs(got - want) / np.abs(want).clip(1e-6)) <= 1e-5


def test_lrn_from_caffe_and_torch_conventions(activations):
    caffe = LocalResponseNormalization.from_caffe(local_size=5, alpha=1e-4, beta=0.75)
    assert caffe.alpha == pytest.approx(2e-5) and caffe.k == 1.0
    want = caffe_lrn_numpy(activations, 5, 1e-4, 0.75)
    np.testing.assert_allclose(np.asarray(caffe(activations)), want, rtol=1e-5)
    torch_style = LocalResponseNormalization.from_torch(size=3, alpha=3e-4, beta=0.5, k=1.5)
    assert (torch_style.size, torch_style.alpha, torch_style.beta, torch_style.k) == (3, pytest.approx(1e-4), 0.5, 1.5)
    # beta != 0.75 takes the general power path.
    np.testing.assert_allclose(np.asarray(torch_style(activations)), lrn_numpy(activations, 3, 1.5, 1e-4, 0.5), rtol=1e-5)


def test_lrn_rejects_even_window():
    with pytest.raises(ValueError, match="odd"):
        LocalResponseNormalization(size=4)


def test_lrn_gradient_matches_finite_differences():
    rng = np.random.default_rng(1)
    x_np = np.abs(rng.normal(size=(1, 2, 2, 7))) * 80.0
    w_np = rng.normal(size=(1, 2, 2, 7))
    x = tf.constant(x_np, dtype=tf.float32)
    layer = LocalResponseNormalization()
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = tf.reduce_sum(layer(x) * w_np.astype(np.float32))
    analytic = tape.gradient(y, x).numpy()

    def f(a):
        return np.sum(lrn_numpy(a, 5, 2.0, 1e-4, 0.75) * w_np)

    numeric = np.zeros_like(x_np)
    eps = 1e-3
    for idx in np.ndindex(x_np.shape):
        plus, minus = x_np.copy(), x_np.copy()
        plus[idx] += eps
        minus[idx] -= eps
        numeric[idx] = (f(plus) - f(minus)) / (2 * eps)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-3, atol=1e-5)
    # And against TensorFlow's own LRN gradient kernel.
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = tf.reduce_sum(tf.nn.local_response_normalization(x, 2, 2.0, 1e-4, 0.75) * w_np.astype(np.float32))
    np.testing.assert_allclose(analytic, tape.gradient(y, x).numpy(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("policy_name", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("jit", [False, True])
def test_lrn_under_mixed_precision(policy, policy_name, jit, activations):
    policy(policy_name)
    layer = LocalResponseNormalization()
    compute = policy_name.split("_")[1]
    x = tf.constant(activations)

    @tf.function(jit_compile=jit)
    def forward_backward(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            loss = tf.reduce_sum(tf.cast(y, tf.float32))
        return y, tape.gradient(loss, x)

    y, grad = forward_backward(x)
    assert y.dtype == tf.as_dtype(compute)
    assert np.all(np.isfinite(grad.numpy()))
    want = lrn_numpy(activations, 5, 2.0, 1e-4, 0.75)
    tolerance = 1e-2 if compute == "bfloat16" else 2e-3
    np.testing.assert_allclose(tf.cast(y, tf.float32).numpy(), want, rtol=tolerance, atol=tolerance)


def test_lrn_config_round_trip():
    layer = LocalResponseNormalization(size=3, k=1.0, alpha=2e-5, beta=0.5, name="lrn")
    config = json.loads(json.dumps(layer.get_config()))
    clone = LocalResponseNormalization.from_config(config)
    assert (clone.size, clone.k, clone.alpha, clone.beta, clone.name) == (3, 1.0, 2e-5, 0.5, "lrn")
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(restored, LocalResponseNormalization) and restored.alpha == 2e-5


def test_two_column_conv_equals_keras_grouped_conv():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 9, 9, 8)).astype(np.float32)
    ours = TwoColumnConv2D(6, 3, padding="same", groups=2)
    keras_grouped = keras.layers.Conv2D(6, 3, padding="same", groups=2)
    ours.build(x.shape)
    keras_grouped.build(x.shape)
    # One kernel in Keras' grouped layout (k, k, in/groups, filters), so weights transfer as they are.
    assert tuple(ours.kernel.shape) == tuple(keras_grouped.kernel.shape) == (3, 3, 4, 6)
    keras_grouped.set_weights(ours.get_weights())
    want = tf.function(keras_grouped, jit_compile=True)(x).numpy()
    np.testing.assert_allclose(np.asarray(ours(x)), want, rtol=1e-5, atol=1e-5)


def test_two_column_conv_columns_are_independent():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(1, 7, 7, 4)).astype(np.float32)
    layer = TwoColumnConv2D(4, 3, groups=2)
    before = np.asarray(layer(x))
    changed = x.copy()
    changed[..., 2:] += 5.0  # only the second column's inputs
    after = np.asarray(layer(changed))
    np.testing.assert_allclose(after[..., :2], before[..., :2], rtol=1e-6)
    assert not np.allclose(after[..., 2:], before[..., 2:])


def test_two_column_conv_rejects_indivisible_channels():
    with pytest.raises(ValueError, match="divisible"):
        TwoColumnConv2D(5, 3, groups=2)
    with pytest.raises(ValueError, match="divisible"):
        TwoColumnConv2D(4, 3, groups=2)(np.zeros((1, 5, 5, 3), np.float32))
