"""Export a trained AlexNet as a SavedModel for TensorFlow Serving.

    saved_models/alexnet/<N>/
      saved_model.pb, variables/        the model and its signatures
      assets.extra/tf_serving_warmup_requests
                                        a few real Predict requests (TFRecord of PredictionLog)
                                        that TF Serving runs before it takes traffic

Signatures (see docs/serving.md):
    serving_default  image_bytes: string [N], encoded JPEG/PNG/GIF/BMP images of any size.
                     Each image is preprocessed in the graph with `augment.decode_for_view` and
                     `center_view`, the functions evaluation's centre view calls (§4.1, §6):
                     shorter side to round(256*S/227) (large JPEGs decoded at reduced scale),
                     central S x S crop, ImageNet mean subtracted.
    predict_images   images: float32 [N, S, S, 3], already preprocessed (the model's input).
Both return probabilities float32 [N, classes], top_k_indices int32 [N, k], top_k_scores float32
[N, k] and top_k_labels string [N, k] (the class names are constants in the graph); k = min(5,
classes).

The export needs only TensorFlow to load (`tf.saved_model.load`, TF Serving): no Keras, no
keras_alexnet, no XLA-only function (the model's layers avoid Keras' XLA-wrapped grouped
convolution, docs/platform.md).
"""

import os
import shlex
import time
import uuid

import keras
import numpy as np
import tensorflow as tf

from keras_alexnet import augment
from keras_alexnet.errors import UsageError, counted, first_line, require_tensorflow_backend
from keras_alexnet.evaluation import TOP_K
from keras_alexnet.image_folder import DECODED_FORMATS
from keras_alexnet.run_lease import SETTLE_SECONDS, claims_need_settling

SERVING_SIGNATURE = "serving_default"
IMAGES_SIGNATURE = "predict_images"
IMAGE_BYTES_INPUT = "image_bytes"
IMAGES_INPUT = "images"
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
STAGING_PREFIX = ".tmp-export-"  # an export's folder until it is complete (export_saved_model)


class ServingModule(tf.Module):
    """The exported object: the model, its class names and the serving functions.

    Also usable in memory (scripts/predict.py with --model_dir calls `serve_image_bytes`), so a
    model_dir and its export answer the same request with the same numbers.
    """

    def __init__(self, model, class_names, image_size=None, mean_image=None, top_k=TOP_K):
        super().__init__(name="alexnet_serving")
        num_classes = int(model.output_shape[-1])
        if len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for a model with {num_classes} classes.")
        model_size = model.input_shape[1]
        image_size = int(image_size or model_size)
        if model_size is not None and image_size != model_size:
            raise ValueError(f"image_size={image_size} but the model takes {model_size}x{model_size} images.")
        self.model = model
        self.class_names = [str(name) for name in class_names]
        self.image_size = image_size
        self.top_k = min(top_k, num_classes)
        # A per-pixel mean image (§2) becomes a graph constant; None: the per-channel mean.
        self._mean_image = None if mean_image is None else np.asarray(mean_image, np.float32)

        self.serve_image_bytes = tf.function(
            self._serve_image_bytes,
            input_signature=[tf.TensorSpec([None], tf.string, name=IMAGE_BYTES_INPUT)],
        )
        self.serve_images = tf.function(
            self._serve_images,
            input_signature=[tf.TensorSpec([None, image_size, image_size, 3], tf.float32, name=IMAGES_INPUT)],
        )
        # Not a signature (TF Serving ignores it): what a Python caller of the export needs.
        self.metadata = tf.function(self._metadata, input_signature=[])

    def preprocess(self, image_bytes):
        """string [N] of encoded images -> float32 [N, S, S, 3], evaluation's centre view.

        Bytes that are not an image fail the request with InvalidArgumentError (TF Serving:
        INVALID_ARGUMENT, REST status 400) naming the item: "image_bytes[i] is not ...".
        """

        def one(args):
            index, encoded = args
            check = tf.debugging.Assert(
                _has_image_signature(encoded),
                [tf.strings.format("image_bytes[{}] is not a " + DECODED_FORMATS + " image", index)],
            )
            with tf.control_dependencies([check]):
                image = augment.decode_for_view(tf.identity(encoded), self.image_size)
            return augment.center_view(image, self.image_size, self._mean_image)

        indices = tf.range(tf.shape(image_bytes)[0])
        return tf.map_fn(
            one, (indices, image_bytes),
            fn_output_signature=tf.TensorSpec([self.image_size, self.image_size, 3], tf.float32),
        )

    def _serve_image_bytes(self, image_bytes):
        return self._serve_images(self.preprocess(image_bytes))

    def _serve_images(self, images):
        logits = self.model(images, training=False)
        probabilities = tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)
        scores, indices = tf.math.top_k(probabilities, k=self.top_k)
        labels = tf.gather(tf.constant(self.class_names, tf.string), indices)
        return {
            "probabilities": probabilities,
            "top_k_indices": indices,
            "top_k_scores": scores,
            "top_k_labels": labels,
        }

    def _metadata(self):
        return {
            "class_names": tf.constant(self.class_names, tf.string),
            "image_size": tf.constant(self.image_size, tf.int32),
        }

    def signatures(self):
        return {
            SERVING_SIGNATURE: self.serve_image_bytes.get_concrete_function(),
            IMAGES_SIGNATURE: self.serve_images.get_concrete_function(),
        }


def _has_image_signature(encoded):
    """Whether the bytes start like a format tf.io.decode_image reads (its magic numbers)."""
    head = tf.strings.substr(encoded + b"\0" * 12, 0, 12)  # padded: substr fails past the end
    return tf.reduce_any(tf.stack([
        tf.io.is_jpeg(encoded),
        tf.strings.substr(head, 0, 4) == b"\x89PNG",
        tf.strings.substr(head, 0, 3) == b"GIF",
        tf.strings.substr(head, 0, 2) == b"BM",
        (tf.strings.substr(head, 0, 4) == b"RIFF") & (tf.strings.substr(head, 8, 4) == b"WEBP"),
    ]))


def _computing_layers(model):
    return [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]


# What an export computes in: float32 (the default: every CPU server runs it at full speed) or
# mixed_bfloat16 (opt-in, for servers with bfloat16 units: AVX512-BF16/AMX CPUs, recent GPUs).
EXPORT_PRECISIONS = ("float32", "mixed_bfloat16")


def precision_copy(model, precision="float32"):
    """The model computing in `precision` (EXPORT_PRECISIONS) with the same float32 weights; the
    model itself if it already does.

    A model trained under mixed_float16/mixed_bfloat16 would otherwise export float16/bfloat16
    ops, which CPU servers without those units run slowly or not at all (docs/platform.md); a
    float32 model exported for a bfloat16 server gets bfloat16 convolutions and matmuls (LRN and
    softmax stay float32, as in training).
    """
    if precision not in EXPORT_PRECISIONS:
        raise UsageError(f"--precision={precision!r}: an export computes in one of {', '.join(EXPORT_PRECISIONS)}.")
    compute = "float32" if precision == "float32" else "bfloat16"
    if all(layer.compute_dtype == compute for layer in _computing_layers(model)):
        return model

    def clone_layer(layer):
        config = layer.get_config()
        config["dtype"] = precision
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone_layer)
    copy.set_weights(model.get_weights())
    return copy


def export_saved_model(model, export_base, *, class_names, image_size=None, version=None,
                       mean_image=None, warmup_images=None, model_name=None, precision="float32"):
    """Write `model` as TF Serving version `export_base/<version>` and return that path.

    Args:
        model: a built AlexNet (logits out), exported to compute in `precision` whatever its own.
        export_base: the model's base path for TF Serving, e.g. "saved_models/alexnet".
        class_names: one name per class, in the model's output order (stored in the graph).
        image_size: the model's input side S (default: read from the model).
        version: integer version; None takes the next free one (1 + the largest existing).
            An existing version is never overwritten: UsageError.
        mean_image: the per-pixel mean image the model was trained with (§2), or None for the
            per-channel ImageNet mean (the project's default).
        warmup_images: encoded images (bytes) for the warm-up requests; None makes a JPEG and a
            PNG of different sizes. At most a few: every record runs at server start.
        model_name: the model name in the warm-up requests (default: basename of export_base).
        precision: "float32" (default) or "mixed_bfloat16", for throughput-bound servers with
            bfloat16 units (1.3-1.4x the float32 export's images/s at batch 64 on an AVX512-BF16
            CPU, but a higher batch-1 latency; docs/performance.md). Inputs and outputs stay
            float32 either way.

    The SavedModel is written to a hidden folder inside export_base (TF Serving ignores names
    that are not integers) and renamed into place, so a half-written version never appears. A
    write that fails (a file where a folder should be, a full disk) is UsageError in one line.
    """
    require_tensorflow_backend("keras_alexnet.export_saved_model")
    export_base = str(export_base)
    if version is not None:
        version = int(version)
        if version < 0:
            raise UsageError(f"--version={version}: versions are non-negative integers.")
        if tf.io.gfile.exists(os.path.join(export_base, str(version))):
            raise UsageError(f"{os.path.join(export_base, str(version))} exists: versions are never overwritten; "
                             "pass another --version or none for the next free one.")
    module = ServingModule(precision_copy(model, precision), class_names, image_size, mean_image)
    model_name = model_name or os.path.basename(os.path.normpath(export_base))
    if warmup_images is None:
        warmup_images = default_warmup_images()

    staging = os.path.join(export_base, f"{STAGING_PREFIX}{uuid.uuid4().hex}")
    try:
        tf.io.gfile.makedirs(export_base)
        tf.saved_model.save(module, staging, signatures=module.signatures())
        write_warmup_requests(os.path.join(staging, WARMUP_FILE), warmup_images, model_name)
        return _move_into_place(staging, export_base, version)
    except (OSError, tf.errors.OpError) as error:
        raise UsageError(f"could not export to {export_base} ({first_line(error)})") from None
    finally:
        if tf.io.gfile.exists(staging):
            tf.io.gfile.rmtree(staging)


def leftover_exports(export_base, older_than=600.0, now=None):
    """[(path, bytes)] of the staging folders in export_base of exports that never finished: a
    process killed with SIGKILL (the kernel's out-of-memory killer, say) or a machine that lost
    power leaves its folder behind, a whole SavedModel each. Only folders untouched for
    `older_than` seconds count, so that an export being written now is not one of them."""
    if not tf.io.gfile.isdir(export_base):
        return []
    now = time.time() if now is None else now
    found = []
    for name in sorted(tf.io.gfile.listdir(export_base)):
        path = os.path.join(export_base, name.rstrip("/"))
        if not name.startswith(STAGING_PREFIX) or not tf.io.gfile.isdir(path):
            continue
        try:
            stats = [tf.io.gfile.stat(os.path.join(folder, file))
                     for folder, _, names in tf.io.gfile.walk(path) for file in names]
            newest = max([stat.mtime_nsec for stat in stats] + [tf.io.gfile.stat(path).mtime_nsec]) / 1e9
        except tf.errors.NotFoundError:  # an export that just finished or failed, and removed it
            continue
        if now - newest >= older_than:
            found.append((path, sum(stat.length for stat in stats)))
    return found


def leftover_note(export_base, **kwargs):
    """One line about `leftover_exports` and how to free their space ('' when there are none)."""
    found = leftover_exports(export_base, **kwargs)
    if not found:
        return ""
    size = sum(length for _, length in found) / 1e6
    return (f"note: {export_base} holds {counted(len(found), 'unfinished export')} ({size:,.0f} MB) "
            f"left by processes killed while exporting; TF Serving ignores them: delete them to free the space "
            f"(rm -r {shlex.quote(os.path.join(export_base, STAGING_PREFIX))}*).")


def existing_versions(export_base):
    """The integer version folders in export_base, sorted."""
    if not tf.io.gfile.isdir(export_base):
        return []
    names = (name.rstrip("/") for name in tf.io.gfile.listdir(export_base))
    return sorted(int(name) for name in names if name.isdigit())


def _move_into_place(staging, export_base, version):
    """Rename the finished `staging` folder to export_base/<version> (the next free one if None).

    The rename claims the version number: a local rename of a folder is atomic, and it fails when
    the target exists -- overwrite=False checks first (AlreadyExistsError), and when another export
    renames its folder into place between that check and this rename, rename(2) itself refuses to
    replace a folder that is not empty (FailedPreconditionError, "Directory not empty"). Either way
    the number is taken, and the next one is tried. So two exports at once never share a version.
    On object stores the number is claimed first (`_claim_version`).
    """
    taken = 0  # version numbers another export claimed while this one tried them
    while True:
        target_version = version if version is not None else max(existing_versions(export_base) + [taken], default=0) + 1
        target = os.path.join(export_base, str(target_version))
        claimed = claims_need_settling(export_base)
        if claimed and not _claim_version(export_base, target_version):
            if version is not None:
                raise UsageError(f"another export is writing {target}: pass another --version.")
            taken = target_version
            continue
        try:
            tf.io.gfile.rename(staging, target, overwrite=False)
            return target
        except (tf.errors.AlreadyExistsError, tf.errors.FailedPreconditionError):
            if not tf.io.gfile.exists(target):
                raise  # not a version taken meanwhile
            if version is not None:
                raise UsageError(f"{target} exists: versions are never overwritten; pass another --version.") from None
            # Another export took this number in the meantime: take the next one.
        finally:
            if claimed:
                _drop_claim(export_base, target_version)


def _claim_file(export_base, version):
    return os.path.join(export_base, f".claim-{version}")


def _claim_version(export_base, version, settle_seconds=SETTLE_SECONDS):
    """On object stores (gs://), where renaming a folder copies object by object and nothing is
    atomic, claim a version number before moving into it: write a claim file, wait, read it back;
    of several exports claiming at once the last writer wins and the others try the next number
    (run_lease does the same for model_dir). False when another export holds the claim."""
    claim = _claim_file(export_base, version)
    if tf.io.gfile.exists(claim) or tf.io.gfile.exists(os.path.join(export_base, str(version))):
        return False
    token = uuid.uuid4().hex
    tmp = f"{claim}.{token}.tmp"
    with tf.io.gfile.GFile(tmp, "w") as f:
        f.write(token)
    tf.io.gfile.rename(tmp, claim, overwrite=True)
    time.sleep(settle_seconds)
    with tf.io.gfile.GFile(claim) as f:
        return f.read() == token


def _drop_claim(export_base, version):
    try:
        tf.io.gfile.remove(_claim_file(export_base, version))
    except tf.errors.NotFoundError:
        pass


def default_warmup_images():
    """A JPEG (320x256) and a PNG (200x300) with smooth colour gradients: real decodes of both
    formats, two aspect ratios, so the warm-up exercises the whole preprocessing graph."""
    images = []
    for height, width, encode in ((256, 320, tf.io.encode_jpeg), (300, 200, tf.io.encode_png)):
        rows = np.linspace(0, 255, height)[:, None]
        cols = np.linspace(0, 255, width)[None, :]
        pixels = np.stack([rows + 0 * cols, cols + 0 * rows, (rows + cols) / 2], axis=-1).astype(np.uint8)
        images.append(encode(pixels).numpy())
    return images


def write_warmup_requests(path, images, model_name, signature_name=SERVING_SIGNATURE):
    """Write TF Serving's warm-up file: one Predict request per image, and one with all of them
    as a batch (so the batched shapes are warmed up too). Returns the number of records."""
    images = [bytes(image) for image in images]
    batches = [[image] for image in images]
    if len(images) > 1:
        batches.append(images)
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.TFRecordWriter(path) as writer:
        for batch in batches:
            inputs = {IMAGE_BYTES_INPUT: tf.make_tensor_proto(batch, dtype=tf.string, shape=[len(batch)])}
            writer.write(prediction_log(model_name, signature_name, inputs))
    return len(batches)


# tensorflow_serving/apis/*.proto field numbers. The records are encoded here by hand (protobuf
# wire format: tag = field_number << 3 | 2 for length-delimited fields) so that exporting needs
# only TensorFlow: tensorflow-serving-api requires the full `tensorflow` distribution and cannot
# sit next to tensorflow-cpu or tensorflow-tpu. tests/test_export.py parses the bytes with
# tensorflow-serving-api's own classes.
_PREDICTION_LOG_PREDICT_LOG = 6  # PredictionLog.predict_log (prediction_log.proto)
_PREDICT_LOG_REQUEST = 1  # PredictLog.request (prediction_log.proto)
_PREDICT_REQUEST_MODEL_SPEC = 1  # PredictRequest.model_spec (predict.proto)
_PREDICT_REQUEST_INPUTS = 2  # PredictRequest.inputs, map<string, TensorProto> (predict.proto)
_MAP_ENTRY_KEY, _MAP_ENTRY_VALUE = 1, 2  # a map entry is a message {key = 1; value = 2;}
_MODEL_SPEC_NAME = 1  # ModelSpec.name (model.proto)
_MODEL_SPEC_SIGNATURE_NAME = 3  # ModelSpec.signature_name (model.proto)


def _varint(value):
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number, payload):
    """A length-delimited field (string, bytes or message)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def prediction_log(model_name, signature_name, inputs):
    """A serialized tensorflow.serving.PredictionLog holding a PredictRequest.

    `inputs`: dict of input name -> tensorflow.TensorProto (tf.make_tensor_proto).
    """
    model_spec = _field(_MODEL_SPEC_NAME, model_name.encode()) + _field(_MODEL_SPEC_SIGNATURE_NAME, signature_name.encode())
    request = _field(_PREDICT_REQUEST_MODEL_SPEC, model_spec)
    for name in sorted(inputs):
        entry = _field(_MAP_ENTRY_KEY, name.encode()) + _field(_MAP_ENTRY_VALUE, inputs[name].SerializeToString())
        request += _field(_PREDICT_REQUEST_INPUTS, entry)
    return _field(_PREDICTION_LOG_PREDICT_LOG, _field(_PREDICT_LOG_REQUEST, request))


def check_saved_model(path):
    """FileNotFoundError naming the fix unless `path` is a SavedModel folder."""
    if not tf.saved_model.contains_saved_model(path):
        if tf.io.gfile.exists(os.path.join(path, "config.json")):
            raise FileNotFoundError(f"{path} is a training run, not a SavedModel: give it as --model_dir {path}, or "
                                    f"export it first with scripts/export.py --model_dir {path}")
        versions = [v for v in existing_versions(path) if tf.saved_model.contains_saved_model(os.path.join(path, str(v)))]
        if not versions:
            hint = "saved_models/alexnet/1."
        elif len(versions) == 1:
            hint = f"{os.path.join(path, str(versions[0]))} (its only version)."
        else:
            hint = f"{os.path.join(path, str(versions[-1]))} (the newest of its {len(versions)} versions)."
        raise FileNotFoundError(f"{path} is not a SavedModel folder: pass a version folder such as {hint}")


def load_saved_model(path):
    """Load an export of this module with TensorFlow alone.

    Returns (probabilities_fn, class_names, image_size); probabilities_fn maps preprocessed
    float32 images [N, S, S, 3] to probabilities through the `predict_images` signature. Call it
    under the strategy's scope to place the variables on every replica.
    """
    check_saved_model(path)
    loaded = tf.saved_model.load(path)
    if IMAGES_SIGNATURE not in loaded.signatures:
        raise FileNotFoundError(f"{path} has no {IMAGES_SIGNATURE!r} signature: export it with scripts/export.py.")
    signature = loaded.signatures[IMAGES_SIGNATURE]
    metadata = loaded.metadata()
    class_names = [name.decode() for name in metadata["class_names"].numpy()]
    image_size = int(metadata["image_size"].numpy())

    def probabilities(images):
        return signature(**{IMAGES_INPUT: images})["probabilities"]

    probabilities.saved_model = loaded  # keeps the variables alive
    return probabilities, class_names, image_size
