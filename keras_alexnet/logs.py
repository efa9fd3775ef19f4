"""What a training run shows and keeps: a progress line, history.jsonl and TensorBoard scalars."""

import contextlib
import json
import sys

import tensorflow as tf

from keras_alexnet.errors import first_line


@contextlib.contextmanager
def tensorflow_warnings_off():
    """TensorFlow's Python logger at ERROR inside the block, then back at its level: for work whose
    TensorFlow warnings are expected and tell the user nothing."""
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")
    try:
        yield
    finally:
        logger.setLevel(level)


class Progress:
    """A progress bar with images/s and ETA on a terminal; plain lines when output is a file.

    On a terminal the line is redrawn in place; otherwise one line is printed every
    `lines_per_epoch`-th of the epoch, so CI logs and `nohup` files stay readable.
    """

    def __init__(self, steps_per_epoch, epochs, global_batch_size, stream=None, lines_per_epoch=5):
        self.steps_per_epoch = steps_per_epoch
        self.epochs = epochs
        self.global_batch_size = global_batch_size
        self.stream = stream or sys.stdout
        self.is_terminal = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.every = max(1, steps_per_epoch // max(1, lines_per_epoch))
        self._last_printed = -1

    def update(self, epoch, step_in_epoch, loss, top1, images_per_sec):
        """images_per_sec None: not measured yet (the run's first loop, which traces and compiles:
        a rate from it would put the ETA minutes too far)."""
        width = 24
        done = int(width * step_in_epoch / self.steps_per_epoch)
        line = (f"epoch {epoch + 1}/{self.epochs} [{'=' * done}{'.' * (width - done)}] "
                f"{step_in_epoch}/{self.steps_per_epoch} loss {loss:.4f} top-1 {top1:.3f} ")
        if images_per_sec is None:
            line += "(compiling: no rate yet)"
        else:
            remaining = (self.epochs - epoch) * self.steps_per_epoch - step_in_epoch
            eta = remaining * self.global_batch_size / images_per_sec if images_per_sec > 0 else float("nan")
            line += f"{images_per_sec:.1f} img/s ETA {_format_seconds(eta)}"
        if self.is_terminal:
            self.stream.write("\r" + line + "\x1b[K")
            self.stream.flush()
        elif step_in_epoch // self.every != self._last_printed or step_in_epoch == self.steps_per_epoch:
            self._last_printed = step_in_epoch // self.every
            self.stream.write(line + "\n")
            self.stream.flush()

    def end_epoch(self, message):
        if self.is_terminal:
            self.stream.write("\n")
        self.stream.write(message + "\n")
        self.stream.flush()
        self._last_printed = -1


def rate_and_eta(done, expected, seconds):
    """'265.3 img/s, ETA 3m01s' of a pass over `expected` images (None: unknown, no ETA) that has
    done `done` of them in `seconds`: the tail of the evaluation's and the activations' progress lines."""
    rate = done / seconds if seconds > 0 else float("nan")
    line = f"{rate:.1f} img/s"
    if expected and rate > 0:
        left = int(max(expected - done, 0) / rate)
        line += f", ETA {left // 60}m{left % 60:02d}s"
    return line


def _format_seconds(seconds):
    if seconds != seconds:  # NaN
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class RunLog:
    """history.jsonl (one JSON object per epoch) and TensorBoard scalars under model_dir/logs.

    Only the chief writes; other workers get `enabled=False` and write nothing. history.jsonl is
    rewritten whole and renamed into place each epoch (a few kB), through `tf.io.gfile`: object
    stores such as gs:// cannot append, and a reader never sees half a line.
    """

    def __init__(self, history_path, tensorboard_dir, enabled=True):
        self.enabled = enabled
        self.history_path = history_path
        self.writer = tf.summary.create_file_writer(tensorboard_dir) if enabled else None

    def scalars(self, step, values, prefix=""):
        if not self.enabled:
            return
        with self.writer.as_default(step=int(step)):
            for name, value in values.items():
                tf.summary.scalar(prefix + name, float(value))
        self.writer.flush()

    def epoch(self, record):
        """Append `record` to history.jsonl; returns every record the file now holds ([] when not
        enabled), for the run's curves (training._Run.draw_curves), so they need not read it back."""
        if not self.enabled:
            return []
        records = read_history_records(self.history_path) + [record]
        lines = [json.dumps(each, sort_keys=True) for each in records]
        tmp = self.history_path + ".tmp"
        with tf.io.gfile.GFile(tmp, "w") as f:
            f.write("\n".join(lines) + "\n")
        tf.io.gfile.rename(tmp, self.history_path, overwrite=True)
        return records


def read_history_records(path):
    """The JSON objects of a history.jsonl (any TensorFlow filesystem), in file order; [] when there
    is none. A line that is not JSON -- the torn last line of a file cut short by a full disk or a
    copy that stopped, or written by an older version that appended -- is skipped, not fatal."""
    if not tf.io.gfile.exists(path):
        return []
    with tf.io.gfile.GFile(path, "rb") as f:
        text = f.read().decode("utf-8", errors="replace")
    records = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


class ProfileWindow:
    """--profile_steps=FIRST,LAST: a TensorFlow profile of training steps FIRST to LAST (counted
    from 1 over the whole run), written under model_dir/logs for TensorBoard's Profile tab (the
    tensorboard-plugin-profile package): each op's time on the host and the devices, the input
    pipeline's stalls. The training loop asks `steps_until_boundary` so that its loops of
    `steps_per_loop` steps end where the trace starts and stops."""

    def __init__(self, steps, logdir, say):
        self.first, self.last = steps if steps else (None, None)
        self.logdir, self.say = logdir, say
        self.active = False

    def steps_until_boundary(self, step):
        """Steps from `step` (the steps done) to the next start or stop of the trace; None when none is left."""
        if self.first is None:
            return None
        for boundary in (self.first - 1, self.last):
            if step < boundary:
                return boundary - step
        return None

    def before_loop(self, step):
        if self.first is not None and not self.active and self.first - 1 <= step < self.last:
            try:
                tf.profiler.experimental.start(self.logdir)
            except (tf.errors.OpError, RuntimeError) as error:  # e.g. a profiler already running in this process
                self.say(f"warning: --profile_steps: the profiler did not start ({first_line(error)}); training goes on without it")
                self.first = None
                return
            self.active, self.started_at = True, step + 1

    def after_loop(self, step):
        if self.active and step >= self.last:
            self.stop(step)

    def stop(self, step):
        """Ends the trace and writes it (also when the run stops before `last`), and says where."""
        if self.active:
            self.active = False
            try:
                tf.profiler.experimental.stop()
            except (tf.errors.OpError, OSError) as error:  # writing the trace failed (a full disk): the run goes on
                self.say(f"warning: --profile_steps: the profile could not be written to {self.logdir} ({first_line(error)})")
                return
            self.say(f"profile of steps {self.started_at}-{step} written to {self.logdir}: open it in TensorBoard's "
                     f"Profile tab (pip install tensorboard-plugin-profile; tensorboard --logdir {self.logdir})")
