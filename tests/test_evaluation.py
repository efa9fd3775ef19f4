import re

import numpy as np
import pytest
import tensorflow as tf

import keras_alexnet
from keras_alexnet import distribute, evaluation, export

SIZE = 67
CLASSES = 6


def mirrored():
    return distribute.get_strategy("mirrored")


def fixed_probabilities(table):
    """A 'model' whose probabilities are table[image id]; the id is pixel [0, 0, 0] of the image."""
    table = tf.constant(table, tf.float32)

    def probabilities(images):
        ids = tf.cast(images[:, 0, 0, 0], tf.int32)
        return tf.gather(table, ids)

    return probabilities


def id_images(ids, size=4):
    return np.tile(np.asarray(ids, np.float32)[:, None, None, None], (1, size, size, 3))


def dataset_fn_of(images, labels, global_batch):
    def dataset_fn(input_context):
        dataset = tf.data.Dataset.from_tensor_slices((images, labels))
        dataset = dataset.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
        return dataset.batch(input_context.get_per_replica_batch_size(global_batch))

    return dataset_fn


def expected_metrics(probabilities, labels, k=5):
    order = np.argsort(-probabilities, axis=1, kind="stable")
    top1 = (order[:, 0] == labels).mean()
    topk = (order[:, :k] == labels[:, None]).any(axis=1).mean()
    loss = -np.log(probabilities[np.arange(len(labels)), labels]).mean()
    return top1, topk, loss


@pytest.mark.parametrize("use_strategy", [False, True])
@pytest.mark.parametrize("num_examples,global_batch", [(13, 4), (5, 4), (1, 4), (8, 8), (3, 2)])
def test_every_example_counted_once(use_strategy, num_examples, global_batch):
    rng = np.random.default_rng(num_examples)
    table = rng.dirichlet(np.ones(CLASSES), size=num_examples)
    labels = rng.integers(0, CLASSES, size=num_examples).astype(np.int32)
    strategy = mirrored() if use_strategy else None
    result = evaluation.evaluate(fixed_probabilities(table), dataset_fn_of(id_images(np.arange(num_examples)), labels, global_batch),
                                 strategy=strategy)
    top1, top5, loss = expected_metrics(table, labels)
    assert result["num_examples"] == num_examples
    assert result["top1_accuracy"] == pytest.approx(top1, abs=1e-12)
    assert result["top5_accuracy"] == pytest.approx(top5, abs=1e-12)
    assert result["top1_error"] == pytest.approx(1 - top1, abs=1e-12)
    assert result["top5_error"] == pytest.approx(1 - top5, abs=1e-12)
    assert result["loss"] == pytest.approx(loss, rel=1e-6)
    assert result["majority_share"] == np.bincount(labels).max() / num_examples


def test_chance_is_the_largest_class_share_when_the_held_out_set_is_imbalanced():
    # 90 of 100 held-out images in one class: a model that always answers it scores 0.9 and has
    # learned nothing; against 1/classes alone it passed as learned (and was exported).
    assert evaluation.at_chance(0.9, 2, 100, majority_share=0.9)
    assert not evaluation.at_chance(0.9, 2, 100)
    assert not evaluation.at_chance(0.995, 2, 100, majority_share=0.9)  # 0.9 + 3 x 0.03 = 0.99
    assert evaluation.chance_ceiling(2, 100, majority_share=0.9) == pytest.approx(0.99)
    # Balanced, or a share below 1/classes: as before (docs/recipes.md: 15.0% for 10 classes, 1,000 images).
    assert evaluation.chance_ceiling(10, 1000, majority_share=0.1) == evaluation.chance_ceiling(10, 1000) == pytest.approx(0.15)
    assert evaluation.describe_chance(10, 0.1) == "0.100 for 10 classes"
    assert evaluation.describe_chance(2, 0.9) == "0.900, always answering the largest held-out class (2 classes)"


def test_a_held_out_set_too_small_to_tell_is_never_called_at_chance():
    # 8 held-out images, 5 of one class: even 8 of 8 right is within three standard deviations of
    # 0.625, and a perfect run ended "did not learn", exporting nothing.
    assert not evaluation.can_tell(2, 8, majority_share=0.625)
    assert not evaluation.at_chance(1.0, 2, 8, majority_share=0.625) and not evaluation.at_chance(0.5, 2, 8)
    assert not evaluation.can_tell(2, 9) and evaluation.can_tell(2, 10)  # 0.5 + 3 x sqrt(0.25 / 10) = 0.97
    assert evaluation.at_chance(0.6, 2, 10) and not evaluation.at_chance(0.98, 2, 10)


def test_replicas_see_uneven_batches_and_none_is_lost():
    # 5 examples, 2 replicas, 2 per replica: steps of [2, 2] and [1, 0] examples.
    seen = []

    def probabilities(images):
        seen.append(None)  # traced per replica
        return tf.one_hot(tf.cast(images[:, 0, 0, 0], tf.int32) % CLASSES, CLASSES)

    labels = np.arange(5, dtype=np.int32) % CLASSES
    result = evaluation.evaluate(probabilities, dataset_fn_of(id_images(np.arange(5)), labels, 4), strategy=mirrored())
    assert result["num_examples"] == 5 and result["top1_error"] == 0.0
    assert len(seen) >= 2  # both replicas ran the model


@pytest.mark.parametrize("use_strategy", [False, True])
def test_the_confusion_of_labels_and_top1_classes_is_counted_exactly(use_strategy):
    rng = np.random.default_rng(3)
    table = rng.dirichlet(np.ones(CLASSES), size=13)
    labels = rng.integers(0, CLASSES, size=13).astype(np.int32)
    result = evaluation.evaluate(fixed_probabilities(table), dataset_fn_of(id_images(np.arange(13)), labels, 4),
                                 strategy=mirrored() if use_strategy else None)
    matrix = evaluation.confusion_matrix(result["label_predictions"], CLASSES)
    expected = np.zeros((CLASSES, CLASSES), np.int64)
    np.add.at(expected, (labels, table.argmax(axis=1)), 1)
    np.testing.assert_array_equal(matrix, expected)
    assert np.trace(matrix) == round(result["top1_accuracy"] * 13)


def test_the_weakest_classes_name_what_they_were_taken_for():
    matrix = np.array([[8, 2, 0, 0], [0, 1, 0, 0], [5, 0, 45, 0], [0, 0, 0, 0]])
    weakest = evaluation.weakest_classes(matrix, ["ant", "bee", "cat", "dog"], count=3)
    assert weakest == [  # dog has no examples: left out
        {"class": "ant", "examples": 10, "top1_accuracy": 0.8, "most_taken_for": "bee", "times": 2},
        {"class": "cat", "examples": 50, "top1_accuracy": 0.9, "most_taken_for": "ant", "times": 5},
        {"class": "bee", "examples": 1, "top1_accuracy": 1.0, "most_taken_for": None, "times": 0}]


def test_exact_fractions():
    # 3 of 7 right at top-1: the error is exactly 4/7, not 1 - 3/7 rounded differently.
    table = np.eye(CLASSES)[[0, 1, 2, 0, 0, 0, 0]] * 0.9 + 0.1 / CLASSES
    labels = np.array([0, 1, 2, 3, 3, 3, 3], np.int32)
    result = evaluation.evaluate(fixed_probabilities(table), dataset_fn_of(id_images(np.arange(7)), labels, 3))
    assert result["top1_error"] == 4 / 7 and result["top1_accuracy"] == 3 / 7


def test_a_dataset_with_some_of_the_models_classes_is_matched_by_name():
    # A test folder of new photos for two of the model's six classes: its labels are 0 and 1 in
    # its own (sorted) class list, the model's "cat" and "tree" are 2 and 5. Before, a dataset
    # with fewer classes was refused, and one with as many but in another order was compared by index.
    model_names = ["apple", "bus", "cat", "dog", "sea", "tree"]
    label_map = evaluation.match_classes(["cat", "tree"], model_names)
    assert label_map == [2, 5]
    assert evaluation.match_classes(model_names, model_names) is None
    assert evaluation.match_classes(["cat", "tree"], None) is None  # nothing to match by
    assert evaluation.match_classes(model_names[::-1], model_names) == [5, 4, 3, 2, 1, 0]
    with pytest.raises(ValueError, match=r"^1 of its 2 classes is not among the model's 6 \(zebra\)$"):
        evaluation.match_classes(["cat", "zebra"], model_names)
    # The model answers "cat" for images 0-2 and "tree" for 3: with the labels matched, 4 of 4
    # right; compared by index (labels 0 and 1) none would be.
    table = np.eye(CLASSES)[[2, 2, 2, 5]]
    labels = np.array([0, 0, 0, 1], np.int32)

    def dataset_fn(input_context):
        return evaluation.relabel(dataset_fn_of(id_images(np.arange(4)), labels, 2)(input_context), label_map)

    assert evaluation.evaluate(fixed_probabilities(table), dataset_fn)["top1_accuracy"] == 1.0
    assert evaluation.evaluate(fixed_probabilities(table), dataset_fn_of(id_images(np.arange(4)), labels, 2))["top1_accuracy"] == 0.0


def test_progress_goes_to_stderr_with_how_far_and_the_eta(capsys):
    # A ten-crop ImageNet evaluation on a CPU takes half an hour; evaluate.py printed nothing until
    # the end. Its stdout is the result's JSON, so progress goes to stderr.
    table = np.eye(CLASSES)[[0, 1, 2, 0]]
    labels = np.array([0, 1, 2, 3], np.int32)
    evaluation.evaluate(fixed_probabilities(table), dataset_fn_of(id_images(np.arange(4)), labels, 2), log_every=1,
                        expected_examples=4)
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 2
    assert re.fullmatch(r"step 1: 2 of 4 images, top-1 error 0\.0000, [\d.]+ img/s, ETA 0m0\ds", lines[0]), lines
    assert re.fullmatch(r"step 2: 4 of 4 images, top-1 error 0\.2500, [\d.]+ img/s, ETA 0m00s", lines[1]), lines


def test_top5_with_fewer_than_five_classes_is_top_all():
    table = np.array([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    labels = np.array([0, 2], np.int32)
    result = evaluation.evaluate(fixed_probabilities(table), dataset_fn_of(id_images([0, 1]), labels, 2))
    assert result["top1_error"] == 1.0 and result["top5_error"] == 0.0


def test_ties_count_once_in_top_k():
    # Seven classes all equal: top-5 holds five of them (the lowest indices), not all seven.
    table = np.full((2, 7), 1 / 7)
    labels = np.array([0, 6], np.int32)
    result = evaluation.evaluate(fixed_probabilities(table), dataset_fn_of(id_images([0, 1]), labels, 2))
    assert result["top5_accuracy"] == 0.5 and result["top1_accuracy"] == 0.5


def test_top_k_hits_ranks_as_tf_top_k_does():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=(200, 7)).astype(np.float32)  # many ties
    labels = rng.integers(0, 7, size=200).astype(np.int32)
    top = tf.math.top_k(scores, k=5).indices.numpy()
    expected = ((top[:, 0] == labels).sum(), (top == labels[:, None]).any(axis=1).sum())
    assert tuple(int(hits) for hits in evaluation.top_k_hits(scores, labels)) == expected
    with_nan = np.array([[np.nan, 1.0, 2.0], [0.5, 0.2, 0.1]], np.float32)
    assert [int(hits) for hits in evaluation.top_k_hits(with_nan, np.array([0, 0]))] == [1, 1]  # a NaN is never a hit


def test_ten_crop_averages_the_softmax_of_the_views():
    # Views carry their own id: view v of example i has id 10*i + v.
    rng = np.random.default_rng(0)
    num_examples = 5
    table = rng.dirichlet(np.ones(CLASSES) * 0.3, size=num_examples * 10)
    ids = np.arange(num_examples * 10).reshape(num_examples, 10)
    images = np.stack([id_images(row) for row in ids])  # [N, 10, 4, 4, 3]
    labels = rng.integers(0, CLASSES, size=num_examples).astype(np.int32)
    averaged = table.reshape(num_examples, 10, CLASSES).mean(axis=1)
    top1, top5, loss = expected_metrics(averaged, labels)
    for strategy in (None, mirrored()):
        result = evaluation.evaluate(fixed_probabilities(table), dataset_fn_of(images, labels, 2), strategy=strategy)
        assert result["num_examples"] == num_examples
        assert result["top1_accuracy"] == pytest.approx(top1) and result["top5_accuracy"] == pytest.approx(top5)
        assert result["loss"] == pytest.approx(loss, rel=1e-6)
    # Averaging the views differs from scoring the centre view (view 4) alone.
    assert not np.allclose(expected_metrics(table[4::10], labels)[2], loss)


def test_keras_model_and_saved_model_give_the_same_result(tmp_path):
    model = keras_alexnet.build(num_classes=CLASSES, input_shape=(SIZE, SIZE, 3), seed=0)
    path = keras_alexnet.export_saved_model(model, tmp_path / "alexnet", class_names=[f"c{i}" for i in range(CLASSES)])
    rng = np.random.default_rng(1)
    images = rng.normal(scale=60.0, size=(6, SIZE, SIZE, 3)).astype(np.float32)
    labels = rng.integers(0, CLASSES, size=6).astype(np.int32)
    dataset_fn = dataset_fn_of(images, labels, 4)
    from_keras = evaluation.evaluate(evaluation.model_probabilities(model), dataset_fn)
    strategy = mirrored()
    with strategy.scope():
        probabilities, class_names, image_size = export.load_saved_model(path)
    from_export = evaluation.evaluate(probabilities, dataset_fn, strategy=strategy)
    assert class_names == [f"c{i}" for i in range(CLASSES)] and image_size == SIZE
    expected = expected_metrics(tf.nn.softmax(model(images, training=False)).numpy(), labels)
    for result in (from_keras, from_export):
        assert result["num_examples"] == 6
        assert result["top1_accuracy"] == pytest.approx(expected[0]) and result["top5_accuracy"] == pytest.approx(expected[1])
        assert result["loss"] == pytest.approx(expected[2], rel=1e-5)


def test_load_saved_model_rejects_other_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a SavedModel"):
        export.load_saved_model(str(tmp_path))


def test_empty_dataset_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        evaluation.evaluate(fixed_probabilities(np.eye(3)), dataset_fn_of(id_images([]), np.zeros([0], np.int32), 2))
