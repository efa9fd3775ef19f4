"""scripts/export.py, evaluate.py, predict.py and serving_client.py, end to end on a tiny run."""

import ast
import base64
import concurrent.futures
import http.server
import importlib.util
import json
import logging
import os
import re
import subprocess
import sys
import threading

import numpy as np
import pytest
from PIL import Image
import tensorflow as tf

import keras_alexnet
from keras_alexnet import augment, checkpoints, data, export, shapes
from keras_alexnet import image_folder

import graphs  # tests/graphs.py

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 67
DATASET = "shapes:train=8,validation=11,size=40"
CLASSES = list(shapes.CLASS_NAMES)
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
# predict.py runs with its own log level, so that what a user sees is what the test sees.
OWN_LOG_LEVEL = {name: value for name, value in os.environ.items() if name != "TF_CPP_MIN_LOG_LEVEL"}


def write_model_dir(model_dir, seed=0, answer=None):
    """A model_dir as the training engine writes it: config.json and a CheckpointManager checkpoint.
    With `answer` (a class index) the model answers that class for every image."""
    model = keras_alexnet.build(num_classes=len(CLASSES), input_shape=(SIZE, SIZE, 3), seed=seed)
    kernel, bias = model.get_layer("fc8").get_weights()
    model.get_layer("fc8").set_weights([kernel * 300.0, bias])  # confident, so the comparisons mean something
    if answer is not None:
        model.get_layer("fc8").set_weights([kernel * 0.0, np.eye(len(CLASSES))[answer] * 10.0])
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(model=model), checkpoints.checkpoint_dir(model_dir), max_to_keep=1)
    manager.save(checkpoint_number=5)
    checkpoints.write_config(model_dir, {
        "variant": "paper", "groups": 2, "image_size": SIZE, "num_classes": len(CLASSES), "class_names": CLASSES,
        "dataset": DATASET, "init": "caffe", "batch_size": 4, "precision": "float32",
    })
    return model


def test_a_given_checkpoint_is_found_by_name_and_a_wrong_one_is_one_line(tmp_path):
    write_model_dir(str(tmp_path / "run"))
    named = str(tmp_path / "run" / "checkpoints" / "ckpt-5")
    _, config = checkpoints.restore_model(str(tmp_path / "run"), "ckpt-5")  # a name in model_dir/checkpoints
    assert config["restored_checkpoint"] == named
    with pytest.raises(FileNotFoundError) as missing:
        checkpoints.restore_model(str(tmp_path / "run"), "nonsense")  # a NotFoundError traceback before
    assert str(missing.value) == (f"--checkpoint=nonsense: no such checkpoint (no nonsense.index); {tmp_path}/run/checkpoints "
                                  "has ckpt-5: pass one of those, or leave --checkpoint out for the newest.")
    # Another run's checkpoint, with one class more (and, like a training run's, a step beside the
    # model): one line, and none of the warnings about unused values that TensorFlow logs when a
    # failed restore is collected (25 lines for a training run's checkpoint).
    other = keras_alexnet.build(num_classes=len(CLASSES) + 1, input_shape=(SIZE, SIZE, 3), seed=1)
    prefix = tf.train.Checkpoint(model=other, step=tf.Variable(9)).write(str(tmp_path / "other" / "ckpt-9"))
    logged = logging.Handler()
    logged.messages = []
    logged.emit = lambda record: logged.messages.append(record.getMessage())
    tf.get_logger().addHandler(logged)
    try:
        with pytest.raises(FileNotFoundError, match=r"cannot be read into this run's model \(Received incompatible tensor"):
            checkpoints.restore_model(str(tmp_path / "run"), prefix)
    finally:
        tf.get_logger().removeHandler(logged)
    assert not [message for message in logged.messages if "could not be found" in message]


def run_script(name, *args, env=ENV):
    return subprocess.run([sys.executable, os.path.join(ROOT, "scripts", name), *map(str, args)],
                          capture_output=True, text=True, env=env, cwd=ROOT)


def error_lines(stderr):
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def write_images(folder):
    rng = np.random.default_rng(3)
    photo = rng.integers(0, 256, size=(90, 120, 3), dtype=np.uint8)
    stripes = np.zeros((140, 70, 3), np.uint8)
    stripes[::4] = (250, 10, 40)
    paths = {"photo.jpg": tf.io.encode_jpeg(photo).numpy(), "stripes.png": tf.io.encode_png(stripes).numpy(),
             "notes.txt": b"this is not an image\n"}
    for name, content in paths.items():
        (folder / name).write_bytes(content)
    return {name: str(folder / name) for name in paths}


def predict_args(images):
    missing = os.path.join(os.path.dirname(images["photo.jpg"]), "missing.jpg")
    return [images["photo.jpg"], images["notes.txt"], missing, images["stripes.png"]]


def evaluate_args(root, source, crops, strategy):
    """(arguments, output path) of an evaluate.py run: model_dir with its own dataset, or an export."""
    output = root / "evaluations" / f"eval_{source}_{crops}.json"  # not beside the image files predict.py reads
    source_args = ["--model_dir", root / "model_dir"] if source == "model_dir" else \
        ["--saved_model", root / "saved" / "alexnet" / "1", "--dataset", DATASET]
    return [*source_args, "--crops", crops, "--batch_size", 4, "--strategy", strategy, "--output", output], output


EVALUATIONS = [("model_dir", 1, "default"), ("saved_model", 10, "mirrored")]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A model_dir, a few image files, and the script runs the tests check.

    Each script run is a fresh Python that imports TensorFlow (seconds), so the runs go three at a
    time: first the export and what needs only the model_dir, then what needs the export.
    """
    root = tmp_path_factory.mktemp("run")
    model = write_model_dir(str(root / "model_dir"))
    images = write_images(root)
    base = root / "saved" / "alexnet"
    runs = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
        # --export_base: the flag's name before it took train.py's --export_dir, still accepted.
        exported = pool.submit(run_script, "export.py", "--model_dir", root / "model_dir", "--export_base", base)
        runs["predict model_dir"] = pool.submit(run_script, "predict.py", *predict_args(images), "--model_dir",
                                                root / "model_dir", env=OWN_LOG_LEVEL)
        first, *later = EVALUATIONS
        runs[("evaluate",) + first] = pool.submit(run_script, "evaluate.py", *evaluate_args(root, *first)[0])
        result = exported.result()
        assert result.returncode == 0, result.stderr[-3000:]
        runs["export"] = exported
        runs["export again"] = pool.submit(run_script, "export.py", "--model_dir", root / "model_dir",
                                           "--export_dir", base, "--version", 1)
        runs["predict saved_model"] = pool.submit(run_script, "predict.py", *predict_args(images), "--saved_model", base / "1",
                                                  env=OWN_LOG_LEVEL)
        for evaluation in later:
            runs[("evaluate",) + evaluation] = pool.submit(run_script, "evaluate.py", *evaluate_args(root, *evaluation)[0])
        runs = {name: future.result() for name, future in runs.items()}
    return {"model": model, "model_dir": str(root / "model_dir"), "root": root, "base": str(base),
            "export": runs["export"].stdout.strip().splitlines()[-1], "images": images, "runs": runs}


def test_export_script_versions_and_errors(run):
    assert run["export"] == os.path.join(run["base"], "1")
    assert tf.saved_model.contains_saved_model(run["export"])
    again = run["runs"]["export again"]
    assert again.returncode == 2 and len(error_lines(again.stderr)) == 1 and "Traceback" not in again.stderr
    assert "saved/alexnet/1 exists: versions are never overwritten" in again.stderr
    assert os.listdir(run["base"]) == ["1"]
    # The export base given where a version folder belongs: the error names the version to pass.
    with pytest.raises(FileNotFoundError) as base_given:
        export.check_saved_model(run["base"])
    assert str(base_given.value) == (f"{run['base']} is not a SavedModel folder: pass a version folder such as "
                                     f"{run['base']}/1 (its only version).")
    model_dir = os.path.join(os.path.dirname(os.path.dirname(run["base"])), "model_dir")  # a run where an export belongs
    with pytest.raises(FileNotFoundError) as run_given:
        export.check_saved_model(model_dir)
    assert str(run_given.value) == (f"{model_dir} is a training run, not a SavedModel: give it as --model_dir {model_dir}, "
                                    f"or export it first with scripts/export.py --model_dir {model_dir}")
    with pytest.raises(FileNotFoundError) as export_given:  # and the other way round
        checkpoints.read_config(run["export"])
    assert str(export_given.value) == (f"{run['export']} is a SavedModel (an export), not a training run: pass the run's "
                                       f"directory; predict.py and evaluate.py read an export as --saved_model {run['export']}")


def test_export_script_warns_about_a_run_that_ended_at_chance_and_exports_where_the_run_does(tmp_path):
    model_dir = tmp_path / "model_dir"
    write_model_dir(str(model_dir))
    record = {"epoch": 2, "val_top1": 0.09, "val_examples": 1000}  # 10 classes: chance 0.1
    (model_dir / "history.jsonl").write_text(json.dumps({**record, "epoch": 1}) + "\n" + json.dumps(record) + "\n")
    # Without --export_dir: the run's own --export_dir (it was saved_models/alexnet whatever the run's).
    config = checkpoints.read_config(str(model_dir))
    checkpoints.write_config(str(model_dir), {**config, "export_dir": str(tmp_path / "base")})
    # (With the opt-in bfloat16 export, to run that flag end to end too.)
    done = run_script("export.py", "--model_dir", model_dir, "--precision", "mixed_bfloat16")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == str(tmp_path / "base" / "1")
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning: the run's last held-out top-1")]
    assert len(warnings) == 1 and "(0.090 at epoch 2, 1000 images) is within noise of chance (0.100 for 10 classes)" in warnings[0]
    assert tf.saved_model.contains_saved_model(str(tmp_path / "base" / "1"))  # exported all the same, as asked
    graph = tf.saved_model.load(str(tmp_path / "base" / "1")).signatures["predict_images"].graph.as_graph_def()
    assert tf.bfloat16.as_datatype_enum in graphs.dtypes(graph)


def top5_blocks(stdout):
    """{path: [(label, score), ...]} from the scripts' top-5 printout."""
    blocks, current = {}, None
    for line in stdout.splitlines():
        match = re.fullmatch(r"\s+\d\. (\d\.\d{4})  (.+)", line)
        if match:
            blocks[current].append((match.group(2), float(match.group(1))))
        elif line.strip():
            current = line.strip()
            blocks[current] = []
    return blocks


def test_predict_script_saved_model_and_model_dir_agree(run):
    images = run["images"]
    missing = predict_args(images)[2]
    outputs = [run["runs"]["predict saved_model"], run["runs"]["predict model_dir"]]
    for result in outputs:
        assert result.returncode == 1, result.stderr[-3000:]
        errors = error_lines(result.stderr)
        assert len(errors) == 2 and "Traceback" not in result.stderr
        assert "[[{{" not in result.stderr  # nor TensorFlow's own log of the failed assertion
        assert errors[0] == f"error: {images['notes.txt']}: not a JPEG, PNG, GIF, BMP or WebP image"
        assert errors[1].startswith(f"error: {missing}: ")
    assert outputs[0].stdout == outputs[1].stdout
    blocks = top5_blocks(outputs[0].stdout)
    assert list(blocks) == [images["photo.jpg"], images["stripes.png"]]
    # The printed numbers are the Keras model's on the centre view.
    for path, block in blocks.items():
        with open(path, "rb") as f:
            view = augment.center_view(augment.decode_image(f.read()), SIZE)
        probabilities = tf.nn.softmax(run["model"](view[None], training=False))[0].numpy()
        order = np.argsort(-probabilities, kind="stable")[:5]
        assert [label for label, _ in block] == [CLASSES[i] for i in order]
        np.testing.assert_allclose([score for _, score in block], probabilities[order], atol=6e-5)


def test_predict_script_answers_a_folder_with_its_image_files(run, tmp_path):
    images = run["images"]
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "scan.tif").write_bytes(b"II*\x00")  # a format the signature does not decode: said, not silently left out
    result = run_script("predict.py", os.path.dirname(images["photo.jpg"]), empty, "--saved_model", os.path.join(run["base"], "1"))
    assert result.returncode == 1, result.stderr[-3000:]
    # photo.jpg and stripes.png, in name order; notes.txt is not an image file and is not tried.
    assert list(top5_blocks(result.stdout)) == [images["photo.jpg"], images["stripes.png"]]
    assert top5_blocks(result.stdout) == top5_blocks(run["runs"]["predict saved_model"].stdout)
    assert error_lines(result.stderr) == [f"error: {empty}: a folder with no image files (.jpg .jpeg .png .gif .bmp .webp) "
                                          f"directly in it; for class subfolders pass {empty}/*"]
    assert f"warning: {empty}: 1 image file(s) left out (scan.tif): only .jpg .jpeg .png .gif .bmp .webp are read; " \
        "convert them to JPEG or PNG" in result.stderr.splitlines()


def script_literals(script):
    """{name: value} of a script's module-level constants and flags.DEFINE_enum choices, read from
    its source: the scripts keep copies of library lists because importing keras_alexnet would
    load TensorFlow before their usage errors are answered."""
    with open(os.path.join(ROOT, "scripts", script)) as f:
        tree = ast.parse(f.read())
    literals = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, (ast.Constant, ast.Tuple, ast.List)):
            literals[node.targets[0].id] = ast.literal_eval(node.value)
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call) and ast.unparse(node.value.func) == "flags.DEFINE_enum":
            literals["--" + ast.literal_eval(node.value.args[0])] = tuple(ast.literal_eval(node.value.args[2]))
    return literals


def test_the_scripts_copies_of_library_lists_match_the_library():
    assert script_literals("predict.py")["IMAGE_EXTENSIONS"] == image_folder.IMAGE_EXTENSIONS
    assert script_literals("export.py")["--precision"] == export.EXPORT_PRECISIONS


def test_evaluate_refuses_an_output_it_cannot_write_before_evaluating(run):
    # An ImageNet evaluation takes an hour: an unwritable --output must not end it with a traceback.
    result = run_script("evaluate.py", "--model_dir", run["model_dir"], "--output", "/proc/no_such_folder/eval.json")
    assert result.returncode == 2, result.stderr[-3000:]
    assert len(error_lines(result.stderr)) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert error_lines(result.stderr)[0].startswith("error: the folder of --output=/proc/no_such_folder is not writable (")
    assert result.stdout == ""  # refused before any evaluation result


def test_usage_errors_answer_before_loading_anything(run):
    for script, args in (("predict.py", [run["images"]["photo.jpg"]]), ("evaluate.py", ["--dataset", DATASET]),
                         ("evaluate.py", ["--model_dir", "a", "--saved_model", "b"])):
        result = run_script(script, *args)
        assert result.returncode == 2, script
        assert error_lines(result.stderr) == [result.stderr.strip()]
        assert "exactly one of" in result.stderr


def expected_evaluation(model, crops):
    dataset = data.make_dataset(DATASET, "validation", image_size=SIZE, batch_size=4, training=False, crops=crops)
    probabilities, labels = [], []
    for images, batch_labels in dataset:
        flat = tf.reshape(images, [-1, SIZE, SIZE, 3])
        p = tf.nn.softmax(model(flat, training=False)).numpy().reshape(len(batch_labels), crops, -1).mean(axis=1)
        probabilities.append(p)
        labels.append(batch_labels.numpy())
    probabilities, labels = np.concatenate(probabilities), np.concatenate(labels)
    order = np.argsort(-probabilities, axis=1, kind="stable")
    return len(labels), int((order[:, 0] == labels).sum()), int((order[:, :5] == labels[:, None]).any(axis=1).sum())


@pytest.mark.parametrize("source,crops,strategy", EVALUATIONS)
def test_evaluate_script(run, source, crops, strategy):
    result = run["runs"][("evaluate", source, crops, strategy)]
    output = evaluate_args(run["root"], source, crops, strategy)[1]
    crops = str(crops)
    assert result.returncode == 0, result.stderr[-3000:]
    printed = json.loads(result.stdout.strip().splitlines()[-1])
    assert json.loads(output.read_text()) == printed
    examples, top1, top5 = expected_evaluation(run["model"], int(crops))
    assert printed["num_examples"] == examples == 11
    assert printed["top1_accuracy"] == pytest.approx(top1 / examples, abs=1e-12)
    assert printed["top5_accuracy"] == pytest.approx(top5 / examples, abs=1e-12)
    assert printed["top1_error"] == pytest.approx(1 - top1 / examples, abs=1e-12)
    assert printed["top5_error"] == pytest.approx(1 - top5 / examples, abs=1e-12)
    assert printed["crops"] == int(crops) and printed["split"] == "validation"
    # The checkpoint loaded (the model_dir holds ckpt-5); an export has none.
    assert (printed["checkpoint"] or "").endswith("ckpt-5") if source == "model_dir" else printed["checkpoint"] is None
    # Per class: the weakest classes in the result and on stderr, the confusion matrix beside the JSON.
    assert printed["confusion_png"] == str(output).replace(".json", "_confusion.png") and os.path.getsize(printed["confusion_png"]) > 1000
    weakest = printed["weakest_classes"]
    assert 1 <= len(weakest) <= 5 and {w["class"] for w in weakest} <= set(CLASSES)
    assert sum(round(w["top1_accuracy"] * w["examples"]) for w in weakest) <= top1
    assert f"weakest classes: {weakest[0]['class']} {weakest[0]['top1_accuracy']:.3f}" in result.stderr


def test_evaluate_script_matches_a_folder_of_some_classes_by_name(tmp_path):
    # New photos for two of the model's ten classes, "circle" and "star" (the folder's labels 0
    # and 1; the model's 0 and 6), and a model that answers "star" for every image: matched by
    # name, the 4 star photos are right; compared by index none would be. Before, a dataset with
    # fewer classes than the model was refused.
    write_model_dir(str(tmp_path / "run"), answer=CLASSES.index("star"))
    rng = np.random.default_rng(5)
    for split in ("train", "val"):
        for name, count in (("star", 4), ("circle", 2)):
            (tmp_path / "photos" / split / name).mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, size=(70, 80, 3), dtype=np.uint8)
                (tmp_path / "photos" / split / name / f"{i}.png").write_bytes(tf.io.encode_png(pixels).numpy())
    broken = tmp_path / "photos" / "val" / "star" / "broken.jpg"  # skipped, and said so in the script's words
    broken.write_bytes(b"not an image")
    spec = f"folder:{tmp_path / 'photos'}"
    result = run_script("evaluate.py", "--model_dir", tmp_path / "run", "--dataset", spec)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"note: --dataset={spec} has 2 of the model's {len(CLASSES)} classes; labels are matched" in result.stderr
    printed = json.loads(result.stdout.strip().splitlines()[-1])
    assert printed["num_examples"] == 6 and printed["top1_accuracy"] == pytest.approx(4 / 6, abs=1e-12)
    warnings = [line for line in result.stderr.splitlines() if "broken.jpg" in line]
    assert len(warnings) == 2 and warnings[0].startswith(f"warning: skipped an image that could not be read or decoded "
                                                         f"(truncated, empty, not an image, or a bad label): {broken}.")
    assert warnings[1] == (f"warning: evaluated 6 of the split's 7 examples: 1 undecodable image skipped; first: {broken}: "
                           "convert or remove them (JPEG, PNG, GIF, BMP or WebP)")
    assert "weakest classes: circle 0.000 (2 of 2 taken for star); star 1.000" in result.stderr
    # The matrix draws the two classes that occur, not the model's ten: 2 x 2 cells, a figure 6.2 inches wide.
    assert Image.open(printed["confusion_png"]).size[0] == round(100 * (4 + 0.35 * 2 + 1.5))
    broken.unlink()
    # A class the model does not know is one line, before anything is evaluated.
    for split in ("train", "val"):
        (tmp_path / "photos" / split / "circle").rename(tmp_path / "photos" / split / "zebra")
    result = run_script("evaluate.py", "--model_dir", tmp_path / "run", "--dataset", spec)
    assert result.returncode == 2 and result.stdout == ""
    assert error_lines(result.stderr) == [f"error: --dataset={spec}: 1 of its 2 classes is not among the model's "
                                          f"{len(CLASSES)} (zebra): evaluate on data of the classes the model was trained "
                                          "on (a folder: one subfolder per class, named as in training)."]


# ---------------------------------------------------------------------------------------- client


def load_client():
    spec = importlib.util.spec_from_file_location("serving_client", os.path.join(ROOT, "scripts", "serving_client.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rest_request_body_is_tf_servings_row_format():
    client = load_client()
    images = [b"\xff\xd8\xff\xe0jpeg", b"\x89PNG\r\n"]
    body = client.rest_request_body(images)
    assert body == {"signature_name": "serving_default",
                    "instances": [{"b64": base64.b64encode(image).decode()} for image in images]}
    assert json.loads(json.dumps(body)) == body
    assert client.rest_url("http://host:8501/", "alexnet") == "http://host:8501/v1/models/alexnet:predict"
    assert client.rest_url("http://host:8501", "alexnet", 3) == "http://host:8501/v1/models/alexnet/versions/3:predict"


class FakeRestServer(http.server.ThreadingHTTPServer):
    """Decodes TF Serving's REST predict request (row format, b64) and runs the SavedModel."""

    def __init__(self, export_path):
        self.serve = tf.saved_model.load(export_path).signatures["serving_default"]
        self.requests = []
        super().__init__(("127.0.0.1", 0), FakeRestHandler)


class FakeRestHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, code, body):
        payload = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append((self.path, body))
        if not re.fullmatch(r"/v1/models/alexnet(/versions/\d+)?:predict", self.path):
            return self.reply(404, {"error": f"Servable not found for request: {self.path}"})
        images = [base64.b64decode(instance["b64"]) for instance in body["instances"]]
        try:
            outputs = self.server.serve(image_bytes=tf.constant(images))
        except tf.errors.InvalidArgumentError as error:
            # TF Serving returns the op's message (without Python's "Graph execution error" preamble).
            message = next(line for line in error.message.splitlines() if "assertion failed" in line or "Invalid" in line)
            return self.reply(400, {"error": message.strip() + "\n\t [[{{node map/while/Assert/Assert}}]]"})
        predictions = [{name: (value[i].tolist() if value.dtype != object else [v.decode() for v in value[i]])
                        for name, value in ((k, v.numpy()) for k, v in outputs.items())} for i in range(len(images))]
        self.reply(200, {"predictions": predictions})


def test_rest_client_against_a_stand_in_server(run):
    server = FakeRestServer(run["export"])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        images = run["images"]
        url = f"http://127.0.0.1:{server.server_address[1]}"
        result = run_script("serving_client.py", images["photo.jpg"], images["notes.txt"], images["stripes.png"],
                            "--server", url, "--version", 1)
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 1, result.stderr
    errors = error_lines(result.stderr)
    assert len(errors) == 1 and errors[0].startswith(f"error: {images['notes.txt']}: HTTP 400: assertion failed")
    assert [path for path, _ in server.requests] == ["/v1/models/alexnet/versions/1:predict"] * 3
    with open(images["photo.jpg"], "rb") as f:
        assert server.requests[0][1] == {"signature_name": "serving_default",
                                         "instances": [{"b64": base64.b64encode(f.read()).decode()}]}
    predicted = top5_blocks(result.stdout)
    assert list(predicted) == [images["photo.jpg"], images["stripes.png"]]
    for path, block in predicted.items():
        with open(path, "rb") as f:
            expected = server.serve(image_bytes=tf.constant([f.read()]))
        assert [label for label, _ in block] == [label.decode() for label in expected["top_k_labels"].numpy()[0]]
        np.testing.assert_allclose([score for _, score in block], expected["top_k_scores"].numpy()[0], atol=6e-5)


def test_rest_client_stops_at_an_answer_that_every_image_would_get(run):
    # A wrong --model (404), or no server at all, was one identical error line (and one timeout) per image.
    server = FakeRestServer(run["export"])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        images = [run["images"]["photo.jpg"], run["images"]["stripes.png"], run["images"]["photo.jpg"]]
        url = f"http://127.0.0.1:{server.server_address[1]}"
        result = run_script("serving_client.py", *images, "--server", url, "--model", "alexnett")
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 1 and len(server.requests) == 1, result.stderr
    assert error_lines(result.stderr) == [
        f"error: {images[0]}: HTTP 404 from {url}/v1/models/alexnett:predict: Servable not found for request: "
        "/v1/models/alexnett:predict: the server has no such model or version (check --model, --version and --server)",
        "error: 2 more images not sent: the server would answer them the same"]


def test_rest_client_reports_unreachable_server():
    client = load_client()
    with pytest.raises(client.ServingError, match="cannot reach") as refused:
        client.rest_predict("http://127.0.0.1:9/v1/models/alexnet:predict", {"instances": []}, timeout=5)
    assert str(refused.value).endswith(": is TF Serving running there? docs/serving.md starts it")  # the likely fix


def test_rest_client_refuses_a_server_that_is_not_a_url(tmp_path):
    image = tmp_path / "photo.jpg"
    image.write_bytes(b"\xff\xd8\xff")
    result = run_script("serving_client.py", image, "--server", "localhost:8501")  # was a ValueError traceback
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert error_lines(result.stderr) == ["error: --server=localhost:8501: give the REST endpoint as http://host:port "
                                          "(TF Serving's REST port is 8501)."]


def test_grpc_client_against_a_stand_in_server(run):
    grpc = pytest.importorskip("grpc")
    predict_pb2 = pytest.importorskip("tensorflow_serving.apis.predict_pb2")
    prediction_service_pb2_grpc = pytest.importorskip("tensorflow_serving.apis.prediction_service_pb2_grpc")
    from concurrent import futures

    serve = tf.saved_model.load(run["export"]).signatures["serving_default"]
    received = []

    class Servicer(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):
            received.append(request)
            try:
                outputs = serve(image_bytes=tf.constant(tf.make_ndarray(request.inputs["image_bytes"])))
            except tf.errors.InvalidArgumentError:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "assertion failed: [image_bytes[0] is not a JPEG]\n\t[[node]]")
            response = predict_pb2.PredictResponse()
            for name, value in outputs.items():
                response.outputs[name].CopyFrom(tf.make_tensor_proto(value.numpy()))
            return response

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Servicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        client = load_client()
        images = run["images"]
        with open(images["photo.jpg"], "rb") as f:
            photo = f.read()
        with open(images["stripes.png"], "rb") as f:
            stripes = f.read()
        request = client.grpc_request([photo, stripes], "alexnet", version=1)
        rows = client.grpc_predict(f"127.0.0.1:{port}", request, timeout=30)
        with pytest.raises(client.ServingError, match=r"^INVALID_ARGUMENT: assertion failed: \[image_bytes\[0\] is not a JPEG\]$"):
            client.grpc_predict(f"127.0.0.1:{port}", client.grpc_request([b"text"], "alexnet"), timeout=30)
    finally:
        server.stop(None)
    sent = received[0]
    assert sent.model_spec.name == "alexnet" and sent.model_spec.signature_name == "serving_default"
    assert sent.model_spec.version.value == 1
    assert list(sent.inputs) == ["image_bytes"]
    assert sent.inputs["image_bytes"].dtype == tf.string.as_datatype_enum
    assert [d.size for d in sent.inputs["image_bytes"].tensor_shape.dim] == [2]
    assert list(sent.inputs["image_bytes"].string_val) == [photo, stripes]
    expected = serve(image_bytes=tf.constant([photo, stripes]))
    assert len(rows) == 2
    for i, row in enumerate(rows):
        assert row["top_k_labels"] == [v.decode() for v in expected["top_k_labels"].numpy()[i]]
        np.testing.assert_allclose(row["probabilities"], expected["probabilities"].numpy()[i], rtol=1e-6)


def test_models_config_in_docs_parses():
    model_server_config_pb2 = pytest.importorskip("tensorflow_serving.config.model_server_config_pb2")
    from google.protobuf import text_format

    with open(os.path.join(ROOT, "docs", "serving.md")) as f:
        text = f.read()
    blocks = [block for block in re.findall(r"^```[a-z]*\n(.*?)^```$", text, re.S | re.M) if block.startswith("model_config_list")]
    assert len(blocks) == 1
    config = text_format.Parse(blocks[0], model_server_config_pb2.ModelServerConfig())
    (model,) = config.model_config_list.config
    assert model.name == "alexnet" and model.base_path == "/models/alexnet" and model.model_platform == "tensorflow"
    assert model.model_version_policy.latest.num_versions == 2
    assert "--model_config_file=/models/models.config" in text
