"""A character-level LSTM language model on streams, with truncated BPTT.

The text is the docstrings of Python's own standard library (read from the
source files with `ast`, never imported; the files are taken in sorted
order, so a given Python version always gives the same text): about
500,000 characters of English prose with some code, present on any Python
install, no download. The last 10 % is held out for validation.

`make_streams` cuts the text into 32 parallel streams of consecutive
characters; batch j holds chunk j of every stream, so row i of a batch
continues row i of the batch before. A stateful LSTM(128) predicts the next
character; `TruncatedBPTT(window=20, reset="epoch")` carries the state
through the whole text and makes one update per 20 characters. `GradWatch`
measures how far back the gradient of one character's loss reaches
(`loss_steps="last"`) and suggests a window. Each epoch prints bits per
character (loss / ln 2) on the training and the held-out text; at the end
the model, rebuilt for one stream with `with_batch_size`, writes a sample.

Run (about 2 minutes on 2 CPU cores; see docs/language_models.md):

    python examples/char_rnn.py
    python examples/char_rnn.py --quick
    python examples/char_rnn.py --window 40 --epochs 3 --out runs/char_rnn_w40

Writes `runs/char_rnn/`.
"""

import argparse
import ast
import collections
import math
import os
import pathlib
import sys
import sysconfig
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_gradwatch import GradientWarning  # noqa: E402
from keras_gradwatch import GradWatch  # noqa: E402
from keras_gradwatch import Measuring  # noqa: E402
from keras_gradwatch import TruncatedBPTT  # noqa: E402
from keras_gradwatch import layers  # noqa: E402
from keras_gradwatch.inference import with_batch_size  # noqa: E402
from keras_gradwatch.streams import make_streams  # noqa: E402

UNITS = 128
# Folders of the standard library that hold tests, demos or vendored code.
SKIPPED_FOLDERS = {
    "__pycache__", "ensurepip", "idle_test", "lib2to3", "site-packages",
    "test", "tests", "turtledemo",
}
# Characters seen fewer times than this in the training text share one id.
MIN_COUNT = 5
RARE = 0  # the id of the rare characters (never sampled)


def stdlib_files():
    """The standard library's `.py` files, in a fixed order.

    The public top-level modules first (`abc.py`, `argparse.py`, ...), then
    the packages' modules, each group sorted by path.
    """
    root = pathlib.Path(sysconfig.get_paths()["stdlib"])
    top = sorted(p for p in root.glob("*.py") if not p.name.startswith("_"))
    nested = sorted(
        p
        for p in root.glob("*/**/*.py")
        if not set(p.relative_to(root).parts[:-1]) & SKIPPED_FOLDERS
        and not p.relative_to(root).parts[0].startswith("config-")
    )
    return top + nested


def docstrings(tree):
    """A module's docstrings in source order: module, classes, functions."""
    kinds = (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    pending = [tree]
    while pending:
        node = pending.pop(0)
        text = ast.get_docstring(node)
        if text:
            yield text
        pending[:0] = [n for n in ast.iter_child_nodes(node) if isinstance(n, kinds)]


def stdlib_text(chars):
    """About `chars` characters of standard-library docstrings.

    The files are parsed, not imported (no side effects); files that do not
    parse are skipped. The result is cut to exactly `chars` characters when
    the library holds that many.
    """
    parts, total = [], 0
    for path in stdlib_files():
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for text in docstrings(tree):
            parts.append(text)
            total += len(text) + 2
        if total >= chars:
            break
    return "\n\n".join(parts)[:chars]


class Vocabulary:
    """Characters seen at least `MIN_COUNT` times; all others share id 0."""

    def __init__(self, text):
        counts = collections.Counter(text)
        self.chars = ["\N{REPLACEMENT CHARACTER}"] + sorted(
            c for c, n in counts.items() if n >= MIN_COUNT
        )
        self.ids = {c: i for i, c in enumerate(self.chars)}
        self.rare = sorted(c for c, n in counts.items() if n < MIN_COUNT)

    def __len__(self):
        return len(self.chars)

    def encode(self, text):
        return np.fromiter((self.ids.get(c, RARE) for c in text), "int32", len(text))

    def decode(self, ids):
        return "".join(self.chars[int(i)] for i in ids)


class BitsPerChar(keras.callbacks.Callback):
    """Prints (and keeps) bits per character at each epoch end: loss / ln 2."""

    def __init__(self):
        super().__init__()
        self.train, self.val, self.seconds = [], [], []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self.seconds.append(time.perf_counter() - self._start)
        self.train.append(logs["loss"] / math.log(2))
        self.val.append(logs.get("val_loss", math.nan) / math.log(2))
        print(
            f"epoch {epoch + 1}: {self.train[-1]:.3f} bits/char on the training "
            f"text, {self.val[-1]:.3f} held out ({self.seconds[-1]:.0f} s)",
            flush=True,
        )


def build_model(vocab_size, streams, window):
    """Embedding, stateful LSTM and logits, wrapped in `TruncatedBPTT`."""
    inner = keras.Sequential(
        [
            keras.Input(batch_shape=(streams, None), dtype="int32"),
            keras.layers.Embedding(vocab_size, 32),
            layers.LSTM(UNITS, stateful=True, return_sequences=True, name="lstm"),
            keras.layers.Dense(vocab_size),
        ],
        name="char_lstm",
    )
    model = TruncatedBPTT(inner, window=window, reset="epoch")
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def generate(model, vocab, prime, length, temperature=0.8, seed=0):
    """Samples `length` characters after `prime`, one step per call.

    The trained model takes batches of `streams` rows; `with_batch_size`
    rebuilds it for one row with the same weights. Its stateful LSTM carries
    the state from call to call: the prime is read in one call, then each
    sampled character is fed back alone.
    """
    single = with_batch_size(model, 1)
    rng = np.random.default_rng(seed)
    logits = single(vocab.encode(prime)[None], training=False)[0, -1]
    ids = []
    for _ in range(length):
        scaled = np.asarray(logits, "float64") / temperature
        scaled[RARE] = -np.inf  # never write the placeholder character
        probs = np.exp(scaled - scaled.max())
        token = int(rng.choice(len(probs), p=probs / probs.sum()))
        ids.append(token)
        logits = single(np.array([[token]], "int32"), training=False)[0, -1]
    return vocab.decode(ids)


def window_arg(value):
    """`--window`: a positive int, or "auto" (passed on to TruncatedBPTT)."""
    if value == "auto":
        return value
    try:
        steps = int(value)
    except ValueError:
        steps = 0
    if steps < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'auto', got {value!r}")
    return steps


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chars", type=int, default=500_000, help="text size")
    parser.add_argument("--streams", type=int, default=32, help="batch size")
    parser.add_argument("--chunk", type=int, default=200, help="steps per batch")
    parser.add_argument("--window", type=window_arg, default=20,
                        help="steps per update: an int, or 'auto'")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--sample", type=int, default=200, help="characters to generate")
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--prime", default="Return the ")
    parser.add_argument("--out", "--runs", dest="out", default="runs/char_rnn",
                        help="run folder")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.chars, args.streams, args.chunk, args.epochs = 30_000, 8, 100, 2
    keras.utils.set_random_seed(0)

    text = stdlib_text(args.chars)
    split = int(len(text) * 0.9)
    vocab = Vocabulary(text[:split])
    x, y = make_streams(vocab.encode(text[:split]), args.streams, chunk=args.chunk)
    x_val, y_val = make_streams(vocab.encode(text[split:]), args.streams, chunk=args.chunk)
    print(
        f"{len(text):,} characters of standard-library docstrings (Python "
        f"{sys.version_info.major}.{sys.version_info.minor}), {len(vocab)} "
        f"symbols ({len(vocab.rare)} rare characters share one); "
        f"{args.streams} streams, {len(x) // args.streams} batches of "
        f"{args.chunk}-character chunks per epoch, {len(x_val) // args.streams} "
        f"held out; TruncatedBPTT(window={args.window!r}, reset='epoch'). "
        f"Uniform guess: {math.log2(len(vocab)):.2f} bits/char.",
        flush=True,
    )

    model = build_model(len(vocab), args.streams, args.window)
    run_dir = pathlib.Path(args.out)
    # The loss is per character; the profile of the last character's loss
    # is the one whose x axis is "steps back from a loss" (see the docs page).
    watch = GradWatch(run_dir, measuring=Measuring(loss_steps="last"))
    bits = BitsPerChar()
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GradientWarning)  # listed below
        history = model.fit(x, y, epochs=args.epochs, validation_data=(x_val, y_val),
                            verbose=0, callbacks=[watch, bits])
    seconds = time.perf_counter() - start

    record = watch.last_measurement.layers["lstm"]
    print(
        f"Trained in {seconds:.0f} s. GradWatch on the LSTM, at the last step: "
        f"the gradient of one character's loss falls below 1 % within "
        f"{record.horizon} steps back (fitted decay rate {record.decay_rate:.3f}"
        f"/step over {len(record.profile)} steps); {100 * record.truncation_bias:.2g} % "
        f"of it lies beyond the {model.backprop} steps each update reaches; "
        f"suggested window {record.suggested_window}."
    )
    for alert in watch.alerts:
        print(f"GradWatch alert at step {alert.step}: {alert.message}")
    if not watch.alerts:
        print("GradWatch alerts: none.")

    sample = generate(model.model, vocab, args.prime, args.sample, args.temperature)
    print(f"Sample (temperature {args.temperature}):\n{args.prime}{sample}")
    print(f"Run folder: {run_dir} (report: {run_dir / 'report.html'})")
    return {
        "history": history,
        "train_bits": bits.train,
        "val_bits": bits.val,
        "epoch_seconds": bits.seconds,
        "vocab_size": len(vocab),
        "record": record,
        "alerts": watch.alerts,
        "sample": sample,
        "run_dir": run_dir,
    }


if __name__ == "__main__":
    main()
