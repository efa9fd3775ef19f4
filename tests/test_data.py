"""Tests for keras_alexnet.data: every source on data the test makes, sharding, determinism,
bad input, the tf.data service."""

import io
import logging
import os
import socket

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_alexnet import augment, data, shapes
from keras_alexnet import image_folder as folder_layout  # the fixture below is called image_folder
from keras_alexnet.errors import UsageError
from test_readme import python_blocks

MEAN = np.array(augment.IMAGENET_MEAN_RGB, np.float32)
SMALL_SHAPES = "shapes:train=40,validation=23,size=32"


def _encode(array, fmt="JPEG", mode=None):
    image = Image.fromarray(array)
    if mode:
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, fmt, quality=95)
    return buffer.getvalue()


def _grey(k, shape=(30, 40)):
    """A solid image whose grey level encodes the example number k (read back by _ids)."""
    return np.full(shape + (3,), 20 + 10 * k, np.uint8)


def _ids(images):
    """Example numbers from centre views of _grey images."""
    values = images.numpy().mean(axis=tuple(range(1, images.ndim))) + MEAN.mean()
    return [int(round((v - 20) / 10)) for v in values]


def _collect(dataset):
    ids, labels = [], []
    for images, batch_labels in dataset:
        ids += _ids(images)
        labels += batch_labels.numpy().tolist()
    return ids, labels


@pytest.fixture
def image_folder(tmp_path):
    """3 classes (names not in creation order), 8 train and 5 val images: JPEG and PNG, and mango's
    only in WebP (a class folder of WebP files alone is a dataset too)."""
    root = tmp_path / "images"
    k = 0
    layout = {"train": {"zebra": 3, "apple": 3, "mango": 2}, "val": {"zebra": 2, "apple": 2, "mango": 1}}
    expected = {}
    for split, classes in layout.items():
        for name, count in classes.items():
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                fmt, ext = ("WEBP", "webp") if name == "mango" else ("PNG", "png") if i % 2 else ("JPEG", "jpg")
                (root / split / name / f"{i}.{ext}").write_bytes(_encode(_grey(k), fmt))
                expected[k] = ["apple", "mango", "zebra"].index(name)
                k += 1
    return root, expected


def _write_tfrecords(path, examples, num_files):
    """examples: list of (image bytes, label as stored); round-robin over num_files files."""
    writers = [tf.io.TFRecordWriter(str(path / f"{split}-{i:05d}-of-{num_files:05d}"))
               for split in ("train", "validation") for i in range(num_files)]
    for index, (image, label) in enumerate(examples):
        feature = {
            "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image])),
            "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
        }
        record = tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()
        writers[index % num_files].write(record)              # train
        writers[num_files + index % num_files].write(record)  # validation
    for writer in writers:
        writer.close()


@pytest.fixture(autouse=True)
def clean_bad_image_log():
    data.BAD_IMAGES.reset()
    yield
    data.BAD_IMAGES.reset()


# ----------------------------------------------------------------------------- shapes, synthetic


def test_shapes_training_batches():
    dataset = data.make_dataset(SMALL_SHAPES, "train", image_size=67, batch_size=16, training=True, seed=1)
    batches = list(dataset.take(6))  # 96 > 40: it repeats
    images, labels = batches[0]
    assert images.shape == (16, 67, 67, 3) and images.dtype == tf.float32
    assert labels.shape == (16,) and labels.dtype == tf.int32
    assert all(b[0].shape[0] == 16 for b in batches)
    assert set(np.concatenate([b[1].numpy() for b in batches])) <= set(range(10))


def test_uint8_training_batches_finish_to_the_float_batches():
    def first_batches(image_dtype):
        dataset = data.make_dataset(SMALL_SHAPES, "train", image_size=67, batch_size=8, training=True, seed=2,
                                    deterministic=True, image_dtype=image_dtype)
        return list(dataset.take(2))

    for ((crops, shifts), labels), (images, float_labels) in zip(first_batches("uint8"), first_batches("float32")):
        assert crops.dtype == tf.uint8 and crops.shape == (8, 67, 67, 3) and shifts.shape == (8, 3)
        np.testing.assert_array_equal(labels, float_labels)
        np.testing.assert_allclose(augment.finish_views(crops, shifts).numpy(), images.numpy(), atol=1e-4)
    (crops, shifts), labels = next(iter(data.make_dataset("synthetic", "train", image_size=67, batch_size=4,
                                                          training=True, image_dtype="uint8")))
    assert crops.dtype == tf.uint8 and crops.shape == (4, 67, 67, 3) and shifts.shape == (4, 3)
    with pytest.raises(UsageError, match="image_dtype"):
        data.make_dataset(SMALL_SHAPES, "validation", image_size=67, batch_size=8, training=False, image_dtype="uint8")


@pytest.mark.parametrize("crops", [1, 10])
def test_shapes_evaluation_sees_every_example_once(crops):
    dataset = data.make_dataset(SMALL_SHAPES, "validation", image_size=67, batch_size=10, training=False, crops=crops)
    batches = list(dataset)
    assert [len(b[1]) for b in batches] == [10, 10, 3]
    assert batches[0][0].shape == ((10, 67, 67, 3) if crops == 1 else (10, 10, 67, 67, 3))
    _, labels = shapes.encoded_split(shapes.parse_spec(SMALL_SHAPES), "validation")
    np.testing.assert_array_equal(np.concatenate([b[1].numpy() for b in batches]), labels)


def test_dataset_info_shapes_and_synthetic():
    info = data.dataset_info("shapes")
    assert info.num_classes == 10 and info.class_names[0] == "circle"
    assert info.num_examples == {"train": 4000, "validation": 1000}
    info = data.dataset_info("synthetic:num_classes=5")
    assert info.num_classes == 5 and info.num_examples["validation"] == 50_000


def test_synthetic():
    images, labels = next(iter(data.make_dataset("synthetic", "train", image_size=67, batch_size=4, training=True)))
    assert images.shape == (4, 67, 67, 3) and labels.shape == (4,) and labels.dtype == tf.int32
    dataset = data.make_dataset("synthetic", "validation", image_size=67, batch_size=1000, training=False,
                                input_context=tf.distribute.InputContext(2, 1, 1))
    assert sum(len(labels) for _, labels in dataset) == 25_000


def test_same_seed_same_batches_other_seed_other_batches():
    def first_batches(seed):
        dataset = data.make_dataset(SMALL_SHAPES, "train", image_size=67, batch_size=8, training=True,
                                    seed=seed, deterministic=True)
        return [b[0].numpy() for b in dataset.take(3)]

    a, b, c = first_batches(5), first_batches(5), first_batches(6)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, atol=1e-4)
    assert np.abs(a[0] - c[0]).max() > 1.0


def test_mean_image(tmp_path):
    mean_image = data.compute_mean_image(SMALL_SHAPES, 67, num_images=30, batch_size=16)
    assert mean_image.shape == (67, 67, 3) and mean_image.dtype == np.float32
    assert 20 < mean_image.mean() < 235
    dataset = data.make_dataset(SMALL_SHAPES, "validation", image_size=67, batch_size=23, training=False,
                                mean_image=mean_image)
    images, _ = next(iter(dataset))
    # With the per-pixel mean of (nearly) the same distribution, the batch mean is close to 0.
    assert abs(float(tf.reduce_mean(images))) < 15


# ----------------------------------------------------------------------------- folder


def test_folder_info_and_evaluation(image_folder):
    root, expected = image_folder
    info = data.dataset_info(f"folder:{root}")
    assert info.class_names == ["apple", "mango", "zebra"]
    assert info.num_examples == {"train": 8, "validation": 5}
    ids, labels = _collect(data.make_dataset(f"folder:{root}", "validation", image_size=67, batch_size=2,
                                             training=False, deterministic=True))
    assert sorted(ids) == list(range(8, 13))
    assert labels == [expected[k] for k in ids]


def test_folder_training_labels_match_images(image_folder):
    root, expected = image_folder
    dataset = data.make_dataset(f"folder:{root}", "train", image_size=67, batch_size=4, training=True, seed=3,
                                augmentation="none")
    ids, labels = _collect(dataset.take(6))
    assert set(ids) == set(range(8))
    assert labels == [expected[k] for k in ids]


def _flat_folder(root, per_class=11):
    """root/<class>/*.jpg, no train/ or val/: two classes of _grey images; returns {id: label}."""
    expected = {}
    for label, name in enumerate(["cat", "dog"]):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            k = label * per_class + i
            (root / name / f"img_{i:03d}.jpg").write_bytes(_encode(_grey(k)))
            expected[k] = label
    return expected


def _clear_folder_caches():
    folder_layout.class_names.cache_clear()
    folder_layout.folder_files.cache_clear()
    folder_layout._flat_splits.cache_clear()


def test_a_flat_folder_holds_out_a_fifth_of_each_class_chosen_by_file_name(tmp_path):
    # PATH/<class>/* (keras.utils.image_dataset_from_directory's layout): the held-out files are
    # chosen by a hash of their path, so every run and the evaluation see the same split.
    root = tmp_path / "flat"
    expected = _flat_folder(root)
    info = data.dataset_info(f"folder:{root}")
    assert info.class_names == ["cat", "dog"]
    assert info.num_examples["train"] + info.num_examples["validation"] == 22
    assert info.num_examples["validation"] >= 1 and info.num_examples["train"] >= 12
    assert len(info.notes) == 1 and info.notes[0].startswith(f"held out: about 20% of each class folder of {root}")
    splits = {}
    for split in ("train", "validation"):
        ids, labels = _collect(data.make_dataset(f"folder:{root}", split, image_size=67, batch_size=4,
                                                 training=False, deterministic=True))
        assert labels == [expected[k] for k in ids]
        splits[split] = set(ids)
    assert not splits["train"] & splits["validation"]
    assert splits["train"] | splits["validation"] == set(expected)
    # Adding a file moves no other: a held-out image never turns into a training one.
    before = {split: set(folder_layout.folder_files(str(root), split)[0]) for split in ("train", "validation")}
    (root / "cat" / "img_999.jpg").write_bytes(_encode(_grey(0)))
    _clear_folder_caches()
    after = {split: set(folder_layout.folder_files(str(root), split)[0]) for split in ("train", "validation")}
    assert str(root / "cat" / "img_999.jpg") in after["train"] | after["validation"]  # the folder was read again
    for split in ("train", "validation"):
        assert before[split] <= after[split]
    # About a fifth of any names, whatever they look like.
    names = [f"class_{c}/IMG_{i:05d}.JPG" for c in range(3) for i in range(3000)]
    assert 0.18 < sum(map(folder_layout.is_held_out, names)) / len(names) < 0.22


def test_images_in_subfolders_of_a_class_folder_are_that_classs(tmp_path):
    # As keras.utils.image_dataset_from_directory reads them; they were left out without a word.
    # Hidden files and folders stay out.
    root = tmp_path / "photos"
    for split, first in (("train", 0), ("val", 10)):
        for label, name in enumerate(["cat", "dog"]):
            (root / split / name / "2024" / "june").mkdir(parents=True)
            (root / split / name / ".thumbnails").mkdir()
            (root / split / name / f"a{label}.jpg").write_bytes(_encode(_grey(first + 3 * label)))
            (root / split / name / "2024" / f"b{label}.jpg").write_bytes(_encode(_grey(first + 3 * label + 1)))
            (root / split / name / "2024" / "june" / f"c{label}.jpg").write_bytes(_encode(_grey(first + 3 * label + 2)))
            (root / split / name / ".thumbnails" / "t.jpg").write_bytes(_encode(_grey(21)))
            (root / split / name / "2024" / ".hidden.jpg").write_bytes(_encode(_grey(20)))
    (root / "train" / "__MACOSX" / "cat").mkdir(parents=True)  # a zip made on a Mac, unpacked: not a class
    (root / "train" / "__MACOSX" / "cat" / "._a0.jpg").write_bytes(b"Mac OS X resource fork")
    info = data.dataset_info(f"folder:{root}")
    assert info.class_names == ["cat", "dog"] and info.num_examples == {"train": 6, "validation": 6}
    ids, labels = _collect(data.make_dataset(f"folder:{root}", "validation", image_size=67, batch_size=4, training=False))
    assert sorted(zip(ids, labels)) == [(10, 0), (11, 0), (12, 0), (13, 1), (14, 1), (15, 1)]


def test_a_train_folder_without_val_is_refused_before_training(tmp_path):
    # It used to train a whole epoch and then fail at the first evaluation.
    root = tmp_path / "photos"
    _flat_folder(root / "train")
    with pytest.raises(UsageError) as refused:
        data.dataset_info(f"folder:{root}")
    assert str(refused.value) == (f"{root} has train/ but no val/ folder: add {root}/val/<class>/*.jpg, or move the "
                                  f"class folders up into {root} to hold out about 20% of each")


def test_a_train_folder_beside_test_says_how_to_use_it(tmp_path):
    # Kaggle's train/ and test/: the error names test/ and the link that makes it the held-out split.
    root = tmp_path / "photos"
    _flat_folder(root / "train")
    _flat_folder(root / "test")
    with pytest.raises(UsageError) as refused:
        data.dataset_info(f"folder:{root}")
    assert str(refused.value) == (f"{root} has train/ and test/ but no val/ folder: to hold out test/, link it as "
                                  f"val/ (ln -s test {root}/val), or add {root}/val/<class>/*.jpg")
    (root / "val").symlink_to("test")
    _clear_folder_caches()
    assert data.dataset_info(f"folder:{root}").num_examples == {"train": 22, "validation": 22}


def test_a_flat_class_whose_every_file_is_held_out_is_refused(tmp_path):
    root = tmp_path / "flat"
    _flat_folder(root)
    held_out_name = next(f"x{i}.jpg" for i in range(1000) if folder_layout.is_held_out(f"tiny/x{i}.jpg"))
    (root / "tiny").mkdir()
    (root / "tiny" / held_out_name).write_bytes(_encode(_grey(1)))
    with pytest.raises(UsageError, match=f"^class folder {root}/tiny has too few files to hold out 20% and train on the rest"):
        data.dataset_info(f"folder:{root}")


def test_every_flat_class_of_two_or_more_files_has_a_held_out_file(tmp_path):
    # By the hash alone a class of ten files had none held out one time in nine, and the held-out
    # figures then said nothing about it. The file with the lowest hash stands in.
    names = next([f"img_{t}_{i}.jpg" for i in range(5)] for t in range(1000)
                 if not any(folder_layout.is_held_out(f"few/img_{t}_{i}.jpg") for i in range(5)))
    mask = folder_layout.held_out_mask([f"few/{name}" for name in names])
    assert sum(mask) == 1
    assert names[mask.index(True)] == min(names, key=lambda n: (folder_layout._hash_percent(f"few/{n}"), f"few/{n}"))
    root = tmp_path / "flat"
    _flat_folder(root)
    (root / "few").mkdir()
    for k, name in enumerate(names):
        (root / "few" / name).write_bytes(_encode(_grey(k)))
    validation = folder_layout.folder_files(str(root), "validation")
    assert str(root / "few" / names[mask.index(True)]) in validation[0] and validation[1].count(2) == 1  # cat, dog, few
    assert not any(n.startswith("note: no held-out image") for n in data.dataset_info(f"folder:{root}").notes)
    # Where the hash holds files out, they are the held-out ones, as before.
    many = [f"cat/IMG_{i:04d}.JPG" for i in range(50)]
    assert 0 < sum(map(folder_layout.is_held_out, many)) < 50
    for files in (["a.jpg"], many):
        assert folder_layout.held_out_mask(files) == [folder_layout.is_held_out(f) for f in files]


def test_a_class_with_no_held_out_image_is_named(tmp_path):
    # A flat class of one file is trained on and never measured; so is a class missing from val/.
    root = tmp_path / "flat"
    _flat_folder(root)
    trained_name = next(f"x{i}.jpg" for i in range(1000) if not folder_layout.is_held_out(f"lone/x{i}.jpg"))
    (root / "lone").mkdir()
    (root / "lone" / trained_name).write_bytes(_encode(_grey(1)))
    assert data.dataset_info(f"folder:{root}").notes[1] == (
        "note: no held-out image of 1 class (lone): the held-out figures do not measure it; "
        "give each class folder two or more files")
    split = tmp_path / "split"
    for name in ("ant", "bee", "cat"):
        (split / "train" / name).mkdir(parents=True)
        (split / "train" / name / "a.jpg").write_bytes(_encode(_grey(1)))
    (split / "val" / "cat").mkdir(parents=True)
    (split / "val" / "cat" / "b.jpg").write_bytes(_encode(_grey(2)))
    assert data.dataset_info(f"folder:{split}").notes == [
        f"note: no held-out image of 2 classes (ant, bee): the held-out figures do not measure them; "
        f"add their folders to {split}/val/"]


@pytest.mark.parametrize("training", [False, True])
def test_two_input_pipelines_read_disjoint_files(image_folder, training):
    root, _ = image_folder
    seen = []
    for pipeline in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline, num_replicas_in_sync=2)
        dataset = data.make_dataset(f"folder:{root}", "train", image_size=67, batch_size=2, training=training,
                                    input_context=context, seed=1, augmentation="none")
        ids, _ = _collect(dataset.take(8) if training else dataset)
        seen.append(set(ids))
    assert not seen[0] & seen[1]
    assert seen[0] | seen[1] == set(range(8))


# ----------------------------------------------------------------------------- tfrecord


@pytest.mark.parametrize("num_files", [1, 3])
def test_tfrecord_labels_offset_and_sharding(tmp_path, num_files):
    examples = [(_encode(_grey(k)), 1 + k % 4) for k in range(10)]  # labels stored 1..4
    _write_tfrecords(tmp_path, examples, num_files)
    spec = f"tfrecord:{tmp_path}?num_classes=4"
    info = data.dataset_info(spec)
    assert info.num_classes == 4 and info.num_examples == {"train": 10, "validation": 10}
    seen = []
    for pipeline in range(2):
        context = tf.distribute.InputContext(2, pipeline, 2)
        ids, labels = _collect(data.make_dataset(spec, "validation", image_size=67, batch_size=3, training=False,
                                                 input_context=context))
        assert labels == [k % 4 for k in ids]  # the offset of 1 removed
        seen.append(set(ids))
    assert not seen[0] & seen[1] and seen[0] | seen[1] == set(range(10))
    images, labels = next(iter(data.make_dataset(spec, "train", image_size=67, batch_size=5, training=True)))
    assert images.shape == (5, 67, 67, 3)


def test_tfrecord_pattern_with_split_and_label_offset_zero(tmp_path):
    _write_tfrecords(tmp_path, [(_encode(_grey(k)), k % 3) for k in range(6)], 1)
    spec = f"tfrecord:{tmp_path}/{{split}}-*?label_offset=0&num_classes=3"
    ids, labels = _collect(data.make_dataset(spec, "validation", image_size=67, batch_size=6, training=False))
    assert labels == [k % 3 for k in ids]
    imagenet = data.dataset_info(f"tfrecord:{tmp_path}")
    assert imagenet.class_names[:2] == ["n01440764", "n01443537"]
    # Read as ImageNet's without being told (a 3-class set trained a 1000-way net without a word): said.
    assert imagenet.notes == [f"{tmp_path} has no manifest.json (scripts/prepare_data.py writes one): reading it as "
                              "ImageNet's TFRecords, 1000 classes with labels 1..1000; for other data give "
                              f"tfrecord:{tmp_path}?num_classes=N&label_offset=0 (or 1 for labels from 1)"]
    assert data.dataset_info(f"{spec}").notes == []  # told: nothing to say


def test_tfrecord_out_of_range_labels_are_skipped_and_counted(tmp_path):
    # ImageNet TFRecords label 1..1000; reading them with offset 0 must not pass 1000 silently.
    _write_tfrecords(tmp_path, [(_encode(_grey(k)), k) for k in range(4)], 1)
    spec = f"tfrecord:{tmp_path}?num_classes=3"  # stored labels 0..3, offset 1: 0 -> -1 is bad
    ids, labels = _collect(data.make_dataset(spec, "validation", image_size=67, batch_size=4, training=False))
    assert sorted(ids) == [1, 2, 3] and labels == [k - 1 for k in ids]
    assert data.BAD_IMAGES.count == 1


# ----------------------------------------------------------------------------- tfds


def test_tfds_mock_imagenet():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=12):
        info = data.dataset_info("tfds:imagenet2012")
        assert info.num_classes == 1000 and info.class_names[0] == "n01440764"
        assert info.num_examples["validation"] == 12
        images, labels = next(iter(data.make_dataset("tfds:imagenet2012", "train", image_size=67, batch_size=4,
                                                     training=True, seed=0)))
        assert images.shape == (4, 67, 67, 3) and labels.dtype == tf.int32
        total = sum(len(b[1]) for b in data.make_dataset("tfds:imagenet2012", "validation", image_size=67,
                                                         batch_size=5, training=False))
        assert total == 12


def test_tfds_not_prepared_is_a_one_line_error(tmp_path, caplog):
    with pytest.raises(UsageError, match=r"not prepared.*tfds build mnist") as error:
        data.make_dataset("tfds:mnist", "train", image_size=67, batch_size=4, training=True, data_dir=str(tmp_path))
    assert "\n" not in str(error.value)
    assert "manual_dir" not in str(error.value)  # mnist downloads itself; the ILSVRC2012 tars were named for it too
    with pytest.raises(UsageError, match=r"imagenet2012 is not prepared in .*: pass --manual_dir=DIR holding its "
                                         r"downloaded files"):
        data.dataset_info("tfds:imagenet2012", data_dir=str(tmp_path))
    with pytest.raises(UsageError, match="unknown TFDS dataset"):
        data.dataset_info("tfds:no_such_dataset_xyz", data_dir=str(tmp_path))
    # Before the error, TFDS's "Variant folder .../mnist/3.0.1 has no dataset_info.json" (a folder
    # that does not exist) came out as a warning line.
    assert not [r for r in caplog.records if "dataset_info.json" in r.getMessage()], caplog.text


# ----------------------------------------------------------------------------- bad input


@pytest.fixture
def bad_folder(tmp_path):
    root = tmp_path / "bad"
    good, bad = root / "train" / "good", root / "train" / "bad"
    good.mkdir(parents=True)
    bad.mkdir(parents=True)
    (good / "0.jpg").write_bytes(_encode(_grey(0)))
    (good / "1_png_named.jpg").write_bytes(_encode(_grey(1), "PNG"))
    (good / "2_cmyk.jpg").write_bytes(_encode(_grey(2), "JPEG", "CMYK"))
    (good / "3_gray.jpg").write_bytes(_encode(_grey(3), "JPEG", "L"))
    truncated = _encode(np.random.default_rng(0).integers(0, 255, (60, 60, 3), dtype=np.uint8))
    (bad / "truncated.jpg").write_bytes(truncated[: len(truncated) // 3])
    (bad / "empty.jpg").write_bytes(b"")
    (bad / "notes.txt").write_bytes(b"not an image")
    return root


def test_bad_images_are_decoded_or_skipped_counted_and_warned_once(bad_folder, caplog):
    caplog.set_level(logging.WARNING)
    dataset = data.make_dataset(f"folder:{bad_folder}", "train", image_size=67, batch_size=3, training=False)
    ids, labels = _collect(dataset)
    assert sorted(ids) == [0, 1, 2, 3]           # PNG named .jpg, CMYK and grayscale decode
    assert set(labels) == {1}                    # all from "good" (classes: bad=0, good=1)
    assert data.BAD_IMAGES.count == 3
    assert sorted(os.path.basename(n) for n in data.BAD_IMAGES.first_names) == ["empty.jpg", "notes.txt", "truncated.jpg"]
    warnings = [r for r in caplog.records if "could not be read or decoded" in r.getMessage()]
    assert len(warnings) == 1
    assert "3 undecodable images skipped" in data.BAD_IMAGES.summary()


def test_a_group_of_examples_that_all_fail_is_counted_and_the_next_group_kept(tmp_path):
    # Examples are tried GROUP_SIZE at a time; a group in which every one fails still counts each.
    bad, good = tmp_path / "train" / "a_bad", tmp_path / "train" / "b_good"
    bad.mkdir(parents=True)
    good.mkdir(parents=True)
    for i in range(data.GROUP_SIZE + 2):
        (bad / f"{i:02d}.jpg").write_bytes(b"")
    (good / "0.jpg").write_bytes(_encode(_grey(0)))
    (good / "1.jpg").write_bytes(_encode(_grey(1)))
    ids, labels = _collect(data.make_dataset(f"folder:{tmp_path}", "train", image_size=67, batch_size=2,
                                             training=False, deterministic=True))
    assert sorted(ids) == [0, 1] and labels == [1, 1]
    assert data.BAD_IMAGES.count == data.GROUP_SIZE + 2


def test_bad_images_never_stop_training(bad_folder):
    dataset = data.make_dataset(f"folder:{bad_folder}", "train", image_size=67, batch_size=4, training=True, seed=0)
    for images, _ in dataset.take(5):
        assert images.shape == (4, 67, 67, 3)
    assert data.BAD_IMAGES.count >= 5  # empty and non-image files fail every epoch


def test_no_tensorflow_error_lines_at_input_sizes_that_are_multiples_of_4(capfd):
    # At such sizes a group's views are memory-aligned, the trim of its placeholder was a
    # zero-copy slice, and rebatch logged "E... Tensor RefCount not reliable if buf_ points to a
    # SubBuffer" for every group: 8 lines a training step at 224 (torchvision's size), 2 for
    # every 8 held-out images at 68.
    for split, size, training, dtype in (("validation", 68, False, "float32"), ("train", 72, True, "uint8")):
        dataset = data.make_dataset("shapes", split, image_size=size, batch_size=16, training=training, image_dtype=dtype)
        for element in dataset.take(3):
            assert tf.nest.flatten(element)[0].shape[:3] == (16, size, size)
    assert "RefCount" not in capfd.readouterr().err


def test_user_errors_are_one_line_and_name_the_path(tmp_path):
    cases = {
        f"folder:{tmp_path}/missing": "does not exist",
        f"folder:{__file__}": "is a file, not a folder",
        f"folder:{tmp_path}": "has no class folders; expected",
        "imagenet": "unknown dataset",
        "folder:": "dataset 'folder:' names no path: write it as folder:PATH",
        "tfrecord:": "dataset 'tfrecord:' names no glob: write it as tfrecord:GLOB",
        f"tfrecord:{tmp_path}/*.tfrecord": "{split}",
        f"tfrecord:{tmp_path}": "no TFRecord files match",
    }
    for spec, message in cases.items():
        with pytest.raises(UsageError, match=message.replace("{", r"\{").replace("}", r"\}")) as error:
            data.make_dataset(spec, "train", image_size=67, batch_size=2, training=True)
        assert "\n" not in str(error.value)
    (tmp_path / "one" / "train" / "cat").mkdir(parents=True)  # one class: trained to 100% and 'done' before
    (tmp_path / "one" / "train" / "cat" / "0.jpg").write_bytes(_encode(_grey(0)))
    with pytest.raises(UsageError, match=f"^{tmp_path}/one/train has one class folder \\(cat\\); a classifier needs two or more"):
        data.dataset_info(f"folder:{tmp_path}/one")
    (tmp_path / "train" / "empty_class").mkdir(parents=True)
    (tmp_path / "train" / "cat").mkdir(parents=True)
    (tmp_path / "train" / "cat" / "0.jpg").write_bytes(_encode(_grey(0)))
    with pytest.raises(UsageError, match=f"class folder {tmp_path}/train/empty_class has no images"):
        data.dataset_info(f"folder:{tmp_path}")
    (tmp_path / "train" / "empty_class" / "readme.txt").write_text("x")
    with pytest.raises(UsageError, match=r"empty_class has no images TensorFlow decodes \(JPEG, PNG, GIF, BMP or WebP\), "
                                         r"only 1 other file \(1 .txt\): convert them to JPEG or PNG$"):
        data.make_dataset(f"folder:{tmp_path}", "train", image_size=67, batch_size=2, training=True)
    for name in ("0.tif", "1.tif", "2.TIFF"):  # scans, microscopy: prepare_data.py reads them
        (tmp_path / "train" / "empty_class" / name).write_bytes(b"II*\x00")
    with pytest.raises(UsageError, match=r"only 4 other files \(2 .tif, 1 .tiff, 1 .txt\): convert them to JPEG or PNG, or write "
                                         f"the folder as TFRecords with scripts/prepare_data.py --input_dir {tmp_path} "
                                         r"\(it reads TIFF\)$"):
        data.make_dataset(f"folder:{tmp_path}", "train", image_size=67, batch_size=2, training=True)
    with pytest.raises(UsageError, match="split"):
        data.make_dataset("shapes", "test", image_size=67, batch_size=2, training=False)
    with pytest.raises(UsageError, match="augmentation"):
        data.make_dataset("shapes", "train", image_size=67, batch_size=2, training=True, augmentation="mixup")


# ----------------------------------------------------------------------------- tf.data service


def test_tf_data_service_on_localhost():
    dispatcher = tf.data.experimental.service.DispatchServer()
    worker = tf.data.experimental.service.WorkerServer(
        tf.data.experimental.service.WorkerConfig(dispatcher_address=dispatcher.target.split("://")[1]))
    try:
        dataset = data.make_dataset(SMALL_SHAPES, "validation", image_size=67, batch_size=8, training=False,
                                    data_service=dispatcher.target)
        labels = np.concatenate([b[1].numpy() for b in dataset])
        _, expected = shapes.encoded_split(shapes.parse_spec(SMALL_SHAPES), "validation")
        np.testing.assert_array_equal(np.sort(labels), np.sort(expected))  # every example once
        dataset = data.make_dataset(SMALL_SHAPES, "train", image_size=67, batch_size=8, training=True,
                                    data_service=dispatcher.target)
        assert [b[0].shape for b in dataset.take(2)] == [(8, 67, 67, 3)] * 2
    finally:
        worker.stop()
        dispatcher.stop()
    with pytest.raises(UsageError, match="grpc://host:port"):
        data.make_dataset(SMALL_SHAPES, "train", image_size=67, batch_size=8, training=True, data_service="localhost")


def _closed_port():
    with socket.socket() as listener:
        listener.bind(("localhost", 0))
        return listener.getsockname()[1]  # closed on return: nothing listens there


def test_a_data_service_where_no_dispatcher_answers_is_one_line_at_once():
    # tf.data's client waited for it without a word; a training run sat silent before its header.
    port = _closed_port()
    address = f"grpc://localhost:{port}"
    with pytest.raises(UsageError, match=rf"^--data_service={address}: no tf.data service dispatcher answers at "
                                         rf"localhost:{port} \(.+\): start it first \(docs/input.md\), or leave --data_service out$"):
        data.make_dataset(SMALL_SHAPES, "train", image_size=67, batch_size=8, training=True, data_service=address)


def test_a_new_source_is_one_class_and_one_registry_line(monkeypatch):
    """The extension point of docs/input.md, "Adding a data source": a class with KIND, info() and
    records(), registered in sources.SOURCES, is read by the whole pipeline."""
    from keras_alexnet import sources

    class Constant:
        KIND, FORM, NEEDS_ARGUMENT = "constant", "constant", False

        def __init__(self, spec, argument, data_dir=None, manual_dir=None):
            self.spec, self.num_classes, self.mean_rgb = spec, 2, None

        def info(self):
            return sources.common.DatasetInfo(self.spec, 2, ["dark", "light"], {"train": 4, "validation": 4})

        def records(self, split, training, input_context, seed, shuffle_buffer):
            images = tf.stack([tf.io.encode_png(tf.fill([8, 8, 3], tf.constant(v, tf.uint8))) for v in (0, 255, 0, 255)])
            names = tf.constant([f"constant/{i}" for i in range(4)])
            return (tf.data.Dataset.from_tensor_slices((images, tf.constant([0, 1, 0, 1], tf.int32), names)),
                    lambda payload, label: (payload, label))

    monkeypatch.setitem(sources.SOURCES, "constant", Constant)
    assert data.dataset_info("constant").class_names == ["dark", "light"]
    (images, labels), = list(data.make_dataset("constant", "validation", image_size=67, batch_size=4, training=False))
    assert images.shape == (4, 67, 67, 3) and labels.numpy().tolist() == [0, 1, 0, 1]
    assert float(images[1, 0, 0, 0]) == pytest.approx(255 - augment.IMAGENET_MEAN_RGB[0])
    with pytest.raises(UsageError, match="expected shapes, synthetic, folder:PATH, tfrecord:GLOB, tfds:NAME or constant"):
        data.dataset_info("nothing:here")


def test_the_csv_source_of_the_docs_works_as_written(monkeypatch, tmp_path):
    """docs/input.md's example source (`csv:FILE`), executed from the page, on four PNGs."""
    from keras_alexnet import sources

    [example] = [block for block in python_blocks("docs/input.md") if "class CsvList" in block]
    names = {}
    exec(compile(example, "docs/input.md", "exec"), names)
    lines = []
    for k, label in enumerate(["light", "dark", "light", "dark"]):
        path = tmp_path / f"{k}.png"
        path.write_bytes(_encode(_grey(k), "PNG"))
        lines.append(f"{path},{label}")
    (tmp_path / "list.csv").write_text("\n".join(lines) + "\n")
    monkeypatch.setitem(sources.SOURCES, "csv", names["CsvList"])
    info = data.dataset_info(f"csv:{tmp_path / 'list.csv'}")
    assert info.class_names == ["dark", "light"] and info.num_examples == {"train": 4}
    ids, labels = _collect(data.make_dataset(f"csv:{tmp_path / 'list.csv'}", "train", image_size=67, batch_size=4,
                                             training=True, seed=0, augmentation="none").take(1))
    assert sorted(zip(ids, labels)) == [(0, 1), (1, 0), (2, 1), (3, 0)]
