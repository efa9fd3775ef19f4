"""Tests for keras_alexnet.prepare and scripts/prepare_data.py: real-photo JPEGs written by the
test -> sharded TFRecords -> `tfrecord:DIR` gives exactly the folder's examples and labels; the
ILSVRC layout; resume after SIGKILL; worker splits; bad files; the manifest check; the mean."""

import dataclasses
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time

import matplotlib
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_alexnet import augment, data, prepare
from keras_alexnet import image_folder
from keras_alexnet.sources import tfrecord
from keras_alexnet.errors import UsageError

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "scripts", "prepare_data.py")
PHOTO = os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")
CLASSES = ("hat", "face", "flag")  # not in sorted order


def _photo_jpeg(seed, max_side=300):
    """A JPEG of a random crop of grace_hopper.jpg (a real photograph), resized to 100..max_side px."""
    rng = np.random.default_rng(seed)
    photo = Image.open(PHOTO).convert("RGB")
    w, h = photo.size
    cw, ch = int(rng.integers(w // 3, w)), int(rng.integers(h // 3, h))
    left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    scale = rng.uniform(100, max_side) / max(cw, ch)
    image = photo.crop((left, top, left + cw, top + ch)).resize((max(1, round(cw * scale)), max(1, round(ch * scale))))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def _make_folder(root, counts={"train": 6, "val": 3}):
    """root/train/<class>/*.jpg, root/val/<class>/*.jpg; returns {split: [(file name, label)]}."""
    expected, k = {}, 0
    for split, count in counts.items():
        pairs = []
        for label, name in enumerate(sorted(CLASSES)):
            os.makedirs(os.path.join(root, split, name))
            for i in range(count):
                file_name = f"{name}_{split}_{i}.jpg"
                with open(os.path.join(root, split, name, file_name), "wb") as f:
                    f.write(_photo_jpeg(k))
                k += 1
                pairs.append((file_name, label))
        expected["validation" if split == "val" else split] = pairs
    return expected


def _records(paths):
    """[(filename, label - 1, synset, text, height, width, jpeg)] of TFRecord files, in file order."""
    out = []
    for record in tf.data.TFRecordDataset(sorted(paths)):
        f = tf.train.Example.FromString(record.numpy()).features.feature
        out.append((f["image/filename"].bytes_list.value[0].decode(), f["image/class/label"].int64_list.value[0] - 1,
                    f["image/class/synset"].bytes_list.value[0].decode(), f["image/class/text"].bytes_list.value[0].decode(),
                    f["image/height"].int64_list.value[0], f["image/width"].int64_list.value[0],
                    f["image/encoded"].bytes_list.value[0]))
    return out


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A folder of 27 real-photo JPEGs and two bad files, prepared into 3 + 2 shards."""
    root = tmp_path_factory.mktemp("prepare")
    source, out = str(root / "photos"), str(root / "records")
    expected = _make_folder(source)
    with open(os.path.join(source, "train", "face", "broken.jpg"), "wb") as f:
        f.write(_photo_jpeg(99)[:300])  # a truncated JPEG
    with open(os.path.join(source, "train", "face", "notes.jpg"), "w") as f:
        f.write("not an image")
    plan = prepare.list_folder(source)
    manifest = prepare.prepare(plan, out, num_shards={"train": 3, "validation": 2})
    return source, out, expected, manifest


def test_folder_to_tfrecord_gives_exactly_the_folders_examples_and_labels(prepared):
    source, out, expected, manifest = prepared
    assert manifest is not None and manifest == json.load(open(os.path.join(out, "manifest.json")))
    assert sorted(os.listdir(out)) == [".prepare", "manifest.json", "mean_image.npy", "train-00000-of-00003",
                                       "train-00001-of-00003", "train-00002-of-00003", "validation-00000-of-00002",
                                       "validation-00001-of-00002"]
    for split in ("train", "validation"):
        records = _records(tf.io.gfile.glob(f"{out}/{split}-*"))
        assert sorted((r[0], r[1]) for r in records) == sorted(expected[split])  # exactly, no duplicates
        assert all(r[2] == sorted(CLASSES)[r[1]] and (r[4], r[5]) == (256, 256) for r in records)  # §2: 256x256
        assert manifest["splits"][split]["num_examples"] == len(expected[split])
        assert manifest["splits"][split]["per_class"] == [len(expected[split]) // 3] * 3
    # validation keeps the folder's order (evaluation lines up with the files)
    assert [(r[0], r[1]) for r in _records(tf.io.gfile.glob(f"{out}/validation-*"))] == expected["validation"]
    # the photos whose shorter side is under 256 were enlarged to it (§2), and counted
    for split, folder in (("train", "train"), ("validation", "val")):
        small = sum(min(Image.open(os.path.join(source, folder, sorted(CLASSES)[label], name)).size) < 256
                    for name, label in expected[split])
        assert manifest["splits"][split]["upscaled"] == small > 0
    # the bad files are skipped and listed with a reason, not fatal
    skipped = {os.path.basename(path): reason for path, reason in manifest["splits"]["train"]["skipped"]}
    assert sorted(skipped) == ["broken.jpg", "notes.jpg"] and skipped["broken.jpg"]
    assert skipped["notes.jpg"] == "not an image: no format that Pillow reads"  # not "<_io.BytesIO object at 0x...>"

    info = data.dataset_info(f"tfrecord:{out}")
    assert (info.num_classes, info.class_names) == (3, sorted(CLASSES))
    assert info.num_examples == {"train": 18, "validation": 9}
    # the training side reads them unchanged: same labels, in order, and nearly the same pixels
    kwargs = dict(image_size=227, batch_size=4, training=False)
    prepared_views = list(data.make_dataset(f"tfrecord:{out}", "validation", **kwargs))
    raw_views = list(data.make_dataset(f"folder:{source}", "validation", **kwargs))
    # tfrecord: interleaves its shards one record at a time; folder: reads the files in order
    shards = [[r[0] for r in _records([path])] for path in sorted(tf.io.gfile.glob(f"{out}/validation-*"))]
    order = [names[i] for i in range(max(map(len, shards))) for names in shards if i < len(names)]
    position = {name: i for i, (name, _) in enumerate(expected["validation"])}
    order = [position[name] for name in order]
    labels = np.concatenate([y.numpy() for _, y in prepared_views])
    assert labels.tolist() == [expected["validation"][i][1] for i in order]
    assert sorted(order) == list(range(9))
    raw = np.concatenate([x.numpy() for x, _ in raw_views])[order]
    diff = np.abs(np.concatenate([x.numpy() for x, _ in prepared_views]) - raw)
    assert diff.mean() < 6.0, diff.mean()  # JPEG re-encoding and PIL's resize against tf.image's
    images, train_labels = next(iter(data.make_dataset(f"tfrecord:{out}", "train", image_size=227, batch_size=8,
                                                       training=True, seed=0, image_dtype="float32")))
    assert images.shape == (8, 227, 227, 3) and set(train_labels.numpy()) <= {0, 1, 2}


def test_a_flat_folder_is_planned_with_the_training_runs_split(tmp_path):
    # DIR/<class>/*: the plan holds out the files that `--dataset folder:DIR` holds out, so a
    # prepared copy trains and evaluates on the same images as the folder itself.
    root = tmp_path / "flat"
    _make_folder(root, counts={"train": 8})
    for name in CLASSES:
        os.rename(root / "train" / name, root / name)
    os.rmdir(root / "train")
    plan = prepare.list_folder(str(root))
    names = {split: {(e.name, e.label) for e in plan.splits[split]} for split in ("train", "validation")}
    assert not names["train"] & names["validation"] and len(names["train"] | names["validation"]) == 8 * len(CLASSES)
    held_out = {n: image_folder.held_out_mask([f"{n}/{n}_train_{i}.jpg" for i in range(8)]) for n in CLASSES}
    assert names["validation"] == {(f"{n}_train_{i}.jpg", sorted(CLASSES).index(n)) for n in CLASSES for i in range(8)
                                   if held_out[n][i]}


def test_the_training_mean_is_stored_and_used_with_mean_channel(prepared):
    _, out, _, manifest = prepared
    pixels = np.concatenate([np.asarray(Image.open(io.BytesIO(r[6]))).reshape(-1, 3)
                             for r in _records(tf.io.gfile.glob(f"{out}/train-*"))])
    np.testing.assert_allclose(manifest["mean_rgb"], pixels.mean(axis=0), atol=1.5)  # before/after JPEG encoding
    mean_image = np.load(os.path.join(out, "mean_image.npy"))
    assert mean_image.shape == (256, 256, 3) and mean_image.dtype == np.float32
    np.testing.assert_allclose(mean_image.mean(axis=(0, 1)), manifest["mean_rgb"], atol=1e-3)
    assert data.dataset_info(f"tfrecord:{out}").mean_rgb is None
    assert data.dataset_info(f"tfrecord:{out}?mean=channel").mean_rgb == manifest["mean_rgb"]
    # evaluation views and training views (either dtype) differ from the default by the means' difference
    shift = np.array(augment.IMAGENET_MEAN_RGB) - manifest["mean_rgb"]
    for kwargs in (dict(training=False), dict(training=True, seed=3, deterministic=True, image_dtype="float32")):
        default, own = (next(iter(data.make_dataset(spec, "validation", image_size=67, batch_size=4, **kwargs)))[0]
                        for spec in (f"tfrecord:{out}", f"tfrecord:{out}?mean=channel"))
        np.testing.assert_allclose((own - default).numpy().mean(axis=(0, 1, 2)), shift, atol=0.01)
    (crops, shifts), _ = next(iter(data.make_dataset(f"tfrecord:{out}?mean=channel", "train", image_size=67, batch_size=4,
                                                     training=True, seed=3, deterministic=True, image_dtype="uint8")))
    own = next(iter(data.make_dataset(f"tfrecord:{out}?mean=channel", "train", image_size=67, batch_size=4,
                                      training=True, seed=3, deterministic=True, image_dtype="float32")))[0]
    np.testing.assert_allclose(augment.finish_views(crops, shifts), own, atol=1e-3)  # what the Trainer computes
    with pytest.raises(UsageError, match="mean=channel"):
        data.dataset_info(f"tfrecord:{out}?mean=pixel")


@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_a_missing_or_truncated_shard_is_a_one_line_error_naming_it(prepared, tmp_path, damage):
    out = str(tmp_path / "records")
    shutil.copytree(prepared[1], out)
    shard = os.path.join(out, "train-00001-of-00003")
    if damage == "missing":
        os.remove(shard)
    else:
        with open(shard, "r+b") as f:
            f.truncate(os.path.getsize(shard) - 10)
    for call in (lambda: data.dataset_info(f"tfrecord:{out}"),
                 lambda: data.make_dataset(f"tfrecord:{out}", "train", image_size=67, batch_size=2, training=True)):
        with pytest.raises(UsageError, match=f"shard {shard} is {damage}") as error:
            call()
        assert "\n" not in str(error.value)
    data.make_dataset(f"tfrecord:{out}", "validation", image_size=67, batch_size=2, training=False)  # intact split


def test_workers_split_disjoint_shards_and_a_rerun_keeps_finished_ones(tmp_path):
    source, out = str(tmp_path / "photos"), str(tmp_path / "records")
    expected = _make_folder(source, {"train": 4, "val": 1})
    plan = prepare.list_folder(source)
    shards = {"train": 4, "validation": 2}
    assert prepare.prepare(plan, out, num_shards=shards, num_workers=2, worker_index=0) is None  # half done
    first = {name: os.stat(os.path.join(out, name)).st_mtime_ns for name in os.listdir(out) if name[0] != "."}
    assert sorted(first) == ["train-00000-of-00004", "train-00002-of-00004", "validation-00000-of-00002"]
    with pytest.raises(UsageError, match="not complete yet, e.g. train-00001-of-00004"):
        prepare.finalize(out)
    # worker 1 was killed once: a partial shard under its temporary name, never seen by readers
    stale = os.path.join(out, ".train-00001-of-00004.tmp-12345")
    with open(stale, "wb") as f:
        f.write(b"partial")
    assert tfrecord.tfrecord_files(tfrecord.tfrecord_config(f"tfrecord:{out}"), "train") == [
        os.path.join(out, n) for n in sorted(first) if n.startswith("train")]
    manifest = prepare.prepare(plan, out, num_shards=shards, num_workers=2, worker_index=1)
    assert manifest is not None and not os.path.exists(stale)
    assert prepare.prepare(plan, out, num_shards=shards, num_workers=2, worker_index=0) is not None  # nothing redone
    assert all(os.stat(os.path.join(out, name)).st_mtime_ns == mtime for name, mtime in first.items())
    for split in ("train", "validation"):
        assert sorted(r[:2] for r in _records(tf.io.gfile.glob(f"{out}/{split}-*"))) == sorted(expected[split])
    with pytest.raises(UsageError, match="other settings or files"):
        prepare.prepare(plan, out, num_shards=shards, quality=80)


def test_ilsvrc_layout_tars_folders_flat_val_and_ground_truth(tmp_path):
    train, val = tmp_path / "train", tmp_path / "val"
    train.mkdir(), val.mkdir()
    synsets = ["n01440764", "n01443537", "n02102040"]
    for s, synset in enumerate(synsets):
        if s == 1:  # an extracted folder beside the tars
            (train / synset).mkdir()
            for i in range(3):
                (train / synset / f"{synset}_{i}.JPEG").write_bytes(_photo_jpeg(10 * s + i))
            continue
        with tarfile.open(train / f"{synset}.tar", "w") as tar:
            for i in range(3):
                payload = _photo_jpeg(10 * s + i)
                member = tarfile.TarInfo(f"{synset}_{i}.JPEG")
                member.size = len(payload)
                tar.addfile(member, io.BytesIO(payload))
    truth = [2, 0, 1, 1]
    for i in range(len(truth)):
        (val / f"ILSVRC2012_val_{i + 1:08d}.JPEG").write_bytes(_photo_jpeg(50 + i))
    (tmp_path / "val_synsets.txt").write_text("".join(synsets[y] + "\n" for y in truth))
    (tmp_path / "words.txt").write_text("n01440764\ttench, Tinca tinca\nn01443537 goldfish\nn02102040 springer\n")
    out = str(tmp_path / "records")
    plan = prepare.list_ilsvrc(str(train), str(val), str(tmp_path / "val_synsets.txt"),
                               prepare.read_synset_names(str(tmp_path / "words.txt")))
    manifest = prepare.prepare(plan, out, num_shards={"train": 2, "validation": 1}, resize_mode="shorter")
    assert manifest["class_names"] == synsets and manifest["class_texts"] == ["tench, Tinca tinca", "goldfish", "springer"]
    train_records = _records(tf.io.gfile.glob(f"{out}/train-*"))
    assert sorted((r[0], r[1], r[2], r[3]) for r in train_records) == sorted(
        (f"{s}_{i}.JPEG", k, s, manifest["class_texts"][k]) for k, s in enumerate(synsets) for i in range(3))
    assert all(min(r[4], r[5]) == 256 for r in train_records)  # shorter side only
    assert any(r[4] != r[5] for r in train_records)
    val_records = _records(tf.io.gfile.glob(f"{out}/validation-*"))
    assert sorted((r[0], r[1]) for r in val_records) == sorted(
        (f"ILSVRC2012_val_{i + 1:08d}.JPEG", y) for i, y in enumerate(truth))
    assert manifest["splits"]["validation"]["per_class"] == [1, 2, 1]
    # the other ground-truth formats agree; the devkit's numeric IDs (meta.mat order) are refused
    names = sorted(os.listdir(val))
    caffe = tmp_path / "val.txt"
    caffe.write_text("".join(f"{n} {y}\n" for n, y in zip(names, truth)))
    assert prepare.read_validation_labels(str(caffe), names, synsets) == truth
    kaggle = tmp_path / "LOC_val_solution.csv"
    kaggle.write_text("ImageId,PredictionString\n" + "".join(
        f"{n[:-5]},{synsets[y]} 1 2 3 4 {synsets[y]} 5 6 7 8\n" for n, y in zip(names, truth)))
    assert prepare.read_validation_labels(str(kaggle), names, synsets) == truth
    devkit = tmp_path / "ILSVRC2012_validation_ground_truth.txt"
    devkit.write_text("490\n361\n171\n822\n")
    with pytest.raises(UsageError, match="meta.mat"):
        prepare.read_validation_labels(str(devkit), names, synsets)


def error_lines(stderr):
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def _script(*args, **kwargs):
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}
    return subprocess.Popen([sys.executable, SCRIPT, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **kwargs)


def test_sigkill_then_the_same_command_resumes_and_keeps_finished_shards(tmp_path):
    source, out = str(tmp_path / "photos"), str(tmp_path / "records")
    expected = _make_folder(source, {"train": 10, "val": 1})
    command = [f"--input_dir={source}", f"--output_dir={out}", "--train_shards=30", "--validation_shards=3", "--num_processes=1"]
    process = _script(*command)
    deadline = time.time() + 120
    while not (os.path.isdir(out) and any(n.startswith("train-") for n in os.listdir(out))) and time.time() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    kept = {n: os.stat(os.path.join(out, n)).st_mtime_ns for n in os.listdir(out) if n.startswith(("train-", "valid"))}
    assert 1 <= len(kept) < 33 and not os.path.exists(os.path.join(out, "manifest.json")), kept
    process = _script(*command[:-1], "--num_processes=2")  # the same job, now on a pool of 2 processes
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    assert f"--dataset=tfrecord:{out}" in stdout and "train: 30 examples in 30 shards; 0 files skipped" in stdout
    assert "validation: 3 examples in 3 shards; 0 files skipped" in stdout
    assert all(os.stat(os.path.join(out, n)).st_mtime_ns == t for n, t in kept.items())
    assert not [n for n in os.listdir(out) if ".tmp-" in n] and os.path.exists(os.path.join(out, "validation-00002-of-00003"))
    assert sorted(r[:2] for r in _records(tf.io.gfile.glob(f"{out}/train-*"))) == sorted(expected["train"])


def test_ctrl_c_on_a_pool_is_one_line_from_the_parent_alone(tmp_path):
    # A terminal's Ctrl-C reaches the whole process group: each pool worker printed
    # "Process SpawnPoolWorker-1:" (and its traceback) beside the parent's own answer [seen].
    source, out = str(tmp_path / "photos"), str(tmp_path / "records")
    _make_folder(source, {"train": 10, "val": 1})
    # A terminal's Ctrl-C handling: started by a script in the background (as CI runs), SIGINT comes ignored.
    process = _script(f"--input_dir={source}", f"--output_dir={out}", "--train_shards=30", "--validation_shards=3",
                      "--num_processes=2", start_new_session=True,
                      preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while not (os.path.isdir(out) and any(".tmp-" in n or n.startswith("train-") for n in os.listdir(out))) \
            and time.time() < deadline:
        time.sleep(0.005)
    os.killpg(process.pid, signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130 and stderr.strip().splitlines()[-1] == "stopped by Ctrl-C.", stderr[-3000:]
    assert "Process SpawnPoolWorker" not in stderr and "Traceback" not in stderr, stderr[-3000:]


def test_shards_default_to_one_per_256_images_up_to_imagenets_split():
    # A folder of 1,000 photos was written as 1,000 one-image shards (and as many state files).
    assert prepare.default_shards("train", 1000) == 4 and prepare.default_shards("validation", 250) == 1
    assert prepare.default_shards("train", 256) == 1 and prepare.default_shards("train", 257) == 2
    assert prepare.default_shards("train", 1_281_167) == 1024  # ILSVRC2012 keeps the TF scripts' split
    assert prepare.default_shards("validation", 50_000) == 128


@pytest.mark.parametrize("args, message", [
    ([], "--output_dir is required"),
    (["--output_dir=/tmp/x"], "pass exactly one source"),
    (["--output_dir=/tmp/x", "--input_dir=/nonexistent"], "--input_dir=/nonexistent is not a directory"),
    (["--output_dir=/tmp/x", "--input_dir=/tmp", "--num_workers=2", "--worker_index=2"], "--worker_index=2 must be in 0..1"),
    (["--output_dir=/tmp/x", "--input_dir=/tmp", "--quality=0"], "--quality=0 must be 1..100"),
    (["--output_dir=/tmp/x", "--input_dir=/tmp", "--resize=crop"], "value should be one of"),
    (["--output_dir=/tmp/x", "--input_dir=/tmp", "--train_shards=0"], "--train_shards=0 must be at least 1"),
])
def test_script_bad_flags_are_one_line_and_exit_2(args, message):
    process = _script(*args)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 2 and message in stderr and len(stderr.strip().splitlines()) == 1, stderr


@pytest.mark.parametrize("size, note", [(100, True), (76, False)])
def test_the_script_says_how_many_photos_it_enlarged_and_how_to_keep_them(tmp_path, size, note):
    for name in ("cat", "dog"):
        (tmp_path / "photos" / name).mkdir(parents=True)
        for i, side in enumerate((40, 50, 100, 120, 48)):  # one of each class held out: cat_4, dog_4 (48 px)
            Image.new("RGB", (side + 10, side), (i * 40, 90, 0)).save(tmp_path / "photos" / name / f"{i}.jpg")
    process = _script(f"--output_dir={tmp_path / 'records'}", f"--input_dir={tmp_path / 'photos'}", f"--size={size}")
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr[-3000:]
    lines = [line for line in stdout.splitlines() if line.startswith(("train:", "validation:"))]
    counts = [int(m.group(1)) if (m := re.search(r", (\d+) enlarged$", line)) else 0 for line in lines]
    assert sum(counts) == 6, stdout  # the 40, 48 and 50 px photos of each class, wherever the split put them
    # At 76 (a 67-px run's rescaled side) or less, training would enlarge them anyway: no advice to give.
    assert ("note:" in stdout) == note, stdout
    assert not note or (f"note: 6 images had a shorter side under --size={size} and were enlarged, which adds no detail: "
                        "for small photos a --size between the training --image_size x 256/227 (76 for 67) and the "
                        "photos' own takes less room and decodes faster.\n") in stdout, stdout


def test_an_output_dir_holding_other_files_is_refused_before_anything_is_written(tmp_path):
    # A home folder or a run: the shards were written among its files (train.py refuses such a --model_dir).
    for name in ("cat", "dog"):
        (tmp_path / "photos" / name).mkdir(parents=True)
        Image.new("RGB", (80, 80)).save(tmp_path / "photos" / name / "0.jpg")
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "notes.txt").write_text("mine")
    process = _script(f"--output_dir={tmp_path / 'home'}", f"--input_dir={tmp_path / 'photos'}")
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 2 and error_lines(stderr) == [
        f"error: --output_dir={tmp_path / 'home'} holds other files (notes.txt): choose a new or empty folder, so that "
        "the shards do not mix with them."], stderr
    assert os.listdir(tmp_path / "home") == ["notes.txt"]


def test_an_output_dir_that_cannot_be_written_is_one_line_before_any_image_is_read(tmp_path):
    process = _script("--output_dir=/proc/no_such_folder", f"--input_dir={tmp_path}")  # a traceback before
    _, stderr = process.communicate(timeout=120)
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert process.returncode == 2 and "Traceback" not in stderr, stderr[-3000:]
    assert errors == [line for line in stderr.splitlines() if line.strip()][-1:]
    assert errors[0].startswith("error: --output_dir=/proc/no_such_folder is not writable (")


def test_an_output_dir_inside_the_image_folder_is_refused_before_it_is_made(tmp_path):
    # It was made first and then listed as a class ("class folder .../records has no images"),
    # and the empty folder left behind broke every later `--dataset folder:` run on those images.
    for name in ("cat", "dog"):
        (tmp_path / "photos" / name).mkdir(parents=True)
    process = _script(f"--output_dir={tmp_path / 'photos' / 'records'}", f"--input_dir={tmp_path / 'photos'}")
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 2 and stderr.strip().startswith(f"error: --output_dir={tmp_path}/photos/records is inside "
                                                                 f"the dataset folder {tmp_path}/photos"), stderr
    assert sorted(os.listdir(tmp_path / "photos")) == ["cat", "dog"]


def test_training_with_mean_channel_records_it_and_exports_it(prepared, tmp_path):
    from keras_alexnet import export, training

    _, out, _, manifest = prepared
    # One step learns nothing: where the engine refuses to export a model at chance (#13), ask it to.
    at_chance = {"export_at_chance": True} if "export_at_chance" in {
        f.name for f in dataclasses.fields(training.TrainConfig)} else {}
    config = training.TrainConfig(dataset=f"tfrecord:{out}?mean=channel", image_size=67, batch_size=4, epochs=1,
                                  steps_per_epoch=1, precision="float32", xla=False, strategy="default",
                                  model_dir=str(tmp_path / "run"), export_dir=str(tmp_path / "export"), **at_chance)
    result = training.train(config)
    assert json.load(open(tmp_path / "run" / "config.json"))["mean_rgb"] == manifest["mean_rgb"]
    jpeg = _photo_jpeg(7)
    view = augment.center_view(augment.decode_for_view(jpeg, 67), 67, np.array(manifest["mean_rgb"], np.float32))
    expected = tf.nn.softmax(result["model"](view[None], training=False)).numpy()
    serve = tf.saved_model.load(result["export_path"]).signatures[export.SERVING_SIGNATURE]
    got = serve(**{export.IMAGE_BYTES_INPUT: tf.constant([jpeg])})["probabilities"].numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_input_benchmark_reads_the_prepared_shards(prepared, tmp_path):
    from keras_alexnet import benchmarks

    out, source = prepared[1], str(tmp_path / "photos")
    _make_folder(source, {"train": 2})  # the plain decode's files (the prepared source has a broken one)
    result = benchmarks.input_benchmark(image_dir=source, dataset=f"tfrecord:{out}", batch_size=4, num_batches=2, runs=1)
    assert result["images_per_sec_per_core"] > 0 and result["decode_images_per_sec_per_core"] > 0
    assert result["source_images"].endswith(f"pipeline reads tfrecord:{out}")


def test_output_on_a_tensorflow_filesystem(tmp_path):
    """ram:// stands in for gs://: the shards, the manifest and the check go through tf.io.gfile."""
    source, out = str(tmp_path / "photos"), f"ram://prepare_{os.getpid()}/records"
    expected = _make_folder(source, {"train": 2, "val": 1})
    manifest = prepare.prepare(prepare.list_folder(source), out, num_shards={"train": 2, "validation": 1})
    assert manifest["splits"]["train"]["num_examples"] == 6
    assert sorted(r[:2] for r in _records(tf.io.gfile.glob(f"{out}/train-*"))) == sorted(expected["train"])
    assert not tf.io.gfile.glob(f"{out}/.*tmp-*")
    assert data.dataset_info(f"tfrecord:{out}").num_examples == {"train": 6, "validation": 3}
    with tf.io.gfile.GFile(f"{out}/validation-00000-of-00001", "wb") as f:
        f.write(b"truncated")
    with pytest.raises(UsageError, match="validation-00000-of-00001 is truncated"):
        data.dataset_info(f"tfrecord:{out}")


def test_the_report_counts_one_of_a_kind_in_the_singular():
    manifest = {"size": 256, "mean_rgb": [1.0, 2.0, 3.0], "splits": {
        "train": {"num_examples": 1, "shards": ["train-00000-of-00001"], "skipped": [["a/x.jpg", "truncated"]]}}}
    code = ("import json, sys; sys.path.insert(0, 'scripts'); import prepare_data; "
            "prepare_data.FLAGS(['prepare_data.py', '--output_dir=out']); prepare_data.report(json.loads(sys.argv[1]))")
    done = subprocess.run([sys.executable, "-c", code, json.dumps(manifest)], capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[:2] == ["train: 1 example in 1 shard; 1 file skipped", "  skipped a/x.jpg: truncated"]
