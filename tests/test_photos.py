import json
import os
import re
import subprocess
import sys

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


# --- scripts/make_photo_sets.py, learning_check.py and photo_reference.py ------------------------

SCRIPTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts")


def _script(name, *args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    return subprocess.run([sys.executable, os.path.join(SCRIPTS, name), *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=300)


def test_the_learning_check_scripts_end_to_end(tmp_path):
    # The tools behind #13's evidence, tiny: grey8's eight photographs (scikit-image's, which the
    # test extra installs), 4 training and 2 held-out patches a class, one seed, two epochs.
    done = _script("make_photo_sets.py", f"--out={tmp_path / 'photos'}", "--sets=grey8", "--train_per_class=4",
                   "--validation_per_class=2")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith(f"{tmp_path / 'photos' / 'grey8'}: 8 classes, 32 train / 16 held-out patches"), done.stdout
    assert len(os.listdir(tmp_path / "photos" / "grey8" / "train")) == 8
    done = _script("learning_check.py", f"--out={tmp_path / 'check'}", f"--photo_dir={tmp_path / 'photos'}", "--sets=grey8",
                   "--seeds=0", "--epochs=2", "--batch_size=8")
    assert done.returncode == 0, done.stderr[-2000:]
    runs = json.loads((tmp_path / "check" / "results.json").read_text())["runs"]
    assert [(run["set"], run["seed"], len(run["val_top1"])) for run in runs] == [("grey8", 0, 2)], runs
    assert 0.0 <= runs[0]["final_val_top1"] <= 1.0 and runs[0]["exit_code"] in (0, 3)  # 2 epochs: learned or not
    with Image.open(tmp_path / "check" / "curves.png") as curves:
        assert curves.size[0] > 300
    done = _script("photo_reference.py", f"--photo_dir={tmp_path / 'photos'}", "--sets=grey8")
    assert done.returncode == 0, done.stderr[-2000:]
    assert re.match(r"grey8 +held-out top-1 [01]\.\d{3} \(16 patches\)\n  confusion", done.stdout), done.stdout
    assert len(done.stdout.splitlines()) == 2 + 8  # the line, the header, one row a class
    # A folder that cannot be made is one line naming the flag, before any work.
    for name in ("make_photo_sets.py", "learning_check.py"):
        done = _script(name, "--out=/proc/no_such_folder", "--sets=grey8")
        assert done.returncode == 2 and done.stderr.startswith("error: --out=/proc/no_such_folder is not writable ("), done.stderr
