"""Starting a training run from weight files (keras_alexnet.finetune, scripts/train.py --weights).

Every weight file is written here with random values in its format's layout, at the smallest
input size (67 px, a 1x1 pool5 map), so nothing is downloaded and each run takes seconds.
"""

import dataclasses
import json
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_alexnet
from keras_alexnet import checkpoints, finetune, run_config, weights
from keras_alexnet.errors import UsageError
from keras_alexnet.training import TrainConfig, Trainer, train
from test_training import GLOBAL_BATCH, SHAPES, SIZE, fixed_batches, paper_config, run_script
from test_weights import random_caffe_blobs, save_caffe_npz

RUN = dict(dataset=SHAPES, batch_size=GLOBAL_BATCH, epochs=1, steps_per_epoch=2, export_dir=None,
           precision="float32", xla=False, strategy="default")


@pytest.fixture(scope="module")
def caffe_npz(tmp_path_factory):
    """Caffe's bvlc_alexnet layout (two columns, 1000 classes) with fc6 made for a 1x1 pool5 map."""
    path = tmp_path_factory.mktemp("weights") / "bvlc_alexnet_67.npz"
    save_caffe_npz(path, random_caffe_blobs(pool5=1))
    return str(path)


def layer_weights(model, names):
    return {name: [np.asarray(w) for w in model.get_layer(name).get_weights()] for name in names}


def assert_same(first, second):
    for name in first:
        for a, b in zip(first[name], second[name]):
            np.testing.assert_array_equal(a, b, err_msg=name)


def test_training_only_fc8_leaves_the_file_in_conv1_to_fc7(tmp_path, caffe_npz, capsys):
    result = train(TrainConfig(**RUN, weights=caffe_npz, trainable="fc8", model_dir=str(tmp_path), learning_rate=0.01))
    out = capsys.readouterr().out
    assert "weights conv1-fc7 from" in out and "fc8 new (10 classes; the file's has 1000)" in out
    reference = keras_alexnet.build(num_classes=10, input_shape=(SIZE, SIZE, 3), weights=caffe_npz, seed=0)
    frozen = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7")
    assert_same(layer_weights(result["model"], frozen), layer_weights(reference, frozen))
    assert weights.convention_of_model(result["model"]) == "caffe"  # Caffe's LRN and mean came with the file
    config = checkpoints.read_config(str(tmp_path))
    assert config["weights"] == caffe_npz and config["convention"] == "caffe" and len(config["weights_sha256"]) == 64
    assert config["recipe"] == "finetune" and config["trainable"] == "fc8" and config["classifier_lr_multiplier"] == 10.0
    # evaluate.py, predict.py and export.py rebuild the run from config.json: the same network.
    restored, _ = checkpoints.restore_model(str(tmp_path))
    images = np.random.default_rng(0).normal(scale=60.0, size=(3, SIZE, SIZE, 3)).astype(np.float32)
    np.testing.assert_allclose(restored(images), result["model"](images), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("before, now, expected", [
    ("a.npz", None, "was started from --weights=a.npz (sha256 aaaaaaaaaaaa...): to resume it, give the same --weights; "
                    "or use a new --model_dir."),
    (None, "b.npz", "holds a run trained from scratch; --weights=b.npz would start another: use a new --model_dir."),
    ("a.npz", "b.npz", "was started from --weights=a.npz (sha256 aaaaaaaaaaaa...), not --weights=b.npz (sha256 "
                       "bbbbbbbbbbbb...): resume with the original file, or use a new --model_dir."),
])
def test_a_resume_from_other_weights_is_refused_with_what_to_pass(tmp_path, before, now, expected):
    sha = {None: None, "a.npz": "a" * 64, "b.npz": "b" * 64}
    checkpoints.write_config(str(tmp_path), {"weights": before, "weights_sha256": sha[before]})
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "ckpt-5.index").write_bytes(b"")
    config = TrainConfig(**RUN, model_dir=str(tmp_path), weights=now, weights_sha256=sha[now])
    with pytest.raises(UsageError) as raised:
        run_config.check_resume(config, num_classes=10)
    assert str(raised.value) == f"--model_dir={tmp_path} {expected}"


def test_resuming_continues_from_the_checkpoint_not_the_file(tmp_path, caffe_npz, monkeypatch, capsys):
    config = TrainConfig(**RUN, weights=caffe_npz, model_dir=str(tmp_path))
    train(config)

    def no_import(*args):
        raise AssertionError("a resumed run imported the weight file again")

    monkeypatch.setattr(finetune, "load", no_import)
    capsys.readouterr()
    train(dataclasses.replace(config, epochs=2))
    assert "resumed from" in capsys.readouterr().out
    with pytest.raises(UsageError, match="trainable=all, but this run has trainable=fc: .*--trainable"):
        train(dataclasses.replace(config, epochs=3, trainable="fc"))


def test_a_run_resumes_after_its_weight_file_is_gone(tmp_path, caffe_npz, capsys):
    # The file was read again on every resume: deleting it (or moving the job to a machine
    # without it) made "error: ...: no such weight file" of a run whose checkpoint holds the weights.
    weight_file = tmp_path / "bvlc_alexnet_67.npz"
    shutil.copy(caffe_npz, weight_file)
    config = TrainConfig(**RUN, weights=str(weight_file), model_dir=str(tmp_path / "run"))
    train(config)
    weight_file.unlink()
    capsys.readouterr()
    train(dataclasses.replace(config, epochs=2))
    assert "resumed from" in capsys.readouterr().out
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (saved["classifier_lr_multiplier"], saved["convention"], saved["epochs"]) == (10.0, "caffe", 2)
    with pytest.raises(FileNotFoundError, match="no such weight file"):  # a new run needs the file itself
        train(dataclasses.replace(config, model_dir=str(tmp_path / "other")))
    for data_file in (tmp_path / "run" / "checkpoints").glob("ckpt-*.data-*"):
        data_file.write_bytes(b"")  # no checkpoint left to resume from, and no file to start from
    with pytest.raises(UsageError, match=r"no longer exists and no checkpoint of this run could be read: put the file back"):
        train(dataclasses.replace(config, epochs=3))


def test_classifier_multiplier_scales_fc8s_sgd_step_only(tmp_path):
    """Caffe's lr_mult: with a multiplier of 10, fc8 moves 10x as far in one SGD step, the rest the same."""
    def one_step(multiplier):
        config = paper_config(image_size=SIZE, batch_size=GLOBAL_BATCH, epochs=1, steps_per_epoch=1, dropout=0.0,
                              learning_rate=0.01, lr_schedule="step", precision="float32", xla=False, seed=3,
                              weight_decay=0.0, classifier_lr_multiplier=multiplier)
        trainer = Trainer(config, tf.distribute.get_strategy(), num_classes=4)
        before = layer_weights(trainer.model, ("fc7", "fc8"))
        trainer.train_steps(iter(fixed_batches(tf.distribute.InputContext())), 1)
        after = layer_weights(trainer.model, ("fc7", "fc8"))
        return {name: after[name][0] - before[name][0] for name in after}

    plain, boosted = one_step(1.0), one_step(10.0)
    # Differences of float32 weights near 0.01 carry ~1e-9 of rounding; the steps are ~1e-5.
    np.testing.assert_allclose(boosted["fc8"], 10.0 * plain["fc8"], rtol=1e-3, atol=5e-8)
    np.testing.assert_allclose(boosted["fc7"], plain["fc7"], rtol=1e-3, atol=5e-9)
    assert np.abs(plain["fc8"]).max() > 0


def test_a_torchvision_state_dict_starts_a_one_column_run(tmp_path):
    torch = pytest.importorskip("torch", reason="torch is not installed (pip install 'keras_alexnet[torch]')")
    model = keras_alexnet.build(num_classes=1000, input_shape=(SIZE, SIZE, 3), variant="one_column", seed=1)
    state = {}
    for name, key in weights._TORCHVISION_KEYS.items():
        kernel, bias = model.get_layer(name).get_weights()
        kernel = kernel.transpose(3, 2, 0, 1) if kernel.ndim == 4 else kernel.T  # torch's (out, in[, kh, kw])
        state[f"{key}.weight"], state[f"{key}.bias"] = torch.from_numpy(np.ascontiguousarray(kernel)), torch.from_numpy(bias)
    path = tmp_path / "alexnet.pth"
    torch.save(state, path)
    result = train(TrainConfig(**RUN, weights=str(path), model_dir=str(tmp_path / "run")))
    config = checkpoints.read_config(str(tmp_path / "run"))
    # fc6 made for a 1x1 pool5 map: the smallest input that gives one (63 px in this layout).
    assert (config["variant"], config["convention"], config["image_size"]) == ("one_column", "torchvision", 63)
    assert weights.convention_of_model(result["model"]) == "torchvision"


def test_a_keras_model_of_the_same_classes_keeps_fc8_and_exports(tmp_path, caffe_npz, capsys):
    # A .keras file converted from Caffe weights, with a 10-class fc8: the convention travels in it.
    source = keras_alexnet.build(num_classes=10, input_shape=(SIZE, SIZE, 3), weights=caffe_npz, seed=2)
    path = str(tmp_path / "shapes.keras")
    source.save(path)
    result = train(TrainConfig(**{**RUN, "export_dir": str(tmp_path / "export")}, weights=path, trainable="fc7",
                               model_dir=str(tmp_path / "run"), export_at_chance=True))
    out = capsys.readouterr().out
    assert "weights conv1-fc8 from" in out and "fc8 kept" in out
    config = checkpoints.read_config(str(tmp_path / "run"))
    assert config["classifier_lr_multiplier"] == 1.0 and config["image_size"] == SIZE and config["convention"] == "caffe"
    views = np.random.default_rng(1).normal(scale=60.0, size=(2, SIZE, SIZE, 3)).astype(np.float32)
    served = tf.saved_model.load(result["export_path"]).signatures["predict_images"](images=tf.constant(views))
    expected = keras.ops.softmax(result["model"](views)).numpy()
    np.testing.assert_allclose(served["probabilities"].numpy(), expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--variant=one_column"], "--variant=one_column contradicts --weights="),
        (["--groups=1"], "--groups=1 contradicts --weights="),
        (["--image_size=99"], "--image_size=99 does not fit --weights="),
        (["--optimizer=adam", "--classifier_lr_multiplier=10"], "--classifier_lr_multiplier=10"),
        (["--weights=/no/such/file.npz"], "/no/such/file.npz"),
        (["--trainable=conv9"], "--trainable"),
    ],
)
def test_script_conflicting_flags_are_one_line_errors(tmp_path, caffe_npz, extra, message):
    completed = run_script(f"--dataset={SHAPES}", f"--weights={caffe_npz}", *extra, f"--model_dir={tmp_path}",
                           "--export_dir=", "--epochs=1", "--steps_per_epoch=1", "--batch_size=8")
    assert completed.returncode == 2, completed.stderr[-2000:]
    lines = [line for line in completed.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], completed.stderr[-2000:]
    assert "Traceback" not in completed.stderr


def test_multiplier_without_weights_is_refused(tmp_path):
    completed = run_script(f"--dataset={SHAPES}", "--classifier_lr_multiplier=5", f"--model_dir={tmp_path}")
    assert completed.returncode == 2 and "--classifier_lr_multiplier" in completed.stderr


def test_convert_weights_writes_a_training_run_as_keras(tmp_path, caffe_npz):
    train(TrainConfig(**RUN, weights=caffe_npz, model_dir=str(tmp_path / "run")))
    import subprocess
    import sys

    from test_training import ROOT

    out = tmp_path / "run.keras"
    completed = subprocess.run([sys.executable, str(ROOT / "scripts" / "convert_weights.py"), f"--input={tmp_path / 'run'}",
                                f"--output={out}"], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]
    pretrained = finetune.read(str(out))
    assert (pretrained.source.convention, pretrained.source.num_classes, pretrained.source.default_input_size()) == ("caffe", 10, SIZE)
