"""Several models trained one after another with one callback list.

Modelled on the TensorFlow tutorial "Time series forecasting"
(`tensorflow/docs site/en/tutorials/structured_data/time_series.ipynb`):
hourly weather rows (Jena climate, every 6th row), split 70/20/10 in time
order and normalised; a `WindowGenerator` making shuffled windows with
`keras.utils.timeseries_dataset_from_array` (batch 32); a
`compile_and_fit(model, window)` with MSE, Adam and MAE; and a row of
models of different input widths: linear and dense on one step, a
multi-step dense and a Conv1D on 3 steps, an LSTM on 24 steps, and the
autoregressive `FeedBack` model (an `LSTMCell` warm-up, then its own
predictions fed back for 24 steps). As in scripts that reuse one list for
every `fit`, the callbacks (EarlyStopping and the watcher) are created once
and passed to every `compile_and_fit`. The weather table is generated
(`_data.weather`): 6,000 hourly rows (70,091); 3 epochs per model (20).
"""

import keras
import numpy as np
import tensorflow as tf

from real_runs import _data
from real_runs._common import Outcome
from real_runs._common import Truth

TITLE = "6 models (linear..LSTM, LSTMCell feedback) one after another, one callback list"
MODELLED_ON = "tensorflow/docs tutorials/structured_data/time_series.ipynb"
TRUTH = Truth("healthy", note="input shapes change from model to model; each must be measured")

MAX_EPOCHS = 3
OUT_STEPS = 24


class WindowGenerator:
    """The tutorial's windows: `input_width` steps in, `label_width` out,
    `shift` steps ahead; labels of `label_columns` (or all features)."""

    def __init__(self, input_width, label_width, shift, train_df, val_df,
                 label_columns=None):
        self.train_df, self.val_df = train_df, val_df
        self.label_columns = label_columns
        self.input_width, self.label_width, self.shift = input_width, label_width, shift
        self.total_window_size = input_width + shift
        self.label_start = self.total_window_size - label_width

    def split_window(self, features):
        inputs = features[:, :self.input_width, :]
        labels = features[:, self.label_start:, :]
        if self.label_columns is not None:
            labels = tf.stack([labels[:, :, c] for c in self.label_columns], axis=-1)
        inputs.set_shape([None, self.input_width, None])
        labels.set_shape([None, self.label_width, None])
        return inputs, labels

    def make_dataset(self, data):
        ds = keras.utils.timeseries_dataset_from_array(
            data=np.array(data, dtype=np.float32), targets=None,
            sequence_length=self.total_window_size, sequence_stride=1, shuffle=True,
            batch_size=32,
        )
        return ds.map(self.split_window)

    @property
    def train(self):
        return self.make_dataset(self.train_df)

    @property
    def val(self):
        return self.make_dataset(self.val_df)


class FeedBack(keras.Model):
    def __init__(self, units, out_steps, num_features, **kwargs):
        super().__init__(**kwargs)
        self.out_steps = out_steps
        self.lstm_cell = keras.layers.LSTMCell(units)
        self.lstm_rnn = keras.layers.RNN(self.lstm_cell, return_state=True)
        self.dense = keras.layers.Dense(num_features)

    def warmup(self, inputs):
        x, *state = self.lstm_rnn(inputs)
        return self.dense(x), state

    def call(self, inputs, training=None):
        prediction, state = self.warmup(inputs)
        predictions = [prediction]
        for _ in range(1, self.out_steps):
            x, state = self.lstm_cell(prediction, state, training=training)
            prediction = self.dense(x)
            predictions.append(prediction)
        return tf.transpose(tf.stack(predictions), [1, 0, 2])


def compile_and_fit(model, window, callbacks):
    model.compile(loss=keras.losses.MeanSquaredError(), optimizer=keras.optimizers.Adam(),
                  metrics=[keras.metrics.MeanAbsoluteError()])
    return model.fit(window.train, epochs=MAX_EPOCHS, validation_data=window.val, verbose=0,
                     callbacks=callbacks)


def models(num_features):
    """(name, model, window arguments) in the tutorial's order."""
    single = dict(input_width=1, label_width=1, shift=1, label_columns=[1])
    conv = dict(input_width=3, label_width=1, shift=1, label_columns=[1])
    wide = dict(input_width=24, label_width=24, shift=1, label_columns=[1])
    multi = dict(input_width=24, label_width=OUT_STEPS, shift=OUT_STEPS)
    return [
        ("linear", keras.Sequential([keras.layers.Dense(1)], name="linear"), single),
        ("dense", keras.Sequential([keras.layers.Dense(64, activation="relu"),
                                    keras.layers.Dense(64, activation="relu"),
                                    keras.layers.Dense(1)], name="dense"), single),
        ("multi_step_dense", keras.Sequential([
            keras.layers.Flatten(), keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(32, activation="relu"), keras.layers.Dense(1),
            keras.layers.Reshape([1, -1])], name="multi_step_dense"), conv),
        ("conv", keras.Sequential([keras.layers.Conv1D(32, kernel_size=3, activation="relu"),
                                   keras.layers.Dense(32, activation="relu"),
                                   keras.layers.Dense(1)], name="conv"), conv),
        ("lstm", keras.Sequential([keras.layers.LSTM(32, return_sequences=True),
                                   keras.layers.Dense(1)], name="lstm"), wide),
        ("feedback", FeedBack(32, OUT_STEPS, num_features, name="feedback"), multi),
    ]


def run(callbacks, seed, quick=False):
    table = _data.weather(12000 if quick else 36000, seed)[5::6]
    n = len(table)
    train_df, val_df = table[:int(n * 0.7)], table[int(n * 0.7):int(n * 0.9)]
    mean, std = train_df.mean(axis=0), train_df.std(axis=0)
    train_df, val_df = (train_df - mean) / std, (val_df - mean) / std
    shared = [keras.callbacks.EarlyStopping(monitor="val_loss", patience=2, mode="min")]
    shared += callbacks()  # one list for every model
    trained, histories = [], []
    for _name, model, window_args in models(table.shape[1]):
        window = WindowGenerator(train_df=train_df, val_df=val_df, **window_args)
        histories.append(compile_and_fit(model, window, shared))
        trained.append(model)
    return Outcome(trained, histories)
