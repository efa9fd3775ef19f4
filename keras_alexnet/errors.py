"""Errors about user input: one line that names the input and the fix."""

import re


class UsageError(ValueError):
    """Bad user input (a flag, a path, a dataset string). Scripts print it as one line and exit 2."""


def first_line(error, limit=160):
    """The first non-empty line of an exception's message (or of a string), without TensorFlow's
    "{{function_node ...}}" prefix and cut to `limit` characters: what a one-line error quotes.
    An exception without a message gives its class name."""
    text = error if isinstance(error, str) else (getattr(error, "message", None) or str(error))
    text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", text)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    line = lines[0] if lines else ("" if isinstance(error, str) else type(error).__name__)
    return line if len(line) <= limit else line[:limit - 3] + "..."


def few(names, shown):
    """'a, b, c and 7 more': the first `shown` of `names`, for a one-line message."""
    names = list(names)
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


def counted(count, noun, plural=None):
    """'1 epoch', '3 epochs', '0.5 epochs', '2 classes' (plural given): a count and its noun."""
    number = f"{count:g}" if isinstance(count, float) else str(count)
    return f"{number} {noun if count == 1 else plural or noun + 's'}"


def require_tensorflow_backend(what):
    """UsageError unless Keras runs on TensorFlow: training, evaluation and export use
    tf.distribute, tf.data and SavedModel (under JAX or torch they failed deep inside
    tf.train.Checkpoint). `keras_alexnet.build()` alone works under any backend."""
    import keras

    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise UsageError(f"{what} runs on TensorFlow, but Keras' backend in this process is {backend}: set "
                         "KERAS_BACKEND=tensorflow before Keras is first imported (a new process or notebook kernel); "
                         "keras_alexnet.build() alone works under any backend.")
