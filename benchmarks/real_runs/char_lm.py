"""Character-level language model: next character from the 40 before.

Modelled on keras-io `examples/generative/lstm_character_level_text_generation.py`
(Nietzsche's text, lowercased; 40-character sequences every 3 characters,
one-hot `bool` arrays, LSTM(128) + `Dense(vocabulary, "softmax")`,
RMSprop(0.01), `categorical_crossentropy`, batch 128) and its loop of
`model.fit(x, y, batch_size=128, epochs=1)`, one call per epoch with text
sampled in between; the callback list is written into each call, so each
epoch gets a new `GradWatch` on the same folder. The text is generated
from a small English-like grammar (`_data.english_text`): 45,000
characters (600,893).
"""

import keras
import numpy as np

from real_runs import _data
from real_runs._common import HEALTHY
from real_runs._common import Outcome

TITLE = "char LM: LSTM(128), next-char softmax, RMSprop(0.01), fit(epochs=1) in a loop"
MODELLED_ON = "keras-io examples/generative/lstm_character_level_text_generation.py"
TRUTH = HEALTHY

MAXLEN = 40
STEP = 3


def vectorize(text):
    chars = sorted(set(text))
    index = {c: i for i, c in enumerate(chars)}
    starts = range(0, len(text) - MAXLEN, STEP)
    x = np.zeros((len(starts), MAXLEN, len(chars)), dtype=bool)
    y = np.zeros((len(starts), len(chars)), dtype=bool)
    for i, start in enumerate(starts):
        for t, char in enumerate(text[start:start + MAXLEN]):
            x[i, t, index[char]] = True
        y[i, index[text[start + MAXLEN]]] = True
    return x, y, chars


def build(vocabulary):
    model = keras.Sequential(
        [keras.Input(shape=(MAXLEN, vocabulary)), keras.layers.LSTM(128),
         keras.layers.Dense(vocabulary, activation="softmax")],
        name="char_lm",
    )
    model.compile(loss="categorical_crossentropy",
                  optimizer=keras.optimizers.RMSprop(learning_rate=0.01))
    return model


def sample(preds, rng, temperature=1.0):
    preds = np.log(np.asarray(preds).astype("float64") + 1e-12) / temperature
    preds = np.exp(preds) / np.sum(np.exp(preds))
    return int(np.argmax(rng.multinomial(1, preds, 1)))


def run(callbacks, seed, quick=False):
    text = _data.english_text(8000 if quick else 45000, seed)
    x, y, chars = vectorize(text)
    model = build(len(chars))
    rng = np.random.default_rng(seed)
    histories, generated = [], ""
    for _ in range(1 if quick else 4):
        histories.append(model.fit(x, y, batch_size=128, epochs=1, verbose=0,
                                   callbacks=callbacks()))
        # The script generates text between epochs (predict, no training).
        sentence = text[:MAXLEN]
        generated = ""
        for _ in range(20):
            x_pred = np.zeros((1, MAXLEN, len(chars)))
            for t, char in enumerate(sentence):
                x_pred[0, t, chars.index(char)] = 1.0
            next_char = chars[sample(model.predict(x_pred, verbose=0)[0], rng, 0.5)]
            sentence = sentence[1:] + next_char
            generated += next_char
    return Outcome([model], histories, {"sample": generated, "vocabulary": len(chars)})
