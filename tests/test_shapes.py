"""Tests for keras_alexnet.shapes, the built-in demo dataset."""

import io

import numpy as np
import pytest
from PIL import Image

from keras_alexnet import shapes
from keras_alexnet.errors import UsageError


def test_generate_is_deterministic_from_the_seed():
    images, labels = shapes.generate(30, seed=[3, 0], size=48)
    again, again_labels = shapes.generate(30, seed=[3, 0], size=48)
    np.testing.assert_array_equal(images, again)
    np.testing.assert_array_equal(labels, again_labels)
    other, _ = shapes.generate(30, seed=[4, 0], size=48)
    assert not np.array_equal(images, other)


def test_generate_shapes_dtypes_and_balanced_classes():
    images, labels = shapes.generate(60, seed=0, size=40)
    assert images.shape == (60, 40, 40, 3) and images.dtype == np.uint8
    assert labels.dtype == np.int32
    np.testing.assert_array_equal(np.bincount(labels, minlength=10), np.full(10, 6))
    # Images vary: no two identical, and the colours span the range.
    assert len({image.tobytes() for image in images}) == 60
    assert images.min() < 30 and images.max() > 225


def test_every_class_draws_a_different_shape():
    masks = [shapes._draw_mask(name, 64, 32.0, 32.0, 24.0, 0.1) for name in shapes.CLASS_NAMES]
    for index, mask in enumerate(masks):
        area = (mask > 0).mean()
        assert 0.05 < area < 0.6, shapes.CLASS_NAMES[index]
        for other in masks[index + 1:]:
            assert (mask != other).mean() > 0.02


def test_train_and_validation_are_different_images():
    config = shapes.ShapesConfig(train=40, validation=20, seed=1, size=32)
    train, train_labels = shapes.encoded_split(config, "train")
    validation, _ = shapes.encoded_split(config, "validation")
    assert len(train) == 40 and len(validation) == 20 and len(train_labels) == 40
    assert not set(train) & set(validation)
    decoded = Image.open(io.BytesIO(train[0]))
    assert decoded.format == "JPEG" and decoded.size == (32, 32) and decoded.mode == "RGB"


def test_parse_spec():
    assert shapes.parse_spec("shapes") == shapes.ShapesConfig()
    config = shapes.parse_spec("shapes:train=100,validation=20,seed=7,size=64")
    assert (config.train, config.validation, config.seed, config.size) == (100, 20, 7, 64)
    assert config.num_examples() == {"train": 100, "validation": 20}
    for bad in ("shapes:train=x", "shapes:colour=3", "shapes:size=4", "shapes:train=0"):
        with pytest.raises(UsageError):
            shapes.parse_spec(bad)


def test_save_grid(tmp_path):
    path = tmp_path / "grid.png"
    shapes.save_grid(path, shapes.ShapesConfig(size=24), per_class=3)
    assert Image.open(path).size == (3 * 24, 10 * 24)
