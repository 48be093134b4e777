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
