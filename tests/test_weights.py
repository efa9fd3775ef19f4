"""Weight import: random weights in each source's own format, checked against the source's computation.

Caffe: a NumPy reference of Caffe's layers (convolution with groups, ReLU, cross-channel LRN,
ceil-mode max pooling, InnerProduct on the (C, H, W)-flattened blob) on BGR input minus Caffe's
mean. torchvision: torch's own forward of its alexnet layout (skipped without torch).
The Caffe tests use a 99x99 input (pool5 2x2, so fc6's row permutation matters) to stay fast.
"""

import io
import os
import pickle
import resource
import signal
import subprocess
import sys
import warnings
from types import SimpleNamespace

import keras
import numpy as np
import pytest

import keras_alexnet
from keras_alexnet import layers, weights
from keras_alexnet.augment import IMAGENET_MEAN_RGB
from keras_alexnet.errors import UsageError

CAFFE_SIZE = 99  # pool5 is 2x2; Caffe's ceil-mode pooling and Keras's floor agree at 99 and 227
# (name, out, in per group, kernel, stride, pad, groups) of bvlc_alexnet's convolutions.
CAFFE_CONVS = [
    ("conv1", 96, 3, 11, 4, 0, 1), ("conv2", 256, 48, 5, 1, 2, 2), ("conv3", 384, 256, 3, 1, 1, 1),
    ("conv4", 384, 192, 3, 1, 1, 2), ("conv5", 256, 192, 3, 1, 1, 2),
]


def random_caffe_blobs(pool5=2, classes=1000, seed=0):
    """bvlc_alexnet-shaped blobs in Caffe's axis order: He-scaled, so activations stay O(1..100) and
    LRN matters; fc8 scaled down so the logits are a few units."""
    rng = np.random.default_rng(seed)
    blobs = {}
    for name, out, fan_in, k, _, _, _ in CAFFE_CONVS:
        std = (2.0 / (fan_in * k * k)) ** 0.5
        blobs[name] = [std * rng.standard_normal((out, fan_in, k, k), dtype=np.float32), rng.normal(0, 0.1, out).astype(np.float32)]
    for name, out, fan_in in (("fc6", 4096, 256 * pool5 * pool5), ("fc7", 4096, 4096), ("fc8", classes, 4096)):
        shrink = 0.01 if name == "fc8" else 1.0  # logits of a few units, so 1e-4 is a tight bound
        std = shrink * (2.0 / fan_in) ** 0.5
        blobs[name] = [std * rng.standard_normal((out, fan_in), dtype=np.float32), rng.normal(0, 0.1 * shrink, out).astype(np.float32)]
    return blobs


def random_images(size, count=2, seed=1):
    return np.random.default_rng(seed).integers(0, 256, (count, size, size, 3)).astype(np.float32)


def contract_input(images_rgb):
    """The package's input: RGB 0..255 minus the ImageNet mean."""
    return (images_rgb - np.asarray(IMAGENET_MEAN_RGB, np.float32)).astype(np.float32)


# --- a NumPy reference of Caffe's layers ---------------------------------------------------------


def caffe_conv(x, w, b, stride, pad, groups):
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    k = w.shape[-1]
    outputs = []
    for g, (xg, wg) in enumerate(zip(np.split(x, groups, axis=1), np.split(w, groups, axis=0))):
        windows = np.lib.stride_tricks.sliding_window_view(xg, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]
        n, c, h, w_, _, _ = windows.shape
        columns = windows.transpose(0, 2, 3, 1, 4, 5).reshape(n * h * w_, c * k * k)
        outputs.append((columns @ wg.reshape(wg.shape[0], -1).T).reshape(n, h, w_, -1).transpose(0, 3, 1, 2))
    return np.concatenate(outputs, axis=1) + b[None, :, None, None]


def caffe_lrn(x, local_size=5, alpha=1e-4, beta=0.75, k=1.0):
    """Caffe's LRNLayer ACROSS_CHANNELS: scale = k + alpha/local_size * sum of squares in the window."""
    squares = np.pad(x * x, ((0, 0), (local_size // 2, local_size // 2), (0, 0), (0, 0)))
    window = sum(squares[:, i : i + x.shape[1]] for i in range(local_size))
    return x * (k + alpha / local_size * window) ** -beta


def caffe_max_pool(x, kernel=3, stride=2):
    """Caffe's PoolingLayer MAX, pad 0: ceil((H - kernel) / stride) + 1 outputs, windows clipped at the edge."""
    h = x.shape[2]
    out = int(np.ceil((h - kernel) / stride)) + 1
    y = np.empty(x.shape[:2] + (out, out))
    for i in range(out):
        for j in range(out):
            y[:, :, i, j] = x[:, :, i * stride : min(i * stride + kernel, h), j * stride : min(j * stride + kernel, h)].max(axis=(2, 3))
    return y


def caffe_forward(blobs, images_rgb, lrn_k=1.0, lrn_alpha=1e-4):
    """bvlc_alexnet's deploy net on images (RGB 0..255): BGR, minus Caffe's mean, NCHW, float64."""
    x = images_rgb[..., ::-1].astype(np.float64) - np.asarray(layers.CAFFE_MEAN_BGR)
    x = x.transpose(0, 3, 1, 2)
    relu = lambda v: np.maximum(v, 0)  # noqa: E731
    for name, _, _, _, stride, pad, groups in CAFFE_CONVS:
        w, b = (blobs[name][0].astype(np.float64), blobs[name][1].astype(np.float64))
        x = relu(caffe_conv(x, w.reshape(w.shape[0], -1, *w.shape[-2:]), b, stride, pad, groups))
        if name in ("conv1", "conv2"):
            x = caffe_lrn(x, alpha=lrn_alpha, k=lrn_k)
        if name in ("conv1", "conv2", "conv5"):
            x = caffe_max_pool(x)
    x = x.reshape(x.shape[0], -1)  # Caffe's InnerProduct flattens (C, H, W)
    for name in ("fc6", "fc7", "fc8"):
        w, b = (blobs[name][0].astype(np.float64).reshape(blobs[name][1].size, -1), blobs[name][1].astype(np.float64))
        x = x @ w.T + b
        x = relu(x) if name != "fc8" else x
    return x


def assert_logits_close(keras_logits, reference):
    """Within 1e-4 (absolute) of the source's logits, which are a few units large here."""
    scale = float(np.abs(reference).max())
    error = float(np.abs(keras_logits - reference).max())
    assert 0.5 < scale < 100, f"logits of scale {scale:.3g}: the test's weights should give logits of a few units"
    assert error <= 1e-4, f"max |keras - source| = {error:.3g} for logits of scale {scale:.3g}"


def save_caffe_npz(path, blobs):
    np.savez(path, **{f"{name}/{part}": array for name, (w, b) in blobs.items() for part, array in (("weights", w), ("biases", b))})


def to_tensorflow_order(blobs, pool5=2):
    """What caffe-tensorflow writes: conv (kh, kw, in, out), fc (in, out), fc6's rows in (H, W, C)."""
    converted = {}
    for name, (w, b) in blobs.items():
        if w.ndim == 4:
            w = w.transpose(2, 3, 1, 0)
        elif name == "fc6":
            w = w.reshape(w.shape[0], 256, pool5, pool5).transpose(2, 3, 1, 0).reshape(-1, w.shape[0])
        else:
            w = w.T
        converted[name] = [w, b]
    return converted


def save_pickled_npy(path, content):
    np.save(path, np.array(content, dtype=object), allow_pickle=True)


def assert_same_weights(source, expected):
    """Two conversions give identical Keras arrays (used for the other containers of one verified conversion)."""
    assert sorted(source.layers) == sorted(expected.layers)
    for name, arrays in expected.layers.items():
        for got, want in zip(source.layers[name], arrays):
            np.testing.assert_array_equal(got, want, err_msg=name)


@pytest.fixture(scope="module")
def caffe_case(tmp_path_factory):
    """Random bvlc_alexnet blobs at 99x99, the NumPy-Caffe logits, a .npz of them and a model built from it."""
    blobs = random_caffe_blobs()
    images = random_images(CAFFE_SIZE)
    npz = tmp_path_factory.mktemp("caffe") / "bvlc_alexnet.npz"
    save_caffe_npz(npz, blobs)
    model = keras_alexnet.build(input_shape=(CAFFE_SIZE, CAFFE_SIZE, 3), weights=npz)
    return SimpleNamespace(blobs=blobs, images=images, reference=caffe_forward(blobs, images), npz=npz,
                           source=weights.read_weights(npz), model=model)


def logits(model, images):
    return keras.ops.convert_to_numpy(model(contract_input(images), training=False))


# --- Caffe ---------------------------------------------------------------------------------------


def test_caffe_npz_matches_caffe_reference(caffe_case):
    model = caffe_case.model
    assert weights.convention_of_model(model) == "caffe"
    assert model.get_layer("lrn1").k == 1.0 and model.get_layer("lrn1").alpha == pytest.approx(2e-5)
    assert_logits_close(logits(model, caffe_case.images), caffe_case.reference)


def test_caffe_conventions_matter(caffe_case):
    """Caffe's LRN constants and mean change the logits (so the checks above can fail), and a model
    without Caffe's conventions refuses Caffe's weights."""
    paper_lrn = caffe_forward(caffe_case.blobs, caffe_case.images, lrn_k=2.0, lrn_alpha=1e-4 * 5)
    other_mean = caffe_forward(caffe_case.blobs, caffe_case.images - 2.0)
    ours = logits(caffe_case.model, caffe_case.images)
    scale = np.abs(caffe_case.reference).max()
    assert np.abs(ours - paper_lrn).max() > 1e-2 * scale
    assert np.abs(ours - other_mean).max() > 1e-3 * scale
    paper = keras_alexnet.build(input_shape=(67, 67, 3), include_top=False)
    with pytest.raises(UsageError, match="convention"):
        weights.load_weights(paper, caffe_case.source)


def test_caffe_pickled_npy_in_tensorflow_order(tmp_path, caffe_case):
    """The pickled {layer: [weights, biases]} .npy of TensorFlow ports (caffe-tensorflow's axis order)."""
    path = tmp_path / "bvlc_alexnet.npy"
    save_pickled_npy(path, to_tensorflow_order(caffe_case.blobs))
    with pytest.raises(UsageError, match="allow_pickle"):
        keras_alexnet.build(input_shape=(CAFFE_SIZE, CAFFE_SIZE, 3), weights=path)
    with pytest.warns(UserWarning, match="unpickling"):
        model = weights.build_from_weights(path, allow_pickle=True)
    assert model.input_shape == (None, CAFFE_SIZE, CAFFE_SIZE, 3)  # the smallest size whose pool5 fits fc6
    assert_logits_close(logits(model, caffe_case.images), caffe_case.reference)


def test_caffe_pickled_npy_dict_of_dicts_in_caffe_order(tmp_path, caffe_case):
    path = tmp_path / "bvlc_alexnet.npy"
    save_pickled_npy(path, {name: {"weights": w, "biases": b} for name, (w, b) in caffe_case.blobs.items()})
    with pytest.warns(UserWarning):
        assert_same_weights(weights.read_weights(path, allow_pickle=True), caffe_case.source)


class _RunsCode:
    def __reduce__(self):
        return (print, ("this pickle ran code",))


def test_pickle_with_other_globals_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.npy"
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|O", "fortran_order": False, "shape": ()})
        pickle.dump({"conv1": [_RunsCode(), 0]}, f)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(UsageError, match="refusing to unpickle builtins.print"):
            weights.read_weights(path, allow_pickle=True)
    assert "ran code" not in capsys.readouterr().out


# A minimal caffe.proto, built with Google's protobuf library (not the parser under test). Field
# numbers are caffe.proto's. For the full net, BlobProto.data (repeated float, packed) is declared
# as bytes: on the wire a packed float field is exactly a length-delimited string of little-endian
# float32, and filling 25M floats through protobuf's Python API takes many seconds.
def caffe_proto_classes(data_as_bytes):
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    field = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(name=f"mini_caffe_{data_as_bytes}.proto", package=f"mini{int(data_as_bytes)}", syntax="proto2")

    def message(name, fields):
        proto = file.message_type.add(name=name)
        for field_name, number, kind, repeated, type_name in fields:
            entry = proto.field.add(name=field_name, number=number, type=kind,
                                    label=field.LABEL_REPEATED if repeated else field.LABEL_OPTIONAL)
            if type_name:
                entry.type_name = f".{file.package}.{type_name}"
            if repeated and kind in (field.TYPE_INT64, field.TYPE_FLOAT):
                entry.options.packed = True

    message("BlobShape", [("dim", 1, field.TYPE_INT64, True, None)])
    message("BlobProto", [
        ("shape", 7, field.TYPE_MESSAGE, False, "BlobShape"),
        ("data", 5, field.TYPE_BYTES, False, None) if data_as_bytes else ("data", 5, field.TYPE_FLOAT, True, None),
        ("num", 1, field.TYPE_INT32, False, None), ("channels", 2, field.TYPE_INT32, False, None),
        ("height", 3, field.TYPE_INT32, False, None), ("width", 4, field.TYPE_INT32, False, None),
    ])
    message("LayerParameter", [("name", 1, field.TYPE_STRING, False, None), ("type", 2, field.TYPE_STRING, False, None),
                               ("blobs", 7, field.TYPE_MESSAGE, True, "BlobProto")])
    message("V1LayerParameter", [("name", 4, field.TYPE_STRING, False, None), ("type", 5, field.TYPE_INT32, False, None),
                                 ("blobs", 6, field.TYPE_MESSAGE, True, "BlobProto")])
    message("NetParameter", [("name", 1, field.TYPE_STRING, False, None), ("layers", 2, field.TYPE_MESSAGE, True, "V1LayerParameter"),
                             ("layer", 100, field.TYPE_MESSAGE, True, "LayerParameter")])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{file.package}.{name}"))
            for name in ("NetParameter", "BlobProto")}


def caffemodel_bytes(blobs, v1_layers):
    """bvlc_alexnet as Caffe saves it: `layer` with blob shapes, or old `layers` with 4-D num/channels/height/width."""
    proto = caffe_proto_classes(data_as_bytes=True)
    net = proto["NetParameter"](name="AlexNet")
    for name in ("data", "conv1", "relu1", "norm1", "pool1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8", "prob"):
        layer = net.layers.add(name=name, type=4) if v1_layers else net.layer.add(name=name, type="Convolution")
        for array in blobs.get(name, []):
            blob = layer.blobs.add(data=np.ascontiguousarray(array, dtype="<f4").tobytes())
            if v1_layers:  # old files: always 4-D, fc weights (1, 1, out, in), biases (1, 1, 1, out)
                dims = (1,) * (4 - array.ndim) + array.shape
                blob.num, blob.channels, blob.height, blob.width = dims
            else:
                blob.shape.dim.extend(array.shape)
    return net.SerializeToString()


def test_caffemodel_matches_caffe_reference(tmp_path, caffe_case):
    path = tmp_path / "bvlc_alexnet.caffemodel"
    path.write_bytes(caffemodel_bytes(caffe_case.blobs, v1_layers=False))
    model = keras_alexnet.build(input_shape=(CAFFE_SIZE, CAFFE_SIZE, 3), weights=path)
    assert_logits_close(logits(model, caffe_case.images), caffe_case.reference)
    old = tmp_path / "old.caffemodel"
    old.write_bytes(caffemodel_bytes(caffe_case.blobs, v1_layers=True))
    assert_same_weights(weights.read_weights(old), caffe_case.source)


def test_caffemodel_parser_reads_real_float_fields():
    """Packed and unpacked `repeated float data`, as protobuf itself encodes them."""
    proto = caffe_proto_classes(data_as_bytes=False)
    values = np.arange(-3, 3, 0.5, dtype=np.float32)
    blob = proto["BlobProto"]()
    blob.shape.dim.extend([3, 4])
    blob.data.extend(values.tolist())
    net = proto["NetParameter"]()
    net.layer.add(name="conv1").blobs.append(blob)
    parsed = weights.read_caffemodel_bytes(net.SerializeToString())
    np.testing.assert_array_equal(parsed["conv1"][0], values.reshape(3, 4))
    # Unpacked: each float its own field (wire type 5), which parsers must accept too.
    unpacked = b"".join(bytes([5 << 3 | 5]) + v.tobytes() for v in values)
    blob_bytes = bytes([7 << 3 | 2, 2, 1 << 3 | 0, 12]) + unpacked  # shape {dim: 12}, then the floats
    layer_bytes = bytes([1 << 3 | 2, 5]) + b"conv1" + bytes([7 << 3 | 2, len(blob_bytes)]) + blob_bytes
    net_bytes = bytes([0xA2, 0x06, len(layer_bytes)]) + layer_bytes  # key of field 100, wire type 2: varint 802
    np.testing.assert_array_equal(weights.read_caffemodel_bytes(net_bytes)["conv1"][0], values)


def test_not_a_caffemodel(tmp_path):
    path = tmp_path / "bad.caffemodel"
    path.write_bytes(b"\xff\xff\xff")
    with pytest.raises(UsageError, match="caffemodel"):
        weights.read_weights(path)


def test_fine_tuning_keeps_fc8_and_include_top_false(caffe_case):
    model = keras_alexnet.build(num_classes=10, input_shape=(CAFFE_SIZE, CAFFE_SIZE, 3), weights=caffe_case.npz, seed=0)
    np.testing.assert_array_equal(model.get_layer("fc7").get_weights()[0], caffe_case.source.layers["fc7"][0])
    assert model.get_layer("fc8").get_weights()[0].shape == (4096, 10)
    features = keras_alexnet.build(include_top=False, input_shape=(131, 131, 3), weights=caffe_case.npz)  # any size without fc6
    np.testing.assert_array_equal(features.get_layer("conv5").get_weights()[0], caffe_case.source.layers["conv5"][0])


def test_caffe_net_without_columns(tmp_path, caffe_case):
    """A Caffe AlexNet without `group: 2` (conv2 sees all 96 maps) loads into groups=1."""
    rng = np.random.default_rng(5)
    blobs = dict(caffe_case.blobs)
    for name, out, fan_in, k in (("conv2", 256, 96, 5), ("conv4", 384, 384, 3), ("conv5", 256, 384, 3)):
        blobs[name] = [0.01 * rng.standard_normal((out, fan_in, k, k), dtype=np.float32), np.zeros(out, np.float32)]
    path = tmp_path / "one_group.npz"
    save_caffe_npz(path, {name: blobs[name] for name in weights.LAYERS})
    source = weights.read_weights(path)
    assert source.groups == 1 and caffe_case.source.groups == 2
    with pytest.raises(UsageError, match="groups=1"):
        keras_alexnet.build(input_shape=(CAFFE_SIZE, CAFFE_SIZE, 3), include_top=False, weights=path)
    model = keras_alexnet.build(input_shape=(CAFFE_SIZE, CAFFE_SIZE, 3), groups=1, include_top=False, weights=path)
    np.testing.assert_array_equal(model.get_layer("conv4").get_weights()[0], blobs["conv4"][0].transpose(2, 3, 1, 0))


def test_mismatches_are_usage_errors(tmp_path, caffe_case):
    with pytest.raises(UsageError, match="groups=2"):
        keras_alexnet.build(input_shape=(CAFFE_SIZE, CAFFE_SIZE, 3), groups=1, include_top=False, weights=caffe_case.npz)
    with pytest.raises(UsageError, match="fc6"):
        keras_alexnet.build(input_shape=(67, 67, 3), weights=caffe_case.npz)
    with pytest.raises(UsageError, match="unknown weight file"):
        keras_alexnet.build(weights=tmp_path / "weights.bin")
    with pytest.raises(FileNotFoundError):
        keras_alexnet.build(weights=tmp_path / "missing.npz")
    partial = tmp_path / "partial.npz"
    save_caffe_npz(partial, {name: caffe_case.blobs[name] for name in ("conv1", "conv2")})
    with pytest.raises(UsageError, match="no weights for conv3"):
        weights.read_weights(partial)


def test_caffe_at_227(tmp_path):
    """The real size: pool5 6x6, fc6 9216 inputs, default 227 input."""
    blobs = random_caffe_blobs(pool5=6, seed=3)
    images = random_images(227, count=1)
    path = tmp_path / "bvlc_alexnet.npz"
    save_caffe_npz(path, blobs)
    model = keras_alexnet.build(weights=path)
    assert_logits_close(logits(model, images), caffe_forward(blobs, images))


# --- torchvision ---------------------------------------------------------------------------------


def torchvision_alexnet(torch):
    """torchvision.models.alexnet's layout (same state_dict keys), built from torch.nn alone."""
    nn = torch.nn

    class AlexNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
                nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
                nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(), nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
                nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2),
            )
            self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
            self.classifier = nn.Sequential(
                nn.Dropout(0.5), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(), nn.Dropout(0.5), nn.Linear(4096, 4096), nn.ReLU(),
                nn.Linear(4096, 1000),
            )

        def forward(self, x):
            return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))

    return AlexNet()


def test_torchvision_state_dict_matches_torch(tmp_path):
    torch = pytest.importorskip("torch", reason="torch is not installed (pip install 'keras_alexnet[torch]')")
    torch.manual_seed(0)
    net = torchvision_alexnet(torch).eval()
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
                shrink = 0.1 if module is net.classifier[6] else 1.0  # logits of a few units
                module.weight.normal_(0, shrink * (2.0 / module.weight[0].numel()) ** 0.5)
                module.bias.normal_(0, 0.1 * shrink)
    path = tmp_path / "alexnet.pth"
    torch.save(net.state_dict(), path)
    images = random_images(224)
    mean, std = np.asarray(layers.TORCHVISION_MEAN_RGB), np.asarray(layers.TORCHVISION_STD_RGB)
    torch_input = torch.from_numpy(((images / 255.0 - mean) / std).transpose(0, 3, 1, 2).astype(np.float32))
    with torch.no_grad():
        reference = net(torch_input).numpy()
    model = keras_alexnet.build(variant="one_column", input_shape=(224, 224, 3), weights=path)
    assert weights.convention_of_model(model) == "torchvision"
    assert_logits_close(logits(model, images), reference)


def test_a_pth_file_torch_cannot_read_is_one_line(tmp_path):
    # Junk named .pth raised a KeyError out of torch's unpickler; a cut-short download a RuntimeError.
    torch = pytest.importorskip("torch", reason="torch is not installed (pip install 'keras_alexnet[torch]')")
    buffer = io.BytesIO()
    torch.save({"features.0.weight": torch.zeros(64, 3, 11, 11)}, buffer)
    for name, content in (("junk.pth", b"junk\n"), ("cut.pth", buffer.getvalue()[:2000])):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(UsageError, match=rf"^{tmp_path / name}: not a file torch.load can read \(\w+: .*\): pass "
                                             "torchvision's alexnet state_dict as torch.save wrote it"):
            weights.read_weights(tmp_path / name)


def test_npz_and_npy_files_numpy_cannot_read_are_one_line(tmp_path):
    # Junk .npz: NumPy's ValueError suggested allow_pickle; a cut-short .npz a BadZipFile.
    good = tmp_path / "good.npz"
    np.savez(good, **{"conv1/weights": np.zeros((96, 3, 11, 11), np.float32), "conv1/biases": np.zeros(96, np.float32)})
    cases = {"junk.npz": (b"junk\n", "not an .npz archive \\(an .npz is a zip file of arrays\\)"),
             "cut.npz": (good.read_bytes()[:3000], "not an .npz archive \\(an .npz is a zip file of arrays\\)"),
             "junk.npy": (b"junk\n", "not a .npy file NumPy can read \\(")}
    for name, (content, message) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(UsageError, match=f"^{tmp_path / name}: {message}"):
            weights.read_weights(tmp_path / name)


def test_torch_load_refuses_arbitrary_pickles(tmp_path):
    torch = pytest.importorskip("torch", reason="torch is not installed (pip install 'keras_alexnet[torch]')")
    path = tmp_path / "evil.pth"
    buffer = io.BytesIO()
    torch.save({"features.0.weight": torch.zeros(1), "hook": _RunsCode()}, buffer)
    path.write_bytes(buffer.getvalue())
    with pytest.raises(UsageError, match="weights_only"):
        weights.read_weights(path)


# --- scripts/convert_weights.py ------------------------------------------------------------------


def test_convert_weights_script(tmp_path, caffe_case):
    """The script's .keras output computes what Caffe computed; its errors are one line."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = os.path.join(root, "scripts", "convert_weights.py")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    output, npz = tmp_path / "bvlc_alexnet.keras", tmp_path / "bvlc_alexnet_safe.npz"
    done = subprocess.run([sys.executable, script, f"--input={caffe_case.npz}", f"--output={output}", f"--output_npz={npz}"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "caffe weights, variant paper" in done.stdout
    # The .keras file carries Caffe's conventions: build(weights=...) picks them up (and reads the
    # file with keras.saving.load_model).
    assert weights.convention_of(output) == "caffe"
    model = keras_alexnet.build(input_shape=(CAFFE_SIZE, CAFFE_SIZE, 3), weights=output)
    assert_logits_close(logits(model, caffe_case.images), caffe_case.reference)
    # --output_npz writes Caffe's own layout, pickle-free: the same arrays as the source.
    with np.load(npz) as archive:
        for name, (w, b) in caffe_case.blobs.items():
            np.testing.assert_array_equal(archive[f"{name}/weights"], w)
            np.testing.assert_array_equal(archive[f"{name}/biases"], b)
    done = subprocess.run([sys.executable, script, f"--input={caffe_case.npz}", "--output=model.h5"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 2 and done.stderr.strip().startswith("error:") and "Traceback" not in done.stderr
    # A write that fails (here: files capped at 1 MB, as a full disk would) leaves the file it was to
    # replace as it was, and no partial file: model.save wrote over it in place before.
    output.write_bytes(b"an earlier conversion")
    done = subprocess.run([sys.executable, script, f"--input={caffe_case.npz}", f"--output={output}"], capture_output=True,
                          text=True, env=env, timeout=300, preexec_fn=_file_size_limit(1_000_000))
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert output.read_bytes() == b"an earlier conversion"
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(["bvlc_alexnet.keras", "bvlc_alexnet_safe.npz"])
    # Said with the flag's name, before the work (a missing folder was named by the temporary file's
    # path; a folder that is not a run by --model_dir, a flag this script does not have).
    (tmp_path / "photos").mkdir()
    for arguments, message in [
            ((f"--input={caffe_case.npz}", "--output=/proc/no_such_folder/a.keras"),
             "error: the folder of --output=/proc/no_such_folder is not writable ("),
            ((f"--input={tmp_path / 'photos'}", f"--output={tmp_path / 'b.keras'}"),
             f"error: --input={tmp_path / 'photos'} is a folder but not a training run (no config.json): pass a run's "
             "--model_dir, or a weight file (.caffemodel, .npz, .npy, .pth, .pt).\n")]:
        done = subprocess.run([sys.executable, script, *arguments], capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 2 and done.stderr.startswith(message), done.stderr[-2000:]


def _file_size_limit(limit_bytes):
    """For a child process: writes past `limit_bytes` in one file fail (EFBIG), as on a full disk."""
    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    return apply
