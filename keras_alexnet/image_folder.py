"""The layout of an image folder, as `folder:PATH` reads it (keras_alexnet/sources/folder.py) and
`prepare.list_folder` plans it: the classes, and the files of each split. No TensorFlow here.
A class's images are the files anywhere below its folder, subfolders included. Two layouts:

- PATH/train/<class>/* and PATH/val/<class>/* (or PATH/validation/...): the ImageNet /
  ImageFolder layout, the held-out images chosen by whoever made the folders.
- PATH/<class>/*: the layout of `keras.utils.image_dataset_from_directory`. About HELD_OUT_PERCENT
  of each class is held out, chosen by a hash of the file's path inside PATH, so every run, the
  evaluation and `scripts/prepare_data.py` agree on it, and a file added later never moves a
  held-out image into training (`held_out_mask` has the one exception).
"""

import collections
import functools
import hashlib
import os

from keras_alexnet.errors import UsageError, counted

# What tf.io.decode_image reads; scripts/predict.py keeps the same list (a test checks).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp")
# What tf.io.decode_image reads, for messages that name the formats.
DECODED_FORMATS = "JPEG, PNG, GIF, BMP or WebP"
HELD_OUT_PERCENT = 20
LAYOUT = "PATH/<class>/*.jpg, or PATH/train/<class>/*.jpg and PATH/val/<class>/*.jpg"


def _split_dir(root, split):
    names = ("train",) if split == "train" else ("val", "validation")
    for name in names:
        path = os.path.join(root, name)
        if os.path.isdir(path):
            return path
    return None


def _ignored(name):
    """Hidden files and folders, and the __MACOSX folder that a zip made on a Mac unpacks beside
    the class folders (it would have been taken for a class)."""
    return name.startswith(".") or name == "__MACOSX"


def is_flat(root):
    """Whether root holds its class folders directly (no train/, val/ or validation/)."""
    return _split_dir(root, "train") is None and _split_dir(root, "validation") is None


def _layout(root):
    return LAYOUT.replace("PATH", root)


@functools.lru_cache(maxsize=8)
def class_names(root):
    """The class folder names under root's train/ (or val/, or root itself), sorted; UsageErrors
    name the layouts."""
    if not os.path.isdir(root):
        what = "is a file, not a folder" if os.path.exists(root) else "does not exist"
        raise UsageError(f"data directory {root} {what}; expected {_layout(root)}")
    source = _split_dir(root, "train") or _split_dir(root, "validation") or root
    classes = sorted(entry.name for entry in os.scandir(source) if entry.is_dir() and not _ignored(entry.name))
    if not classes:
        raise UsageError(f"{source} has no class folders; expected {_layout(root)}")
    if len(classes) == 1:  # it trains to 100% and says "done": a classifier of nothing
        raise UsageError(f"{source} has one class folder ({classes[0]}); a classifier needs two or more: "
                         f"give each class its own folder, {source}/<class>/*.jpg")
    return tuple(classes)


def _hash_percent(relative_path):
    """0-99 from the MD5 of a path inside the folder (separators as "/" on every system)."""
    digest = hashlib.md5(relative_path.replace(os.sep, "/").encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % 100


def is_held_out(relative_path):
    """Whether the hash holds a file out: true for HELD_OUT_PERCENT% of paths."""
    return _hash_percent(relative_path) < HELD_OUT_PERCENT


def held_out_mask(relative_paths):
    """Which files of one class folder are held out: those `is_held_out` picks and, in a class of
    two or more files where it picks none, the file with the lowest hash, so that every class is
    measured (by the hash alone, a class of ten files has none held out one time in nine). That
    stand-in is the one held-out file that an added file can move back into training: when the
    hash picks the added file.
    """
    percents = [_hash_percent(path) for path in relative_paths]
    mask = [percent < HELD_OUT_PERCENT for percent in percents]
    if len(relative_paths) >= 2 and not any(mask):
        mask[min(range(len(relative_paths)), key=lambda i: (percents[i], relative_paths[i]))] = True
    return mask


@functools.lru_cache(maxsize=8)
def folder_files(root, split):
    """(paths, labels) of one split, sorted by class then file name."""
    if not is_flat(root):
        split_dir = _split_dir(root, split)
        if split_dir is None:
            raise UsageError(_missing_split_message(root, split))
        return _class_files(root, split_dir)
    return _flat_splits(root)[split]


# Other names a held-out split's folder goes by (Kaggle's test/, Roboflow's valid/): named in the
# error, not read, since a test/ folder may be meant to stay unseen until the end.
OTHER_SPLIT_NAMES = ("test", "valid", "eval", "dev")


def _missing_split_message(root, split):
    """Why a folder with train/ (or val/) and not the other cannot be read, and the ways out."""
    have, need = ("val", "train") if split == "train" else ("train", "val")
    other = next((name for name in OTHER_SPLIT_NAMES if os.path.isdir(os.path.join(root, name))), None)
    if need == "val" and other:
        return (f"{root} has train/ and {other}/ but no val/ folder: to hold out {other}/, link it as val/ "
                f"(ln -s {other} {os.path.join(root, 'val')}), or add {root}/val/<class>/*.jpg")
    return (f"{root} has {have}/ but no {need}/ folder: add {root}/{need}/<class>/*.jpg, or move "
            f"the class folders up into {root} to hold out about {HELD_OUT_PERCENT}% of each")


@functools.lru_cache(maxsize=8)
def _flat_splits(root):
    """{split: (paths, labels)} of a flat folder, listed and hashed once for both splits."""
    paths, labels = _class_files(root, root)
    by_class = collections.defaultdict(list)  # one pass: a class at a time was classes x files
    for i, label in enumerate(labels):
        by_class[label].append(i)
    held_out = [False] * len(paths)
    for indices in by_class.values():
        for i, held in zip(indices, held_out_mask([os.path.relpath(paths[i], root) for i in indices])):
            held_out[i] = held
    trained = {label for label, h in zip(labels, held_out) if not h}
    for label, name in enumerate(class_names(root)):
        if label not in trained:
            raise UsageError(f"class folder {os.path.join(root, name)} has too few files to hold out "
                             f"{HELD_OUT_PERCENT}% and train on the rest: add images, or make "
                             f"{root}/train/ and {root}/val/ yourself")
    return {split: (tuple(p for p, h in zip(paths, held_out) if h == (split == "validation")),
                    tuple(y for y, h in zip(labels, held_out) if h == (split == "validation")))
            for split in ("train", "validation")}


def _files_below(folder):
    """Every file in `folder` and its subfolders (as `keras.utils.image_dataset_from_directory`
    reads a class folder; they were left out before, without a word), hidden ones excepted,
    sorted by path."""
    found = []
    for parent, subfolders, names in os.walk(folder):
        subfolders[:] = [name for name in subfolders if not _ignored(name)]
        found += [os.path.join(parent, name) for name in names if not _ignored(name)]
    return sorted(found)


# Images that TensorFlow's decoders do not read and scripts/prepare_data.py (Pillow) does.
CONVERTIBLE_EXTENSIONS = (".tif", ".tiff")


def _no_images_message(root, folder, files):
    """Why a class folder has no images: empty, or which kinds of files it holds instead."""
    if not files:
        return f"class folder {folder} has no images; expected {folder}/*.jpg (or .png)"
    kinds = collections.Counter(os.path.splitext(path)[1].lower() or "no extension" for path in files)
    held = ", ".join(f"{count} {kind}" for kind, count in kinds.most_common(3))
    fix = "convert them to JPEG or PNG"
    if any(kind in CONVERTIBLE_EXTENSIONS for kind in kinds):
        fix += f", or write the folder as TFRecords with scripts/prepare_data.py --input_dir {root} (it reads TIFF)"
    return (f"class folder {folder} has no images TensorFlow decodes ({DECODED_FORMATS}), only "
            f"{counted(len(files), 'other file')} ({held}): {fix}")


def _class_files(root, split_dir):
    """(paths, labels) of every file in split_dir's class folders, sorted by class then file name."""
    index = {name: i for i, name in enumerate(class_names(root))}
    paths, labels = [], []
    for entry in sorted(os.scandir(split_dir), key=lambda e: e.name):
        if _ignored(entry.name) or not entry.is_dir():
            continue
        if entry.name not in index:
            raise UsageError(f"class folder {entry.path} is not among the train classes in {root}/train")
        files = _files_below(entry.path)
        if not any(path.lower().endswith(IMAGE_EXTENSIONS) for path in files):
            raise UsageError(_no_images_message(root, entry.path, files))
        # Every file is kept: a non-image is skipped and counted at decode time, never silently.
        paths.extend(files)
        labels.extend([index[entry.name]] * len(files))
    if not paths:
        raise UsageError(f"{split_dir} has no class folders with images; expected {split_dir}/<class>/*.jpg")
    return tuple(paths), tuple(labels)
