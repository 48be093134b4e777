"""GradWatch on every way people write a training step (issue 19).

Each style trains to the end with GradWatch attached, with the same History
and bit-identical weights as the same run without it.
"""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_gradwatch import GradWatch


class OwnStep(keras.Model):
    """A subclassed model that computes and applies its own gradients."""

    def __init__(self, decorate=False, **kwargs):
        super().__init__(**kwargs)
        self.hidden = keras.layers.Dense(8, activation="relu")
        self.out = keras.layers.Dense(1)
        self.tracker = keras.metrics.Mean(name="loss")
        if decorate:  # the step a user decorates with @tf.function
            self.train_step = tf.function(self.train_step)

    def call(self, x):
        return self.out(self.hidden(x))

    def train_step(self, data):
        x, y = data
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(self(x, training=True) - y))
        grads = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
        self.tracker.update_state(loss)
        return {"loss": self.tracker.result()}

    @property
    def metrics(self):
        return [self.tracker]


def data():
    rng = np.random.default_rng(0)
    x = rng.random((64, 4)).astype("float32")
    return x, x.sum(axis=1, keepdims=True)


def build(style):
    keras.utils.set_random_seed(7)
    if style in ("own_step", "own_step_tf_function"):
        model = OwnStep(decorate=style == "own_step_tf_function")
        model.compile(optimizer=keras.optimizers.Adam(0.01))
        return model
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss="mse",
        jit_compile=style == "jit_compile",
        steps_per_execution=3 if style == "steps_per_execution" else 1,
    )
    return model


def train(style, callbacks):
    x, y = data()
    model = build(style)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    history = model.fit(dataset, epochs=2, verbose=0, callbacks=callbacks)
    return model, history.history


STYLES = ["stock", "jit_compile", "steps_per_execution", "own_step", "own_step_tf_function"]


@pytest.mark.parametrize("style", STYLES)
def test_every_training_style_trains_unchanged(style, tmp_path):
    plain, plain_history = train(style, [])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        watched, watched_history = train(style, [GradWatch(tmp_path / "run")])
    for a, b in zip(plain.get_weights(), watched.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert watched_history["loss"] == plain_history["loss"]
    said = [str(w.message) for w in caught if "cannot add grad_norm" in str(w.message)]
    if style == "own_step_tf_function":
        # Its gradients are applied inside its own graph: no norm, said once.
        assert "grad_norm" not in watched_history
        assert len(said) == 1 and "'own_step" in said[0]
    else:
        assert "grad_norm" in watched_history and not said


class Noisy(keras.layers.Layer):
    """Draws from its own seed generator at every call, in training only."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seed = keras.random.SeedGenerator(5)

    def call(self, x, training=False):
        if training:
            return x + 0.01 * keras.random.normal(keras.ops.shape(x), seed=self.seed)
        return x


def train_random(callbacks, as_dataset):
    keras.utils.set_random_seed(11)
    rng = np.random.default_rng(1)
    x = rng.random((96, 12, 3)).astype("float32")
    y = x.sum(axis=(1, 2))[:, None] / 18
    model = keras.Sequential([
        keras.Input((12, 3)),
        Noisy(),
        keras.layers.GaussianNoise(0.05),
        # Recurrent dropout draws its masks at every call, inference too.
        keras.layers.LSTM(8, dropout=0.2, recurrent_dropout=0.2),
        keras.layers.Dropout(0.3),
        keras.layers.Dense(1),
    ])
    model.compile(optimizer="adam", loss="mse")
    data = (tf.data.Dataset.from_tensor_slices((x, y)).batch(32),) if as_dataset else (x, y)
    kwargs = {} if as_dataset else {"batch_size": 32, "shuffle": False}
    history = model.fit(*data, epochs=2, verbose=0, callbacks=callbacks, **kwargs)
    return model, history.history


@pytest.mark.parametrize("as_dataset", [False, True])
def test_random_layers_draw_the_same_numbers_with_gradwatch(as_dataset, tmp_path):
    """Measurements run the model (dropout included) but leave every seed
    generator as they found it, and the first step, whose batch becomes the
    probe batch, runs the epoch's own compiled step."""
    plain, plain_history = train_random([], as_dataset)
    watched, watched_history = train_random(
        [GradWatch(tmp_path / "run", every=1, plots=None)], as_dataset
    )
    assert watched_history["loss"] == plain_history["loss"]
    for a, b in zip(plain.get_weights(), watched.get_weights()):
        np.testing.assert_array_equal(a, b)
