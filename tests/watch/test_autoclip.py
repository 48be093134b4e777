"""Adaptive clipping (`_autoclip`, `GradWatch(clip="auto")`, `exploding="clip"`)."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_gradwatch import Alerting
from keras_gradwatch import AutoClip
from keras_gradwatch import GradWatch
from keras_gradwatch import TruncatedBPTT
from keras_gradwatch.errors import InvalidInputError
from keras_gradwatch.watch import _autoclip


def test_percentile_is_numpy_percentile():
    values = np.random.default_rng(0).lognormal(size=37).astype("float32")
    for q in (1.0, 10.0, 50.0, 100.0):
        assert float(_autoclip.percentile(tf.constant(values), q)) == pytest.approx(
            np.percentile(values, q), rel=1e-6
        )


def data(n=64):
    x = np.random.default_rng(0).normal(size=(n, 12, 2)).astype("float32")
    return x, x.sum(axis=1)[:, :1]


def model(learning_rate=0.01):
    keras.utils.set_random_seed(0)
    made = keras.Sequential([keras.Input((None, 2)), keras.layers.SimpleRNN(8, name="rnn"),
                             keras.layers.Dense(1, name="head")])
    made.compile(optimizer=keras.optimizers.SGD(learning_rate), loss="mse")
    return made


def steps(folder):
    return [json.loads(line) for line in (folder / "steps.jsonl").read_text().splitlines()]


def test_each_update_is_clipped_at_the_percentile_of_the_norms_before_it(tmp_path):
    x, y = data()
    made = model()
    made.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False,
             callbacks=[GradWatch(tmp_path, clip="auto", plots=None)])
    records = steps(tmp_path)
    norms = [r["grad_norm"] for r in records]  # unclipped: logged before the clip
    clipped = 0
    for i, record in enumerate(records):
        if i == 0:
            assert record["clip"] is None  # nothing seen yet: no limit
            continue
        limit = np.percentile(norms[:i], _autoclip.DEFAULT_PERCENTILE)
        assert record["clip"] == pytest.approx(limit, rel=1e-5), i
        clipped += norms[i] > limit
        assert record["clipped_updates"] == clipped
    assert clipped > 0
    # The shadow is gone after fit: a later fit is not clipped.
    assert "apply" not in vars(made.optimizer)


def test_clipping_off_changes_nothing(tmp_path):
    x, y = data()
    plain = model()
    plain.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    # exploding="clip" installs AutoClip switched off: no alert, no change.
    watched = model()
    watched.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False,
                callbacks=[GradWatch(tmp_path, alerting=Alerting(exploding="clip"), plots=None)])
    for a, b in zip(plain.get_weights(), watched.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert all(r["clip"] is None and r["clipped_updates"] == 0 for r in steps(tmp_path))


def test_an_exploding_alert_with_the_clip_action_starts_clipping(tmp_path):
    x, y = data()
    made = model(learning_rate=0.5)  # blows up within a few steps
    watch = GradWatch(tmp_path, alerting=Alerting(exploding="clip", nonfinite="warn"), plots=None)
    with pytest.warns(Warning):
        made.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[watch])
    first = next(a for a in watch.alerts if a.kind == "exploding")
    records = steps(tmp_path)
    before = [r for r in records if r["step"] <= first.step]
    after = [r for r in records if r["step"] > first.step]
    assert all(r["clip"] is None for r in before)
    assert after and all(r["clip"] is not None for r in after)


def test_truncated_bptt_updates_are_clipped_one_by_one(tmp_path):
    keras.utils.set_random_seed(0)
    inner = keras.Sequential([keras.Input(batch_shape=(8, None, 2)),
                              keras.layers.LSTM(4, stateful=True, return_sequences=True),
                              keras.layers.Dense(1)])
    wrapped = TruncatedBPTT(inner, window=4)
    wrapped.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    x = np.random.default_rng(0).normal(size=(16, 12, 2)).astype("float32")
    wrapped.fit(x, np.cumsum(x[..., :1], axis=1), epochs=2, verbose=0,
                callbacks=[GradWatch(tmp_path, clip=AutoClip(percentile=10), plots=None)])
    records = steps(tmp_path)
    # 3 windows per batch: the norm history grows by 3 per step, and (at a
    # low percentile) more updates than steps can be clipped.
    assert records[-1]["clipped_updates"] > len(records)


def test_bad_clip_arguments_are_clear_errors(tmp_path):
    with pytest.raises(InvalidInputError, match="clip='auto'"):
        GradWatch(tmp_path, clip="yes")
    with pytest.raises(InvalidInputError, match=r"Received: percentile=0\. Pass a percentile"):
        GradWatch(tmp_path, clip=AutoClip(percentile=0))
    with pytest.raises(InvalidInputError, match="'clip'"):
        GradWatch(tmp_path, alerting=Alerting(vanishing="clip"))


def test_fit_in_a_loop_with_a_new_callback_keeps_the_norm_history(tmp_path):
    x, y = data()
    made = model()
    for _ in range(2):
        made.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False,
                 callbacks=[GradWatch(tmp_path / "run", clip="auto", plots=None)])
    records = steps(tmp_path / "run")
    assert [r["step"] for r in records] == list(range(1, 17))
    # The second fit's first update is clipped at the percentile of the
    # first fit's 8 norms, as in one long fit.
    assert records[8]["clip"] == pytest.approx(
        np.percentile([r["grad_norm"] for r in records[:8]], _autoclip.DEFAULT_PERCENTILE),
        rel=1e-5,
    )


def test_a_new_callback_on_a_continued_folder_clips_as_one_long_fit(tmp_path):
    x, y = data()
    long = model()
    long.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False,
             callbacks=[GradWatch(tmp_path / "long", clip="auto", plots=None)])
    looped = model()
    for _ in range(2):
        looped.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False,
                   callbacks=[GradWatch(tmp_path / "looped", clip="auto", plots=None)])
    one, two = steps(tmp_path / "long"), steps(tmp_path / "looped")
    # The norm history is restored from the folder's records (grad_norm per
    # step), exactly: the same thresholds, counts and weights.
    for key in ("grad_norm", "clip", "clipped_updates"):
        assert [r[key] for r in two] == [r[key] for r in one], key
    for a, b in zip(long.get_weights(), looped.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_a_new_folder_starts_a_new_norm_history(tmp_path):
    x, y = data()
    made = model()
    made.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False,
             callbacks=[GradWatch(tmp_path / "first", clip="auto", plots=None)])
    made.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False,
             callbacks=[GradWatch(tmp_path / "second", clip="auto", plots=None)])
    # Nothing comes from process memory: the new run's first update has no limit.
    records = steps(tmp_path / "second")
    assert records[0]["clip"] is None and records[0]["clipped_updates"] == 0
    assert records[1]["clip"] == pytest.approx(records[0]["grad_norm"], rel=1e-6)


def test_the_history_read_from_records():
    records = [{"step": 1, "grad_norm": 2.0, "clip": None, "clipped_updates": 0},
               {"step": 2, "grad_norm": "NaN", "clip": 2.0, "clipped_updates": 0},
               {"step": 3, "grad_norm": 5.0, "clip": 2.0, "clipped_updates": 1},
               {"step": 4, "loss": 1.0}]
    assert _autoclip.history_from_records(records) == ([2.0, 5.0], 1, True)
    # A TruncatedBPTT step's norm is of several updates: no history from it.
    assert _autoclip.history_from_records(records, one_update_per_step=False) == ([], 1, True)
    many = [{"grad_norm": float(i)} for i in range(_autoclip.HISTORY + 3)]
    norms, clipped, active = _autoclip.history_from_records(many)
    assert norms == [float(i) for i in range(3, _autoclip.HISTORY + 3)]
    assert (clipped, active) == (0, False)
