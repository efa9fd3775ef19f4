"""Importing other people's AlexNet weights: Caffe's bvlc_alexnet and torchvision's alexnet.

Supported files (see docs/weights.md for where to get them):

    Caffe bvlc_alexnet (the paper's two-column net, variant="paper", groups=2; a Caffe AlexNet
    without `group: 2` loads into groups=1):
      *.caffemodel   Caffe's own protobuf, parsed here without Caffe (NetParameter with `layer`
                     or the older V1 `layers`).
      *.npz          a NumPy archive with arrays "<layer>/weights" and "<layer>/biases" for
                     layer in conv1..conv5, fc6..fc8 (no pickle; what `save_npz` writes).
      *.npy          the pickled dict {layer: [weights, biases]} (or {layer: {"weights": ...,
                     "biases": ...}}) that most TensorFlow ports use. A pickle can run code, so it
                     is read only with `allow_pickle=True`, with a warning, and even then only
                     NumPy arrays, lists and dicts are accepted from it.
      In .npy/.npz files the blobs may be in Caffe's axis order (conv (out, in, kh, kw), fc
      (out, in), fc6's input flattened in (C, H, W) order) or in the TensorFlow order that
      caffe-tensorflow writes (conv (kh, kw, in, out), fc (in, out), fc6's input in (H, W, C)
      order); the order is read from conv1's shape.
    torchvision alexnet (variant="one_column"):
      *.pth / *.pt   its `state_dict`, read with `torch.load(weights_only=True)` (needs torch).
    keras_alexnet:
      *.keras        a model saved by Keras, e.g. by scripts/convert_weights.py.

A converted model computes what the source computed, with the package's input contract
(RGB, 0..255, minus `layers.IMAGENET_MEAN_RGB`), because the conventions travel with it:
    caffe:       LRN with Caffe's constants (k=1, alpha 1e-4 / local_size 5; docs/paper.md, §3.3), conv1's
                 kernels reordered from Caffe's BGR to RGB input channels, and an `InputAdapter`
                 that replaces the contract's mean by Caffe's (BGR 104.007, 116.669, 122.679);
    torchvision: an `InputAdapter` that maps the contract's input to torchvision's
                 ((x / 255 - mean) / std with mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225)).
"""

import logging
import os
import pickle
import warnings
import zipfile

import keras
import numpy as np

from keras_alexnet import model as model_lib
from keras_alexnet.errors import UsageError, first_line
from keras_alexnet.layers import InputAdapter, TwoColumnConv2D

CONV_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5")
DENSE_LAYERS = ("fc6", "fc7", "fc8")
LAYERS = CONV_LAYERS + DENSE_LAYERS
# torchvision's alexnet state_dict keys of each layer.
_TORCHVISION_KEYS = {
    "conv1": "features.0", "conv2": "features.3", "conv3": "features.6", "conv4": "features.8",
    "conv5": "features.10", "fc6": "classifier.1", "fc7": "classifier.4", "fc8": "classifier.6",
}
_CAFFE_SUFFIXES = (".caffemodel", ".npz", ".npy")
_TORCH_SUFFIXES = (".pth", ".pt")

_log = logging.getLogger(__name__)


def convention_of_model(model):
    """"caffe" or "torchvision" when the model has an `InputAdapter`, else "paper"."""
    for layer in model.layers:
        if isinstance(layer, InputAdapter):
            return layer.convention
    return "paper"


def convention_of(path):
    """The convention of a weight file, from its name: "caffe", "torchvision", or that of a .keras model."""
    path = os.fspath(path)
    lower = path.lower()
    if lower.endswith(_CAFFE_SUFFIXES + _TORCH_SUFFIXES + (".keras",)):
        _check_file(path)
    if lower.endswith(_CAFFE_SUFFIXES):
        return "caffe"
    if lower.endswith(_TORCH_SUFFIXES):
        return "torchvision"
    if lower.endswith(".keras"):
        try:
            with zipfile.ZipFile(path) as archive:
                config = archive.read("config.json").decode("utf-8")
        except (zipfile.BadZipFile, KeyError):
            raise UsageError(f"{path}: not a .keras model file.") from None
        for convention in ("caffe", "torchvision"):
            if f'"convention": "{convention}"' in config:
                return convention
        return "paper"
    raise UsageError(
        f"{path}: unknown weight file type; expected .caffemodel, .npz or .npy (Caffe), .pth or .pt "
        "(torchvision) or .keras."
    )


class SourceWeights:
    """Weights read from a file, converted to the Keras layout of `keras_alexnet.build()`.

    Attributes:
        convention: "caffe", "torchvision" or "paper" (the conventions the model must use).
        variant: "paper" or "one_column".
        layers: dict layer name -> [kernel, bias] as float32 arrays in Keras layout (conv kernels
            (kh, kw, in/groups, out) with RGB input channels in conv1; dense kernels (in, out), fc6's
            rows in Keras's (H, W, C) flattening order).
        path: the file.
        input_size: a .keras model's input side; None for the other files.
    """

    def __init__(self, convention, variant, layers, path, input_size=None):
        self.convention = convention
        self.variant = variant
        self.layers = layers
        self.path = path
        self.input_size = input_size

    @property
    def num_classes(self):
        return self.layers["fc8"][0].shape[1] if "fc8" in self.layers else None

    @property
    def groups(self):
        """Columns of conv2/conv4/conv5: 2 for bvlc_alexnet (conv2 sees 48 of conv1's 96 maps), else 1."""
        return self.layers["conv1"][0].shape[-1] // self.layers["conv2"][0].shape[2]

    @property
    def pool5_size(self):
        """Side of the pool5 map that fc6 was trained on (6 for 227x227 input)."""
        if "fc6" not in self.layers:
            return None
        channels = self.layers["conv5"][0].shape[-1]
        side = int(round((self.layers["fc6"][0].shape[0] / channels) ** 0.5))
        if side * side * channels != self.layers["fc6"][0].shape[0]:
            raise UsageError(f"{self.path}: fc6 has {self.layers['fc6'][0].shape[0]} inputs, not a square map of {channels} channels.")
        return side

    def input_sizes(self):
        """The input sides whose pool5 map is the one fc6 was trained on (fc6's shape follows it)."""
        side = self.pool5_size
        sizes = [s for s in range(model_lib.min_input_size(self.variant), 1024) if model_lib.pool5_size(s, self.variant) == side]
        if not sizes:
            raise UsageError(f"{self.path}: no input size gives the {side}x{side} pool5 map that fc6 expects.")
        return sizes

    def default_input_size(self):
        """The side the file was made for (a .keras model's own, else 227 for Caffe, 224 for
        torchvision) if fc6 fits it, else the smallest side that fits fc6."""
        sizes = self.input_sizes()
        standard = self.input_size or (227 if self.variant == "paper" else 224)
        return standard if standard in sizes else sizes[0]


def read_weights(path, allow_pickle=False):
    """Read a weight file (see the module docstring) into a `SourceWeights` in Keras layout."""
    path = os.fspath(path)
    convention = convention_of(path)
    _check_file(path)
    lower = path.lower()
    if lower.endswith(".keras"):
        model = _load_keras_model(path)
        layers = {layer.name: [np.asarray(w) for w in layer.get_weights()] for layer in model.layers if layer.name in LAYERS}
        return SourceWeights(convention, _model_variant(model), layers, path, input_size=model.input_shape[1])
    if lower.endswith(_TORCH_SUFFIXES):
        return SourceWeights("torchvision", "one_column", _torchvision_to_keras(_read_torch_state_dict(path), path), path)
    if lower.endswith(".caffemodel"):
        blobs, layout = read_caffemodel(path), "caffe"
    else:
        blobs = _read_npz(path) if lower.endswith(".npz") else _read_pickled_npy(path, allow_pickle)
        layout = _numpy_layout(blobs, path)
    return SourceWeights("caffe", "paper", _caffe_to_keras(blobs, layout, path), path)


def load_weights(model, path, allow_pickle=False, warn_new_classifier=True):
    """Load a weight file into a model built by `keras_alexnet.build()`, layer by layer.

    The model must use the file's convention (`build(weights=...)` arranges that). Every layer
    of conv1..fc8 that the model has is loaded; fc8 is left as initialized (with a log message)
    when the model's number of classes differs from the file's, for fine-tuning. Any other
    mismatch raises `UsageError` naming the layer and the fix. (The training engine says so itself:
    `warn_new_classifier=False`.)
    """
    source = path if isinstance(path, SourceWeights) else read_weights(path, allow_pickle=allow_pickle)
    model_convention = convention_of_model(model)
    if model_convention != source.convention:
        raise UsageError(
            f"{source.path} holds {source.convention}-convention weights but the model uses the "
            f"{model_convention!r} convention: build it with keras_alexnet.build(weights=...) or convention={source.convention!r}."
        )
    names = [layer.name for layer in model.layers]
    if "conv1" not in names:
        raise UsageError("the model has no conv1 layer: build it with keras_alexnet.build().")
    if _model_variant(model) != source.variant:
        what = "Caffe's bvlc_alexnet is the paper's two-column net" if source.variant == "paper" else "torchvision's alexnet is the one-column net"
        raise UsageError(f"{source.path}: {what}: build with variant={source.variant!r}.")
    for name in LAYERS:
        if name not in names:
            continue
        if name not in source.layers:
            raise UsageError(f"{source.path} has no weights for layer {name}.")
        layer = model.get_layer(name)
        kernel, bias = source.layers[name]
        expected = [tuple(v.shape) for v in layer.weights]
        if name == "fc8" and expected[0][1] != kernel.shape[1]:
            if warn_new_classifier:
                _log.warning("%s: fc8 has %d classes, the model %d: fc8 keeps its initialization.", source.path,
                             kernel.shape[1], expected[0][1])
            continue
        if expected != [kernel.shape, bias.shape]:
            raise UsageError(
                f"{source.path}: layer {name} has shapes {[kernel.shape, bias.shape]} but the model's are {expected}: "
                + _shape_fix(source, name)
            )
        layer.set_weights([kernel, bias])
    return model


def build_from_weights(path, allow_pickle=False, image_size=None):
    """The complete model that a weight file (or a `SourceWeights`) implies, with its weights loaded.

    Caffe files give the paper's two-column net with Caffe's conventions, torchvision files the
    one-column net with torchvision's, a .keras file the model it holds. `image_size` defaults to
    `SourceWeights.default_input_size()`: 227 (Caffe) or 224 (torchvision), or, if fc6 was trained
    on another pool5 size, the smallest size that gives it.
    """
    if isinstance(path, SourceWeights):
        source = path
    elif os.fspath(path).lower().endswith(".keras"):
        model = _load_keras_model(os.fspath(path))
        if image_size is not None and model.input_shape[1] != image_size:
            raise UsageError(f"{path} holds a model for {model.input_shape[1]}x{model.input_shape[1]} input, not {image_size}.")
        return model
    else:
        source = read_weights(path, allow_pickle=allow_pickle)
    image_size = image_size or source.default_input_size()
    model = model_lib.build(
        num_classes=source.num_classes, input_shape=(image_size, image_size, 3), variant=source.variant,
        groups=source.groups, convention=source.convention,
    )
    return load_weights(model, source)


def save_npz(path, source):
    """Write `SourceWeights` as an unpickled .npz in Caffe's axis order and BGR conv1 (reads back as the same)."""
    arrays = {}
    for name, (kernel, bias) in source.layers.items():
        if name == "conv1" and source.convention == "caffe":
            kernel = kernel[:, :, ::-1, :]
        if name in CONV_LAYERS:
            kernel = kernel.transpose(3, 2, 0, 1)
        elif name == "fc6":
            channels = source.layers["conv5"][0].shape[-1]
            side = source.pool5_size
            kernel = kernel.reshape(side, side, channels, -1).transpose(3, 2, 0, 1).reshape(kernel.shape[1], -1)
        else:
            kernel = kernel.T
        arrays[f"{name}/weights"], arrays[f"{name}/biases"] = np.ascontiguousarray(kernel), bias
    np.savez(path, **arrays)


# --- Caffe ---------------------------------------------------------------------------------------


def _caffe_to_keras(blobs, layout, path):
    """{layer: (weights, biases)} in Caffe or TensorFlow axis order -> Keras layout, conv1 in RGB."""
    missing = [name for name in LAYERS if name not in blobs]
    if missing:
        raise UsageError(f"{path}: no weights for {', '.join(missing)} (found {', '.join(sorted(blobs)) or 'none'}); expected bvlc_alexnet's layers conv1..conv5, fc6..fc8.")
    layers = {}
    for name in LAYERS:
        weights, biases = (np.asarray(a, dtype=np.float32) for a in blobs[name])
        biases = biases.reshape(-1)
        if layout == "caffe":
            channels = layers["conv5"][0].shape[-1] if name == "fc6" else None
            weights = _from_caffe_order(name, _squeeze_caffe_blob(name, weights, path), path, channels)
        _expect_ndim(name, weights, path)
        if name == "conv1":
            weights = weights[:, :, ::-1, :]  # Caffe's BGR input channels -> the model's RGB
        layers[name] = [weights, biases]
    return layers


def _squeeze_caffe_blob(name, weights, path):
    """Old blobs are always 4-D (num, channels, height, width): fc weights come as (1, 1, out, in)."""
    if name in DENSE_LAYERS and weights.ndim == 4:
        if weights.shape[:2] != (1, 1):
            raise UsageError(f"{path}: layer {name} has a 4-D blob {weights.shape}, expected (1, 1, out, in) or (out, in).")
        return weights.reshape(weights.shape[2:])
    return weights


def _from_caffe_order(name, weights, path, channels):
    if name in CONV_LAYERS:
        _expect_ndim(name, weights, path, ndim=4)
        return weights.transpose(2, 3, 1, 0)  # (out, in, kh, kw) -> (kh, kw, in, out)
    _expect_ndim(name, weights, path, ndim=2)
    if name == "fc6":
        # Caffe flattens pool5 in (C, H, W) order, Keras in (H, W, C): permute fc6's inputs.
        outputs, inputs = weights.shape
        side = int(round((inputs / channels) ** 0.5))
        if side * side * channels != inputs:
            raise UsageError(f"{path}: fc6 has {inputs} inputs, not a square map of conv5's {channels} channels.")
        return weights.reshape(outputs, channels, side, side).transpose(2, 3, 1, 0).reshape(inputs, outputs)
    return weights.T


def _expect_ndim(name, weights, path, ndim=None):
    ndim = ndim or (4 if name in CONV_LAYERS else 2)
    if weights.ndim != ndim:
        raise UsageError(f"{path}: layer {name} has a {weights.ndim}-D weight array {weights.shape}, expected {ndim}-D.")


def _numpy_layout(blobs, path):
    """"caffe" if conv1 is (96, 3, 11, 11)-like, "tensorflow" if (11, 11, 3, 96)-like."""
    if "conv1" not in blobs:
        raise UsageError(f"{path}: no conv1 weights (found {', '.join(sorted(blobs)) or 'none'}).")
    shape = np.shape(blobs["conv1"][0])
    if len(shape) == 4 and shape[1] == 3 and shape[2] == shape[3]:
        return "caffe"
    if len(shape) == 4 and shape[2] == 3 and shape[0] == shape[1]:
        return "tensorflow"
    raise UsageError(f"{path}: conv1 weights of shape {shape} are neither Caffe's (out, 3, k, k) nor TensorFlow's (k, k, 3, out).")


def _read_npz(path):
    if not zipfile.is_zipfile(path):  # np.load would read it as a pickle and suggest allow_pickle
        raise UsageError(f"{path}: not an .npz archive (an .npz is a zip file of arrays); a download cut short reads like this.")
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = set(archive.files)
            blobs = {}
            for name in LAYERS:
                if f"{name}/weights" in keys and f"{name}/biases" in keys:
                    blobs[name] = (archive[f"{name}/weights"], archive[f"{name}/biases"])
    except (ValueError, EOFError, zipfile.BadZipFile, AttributeError) as error:  # not an archive, or cut short
        raise UsageError(f"{path}: not an .npz archive NumPy can read ({first_line(error)}); a download cut short reads like this.") from None
    if not blobs:
        raise UsageError(f"{path}: expected arrays named '<layer>/weights' and '<layer>/biases' (e.g. conv1/weights), found {sorted(keys)[:8]}.")
    return blobs


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Builds NumPy arrays, dicts, lists and strings, and refuses every other global a pickle names."""

    _ALLOWED = {
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    }

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise UsageError(f"refusing to unpickle {module}.{name}: a weight file should hold only NumPy arrays.")
        if module.startswith("numpy.core") and int(np.__version__.split(".")[0]) >= 2:
            module = "numpy._core" + module[len("numpy.core"):]  # renamed in NumPy 2; old pickles name the old one
        return super().find_class(module, name)


def _read_pickled_npy(path, allow_pickle):
    with open(path, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = header(f)
        except ValueError as error:  # NumPy's "the magic string is not correct", "EOF: reading magic string"
            raise UsageError(f"{path}: not a .npy file NumPy can read ({first_line(error)}).") from None
        if not dtype.hasobject:
            raise UsageError(f"{path}: a plain {dtype} array of shape {shape}, not a dict of layer weights.")
        if not allow_pickle:
            raise UsageError(
                f"{path} is a pickled NumPy file, and unpickling a downloaded file can run code: read it with "
                "allow_pickle=True (scripts/convert_weights.py --allow_pickle) only if you trust it, and convert it once to .keras."
            )
        warnings.warn(f"unpickling {path} (allow_pickle=True): only NumPy arrays, dicts and lists are accepted from it.", stacklevel=3)
        array = _NumpyOnlyUnpickler(f, encoding="latin1").load()
    content = array.item() if isinstance(array, np.ndarray) and array.shape == () else array
    if not isinstance(content, dict):
        raise UsageError(f"{path}: expected a pickled dict of layer weights, found {type(content).__name__}.")
    blobs = {}
    for name, value in content.items():
        name = name.decode() if isinstance(name, bytes) else name
        if isinstance(value, dict):
            value = {k.decode() if isinstance(k, bytes) else k: v for k, v in value.items()}
            value = (value.get("weights"), value.get("biases"))
        if len(value) != 2 or any(v is None for v in value):
            raise UsageError(f"{path}: layer {name} should hold [weights, biases].")
        blobs[name] = tuple(value)
    return blobs


# A .caffemodel is a protobuf `NetParameter` (caffe.proto). Only the fields read here matter:
#   NetParameter:     layer = 100 (LayerParameter), layers = 2 (V1LayerParameter, older files)
#   LayerParameter:   name = 1, blobs = 7
#   V1LayerParameter: name = 4, blobs = 6, layer = 1 (V0LayerParameter: name = 1, blobs = 50)
#   BlobProto:        shape = 7 (BlobShape: dim = 1), data = 5 (float), double_data = 8,
#                     num = 1, channels = 2, height = 3, width = 4 (the deprecated 4-D shape)
_LAYER_FIELDS = {100: (1, 7), 2: (4, 6)}  # NetParameter field -> (name field, blobs field)


def read_caffemodel(path):
    """Parse a .caffemodel without Caffe: {layer name: [blob arrays]} for layers that have blobs."""
    with open(path, "rb") as f:
        return read_caffemodel_bytes(f.read(), path)


def read_caffemodel_bytes(data, path="<bytes>"):
    """`read_caffemodel` of a serialized NetParameter."""
    data = memoryview(data)
    layers = {}
    try:
        for field, _, value in _fields(data):
            if field not in _LAYER_FIELDS:
                continue
            name_field, blobs_field = _LAYER_FIELDS[field]
            name, blobs = _layer(value, name_field, blobs_field)
            if field == 2 and not name:  # a V1 layer that wraps a V0 layer
                for sub_field, _, sub_value in _fields(value):
                    if sub_field == 1:
                        name, blobs = _layer(sub_value, 1, 50)
            if blobs:
                layers[name] = blobs
    except (IndexError, ValueError) as error:
        raise UsageError(f"{path}: not a valid .caffemodel ({error}).") from None
    if not layers:
        raise UsageError(f"{path}: no layers with weights found; is it a .caffemodel?")
    return layers


def _layer(data, name_field, blobs_field):
    name, blobs = "", []
    for field, _, value in _fields(data):
        if field == name_field:
            name = bytes(value).decode("utf-8")
        elif field == blobs_field:
            blobs.append(_blob(value))
    return name, blobs


def _blob(data):
    legacy, shape, values = {}, None, []
    for field, wire, value in _fields(data):
        if field == 7:
            shape = []
            for dim_field, dim_wire, dim in _fields(value):
                if dim_field == 1:
                    shape.extend(_varints(dim) if dim_wire == 2 else [dim])
        elif field in (5, 8):
            dtype = "<f4" if field == 5 else "<f8"
            values.append(np.frombuffer(value, dtype=dtype) if wire == 2 else np.array([value], dtype=np.uint32 if field == 5 else np.uint64).view(dtype))
        elif field in (1, 2, 3, 4):
            legacy[field] = value
    array = np.concatenate(values).astype(np.float32) if values else np.zeros(0, np.float32)
    if shape is None:
        shape = [legacy.get(i, 0) for i in (1, 2, 3, 4)] if legacy else [array.size]
    if int(np.prod(shape)) != array.size:
        raise ValueError(f"blob of shape {shape} has {array.size} values")
    return array.reshape(shape)


def _fields(data):
    """Yield (field number, wire type, value) of a protobuf message: ints for varint/fixed, memoryview for bytes."""
    position, end = 0, len(data)
    while position < end:
        key, position = _varint(data, position)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, position = _varint(data, position)
        elif wire == 1:
            value, position = int.from_bytes(data[position : position + 8], "little"), position + 8
        elif wire == 2:
            length, position = _varint(data, position)
            value, position = data[position : position + length], position + length
        elif wire == 5:
            value, position = int.from_bytes(data[position : position + 4], "little"), position + 4
        else:
            raise ValueError(f"unsupported wire type {wire} at byte {position}")
        if position > end:
            raise ValueError("truncated message")
        yield field, wire, value


def _varint(data, position):
    result, shift = 0, 0
    while True:
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, position
        shift += 7


def _varints(data):
    values, position = [], 0
    while position < len(data):
        value, position = _varint(data, position)
        values.append(value)
    return values


# --- torchvision ---------------------------------------------------------------------------------


def _read_torch_state_dict(path):
    try:
        import torch
    except ImportError:
        raise UsageError(f"{path}: reading a torchvision .pth needs torch: pip install 'keras_alexnet[torch]'.") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise UsageError(f"{path}: not a plain state_dict (torch.load(weights_only=True) refused it: {first_line(error)}).") from None
    except (RuntimeError, EOFError, KeyError, ValueError, AttributeError) as error:  # not torch's format, or cut short
        raise UsageError(f"{path}: not a file torch.load can read ({type(error).__name__}: {first_line(error)}): pass "
                         "torchvision's alexnet state_dict as torch.save wrote it (a download cut short reads like this).") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise UsageError(f"{path}: expected a state_dict (a dict of tensors), found {type(state).__name__}.")
    return {key.removeprefix("module."): value.detach().cpu().float().numpy()
            for key, value in state.items() if hasattr(value, "is_floating_point") and value.is_floating_point()}


def _torchvision_to_keras(state, path):
    layers = {}
    for name in LAYERS:
        key = _TORCHVISION_KEYS[name]
        if f"{key}.weight" not in state or f"{key}.bias" not in state:
            raise UsageError(f"{path}: no {key}.weight / {key}.bias; expected torchvision's alexnet state_dict (keys features.N, classifier.N).")
        weights = state[f"{key}.weight"].astype(np.float32)
        channels = layers["conv5"][0].shape[-1] if "conv5" in layers else None
        weights = _from_caffe_order(name, weights, path, channels)  # torch's axis orders are Caffe's
        layers[name] = [weights, state[f"{key}.bias"].astype(np.float32)]
    return layers


# --- helpers -------------------------------------------------------------------------------------


def _load_keras_model(path):
    _check_file(path)
    try:
        model = keras.saving.load_model(path, compile=False)
    except (zipfile.BadZipFile, ValueError, TypeError) as error:
        raise UsageError(f"{path}: not a .keras model that keras_alexnet can read ({first_line(error)}).") from None
    if not isinstance(model, keras.Model) or "conv1" not in [layer.name for layer in model.layers]:
        raise UsageError(f"{path}: not an AlexNet built by keras_alexnet (no conv1 layer).")
    return model


def _check_file(path):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such weight file.")


def _model_variant(model):
    return "paper" if isinstance(model.get_layer("conv1"), TwoColumnConv2D) else "one_column"


def _shape_fix(source, name):
    if source.variant == "paper" and name in ("conv2", "conv4", "conv5"):
        return f"the file's net has {source.groups} column(s): build with groups={source.groups}."
    if name == "fc6":
        side, size = source.pool5_size, source.input_sizes()[0]
        return f"fc6 was trained on a {side}x{side} pool5 map: build with input_shape=({size}, {size}, 3), or include_top=False."
    return f"build with variant={source.variant!r} and the file's layer sizes."
