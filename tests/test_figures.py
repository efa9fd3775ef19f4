"""Fig. 3, Fig. 4 and the training curves (keras_alexnet.figures and their scripts), on tiny data."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import keras_alexnet
from keras_alexnet import data, figures
from keras_alexnet.errors import UsageError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPES = "shapes:train=40,validation=6,size=48"


@pytest.fixture(scope="module")
def model():
    """An untrained paper net at the smallest input (figures must work on any built model)."""
    return keras_alexnet.build(num_classes=10, input_shape=(67, 67, 3), seed=0)


def png_size(path):
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    with Image.open(path) as image:
        return image.size


# --- Fig. 3 -------------------------------------------------------------------------------------


def test_kernel_grid_scales_each_kernel_to_its_own_range():
    kernels = np.zeros((5, 2, 2, 3), np.float32)
    kernels[0] = np.arange(12).reshape(2, 2, 3)           # 0..11
    kernels[1] = -3 + 0.001 * np.arange(12).reshape(2, 2, 3)  # a small range away from zero
    kernels[2] = 7.0                                       # constant: grey
    grid = figures.kernel_grid(kernels, per_row=3, gap=1)
    assert grid.shape == (2 * 3 - 1, 3 * 3 - 1, 3)
    np.testing.assert_allclose(grid[0:2, 0:2], np.arange(12).reshape(2, 2, 3) / 11.0, atol=1e-6)
    np.testing.assert_allclose(grid[0:2, 3:5], np.arange(12).reshape(2, 2, 3) / 11.0, atol=1e-3)
    np.testing.assert_allclose(grid[0:2, 6:8], 0.5)
    assert grid[2].min() == 1.0 and grid[:, 2].min() == 1.0  # white gaps
    assert grid[3:5, 6:8].min() == 1.0                       # the empty sixth tile stays white


def test_conv1_kernels_and_columns(model):
    kernels = figures.conv1_kernels(model)
    assert kernels.shape == (96, 11, 11, 3)
    np.testing.assert_array_equal(kernels[5], model.get_layer("conv1").get_weights()[0][..., 5])
    assert figures.conv1_columns(model) == 2
    assert figures.conv1_columns(keras_alexnet.build(num_classes=10, input_shape=(67, 67, 3), groups=1, include_top=False)) == 1
    one_column = keras_alexnet.build(num_classes=10, input_shape=(63, 63, 3), variant="one_column", include_top=False)
    assert figures.conv1_columns(one_column) == 1 and figures.conv1_kernels(one_column).shape == (64, 11, 11, 3)


def test_plot_conv1_kernels_png(tmp_path, model):
    path = figures.plot_conv1_kernels(model, str(tmp_path / "out" / "conv1.png"))
    width, height = png_size(path)
    assert width > 600 and height > 300


# --- Fig. 4 -------------------------------------------------------------------------------------


def brute_force(queries, vectors, k):
    distances = np.linalg.norm(queries[:, None, :].astype(np.float64) - vectors[None, :, :], axis=-1)
    order = np.argsort(distances, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(distances, order, axis=1)


@pytest.mark.parametrize("chunk_rows", [7, 1000])
def test_nearest_neighbors_is_exact(tmp_path, chunk_rows):
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(103, 32)).astype(np.float32)
    vectors[50] = vectors[20]  # a tie: the lower index comes first
    queries = np.concatenate([rng.normal(size=(4, 32)), vectors[[20, 77]]]).astype(np.float32)
    stored = np.memmap(tmp_path / "v.f32", dtype=np.float32, mode="w+", shape=vectors.shape)
    stored[:] = vectors
    indices, distances = figures.nearest_neighbors(queries, stored, k=5, chunk_rows=chunk_rows)
    expected_indices, expected_distances = brute_force(queries, vectors, 5)
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_allclose(distances, expected_distances, rtol=1e-6, atol=1e-6)
    assert indices[4, 0] == 20 and indices[4, 1] == 50 and distances[4, 0] < 1e-6
    assert indices[5, 0] == 77
    few, _ = figures.nearest_neighbors(queries, stored[:3], k=5, chunk_rows=chunk_rows)
    assert few.shape == (6, 3)


def test_extract_features_streams_to_disk(tmp_path, model):
    dataset = data.make_dataset(SHAPES, "validation", image_size=67, batch_size=4, training=False, deterministic=True)
    features = figures.extract_features(model, dataset, str(tmp_path / "fc7"))
    assert isinstance(features.vectors, np.memmap) and features.vectors.shape == (6, 4096)
    assert os.path.getsize(tmp_path / "fc7" / "features.f32") == 6 * 4096 * 4
    images = np.concatenate([np.asarray(x) for x, _ in dataset])
    expected = keras_alexnet.feature_extractor(model)(images, training=False)
    np.testing.assert_allclose(features.vectors, np.asarray(expected), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(features.labels, np.concatenate([np.asarray(y) for _, y in dataset]))
    again = figures.Features(str(tmp_path / "fc7"))
    np.testing.assert_array_equal(again.vectors, features.vectors)


def test_neighbors_figure_finds_a_training_image_itself(tmp_path, model):
    """Queries that are training images: each one's nearest neighbour is itself at distance 0,
    which checks that activations, indices, labels and the displayed images stay aligned."""
    train = data.make_dataset(SHAPES, "train", image_size=67, batch_size=40, training=False, deterministic=True)
    images, labels = next(iter(train))
    picks = [3, 17]
    queries = np.asarray(images)[picks]
    path = str(tmp_path / "fig4.png")
    said = []
    result = figures.neighbors_figure(model, SHAPES, path, queries=queries, query_titles=["a", "b"], k=4, batch_size=16,
                                      features_dir=str(tmp_path / "features"), log=said.append)
    # Progress over the split (an hour on ImageNet; nothing was said between the first line and the end).
    assert said[0] == f"computing fc7 activations of {SHAPES} (train, 40 images) into {tmp_path / 'features'}", said
    assert [re.sub(r"[\d.]+ img/s, ETA \d+m\d\ds", "R", line) for line in said[1:]] == [
        "fc7 activations: 16 of 40 images, R", "fc7 activations: 32 of 40 images, R", "fc7 activations: 40 of 40 images, R"]
    np.testing.assert_array_equal(result["indices"][:, 0], picks)
    np.testing.assert_allclose(result["distances"][:, 0], 0.0, atol=1e-2)
    np.testing.assert_array_equal(result["labels"][:, 0], np.asarray(labels)[picks])
    assert result["indices"].shape == (2, 4) and np.all(np.diff(result["distances"], axis=1) >= 0)
    shown = figures.gather_images(train, result["indices"][:, :1])
    np.testing.assert_array_equal(shown[picks[0]], figures.display_image(queries[0]))
    width, height = png_size(path)
    assert width > 500 and height > 300
    assert os.path.getsize(tmp_path / "features" / "features.f32") == 40 * 4096 * 4


def test_neighbors_figure_default_queries(tmp_path, model):
    result = figures.neighbors_figure(model, SHAPES, str(tmp_path / "fig4.png"), num_queries=2, k=3, batch_size=16,
                                      log=lambda message: None)
    assert len(result["query_labels"]) == 2 and result["indices"].shape == (2, 3)
    assert png_size(str(tmp_path / "fig4.png"))[0] > 300


# --- training curves ----------------------------------------------------------------------------


def write_history(directory, records, tail=""):
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "history.jsonl"), "w") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
        f.write(tail)


def history_records(epochs):
    return [{"epoch": e, "step": 10 * e, "learning_rate": 0.01 if e < 4 else 0.001, "train_loss": 2.0 / e, "train_top1": 0.1 * e,
             "train_top5": 0.15 * e, "val_loss": 2.2 / e, "val_top1": 0.09 * e, "val_top5": 0.14 * e, "images_per_sec": 9.0,
             "seconds": 3.0} for e in range(1, epochs + 1)]


def test_read_history_last_record_of_an_epoch_wins(tmp_path):
    records = history_records(3)
    resumed = dict(records[1], train_loss=123.0)
    write_history(tmp_path, records + [resumed], tail='{"epoch": 4, "trunc')  # a run killed mid-write
    history = figures.read_history(str(tmp_path))
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert history[1]["train_loss"] == 123.0
    with pytest.raises(FileNotFoundError):
        figures.read_history(str(tmp_path / "missing"))


def test_plot_history_png(tmp_path):
    records = history_records(5)
    records[0]["val_top5"] = None  # missing values are left out, not drawn as zero
    path = figures.plot_history(records, str(tmp_path / "history.png"))
    width, height = png_size(path)
    assert width > 800 and height > 250
    with pytest.raises(ValueError, match="empty"):
        figures.plot_history([], str(tmp_path / "empty.png"))
    # A path that cannot be written: one line naming it and the fix (was "[Errno 2] ... '/proc/x'").
    blocked = tmp_path / "a_file"
    blocked.write_text("")
    for path in ("/proc/no_such_folder/history.png", str(blocked / "history.png")):
        with pytest.raises(UsageError, match=rf"^cannot write the figure {path} \(.+\): choose a path you can write to"):
            figures.plot_history(records, path)
    # The format is the name's: a PDF for a paper; a .jpg name got PNG bytes before.
    assert open(figures.plot_history(records, str(tmp_path / "history.pdf")), "rb").read(5) == b"%PDF-"
    assert open(figures.plot_history(records, str(tmp_path / "history.jpg")), "rb").read(3) == b"\xff\xd8\xff"
    for name in ("history.tif", "history"):
        with pytest.raises(UsageError, match=rf"^cannot write the figure {tmp_path / name}: its name must end in .png "
                                             rf"\(or .pdf, .svg, .jpg\), e.g. {tmp_path / 'history'}.png$"):
            figures.plot_history(records, str(tmp_path / name))


def test_plot_history_leaves_top5_out_for_five_classes_or_fewer(tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr(figures, "_save", lambda figure, path: drawn.append(figure) or path)
    for num_classes in (None, 10, 5):
        figures.plot_history(history_records(3), str(tmp_path / "history.png"), num_classes=num_classes)
    labels = [figure.axes[1].get_legend_handles_labels()[1] for figure in drawn]
    both = ["train top-1", "held-out top-1", "train top-5", "held-out top-5"]
    assert labels == [both, both, both[:2]]  # with 5 classes top-5 is always right: a flat line at 0


def test_plot_confusion_draws_shares_names_and_counts(tmp_path, monkeypatch):
    matrix = np.array([[8, 2, 0], [0, 1, 0], [5, 0, 45]])
    path = figures.plot_confusion(matrix, ["ant", "bee", "cat"], str(tmp_path / "confusion.png"))
    width, height = png_size(path)
    assert width > 400 and height > 300
    drawn = []
    monkeypatch.setattr(figures, "_save", lambda figure, path: drawn.append(figure) or path)
    figures.plot_confusion(matrix, ["ant", "bee", "cat"], str(tmp_path / "c.png"))
    axis = drawn[0].axes[0]
    # Each row as shares of its class, so the small class's one example shows as fully as the others.
    np.testing.assert_allclose(axis.images[0].get_array(), [[0.8, 0.2, 0], [0, 1, 0], [0.1, 0, 0.9]])
    assert [t.get_text() for t in axis.get_yticklabels()] == ["ant", "bee", "cat"]
    assert sorted(t.get_text() for t in axis.texts) == sorted(["8", "2", "1", "5", "45"])  # zero cells stay blank
    # A class that is neither a label nor an answer (an evaluation on some of the classes) is left out.
    figures.plot_confusion(np.pad(matrix, ((0, 1), (0, 1))), ["ant", "bee", "cat", "dog"], str(tmp_path / "c.png"))
    assert [t.get_text() for t in drawn[1].axes[0].get_yticklabels()] == ["ant", "bee", "cat"]
    drawn.clear()
    # Many classes: colours only, no names or counts to overlap.
    figures.plot_confusion(np.eye(60, dtype=int), [f"c{i}" for i in range(60)], str(tmp_path / "c.png"))
    assert not drawn[0].axes[0].texts and not [t for t in drawn[0].axes[0].get_yticklabels() if t.get_text().startswith("c")]


# --- scripts ------------------------------------------------------------------------------------


def run_script(name, *args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    return subprocess.run([sys.executable, os.path.join(ROOT, "scripts", name), *args], capture_output=True, text=True,
                          env=env, cwd=str(ROOT), timeout=300)


def test_scripts_end_to_end(tmp_path):
    write_history(tmp_path / "run", history_records(3))
    done = run_script("plot_history.py", str(tmp_path / "run"))
    assert done.returncode == 0, done.stderr
    assert png_size(str(tmp_path / "run" / "history.png"))[0] > 800
    done = run_script("plot_history.py", f"--model_dir={tmp_path / 'run'}", f"--out={tmp_path / 'curves.png'}")
    assert done.returncode == 0, done.stderr  # was "Unknown command line flag 'model_dir'. Did you mean: log_dir ?"
    assert png_size(str(tmp_path / "curves.png"))[0] > 800

    saved = str(tmp_path / "features.keras")  # a small file: the convolutional part is all Fig. 3 needs
    keras_alexnet.build(input_shape=(67, 67, 3), include_top=False, seed=1).save(saved)
    done = run_script("visualize_filters.py", f"--weights={saved}", f"--out={tmp_path / 'conv1.png'}")
    assert done.returncode == 0, done.stderr
    assert png_size(str(tmp_path / "conv1.png"))[0] > 600


def test_nearest_neighbors_script_end_to_end(tmp_path, model):
    """The script as a user runs it: a model file, a dataset, query images of one's own."""
    saved = str(tmp_path / "model.keras")
    model.save(saved)
    queries = []
    for index, colour in enumerate(((200, 30, 30), (30, 30, 200))):
        queries.append(str(tmp_path / f"query{index}.jpg"))
        Image.new("RGB", (80, 60), colour).save(queries[-1])
    features = tmp_path / "features"
    done = run_script("nearest_neighbors.py", f"--weights={saved}", f"--dataset={SHAPES}", f"--queries={','.join(queries)}",
                      "--k=3", f"--features_dir={features}", f"--out={tmp_path / 'fig4.png'}")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == f"wrote {tmp_path / 'fig4.png'}: 2 queries, 3 neighbours each"
    assert png_size(str(tmp_path / "fig4.png"))[0] > 400
    assert os.path.getsize(features / "features.f32") == 40 * 4096 * 4  # every training image's fc7, kept


def test_script_errors_are_one_line(tmp_path):
    done = run_script("plot_history.py", str(tmp_path / "missing"))
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1].startswith("error:")
    assert "Traceback" not in done.stderr
    done = run_script("nearest_neighbors.py", f"--weights={tmp_path / 'missing.npz'}", "--dataset=shapes")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error:")
    # An --out that cannot be written is refused before the model loads and the activations are
    # computed, not after (the weight file is never read: an empty one does).
    (tmp_path / "empty.keras").write_bytes(b"")
    done = run_script("nearest_neighbors.py", f"--weights={tmp_path / 'empty.keras'}", "--dataset=shapes", "--out=fig4.tif")
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1].startswith("error: cannot write the figure fig4.tif")
    for flag, value in (("--out", "/proc/no_such_folder/fig4.png"), ("--features_dir", "/proc/no_such_folder")):
        done = run_script("nearest_neighbors.py", f"--weights={tmp_path / 'empty.keras'}", "--dataset=shapes", f"{flag}={value}")
        assert done.returncode == 2 and "Traceback" not in done.stderr and done.stdout == ""
        folder = "the folder of --out=/proc/no_such_folder" if flag == "--out" else "--features_dir=/proc/no_such_folder"
        assert done.stderr.strip().splitlines()[-1].startswith(f"error: {folder} is not writable ("), done.stderr


def test_load_model_from_a_model_dir(tmp_path, model):
    """--model_dir: the model_dir layout of keras_alexnet.checkpoints (config.json + checkpoints/)."""
    import tensorflow as tf

    from keras_alexnet import checkpoints

    model_dir = str(tmp_path / "run")
    checkpoints.write_config(model_dir, {"variant": "paper", "groups": 2, "image_size": 67, "num_classes": 10,
                                         "class_names": [str(i) for i in range(10)], "dataset": SHAPES})
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(model=model), checkpoints.checkpoint_dir(model_dir), max_to_keep=1)
    manager.save(checkpoint_number=1)
    restored, config = figures.load_model(model_dir=model_dir)
    assert config["dataset"] == SHAPES
    np.testing.assert_array_equal(figures.conv1_kernels(restored), figures.conv1_kernels(model))
    with pytest.raises(ValueError, match="exactly one"):
        figures.load_model()
