"""Tests of `keras_gradwatch.core._train_step`: grad_norm in a plain model's step."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_gradwatch.core import _train_step


def model_and_batch(optimizer=None):
    keras.utils.set_random_seed(3)
    model = keras.Sequential(
        [keras.Input((10, 2)), keras.layers.LSTM(8), keras.layers.Dense(1)]
    )
    # Clipping in the optimizer: the logged norm is the one before it.
    model.compile(optimizer=optimizer or keras.optimizers.Adam(global_clipnorm=0.01), loss="mse")
    rng = np.random.default_rng(0)
    x = rng.random((16, 10, 2)).astype("float32")
    y = rng.random((16, 1)).astype("float32")
    return model, x, y


def tape_norm(model, x, y):
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(keras.losses.mean_squared_error(y, model(x, training=True)))
    return float(tf.linalg.global_norm(tape.gradient(loss, model.trainable_variables)))


@pytest.mark.parametrize("scaled", [False, True])
def test_logged_norm_is_the_norm_of_the_applied_gradients(scaled):
    optimizer = keras.optimizers.SGD(0.1)
    if scaled:  # the step's gradients are scaled by 2**15 before `apply`
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    model, x, y = model_and_batch(optimizer)
    expected = tape_norm(model, x, y)
    model.make_train_function()
    assert _train_step.log_grad_norm(model)
    history = model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert history.history["grad_norm"][0] == pytest.approx(expected, rel=1e-5)


def test_training_is_unchanged():
    watched, x, y = model_and_batch()
    plain, _, _ = model_and_batch()
    watched.make_train_function()
    _train_step.log_grad_norm(watched)
    for model in (watched, plain):
        model.fit(x, y, batch_size=4, epochs=2, verbose=0, shuffle=False)
    for a, b in zip(watched.get_weights(), plain.get_weights()):
        np.testing.assert_array_equal(a, b)
    # The optimizer and the model keep their own methods.
    assert "apply" not in vars(watched.optimizer)
    assert "train_step" not in vars(watched)


def test_train_function_is_built_once_per_model():
    model, x, y = model_and_batch()
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)  # traced without the norm
    _train_step.log_grad_norm(model)
    built = model.train_function
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert _train_step.log_grad_norm(model) and model.train_function is built
    traced = model.train_function  # Keras's dispatch around one traced step
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert model.train_function is traced and "grad_norm" in history.history
    model.compile(optimizer="sgd", loss="mse")  # a new train function
    assert model.train_function is None
    model.make_train_function()
    _train_step.log_grad_norm(model)
    assert model.train_function is not built


def test_a_step_that_applies_no_gradient_logs_no_norm():
    class Frozen(keras.Model):
        def train_step(self, data):
            x, y = data
            return {"loss": tf.reduce_mean(tf.square(self(x) - y))}

    inputs = keras.Input((3,))
    model = Frozen(inputs, keras.layers.Dense(1)(inputs))
    model.compile(optimizer="sgd", loss="mse")
    model.make_train_function()
    _train_step.log_grad_norm(model)
    x = np.ones((4, 3), "float32")
    history = model.fit(x, x[:, :1], epochs=1, verbose=0)
    assert "grad_norm" not in history.history


def test_train_function_hook_takes_the_first_batch_and_is_removed():
    model, x, y = model_and_batch()
    model.make_train_function()
    original = model.train_function
    taken, failures = [], []
    hook = _train_step.TrainFunctionHook(
        model, lambda: not taken, taken.append, failures.append
    )
    assert model.train_function is not original
    model.fit(x, y, batch_size=4, epochs=1, verbose=0, shuffle=False)
    assert len(taken) == 1
    np.testing.assert_array_equal(taken[0][0].numpy(), x[:4])
    hook.remove()
    assert model.train_function is original and not failures


class Readings(keras.callbacks.Callback):
    """What the step read, next to what an eager read says, at each step;
    and the learning rate raised 10x after the first (a callback's change)."""

    def __init__(self, function):
        super().__init__()
        self.function = function
        self.seen = []

    def on_train_batch_end(self, batch, logs=None):
        tracker = self.model.metrics[0]
        optimizer = self.model.optimizer
        self.seen.append((
            self.function.take(),
            (float(tracker.total.numpy()), float(tracker.count.numpy()),
             float(optimizer.learning_rate.numpy()), int(optimizer.iterations.numpy())),
            sorted(logs),
        ))
        # After the first logged step (Keras 3.8 and 3.15 number the steps
        # of `steps_per_execution > 1` differently).
        if not hasattr(self, "raised_at"):
            self.raised_at = len(self.seen) - 1
            optimizer.learning_rate.assign(optimizer.learning_rate * 10)


@pytest.mark.parametrize("steps_per_execution", [1, 3])
def test_step_reads_loss_totals_rate_and_updates_and_hides_them(steps_per_execution):
    model, x, y = model_and_batch(keras.optimizers.SGD(0.01))
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse",
                  steps_per_execution=steps_per_execution)
    model.make_train_function()
    _train_step.log_grad_norm(model)
    function = model.train_function
    assert isinstance(function, _train_step.StepReadingsFunction)
    watch = Readings(function)
    # 16 samples, batch 3: a short last batch, whose weight differs.
    history = model.fit(x, y, batch_size=3, epochs=2, verbose=0, shuffle=False,
                        callbacks=[watch])
    assert len(watch.seen) == 2 * -(-6 // steps_per_execution)
    for readings, eager, keys in watch.seen:
        assert readings == pytest.approx(eager[:3] + (float(eager[3]),), rel=0, abs=0)
        assert readings.iterations == eager[3]
        assert keys == ["grad_norm", "loss"]
    # The rate of the update the step made, not the one a callback set after it.
    rates = [readings.learning_rate for readings, _, _ in watch.seen]
    raised = watch.raised_at
    assert rates[raised] == pytest.approx(0.01) and rates[raised + 1] == pytest.approx(0.1)
    # Keras, History and a later fit without GradWatch never see the readings.
    assert sorted(history.history) == ["grad_norm", "loss"]
    assert sorted(model.fit(x, y, batch_size=4, epochs=1, verbose=0).history) == [
        "grad_norm", "loss"]
    assert sorted(model.train_on_batch(x, y, return_dict=True)) == ["grad_norm", "loss"]
    assert function.take() is not None
    assert function.take() is None  # taken once: never a stale reading


def test_step_readings_keep_a_nan_loss_and_mark_what_is_unknown():
    values = [float("nan"), 2.0, 0.0, 5.0, 0b1011]  # the rate was not read
    readings = _train_step.StepReadings(values)
    assert np.isnan(readings.loss_total) and readings.loss_count == 2.0
    assert readings.learning_rate is None and readings.iterations == 5


def test_the_apply_shadow_runs_its_parts_in_order_and_puts_back_what_it_covered():
    from keras_gradwatch.core import _compat

    optimizer = keras.optimizers.SGD(1.0)
    weight = keras.Variable([1.0, 1.0])
    seen = []

    def user_apply(grads, trainable_variables=None):  # a shadow of the user's own
        seen.append("user")
        return type(optimizer).apply(optimizer, grads, trainable_variables)

    optimizer.apply = user_apply
    _compat.add_apply_part(optimizer, "double", lambda g: [2.0 * x for x in g], 10)
    _compat.add_apply_part(optimizer, "read", lambda g: seen.append(float(g[0][0])) or g, 0)
    assert _compat.apply_shadow(optimizer).names == ["read", "double"]
    optimizer.apply_gradients([(tf.constant([0.5, 0.5]), weight)])
    # Read before the doubling, then the covered apply with doubled gradients.
    assert seen == [0.5, "user"]
    np.testing.assert_allclose(weight.numpy(), [0.0, 0.0])
    _compat.remove_apply_part(optimizer, "double")
    _compat.remove_apply_part(optimizer, "read")
    assert vars(optimizer)["apply"] is user_apply
