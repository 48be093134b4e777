"""OCR with a CTC loss added by a layer: compiled without a loss, dict inputs, no y.

Modelled on keras-io `examples/vision/captcha_ocr.py`: a `tf.data` pipeline
whose `map(encode_single_sample, num_parallel_calls=AUTOTUNE)` turns each
image and label into `{"image": ..., "label": ...}` (no separate `y`); two
Conv2D/MaxPool blocks, Dense, Dropout(0.2), two bidirectional LSTMs with
dropout, a softmax over the characters plus the CTC blank, and an endpoint
`CTCLayer` that adds the CTC loss with `add_loss`; `model.compile(optimizer=Adam())`
with no loss; EarlyStopping on `val_loss` with `restore_best_weights`. Here
the first LSTM also uses `recurrent_dropout`, as many copies of it do, and
Adam a rate of 5e-3 (the plateau ends within the 10 epochs run). The
captchas are generated: 5 digits, each drawn from its stroke skeleton in a
12x15 box with jitter, on a noisy background with a stray line, in 100x25
images (200x50); 800 of them (1,040). The loss sits near 13 (CTC's plateau)
for a few epochs, then falls.
"""

import keras
import numpy as np
import tensorflow as tf
from keras import layers
from keras import ops

from real_runs import _data
from real_runs._common import Outcome
from real_runs._common import Truth

TITLE = "add_loss only (CTC layer), no compiled loss, dict inputs, Dropout, parallel map"
MODELLED_ON = "keras-io examples/vision/captcha_ocr.py"
TRUTH = Truth("healthy", measured="or-declared",
              note="the loss comes only from add_loss: measured on it, or declared unmeasurable")

ALPHABET = "0123456789"
IMG_WIDTH, IMG_HEIGHT, MAX_LENGTH = 100, 25, 5


def captchas(count, seed):
    """uint8 images `(count, 25, 100)` and label ids `(count, 5)` (1..10)."""
    glyphs = [_data.digit_glyph(int(c), 15, 12) for c in ALPHABET]
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(ALPHABET), (count, MAX_LENGTH))
    images = rng.uniform(0, 0.15, (count, IMG_HEIGHT, IMG_WIDTH))
    for i in range(count):
        x = int(rng.integers(2, 8))
        for char in labels[i]:
            y = int(rng.integers(4, 7))
            images[i, y:y + 15, x:x + 12] = np.maximum(
                images[i, y:y + 15, x:x + 12], glyphs[char] * rng.uniform(0.6, 1.0))
            x += 12 + int(rng.integers(3, 7))
        row = int(rng.integers(0, IMG_HEIGHT))
        images[i, row, :] = np.maximum(images[i, row, :], 0.5)  # a stray line
    return (np.clip(images, 0, 1) * 255).astype("uint8"), labels + 1


def encode_single_sample(img, label):
    img = tf.image.convert_image_dtype(img[..., None], tf.float32)
    img = ops.transpose(img, axes=[1, 0, 2])  # time runs along the width
    return {"image": img, "label": tf.cast(label, "float32")}


class CTCLayer(layers.Layer):
    def call(self, y_true, y_pred):
        batch = ops.shape(y_true)[0]
        label_length = ops.full((batch,), ops.shape(y_true)[1], dtype="int32")
        logit_length = ops.full((batch,), ops.shape(y_pred)[1], dtype="int32")
        loss = tf.nn.ctc_loss(
            labels=ops.cast(y_true, "int32"), logits=ops.log(y_pred + keras.backend.epsilon()),
            label_length=label_length, logit_length=logit_length, logits_time_major=False,
            blank_index=-1,
        )
        self.add_loss(ops.mean(loss))
        return y_pred


def build():
    input_img = layers.Input(shape=(IMG_WIDTH, IMG_HEIGHT, 1), name="image", dtype="float32")
    labels = layers.Input(name="label", shape=(None,), dtype="float32")
    x = layers.Conv2D(32, (3, 3), activation="relu", kernel_initializer="he_normal",
                      padding="same", name="Conv1")(input_img)
    x = layers.MaxPooling2D((2, 2), name="pool1")(x)
    x = layers.Conv2D(64, (3, 3), activation="relu", kernel_initializer="he_normal",
                      padding="same", name="Conv2")(x)
    x = layers.MaxPooling2D((2, 2), name="pool2")(x)
    x = layers.Reshape(target_shape=(IMG_WIDTH // 4, (IMG_HEIGHT // 4) * 64), name="reshape")(x)
    x = layers.Dense(64, activation="relu", name="dense1")(x)
    x = layers.Dropout(0.2)(x)
    x = layers.Bidirectional(layers.LSTM(48, return_sequences=True, dropout=0.25,
                                         recurrent_dropout=0.1))(x)
    x = layers.Bidirectional(layers.LSTM(24, return_sequences=True, dropout=0.25))(x)
    x = layers.Dense(len(ALPHABET) + 2, activation="softmax", name="dense2")(x)
    output = CTCLayer(name="ctc_loss")(labels, x)
    model = keras.Model(inputs=[input_img, labels], outputs=output, name="ocr_model_v1")
    model.compile(optimizer=keras.optimizers.Adam(5e-3))
    return model


def run(callbacks, seed, quick=False):
    images, labels = captchas(300 if quick else 800, seed)
    split = int(len(images) * 0.9)
    def pipeline(x, y):
        return (tf.data.Dataset.from_tensor_slices((x, y))
                .map(encode_single_sample, num_parallel_calls=tf.data.AUTOTUNE)
                .batch(16).prefetch(buffer_size=tf.data.AUTOTUNE))
    train_dataset = pipeline(images[:split], labels[:split])
    validation_dataset = pipeline(images[split:], labels[split:])
    model = build()
    early_stopping = keras.callbacks.EarlyStopping(monitor="val_loss", patience=10,
                                                   restore_best_weights=True)
    history = model.fit(train_dataset, validation_data=validation_dataset,
                        epochs=1 if quick else 10, verbose=0,
                        callbacks=[early_stopping] + callbacks())
    return Outcome([model], [history])
