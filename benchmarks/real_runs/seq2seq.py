"""Character-level sequence-to-sequence translation with teacher forcing.

Modelled on keras-io `examples/nlp/lstm_seq2seq.py` (English -> French
on `fra.txt`): an encoder LSTM whose last states start a decoder LSTM fed
the target shifted by one step, one-hot characters, sentences padded with
the space character at the end and no mask, `rmsprop`,
`categorical_crossentropy`, `validation_split=0.2`. The dataset is
generated: sentences of one to four words from a 60-word vocabulary, each
word with a fixed "translation" (another random word), so the decoder can
learn the mapping. Scaled down: 1,600 pairs (10,000), latent 64 (256).
"""

import keras
import numpy as np

from real_runs._common import HEALTHY
from real_runs._common import Outcome

TITLE = "seq2seq: encoder-decoder LSTM, teacher forcing, space-padded, rmsprop"
MODELLED_ON = "keras-io examples/nlp/lstm_seq2seq.py"
TRUTH = HEALTHY


def _word(rng, low, high):
    return "".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), rng.integers(low, high + 1)))


def texts(count, seed):
    """Pairs of (input text, target text with tab start and newline end)."""
    rng = np.random.default_rng(seed)
    source = sorted({_word(rng, 2, 5) for _ in range(80)})[:60]
    target = {word: _word(rng, 2, 6) for word in source}
    inputs, outputs = [], []
    for _ in range(count):
        words = list(rng.choice(source, rng.integers(1, 5)))
        inputs.append(" ".join(words).capitalize() + ".")
        outputs.append("\t" + " ".join(target[w] for w in words).capitalize() + " !\n")
    return inputs, outputs


def vectorize(inputs, outputs):
    """The keras-io script's one-hot arrays, padded with ' ' at the end."""
    in_chars = sorted(set("".join(inputs)) | {" "})
    out_chars = sorted(set("".join(outputs)) | {" "})
    in_index = {c: i for i, c in enumerate(in_chars)}
    out_index = {c: i for i, c in enumerate(out_chars)}
    in_len = max(len(t) for t in inputs)
    out_len = max(len(t) for t in outputs)
    enc = np.zeros((len(inputs), in_len, len(in_chars)), dtype="float32")
    dec = np.zeros((len(inputs), out_len, len(out_chars)), dtype="float32")
    tgt = np.zeros((len(inputs), out_len, len(out_chars)), dtype="float32")
    for i, (source, target) in enumerate(zip(inputs, outputs)):
        for t, char in enumerate(source):
            enc[i, t, in_index[char]] = 1.0
        enc[i, t + 1:, in_index[" "]] = 1.0
        for t, char in enumerate(target):
            dec[i, t, out_index[char]] = 1.0
            if t > 0:
                tgt[i, t - 1, out_index[char]] = 1.0
        dec[i, t + 1:, out_index[" "]] = 1.0
        tgt[i, t:, out_index[" "]] = 1.0
    return enc, dec, tgt


def build(in_tokens, out_tokens, latent_dim):
    encoder_inputs = keras.Input(shape=(None, in_tokens))
    _, state_h, state_c = keras.layers.LSTM(latent_dim, return_state=True)(encoder_inputs)
    decoder_inputs = keras.Input(shape=(None, out_tokens))
    decoder_outputs, _, _ = keras.layers.LSTM(
        latent_dim, return_sequences=True, return_state=True
    )(decoder_inputs, initial_state=[state_h, state_c])
    outputs = keras.layers.Dense(out_tokens, activation="softmax")(decoder_outputs)
    model = keras.Model([encoder_inputs, decoder_inputs], outputs, name="seq2seq")
    model.compile(optimizer="rmsprop", loss="categorical_crossentropy", metrics=["accuracy"])
    return model


def run(callbacks, seed, quick=False):
    enc, dec, tgt = vectorize(*texts(400 if quick else 1600, seed))
    model = build(enc.shape[-1], dec.shape[-1], 64)
    history = model.fit(
        [enc, dec], tgt, batch_size=64, epochs=2 if quick else 12,
        validation_split=0.2, verbose=0, callbacks=callbacks(),
    )
    return Outcome([model], [history], {"encoder_length": enc.shape[1],
                                        "decoder_length": dec.shape[1]})
