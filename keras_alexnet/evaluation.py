"""Top-1 and top-5 error over a whole split, exactly, on one device or under a tf.distribute strategy.

The paper reports error rates on the validation set with a single centre view and with ten views
(§4.1, §6): the four corner and the centre crops and their mirrors, the network's softmax
averaged over the ten. `evaluate` takes either: images [B, S, S, 3], or [B, 10, S, S, 3] from
`data.make_dataset(..., crops=10)`, whose probabilities are averaged over the views.

Exactness: every replica sums its own counts (examples, top-1 hits, top-5 hits, loss), the sums
are added across replicas, and the totals are divided once at the end. Batches from
make_dataset(training=False) are not padded and not repeated; the last ones are partial, and
under MirroredStrategy a replica whose input has run out receives an empty batch (tf.distribute
does this), which adds zero to every count. Nothing is dropped or counted twice.
"""

import collections
import math
import sys
import time

import numpy as np
import tensorflow as tf

from keras_alexnet.errors import few
from keras_alexnet.logs import rate_and_eta

TOP_K = 5


def chance_level(num_classes, majority_share=None):
    """The held-out top-1 of a model that learned nothing: 1/classes, or, when the held-out
    labels are known, the largest class's share of them (always answering that class scores it,
    which on imbalanced data is far above 1/classes)."""
    return max(1.0 / num_classes, majority_share or 0.0)


def chance_ceiling(num_classes, num_examples, majority_share=None):
    """The held-out top-1 at or below which a result is within noise of guessing.

    A guesser's top-1 over `num_examples` images, at chance p (`chance_level`), has a binomial
    standard deviation sqrt(p (1 - p) / n). The ceiling is p plus three of those, and at least
    1.5/classes, so that on a large held-out set a run a hair above chance does not count as learning.
    """
    chance = chance_level(num_classes, majority_share)
    noise = math.sqrt(chance * (1.0 - chance) / max(num_examples, 1))
    return max(chance + 3.0 * noise, 1.5 / num_classes)


def describe_chance(num_classes, majority_share=None):
    """'0.100 for 10 classes', or '0.900, always answering the largest held-out class (2 classes)':
    chance, as the messages about a run at chance say it."""
    chance = chance_level(num_classes, majority_share)
    if chance > 1.0 / num_classes + 1e-9:
        return f"{chance:.3f}, always answering the largest held-out class ({num_classes} classes)"
    return f"{chance:.3f} for {num_classes} classes"


def can_tell(num_classes, num_examples, majority_share=None):
    """Whether the held-out set is large enough to tell learning from chance: some top-1 (at
    most 1.0) lies above `chance_ceiling`. Two balanced classes need 10 held-out images."""
    return num_examples > 0 and num_classes > 1 and chance_ceiling(num_classes, num_examples, majority_share) < 1.0


def at_chance(top1, num_classes, num_examples, majority_share=None):
    """True when held-out top-1 is within noise of chance (`chance_ceiling`); False when there
    were too few held-out images to tell (`can_tell`): even 100% would be within noise there."""
    return can_tell(num_classes, num_examples, majority_share) and top1 <= chance_ceiling(num_classes, num_examples, majority_share)


def match_classes(dataset_names, model_names):
    """How the dataset's labels index the model's classes, by name.

    Returns None when they are the model's own labels (the same names in the same order, or no
    names to compare), or a list: the model's index of each of the dataset's classes, when the
    dataset holds some or all of the model's classes (a test folder of new photos that lacks a
    class). Raises ValueError naming the classes the model does not know.
    """
    dataset_names, model_names = list(dataset_names or []), list(model_names or [])
    if not dataset_names or not model_names or dataset_names == model_names:
        return None
    index = {name: i for i, name in enumerate(model_names)}
    unknown = [name for name in dataset_names if name not in index]
    if unknown:
        verb = "is" if len(unknown) == 1 else "are"
        raise ValueError(f"{len(unknown)} of its {len(dataset_names)} classes {verb} not among the model's "
                         f"{len(model_names)} ({few(unknown, 5)})")
    return [index[name] for name in dataset_names]


def relabel(dataset, label_map):
    """`dataset` of (images, labels) with each label replaced by label_map[label] (`match_classes`)."""
    if label_map is None:
        return dataset
    table = tf.constant(label_map, tf.int32)
    return dataset.map(lambda images, labels: (images, tf.gather(table, tf.cast(labels, tf.int32))))


def model_probabilities(model):
    """The softmax of a Keras model's logits, as a function of preprocessed images."""

    def probabilities(images):
        return tf.nn.softmax(tf.cast(model(images, training=False), tf.float32), axis=-1)

    return probabilities


def top_k_hits(scores, labels, top_k=TOP_K):
    """(top-1 hits, top-k hits), int64, of one batch: `scores` [B, C] (logits or probabilities:
    the same ranking), `labels` int [B]; k is min(top_k, C). A label's rank is the number of
    classes scored above it, plus those scored equal with a lower index (tf.math.top_k's order),
    so a class counts in the top k only if it is one of k classes; a non-finite score is never a
    hit. Training and evaluation both count with this. Comparisons, not tf.math.top_k: inside the
    XLA-compiled training step on CPU, top_k made the whole step ~35% slower (docs/performance.md)."""
    labels = tf.cast(labels, tf.int32)
    label_scores = tf.gather(scores, labels, batch_dims=1)[:, None]
    classes = tf.range(tf.shape(scores)[-1])[None, :]
    ahead = (scores > label_scores) | ((scores == label_scores) & (classes < labels[:, None]))
    rank = tf.where(tf.math.is_finite(label_scores[:, 0]), tf.reduce_sum(tf.cast(ahead, tf.int32), axis=1), scores.shape[-1])
    k = min(top_k, scores.shape[-1])
    return tf.reduce_sum(tf.cast(rank < 1, tf.int64)), tf.reduce_sum(tf.cast(rank < k, tf.int64))


def batch_counts(probabilities, labels, top_k=TOP_K):
    """Sums over one batch: [examples, top-1 hits, top-k hits] (int64) and the summed loss
    -log p(label) (float64). `probabilities`: [B, C]; `labels`: int [B]."""
    labels = tf.cast(labels, tf.int32)
    top1, topk = top_k_hits(probabilities, labels, top_k)
    examples = tf.cast(tf.shape(labels)[0], tf.int64)
    p_label = tf.gather(probabilities, labels, batch_dims=1)
    loss = tf.reduce_sum(-tf.math.log(tf.maximum(tf.cast(p_label, tf.float64), 1e-30)))
    return tf.stack([examples, top1, topk]), loss


def average_views(probabilities_fn, images):
    """[B, S, S, 3] -> probabilities [B, C]; [B, V, S, S, 3] -> the mean of the V views' softmax (§4.1)."""
    if images.shape.rank == 4:
        return probabilities_fn(images)
    shape = tf.shape(images)
    flat = tf.reshape(images, tf.concat([[-1], shape[2:]], axis=0))
    probabilities = probabilities_fn(flat)
    views = tf.reshape(probabilities, tf.stack([shape[0], shape[1], tf.shape(probabilities)[-1]]))
    return tf.reduce_mean(views, axis=1)


def _progress_line(step, examples, top1, seconds, expected_examples):
    """'step 40: 2560 of 50000 images, top-1 error 0.4211, 265.3 img/s, ETA 3m01s'."""
    return (f"step {step}: {examples}{f' of {expected_examples}' if expected_examples else ''} images, "
            f"top-1 error {(examples - top1) / examples:.4f}, {rate_and_eta(examples, expected_examples, seconds)}")


def evaluate(probabilities_fn, dataset_fn, strategy=None, top_k=TOP_K, log_every=0, expected_examples=None):
    """Top-1/top-k accuracy and error of `probabilities_fn` over every example of the dataset.

    Args:
        probabilities_fn: preprocessed images [N, S, S, 3] -> probabilities [N, C] (see
            `model_probabilities`, `export.load_saved_model`); built under `strategy.scope()`.
        dataset_fn: `input_context -> tf.data.Dataset` of (images, labels), batches of the
            per-replica size, finite, each example once across all input pipelines
            (`data.make_dataset(..., training=False, input_context=...)`). Images are
            [B, S, S, 3], or [B, V, S, S, 3] for V views per example (ten-crop).
        strategy: a tf.distribute strategy, or None for the default one.
        top_k: the k of top-k (5, the paper's; min(k, C) for fewer classes).
        log_every: print progress to stderr every this many steps (0: never).
        expected_examples: the split's size, if known: progress then shows how far and the ETA.

    Returns a dict: num_examples, top1_accuracy, top5_accuracy, top1_error, top5_error (k=5
    named so whatever the k), loss (mean -log p(label) of the averaged probabilities),
    majority_share (the largest class's share of the labels this worker read: chance for a
    model that always answers it), seconds, images_per_sec, and label_predictions: a Counter
    of (label, top-1 class) pairs, the confusion matrix of this worker's labels in sparse form
    (`confusion_matrix`; not JSON, left out of what scripts/evaluate.py prints).
    """
    return Evaluator(probabilities_fn, strategy, top_k)(dataset_fn, log_every, expected_examples)


class Evaluator:
    """`evaluate` with its compiled step made once, for a caller that evaluates again and again
    (a training run, every epoch): a new step each time traced the model again, twice (the full
    batches and the last, partial one), and TensorFlow warned about the retracing."""

    def __init__(self, probabilities_fn, strategy=None, top_k=TOP_K):
        self.strategy = strategy or tf.distribute.get_strategy()
        self.step = _compiled_step(probabilities_fn, self.strategy, top_k)

    def __call__(self, dataset_fn, log_every=0, expected_examples=None):
        """`evaluate`'s result over the dataset of `dataset_fn` (arguments as there)."""
        dataset = self.strategy.distribute_datasets_from_function(dataset_fn)
        return _count_over(dataset, self.step, self.strategy, log_every, expected_examples)


def _compiled_step(probabilities_fn, strategy, top_k):
    """tf.function (images, labels) -> (summed [examples, top-1 hits, top-k hits], summed loss)."""

    def replica_step(images, labels):
        def counts():
            probabilities = average_views(probabilities_fn, images)
            return batch_counts(probabilities, labels, top_k) + (tf.argmax(probabilities, axis=-1, output_type=tf.int32),)

        if strategy.num_replicas_in_sync == 1:  # one input pipeline: no batch is empty
            return counts()
        # A replica whose input has run out gets an empty batch. On some CPUs (an AMD EPYC with
        # AVX-512, TensorFlow 2.21's oneDNN kernels) a convolution of an empty batch returns its
        # input's shape, [0, S, S, 3], and the next layer fails; an empty batch counts nothing.
        # (Not on one replica: the cond's Merge node earns a grappler warning on every run.)
        return tf.cond(tf.shape(labels)[0] > 0, counts,
                       lambda: (tf.zeros([3], tf.int64), tf.constant(0.0, tf.float64), tf.zeros([0], tf.int32)))

    @tf.function(reduce_retracing=True)
    def step(images, labels):
        counts, loss, predicted = strategy.run(replica_step, args=(images, labels))
        # The top-1 classes stay per replica: the host pairs them with the labels, which costs B
        # numbers a step where a [C, C] matrix would be summed across replicas.
        return (strategy.reduce(tf.distribute.ReduceOp.SUM, counts, axis=None),
                strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None), predicted)

    return step


def _count_over(dataset, step, strategy, log_every, expected_examples):
    """The loop of `evaluate`: the step over every batch, the totals divided once at the end."""
    examples = top1 = topk = 0
    loss = 0.0
    pairs = collections.Counter()  # (label, top-1 class) of this worker's share (all of it on one machine)
    start = time.perf_counter()
    for index, (images, labels) in enumerate(dataset, start=1):
        counts, batch_loss, predicted = step(images, labels)
        n, hits1, hitsk = (int(value) for value in counts.numpy())
        examples, top1, topk, loss = examples + n, top1 + hits1, topk + hitsk, loss + float(batch_loss)
        for local_labels, local_predicted in zip(strategy.experimental_local_results(labels),
                                                 strategy.experimental_local_results(predicted)):
            pairs.update(zip(local_labels.numpy().tolist(), local_predicted.numpy().tolist()))
        if log_every and index % log_every == 0:
            # stderr: stdout is the result's (scripts/evaluate.py prints one JSON object there).
            print(_progress_line(index, examples, top1, time.perf_counter() - start, expected_examples), file=sys.stderr,
                  flush=True)
    seconds = time.perf_counter() - start
    if examples == 0:
        raise ValueError("the evaluation dataset is empty.")
    label_counts = collections.Counter()
    for (label, _), count in pairs.items():
        label_counts[label] += count
    return {
        "num_examples": examples,
        "top1_accuracy": top1 / examples,
        "top5_accuracy": topk / examples,
        "top1_error": (examples - top1) / examples,
        "top5_error": (examples - topk) / examples,
        "loss": loss / examples,
        "majority_share": max(label_counts.values()) / sum(label_counts.values()) if label_counts else None,
        "seconds": seconds,
        "images_per_sec": examples / seconds,
        "label_predictions": pairs,
    }


def confusion_matrix(label_predictions, num_classes):
    """[C, C] int64 counts, row = label, column = top-1 class, from `evaluate`'s label_predictions."""
    matrix = np.zeros((num_classes, num_classes), np.int64)
    for (label, predicted), count in label_predictions.items():
        matrix[label, predicted] += count
    return matrix


def weakest_classes(matrix, class_names, count=5):
    """The `count` classes of lowest top-1 accuracy among those with examples, lowest first (ties:
    the larger class first), each {class, examples, top1_accuracy, most_taken_for, times}: the
    class its examples were most often taken for, and how many times (None, 0 if never wrong)."""
    rows = []
    for label, row in enumerate(matrix):
        examples = int(row.sum())
        if not examples:
            continue
        wrong = row.copy()
        wrong[label] = 0
        other = int(np.argmax(wrong))
        rows.append({"class": class_names[label], "examples": examples, "top1_accuracy": float(row[label]) / examples,
                     "most_taken_for": class_names[other] if wrong[other] else None, "times": int(wrong[other])})
    return sorted(rows, key=lambda r: (r["top1_accuracy"], -r["examples"]))[:count]


def describe_weakest(weakest, shown=3):
    """'grace_hopper 0.740 (13 of 50 taken for motorcycle); ...': `weakest_classes`, as one line says it."""
    return "; ".join(f"{w['class']} {w['top1_accuracy']:.3f}"
                     + (f" ({w['times']} of {w['examples']} taken for {w['most_taken_for']})" if w["times"] else "")
                     for w in weakest[:shown])
