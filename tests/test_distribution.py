"""tf.distribute, mixed precision and very long streams."""

import json
import math
import os
import pathlib
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest

from keras_gradwatch import Alerting
from keras_gradwatch import GradWatch
from keras_gradwatch import TruncatedBPTT
from keras_gradwatch import layers
from keras_gradwatch import records

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _subprocess_json(*command):
    done = subprocess.run(
        [sys.executable, *command],
        capture_output=True,
        text=True,
        timeout=600,
        # This checkout's package, not an installed one.
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def distributed():
    return _subprocess_json(str(ROOT / "tests" / "distributed_check.py"))


@pytest.fixture(scope="module")
def distributed_extra():
    """Alerts, one-worker MultiWorkerMirroredStrategy and AutoClip under
    replicas: six more trainings, for the slow tests."""
    return _subprocess_json(str(ROOT / "tests" / "distributed_check.py"), "--extra")


def test_mirrored_truncated_bptt_matches_single_device(distributed):
    assert distributed["replicas"] == 2
    result = distributed["tbptt"]
    assert result["weights"] <= 1e-5
    assert result["loss"] <= 1e-5
    # grad_norm is the norm of the all-reduced gradient: one replica's
    # would differ from the single-device norm by far more than this.
    assert result["grad_norm"] <= 1e-5 and result["step_grad_norm"] <= 1e-5
    # The replicas' threads interleave; the layer's own setting survives.
    assert result["layer_unroll"] == [True, True]


def test_mirrored_probes_match_single_device(distributed):
    for case in ("tbptt", "plain"):
        result = distributed[case]
        assert result["measurements"][0] == result["measurements"][1] > 0
        assert result["profiles"] <= 1e-5 and result["global_norm"] <= 1e-5
        assert result["weights"] <= 1e-5
    # The every-step norm GradWatch adds to a plain model's step is that of
    # the all-reduced gradient too.
    assert distributed["plain"]["step_grad_norm"] <= 1e-5


@pytest.mark.slow
def test_mirrored_alerts_match_single_device(distributed_extra):
    alerts = distributed_extra["alerts"]
    assert alerts["single"] == alerts["mirrored"]
    assert alerts["single"][0][:2] == ["nonfinite", "loss"]
    assert distributed_extra["skipped"][0] == distributed_extra["skipped"][1] > 0


@pytest.mark.slow
def test_autoclip_under_replicas_clips_as_one_device(distributed_extra):
    for case in ("tbptt", "plain"):
        result = distributed_extra["autoclip"][case]
        assert result["weights"] <= 1e-5
        (limit1, clipped1), (limit2, clipped2) = result["clip"]
        # The threshold is a percentile of the all-reduced norms: one
        # replica's own norms would give another.
        assert limit2 == pytest.approx(limit1, rel=1e-5) and clipped1 == clipped2 > 0


def test_a_global_batch_shape_under_replicas_is_refused(distributed):
    message = distributed["global_batch_shape"]
    assert message is not None and "batch_size=8" in message
    assert "batch_shape=(4, ...)" in message and "2 replicas" in message


@pytest.mark.slow
def test_multi_worker_strategy_single_worker_runs(distributed_extra):
    result = distributed_extra["multi_worker"]
    assert result["replicas"] >= 1 and result["finite"] and result["measurements"] > 0


# Mixed precision -----------------------------------------------------------------


@pytest.fixture
def policy():
    yield keras.mixed_precision.set_global_policy
    keras.mixed_precision.set_global_policy("float32")


def _stream_model(optimizer, batch=8):
    keras.utils.set_random_seed(0)
    inner = keras.Sequential(
        [
            keras.Input(batch_shape=(batch, None, 2)),
            layers.LSTM(8, stateful=True, return_sequences=True, name="lstm"),
            keras.layers.Dense(1, dtype="float32", name="head"),
        ]
    )
    model = TruncatedBPTT(inner, window=10)
    model.compile(optimizer=optimizer, loss="mse")
    return model


def _train(model, folder, epochs=3):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 40, 2)).astype("float32")
    y = np.cumsum(x[..., :1], axis=1) / 4
    watch = GradWatch(folder, every=1, plots=None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = model.fit(x, y, epochs=epochs, verbose=0, shuffle=False, callbacks=[watch])
    return history.history, records.load_run(folder), watch, caught


def test_mixed_precision_norms_and_profiles_are_unscaled(tmp_path, policy):
    policy("float32")
    full = _train(_stream_model(keras.optimizers.SGD(0.05)), tmp_path / "f32")
    policy("mixed_float16")
    half = _train(_stream_model(keras.optimizers.SGD(0.05)), tmp_path / "f16")
    assert isinstance(half[2].model.optimizer, keras.optimizers.LossScaleOptimizer)
    steps32 = [records.number(s["grad_norm"]) for s in full[1].steps]
    steps16 = [records.number(s["grad_norm"]) for s in half[1].steps]
    np.testing.assert_allclose(steps16, steps32, rtol=1e-2)
    np.testing.assert_allclose(half[0]["loss"], full[0]["loss"], rtol=1e-2)
    for m32, m16 in zip(full[1].measurements, half[1].measurements):
        p32 = full[1].profiles(m32)["lstm"]
        p16 = half[1].profiles(m16)["lstm"]
        large = p32 > 1e-4 * p32.max()  # float16 resolves the rest poorly
        np.testing.assert_allclose(p16[large], p32[large], rtol=2e-2)
        assert m16["global_norm"] == pytest.approx(m32["global_norm"], rel=1e-2)
    assert half[2].alerts == [] and full[2].alerts == []


def test_loss_scale_overflows_are_counted_not_alerted(tmp_path, policy):
    policy("mixed_float16")
    # A loss scale far too large: float16 gradients overflow until the
    # optimizer has halved it enough, skipping those updates.
    optimizer = keras.optimizers.LossScaleOptimizer(
        keras.optimizers.SGD(0.05), initial_scale=2.0**40
    )
    history, run, watch, caught = _train(_stream_model(optimizer), tmp_path)
    skipped = run.steps[-1]["skipped_updates"]
    assert skipped > 0 and run.summary["skipped_updates"] == skipped
    assert watch.alerts == [], [a.message for a in watch.alerts]
    assert all(math.isfinite(v) for v in history["loss"])
    assert run.summary["status"] == "completed"


def test_loss_scale_skips_of_a_plain_model_are_counted(tmp_path, policy):
    policy("mixed_float16")
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((None, 2)), layers.GRU(8), keras.layers.Dense(1, dtype="float32")]
    )
    model.compile(
        optimizer=keras.optimizers.LossScaleOptimizer(
            keras.optimizers.SGD(0.05), initial_scale=2.0**40
        ),
        loss="mse",
    )
    x = np.random.default_rng(0).normal(size=(64, 20, 2)).astype("float32")
    # This barely trained GRU's gradient does vanish: not what is tested.
    watch = GradWatch(tmp_path, plots=None, alerting=Alerting(vanishing=None))
    model.fit(x, x.sum(axis=1)[:, :1], batch_size=8, epochs=2, verbose=0, callbacks=[watch])
    run = records.load_run(tmp_path)
    skipped = [s["skipped_updates"] for s in run.steps]
    assert skipped[-1] > 0 and skipped == sorted(skipped)
    applied = int(model.optimizer.iterations.numpy())
    assert skipped[-1] + applied == len(run.steps)
    assert watch.alerts == []


# Very long streams -------------------------------------------------------------------


@pytest.mark.slow
def test_long_stream_memory_is_bounded():
    benchmark = ROOT / "benchmarks" / "bench_stream.py"
    short = _subprocess_json(str(benchmark), "--child", "10000")
    long = _subprocess_json(str(benchmark), "--child", "200000")
    assert long["peak_mb"] <= 1.25 * short["peak_mb"]
    # Training went on over the whole stream, and learned.
    assert long["loss"] < short["loss"]
