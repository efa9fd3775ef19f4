"""The layout of a training run's `model_dir`, and restoring a model from it.

    model_dir/
      config.json        the resolved training configuration (flags after defaults), including
                         the model's variant, groups, image_size, num_classes and class_names
      checkpoints/       tf.train.CheckpointManager files: ckpt-<step>.index/.data-*, "checkpoint"
        damaged/<time>/  unreadable checkpoint files a resume moved aside (kept, never deleted)
      lease.json         while a run trains: who holds model_dir (keras_alexnet.run_lease)
      history.jsonl      one JSON object per epoch (see keras_alexnet.training)
      logs/              TensorBoard event files

A checkpoint holds `tf.train.Checkpoint(model=..., optimizer=..., step=..., epoch=..., ...)`;
restoring only the model reads just its variables (`expect_partial`).

A damaged checkpoint (a data file cut short by a full disk or a preempted copy, a missing data or
index file, a `checkpoint` state file that is garbage or names a checkpoint that is not there)
never stops a resume: `restore_newest_readable` tries the checkpoints newest first, says in one
line which were unreadable and restores the newest good one.

Every file goes through `tf.io.gfile`, so model_dir may be a local folder or any filesystem
TensorFlow reads and writes, e.g. `gs://bucket/run` (what TPU VMs and multi-worker jobs share).
"""

import gc
import json
import os
import re
import sys
import time

import tensorflow as tf
from google.protobuf.message import DecodeError

from keras_alexnet import logs
from keras_alexnet.errors import UsageError, first_line
from keras_alexnet.model import build

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"
HISTORY_FILE = "history.jsonl"
CURVES_FILE = "history.png"  # history.jsonl drawn, after every epoch (training._Run.draw_curves)
CONFUSION_FILE = "confusion.png"  # the last held-out evaluation's confusion matrix (training._Run.finish)
LOG_DIR = "logs"
STATE_FILE = "checkpoint"  # tf.train.CheckpointManager's list of checkpoints
DAMAGED_DIR = "damaged"

# The keys of config.json that decide the model's shape.
MODEL_KEYS = ("variant", "groups", "image_size", "num_classes", "convention")


def checkpoint_dir(model_dir):
    return os.path.join(model_dir, CHECKPOINT_DIR)


def write_config(model_dir, config):
    """Write `config` (a JSON-serializable dict) to model_dir/config.json, atomically."""
    tf.io.gfile.makedirs(model_dir)
    path = os.path.join(model_dir, CONFIG_FILE)
    tmp = path + ".tmp"
    with tf.io.gfile.GFile(tmp, "w") as f:
        f.write(json.dumps(config, indent=2, sort_keys=True) + "\n")
    tf.io.gfile.rename(tmp, path, overwrite=True)


def read_config(model_dir):
    """The config.json of a training run: FileNotFoundError (one line) if there is none,
    UsageError (one line) if it is not a JSON object (a hand edit, a copy cut short)."""
    path = os.path.join(model_dir, CONFIG_FILE)
    if not tf.io.gfile.exists(path):
        if tf.saved_model.contains_saved_model(model_dir):
            raise FileNotFoundError(f"{model_dir} is a SavedModel (an export), not a training run: pass the run's "
                                    f"directory; predict.py and evaluate.py read an export as --saved_model {model_dir}")
        raise FileNotFoundError(f"{path} not found: --model_dir must be a directory written by scripts/train.py.")
    with tf.io.gfile.GFile(path) as f:
        text = f.read()
    try:
        config = json.loads(text)
    except ValueError as error:
        config, reason = None, first_line(error)
    else:
        reason = "not a JSON object"
    if not isinstance(config, dict):
        raise UsageError(f"{path} is damaged ({reason}): restore it from a copy, or delete it and rerun "
                         "scripts/train.py with the run's flags, which writes it again.")
    return config


def build_from_config(config, **kwargs):
    """The model that a training run with this config trained (fresh weights)."""
    size = int(config["image_size"])
    return build(
        num_classes=int(config["num_classes"]),
        input_shape=(size, size, 3),
        variant=config.get("variant") or "paper",
        groups=int(config.get("groups") or 2),
        convention=config.get("convention") or "paper",  # a run started from Caffe or torchvision weights
        **kwargs,
    )


def class_names(config):
    """The run's class names; "0", "1", ... for a config written without them."""
    return config.get("class_names") or [str(i) for i in range(int(config["num_classes"]))]


def latest_checkpoint(model_dir):
    """Path prefix of the newest checkpoint in model_dir that has an index file, or None. Unlike
    tf.train.latest_checkpoint it does not depend on the `checkpoint` state file being intact."""
    prefixes, _ = checkpoint_prefixes(checkpoint_dir(model_dir))
    return next((prefix for prefix in prefixes if tf.io.gfile.exists(prefix + ".index")), None)


# One line of a CheckpointState in protobuf text format: `name: "string"` or `name: number`.
_STATE_LINE = re.compile(r'^\s*(\w+)\s*:\s*(?:"((?:[^"\\]|\\.)*)"|[-+0-9.eE]+)\s*$')
_STEP = re.compile(r"-(\d+)$")


def read_state(directory):
    """The checkpoint prefixes that the `checkpoint` state file of `directory` names, and what is
    wrong with the file: ([], None) when there is none, ([], "garbled") when it cannot be parsed.

    Parsed here rather than by tf.train.get_checkpoint_state, which logs warnings and returns None
    for a garbled file (indistinguishable from a missing one) and raises for an empty one.
    """
    path = os.path.join(directory, STATE_FILE)
    if not tf.io.gfile.exists(path):
        return [], None
    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            text = f.read().decode("utf-8")
    except (tf.errors.OpError, UnicodeDecodeError):
        return [], "garbled"
    fields = {}
    for line in text.splitlines():
        match = _STATE_LINE.match(line)
        if line.strip() and not match:
            return [], "garbled"
        if match and match.group(2) is not None:
            fields.setdefault(match.group(1), []).append(match.group(2))
    if not fields.get("model_checkpoint_path"):
        return [], "empty or names no checkpoint"
    names = fields.get("all_model_checkpoint_paths", []) + fields["model_checkpoint_path"]
    return [name if os.path.isabs(name) or "://" in name else os.path.join(directory, name) for name in names], None


def checkpoint_prefixes(directory):
    """Every checkpoint prefix in `directory`, newest (highest step) first: those the state file
    names (even if their files are missing) and every ckpt-<step> with an index or data file beside
    them (the state file may be garbled or stale). Returns (prefixes, what is wrong with the state file or None)."""
    named, state_problem = read_state(directory)
    indexed = [path[: -len(".index")] for path in tf.io.gfile.glob(os.path.join(directory, "ckpt-*.index"))]
    # A data file whose index is gone counts too: else the resumed run would write over it unseen.
    data = [path.rsplit(".data-", 1)[0] for path in tf.io.gfile.glob(os.path.join(directory, "ckpt-*.data-*"))]
    prefixes = {os.path.normpath(p) if "://" not in p else p for p in named + indexed + data}
    return sorted(prefixes, key=lambda prefix: (_step(prefix), prefix), reverse=True), state_problem


def restore_newest_readable(checkpoint, model_dir, *, partial=False, move_aside=False, say=None):
    """Restore `checkpoint` (a tf.train.Checkpoint) from the newest readable checkpoint of
    model_dir and return its prefix; None when there is none (nothing restored: start fresh).

    Checkpoints are tried newest first. One that cannot be read (truncated or missing data file,
    missing or garbled index) is skipped, and so is a garbled state file; `say` gets one line naming
    them, and whether a good one was found. With `move_aside` (the run that writes checkpoints:
    the chief of a training run), their files are moved to checkpoints/damaged/<time>/ -- kept for
    inspection, never deleted -- and the state file is rewritten to list the good checkpoints, so
    that the CheckpointManager made next neither writes over them (a resumed run saves the same
    step numbers again) nor counts them among the checkpoints it keeps. Readers (evaluation,
    export, other workers) leave every file in place.

    A checkpoint of another model (objects that do not match) is not damage: its AssertionError
    propagates. `partial`: restore only what exists (`expect_partial`), as a model-only restore does.
    """
    directory = checkpoint_dir(model_dir)
    prefixes, state_problem = checkpoint_prefixes(directory)
    damaged = []  # (name and reason, [files])
    if state_problem:
        damaged.append((f"{STATE_FILE} ({state_problem})", [os.path.join(directory, STATE_FILE)]))
    restored = None
    for prefix in prefixes:
        problem = _restore(checkpoint, prefix, partial)
        if problem is None:
            restored = prefix
            break
        damaged.append((f"{os.path.basename(prefix)} ({problem})", _checkpoint_files(prefix)))
    if not damaged:
        return restored

    listed = "; ".join(name for name, _ in damaged)
    if move_aside:
        files = [path for _, paths in damaged for path in paths]
        if restored is None:  # the state file names only damaged checkpoints: it goes with them
            files.append(os.path.join(directory, STATE_FILE))
        destination = _move_aside(directory, sorted(set(files)))
        if restored:
            good = [p for p in reversed(prefixes) if _step(p) <= _step(restored) and tf.io.gfile.exists(p + ".index")]
            _rewrite_state(directory, restored, good)
        kept = f"moved to {destination} (kept, not deleted)" if destination else "nothing to move"
    else:
        kept = "left in place"
    if restored:
        outcome = f"{'resuming from' if move_aside else 'using'} {os.path.basename(restored)}"
    else:
        outcome = "no readable checkpoint left: starting from step 0" if move_aside else "no readable checkpoint"
    (say or _warn)(f"warning: skipped unreadable checkpoint files in {directory}: {listed}; {kept}; {outcome}.")
    return restored


def _warn(message):
    print(message, file=sys.stderr, flush=True)


def _step(prefix):
    match = _STEP.search(prefix)
    return int(match.group(1)) if match else -1


def _restore(checkpoint, prefix, partial):
    """Restore from `prefix`; None when it worked, else a short reason why it could not be read."""
    if not tf.io.gfile.exists(prefix + ".index"):
        return f"no {os.path.basename(prefix)}.index"
    if not tf.io.gfile.glob(prefix + ".data-*"):
        return "no data file"
    try:
        status = checkpoint.restore(prefix)
        if partial:
            status = status.expect_partial()
        status.assert_existing_objects_matched()
    except (tf.errors.OpError, IndexError, DecodeError) as error:
        # IndexError: a data file cut short ("Read less bytes than requested"); OpError: a garbled
        # index, a checksum mismatch, a file gone; DecodeError: a garbled object graph.
        return first_line(error, 120)
    return None


def _checkpoint_files(prefix):
    return [path for path in [prefix + ".index"] + tf.io.gfile.glob(prefix + ".data-*") if tf.io.gfile.exists(path)]


def _move_aside(directory, files):
    """Move `files` into directory/damaged/<UTC time>/; returns that folder (None: no file)."""
    files = [path for path in files if tf.io.gfile.exists(path)]
    if not files:
        return None
    destination = os.path.join(directory, DAMAGED_DIR, time.strftime("%Y%m%d-%H%M%S", time.gmtime()))
    tf.io.gfile.makedirs(destination)
    for path in files:
        tf.io.gfile.rename(path, os.path.join(destination, os.path.basename(path)), overwrite=False)
    return destination


def _rewrite_state(directory, restored, good):
    """Write the state file: `restored` the latest, the `good` checkpoints (oldest first) listed.

    The timestamps make CheckpointManager count them among the `max_to_keep` it keeps and rotates
    (without timestamps it would keep them for ever); the state file is written atomically."""
    state = os.path.join(directory, STATE_FILE)
    # CheckpointState in text format, as CheckpointManager writes it (names relative to directory);
    # written here because tf.compat.v1.train.update_checkpoint_state logs a deprecation warning.
    now = time.time()
    lines = [f'model_checkpoint_path: "{os.path.basename(restored)}"']
    lines += [f'all_model_checkpoint_paths: "{os.path.basename(prefix)}"' for prefix in good]
    lines += [f"all_model_checkpoint_timestamps: {now - len(good) + i:.6f}" for i in range(len(good))]
    lines.append(f"last_preserved_timestamp: {now - len(good) - 1:.6f}")
    tmp = state + ".tmp"
    with tf.io.gfile.GFile(tmp, "w") as f:
        f.write("\n".join(lines) + "\n")
    tf.io.gfile.rename(tmp, state, overwrite=True)


def _find_checkpoint(model_dir, checkpoint):
    """The path prefix of --checkpoint, given as a path or as a name in model_dir/checkpoints
    (ckpt-74); FileNotFoundError naming the ones there if it is neither."""
    directory = checkpoint_dir(model_dir)
    for prefix in (checkpoint, os.path.join(directory, checkpoint)):
        if tf.io.gfile.exists(prefix + ".index"):
            return prefix
    names = ", ".join(os.path.basename(p) for p in checkpoint_prefixes(directory)[0]) or "none"
    raise FileNotFoundError(f"--checkpoint={checkpoint}: no such checkpoint (no {checkpoint}.index); {directory} has "
                            f"{names}: pass one of those, or leave --checkpoint out for the newest.")


def _restore_given(config, prefix):
    """The run's model with the checkpoint `prefix` restored; FileNotFoundError in one line if it
    does not fit (another run's class count, say)."""
    model = build_from_config(config)
    # A failed restore's bookkeeping logs a warning for every value it did not use when it is
    # collected (25 lines for a checkpoint of another class count): the error line says it all.
    with logs.tensorflow_warnings_off():
        try:
            tf.train.Checkpoint(model=model).restore(prefix).expect_partial().assert_existing_objects_matched()
            return model
        except (tf.errors.OpError, AssertionError, ValueError) as error:
            reason = first_line(getattr(error, "message", None) or error)
        # Outside the except clause: its traceback would keep the failed restore alive.
        del model
        gc.collect()
    raise FileNotFoundError(f"--checkpoint={prefix} cannot be read into this run's model ({reason}).")


def restore_model(model_dir, checkpoint=None):
    """Rebuild the model of a training run and load its newest (or the given) checkpoint.

    Returns (model, config); config is config.json plus "restored_checkpoint", the path of the
    checkpoint loaded. Raises FileNotFoundError with a one-line message when model_dir has no
    config or no readable checkpoint (damaged ones are skipped with a warning on stderr).
    """
    config = read_config(model_dir)
    if checkpoint:
        checkpoint = _find_checkpoint(model_dir, checkpoint)
        return _restore_given(config, checkpoint), {**config, "restored_checkpoint": checkpoint}
    model = build_from_config(config)
    # Newest readable first; a reader warns about damaged files but leaves them to the training run.
    restored = restore_newest_readable(tf.train.Checkpoint(model=model), model_dir, partial=True)
    if restored is None:
        raise FileNotFoundError(f"no readable checkpoint in {checkpoint_dir(model_dir)}: train first, or pass another --model_dir.")
    return model, {**config, "restored_checkpoint": restored}
