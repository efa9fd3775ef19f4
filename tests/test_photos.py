import numpy as np
from PIL import Image

from keras_alexnet import photos


def _save(path, pixels):
    Image.fromarray(pixels.astype(np.uint8)).save(path)
    return str(path)


def test_reference_features_see_colour_and_edge_orientation(tmp_path):
    red, blue = np.zeros((80, 80, 3)), np.zeros((80, 80, 3))
    red[..., 0], blue[..., 2] = 250, 250
    vertical, horizontal = np.zeros((80, 80, 3)), np.zeros((80, 80, 3))
    vertical[:, 40:], horizontal[40:] = 200, 200
    f = {name: photos.reference_features(_save(tmp_path / f"{name}.png", pixels))
         for name, pixels in (("red", red), ("blue", blue), ("vertical", vertical), ("horizontal", horizontal))}
    colours = slice(0, 216)
    # One colour bin each, and not the same one.
    assert f["red"][colours].max() == 1.0 and f["blue"][colours].max() == 1.0
    assert np.argmax(f["red"][colours]) != np.argmax(f["blue"][colours])
    # A flat patch has no edges; a step edge does, with an orientation that depends on its direction.
    orientations = slice(216 + 12, 216 + 12 + 8)
    assert f["red"][orientations].sum() == 0
    assert f["vertical"][orientations].sum() == 1.0 and f["horizontal"][orientations].sum() == 1.0
    assert np.argmax(f["vertical"][orientations]) != np.argmax(f["horizontal"][orientations])


def test_reference_split_reads_class_folders_in_order(tmp_path):
    for name, value in (("b_class", 30), ("a_class", 220)):
        (tmp_path / name).mkdir()
        for i in range(2):
            _save(tmp_path / name / f"{i}.jpg", np.full((70, 70, 3), value))
    features, labels, names = photos.reference_split(str(tmp_path))
    assert names == ["a_class", "b_class"] and labels.tolist() == [0, 0, 1, 1]
    assert features.shape[0] == 4 and np.allclose(features[0], features[1]) and not np.allclose(features[0], features[2])
