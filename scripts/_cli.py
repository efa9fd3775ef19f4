"""Command-line plumbing shared by scripts/: one-line errors and exit codes.

A script defines its absl flags and a `main(argv)`, and ends with `cli.run(main)`. Bad user input
(an unknown or malformed flag, a stray positional argument, a `keras_alexnet.errors.UsageError`
or a `FileNotFoundError` out of `main`) and a write that found no space (a full disk, a quota)
are then one line `error: ...` on stderr and exit code 2, with no traceback.

This module only parses argv and handles errors: it reads no flag values (the library never
reads flags). It sits beside the scripts, not in keras_alexnet, and imports only the standard
library and absl: `keras_alexnet/__init__.py` imports TensorFlow (seconds), and the scripts answer
usage errors before that; serving_client.py's REST path needs no TensorFlow at all. A script
imports it as `import _cli as cli` (Python puts the script's folder first on sys.path).
"""

import contextlib
import errno
import json
import logging as std_logging
import os
import re
import signal
import sys

from absl import app, flags, logging

import _startup_noise

USAGE_EXIT_CODE = 2

# TensorFlow's BFC allocator for host memory: with large, short-lived gradient buffers it cut
# system time per training step and gave +9% images/s on CPU (docs/performance.md). Read once,
# when TensorFlow starts, so it is set here, before any script imports it; the environment wins.
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")
# TensorFlow's C++ INFO lines (XLA service start, "Compiled cluster using XLA!") hidden; warnings
# and errors still shown. The environment wins: TF_CPP_MIN_LOG_LEVEL=0 shows everything.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
# The lines TensorFlow prints before it reads that level (oneDNN, no CUDA driver) filtered out too.
_startup_noise.install()


def fail(message, code=USAGE_EXIT_CODE):
    """Print `error: message` on stderr and exit with `code` (2: bad user input)."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def require_model_source(model_dir, weights):
    """Exactly one of --model_dir (a training run) or --weights (a weight file), and it exists.

    Checked before TensorFlow is imported, so a wrong path answers at once; a --model_dir URL
    such as gs://bucket/run is left to TensorFlow's filesystems, which read it later.
    """
    if bool(model_dir) == bool(weights):
        fail("pass exactly one of --model_dir (a training run) or --weights (a weight file).")
    if weights and not os.path.isfile(weights):
        fail(f"--weights={weights}: no such file.")
    if model_dir and "://" not in model_dir and not os.path.isfile(os.path.join(model_dir, "config.json")):
        fail(f"--model_dir={model_dir} has no config.json: pass a directory written by scripts/train.py.")


def parse_flags(argv, flag_values=flags.FLAGS):
    """absl's parser, but a bad flag is one line on stderr and exit code 2. Returns the positional
    arguments (argv[0] first). A value that starts with "~" is the user's home, as a shell would
    have made it unquoted (quoted, `--model_dir "~/run"` made a folder named "~" in the current one)."""
    try:
        positional = flag_values(argv)
    except flags.Error as error:
        missing = re.search(r"Flag --(\w+) must have a value other than None", str(error))
        if missing:  # absl's "flag --out=None: Flag --out must have a value other than None."
            name = missing.group(1)
            text, first_word = flag_values[name].help, flag_values[name].help.split(" ", 1)[0]
            lower = not first_word[1:] or first_word[1:].islower()  # "A run's" -> "a run's"; "TFRecord" stays
            fail(f"--{name} is required: {text[:1].lower() + text[1:] if lower else text}")
        fail(f"{str(error).rstrip('.')}. See --helpfull.")
    for name in flag_values:
        flag = flag_values[name]
        if isinstance(flag.value, str) and flag.value.startswith("~"):
            flag.value = os.path.expanduser(flag.value)
        elif isinstance(flag.value, list):
            flag.value = [os.path.expanduser(v) if isinstance(v, str) and v.startswith("~") else v for v in flag.value]
    return positional[:1] + [os.path.expanduser(a) if a.startswith("~") else a for a in positional[1:]]


def is_usage_error(error):
    """A keras_alexnet.errors.UsageError or a FileNotFoundError (a user path that is not there).

    keras_alexnet.errors is looked up, not imported: importing it imports TensorFlow, and a
    UsageError can only have been raised once that module is loaded.
    """
    errors = sys.modules.get("keras_alexnet.errors")
    return isinstance(error, FileNotFoundError) or (errors is not None and isinstance(error, errors.UsageError))


# A write that failed for want of space: a full disk, a quota, a file size limit.
_NO_SPACE = {errno.ENOSPC: "No space left on device", errno.EDQUOT: "Disk quota exceeded", errno.EFBIG: "File too large"}


def no_space_message(error):
    """One line for an error raised because a write found no space (an OSError, or a TensorFlow
    error whose message names it); None for any other error."""
    if isinstance(error, OSError) and error.errno in _NO_SPACE:
        reason, where = _NO_SPACE[error.errno], error.filename
    else:
        reason, where = next((text for text in _NO_SPACE.values() if text in str(error)), None), None
    if reason is None:
        return None
    return f"{reason}{f' writing {where}' if where else ''}: free disk space or write somewhere else, then rerun."


def unreachable_storage_message(error):
    """One line for a TensorFlow filesystem error that could not reach remote storage (gs://, s3://:
    no network, an unknown host, refused credentials); None for any other error. TensorFlow raises
    it from the first file call on such a path, a traceback through whatever made that call."""
    text = str(error)
    if not type(error).__module__.startswith("tensorflow") or "Error executing an HTTP request" not in text:
        return None
    where = re.search(r"\b[a-z][a-z0-9]*://[^\s'\"]+", text)
    reason = re.search(r"error details: ([^\n]+)|(HTTP response code \d+)", text)
    return (f"could not reach {where.group(0) if where else 'remote storage'}"
            f"{f' ({reason.group(1) or reason.group(2)})' if reason else ''}: check the network and the storage's "
            "credentials (for gs://: gcloud auth application-default login, or GOOGLE_APPLICATION_CREDENTIALS), "
            "or use a local folder.")


def out_of_memory_message(error):
    """One line for an allocation that failed: TensorFlow's ResourceExhaustedError ("OOM when
    allocating tensor with shape[...] ... on ...GPU:0", what a batch too large for a GPU raises) or
    Python's MemoryError (a host array); None for any other error."""
    from keras_alexnet.errors import first_line  # loaded already: the scripts' work runs through the package

    if isinstance(error, MemoryError):
        detail = first_line(error) if str(error) else "the host ran out"
    elif type(error).__name__ == "ResourceExhaustedError" and "OOM" in str(error):
        detail = first_line(error)
    else:
        return None
    return (f"out of memory ({detail}): lower --batch_size (or --image_size), or run where there is more memory; "
            "files already written are kept.")


def configured_keras_backend():
    """(backend, where it was set): KERAS_BACKEND, else keras.json's "backend" (KERAS_HOME or
    ~/.keras, as Keras reads it); (None, None) when neither sets one."""
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"], "KERAS_BACKEND"
    path = os.path.join(os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras"), "keras.json")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f).get("backend"), path
    except (OSError, ValueError, AttributeError):
        return None, None


def use_keras_backend(name):
    """Sets Keras' backend for this process (before Keras is imported: the scripts import it in
    `main`), with one line on stderr when KERAS_BACKEND or keras.json had chosen another: the
    scripts train, evaluate and export through TensorFlow (tf.distribute, tf.data, SavedModel),
    and under another backend they failed with a traceback deep in tf.train.Checkpoint."""
    chosen, where = configured_keras_backend()
    if chosen and chosen != name:
        print(f"note: Keras' backend is {chosen} by {where}; this script runs on TensorFlow, so it uses Keras' {name} backend "
              "(keras_alexnet.build() alone works under any backend).", file=sys.stderr, flush=True)
    os.environ["KERAS_BACKEND"] = name


class ReaderSafeStdout:
    """sys.stdout that outlives its reader. When the reader of a pipe goes away (`train.py | head`,
    a log shipper that died), a write raised BrokenPipeError out of a progress line and stopped a
    training run with a traceback and without a checkpoint. The run now goes on: one line on
    stderr says so, and what it would have printed is dropped (history.jsonl, the TensorBoard logs
    and the checkpoints keep being written)."""

    def __init__(self, stream):
        self._stream, self._gone = stream, False

    # EPIPE: a pipe's reader exited; EIO: the terminal was closed (the run goes on after SIGHUP's checkpoint).
    GONE = (errno.EPIPE, errno.EIO)

    def write(self, text):
        self._unless_gone(self._stream.write, text)
        return len(text)

    def flush(self):
        self._unless_gone(self._stream.flush)

    def _unless_gone(self, call, *args):
        if self._gone:
            return
        try:
            call(*args)
        except OSError as error:
            if error.errno not in self.GONE:
                raise
            self._reader_gone()

    def _reader_gone(self):
        self._gone = True
        try:  # the interpreter's own flush at exit then finds a sink, not the closed pipe
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        except (OSError, ValueError):
            pass
        try:
            print("note: standard output was closed by its reader; going on without printing progress (the run's "
                  "files keep being written).", file=sys.stderr, flush=True)
        except (OSError, ValueError):
            pass

    def __getattr__(self, name):  # isatty, fileno, encoding, ...
        return getattr(self._stream, name)


# Signals that end a script (a job scheduler's stop, `timeout`, a closed terminal): by default the
# process dies where it stands, leaving a half-written export's staging folder or gigabytes of
# temporary activations behind. As SystemExit they unwind through every `finally` and `with`.
_STOP_SIGNALS = ("SIGTERM", "SIGHUP")


_stopped_by = []  # the signal that stopped the script, if one did (SIGINT included)


def _exit_on_signal(signum, frame):
    if not _stopped_by:
        print(f"stopped by {signal.Signals(signum).name}.", file=sys.stderr, flush=True)
    _stopped_by.append(signum)
    raise SystemExit(128 + signum)


def _interrupt(signum, frame):
    # Python's own Ctrl-C (KeyboardInterrupt), remembered: what it interrupts may raise another error.
    _stopped_by.append(signum)
    raise KeyboardInterrupt


@contextlib.contextmanager
def signals_unwind():
    """Inside the block SIGTERM and SIGHUP raise SystemExit(128 + the signal's number), so
    cleanups run, and Ctrl-C is remembered when it raises KeyboardInterrupt; scripts/train.py's
    loop installs its own handlers over these (a checkpoint first). The handlers before are put
    back after; outside the main thread nothing changes, nor does a SIGINT the shell ignores (a
    background job's)."""
    handlers = {name: _exit_on_signal for name in _STOP_SIGNALS if hasattr(signal, name)}
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        handlers["SIGINT"] = _interrupt
    previous = {}
    try:
        for name, handler in handlers.items():
            previous[name] = signal.signal(getattr(signal, name), handler)
    except ValueError:  # not the main thread: signals stay as they are
        pass
    try:
        yield
    finally:
        for name, handler in previous.items():
            signal.signal(getattr(signal, name), handler)


def _stop(signum):
    """The end of a script that a signal stopped, whatever was raised on the way out."""
    if signum == signal.SIGINT:  # the others said so when they came
        print("stopped by Ctrl-C.", file=sys.stderr, flush=True)
    sys.exit(128 + signum)


def stray_arguments_message(raw_argv, stray, flag_values=flags.FLAGS):
    """Why arguments were left over: a value given to a true/false flag after a space (`--xla
    false`: absl takes `--xla` as true and leaves `false`), several values given to a list flag
    (`--queries photos/*.jpg`: the shell makes each file an argument of its own, absl takes the
    first), or arguments where flags were meant."""
    for index, token in enumerate(raw_argv[1:], start=1):
        if token != stray[0] or index < 2:
            continue
        name = raw_argv[index - 1].lstrip("-")
        if raw_argv[index - 1].startswith("-") and "=" not in name and name in flag_values \
                and flag_values[name].boolean:
            return (f"--{name} {token}: a true/false flag takes its value after '=': --{name}={token} "
                    f"(or --{name} for true, --no{name} for false).")
        list_flag = _list_flag_before(raw_argv[:index], flag_values)
        if list_flag:
            name, first = list_flag
            values = [first] + stray
            shown = ",".join(values[:3]) + (",..." if len(values) > 3 else "")
            return (f"--{name} takes its values as one comma-separated argument: --{name}={shown} "
                    f"({len(values)} values came as separate arguments, e.g. from a shell wildcard).")
    return f"unexpected arguments {stray}: flags are --name=value."


def _list_flag_before(head, flag_values):
    """(name, value) when `head` ends with a list flag and its value (`--name=value` or `--name
    value`), else None."""
    last = head[-1]
    if last.startswith("-") and "=" in last:
        name, value = last.lstrip("-").split("=", 1)
    elif len(head) >= 3 and head[-2].startswith("-") and "=" not in head[-2]:
        name, value = head[-2].lstrip("-"), last
    else:
        return None
    if name in flag_values and isinstance(flag_values[name].parser, flags.ListParser):
        return name, value
    return None


class PlainLogFormatter(std_logging.Formatter):
    """Log lines as the scripts' own warnings read, `warning: message`, instead of absl's
    `W1206 13:49:24.463258 139912443586240 data.py:83] message`; --verbosity brings absl's back."""

    def format(self, record):
        return f"{record.levelname.lower()}: {record.getMessage()}"


def run(main, positional=False, argv=None, keras_backend="tensorflow"):
    """absl's `app.run(main)` with `parse_flags`; refuses positional arguments unless `positional`,
    and turns a usage error (`is_usage_error`) or a write that found no space (`no_space_message`)
    raised by `main` into one line and exit code 2, and so are remote storage that could not be
    reached (`unreachable_storage_message`) and memory that ran out (`out_of_memory_message`).
    SIGTERM, SIGHUP and Ctrl-C unwind `main`, so its cleanups run (`signals_unwind`), and end it with
    one line and exit code 128 + the signal's number. Keras gets `keras_backend` (`use_keras_backend`;
    None: leave it to the script). While `main` runs, stdout outlives its reader (`ReaderSafeStdout`).

    `main(argv)` may return an exit code or call `sys.exit` itself; other exit codes and other
    exceptions pass through. `argv` defaults to sys.argv.
    """
    if keras_backend:
        use_keras_backend(keras_backend)

    raw_argv = list(sys.argv if argv is None else argv)

    def checked_main(argv):
        if not positional and len(argv) > 1:
            fail(stray_arguments_message(raw_argv, argv[1:]))
        # absl logs TensorFlow's INFO lines (checkpoint sharding, SavedModel assets, retracing
        # notes) by default: keep the terminal for progress and results. --verbosity=0 shows them.
        if not flags.FLAGS["verbosity"].present:
            logging.set_verbosity(logging.WARNING)
            logging.get_absl_handler().setFormatter(PlainLogFormatter())
        try:
            return main(argv)
        except KeyboardInterrupt:  # Ctrl-C outside the training loop (which saves a checkpoint first)
            _stop(signal.SIGINT)
        except Exception as error:
            if _stopped_by:  # raised on the way out by what the signal interrupted (TensorFlow tracing a function, say)
                _stop(_stopped_by[0])
            if is_usage_error(error):
                fail(error)
            message = no_space_message(error) or unreachable_storage_message(error) or out_of_memory_message(error)
            if message:
                fail(message)
            raise

    stdout = sys.stdout
    sys.stdout = stdout if isinstance(stdout, ReaderSafeStdout) else ReaderSafeStdout(stdout)
    try:
        with signals_unwind():
            app.run(checked_main, argv=argv, flags_parser=parse_flags)
    finally:
        sys.stdout = stdout
