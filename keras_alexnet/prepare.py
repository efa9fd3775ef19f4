"""Prepare an image dataset once as sharded TFRecords, the paper's way (§2).

    "ImageNet consists of variable-resolution images, while our system requires a constant input
    dimensionality. Therefore, we down-sampled the images to a fixed resolution of 256 x 256.
    Given a rectangular image, we first rescaled the image such that the shorter side was of
    length 256, and then cropped out the central 256x256 patch from the resulting image. We did
    not pre-process the images in any other way, except for subtracting the mean activity over
    the training set from each pixel."                                  (Krizhevsky et al., §2)

Sources (`list_folder`, `list_ilsvrc`): an image folder (<class>/*, or train/<class>/* and val/<class>/*), or the
ILSVRC2012 layout (one tar per synset, or their extracted folders; the flat validation folder and
its ground-truth file). Output (`prepare`): TFRecords in the TF-official ImageNet schema, read
unchanged by `data.make_dataset("tfrecord:DIR")`:

    DIR/train-00000-of-01024 ...        shards; labels 1..K (label_offset 1, as the TF scripts)
    DIR/validation-00000-of-00128 ...
    DIR/manifest.json                   counts per split and class, class names, shard sizes and
                                        SHA-256, skipped files, the training set's mean (§2)
    DIR/mean_image.npy                  the per-pixel training mean, float32 [256, 256, 3]
    DIR/.prepare/                       the plan and one record per finished shard

How it scales: the example list is sorted, the training examples shuffled with a fixed seed, and
cut into shards, so every process and every machine computes the same shards with no
coordination. Worker i of N (`worker_index`, `num_workers`) writes shards i, i+N, ...; each shard
is written under a temporary name and renamed when complete, so a killed run rerun with the same
arguments keeps the finished shards. Whoever finds every shard complete writes the manifest
(or `finalize(DIR)` later). A file that cannot be read or decoded is skipped and listed.
"""

import dataclasses
import hashlib
import io
import json
import os
import random
import re
import signal
import tarfile
import tempfile
import threading
import time

import numpy as np
from PIL import Image, UnidentifiedImageError

from keras_alexnet import image_folder
from keras_alexnet.errors import UsageError, few

SIZE = 256  # §2
RESIZE_MODES = ("paper", "shorter")  # paper: shorter side 256, central 256x256; shorter: side only
DEFAULT_QUALITY = 90
DEFAULT_SHARDS = {"train": 1024, "validation": 128}  # the TF-official ImageNet sharding
# Below ImageNet's size, one shard per this many images: a folder of 1,000 photos became 1,000
# one-image shards (and 1,000 state files) under the fixed 1024 before.
EXAMPLES_PER_SHARD = 256
LABEL_OFFSET = 1  # labels 1..K, as tensorflow/models' build_imagenet_data.py (0 was "background")
MANIFEST = "manifest.json"
MEAN_IMAGE = "mean_image.npy"
STATE_DIR = ".prepare"
FORMAT = "keras_alexnet.prepare/1"
# What Pillow reads here: the folder source's formats and the TIFFs it sends here.
IMAGE_EXTENSIONS = image_folder.IMAGE_EXTENSIONS + image_folder.CONVERTIBLE_EXTENSIONS


@dataclasses.dataclass(frozen=True)
class Example:
    """One source image: a file (`offset` None) or `size` bytes at `offset` inside the tar `path`."""

    path: str
    name: str  # the file name recorded as image/filename
    label: int  # 0-based, index into the class list
    offset: int = None
    size: int = None

    def describe(self):
        return f"{self.path}[{self.name}]" if self.offset is not None else self.path

    def read(self):
        with open(self.path, "rb") as f:
            if self.offset is None:
                return f.read()
            f.seek(self.offset)
            return f.read(self.size)


@dataclasses.dataclass
class Plan:
    """What to prepare: classes (synsets), readable names, and the examples of each split."""

    class_names: list
    class_texts: list
    splits: dict  # split -> [Example], sorted by (label, name)


# ----------------------------------------------------------------------------- listing the sources


def _is_image_name(name):
    return name.lower().endswith(IMAGE_EXTENSIONS)


def read_synset_names(path):
    """{synset: readable name} from a file of lines `n01440764 tench, Tinca tinca` (the devkit's
    synset_words.txt, LOC_synset_mapping.txt, tensorflow/models' imagenet_metadata.txt)."""
    names = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            key, _, text = line.strip().partition(" ") if "\t" not in line else line.strip().partition("\t")
            if key:
                names[key] = text.strip()
    return names


def _texts(class_names, synset_names):
    return [synset_names.get(name, "") for name in class_names] if synset_names else [""] * len(class_names)


def list_folder(root, synset_names=None):
    """Plan of an image folder, in either layout of data.py's folder: source (PATH/<class>/*, about
    a fifth of each class held out by file name; or PATH/train/<class>/* and PATH/val/<class>/*),
    with the same classes and the same split. Every file is listed (one that is not an image is
    skipped and listed when it fails to decode).
    """
    classes = list(image_folder.class_names(root))
    splits = {}
    for split in ("train", "validation"):
        paths, labels = image_folder.folder_files(root, split)
        splits[split] = [Example(path, os.path.basename(path), label) for path, label in zip(paths, labels)]
    return Plan(classes, _texts(classes, synset_names), splits)


def _tar_members(path, synset):
    try:
        with tarfile.open(path) as tar:
            return [(m.name, m.offset_data, m.size) for m in tar if m.isfile() and _is_image_name(m.name)]
    except (tarfile.TarError, OSError) as error:
        raise UsageError(f"cannot read {path} as the tar of synset {synset}: {error}") from None


def read_validation_labels(path, file_names, class_names):
    """Labels (0-based) of the sorted validation files from a ground-truth file.

    Accepted: one synset per line, in file order (tensorflow/models'
    imagenet_2012_validation_synset_labels.txt); or `NAME LABEL` per line, LABEL a synset or a
    0-based index into the sorted synsets (Caffe's val.txt), NAME with or without extension; or
    Kaggle's LOC_val_solution.csv (`ImageId,PredictionString`, the first synset). The devkit's
    numeric ILSVRC2012_validation_ground_truth.txt is in meta.mat's order, not the sorted one,
    and is refused.
    """
    index = {name: i for i, name in enumerate(class_names)}
    with open(path, encoding="utf-8") as f:
        rows = [re.split(r"[,\s]+", line.strip()) for line in f if line.strip()]
    if rows and rows[0][0] == "ImageId":
        rows = rows[1:]

    def label(token, where):
        if token in index:
            return index[token]
        if re.fullmatch(r"\d+", token) and int(token) < len(class_names):
            return int(token)
        raise UsageError(f"{path}: {where}: {token!r} is neither a training synset nor a class index 0..{len(class_names) - 1}")

    if all(len(row) == 1 for row in rows):
        if rows and all(re.fullmatch(r"\d+", row[0]) for row in rows):
            raise UsageError(f"{path} holds numeric labels only: the devkit's ILSVRC2012 IDs are in meta.mat's order. Pass "
                             "a file of synsets in file order (tensorflow/models' imagenet_2012_validation_synset_labels.txt) "
                             "or NAME SYNSET lines")
        if len(rows) != len(file_names):
            raise UsageError(f"{path} has {len(rows)} labels for {len(file_names)} validation files")
        return [label(row[0], f"line {i + 1}") for i, row in enumerate(rows)]
    by_name = {os.path.splitext(row[0])[0]: label(row[1], row[0]) for row in rows if len(row) > 1}
    missing = [name for name in file_names if os.path.splitext(name)[0] not in by_name]
    if missing:
        raise UsageError(f"{path} has no label for {len(missing)} validation files, e.g. {missing[0]}")
    return [by_name[os.path.splitext(name)[0]] for name in file_names]


def list_ilsvrc(train_dir, val_dir=None, val_labels=None, synset_names=None):
    """Plan of the ILSVRC2012 layout (§2's ImageNet).

    train_dir: one tar per synset (n01440764.tar ..., what ILSVRC2012_img_train.tar holds) or
    their extracted folders (n01440764/*.JPEG), or a mix. val_dir: the flat folder of
    ILSVRC2012_val_*.JPEG, labelled by `val_labels` (read_validation_labels).
    """
    if not os.path.isdir(train_dir):
        raise UsageError(f"--train_dir={train_dir} is not a directory of per-synset tars or folders")
    entries = {}
    for entry in os.scandir(train_dir):
        synset, ext = os.path.splitext(entry.name)
        if entry.is_dir() and not entry.name.startswith("."):
            entries[entry.name] = entry.path
        elif entry.is_file() and ext == ".tar":
            entries.setdefault(synset, entry.path)
    if not entries:
        raise UsageError(f"{train_dir} has no per-synset tars (n01440764.tar) or folders (n01440764/)")
    classes = sorted(entries)
    train = []
    for label, synset in enumerate(classes):
        path = entries[synset]
        if os.path.isdir(path):
            names = sorted(f.name for f in os.scandir(path) if f.is_file() and not f.name.startswith("."))
            train += [Example(os.path.join(path, name), name, label) for name in names]
        else:
            members = sorted(_tar_members(path, synset))
            train += [Example(path, os.path.basename(name), label, offset, size) for name, offset, size in members]
    splits = {"train": train}
    if val_dir:
        if not val_labels:
            raise UsageError("--val_dir needs --val_labels, the ground-truth file of the flat validation folder")
        names = sorted(f.name for f in os.scandir(val_dir) if f.is_file() and _is_image_name(f.name))
        if not names:
            raise UsageError(f"{val_dir} has no images; expected the flat folder of ILSVRC2012_val_*.JPEG")
        labels = read_validation_labels(val_labels, names, classes)
        splits["validation"] = sorted((Example(os.path.join(val_dir, n), n, y) for n, y in zip(names, labels)),
                                      key=lambda e: (e.label, e.name))
    return Plan(classes, _texts(classes, synset_names), splits)


# ----------------------------------------------------------------------------- shards


def check_holds_only_shards(output_dir):
    """An --output_dir that already holds other files (a home folder, a run, a dataset) is refused
    before anything is written: the shards would mix with them. What a prepare writes (shards,
    manifest, mean image, its hidden state and temporary files) is not "other": an earlier or
    concurrent prepare into the same folder resumes."""
    if "://" in output_dir or not os.path.isdir(output_dir):
        return
    others = sorted(name for name in os.listdir(output_dir)
                    if not name.startswith(".") and name not in (MANIFEST, MEAN_IMAGE)
                    and not re.fullmatch(r"(train|validation)-\d{5}-of-\d{5}(\.tmp-\d+)?", name))
    if others:
        raise UsageError(f"--output_dir={output_dir} holds other files ({few(others, 3)}): choose a new or empty folder, "
                         "so that the shards do not mix with them.")


def shard_name(split, index, num_shards):
    return f"{split}-{index:05d}-of-{num_shards:05d}"


def assign_shards(examples, num_shards, shuffle_seed=None):
    """Cut the (sorted) examples into `num_shards` contiguous runs; shuffled first with
    `shuffle_seed` (training: each shard then holds every class), kept in order without one
    (evaluation reads the files in order). The same list and seed give the same shards anywhere."""
    examples = list(examples)
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(examples)
    n = len(examples)
    return [examples[i * n // num_shards:(i + 1) * n // num_shards] for i in range(num_shards)]


def resize(image, mode=RESIZE_MODES[0], size=SIZE):
    """§2: shorter side to `size` (up or down, bicubic, antialiased), then (mode "paper") the
    central size x size patch. The crop is made before the resize (the same pixels, less work),
    and a JPEG is first decoded at the largest 1/2, 1/4, 1/8 scale that keeps the shorter side
    >= size (libjpeg's DCT scaling, a proper low-pass)."""
    width, height = image.size
    short = min(width, height)
    image.draft("RGB", (max(1, width * size // short), max(1, height * size // short)))  # JPEG only
    width, height = image.size
    short = min(width, height)
    image = image.convert("RGB")
    if mode == "paper":
        left, top = (width - short) // 2, (height - short) // 2
        return image.resize((size, size), Image.BICUBIC, box=(left, top, left + short, top + short))
    new = (round(width * size / short), round(height * size / short))
    return image.resize(new, Image.BICUBIC)


def encode_example(jpeg, height, width, label, synset, text, name):
    """A tf.train.Example in the TF-official ImageNet schema (tensorflow/models build_imagenet_data.py)."""
    import tensorflow as tf

    def b(value):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.encode() if isinstance(value, str) else value]))

    def i(value):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))

    return tf.train.Example(features=tf.train.Features(feature={
        "image/encoded": b(jpeg), "image/format": b("JPEG"), "image/colorspace": b("RGB"), "image/channels": i(3),
        "image/height": i(height), "image/width": i(width), "image/class/label": i(label + LABEL_OFFSET),
        "image/class/synset": b(synset), "image/class/text": b(text), "image/filename": b(name),
    })).SerializeToString()


# ----------------------------------------------------------------------------- writing one shard


def _join(directory, name):
    return directory.rstrip("/") + "/" + name if "://" in directory else os.path.join(directory, name)


def _write_file(path, data):
    """Write bytes atomically (temporary name, then rename) to a local or TensorFlow filesystem path."""
    import tensorflow as tf

    tmp = f"{path}.tmp-{os.getpid()}"
    with tf.io.gfile.GFile(tmp, "wb") as f:
        f.write(data)
    tf.io.gfile.rename(tmp, path, overwrite=True)


def _read_json(path):
    import tensorflow as tf

    with tf.io.gfile.GFile(path, "rb") as f:
        return json.loads(f.read())


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclasses.dataclass
class ShardTask:
    output_dir: str
    split: str
    index: int
    num_shards: int
    examples: list
    class_names: list
    class_texts: list
    resize_mode: str = "paper"
    size: int = SIZE
    quality: int = DEFAULT_QUALITY


def write_shard(task, progress=None):
    """Write one shard (§2 resize, JPEG at `quality`) under a temporary name, its record in
    .prepare/, then rename it: a shard that exists is complete. Returns its record; a finished
    shard is kept and its record returned. `progress(n)` is called per image."""
    import tensorflow as tf

    name = shard_name(task.split, task.index, task.num_shards)
    final, record_path = _join(task.output_dir, name), _join(task.output_dir, f"{STATE_DIR}/{name}.json")
    if tf.io.gfile.exists(final) and tf.io.gfile.exists(record_path):
        if progress:
            progress(len(task.examples))
        return _read_json(record_path)
    for stale in tf.io.gfile.glob(_join(task.output_dir, f".{name}.tmp-*")):  # from a killed run of this worker
        tf.io.gfile.remove(stale)
    remote = "://" in task.output_dir
    if remote:  # written and hashed locally, then copied
        handle, tmp = tempfile.mkstemp(prefix=f".{name}.tmp-")
        os.close(handle)
    else:
        tmp = _join(task.output_dir, f".{name}.tmp-{os.getpid()}")
    record, mean_sum = _write_records(task, tmp, progress)
    record.update(shard=name, bytes=os.path.getsize(tmp), sha256=_sha256(tmp))
    if mean_sum is not None:
        buffer = io.BytesIO()
        np.save(buffer, mean_sum)
        _write_file(_join(task.output_dir, f"{STATE_DIR}/{name}.mean.npy"), buffer.getvalue())
    _write_file(record_path, json.dumps(record).encode())
    if remote:
        remote_tmp = _join(task.output_dir, f".{name}.tmp-{os.getpid()}")
        tf.io.gfile.copy(tmp, remote_tmp, overwrite=True)
        os.remove(tmp)
        tmp = remote_tmp
    tf.io.gfile.rename(tmp, final, overwrite=True)  # the shard is complete once it has its name
    return record


def _write_records(task, path, progress):
    """The shard's TFRecords at `path`; returns its record (counts, skipped files, pixel sums)
    and, for training shards, the per-pixel sum of the central size x size patches (§2's mean)."""
    import tensorflow as tf

    record = {"examples": 0, "per_class": {}, "skipped": [], "pixels": 0, "upscaled": 0}
    pixel_sum = np.zeros(3, np.float64)
    mean_sum = np.zeros([task.size, task.size, 3], np.float64) if task.split == "train" else None
    with tf.io.TFRecordWriter(path) as writer:
        for example in task.examples:
            try:
                source = Image.open(io.BytesIO(example.read()))
                upscaled = min(source.size) < task.size  # counted: small photos take more room than they hold
                image = resize(source, task.resize_mode, task.size)
                pixels = np.asarray(image)
                buffer = io.BytesIO()
                image.save(buffer, "JPEG", quality=task.quality)
            except UnidentifiedImageError:  # its message names an io.BytesIO object, not the file
                record["skipped"].append([example.describe(), "not an image: no format that Pillow reads"])
            except Exception as error:  # unreadable, truncated: skipped and listed
                record["skipped"].append([example.describe(), f"{type(error).__name__}: {error}"[:200]])
            else:
                writer.write(encode_example(buffer.getvalue(), pixels.shape[0], pixels.shape[1], example.label,
                                            task.class_names[example.label], task.class_texts[example.label], example.name))
                record["examples"] += 1
                record["upscaled"] += upscaled
                record["per_class"][str(example.label)] = record["per_class"].get(str(example.label), 0) + 1
                if mean_sum is not None:
                    pixel_sum += pixels.sum(axis=(0, 1), dtype=np.float64)
                    record["pixels"] += pixels.shape[0] * pixels.shape[1]
                    mean_sum += _central(pixels, task.size)
            if progress:
                progress(1)
    record["pixel_sum"] = pixel_sum.tolist()
    return record, mean_sum


def _central(pixels, size):
    top, left = (pixels.shape[0] - size) // 2, (pixels.shape[1] - size) // 2
    return pixels[top:top + size, left:left + size]


# ----------------------------------------------------------------------------- the whole job


def _plan_record(plan, num_shards, resize_mode, size, quality, seed):
    digest = hashlib.sha256()
    for split in sorted(plan.splits):
        for e in plan.splits[split]:
            digest.update(f"{split}\0{e.describe()}\0{e.label}\n".encode())
    return {
        "format": FORMAT, "class_names": plan.class_names, "class_texts": plan.class_texts,
        "num_shards": num_shards, "listed": {s: len(v) for s, v in plan.splits.items()},
        "resize": resize_mode, "size": size, "quality": quality, "shuffle_seed": seed,
        "label_offset": LABEL_OFFSET, "sources_sha256": digest.hexdigest(),
    }


def _check_or_write_plan(output_dir, record):
    import tensorflow as tf

    path = _join(output_dir, f"{STATE_DIR}/plan.json")
    if tf.io.gfile.exists(path):
        old = _read_json(path)
        changed = [k for k in record if old.get(k) != record[k]]
        if changed:
            raise UsageError(f"{output_dir} is being prepared with other settings or files ({', '.join(changed)} differ); "
                             "rerun with the same arguments, or use a new --output_dir")
        return
    tf.io.gfile.makedirs(_join(output_dir, STATE_DIR))
    _write_file(path, json.dumps(record, indent=1).encode())


class _Counter:
    def __init__(self, value=None):
        self.value = value  # a multiprocessing.Value across processes, else a plain int
        self._plain = 0

    def add(self, n):
        if self.value is None:
            self._plain += n
        else:
            with self.value.get_lock():
                self.value.value += n

    def get(self):
        return self._plain if self.value is None else self.value.value


_WORKER_COUNTER = None


def _init_worker(value):
    global _WORKER_COUNTER
    _WORKER_COUNTER = _Counter(value)


def _pool_without_ctrl_c(context, num_processes, counter):
    """A pool whose workers ignore SIGINT from their start. Ctrl-C reaches every process of the
    terminal's group: the parent answers it (its `with` terminates the pool), and a worker that
    took it too printed "Process SpawnPoolWorker-1:" and a traceback. An ignored signal stays
    ignored through the workers' exec, so the parent ignores it while it starts them."""
    previous = None  # SIGINT's handler is always Python's to report, so None means "not changed"
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: nothing to change
        pass
    try:
        return context.Pool(num_processes, initializer=_init_worker, initargs=(counter.value,))
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _run_task(task):
    return write_shard(task, _WORKER_COUNTER.add)


def _progress_loop(counter, total, stop, stream, interval=1.0):
    """Print images done, images/s and ETA, redrawn in place on a terminal, a line per ~10 s otherwise."""
    start, last_line = time.time(), 0.0
    tty = hasattr(stream, "isatty") and stream.isatty()
    while not stop.wait(interval):
        done, elapsed = counter.get(), time.time() - start
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (total - done) / rate if rate > 0 else float("inf")
        line = (f"prepared {done}/{total} images ({100 * done / max(total, 1):.1f}%), {rate:.1f} images/s, "
                f"ETA {_duration(eta)}")
        if tty:
            print("\r" + line, end="", file=stream, flush=True)
        elif time.time() - last_line >= 10:
            print(line, file=stream, flush=True)
            last_line = time.time()
    if tty:
        print(file=stream, flush=True)


def _duration(seconds):
    if seconds == float("inf"):
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m{seconds % 60:02d}s" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def default_shards(split, num_examples):
    """One shard per EXAMPLES_PER_SHARD examples, at most ImageNet's DEFAULT_SHARDS (which
    ILSVRC2012 itself gets: 1,281,167 training and 50,000 validation images)."""
    return max(1, min(DEFAULT_SHARDS[split], -(-num_examples // EXAMPLES_PER_SHARD)))


def prepare(plan, output_dir, *, num_shards=None, resize_mode="paper", size=SIZE, quality=DEFAULT_QUALITY,
            num_processes=1, num_workers=1, worker_index=0, seed=0, stream=None):
    """Write this worker's shards of `plan` to `output_dir` (local or a TensorFlow filesystem, gs://).

    num_shards: {split: shards}; a split not given gets `default_shards`. At most one per example. Worker
    `worker_index` of `num_workers` writes shards worker_index, worker_index + num_workers, ...
    of each split, with `num_processes` processes. Shards already complete are kept. Returns the
    manifest if this call found every shard of the job complete (and wrote it), else None.
    """
    import tensorflow as tf

    if resize_mode not in RESIZE_MODES:
        raise UsageError(f"unknown resize mode {resize_mode!r}; expected one of {', '.join(RESIZE_MODES)}")
    if not 0 <= worker_index < num_workers:
        raise UsageError(f"worker_index={worker_index} must be in 0..{num_workers - 1} (num_workers={num_workers})")
    if not 1 <= quality <= 100 or size < 1 or num_processes < 1:
        raise UsageError(f"quality must be 1..100 (got {quality}), size and num_processes at least 1")
    wanted = num_shards or {}
    shards = {split: max(1, min(wanted.get(split) or default_shards(split, len(examples)), len(examples)))
              for split, examples in plan.splits.items() if examples}
    tf.io.gfile.makedirs(_join(output_dir, STATE_DIR))
    _check_or_write_plan(output_dir, _plan_record(plan, shards, resize_mode, size, quality, seed))
    tasks = []
    for split, count in shards.items():
        runs = assign_shards(plan.splits[split], count, seed if split == "train" else None)
        tasks += [ShardTask(output_dir, split, i, count, runs[i], plan.class_names, plan.class_texts, resize_mode, size,
                            quality) for i in range(worker_index, count, num_workers)]
    total = sum(len(task.examples) for task in tasks)
    counter, stop = _Counter(), threading.Event()
    if num_processes > 1:
        import multiprocessing

        context = multiprocessing.get_context("spawn")  # not fork: the parent may hold TensorFlow's threads
        counter = _Counter(context.Value("q", 0))
    reporter = threading.Thread(target=_progress_loop, args=(counter, total, stop, stream), daemon=True) if stream else None
    if reporter:
        reporter.start()
    try:
        if num_processes > 1:
            with _pool_without_ctrl_c(context, num_processes, counter) as pool:
                records = list(pool.imap_unordered(_run_task, tasks))
        else:
            records = [write_shard(task, counter.add) for task in tasks]
    finally:
        stop.set()
        if reporter:
            reporter.join()
    skipped = sum(len(r["skipped"]) for r in records)
    if stream:
        print(f"worker {worker_index} of {num_workers}: {len(tasks)} shards, {total - skipped} images written, "
              f"{skipped} skipped", file=stream, flush=True)
    return finalize(output_dir, missing_ok=True)


def _missing_shards(output_dir, shards):
    """Shards without their record in .prepare/ or without their final file (two listings)."""
    import tensorflow as tf

    present = {os.path.basename(p) for p in tf.io.gfile.glob(_join(output_dir, f"{STATE_DIR}/*.json"))}
    present |= {os.path.basename(p) for split in shards for p in tf.io.gfile.glob(_join(output_dir, f"{split}-*"))}
    return [name for names in shards.values() for name in names if name not in present or f"{name}.json" not in present]


def _read_all(paths, read):
    """read(path) for every path, 16 at a time (object stores answer each request slowly)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(16) as pool:
        return list(pool.map(read, paths))


def _load_npy(path):
    import tensorflow as tf

    with tf.io.gfile.GFile(path, "rb") as f:
        return np.load(io.BytesIO(f.read()))


def finalize(output_dir, missing_ok=False):
    """Write manifest.json and mean_image.npy once every shard is complete; returns the manifest.

    Incomplete: None with missing_ok, else a UsageError naming the first missing shard. Reads
    only the small per-shard records (and the per-pixel sums of the training shards).
    """
    import tensorflow as tf

    plan_path = _join(output_dir, f"{STATE_DIR}/plan.json")
    if not tf.io.gfile.exists(plan_path):
        raise UsageError(f"{output_dir} has no {STATE_DIR}/plan.json: it was not written by scripts/prepare_data.py")
    plan = _read_json(plan_path)
    shards = {split: [shard_name(split, i, n) for i in range(n)] for split, n in plan["num_shards"].items()}
    missing = _missing_shards(output_dir, shards)
    if missing:
        if missing_ok:
            return None
        raise UsageError(f"{len(missing)} shards of {output_dir} are not complete yet, e.g. {missing[0]}: run the "
                         "remaining workers (the same command resumes)")
    manifest = {key: plan[key] for key in ("format", "class_names", "class_texts", "resize", "size", "quality",
                                           "label_offset")}
    manifest.update(num_classes=len(plan["class_names"]), splits={}, created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    for split, names in shards.items():
        records = _read_all([_join(output_dir, f"{STATE_DIR}/{name}.json") for name in names], _read_json)
        per_class = [0] * len(plan["class_names"])
        for r in records:
            for label, count in r["per_class"].items():
                per_class[int(label)] += count
        manifest["splits"][split] = {
            "num_examples": sum(r["examples"] for r in records), "per_class": per_class,
            "shards": {r["shard"]: {"examples": r["examples"], "bytes": r["bytes"], "sha256": r["sha256"]} for r in records},
            "skipped": [item for r in records for item in r["skipped"]],
            "upscaled": sum(r.get("upscaled", 0) for r in records),  # shards of older versions did not count
        }
        if split == "train" and sum(r["pixels"] for r in records):
            manifest["mean_rgb"] = (sum(np.array(r["pixel_sum"]) for r in records) /
                                    sum(r["pixels"] for r in records)).round(4).tolist()
            paths = [_join(output_dir, f"{STATE_DIR}/{n}.mean.npy") for n in names]
            mean_sum = sum(sum(_read_all(paths[i:i + 64], _load_npy)) for i in range(0, len(paths), 64))  # 1.5 MB each
            buffer = io.BytesIO()
            np.save(buffer, (mean_sum / manifest["splits"]["train"]["num_examples"]).astype(np.float32))
            _write_file(_join(output_dir, MEAN_IMAGE), buffer.getvalue())
            manifest["mean_image"] = MEAN_IMAGE
    _write_file(_join(output_dir, MANIFEST), json.dumps(manifest, indent=1).encode())
    return manifest


# ----------------------------------------------------------------------------- the training side


def read_manifest(directory):
    """The manifest.json beside the shards in `directory`, or None when there is none."""
    import tensorflow as tf

    path = _join(directory, MANIFEST)
    if not tf.io.gfile.exists(path):
        return None
    try:
        return _read_json(path)
    except ValueError as error:
        raise UsageError(f"{path} is not a valid manifest ({error}); rerun scripts/prepare_data.py --finalize") from None


def check_shards(directory, manifest, split, files, checksums=False):
    """UsageError naming the first shard of `split` that the manifest lists but that is missing
    from `files` (the shards found), or whose size (or, with checksums, SHA-256) differs."""
    import tensorflow as tf

    listed = manifest.get("splits", {}).get(split, {}).get("shards", {})
    found = {os.path.basename(f): f for f in files}
    for name in sorted(listed):
        if name not in found:
            raise UsageError(f"shard {_join(directory, name)} is missing ({MANIFEST} lists {len(listed)} {split} shards); "
                             "rerun the scripts/prepare_data.py command that wrote it")
    names = sorted(listed)
    if files and "://" in files[0]:  # object stores: one request per stat, made in parallel
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(32) as pool:
            sizes = list(pool.map(lambda n: tf.io.gfile.stat(found[n]).length, names))
    else:
        sizes = [os.path.getsize(found[n]) for n in names]
    for name, size in zip(names, sizes):
        path, entry = found[name], listed[name]
        if size != entry["bytes"]:
            raise UsageError(f"shard {path} is truncated or changed: {size} bytes, {MANIFEST} says {entry['bytes']}; "
                             "delete it and rerun the scripts/prepare_data.py command that wrote it")
        if checksums and "://" not in path and _sha256(path) != entry["sha256"]:
            raise UsageError(f"shard {path} does not match its SHA-256 in {MANIFEST}; delete it and rerun prepare_data.py")
