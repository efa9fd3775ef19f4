"""Where a dataset string's examples come from: one module per source, listed in SOURCES.

A dataset string is KIND or KIND:ARGUMENT ("shapes", "folder:/data/flowers", ...). Each source
is a class with:

    KIND, FORM          its name before the ":" and the form the error messages show
    NEEDS_ARGUMENT      whether something must follow the ":"
    __init__(spec, argument, data_dir=None, manual_dir=None)
                        parses the string (UsageError naming the fix when it is bad)
    num_classes, mean_rgb (None: the ImageNet mean)
    info()              a DatasetInfo: class names and examples per split
    records(split, training, input_context, seed, shuffle_buffer) -> (records, load)
                        a tf.data.Dataset of (payload, label, name) holding this input pipeline's
                        share, shuffled when training, and load(payload, label) -> (encoded
                        image, int32 label); keras_alexnet.data does the rest (decode, augment,
                        skip bad images, batch)

or, for a source that makes finished batches itself (synthetic), `batches(...)` instead of
`records`. Adding a source is one module here and one line in SOURCES (docs/input.md).
"""

import os

from keras_alexnet.errors import UsageError
from keras_alexnet.sources.folder import Folder
from keras_alexnet.sources.shapes import Shapes
from keras_alexnet.sources.synthetic import Synthetic
from keras_alexnet.sources.tfds import TFDS
from keras_alexnet.sources.tfrecord import TFRecord

SOURCES = {source.KIND: source for source in (Shapes, Synthetic, Folder, TFRecord, TFDS)}


def forms():
    """"shapes, synthetic, folder:PATH, tfrecord:GLOB or tfds:NAME": what a dataset string may be."""
    names = [source.FORM for source in SOURCES.values()]
    return ", ".join(names[:-1]) + " or " + names[-1]


def open_source(spec, data_dir=None, manual_dir=None):
    """The source object of a dataset string; a UsageError lists the forms for an unknown one."""
    if not isinstance(spec, str) or not spec:
        raise UsageError(f"empty dataset string; expected {forms()}")
    kind, _, argument = spec.partition(":")
    source = SOURCES.get(kind)
    if source is not None and source.NEEDS_ARGUMENT and not argument:
        raise UsageError(f"dataset {spec!r} names no {source.FORM.partition(':')[2].lower()}: write it as {source.FORM}")
    if source is None:
        raise UsageError(f"unknown dataset {spec!r}; expected {forms()}")
    return source(spec, argument, data_dir=data_dir, manual_dir=manual_dir)


def absolute_path(path):
    """A local path made absolute (~ expanded): the same file from any working directory. None,
    "" and URLs (gs://...) as they are."""
    return path if not path or "://" in path else os.path.abspath(os.path.expanduser(path))


def absolute_spec(spec):
    """The dataset string with a local folder: or tfrecord: path made absolute (`absolute_path`);
    other strings, and URLs, as they are."""
    kind, _, argument = spec.partition(":") if isinstance(spec, str) else ("", "", "")
    if kind not in ("folder", "tfrecord") or not argument:
        return spec
    path, mark, options = argument.partition("?") if kind == "tfrecord" else (argument, "", "")
    return f"{kind}:{absolute_path(path)}{mark}{options}"
