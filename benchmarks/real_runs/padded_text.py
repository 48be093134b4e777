"""Padded text classification: Embedding + LSTM, padding at the end, no mask.

Modelled on keras-io `examples/nlp/bidirectional_lstm_imdb.py` (IMDB
reviews as word ids, `pad_sequences`, Embedding(20000, 128), LSTMs,
`Dense(1, "sigmoid")`, Adam, `binary_crossentropy`, labels of shape `(N,)`,
`validation_data`), as many people write it: one LSTM, the reviews padded
with 0 at the end (`padding="post"`) and no `mask_zero`. The reviews are
generated: 12 to 44 word ids from a 2,000-word vocabulary, one of 20
sentiment words (10 positive, 10 negative) among the first five, the
rest neutral. The LSTM must carry that word through the rest of the review
and the padding: the loss sits at 0.693 for a couple of epochs, then falls
(the plateau exit: gradient norms rise while the loss drops).
"""

import keras
import numpy as np

from real_runs._common import Outcome
from real_runs._common import Truth

TITLE = "padded text: Embedding+LSTM, post-padding, no mask, y (N,), sigmoid; plateau exit"
MODELLED_ON = "keras-io examples/nlp/bidirectional_lstm_imdb.py"
TRUTH = Truth("healthy", note="loss at 0.693 for ~2 epochs, then falls (plateau exit)")

MAX_FEATURES = 2000
MAXLEN = 60


def reviews(count, seed):
    """Word-id lists and binary labels `(count,)`."""
    rng = np.random.default_rng(seed)
    positive, negative = np.arange(2, 12), np.arange(12, 22)
    labels = rng.integers(0, 2, count)
    texts = []
    for label in labels:
        words = rng.integers(22, MAX_FEATURES, rng.integers(12, 45))
        words[rng.integers(0, 5)] = rng.choice(positive if label else negative)
        texts.append(words.tolist())
    return texts, labels


def build():
    inputs = keras.Input(shape=(None,), dtype="int32")
    x = keras.layers.Embedding(MAX_FEATURES, 64)(inputs)
    x = keras.layers.LSTM(32)(x)
    outputs = keras.layers.Dense(1, activation="sigmoid")(x)
    model = keras.Model(inputs, outputs, name="padded_text")
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    return model


def run(callbacks, seed, quick=False):
    texts, labels = reviews(600 if quick else 2500, seed)
    x = keras.utils.pad_sequences(texts, maxlen=MAXLEN, padding="post")
    y = labels.astype("float32")  # shape (N,): Keras matches it to the (N, 1) output
    split = len(x) * 8 // 10
    model = build()
    history = model.fit(x[:split], y[:split], batch_size=32, epochs=2 if quick else 10,
                        validation_data=(x[split:], y[split:]), verbose=0,
                        callbacks=callbacks())
    return Outcome([model], [history], {"median_length": int(np.median([len(t) for t in texts])),
                                        "padded_length": MAXLEN})
