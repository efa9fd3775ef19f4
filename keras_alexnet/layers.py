"""The custom layers: the paper's LRN (§3.3) and two-column convolution (§3.2), and the
InputAdapter that lets a model carry weights trained on another input convention (Caffe's,
torchvision's), with the constants of those conventions.

All are written with `keras.ops` only, so they run on every Keras backend, serialize without
Lambda layers, and put no XLA-only function into a SavedModel (docs/platform.md).
"""

import keras
import numpy as np
from keras import ops

PACKAGE = "keras_alexnet"

# The model's input contract: RGB on 0..255 minus this per-channel mean of the ImageNet training
# set (Caffe's), with no division by a standard deviation (the paper's and Caffe's convention).
IMAGENET_MEAN_RGB = (123.68, 116.779, 103.939)

# The input conventions of the weights a model can carry: "paper" (the contract above), "caffe"
# (bvlc_alexnet) and "torchvision" (torchvision's alexnet). InputAdapter maps the contract to the
# other two.
CONVENTIONS = ("paper", "caffe", "torchvision")

# ilsvrc_2012_mean.npy (Caffe's per-pixel training mean, BGR) averaged over its pixels: the mean
# that Caffe's own classification example subtracts.
CAFFE_MEAN_BGR = (104.00698793, 116.66876762, 122.67891434)
# torchvision's ImageNet normalization of RGB in [0, 1].
TORCHVISION_MEAN_RGB = (0.485, 0.456, 0.406)
TORCHVISION_STD_RGB = (0.229, 0.224, 0.225)


@keras.saving.register_keras_serializable(package=PACKAGE)
class LocalResponseNormalization(keras.layers.Layer):
    """Local response normalization across channels, with the paper's constants (§3.3).

        b[c] = a[c] / (k + alpha * sum_{c' in window(c)} a[c']^2) ** beta

    The window holds `size` adjacent channels centred on c, clipped at the edges. `alpha` is
    *not* divided by `size` (the paper's meaning, and `tf.nn.local_response_normalization`'s with
    depth_radius=(size-1)//2, bias=k). Caffe and PyTorch divide alpha by the window size; build
    from their constants with `from_caffe(...)` and `from_torch(...)`, which convert them.

    The sum and power are computed in float32 whatever the layer's dtype policy, then cast back,
    so the layer is exact under `mixed_float16` and `mixed_bfloat16` and differentiable under XLA.

    Args:
        size: number of adjacent channels in the window (odd). Paper: 5.
        k: additive constant. Paper: 2.
        alpha: scale of the sum of squares, not divided by `size`. Paper: 1e-4.
        beta: exponent. Paper: 0.75.
    """

    def __init__(self, size=5, k=2.0, alpha=1e-4, beta=0.75, **kwargs):
        super().__init__(**kwargs)
        if int(size) != size or size < 1 or size % 2 == 0:
            raise ValueError(f"LocalResponseNormalization size must be a positive odd integer, got {size}.")
        self.size = int(size)
        self.k = float(k)
        self.alpha = float(alpha)
        self.beta = float(beta)

    @classmethod
    def from_caffe(cls, local_size=5, alpha=1e-4, beta=0.75, k=1.0, **kwargs):
        """Caffe's `LRN` (ACROSS_CHANNELS) parameters: Caffe divides alpha by local_size."""
        return cls(size=local_size, k=k, alpha=alpha / local_size, beta=beta, **kwargs)

    @classmethod
    def from_torch(cls, size=5, alpha=1e-4, beta=0.75, k=1.0, **kwargs):
        """`torch.nn.LocalResponseNorm(size, alpha, beta, k)`: PyTorch divides alpha by size."""
        return cls(size=size, k=k, alpha=alpha / size, beta=beta, **kwargs)

    def build(self, input_shape):
        # The window sum is one matmul of the squares with this 0/1 band matrix: about 5x faster
        # on CPU, forward and backward, than adding `size` shifted slices (docs/performance.md).
        # Built once per layer, from the channel count.
        index = np.arange(input_shape[-1])
        self._band = (np.abs(index[:, None] - index[None, :]) <= self.size // 2).astype("float32")

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        window_sum = ops.matmul(ops.square(x), self._band)
        base = self.k + self.alpha * window_sum
        if self.beta == 0.75:  # the paper's exponent: t^-3/4 = t^-1/2 * (t^-1/2)^1/2, no log/exp
            root = ops.rsqrt(base)
            scale = root * ops.sqrt(root)
        else:
            scale = ops.power(base, -self.beta)
        return ops.cast(x * scale, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"size": self.size, "k": self.k, "alpha": self.alpha, "beta": self.beta})
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class TwoColumnConv2D(keras.layers.Layer):
    """A convolution split into `groups` columns, as the paper splits the net over two GPUs (§3.2).

    Column g sees only input channels [g*C/groups, (g+1)*C/groups) and produces output channels
    [g*F/groups, (g+1)*F/groups). The layer holds **one** kernel of shape
    (k, k, C/groups, F), the layout of Keras `Conv2D(groups=...)` and of Caffe's `group: 2`
    blobs (after transposing to HWIO), so weights from either load unchanged.

    It is computed literally: split the input, one ordinary convolution per column, concatenate.
    Unlike Keras `Conv2D(groups=2)`, which on the TensorFlow backend wraps the op in
    `tf.function(jit_compile=True)`, this needs no XLA on CPU and exports to a SavedModel that
    TF Serving runs without XLA. `groups=1` is an ordinary convolution.
    """

    def __init__(
        self,
        filters,
        kernel_size,
        strides=1,
        padding="valid",
        groups=2,
        activation=None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if filters % groups:
            raise ValueError(f"{self.name}: filters={filters} is not divisible by groups={groups}.")
        self.filters = filters
        self.kernel_size = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        self.strides = (strides, strides) if isinstance(strides, int) else tuple(strides)
        self.padding = padding
        self.groups = groups
        self.activation = keras.activations.get(activation)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels % self.groups:
            raise ValueError(f"{self.name}: {channels} input channels are not divisible by groups={self.groups}.")
        self.kernel = self.add_weight(
            name="kernel",
            shape=self.kernel_size + (channels // self.groups, self.filters),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
        )
        self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer=self.bias_initializer)

    def call(self, inputs):
        kernel = ops.cast(self.kernel, self.compute_dtype)
        if self.groups == 1:
            columns = [self._conv(inputs, kernel)]
        else:
            column_inputs = ops.split(inputs, self.groups, axis=-1)
            column_kernels = ops.split(kernel, self.groups, axis=-1)
            columns = [self._conv(x, w) for x, w in zip(column_inputs, column_kernels)]
        outputs = columns[0] if len(columns) == 1 else ops.concatenate(columns, axis=-1)
        outputs = outputs + ops.cast(self.bias, self.compute_dtype)
        return self.activation(outputs)

    def _conv(self, inputs, kernel):
        return ops.conv(inputs, kernel, strides=self.strides, padding=self.padding, data_format="channels_last")

    def compute_output_shape(self, input_shape):
        rows, cols = input_shape[1], input_shape[2]

        def out(size, k, s):
            if size is None:
                return None
            return -(-size // s) if self.padding == "same" else (size - k) // s + 1

        return (
            input_shape[0],
            out(rows, self.kernel_size[0], self.strides[0]),
            out(cols, self.kernel_size[1], self.strides[1]),
            self.filters,
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "strides": self.strides,
                "padding": self.padding,
                "groups": self.groups,
                "activation": keras.activations.serialize(self.activation),
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            }
        )
        return config


def input_offset_and_scale(convention):
    """Per-channel (offset, scale) with source_input = (contract_input + offset) * scale, RGB order."""
    mean = np.asarray(IMAGENET_MEAN_RGB, dtype=np.float64)
    if convention == "caffe":
        return mean - np.asarray(CAFFE_MEAN_BGR[::-1]), np.ones(3)
    if convention == "torchvision":
        return mean - 255.0 * np.asarray(TORCHVISION_MEAN_RGB), 1.0 / (255.0 * np.asarray(TORCHVISION_STD_RGB))
    raise ValueError(f"no input adapter for convention {convention!r}; expected 'caffe' or 'torchvision'.")


@keras.saving.register_keras_serializable(package=PACKAGE)
class InputAdapter(keras.layers.Layer):
    """Maps the package's input to the input that imported weights were trained on.

    The model's input is always RGB on 0..255 minus `IMAGENET_MEAN_RGB` (the contract); this
    layer, the first of a converted model, computes `(x + offset) * scale` per channel:

        convention="caffe":       x + mean_rgb - caffe_mean_rgb  (Caffe subtracts its own mean;
                                  the BGR order is folded into conv1's kernels at conversion)
        convention="torchvision": (x + mean_rgb - 255 * tv_mean) / (255 * tv_std)

    The offset and scale follow from the convention's constants (`input_offset_and_scale`), so
    the saved config is just the convention's name.
    """

    def __init__(self, convention, **kwargs):
        super().__init__(**kwargs)
        offset, scale = input_offset_and_scale(convention)
        self.convention = convention
        self._offset = offset.astype(np.float32)
        self._scale = scale.astype(np.float32)

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        return ops.cast((x + self._offset) * self._scale, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"convention": self.convention})
        return config
