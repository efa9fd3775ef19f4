"""A damaged checkpoint never stops a resume (keras_alexnet.checkpoints.restore_newest_readable):
each kind of damage on small checkpoints, what is moved aside, and what CheckpointManager does next."""

import os

import numpy as np
import pytest
import tensorflow as tf

from keras_alexnet import checkpoints
from keras_alexnet.errors import UsageError

DATA = "ckpt-6.data-00000-of-00001"


def a_checkpoint():
    step = tf.Variable(0, dtype=tf.int64)
    weights = tf.Variable(tf.zeros([200, 200]))
    return tf.train.Checkpoint(step=step, weights=weights), step, weights


@pytest.fixture
def model_dir(tmp_path):
    """checkpoints/ckpt-2, -4, -6, as a run with --keep_checkpoints=3 leaves them; weights = step."""
    checkpoint, step, weights = a_checkpoint()
    manager = tf.train.CheckpointManager(checkpoint, checkpoints.checkpoint_dir(str(tmp_path)), max_to_keep=3)
    for number in (2, 4, 6):
        step.assign(number)
        weights.assign(tf.fill([200, 200], float(number)))
        manager.save(checkpoint_number=number)
    return tmp_path


def truncate(path, size=1000):
    path.write_bytes(path.read_bytes()[:size])


DAMAGE = {
    # name: (what to do to model_dir/checkpoints, the step resumed, in the warning, files moved aside)
    "truncated data file": (lambda d: truncate(d / DATA), 4, "ckpt-6 (Read less bytes than requested)",
                            ["ckpt-6.index", DATA]),
    "missing data file": (lambda d: (d / DATA).unlink(), 4, "ckpt-6 (no data file)", ["ckpt-6.index"]),
    "missing index": (lambda d: (d / "ckpt-6.index").unlink(), 4, "ckpt-6 (no ckpt-6.index)", [DATA]),
    "garbled index": (lambda d: (d / "ckpt-6.index").write_bytes(b"\x00garbage" * 3), 4, "ckpt-6 (",
                      ["ckpt-6.index", DATA]),
    "garbage state file": (lambda d: (d / "checkpoint").write_bytes(b"\x8b\x00{{ not a state"), 6,
                           "checkpoint (garbled)", ["checkpoint"]),
    "empty state file": (lambda d: (d / "checkpoint").write_text(""), 6, "checkpoint (empty or names no checkpoint)",
                         ["checkpoint"]),
    "state file names a missing checkpoint": (
        lambda d: (d / "checkpoint").write_text('model_checkpoint_path: "ckpt-9"\nall_model_checkpoint_paths: "ckpt-9"\n'),
        6, "ckpt-9 (no ckpt-9.index)", []),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_resume_skips_a_damaged_checkpoint_and_moves_it_aside(model_dir, damage):
    spoil, resumed_step, named, moved = DAMAGE[damage]
    directory = model_dir / "checkpoints"
    spoil(directory)
    spoiled = {name: (directory / name).read_bytes() for name in moved}
    checkpoint, step, weights = a_checkpoint()
    lines = []
    restored = checkpoints.restore_newest_readable(checkpoint, str(model_dir), move_aside=True, say=lines.append)

    assert restored == str(directory / f"ckpt-{resumed_step}")
    assert int(step.numpy()) == resumed_step and np.all(weights.numpy() == resumed_step)
    assert len(lines) == 1 and lines[0].startswith(f"warning: skipped unreadable checkpoint files in {directory}: ")
    assert named in lines[0] and lines[0].endswith(f"resuming from ckpt-{resumed_step}.")
    # Kept, byte for byte, out of the way of the run's next saves.
    aside = list((directory / "damaged").glob("*/*")) if moved else []
    assert sorted(path.name for path in aside) == sorted(moved)
    assert all(path.read_bytes() == spoiled[path.name] for path in aside)
    assert (f"moved to {aside[0].parent}" if moved else "nothing to move") in lines[0]

    # The resumed run's CheckpointManager: saves the next steps and keeps the newest three good ones.
    manager = tf.train.CheckpointManager(checkpoint, str(directory), max_to_keep=3)
    for number in range(resumed_step + 2, 10, 2):
        step.assign(number)
        manager.save(checkpoint_number=number)
    assert sorted(p.name for p in directory.glob("ckpt-*.index")) == ["ckpt-4.index", "ckpt-6.index", "ckpt-8.index"]
    assert tf.train.latest_checkpoint(str(directory)).endswith("ckpt-8")
    assert sorted(path.name for path in directory.glob("damaged/*/*")) == sorted(moved)  # still there


def test_with_no_readable_checkpoint_it_starts_fresh_and_says_so(model_dir):
    directory = model_dir / "checkpoints"
    for number in (2, 4, 6):
        truncate(directory / f"ckpt-{number}.data-00000-of-00001", 100)
    checkpoint, step, weights = a_checkpoint()
    lines = []
    assert checkpoints.restore_newest_readable(checkpoint, str(model_dir), move_aside=True, say=lines.append) is None
    assert int(step.numpy()) == 0 and np.all(weights.numpy() == 0)  # nothing half-restored
    assert len(lines) == 1 and all(f"ckpt-{n} (Read less bytes" in lines[0] for n in (2, 4, 6))
    assert lines[0].endswith("no readable checkpoint left: starting from step 0.")
    assert not list(directory.glob("ckpt-*")) and not (directory / "checkpoint").exists()
    assert len(list(directory.glob("damaged/*/*"))) == 7  # three indexes, three data files, the state file
    assert checkpoints.latest_checkpoint(str(model_dir)) is None


def test_readers_skip_a_damaged_checkpoint_and_leave_it_in_place(model_dir, capsys):
    truncate(model_dir / "checkpoints" / DATA)
    before = sorted(os.listdir(model_dir / "checkpoints"))
    checkpoint, step, _ = a_checkpoint()
    assert checkpoints.restore_newest_readable(checkpoint, str(model_dir)).endswith("ckpt-4")
    assert int(step.numpy()) == 4
    warning = capsys.readouterr().err.strip()
    assert warning.startswith("warning: skipped unreadable checkpoint files") and warning.endswith("; left in place; using ckpt-4.")
    assert sorted(os.listdir(model_dir / "checkpoints")) == before


def test_nothing_is_said_or_moved_when_every_checkpoint_is_good(model_dir, capsys):
    before = sorted(os.listdir(model_dir / "checkpoints"))
    checkpoint, step, _ = a_checkpoint()
    assert checkpoints.restore_newest_readable(checkpoint, str(model_dir), move_aside=True).endswith("ckpt-6")
    assert int(step.numpy()) == 6 and capsys.readouterr().err == ""
    assert sorted(os.listdir(model_dir / "checkpoints")) == before
    assert checkpoints.restore_newest_readable(a_checkpoint()[0], str(model_dir / "elsewhere")) is None


def test_a_checkpoint_of_another_model_is_not_damage(model_dir):
    other = tf.train.Checkpoint(step=tf.Variable(0, dtype=tf.int64), weights=tf.Variable(tf.zeros([200, 200])),
                                extra=tf.Variable(1.0))
    with pytest.raises(AssertionError):
        checkpoints.restore_newest_readable(other, str(model_dir), move_aside=True)
    assert not (model_dir / "checkpoints" / "damaged").exists()


@pytest.mark.parametrize("text,reason", [("{garbage", "Expecting property name"), ("", "Expecting value"),
                                         ("[1, 2]", "not a JSON object")])
def test_a_damaged_config_json_is_one_line_that_says_how_to_mend_it(tmp_path, text, reason):
    # It was a JSONDecodeError traceback in train.py, evaluate.py, export.py and predict.py.
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(UsageError) as damaged:
        checkpoints.read_config(str(tmp_path))
    message = str(damaged.value)
    assert message.startswith(f"{tmp_path / 'config.json'} is damaged ({reason}") and "\n" not in message
    assert message.endswith("restore it from a copy, or delete it and rerun scripts/train.py with the run's flags, "
                            "which writes it again.")
