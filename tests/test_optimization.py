import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_alexnet
from keras_alexnet import optimization


def test_linear_scaling_rule():
    assert optimization.scaled_learning_rate(128) == pytest.approx(0.01)
    assert optimization.scaled_learning_rate(256) == pytest.approx(0.02)
    assert optimization.scaled_learning_rate(32) == pytest.approx(0.0025)


def test_plateau_divides_by_ten_at_most_three_times():
    tracker = optimization.PlateauTracker(patience=2)
    schedule = optimization.AlexNetSchedule(0.01, "plateau", 1000, scale=tracker.scale)
    drops = [tracker.update(error) for error in [0.5, 0.4, 0.4, 0.4]]
    assert drops == [False, False, False, True]
    assert float(schedule(10)) == pytest.approx(0.001)
    for _ in range(20):
        tracker.update(0.4)
    assert int(tracker.drops.numpy()) == 3
    assert float(schedule(10)) == pytest.approx(1e-5)
    # Improvement resets the wait.
    fresh = optimization.PlateauTracker(patience=2)
    assert [fresh.update(e) for e in [0.5, 0.5, 0.4, 0.4, 0.3]] == [False] * 5


def test_plateau_never_divides_while_the_error_is_at_chance():
    # Held-out error of a 10-class run stuck at chance (0.9) for many epochs: no cut, however long.
    tracker = optimization.PlateauTracker(patience=2)
    chance_error = 1.0 - 0.15  # 1 - evaluation.chance_ceiling(10, 1000)
    assert not any(tracker.update(error, chance_error=chance_error) for error in [0.9, 0.91, 0.9, 0.92, 0.9, 0.87, 0.88, 0.9])
    assert float(tracker.scale.numpy()) == 1.0
    # Once the error has clearly left chance, plateaus count again.
    assert [tracker.update(e, chance_error=chance_error) for e in [0.6, 0.6, 0.6]] == [False, False, True]
    # Without the guard the same flat start is cut twice.
    unguarded = optimization.PlateauTracker(patience=2)
    assert sum(unguarded.update(error) for error in [0.9, 0.91, 0.9, 0.92, 0.9, 0.87, 0.88, 0.9]) == 3


def test_chance_ceiling():
    from keras_alexnet import evaluation

    assert evaluation.chance_ceiling(10, 1000) == pytest.approx(0.15)  # 1.5x chance beats 0.1 + 3 * 0.0095
    assert evaluation.chance_ceiling(10, 100) == pytest.approx(0.1 + 3 * 0.03)  # 3 sigma beats 1.5x chance
    assert evaluation.at_chance(0.167, 6, 300) and not evaluation.at_chance(0.30, 6, 300)
    assert not evaluation.at_chance(0.0, 10, 0)  # no held-out images: nothing to tell


def test_step_cosine_and_warmup_schedules():
    step = optimization.AlexNetSchedule(0.1, "step", 100, decay_steps=30)
    assert [round(float(step(s)), 6) for s in (0, 29, 30, 61, 95)] == [0.1, 0.1, 0.01, 0.001, 0.0001]
    cosine = optimization.AlexNetSchedule(0.1, "cosine", 110, warmup_steps=10)
    assert float(cosine(0)) == pytest.approx(0.01)  # warm-up: (0 + 1) / 10 of the base rate
    assert float(cosine(9)) == pytest.approx(0.1)
    assert float(cosine(60)) == pytest.approx(0.05, rel=1e-3)
    assert float(cosine(110)) == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError, match="lr_schedule"):
        optimization.AlexNetSchedule(0.1, "linear", 10)


def test_sgd_with_coupled_weight_decay_is_the_papers_update():
    """v <- 0.9 v - 0.0005 lr w - lr grad; w <- w + v (§5), on kernels; biases undecayed."""
    lr, wd, momentum = 0.1, 5e-4, 0.9
    model = keras_alexnet.build(num_classes=3, input_shape=(67, 67, 3), weight_decay=wd, dropout=0.0, seed=0)
    optimizer = optimization.make_optimizer(optimization.AlexNetSchedule(lr, "step", 10), momentum)
    x = tf.random.normal((4, 67, 67, 3), seed=0) * 50
    y = tf.constant([0, 1, 2, 0])

    def data_gradients():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, model(x, training=True)))
        return tape.gradient(loss, model.trainable_variables)

    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, model(x, training=True)))
            loss += tf.add_n(model.losses)
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))

    velocity = [np.zeros(v.shape) for v in model.trainable_variables]
    for _ in range(2):
        weights = [v.numpy().astype(np.float64) for v in model.trainable_variables]
        grads = [g.numpy() for g in data_gradients()]
        step()
        for i, variable in enumerate(model.trainable_variables):
            decay = wd if variable.path.endswith("kernel") else 0.0
            velocity[i] = momentum * velocity[i] - decay * lr * weights[i] - lr * grads[i]
            np.testing.assert_allclose(variable.numpy(), weights[i] + velocity[i], rtol=1e-4, atol=1e-7)


def test_mixed_float16_gets_loss_scaling():
    schedule = optimization.AlexNetSchedule(0.01, "step", 10)
    assert isinstance(optimization.make_optimizer(schedule, precision="mixed_float16"), keras.optimizers.LossScaleOptimizer)
    assert isinstance(optimization.make_optimizer(schedule, precision="mixed_bfloat16"), keras.optimizers.SGD)
