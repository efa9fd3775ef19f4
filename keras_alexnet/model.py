"""AlexNet as a Keras functional model (Krizhevsky, Sutskever, Hinton, NIPS 2012, §3, Fig. 2)."""

import math
import numbers

import keras

from keras_alexnet.layers import CONVENTIONS, InputAdapter, LocalResponseNormalization, TwoColumnConv2D

VARIANTS = ("paper", "one_column")
INITS = ("caffe", "paper")

# Per-layer (kernel std, bias) of each initialization scheme.
# paper (§5): weights N(0, 0.01); biases 1 in conv2, conv4, conv5, fc6, fc7, else 0.
# caffe (bvlc_alexnet train_val.prototxt): the same but bias 0.1 instead of 1 and std 0.005 in
# fc6/fc7. The paper's bias 1 can leave the loss flat at ln(classes) for many epochs (README,
# "Why init="caffe" is the default"); Caffe's learns at once, so it is the default.
_INIT_TABLE = {
    "paper": {
        "conv1": (0.01, 0.0), "conv2": (0.01, 1.0), "conv3": (0.01, 0.0), "conv4": (0.01, 1.0),
        "conv5": (0.01, 1.0), "fc6": (0.01, 1.0), "fc7": (0.01, 1.0), "fc8": (0.01, 0.0),
    },
    "caffe": {
        "conv1": (0.01, 0.0), "conv2": (0.01, 0.1), "conv3": (0.01, 0.0), "conv4": (0.01, 0.1),
        "conv5": (0.01, 0.1), "fc6": (0.005, 0.1), "fc7": (0.005, 0.1), "fc8": (0.01, 0.0),
    },
}

# Both schemes were set for the paper's 227 input, where fc6 sees 6x6x256 = 9,216 numbers. At
# other sizes fc6's std is scaled by sqrt(9216 / its inputs), so that its outputs start at the
# scale they have at 227: at 67 px (pool5 1x1, 256 inputs) Caffe's 0.005 alone leaves fc6's output
# 6x smaller and the run on a long flat start (docs/recipes.md, "The initialization at small inputs").
FC6_REFERENCE_INPUTS = 6 * 6 * 256

# (filters, kernel, stride, padding) of conv1..conv5 and whether a pool follows.
_PAPER_CONVS = [(96, 11, 4, 0), (256, 5, 1, 2), (384, 3, 1, 1), (384, 3, 1, 1), (256, 3, 1, 1)]
_ONE_COLUMN_CONVS = [(64, 11, 4, 2), (192, 5, 1, 2), (384, 3, 1, 1), (256, 3, 1, 1), (256, 3, 1, 1)]
_POOL_AFTER = {1, 2, 5}
# The paper's two-column layers (§3.2, Fig. 2): conv3 and the dense layers see both columns.
_TWO_COLUMN_LAYERS = {2, 4, 5}


def min_input_size(variant="paper"):
    """Smallest square input whose pool5 is at least 1x1 (67 for "paper", 63 for "one_column")."""
    size = 1
    while pool5_size(size, variant) < 1:
        size += 1
    return size


def pool5_size(size, variant):
    convs = _PAPER_CONVS if variant == "paper" else _ONE_COLUMN_CONVS
    for index, (_, kernel, stride, pad) in enumerate(convs, start=1):
        size = (size + 2 * pad - kernel) // stride + 1
        if index in _POOL_AFTER:
            size = (size - 3) // 2 + 1
        if size < 1:
            return 0
    return size


def parameter_count(size, variant="paper", num_classes=1000, groups=2):
    """The number of weights `build` makes at input size S, without building it: fc6's grow with
    pool5's area (60,965,224 at 227; 4x that near 450 px, 35x near 2000)."""
    convs = _PAPER_CONVS if variant == "paper" else _ONE_COLUMN_CONVS
    count, channels = 0, 3
    for index, (filters, kernel, _, _) in enumerate(convs, start=1):
        columns = groups if variant == "paper" and index in _TWO_COLUMN_LAYERS else 1
        count += kernel * kernel * (channels // columns) * filters + filters
        channels = filters
    widths = [pool5_size(size, variant) ** 2 * channels, 4096, 4096, num_classes]
    return count + sum(a * b + b for a, b in zip(widths, widths[1:]))


def build(
    num_classes=1000,
    input_shape=(227, 227, 3),
    variant="paper",
    groups=2,
    init="caffe",
    include_top=True,
    classifier_activation=None,
    dropout=0.5,
    weight_decay=0.0,
    seed=None,
    name=None,
    convention="paper",
):
    """Build AlexNet as a Keras functional model.

    Example:
        >>> import keras_alexnet
        >>> model = keras_alexnet.build(num_classes=10, input_shape=(227, 227, 3))
        >>> logits = model(images)        # images: float32 [N, 227, 227, 3], RGB, mean subtracted

    Args:
        num_classes: size of the last layer (fc8).
        input_shape: (S, S, 3); any square size of at least `min_input_size(variant)` (67 for the
            paper variant). The paper's net takes 227 (224 in its text; only 227 gives conv1 55x55
            without padding). fc6's input size follows the input size.
        variant: "paper": the network of §3 and Fig. 2 (96/256/384/384/256 filters, LRN after
            conv1 and conv2, two columns in conv2/conv4/conv5; 60,965,224 parameters).
            "one_column": torchvision's layout (64/192/384/256/256 filters, no LRN, conv1 padding
            2, dropout before fc6 and fc7, 224 input; 61,100,840 parameters), for importing its
            weights and comparing like with like.
        groups: columns of conv2, conv4, conv5 in the paper variant: 2 as in the paper, 1 for a
            one-column version of the same net (62,378,344 parameters).
        init: "caffe" (default: N(0, 0.01), std 0.005 in fc6/fc7, biases 0.1 where the paper has 1;
            it learns from the first epoch) or "paper" (§5: N(0, 0.01), biases 1 in conv2, conv4,
            conv5, fc6, fc7; known to stall at chance for many epochs on small problems). Both are
            defined at 227; at other sizes fc6's std is scaled by sqrt(9216 / fc6's inputs).
        include_top: False returns the pool5 feature map [N, 6, 6, C] at 227.
        classifier_activation: None for logits (the default; use `from_logits=True`) or "softmax".
            fc8 always computes in float32, whatever the mixed-precision policy.
        dropout: dropout rate of the two dropout layers (§4.2: 0.5).
        weight_decay: coupled weight decay of §5 (v <- 0.9 v - wd*lr*w - lr*grad). Adds an L2
            penalty wd/2 * ||w||^2 on every kernel (not on biases) to `model.losses`, whose
            gradient is exactly wd*w. The paper uses 5e-4; 0 adds none.
        seed: seed for the initializers and dropout; None for a random one.
        name: model name; defaults to "alexnet" or "alexnet_one_column".
        convention: whose layer constants and input normalization the net uses, while its input
            stays the contract (RGB, 0..255, minus the ImageNet mean): "paper" (LRN k=2, alpha 1e-4),
            "caffe" (Caffe's LRN k=1, alpha 1e-4/5; an InputAdapter layer swaps in Caffe's mean) or
            "torchvision" (an InputAdapter layer applies torchvision's mean/std).

    This builds; it reads no file. `keras_alexnet.build(..., weights=FILE)` is this plus
    `keras_alexnet.weights.load_weights` (the file's convention by default).
    """
    input_shape = tuple(input_shape)
    _check_build_arguments(variant, init, groups, input_shape, classifier_activation, convention, num_classes,
                           weight_decay, dropout)
    num_classes = int(num_classes)  # Keras' Dense takes no numpy integer (a label count from np.unique)
    seeds = keras.random.SeedGenerator(seed) if seed is not None else None

    def next_seed():
        return None if seeds is None else int(keras.ops.convert_to_numpy(seeds.next()[0]))

    def initializers(layer_name, fan_in=None):
        std, bias = _INIT_TABLE[init][layer_name]
        if fan_in:  # fc6: keep the output scale the table gives at 227 (FC6_REFERENCE_INPUTS)
            std *= (FC6_REFERENCE_INPUTS / fan_in) ** 0.5
        return {
            "kernel_initializer": keras.initializers.RandomNormal(stddev=std, seed=next_seed()),
            "bias_initializer": keras.initializers.Constant(bias),
            "kernel_regularizer": keras.regularizers.L2(weight_decay / 2) if weight_decay else None,
        }

    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs if convention == "paper" else InputAdapter(convention, name="input_adapter")(inputs)
    x = _convolutions(x, variant, groups, convention, initializers)
    if not include_top:
        return keras.Model(inputs, x, name=name or f"alexnet_{variant}_features")
    outputs = _classifier(x, variant, num_classes, dropout, classifier_activation, initializers, next_seed)
    return keras.Model(inputs, outputs, name=name or ("alexnet" if variant == "paper" else "alexnet_one_column"))


def _check_build_arguments(variant, init, groups, input_shape, classifier_activation, convention, num_classes,
                           weight_decay, dropout):
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}.")
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}.")
    if groups not in (1, 2):
        raise ValueError(f"groups must be 1 or 2, got {groups!r}.")
    if len(input_shape) != 3 or input_shape[0] != input_shape[1] or input_shape[2] != 3:
        raise ValueError(f"input_shape must be (S, S, 3), got {input_shape}.")
    if not isinstance(input_shape[0], numbers.Integral):  # (None, None, 3) failed deep inside with a TypeError
        raise ValueError(f"input_shape must be (S, S, 3) with S a whole number of pixels, got {input_shape}: "
                         "the sizes of fc6 and of every feature map follow from S.")
    smallest = min_input_size(variant)
    if input_shape[0] < smallest:
        raise ValueError(f"input_shape {input_shape} is too small for variant {variant!r}: use at least {smallest}x{smallest}.")
    if classifier_activation not in (None, "softmax"):
        raise ValueError(f"classifier_activation must be None or 'softmax', got {classifier_activation!r}.")
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be 'paper', 'caffe' or 'torchvision', got {convention!r}.")
    if not isinstance(num_classes, numbers.Integral) or num_classes < 1:
        raise ValueError(f"num_classes must be a whole number of at least 1, got {num_classes!r}.")
    if not weight_decay >= 0:
        raise ValueError(f"weight_decay must be 0 or more (the paper's is 5e-4), got {weight_decay!r}.")
    if not 0 <= dropout < 1:  # Keras takes 1.0 and then zeroes fc6 and fc7 in training: nothing learns
        raise ValueError(f"dropout must be in [0, 1) (the paper's is 0.5), got {dropout!r}.")


def _convolutions(x, variant, groups, convention, initializers):
    """conv1..conv5 with their LRNs and pools (§3.3, §3.4, Fig. 2); returns pool5's output."""
    convs = _PAPER_CONVS if variant == "paper" else _ONE_COLUMN_CONVS
    for index, (filters, kernel, stride, pad) in enumerate(convs, start=1):
        layer_name = f"conv{index}"
        if variant == "paper":
            x = TwoColumnConv2D(
                filters, kernel, strides=stride, padding="valid" if pad == 0 else "same",
                groups=groups if index in _TWO_COLUMN_LAYERS else 1,
                activation="relu", name=layer_name, **initializers(layer_name),
            )(x)
            if index in (1, 2):
                x = _lrn(convention, name=f"lrn{index}")(x)
        else:
            if index == 1:
                x = keras.layers.ZeroPadding2D(pad, name="pad1")(x)
            x = keras.layers.Conv2D(
                filters, kernel, strides=stride, padding="valid" if index == 1 else "same",
                activation="relu", name=layer_name, **initializers(layer_name),
            )(x)
        if index in _POOL_AFTER:
            x = keras.layers.MaxPooling2D(pool_size=3, strides=2, name=f"pool{index}")(x)
    return x


def _lrn(convention, name):
    """The LRN after conv1 and conv2 (§3.3), with the constants of the convention."""
    if convention == "caffe":  # bvlc_alexnet's norm1/norm2: local_size 5, alpha 1e-4, k 1
        return LocalResponseNormalization.from_caffe(5, alpha=1e-4, beta=0.75, k=1.0, name=name)
    return LocalResponseNormalization(size=5, k=2.0, alpha=1e-4, beta=0.75, name=name)


def _classifier(x, variant, num_classes, dropout, classifier_activation, initializers, next_seed):
    """fc6, fc7 (with dropout, §4.2) and fc8 on pool5's output; returns fc8's output."""
    x = keras.layers.Flatten(name="flatten")(x)
    if variant == "paper":
        # §4.2: dropout on the outputs of fc6 and fc7 (the inputs of fc7 and fc8).
        x = keras.layers.Dense(4096, activation="relu", name="fc6", **initializers("fc6", x.shape[-1]))(x)
        x = keras.layers.Dropout(dropout, seed=next_seed(), name="drop6")(x)
        x = keras.layers.Dense(4096, activation="relu", name="fc7", **initializers("fc7"))(x)
        x = keras.layers.Dropout(dropout, seed=next_seed(), name="drop7")(x)
    else:
        # torchvision's order: dropout before fc6 and before fc7.
        x = keras.layers.Dropout(dropout, seed=next_seed(), name="drop5")(x)
        x = keras.layers.Dense(4096, activation="relu", name="fc6", **initializers("fc6", x.shape[-1]))(x)
        x = keras.layers.Dropout(dropout, seed=next_seed(), name="drop6")(x)
        x = keras.layers.Dense(4096, activation="relu", name="fc7", **initializers("fc7"))(x)
    return keras.layers.Dense(
        num_classes, activation=classifier_activation, dtype="float32", name="fc8", **initializers("fc8")
    )(x)


def feature_extractor(model, layer="fc7"):
    """A model that maps images to the activations of `layer` of a built AlexNet.

    The default gives the 4096-d fc7 activations (after ReLU) that the paper compares by
    Euclidean distance to find similar images (§6.1, Fig. 4). Weights are shared with `model`.
    """
    return keras.Model(model.input, model.get_layer(layer).output, name=f"{model.name}_{layer}")


def layer_flops(layer):
    """Forward FLOPs per image of one layer: 2 x its multiply-adds for a convolution or a dense
    layer (output positions x kernel size; a grouped kernel is (k, k, C/groups, F), so groups are
    counted correctly), 0 for everything else (bias, ReLU, LRN, pooling, dropout are not counted).
    """
    if isinstance(layer, (TwoColumnConv2D, keras.layers.Conv2D)):
        _, height, width, _ = layer.output.shape
        return 2 * height * width * math.prod(layer.kernel.shape)
    if isinstance(layer, keras.layers.Dense):
        return 2 * math.prod(layer.kernel.shape)
    return 0


def model_flops(model):
    """Forward FLOPs per image of a built model (the sum of `layer_flops`). The paper network at
    227 with 1000 classes: 1,448,813,632 (724.4 M multiply-adds, docs/paper.md)."""
    return sum(layer_flops(layer) for layer in model.layers)
