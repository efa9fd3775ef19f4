"""The paper's analyses (§6.1) and training curves, drawn with matplotlib into PNG files.

    Fig. 3  `plot_conv1_kernels`: the conv1 kernels as 11x11 RGB tiles, each scaled to its own
            range, the two columns' kernels in two blocks (the paper: "the top 48 kernels were
            learned on GPU 1 while the bottom 48 kernels were learned on GPU 2").
    Fig. 4  `extract_features` + `nearest_neighbors` + `plot_neighbors`: query images beside the
            training images whose 4096-d fc7 activations are nearest in Euclidean distance.
    Curves  `plot_history`: loss, top-1/top-5 error and learning rate per epoch from a training
            run's history.jsonl.

Everything works on any model `keras_alexnet.build()` returns, trained or not. Figures are drawn
on `matplotlib.figure.Figure` objects with the Agg canvas: no display, no pyplot global state.
"""

import json
import math
import os
import time

import numpy as np

from keras_alexnet.augment import IMAGENET_MEAN_RGB
from keras_alexnet.errors import UsageError
from keras_alexnet.logs import rate_and_eta, read_history_records

KERNELS_PER_ROW = 16


def load_model(model_dir=None, weights=None, allow_pickle=False):
    """The model a script draws: a training run's newest checkpoint, or any weight file that
    `keras_alexnet.weights.build_from_weights` reads. Returns (model, config dict or {})."""
    if bool(model_dir) == bool(weights):
        raise ValueError("pass exactly one of model_dir or weights.")
    if model_dir:
        from keras_alexnet.checkpoints import restore_model

        return restore_model(model_dir)
    from keras_alexnet.weights import build_from_weights

    return build_from_weights(weights, allow_pickle=allow_pickle), {}


# --- Fig. 3 -------------------------------------------------------------------------------------


def conv1_kernels(model):
    """conv1's kernels as float32 [N, kh, kw, 3] (RGB input channels: Caffe's BGR is reordered at import)."""
    kernel = np.asarray(model.get_layer("conv1").get_weights()[0], dtype=np.float32)
    return kernel.transpose(3, 0, 1, 2)


def conv1_columns(model):
    """How many columns conv1's kernels fall into: conv2's groups (2 in the paper's net, §3.2), else 1.

    Column g of conv2 reads conv1's maps [g*N/2, (g+1)*N/2): the paper's GPU g.
    """
    return int(getattr(model.get_layer("conv2"), "groups", 1))


def kernel_grid(kernels, per_row=KERNELS_PER_ROW, gap=1):
    """Tile kernels [N, h, w, 3] into one RGB image in [0, 1], each kernel scaled to its own range.

    Tiles are separated by `gap` pixels of white; a constant kernel is drawn grey.
    """
    count, height, width, _ = kernels.shape
    rows = -(-count // per_row)
    grid = np.ones((rows * (height + gap) - gap, per_row * (width + gap) - gap, 3), dtype=np.float32)
    for index, kernel in enumerate(kernels):
        low, high = float(kernel.min()), float(kernel.max())
        tile = (kernel - low) / (high - low) if high > low else np.full_like(kernel, 0.5)
        row, column = divmod(index, per_row)
        grid[row * (height + gap) : row * (height + gap) + height, column * (width + gap) : column * (width + gap) + width] = tile
    return grid


def plot_conv1_kernels(model, path, per_row=KERNELS_PER_ROW, title=None):
    """Fig. 3: draw conv1's kernels to a PNG, one block per column (GPU) of the net. Returns path."""
    kernels = conv1_kernels(model)
    columns = conv1_columns(model)
    blocks = np.split(kernels, columns)
    grids = [kernel_grid(block, per_row) for block in blocks]
    width = per_row * 0.55
    figure = _figure(width=width, height=sum(width * g.shape[0] / g.shape[1] + 0.35 for g in grids) + 0.5)
    axes = figure.subplots(columns, 1, squeeze=False)[:, 0]
    size = kernels.shape[1]
    for column, (axis, grid, block) in enumerate(zip(axes, grids, blocks)):
        axis.imshow(grid, interpolation="nearest")
        axis.set_axis_off()
        first = column * len(block) + 1
        label = f"column {column + 1} (GPU {column + 1}): " if columns > 1 else ""
        axis.set_title(f"{label}kernels {first}-{first + len(block) - 1}", fontsize=9)
    figure.suptitle(title or f"conv1: {len(kernels)} kernels of size {size}x{size}x3", fontsize=10)
    return _save(figure, path)


# --- Fig. 4 -------------------------------------------------------------------------------------


def display_image(image):
    """A model input (RGB minus the ImageNet mean) back to uint8 RGB for display."""
    return np.clip(np.asarray(image, np.float32) + np.asarray(IMAGENET_MEAN_RGB, np.float32), 0, 255).round().astype(np.uint8)


class Features:
    """Activations of a dataset written to disk: `vectors` is a read-only float32 memmap [N, D]."""

    def __init__(self, directory):
        with open(os.path.join(directory, "features.json")) as f:
            meta = json.load(f)
        self.directory = directory
        self.labels = np.load(os.path.join(directory, "labels.npy"))
        self.vectors = np.memmap(os.path.join(directory, "features.f32"), dtype=np.float32, mode="r",
                                 shape=(meta["count"], meta["dim"])) if meta["count"] else np.zeros((0, meta["dim"]), np.float32)

    def __len__(self):
        return len(self.labels)


def extract_features(model, dataset, directory, layer="fc7", log_every=0, log=print, expected=None):
    """Run a dataset of (images, labels) batches through `model` up to `layer` (fc7: the 4096-d
    activations after ReLU that §6.1 compares) and stream the activations to `directory`.

    Only one batch is held in memory: the vectors go to directory/features.f32 (raw float32,
    row-major), the labels to labels.npy, the shape to features.json. Every `log_every` batches
    `log` gets a progress line (with `expected` images: how many are left and when it ends).
    Returns `Features`.
    """
    from keras_alexnet.model import feature_extractor

    extractor = feature_extractor(model, layer)
    os.makedirs(directory, exist_ok=True)
    labels, count, dim = [], 0, int(extractor.output.shape[-1])
    start = time.perf_counter()
    with open(os.path.join(directory, "features.f32"), "wb") as out:
        for step, (images, batch_labels) in enumerate(dataset, start=1):
            vectors = np.asarray(extractor.predict_on_batch(images), dtype=np.float32)
            out.write(np.ascontiguousarray(vectors).tobytes())
            labels.append(np.asarray(batch_labels))
            count += len(vectors)
            if log_every and step % log_every == 0:
                log(_features_progress(layer, count, expected, time.perf_counter() - start))
    np.save(os.path.join(directory, "labels.npy"), np.concatenate(labels) if labels else np.zeros(0, np.int32))
    with open(os.path.join(directory, "features.json"), "w") as f:
        json.dump({"count": count, "dim": dim, "layer": layer}, f)
    return Features(directory)


def _features_progress(layer, count, expected, seconds):
    """'fc7 activations: 2560 of 1281167 images, 265.3 img/s, ETA 80m17s'."""
    return f"{layer} activations: {count}{f' of {expected}' if expected else ''} images, {rate_and_eta(count, expected, seconds)}"


def nearest_neighbors(queries, vectors, k, chunk_rows=4096):
    """Exact k nearest rows of `vectors` [N, D] to each query [Q, D] in Euclidean distance.

    `vectors` may be a memmap larger than memory: it is read `chunk_rows` rows at a time and
    squared distances come from one matrix product per chunk, |q|^2 - 2 q.x + |x|^2, in float64
    (exact enough to rank 4096-d activations). Ties go to the lower index.
    Returns (indices int64 [Q, k'], distances float64 [Q, k']) nearest first, k' = min(k, N).
    """
    queries = np.asarray(queries, dtype=np.float64)
    if queries.ndim != 2 or queries.shape[1] != vectors.shape[1]:
        raise ValueError(f"queries must be [Q, {vectors.shape[1]}], got {queries.shape}.")
    query_norms = np.einsum("qd,qd->q", queries, queries)[:, None]
    best_distances = np.zeros((len(queries), 0))
    best_indices = np.zeros((len(queries), 0), dtype=np.int64)
    for start in range(0, len(vectors), chunk_rows):
        chunk = np.asarray(vectors[start : start + chunk_rows], dtype=np.float64)
        squared = query_norms - 2.0 * queries @ chunk.T + np.einsum("nd,nd->n", chunk, chunk)[None, :]
        np.maximum(squared, 0.0, out=squared)
        candidates = np.concatenate([best_distances, squared], axis=1)
        indices = np.concatenate([best_indices, np.broadcast_to(np.arange(start, start + len(chunk)), squared.shape)], axis=1)
        order = np.lexsort((indices, candidates), axis=1)[:, :k]
        best_distances = np.take_along_axis(candidates, order, axis=1)
        best_indices = np.take_along_axis(indices, order, axis=1)
    return best_indices, np.sqrt(best_distances)


def gather_images(dataset, indices):
    """{index: uint8 RGB image} of the examples at `indices` of a dataset of (images, labels)
    batches, read in one pass (the dataset must be in the same order as when it was indexed)."""
    wanted = set(int(i) for i in np.ravel(indices))
    found, position = {}, 0
    for images, _ in dataset:
        images = np.asarray(images)
        for offset in sorted(i - position for i in wanted if position <= i < position + len(images)):
            found[position + offset] = display_image(images[offset])
        position += len(images)
        if len(found) == len(wanted):
            break
    missing = wanted - set(found)
    if missing:
        raise ValueError(f"the dataset has no examples at {sorted(missing)[:5]}: it is shorter than when it was indexed.")
    return found


def plot_neighbors(query_images, neighbor_images, neighbor_titles, path, query_titles=None, title=None):
    """Fig. 4: one row per query: the query, then its neighbours nearest first, titled. Returns path.

    Args:
        query_images: Q uint8 RGB images.
        neighbor_images: Q lists of uint8 RGB images.
        neighbor_titles: Q lists of strings (e.g. "dog\\nd=12.3").
        query_titles: Q strings (default "query i").
    """
    rows, columns = len(query_images), 1 + max((len(n) for n in neighbor_images), default=0)
    figure = _figure(width=1.6 * columns, height=1.9 * rows + 0.5)
    axes = figure.subplots(rows, columns, squeeze=False)
    for row in range(rows):
        images = [query_images[row]] + list(neighbor_images[row])
        titles = [query_titles[row] if query_titles else f"query {row + 1}"] + list(neighbor_titles[row])
        for column in range(columns):
            axis = axes[row, column]
            axis.set_xticks([])
            axis.set_yticks([])
            if column >= len(images):
                axis.set_axis_off()
                continue
            axis.imshow(images[column])
            axis.set_title(titles[column], fontsize=8)
            if column == 0:
                for spine in axis.spines.values():
                    spine.set_edgecolor("tab:red")
                    spine.set_linewidth(2)
    figure.suptitle(title or "query (left) and its nearest training images in fc7 space (Euclidean)", fontsize=10)
    return _save(figure, path)


def neighbors_figure(model, spec, path, *, split="train", queries=None, query_titles=None, query_split="validation",
                     num_queries=5, k=6, batch_size=64, features_dir=None, data_dir=None, manual_dir=None, log=print):
    """Fig. 4 end to end: fc7 activations of every image of `spec`'s `split` (streamed to disk),
    the exact k nearest of each query, and the figure with the neighbours' class names.

    Args:
        model: any model from `keras_alexnet.build()`; its input size is used for the data.
        spec: a dataset string (keras_alexnet.data), e.g. "folder:/data/imagenet".
        path: the PNG to write.
        queries: model inputs float32 [Q, S, S, 3] (e.g. `augment.center_view` of image files);
            None: the first `num_queries` images of `query_split` (the paper: test images).
        query_titles: Q strings for given queries (default "query i").
        features_dir: where the activations are written (features.f32 is N x 4096 float32, 16 KB
            per image); None: a temporary directory, removed afterwards.
    Returns {"indices", "distances", "labels", "query_labels"}: neighbour indices into the split,
    their distances and labels, and the query labels (None for given queries).
    """
    import contextlib
    import tempfile

    from keras_alexnet import data
    from keras_alexnet.model import feature_extractor

    image_size = int(model.input_shape[1])
    info = data.dataset_info(spec, data_dir=data_dir, manual_dir=manual_dir)

    def ordered(which):
        return data.make_dataset(spec, which, image_size=image_size, batch_size=batch_size, training=False,
                                 data_dir=data_dir, manual_dir=manual_dir, deterministic=True)

    query_labels = None
    if queries is None:
        batches, query_labels = [], []
        for images, labels in ordered(query_split):
            batches.append(np.asarray(images))
            query_labels.extend(np.asarray(labels).tolist())
            if len(query_labels) >= num_queries:
                break
        queries = np.concatenate(batches)[:num_queries] if batches else np.zeros((0, image_size, image_size, 3), np.float32)
        query_labels = query_labels[:num_queries]
        query_titles = [f"query: {info.class_names[label]}" for label in query_labels]
    queries = np.asarray(queries, np.float32)
    if len(queries) == 0:
        raise ValueError(f"no query images: {spec} has no {query_split} examples.")
    query_vectors = np.asarray(feature_extractor(model).predict_on_batch(queries), np.float32)

    with (contextlib.nullcontext(features_dir) if features_dir else tempfile.TemporaryDirectory()) as directory:
        expected = info.num_examples.get(split)
        log(f"computing fc7 activations of {spec} ({split}{f', {expected} images' if expected else ''}) into {directory}")
        # About ten progress lines over the split: ImageNet's takes an hour on a CPU.
        log_every = max(1, math.ceil(math.ceil((expected or 0) / batch_size) / 10))
        features = extract_features(model, ordered(split), directory, log=log, log_every=log_every, expected=expected)
        if len(features) == 0:
            raise ValueError(f"{spec} has no {split} examples to search.")
        indices, distances = nearest_neighbors(query_vectors, features.vectors, k)
        labels = features.labels[indices]
        del features
    images = gather_images(ordered(split), indices)
    plot_neighbors(
        [display_image(q) for q in queries],
        [[images[int(i)] for i in row] for row in indices],
        [[f"{info.class_names[int(label)]}\nd={distance:.3g}" for label, distance in zip(label_row, distance_row)]
         for label_row, distance_row in zip(labels, distances)],
        path,
        query_titles=query_titles,
    )
    return {"indices": indices, "distances": distances, "labels": labels, "query_labels": query_labels}


# --- training curves ----------------------------------------------------------------------------


def read_history(model_dir_or_file):
    """The epoch records of history.jsonl (a model_dir or the file); the last record of an epoch wins
    (a resumed run may write an epoch twice). Sorted by epoch."""
    path = model_dir_or_file
    if os.path.isdir(path):
        path = os.path.join(path, "history.jsonl")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: pass a model_dir written by scripts/train.py.")
    # The same reader as the training run's: a torn last line (a run killed mid-write) is skipped.
    return epoch_records(read_history_records(path))


def epoch_records(records):
    """history.jsonl's epoch records, the last one of each epoch (a resumed run may write an epoch
    twice), sorted by epoch."""
    by_epoch = {int(record["epoch"]): record for record in records if "epoch" in record}
    return [by_epoch[epoch] for epoch in sorted(by_epoch)]


def plot_history(records, path, title=None, num_classes=None):
    """Loss, top-1/top-5 error (%) and learning rate (log scale) against epochs. Returns path.

    `records` are history.jsonl objects (`read_history`); accuracies (train_top1, val_top5, ...)
    are drawn as errors, 100 * (1 - accuracy). Missing keys are left out of the plot, and so is
    top-5 for `num_classes` of 5 or fewer, where its error is 0 at every epoch.
    """
    if not records:
        raise ValueError("the history is empty: no epoch has finished yet.")
    epochs = np.array([r["epoch"] for r in records])

    def series(key, transform=lambda v: v):
        values = np.array([transform(r[key]) if r.get(key) is not None else np.nan for r in records], dtype=np.float64)
        return None if np.all(np.isnan(values)) else values

    figure = _figure(width=13, height=3.8)
    loss_axis, error_axis, rate_axis = figure.subplots(1, 3)
    for key, label, style in (("train_loss", "train", "-"), ("val_loss", "held-out", "--")):
        values = series(key)
        if values is not None:
            loss_axis.plot(epochs, values, style, marker="o", markersize=3, label=label, color="tab:blue")
    loss_axis.set_title("loss (cross-entropy)")
    error = lambda v: 100.0 * (1.0 - v)  # noqa: E731
    for key, label, style, color in (("train_top1", "train top-1", "-", "tab:orange"), ("val_top1", "held-out top-1", "--", "tab:orange"),
                                     ("train_top5", "train top-5", "-", "tab:green"), ("val_top5", "held-out top-5", "--", "tab:green")):
        values = None if key.endswith("top5") and num_classes is not None and num_classes <= 5 else series(key, error)
        if values is not None:
            error_axis.plot(epochs, values, style, marker="o", markersize=3, label=label, color=color)
    error_axis.set_title("error (%)")
    rates = series("learning_rate")
    if rates is not None:
        # Points at each epoch's end joined by lines: a step drawing misdrew warm-up and cosine.
        rate_axis.plot(epochs, rates, color="tab:purple", marker="o", markersize=3)
        if np.nanmin(rates) > 0:
            rate_axis.set_yscale("log")
    rate_axis.set_title("learning rate (at each epoch's end)")
    for axis in (loss_axis, error_axis, rate_axis):
        _epoch_axis(axis)
        axis.grid(True, alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=8)
    figure.suptitle(title or "training history", fontsize=10)
    return _save(figure, path)


# Up to this many classes a confusion matrix names them on its axes, and up to the second
# number it writes each cell's count; beyond, the colours alone show where the errors are.
CONFUSION_NAMED, CONFUSION_COUNTED = 50, 20


def plot_confusion(matrix, class_names, path, title=None):
    """The confusion matrix of an evaluation (`evaluation.confusion_matrix`: row = true class,
    column = top-1 class), each row as shares of its class's examples, so that a small class's
    errors show as clearly as a large one's. Only the classes that occur as labels or answers are
    drawn: new photos of 2 of an ImageNet model's classes give a small matrix, not 1000 x 1000
    with 2 rows filled. Returns path."""
    present = np.flatnonzero(np.asarray(matrix).sum(axis=0) + np.asarray(matrix).sum(axis=1))
    matrix = np.asarray(matrix, np.float64)[np.ix_(present, present)]
    class_names = [class_names[i] for i in present]
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    classes = len(class_names)
    side = min(4 + 0.35 * min(classes, CONFUSION_NAMED), 20)
    figure = _figure(width=side + 1.5, height=side)
    axis = figure.subplots()
    image = axis.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    figure.colorbar(image, ax=axis, shrink=0.8, label="share of the true class's examples")
    if classes <= CONFUSION_NAMED:
        axis.set_xticks(range(classes), class_names, rotation=90, fontsize=8)
        axis.set_yticks(range(classes), class_names, fontsize=8)
    if classes <= CONFUSION_COUNTED:
        for (row, column), count in np.ndenumerate(matrix):
            if count:
                axis.text(column, row, f"{count:.0f}", ha="center", va="center", fontsize=7,
                          color="white" if shares[row, column] > 0.5 else "black")
    axis.set_xlabel("taken for (top-1)")
    axis.set_ylabel("true class")
    axis.set_title(title or "confusion matrix", fontsize=10)
    return _save(figure, path)


def plot_learning_check(runs, path, title=None, baseline=None, labels=("", "")):
    """Held-out top-1 (%) per epoch of `scripts/learning_check.py` runs, one panel per set, one
    line per seed, chance as a dotted line. `runs`: dicts with set, seed, val_top1 (a list) and
    num_classes. `baseline`: runs of another recipe on the same sets and seeds, drawn dashed in
    the same colours; `labels` name the two in the legend. Returns path."""
    names = sorted({run["set"] for run in runs})
    figure = _figure(width=4.2 * len(names), height=3.6)
    axes = np.atleast_1d(figure.subplots(1, len(names), sharey=True))
    for axis, name in zip(axes, names):
        for index, run in enumerate(r for r in runs if r["set"] == name):
            epochs = np.arange(1, len(run["val_top1"]) + 1)
            colour = f"C{index}"
            axis.plot(epochs, 100.0 * np.array(run["val_top1"]), marker="o", markersize=3, color=colour,
                      label=f"{labels[0]}seed {run['seed']}")
            for other in (r for r in baseline or () if r["set"] == name and r["seed"] == run["seed"]):
                axis.plot(np.arange(1, len(other["val_top1"]) + 1), 100.0 * np.array(other["val_top1"]),
                          linestyle="--", color=colour, alpha=0.7, label=f"{labels[1]}seed {other['seed']}")
        chance = 100.0 / next(r["num_classes"] for r in runs if r["set"] == name)
        axis.axhline(chance, color="gray", linestyle=":", label="chance")
        axis.set_title(name, fontsize=10)
        _epoch_axis(axis)
        axis.set_ylim(0, 100)
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=8, loc="lower right")
    axes[0].set_ylabel("held-out top-1 (%)")
    figure.suptitle(title or "held-out top-1 on real-photo sets", fontsize=10)
    return _save(figure, path)


# --- input pipeline steps -----------------------------------------------------------------------


def plot_input_steps(steps, path, title=None):
    """Horizontal bars: each step's images per CPU-second as a multiple of the plain full decode
    (`benchmarks.input_benchmark(steps=True)["steps"]`), with the 1.0 line. Returns path."""
    figure = _figure(width=8, height=0.5 * len(steps) + 1.2)
    axis = figure.subplots()
    rows = steps[::-1]  # barh draws bottom-up: the first step on top
    ratios = [row["ratio"] for row in rows]
    bars = axis.barh([row["name"] for row in rows], ratios, color="tab:blue")
    for bar, row in zip(bars, rows):
        axis.text(bar.get_width(), bar.get_y() + bar.get_height() / 2,
                  f" {row['ratio']:.2f}x ({row['images_per_cpu_sec']:.0f}/s)", va="center", fontsize=8)
    axis.axvline(1.0, color="black", linestyle="--", linewidth=1)  # 1.0x: as fast as decoding the whole image
    axis.set_xlim(0, max(1.25, max(ratios) * 1.3))
    axis.set_xlabel("images per CPU-second, x the plain full decode of the same files")
    axis.set_title(title or "input pipeline, step by step", fontsize=10)
    return _save(figure, path)


# --- helpers ------------------------------------------------------------------------------------


def _figure(width, height):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


# What a figure's file name may end with: the format is the extension's (PNG unless asked).
FORMATS = ("png", "pdf", "svg", "jpg", "jpeg")


def _epoch_axis(axis):
    """An x axis of whole epochs (not 1.25, 1.50, ... on a short run)."""
    from matplotlib.ticker import MaxNLocator

    axis.set_xlabel("epoch")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))


def check_format(path):
    """The figure format that `path` names (its extension); a UsageError for any other name (it
    was written as PNG whatever the name said)."""
    extension = os.path.splitext(path)[1].lower().lstrip(".")
    if extension not in FORMATS:
        raise UsageError(f"cannot write the figure {path}: its name must end in .png (or .pdf, .svg, .jpg), "
                         f"e.g. {os.path.splitext(path)[0]}.png")
    return extension


def _save(figure, path):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    extension = check_format(path)
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        FigureCanvasAgg(figure)
        figure.savefig(path, format=extension)
    except (FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError) as error:
        raise UsageError(f"cannot write the figure {path} ({error.strerror}): choose a path you can write to, "
                         "e.g. --out FILE.png in your own folder.") from None
    return path
