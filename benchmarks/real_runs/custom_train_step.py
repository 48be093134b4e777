"""A subclassed model whose own `train_step`, decorated `@tf.function`,
applies its gradients itself; trained by `fit(dataset, epochs=1)` in a loop.

Modelled on the Keras guide "Customizing what happens in `fit()` with
TensorFlow" (`guides/custom_train_step_in_tensorflow.py` in keras-io: a
`keras.Model` subclass built from functional inputs and outputs, whose
`train_step` runs a `tf.GradientTape`, calls `compute_loss`, applies the
gradients and updates `self.metrics`), written as many users write it:
decorated with `@tf.function` and applying the gradients with
`self.optimizer.apply_gradients(zip(...))`; SGD with momentum; a
`tf.data` pipeline; one callback list reused by every `fit(epochs=1)` of a
loop that evaluates between epochs. The data stand in for a human-activity
recognition set (UCI HAR: windows of 128 accelerometer readings, 3 axes,
6 activities): each activity has its own rhythm (frequency), intensity and
posture (gravity axis), with noise and random phase; 3,000 windows.
"""

import keras
import numpy as np
import tensorflow as tf

from real_runs._common import Outcome
from real_runs._common import Truth

TITLE = "custom @tf.function train_step applying its own gradients, SGD, fit(epochs=1) loop"
MODELLED_ON = "keras-io guides/custom_train_step_in_tensorflow.py"
TRUTH = Truth("healthy", note="GradWatch cannot add grad_norm to this step: it must say so, "
                              "not crash")

ACTIVITIES = 6
LENGTH = 128


def windows(count, seed):
    """Accelerometer-like windows `(count, 128, 3)` and activity ids `(count,)`."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, ACTIVITIES, count)
    frequency = np.array([0.0, 0.02, 0.06, 0.09, 0.12, 0.16])  # cycles per reading
    intensity = np.array([0.05, 0.3, 1.0, 1.2, 0.8, 1.6])
    gravity_axis = np.array([2, 0, 1, 1, 1, 1])
    t = np.arange(LENGTH)
    x = rng.normal(0, 0.25, (count, LENGTH, 3))
    for i, label in enumerate(labels):
        phase = rng.uniform(0, 2 * np.pi, 3)
        for axis in range(3):
            x[i, :, axis] += intensity[label] * np.sin(
                2 * np.pi * frequency[label] * t * rng.uniform(0.9, 1.1) + phase[axis])
        x[i, :, gravity_axis[label]] += 1.0
    return x.astype("float32"), labels


class CustomModel(keras.Model):
    @tf.function
    def train_step(self, data):
        x, y = data
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self.compute_loss(y=y, y_pred=y_pred)
        trainable_vars = self.trainable_variables
        gradients = tape.gradient(loss, trainable_vars)
        self.optimizer.apply_gradients(zip(gradients, trainable_vars))
        for metric in self.metrics:
            if metric.name == "loss":
                metric.update_state(loss)
            else:
                metric.update_state(y, y_pred)
        return {m.name: m.result() for m in self.metrics}


def build():
    inputs = keras.Input(shape=(LENGTH, 3))
    x = keras.layers.GRU(32)(inputs)
    outputs = keras.layers.Dense(ACTIVITIES, activation="softmax")(x)
    model = CustomModel(inputs, outputs, name="har_custom_step")
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def run(callbacks, seed, quick=False):
    x, y = windows(600 if quick else 3000, seed)
    split = len(x) * 9 // 10
    train = (tf.data.Dataset.from_tensor_slices((x[:split], y[:split]))
             .shuffle(1024, seed=seed).batch(64).prefetch(tf.data.AUTOTUNE))
    test = tf.data.Dataset.from_tensor_slices((x[split:], y[split:])).batch(64)
    model = build()
    chosen = callbacks()  # one list for every fit
    histories, scores = [], []
    for _ in range(1 if quick else 8):
        histories.append(model.fit(train, epochs=1, verbose=0, callbacks=chosen))
        scores.append(model.evaluate(test, verbose=0, return_dict=True)["accuracy"])
    return Outcome([model], histories, {"test_accuracy": [round(s, 3) for s in scores]})
