import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import tensorflow as tf

import keras_alexnet
from keras_alexnet import augment, distribute, export
from keras_alexnet.errors import UsageError

import graphs  # tests/graphs.py

SIZE = 67
CLASSES = ["cat", "dog", "café"]


def small_model(seed=0):
    model = keras_alexnet.build(num_classes=len(CLASSES), input_shape=(SIZE, SIZE, 3), seed=seed)
    # Sharpen fc8 so the probabilities are far from uniform: comparisons then mean something.
    kernel, bias = model.get_layer("fc8").get_weights()
    model.get_layer("fc8").set_weights([kernel * 300.0, bias])
    return model


def encoded_images():
    """A JPEG (90x120), a PNG (140x70) and a grayscale JPEG, with different content."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(90, 120, 3), dtype=np.uint8)
    stripes = np.zeros((140, 70, 3), np.uint8)
    stripes[::4] = (250, 10, 40)
    gray = np.tile(np.linspace(0, 255, 80, dtype=np.uint8)[:, None, None], (1, 100, 1))
    return [tf.io.encode_jpeg(rgb).numpy(), tf.io.encode_png(stripes).numpy(), tf.io.encode_jpeg(gray).numpy()]


def keras_probabilities(model, images):
    """What evaluation computes: decode, centre view, model, softmax."""
    views = tf.stack([augment.center_view(augment.decode_image(image), SIZE) for image in images])
    return tf.nn.softmax(model(views, training=False)).numpy(), views.numpy()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    base = tmp_path_factory.mktemp("saved_models") / "alexnet"
    model = small_model()
    path = export.export_saved_model(model, base, class_names=CLASSES)
    return model, base, path


def test_layout_and_version_numbers(exported, tmp_path):
    model, base, path = exported
    assert path == os.path.join(str(base), "1")
    assert sorted(os.listdir(path)) == ["assets", "assets.extra", "fingerprint.pb", "saved_model.pb", "variables"]
    assert os.path.isfile(os.path.join(path, "assets.extra", "tf_serving_warmup_requests"))
    # Next free integer; non-integer folders (TF Serving ignores them) do not count.
    base2 = tmp_path / "alexnet"
    (base2 / "3").mkdir(parents=True)
    (base2 / "notes").mkdir()
    assert export.export_saved_model(model, base2, class_names=CLASSES) == str(base2 / "4")
    with pytest.raises(UsageError, match="never overwritten"):
        export.export_saved_model(model, base2, class_names=CLASSES, version=4)
    # Nothing half-written is left behind, and version 4 is intact.
    assert sorted(os.listdir(base2)) == ["3", "4", "notes"]
    assert os.path.isfile(base2 / "4" / "saved_model.pb")
    # (An explicit free version is written in test_custom_warmup_images_and_model_name.)


def test_a_version_taken_meanwhile_is_not_overwritten(tmp_path, monkeypatch):
    # Another export renamed its version 1 into place after this one listed the folder.
    staging = tmp_path / ".tmp-export-x"
    staging.mkdir()
    (staging / "saved_model.pb").write_bytes(b"second")
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "saved_model.pb").write_bytes(b"first")
    listings = []
    real_listing = export.existing_versions

    def stale_then_real(base):
        listings.append(base)
        return [] if len(listings) == 1 else real_listing(base)

    monkeypatch.setattr(export, "existing_versions", stale_then_real)
    assert export._move_into_place(str(staging), str(tmp_path), None) == str(tmp_path / "2")
    assert (tmp_path / "1" / "saved_model.pb").read_bytes() == b"first"
    assert (tmp_path / "2" / "saved_model.pb").read_bytes() == b"second"
    (tmp_path / ".tmp-export-y").mkdir()
    with pytest.raises(UsageError, match="never overwritten"):
        export._move_into_place(str(tmp_path / ".tmp-export-y"), str(tmp_path), 2)


def test_a_version_taken_between_the_check_and_the_rename_is_not_overwritten(tmp_path, monkeypatch):
    # The race rename(overwrite=False) cannot see: its existence check passes, then another export
    # renames its version 1 into place before this rename runs, which then meets a folder that is
    # not empty ("Directory not empty", FailedPreconditionError) and must take the next number.
    staging = tmp_path / ".tmp-export-x"
    staging.mkdir()
    (staging / "saved_model.pb").write_bytes(b"second")
    other = tmp_path / ".tmp-export-other"
    other.mkdir()
    (other / "saved_model.pb").write_bytes(b"first")
    real_rename = tf.io.gfile.rename
    raced = []

    def rename_after_another_export(src, dst, overwrite=False):
        if not raced:
            raced.append(dst)
            os.rename(other, dst)  # the other export wins version 1 just now
            return real_rename(src, dst, overwrite=True)  # this one's check already passed
        return real_rename(src, dst, overwrite)

    monkeypatch.setattr(tf.io.gfile, "rename", rename_after_another_export)
    assert export._move_into_place(str(staging), str(tmp_path), None) == str(tmp_path / "2")
    assert raced == [str(tmp_path / "1")]
    assert (tmp_path / "1" / "saved_model.pb").read_bytes() == b"first"
    assert (tmp_path / "2" / "saved_model.pb").read_bytes() == b"second"


def test_on_object_stores_a_version_is_claimed_before_the_move(monkeypatch):
    # gs:// renames a folder object by object: two exports moving into one number would mix their
    # files. Each claims the number first (write, wait, read back: the last writer wins); here
    # another export's claim on version 1 lands while this one waits, so this one takes 2.
    base = f"ram://exports-{os.getpid()}/alexnet"
    staging = f"{base}/.tmp-export-x"
    tf.io.gfile.makedirs(staging)
    with tf.io.gfile.GFile(f"{staging}/saved_model.pb", "w") as f:
        f.write("mine")
    monkeypatch.setattr(export, "claims_need_settling", lambda path: True)
    waits = []

    def another_export_claims_meanwhile(seconds):
        waits.append(seconds)
        if len(waits) == 1:
            tf.io.gfile.remove(f"{base}/.claim-1")
            with tf.io.gfile.GFile(f"{base}/.claim-1", "w") as f:
                f.write("the other export")

    monkeypatch.setattr(export.time, "sleep", another_export_claims_meanwhile)
    assert export._move_into_place(staging, base, None) == f"{base}/2"
    assert len(waits) == 2
    # Version 2 is in place (ram:// renames a folder's own entry, not its files, so only its name
    # is checked) and this export's claim on it is gone; the claim on 1 is the other export's.
    assert sorted(name.rstrip("/") for name in tf.io.gfile.listdir(base)) == [".claim-1", "2"]


def test_staging_folder_is_removed_when_export_fails(tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(export, "write_warmup_requests", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        export.export_saved_model(small_model(), tmp_path / "alexnet", class_names=CLASSES)
    assert os.listdir(tmp_path / "alexnet") == []


def test_an_export_base_that_cannot_be_written_is_one_line(tmp_path):
    (tmp_path / "a_file").write_text("")  # a FailedPreconditionError traceback before
    with pytest.raises(UsageError) as failed:
        export.export_saved_model(small_model(), tmp_path / "a_file" / "alexnet", class_names=CLASSES)
    assert str(failed.value) == f"could not export to {tmp_path}/a_file/alexnet ({tmp_path}/a_file is not a directory)"


def test_signatures_dtypes_and_shapes(exported):
    _, _, path = exported
    loaded = tf.saved_model.load(path)
    assert set(loaded.signatures) == {"serving_default", "predict_images"}
    k = len(CLASSES)
    expected_outputs = {
        "probabilities": (tf.float32, [None, k]),
        "top_k_indices": (tf.int32, [None, k]),
        "top_k_scores": (tf.float32, [None, k]),
        "top_k_labels": (tf.string, [None, k]),
    }
    for name, (dtype, shape) in {"serving_default": (tf.string, [None]),
                                 "predict_images": (tf.float32, [None, SIZE, SIZE, 3])}.items():
        signature = loaded.signatures[name]
        (spec,) = signature.structured_input_signature[1].values()
        assert spec.dtype == dtype and spec.shape.as_list() == shape, name
        outputs = {key: (value.dtype, value.shape.as_list()) for key, value in signature.structured_outputs.items()}
        assert outputs == expected_outputs, name
    assert list(loaded.signatures["serving_default"].structured_input_signature[1]) == ["image_bytes"]
    assert list(loaded.signatures["predict_images"].structured_input_signature[1]) == ["images"]
    metadata = loaded.metadata()
    assert [name.decode() for name in metadata["class_names"].numpy()] == CLASSES
    assert int(metadata["image_size"]) == SIZE


def test_fresh_process_without_keras_alexnet_matches_keras_model(exported, tmp_path):
    model, _, path = exported
    images = encoded_images()
    expected, views = keras_probabilities(model, images)
    assert (expected.max(axis=1) > 0.6).all()  # not uniform: the comparison can fail
    np.save(tmp_path / "views.npy", views)
    with open(tmp_path / "images.bin", "wb") as f:
        f.write(b"".join(len(image).to_bytes(4, "big") + image for image in images))
    script = textwrap.dedent(f"""
        import sys
        import numpy as np
        import tensorflow as tf
        data, images = open({str(tmp_path / 'images.bin')!r}, "rb").read(), []
        while data:
            n = int.from_bytes(data[:4], "big"); images.append(data[4:4 + n]); data = data[4 + n:]
        loaded = tf.saved_model.load({path!r})
        out = loaded.signatures["serving_default"](image_bytes=tf.constant(images))
        np.save({str(tmp_path / 'bytes_probabilities.npy')!r}, out["probabilities"].numpy())
        np.save({str(tmp_path / 'labels.npy')!r}, [[b.decode() for b in row] for row in out["top_k_labels"].numpy()])
        views = tf.constant(np.load({str(tmp_path / 'views.npy')!r}))
        out = loaded.signatures["predict_images"](images=views)
        np.save({str(tmp_path / 'image_probabilities.npy')!r}, out["probabilities"].numpy())
        assert not any(name.startswith("keras_alexnet") for name in sys.modules), "imported keras_alexnet"
    """)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    np.testing.assert_allclose(np.load(tmp_path / "bytes_probabilities.npy"), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.load(tmp_path / "image_probabilities.npy"), expected, rtol=1e-5, atol=1e-6)
    top = np.argsort(-expected, axis=1, kind="stable")
    np.testing.assert_array_equal(np.load(tmp_path / "labels.npy"), np.array(CLASSES)[top])


def test_top_k_outputs_are_consistent(exported):
    _, _, path = exported
    out = tf.saved_model.load(path).signatures["serving_default"](image_bytes=tf.constant(encoded_images()))
    probabilities = out["probabilities"].numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)
    indices = out["top_k_indices"].numpy()
    np.testing.assert_array_equal(indices[:, 0], probabilities.argmax(axis=1))
    np.testing.assert_allclose(out["top_k_scores"].numpy(), np.take_along_axis(probabilities, indices, axis=1))
    assert (np.diff(out["top_k_scores"].numpy(), axis=1) <= 0).all()
    labels = out["top_k_labels"].numpy()
    assert [[label.decode() for label in row] for row in labels] == [[CLASSES[i] for i in row] for row in indices]


def test_top_k_is_five_for_many_classes(tmp_path):
    model = keras_alexnet.build(num_classes=8, input_shape=(SIZE, SIZE, 3), seed=1)
    module = export.ServingModule(model, [f"class{i}" for i in range(8)])
    out = module.serve_image_bytes(tf.constant(encoded_images()[:1]))
    assert out["top_k_indices"].shape == (1, 5) and out["probabilities"].shape == (1, 8)


def xla_must_compile(saved_model_path):
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(saved_model_path, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    return [name for meta_graph in proto.meta_graphs for name in graphs.xla_must_compile(meta_graph.graph_def)]


def test_no_function_requires_xla(exported, tmp_path):
    _, _, path = exported
    assert xla_must_compile(path) == []
    # The detector works: a function compiled with XLA is caught.
    module = tf.Module()
    module.f = tf.function(lambda x: x * 2.0, jit_compile=True, input_signature=[tf.TensorSpec([None], tf.float32)])
    tf.saved_model.save(module, str(tmp_path / "xla"))
    assert xla_must_compile(str(tmp_path / "xla")) != []


def test_not_an_image_is_invalid_argument_naming_the_item(exported):
    _, _, path = exported
    serve = tf.saved_model.load(path).signatures["serving_default"]
    good = encoded_images()[0]
    for bad in (b"not an image", b"", b"%PDF-1.4 a document"):
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"image_bytes\[1\] is not a JPEG, PNG"):
            serve(image_bytes=tf.constant([good, bad]))
    # A JPEG cut short still fails as INVALID_ARGUMENT (from the decoder), not a crash.
    with pytest.raises(tf.errors.InvalidArgumentError):
        serve(image_bytes=tf.constant([good[:40]]))
    assert serve(image_bytes=tf.constant([good]))["probabilities"].shape == (1, len(CLASSES))


def read_warmup(path):
    prediction_log_pb2 = pytest.importorskip("tensorflow_serving.apis.prediction_log_pb2")
    records = []
    for record in tf.data.TFRecordDataset(os.path.join(path, "assets.extra", "tf_serving_warmup_requests")):
        log = prediction_log_pb2.PredictionLog()
        log.ParseFromString(record.numpy())
        records.append(log)
    return records


def test_warmup_requests_parse_and_run(exported):
    _, base, path = exported
    records = read_warmup(path)
    assert 1 <= len(records) <= 1000
    serve = tf.saved_model.load(path).signatures["serving_default"]
    batch_sizes = []
    for log in records:
        assert log.WhichOneof("log_type") == "predict_log"
        request = log.predict_log.request
        assert request.model_spec.name == os.path.basename(str(base)) == "alexnet"
        assert request.model_spec.signature_name == "serving_default"
        assert list(request.inputs) == ["image_bytes"]
        tensor = request.inputs["image_bytes"]
        assert tensor.dtype == tf.string.as_datatype_enum
        images = tf.make_ndarray(tensor)
        batch_sizes.append(len(images))
        # What TF Serving does at load time: run the request through the signature.
        assert serve(image_bytes=tf.constant(images))["probabilities"].shape == (len(images), len(CLASSES))
    assert 1 in batch_sizes and max(batch_sizes) > 1
    formats = {bytes(image[:4]) for log in records for image in tf.make_ndarray(log.predict_log.request.inputs["image_bytes"])}
    assert b"\x89PNG" in formats and any(f.startswith(b"\xff\xd8\xff") for f in formats)


def test_prediction_log_encoding_matches_tensorflow_serving_protos():
    prediction_log_pb2 = pytest.importorskip("tensorflow_serving.apis.prediction_log_pb2")
    predict_pb2 = pytest.importorskip("tensorflow_serving.apis.predict_pb2")
    # Long enough for multi-byte length varints.
    inputs = {"image_bytes": tf.make_tensor_proto([b"x" * 300, b"y" * 70000], dtype=tf.string, shape=[2]),
              "extra": tf.make_tensor_proto(np.arange(6, dtype=np.float32).reshape(2, 3))}
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "alexnet"
    request.model_spec.signature_name = "serving_default"
    for name, tensor in inputs.items():
        request.inputs[name].CopyFrom(tensor)
    expected = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
    ours = prediction_log_pb2.PredictionLog()
    ours.ParseFromString(export.prediction_log("alexnet", "serving_default", inputs))
    assert ours == expected
    assert export.prediction_log("alexnet", "serving_default", inputs) == expected.SerializeToString(deterministic=True)


def test_custom_warmup_images_and_model_name(tmp_path):
    images = encoded_images()
    path = export.export_saved_model(small_model(), tmp_path / "base", class_names=CLASSES,
                                     warmup_images=images, model_name="alexnet_v2", version=0)
    records = read_warmup(path)
    assert len(records) == len(images) + 1
    assert {log.predict_log.request.model_spec.name for log in records} == {"alexnet_v2"}
    assert list(tf.make_ndarray(records[-1].predict_log.request.inputs["image_bytes"])) == images


def test_mixed_precision_model_exports_float32(policy, tmp_path):
    policy("mixed_float16")
    model = small_model()
    assert model.get_layer("conv1").compute_dtype == "float16"
    copy = export.precision_copy(model)
    assert all(layer.compute_dtype == "float32" for layer in copy.layers[1:])
    assert export.precision_copy(copy) is copy
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), copy.get_weights()))
    policy("float32")
    module = export.ServingModule(copy, CLASSES)
    expected, _ = keras_probabilities(copy, encoded_images())
    np.testing.assert_allclose(module.serve_image_bytes(tf.constant(encoded_images()))["probabilities"].numpy(),
                               expected, rtol=1e-5, atol=1e-6)
    assert tf.float16.as_datatype_enum not in graph_dtypes(module)
    # The check can fail: the model as trained computes in float16.
    assert tf.float16.as_datatype_enum in graph_dtypes(export.ServingModule(model, CLASSES))


def test_bfloat16_export_is_opt_in_and_answers_like_float32(tmp_path):
    model = small_model()
    images = encoded_images()
    base = tmp_path / "base"
    path32 = export.export_saved_model(model, base, class_names=CLASSES)
    path16 = export.export_saved_model(model, base, class_names=CLASSES, precision="mixed_bfloat16")
    answers = {}
    for path in (path32, path16):
        signature = tf.saved_model.load(path).signatures[export.SERVING_SIGNATURE]
        answers[path] = signature(image_bytes=tf.constant(images))
    assert answers[path16]["probabilities"].dtype == tf.float32  # clients see float32 either way
    np.testing.assert_allclose(answers[path16]["probabilities"].numpy(), answers[path32]["probabilities"].numpy(),
                               atol=2e-2)
    bf16_copy = export.precision_copy(model, "mixed_bfloat16")
    assert bf16_copy.get_layer("conv1").compute_dtype == "bfloat16"
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), bf16_copy.get_weights()))
    assert tf.bfloat16.as_datatype_enum in graph_dtypes(export.ServingModule(bf16_copy, CLASSES))
    assert tf.bfloat16.as_datatype_enum not in graph_dtypes(export.ServingModule(model, CLASSES))
    with pytest.raises(UsageError, match="mixed_float16"):
        export.precision_copy(model, "mixed_float16")


def graph_dtypes(module):
    return graphs.dtypes(module.serve_images.get_concrete_function().graph.as_graph_def())


def test_model_built_under_mirrored_strategy_exports(tmp_path):
    # The training engine exports the model it trained, whose variables are MirroredVariables.
    strategy = distribute.get_strategy("mirrored")
    assert strategy.num_replicas_in_sync == 2
    with strategy.scope():
        model = small_model()
    path = export.export_saved_model(model, tmp_path / "alexnet", class_names=CLASSES)
    expected, views = keras_probabilities(model, encoded_images())
    got = tf.saved_model.load(path).signatures["predict_images"](images=tf.constant(views))["probabilities"]
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_per_pixel_mean_image_is_used_in_the_graph():
    model = small_model()
    mean_image = np.random.default_rng(5).uniform(60, 160, size=(SIZE, SIZE, 3)).astype(np.float32)
    module = export.ServingModule(model, CLASSES, mean_image=mean_image)
    images = encoded_images()
    views = tf.stack([augment.center_view(augment.decode_image(image), SIZE, mean_image) for image in images])
    expected = tf.nn.softmax(model(views, training=False)).numpy()
    got = module.serve_image_bytes(tf.constant(images))["probabilities"].numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    preprocessed = module.preprocess(tf.constant(images)).numpy()
    np.testing.assert_allclose(preprocessed, views.numpy(), atol=1e-4)
    assert not np.allclose(preprocessed, keras_probabilities(model, images)[1], atol=1.0)


def test_class_names_must_match_the_model():
    with pytest.raises(ValueError, match="2 class names for a model with 3 classes"):
        export.ServingModule(small_model(), ["a", "b"])
    with pytest.raises(ValueError, match="image_size=99"):
        export.ServingModule(small_model(), CLASSES, image_size=99)


def test_saved_model_cli_show(exported):
    _, _, path = exported
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    if not os.path.exists(cli):
        pytest.skip("saved_model_cli is not installed next to this Python")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    shown = subprocess.run([cli, "show", "--dir", path, "--all"], check=True, capture_output=True, text=True, env=env).stdout
    serving = shown.split("signature_def['serving_default']")[1]
    images = shown.split("signature_def['predict_images']")[1].split("signature_def[")[0]
    assert "inputs['image_bytes']" in serving and "dtype: DT_STRING" in serving and "shape: (-1)" in serving
    assert "inputs['images']" in images and "dtype: DT_FLOAT" in images and f"shape: (-1, {SIZE}, {SIZE}, 3)" in images
    for output, dtype in (("probabilities", "DT_FLOAT"), ("top_k_indices", "DT_INT32"),
                          ("top_k_scores", "DT_FLOAT"), ("top_k_labels", "DT_STRING")):
        block = serving.split(f"outputs['{output}']")[1].split("outputs[")[0]
        assert f"dtype: {dtype}" in block and f"shape: (-1, {len(CLASSES)})" in block
    assert "Method name is: tensorflow/serving/predict" in serving


def test_unfinished_exports_left_by_killed_processes_are_noted_not_deleted(tmp_path):
    base = tmp_path / "alexnet"
    old = base / f"{export.STAGING_PREFIX}0123abcd"  # a SavedModel half written, an hour ago
    (old / "variables").mkdir(parents=True)
    (old / "variables" / "variables.data-00000-of-00001").write_bytes(b"x" * 3_000_000)
    (old / "saved_model.pb").write_bytes(b"x" * 500_000)
    hour_ago = time.time() - 3600
    for path in (old / "variables" / "variables.data-00000-of-00001", old / "saved_model.pb", old / "variables", old):
        os.utime(path, (hour_ago, hour_ago))
    (base / f"{export.STAGING_PREFIX}4567ef01").mkdir()  # being written right now by another export
    (base / "1").mkdir()
    assert export.leftover_exports(str(base)) == [(str(old), 3_500_000)]
    assert export.leftover_note(str(base)) == (
        f"note: {base} holds 1 unfinished export (4 MB) left by processes killed while exporting; TF Serving "
        f"ignores them: delete them to free the space (rm -r {base}/{export.STAGING_PREFIX}*).")
    assert old.is_dir()  # only said: deleting is the user's call
    assert export.leftover_note(str(tmp_path / "none")) == ""
    spaced = tmp_path / "my models" / "alexnet"  # the command stays one a shell runs as meant
    (spaced / old.name).mkdir(parents=True)
    os.utime(spaced / old.name, (hour_ago, hour_ago))
    assert export.leftover_note(str(spaced)).endswith(f"(rm -r '{spaced}/{export.STAGING_PREFIX}'*).")
