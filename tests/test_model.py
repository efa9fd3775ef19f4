import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_alexnet

import graphs  # tests/graphs.py

SMALL = (67, 67, 3)


def output_shapes(model):
    return {layer.name: tuple(layer.output.shape[1:]) for layer in model.layers}


def test_paper_variant_shapes_and_parameters():
    model = keras_alexnet.build()
    shapes = output_shapes(model)
    assert shapes["conv1"] == (55, 55, 96)
    assert shapes["lrn1"] == (55, 55, 96)
    assert shapes["pool1"] == (27, 27, 96)
    assert shapes["conv2"] == (27, 27, 256)
    assert shapes["pool2"] == (13, 13, 256)
    assert shapes["conv3"] == (13, 13, 384)
    assert shapes["conv4"] == (13, 13, 384)
    assert shapes["conv5"] == (13, 13, 256)
    assert shapes["pool5"] == (6, 6, 256)
    assert shapes["fc6"] == shapes["fc7"] == (4096,)
    assert shapes["fc8"] == (1000,)
    assert model.count_params() == 60_965_224
    expected = {"conv1": 34_944, "conv2": 307_456, "conv3": 885_120, "conv4": 663_936, "conv5": 442_624,
                "fc6": 37_752_832, "fc7": 16_781_312, "fc8": 4_097_000}
    assert {name: model.get_layer(name).count_params() for name in expected} == expected


def test_two_column_kernels_have_grouped_layout():
    model = keras_alexnet.build(input_shape=SMALL, num_classes=10)
    assert tuple(model.get_layer("conv2").kernel.shape) == (5, 5, 48, 256)
    assert tuple(model.get_layer("conv3").kernel.shape) == (3, 3, 256, 384)
    assert tuple(model.get_layer("conv4").kernel.shape) == (3, 3, 192, 384)
    assert tuple(model.get_layer("conv5").kernel.shape) == (3, 3, 192, 256)


def test_one_column_version_of_paper_net():
    assert keras_alexnet.build(groups=1).count_params() == 62_378_344


def test_torchvision_layout():
    model = keras_alexnet.build(variant="one_column", input_shape=(224, 224, 3))
    assert model.count_params() == 61_100_840
    shapes = output_shapes(model)
    assert shapes["conv1"] == (55, 55, 64) and shapes["pool5"] == (6, 6, 256)
    assert not any(isinstance(layer, keras_alexnet.LocalResponseNormalization) for layer in model.layers)
    names = [layer.name for layer in model.layers]
    # torchvision's classifier order: Dropout, Linear, ReLU, Dropout, Linear, ReLU, Linear.
    assert names[names.index("flatten"):] == ["flatten", "drop5", "fc6", "drop6", "fc7", "fc8"]


@pytest.mark.parametrize("variant,smallest", [("paper", 67), ("one_column", 63)])
def test_smallest_input(variant, smallest):
    assert keras_alexnet.min_input_size(variant) == smallest
    model = keras_alexnet.build(num_classes=3, input_shape=(smallest, smallest, 3), variant=variant)
    assert tuple(model.get_layer("pool5").output.shape[1:3]) == (1, 1)
    assert model(np.zeros((2, smallest, smallest, 3), np.float32)).shape == (2, 3)
    with pytest.raises(ValueError, match=f"at least {smallest}x{smallest}"):
        keras_alexnet.build(input_shape=(smallest - 1, smallest - 1, 3), variant=variant)


def test_fc6_input_follows_input_size():
    model = keras_alexnet.build(num_classes=10, input_shape=(99, 99, 3))
    pool5 = model.get_layer("pool5").output.shape
    assert model.get_layer("fc6").kernel.shape[0] == pool5[1] * pool5[2] * pool5[3]


def test_bad_arguments_are_clear():
    with pytest.raises(ValueError, match="variant"):
        keras_alexnet.build(variant="vgg")
    with pytest.raises(ValueError, match="init"):
        keras_alexnet.build(init="he")
    with pytest.raises(ValueError, match="input_shape"):
        keras_alexnet.build(input_shape=(100, 90, 3))
    with pytest.raises(ValueError, match=r"S a whole number of pixels, got \(None, None, 3\)"):  # was a TypeError
        keras_alexnet.build(input_shape=(None, None, 3))
    assert keras_alexnet.build(input_shape=tuple(np.array([67, 67, 3])), include_top=False).input_shape == (None, 67, 67, 3)
    with pytest.raises(ValueError, match=r"^num_classes must be a whole number of at least 1, got 2\.5\.$"):
        keras_alexnet.build(num_classes=2.5)
    with pytest.raises(ValueError, match=r"^weight_decay must be 0 or more \(the paper's is 5e-4\), got -1\.$"):
        keras_alexnet.build(weight_decay=-1)  # was Keras' "l2=-0.5", half the number given
    with pytest.raises(ValueError, match=r"^dropout must be in \[0, 1\) \(the paper's is 0\.5\), got 1\.0\.$"):
        keras_alexnet.build(dropout=1.0)  # was accepted: fc6 and fc7 zeroed in every training step
    assert keras_alexnet.build(num_classes=np.int64(3), input_shape=(67, 67, 3)).output_shape == (None, 3)


def test_include_top_false_and_fc7_features():
    features = keras_alexnet.build(include_top=False)
    assert tuple(features.output.shape[1:]) == (6, 6, 256)
    model = keras_alexnet.build(num_classes=10, input_shape=SMALL, seed=0)
    fc7 = keras_alexnet.feature_extractor(model)
    x = np.random.default_rng(0).normal(size=(3, *SMALL)).astype(np.float32)
    activations = fc7(x).numpy()
    assert activations.shape == (3, 4096) and activations.min() >= 0.0
    # Shares weights with the model: the same activations as the model's own fc7 layer.
    probe = keras.Model(model.input, model.get_layer("fc7").output)
    np.testing.assert_allclose(activations, probe(x).numpy())


@pytest.mark.parametrize("init", ["paper", "caffe"])
def test_initialization_statistics(init):
    model = keras_alexnet.build(num_classes=1000, init=init, seed=1)
    stds = {"paper": dict.fromkeys(["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"], 0.01),
            "caffe": {**dict.fromkeys(["conv1", "conv2", "conv3", "conv4", "conv5", "fc8"], 0.01),
                      "fc6": 0.005, "fc7": 0.005}}[init]
    ones = {"paper": 1.0, "caffe": 0.1}[init]
    biases = {"conv1": 0.0, "conv2": ones, "conv3": 0.0, "conv4": ones, "conv5": ones,
              "fc6": ones, "fc7": ones, "fc8": 0.0}
    for name, std in stds.items():
        kernel, bias = (w.numpy() for w in model.get_layer(name).weights)
        assert abs(kernel.mean()) < 4 * std / np.sqrt(kernel.size) + 1e-6, name
        assert kernel.std() == pytest.approx(std, rel=0.05), name
        np.testing.assert_array_equal(bias, np.full_like(bias, biases[name]))


@pytest.mark.parametrize("size,pool5", [(67, 1), (99, 2), (227, 6)])
def test_fc6_init_keeps_its_227_output_scale_at_other_sizes(size, pool5):
    # fc6's std is scaled by sqrt(9216 / inputs), so std * sqrt(inputs) is Caffe's 0.005 * 96 at every size.
    fc6 = keras_alexnet.build(num_classes=10, input_shape=(size, size, 3), seed=2).get_layer("fc6").kernel.numpy()
    assert fc6.shape[0] == pool5 * pool5 * 256
    assert fc6.std() * np.sqrt(fc6.shape[0]) == pytest.approx(0.005 * 96, rel=0.02)


def test_seed_makes_weights_reproducible():
    a = keras_alexnet.build(num_classes=5, input_shape=SMALL, seed=7).get_weights()
    b = keras_alexnet.build(num_classes=5, input_shape=SMALL, seed=7).get_weights()
    c = keras_alexnet.build(num_classes=5, input_shape=SMALL, seed=8).get_weights()
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])


def test_logits_by_default_and_softmax_option():
    x = np.random.default_rng(0).normal(size=(4, *SMALL)).astype(np.float32) * 50
    logits = keras_alexnet.build(num_classes=6, input_shape=SMALL, seed=3)(x).numpy()
    probabilities = keras_alexnet.build(num_classes=6, input_shape=SMALL, seed=3, classifier_activation="softmax")(x).numpy()
    np.testing.assert_allclose(probabilities, tf.nn.softmax(logits).numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)


def test_weight_decay_is_coupled_l2_on_kernels_only():
    model = keras_alexnet.build(num_classes=4, input_shape=SMALL, weight_decay=5e-4, seed=0)
    kernels = [layer.kernel for layer in model.layers if hasattr(layer, "kernel")]
    assert len(model.losses) == len(kernels) == 8
    with tf.GradientTape() as tape:
        penalty = tf.add_n(model.losses)
    grads = tape.gradient(penalty, model.trainable_variables)
    for variable, grad in zip(model.trainable_variables, grads):
        if variable.path.endswith("kernel"):
            np.testing.assert_allclose(grad.numpy(), 5e-4 * variable.numpy(), rtol=1e-5, atol=1e-12)
        else:
            assert grad is None


@pytest.mark.parametrize("policy_name", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("jit", [False, True])
def test_mixed_precision_forward_and_backward(policy, policy_name, jit):
    policy(policy_name)
    model = keras_alexnet.build(num_classes=5, input_shape=SMALL, seed=0)
    assert model.get_layer("conv1").compute_dtype == policy_name.split("_")[1]
    assert model.get_layer("fc8").compute_dtype == "float32"
    x = tf.random.normal((2, *SMALL)) * 50

    @tf.function(jit_compile=jit)
    def step(x):
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(tf.constant([0, 1]), logits))
        return logits, tape.gradient(loss, model.trainable_variables)

    logits, grads = step(x)
    assert logits.dtype == tf.float32
    assert all(g is not None and np.all(np.isfinite(g.numpy())) for g in grads)
    assert all(g.dtype == tf.float32 for g in grads)


def test_xla_forward_equals_plain_forward():
    model = keras_alexnet.build(num_classes=7, input_shape=SMALL, seed=0)
    x = tf.random.normal((3, *SMALL), seed=1) * 50
    plain = model(x, training=False).numpy()
    compiled = tf.function(lambda t: model(t, training=False), jit_compile=True)(x).numpy()
    np.testing.assert_allclose(compiled, plain, rtol=1e-4, atol=1e-5)


def xla_must_compile_functions(model, input_shape):
    """Names of nodes and functions in the traced forward that carry _XlaMustCompile=True."""
    traced = tf.function(lambda t: model(t, training=False))
    return graphs.xla_must_compile(traced.get_concrete_function(tf.TensorSpec((None, *input_shape), tf.float32)).graph.as_graph_def())


def test_traced_forward_has_no_xla_must_compile_function():
    model = keras_alexnet.build(num_classes=4, input_shape=SMALL)
    assert xla_must_compile_functions(model, SMALL) == []
    # The detector works: Keras' own grouped convolution is caught.
    inputs = keras.Input(SMALL)
    grouped = keras.Model(inputs, keras.layers.Conv2D(3, 3, groups=3)(inputs))
    assert xla_must_compile_functions(grouped, SMALL) != []


def test_compile_and_fit_in_a_notebook():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, *SMALL)).astype(np.float32) * 50
    y = rng.integers(0, 3, size=16)
    model = keras_alexnet.build(num_classes=3, input_shape=SMALL, seed=0)
    model.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    before = [w.copy() for w in model.get_weights()]
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2 and np.isfinite(history.history["loss"]).all()
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_keras_file_round_trip_in_fresh_process(tmp_path):
    model = keras_alexnet.build(num_classes=5, input_shape=SMALL, seed=0)
    x = np.random.default_rng(0).normal(size=(2, *SMALL)).astype(np.float32) * 50
    path = tmp_path / "alexnet.keras"
    model.save(path)
    np.save(tmp_path / "x.npy", x)
    script = textwrap.dedent(f"""
        import numpy as np, keras
        import keras_alexnet  # registers the custom layers
        model = keras.saving.load_model({str(path)!r}, safe_mode=True)
        np.save({str(tmp_path / 'y.npy')!r}, model(np.load({str(tmp_path / 'x.npy')!r}), training=False).numpy())
    """)
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True)
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), model(x, training=False).numpy(), rtol=1e-6)


def test_config_round_trip():
    model = keras_alexnet.build(num_classes=5, input_shape=SMALL, seed=0)
    clone = keras.Model.from_config(model.get_config())
    assert [layer.name for layer in clone.layers] == [layer.name for layer in model.layers]
    clone.set_weights(model.get_weights())
    x = np.ones((1, *SMALL), np.float32)
    np.testing.assert_allclose(clone(x).numpy(), model(x).numpy(), rtol=1e-6)
