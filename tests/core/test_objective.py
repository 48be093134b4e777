"""The measurement's loss is the model's training objective, with exact
oracles: a `GradientTape` of Keras's own `model.compute_loss` on the same
batch (inference mode, as the measurement runs)."""

import json
import pathlib
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_gradwatch import GradWatch
from keras_gradwatch import Measuring
from keras_gradwatch import NotMeasurableError
from keras_gradwatch import TruncatedBPTT
from keras_gradwatch import layers
from keras_gradwatch import measure
from keras_gradwatch import measurement


def rng(seed=0):
    return np.random.default_rng(seed)


def tape(model, x, y=None, sample_weight=None, loss_model=None, slice_last=False):
    """(global weight-gradient norm, input-gradient profile) of
    `compute_loss` on the batch; the profile is of the batch size times
    the loss (each sequence's own gradient), lag 0 first."""
    loss_model = loss_model or model
    x = tf.convert_to_tensor(x)
    with tf.GradientTape(persistent=True) as t:
        t.watch(x)
        y_pred = model(x, training=False)
        loss = loss_model.compute_loss(x, y, y_pred, sample_weight)
        if slice_last:
            w = sample_weight
            if w is not None and np.ndim(w) == 2:
                w = w[:, -1:]
            last = loss_model.compute_loss(x, y[:, -1:], y_pred[:, -1:], w)
        else:
            last = loss
        last = last * x.shape[0]
    grads = [g for g in t.gradient(loss, model.trainable_variables) if g is not None]
    per_step = np.linalg.norm(t.gradient(last, x).numpy(), axis=-1)
    return float(tf.linalg.global_norm(grads)), per_step.mean(axis=0)[::-1]


def test_binary_labels_of_shape_n_are_measured_on_the_compiled_loss():
    # The usual binary classifier: labels (N,), one sigmoid unit (N, 1).
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((12, 3)), keras.layers.LSTM(4, name="lstm"),
         keras.layers.Dense(1, activation="sigmoid")]
    )
    model.compile("adam", "binary_crossentropy")
    x = rng().normal(size=(16, 12, 3)).astype("float32")
    y = (x[:, :, 0].mean(axis=1) > 0).astype("float32")
    result = measure(model, x, y, gradient_norms=True)
    norm, profile = tape(model, x, y)
    assert result.global_norm == pytest.approx(norm, rel=1e-5)
    np.testing.assert_allclose(result.layers["lstm"].profile, profile, rtol=1e-5)
    # The same loss given by name, on an uncompiled twin: ranks matched too.
    twin = keras.models.clone_model(model)
    twin.set_weights(model.get_weights())
    given = measure(twin, x, y, loss="binary_crossentropy", gradient_norms=True)
    assert given.global_norm == pytest.approx(norm, rel=1e-5)


@pytest.mark.parametrize("weights", [None, "sequence", "step"])
def test_sparse_logits_per_step_with_sample_weights(weights):
    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [keras.Input((None, 3)), keras.layers.GRU(5, return_sequences=True, name="gru"),
         keras.layers.Dense(4)]
    )
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = rng(1).normal(size=(8, 10, 3)).astype("float32")
    y = rng(2).integers(0, 4, size=(8, 10))
    sample_weight = {
        None: None,
        "sequence": rng(3).uniform(0, 3, size=(8, 1)).astype("float32"),
        "step": rng(3).uniform(0, 3, size=(8, 10)).astype("float32"),
    }[weights]
    result = measure(model, x, y, sample_weight=sample_weight, gradient_norms=True)
    norm, profile = tape(model, x, y, sample_weight, slice_last=True)
    assert result.loss_steps == "last"
    assert result.global_norm == pytest.approx(norm, rel=1e-5)
    np.testing.assert_allclose(result.layers["gru"].profile, profile, rtol=1e-5)
    if weights is not None:
        plain = measure(model, x, y, gradient_norms=True)
        assert abs(plain.global_norm - result.global_norm) > 1e-3 * norm


def two_outputs(dropout=None, **compile_kwargs):
    """An LSTM with a regression output "a" and a 3-class output "b",
    compiled with per-output losses weighted 0.3 and 2.0."""
    inputs = keras.Input((None, 2))
    hidden = keras.layers.LSTM(4, name="lstm")(inputs)
    if dropout:
        hidden = keras.layers.Dropout(dropout)(hidden)
    model = keras.Model(
        inputs,
        {"a": keras.layers.Dense(1, name="a")(hidden),
         "b": keras.layers.Dense(3, activation="softmax", name="b")(hidden)},
    )
    model.compile(
        "adam", loss={"a": "mse", "b": "sparse_categorical_crossentropy"},
        loss_weights={"a": 0.3, "b": 2.0}, **compile_kwargs,
    )
    return model


def test_multi_output_with_loss_weights_leaves_the_metrics_alone():
    model = two_outputs()
    x = rng().normal(size=(6, 9, 2)).astype("float32")
    y = {"a": rng(1).normal(size=(6,)).astype("float32"), "b": rng(2).integers(0, 3, size=(6,))}
    result = measure(model, x, y, gradient_norms=True)
    # The per-output loss metrics exist and were not moved.
    assert len(model.metrics_variables) >= 6
    assert all(float(np.sum(v.numpy())) == 0.0 for v in model.metrics_variables)
    # (The oracle's eager compute_loss updates them; the measurement did not.)
    norm, profile = tape(model, x, y)
    assert result.global_norm == pytest.approx(norm, rel=1e-5)
    np.testing.assert_allclose(result.layers["lstm"].profile, profile, rtol=1e-5)
    history = model.fit(x, y, epochs=1, verbose=0)
    assert {"loss", "a_loss", "b_loss"} <= set(history.history)


class PenalisedTagger(keras.Model):
    """Adds its loss in `call` (and a layer's kernel is regularised)."""

    def __init__(self):
        super().__init__()
        self.rnn = keras.layers.GRU(4, return_sequences=True, name="gru")
        self.out = keras.layers.Dense(3, kernel_regularizer=keras.regularizers.L2(0.1))

    def call(self, inputs):
        probs = keras.ops.softmax(self.out(self.rnn(inputs["tokens"])))
        picked = keras.ops.sum(probs * keras.ops.one_hot(inputs["labels"], 3), axis=-1)
        self.add_loss(-keras.ops.mean(keras.ops.log(picked + 1e-7)))
        return probs


def test_add_loss_only_model_on_dict_inputs_is_measured_on_its_objective():
    model = PenalisedTagger()
    model.compile("adam")  # no loss: the objective is `model.losses`
    x = {"tokens": rng().normal(size=(5, 7, 2)).astype("float32"),
         "labels": rng(1).integers(0, 3, size=(5, 7))}
    model(x)
    result = measure(model, x, gradient_norms=True)
    # Outputs per step, an objective with no per-step part: measured whole.
    assert result.loss_steps == "all"
    with tf.GradientTape() as t:
        model(x, training=False)
        objective = keras.ops.sum(model.losses)
    grads = t.gradient(objective, model.trainable_variables)
    assert len(model.losses) == 2  # the call's term and the regulariser
    assert result.global_norm == pytest.approx(
        float(tf.linalg.global_norm(grads)), rel=1e-5
    )
    assert result.layers["gru"].profile[0] > 0


def test_model_with_no_loss_is_not_measured_on_a_stand_in():
    model = keras.Sequential([keras.Input((None, 2)), keras.layers.SimpleRNN(3)])
    x = rng().normal(size=(4, 6, 2)).astype("float32")
    # `measure` called directly keeps its documented output sum...
    assert measure(model, x).layers
    # ...GradWatch's measurement never stands in for the objective.
    with pytest.raises(NotMeasurableError, match="^not measured: the model has no training loss"):
        measurement._measure(
            model, x, None, loss=None, loss_steps="last", window=None,
            threshold=0.01, tolerance=0.05, gradient_norms=True, profiles=None,
        )
    model.compile("sgd", "mse")
    with pytest.raises(NotMeasurableError, match="compiled with a loss .'mse'. but the batch has no targets"):
        measure(model, x)


def test_truncated_model_is_measured_on_the_wrappers_objective():
    inner = keras.Sequential(
        [keras.Input(batch_shape=(4, None, 2)),
         layers.GRU(3, stateful=True, return_sequences=True,
                    kernel_regularizer=keras.regularizers.L2(0.5)),
         keras.layers.Dense(1)]
    )
    model = TruncatedBPTT(inner, window=3)
    model.compile("sgd", "mse")
    x = rng().normal(size=(6, 9, 2)).astype("float32")
    y = rng(1).normal(size=(6, 9)).astype("float32")  # (N, T) against (N, T, 1)
    result = measure(model, x, y, gradient_norms=True)
    twin = keras.Sequential(
        [keras.Input((None, 2)),
         layers.GRU(3, return_sequences=True, kernel_regularizer=keras.regularizers.L2(0.5)),
         keras.layers.Dense(1)]
    )
    twin.set_weights(inner.get_weights())
    twin.compile("sgd", "mse")
    norm, _ = tape(twin, x, y)
    assert result.global_norm == pytest.approx(norm, rel=1e-5)


# GradWatch ---------------------------------------------------------------


def _records(run, name):
    path = pathlib.Path(run) / name
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.parametrize("weighting", ["sample_weight", "class_weight"])
def test_gradwatch_measures_binary_labels_with_their_weights(tmp_path, weighting):
    keras.utils.set_random_seed(2)
    model = keras.Sequential(
        [keras.Input((8, 2)), keras.layers.GRU(3), keras.layers.Dense(1, activation="sigmoid")]
    )
    model.compile("sgd", "binary_crossentropy")
    x = rng().normal(size=(32, 8, 2)).astype("float32")
    y = (x[:, -1, 0] > 0).astype("float32")
    if weighting == "sample_weight":
        weights = rng(1).uniform(0.5, 2, size=(32,)).astype("float32")
        kwargs = {"sample_weight": weights}
    else:
        kwargs = {"class_weight": {0: 0.25, 1: 3.0}}
        weights = np.where(y > 0, 3.0, 0.25).astype("float32")
    start = model.get_weights()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.fit(x, y, batch_size=32, epochs=1, verbose=0, shuffle=False,
                  callbacks=[GradWatch(tmp_path, plots=None)], **kwargs)
    first = _records(tmp_path, "measurements.jsonl")[0]
    assert first["reason"] == "start" and "suspect" not in first
    model.set_weights(start)
    norm, _ = tape(model, x[:16], y[:16], weights[:16])
    assert first["global_norm"] == pytest.approx(norm, rel=1e-5)
    unweighted, _ = tape(model, x[:16], y[:16])
    assert abs(unweighted - norm) > 1e-3 * norm
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["measurement_error"] is None


def test_gradwatch_says_why_a_model_without_a_loss_is_not_measured(tmp_path):
    class OwnStep(keras.Model):
        """Trains on a loss of its own train step: nothing to reproduce."""

        def train_step(self, data):
            x, y = data
            with tf.GradientTape() as t:
                loss = keras.ops.mean(keras.ops.square(self(x, training=True) - y))
            grads = t.gradient(loss, self.trainable_variables)
            self.optimizer.apply(grads, self.trainable_variables)
            return {"loss": loss}

    inputs = keras.Input((6, 2))
    model = OwnStep(inputs, keras.layers.Dense(1)(keras.layers.SimpleRNN(3)(inputs)))
    model.compile("sgd")
    x = rng().normal(size=(16, 6, 2)).astype("float32")
    y = rng(1).normal(size=(16, 1)).astype("float32")
    with pytest.warns(UserWarning, match="not measured: the model has no training loss"):
        history = model.fit(x, y, epochs=2, verbose=0,
                            callbacks=[GradWatch(tmp_path, plots=None)])
    assert "decay_rate" not in history.history
    assert _records(tmp_path, "measurements.jsonl") == []
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["measurement_error"].startswith(
        "not measured: the model has no training loss that can be evaluated"
    )


def test_gradwatch_marks_a_measurement_far_from_training_suspect(tmp_path):
    # A measurement loss 1e6 times the training loss: its norm is no
    # picture of the steps' gradient, and is marked instead of reported.
    def huge(y_true, y_pred):
        return 1e6 * keras.ops.mean(keras.ops.square(y_true - y_pred), axis=-1)

    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((6, 2)), layers.GRU(3), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    x = rng().normal(size=(64, 6, 2)).astype("float32")
    y = rng(1).normal(size=(64, 1)).astype("float32")
    with pytest.warns(UserWarning, match="suspect") as caught:
        history = model.fit(x, y, batch_size=16, epochs=2, verbose=0,
                            callbacks=[GradWatch(tmp_path, plots=None, overhead=100.0,
                                                 measuring=Measuring(loss=huge))])
    assert sum("suspect" in str(w.message) for w in caught) == 1  # once
    records = _records(tmp_path, "measurements.jsonl")
    assert records[0]["reason"] == "start" and "suspect" not in records[0]  # no reference yet
    # Off once could be a blow-up; off twice in a row is another gradient.
    assert "suspect" not in records[1]
    later = records[2:]
    assert later and all("x above the grad_norm of the training steps" in r["suspect"] for r in later)
    assert "decay_rate" not in history.history


def test_gradwatch_on_a_multi_output_model_changes_no_figure_of_training(tmp_path):
    # Per-output loss metrics, loss weights, dropout, a measurement at
    # every step: History and weights equal a run without GradWatch.
    x = rng().normal(size=(24, 7, 2)).astype("float32")
    y = {"a": rng(1).normal(size=(24,)).astype("float32"), "b": rng(2).integers(0, 3, size=(24,))}

    def run(callbacks):
        keras.utils.set_random_seed(0)
        model = two_outputs(dropout=0.3, metrics={"b": ["accuracy"]})
        history = model.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=callbacks)
        return history.history, model.get_weights()

    plain, plain_weights = run([])
    watched, watched_weights = run([GradWatch(tmp_path, plots=None, every=1)])
    assert {k: watched[k] for k in plain} == plain
    for before, after in zip(plain_weights, watched_weights):
        np.testing.assert_array_equal(before, after)
    assert len(_records(tmp_path, "measurements.jsonl")) >= 6
