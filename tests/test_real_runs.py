"""The corpus of real runs (`benchmarks/real_runs/`) judged against its truth.

The slow tests run each script of the corpus plain and with `GradWatch`
(`benchmarks/bench_real_runs.py`, each run in a fresh process) and assert
what the script declares: the same History, step logs and final weights as
the plain run, no false alarm on a healthy run, a blow-up alerted at or
before its first 10x loss step (with advice about the learning rate for
the learning-rate fault), every model measured (or declared unmeasurable
with a reason where the truth allows it). They assert the truth, not what
the package does today. The fast tests check the harness itself.
"""

import importlib.util
import math
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"


def _harness():
    spec = importlib.util.spec_from_file_location("bench_real_runs", BENCH / "bench_real_runs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _scripts():
    sys.path.insert(0, str(BENCH))
    try:
        from real_runs import SCRIPTS
    finally:
        sys.path.remove(str(BENCH))
    return SCRIPTS


def _steps(losses, batches_per_epoch):
    """Step records as Keras logs them: the running mean over the epoch."""
    records, total = [], 0.0
    for i, loss in enumerate(losses):
        batch = i % batches_per_epoch
        total = loss if batch == 0 else total + loss
        records.append({"step": i + 1, "_batch": batch, "loss": total / (batch + 1)})
    return records


def test_first_jump_finds_the_first_tenfold_loss_from_running_means():
    harness = _harness()
    losses = [1.0, 0.9, 0.8, 0.8, 0.7, 5.0, 0.6, 0.6, 9.0, 100.0]
    # 5.0 is 6.25x the median of the steps before it (0.8): no jump; 9.0 is
    # 11.25x theirs (0.8), in the third epoch of 4 steps.
    assert harness.first_jump(_steps(losses, 4)) == (9, pytest.approx(9.0))
    assert harness.first_jump(_steps([0.5, 0.4, 0.4, 0.3, 0.3], 3)) == (None, None)
    step, loss = harness.first_jump(_steps([0.5, 0.4, 0.4, float("nan"), 0.3], 10))
    assert step == 4 and math.isnan(loss)


def test_max_abs_treats_nan_as_equal_only_to_nan():
    harness = _harness()
    nan, inf = float("nan"), float("inf")
    assert harness._max_abs([1.0, nan, inf], [1.0, nan, inf]) == 0.0
    assert harness._max_abs([1.0, 2.0], [1.0, 2.5]) == 0.5
    assert harness._max_abs([1.0, nan], [1.0, 2.0]) == inf
    assert harness._max_abs(3.0, 3.0) == 0.0
    assert harness._max_abs([1.0], [1.0, 2.0]) is None


def test_first_advice_must_come_before_any_clipping_advice():
    harness = _harness()
    words = ("learning rate", "learning_rate")
    lower_first = {"message": "Loss jumped. Lower the learning rate (e.g. 10x); clipping "
                              "will not bound an Adam step."}
    clip_first = {"message": "Norm jumped. Clip gradients: global_clipnorm=0.9, or lower "
                             "the learning rate."}
    assert harness._first_advice_ok(lower_first, words)
    assert not harness._first_advice_ok(clip_first, words)
    assert not harness._first_advice_ok({"message": "Clip gradients."}, words)


def test_judge_alerts_flags_false_alarms_and_late_detection():
    harness = _harness()

    class Run:
        def __init__(self, alerts):
            self.alerts = alerts
            counts = {}
            for alert in alerts:
                counts[alert["kind"]] = counts.get(alert["kind"], 0) + 1
            self.summary = {"alerts": counts}

    healthy = dict(verdict="healthy", detect=(), forbid=("exploding", "vanishing"),
                   by_loss_jump=False, advice=None)
    runs = [(None, Run([{"kind": "exploding", "step": 40, "message": "grows"}]))]
    verdict = harness.judge_alerts(healthy, runs, {"steps": []})
    assert verdict["counts"] == {"exploding": 1}
    assert verdict["problems"][0].startswith("FALSE ALARM exploding x1")
    blowup = dict(verdict="blow-up", detect=("exploding",), forbid=(), by_loss_jump=True,
                  advice=None)
    plain = {"steps": _steps([1.0, 0.9, 0.9, 0.8, 20.0, 30.0], 10)}  # jump at step 5
    late = [(None, Run([{"kind": "exploding", "step": 6, "message": "x"}]))]
    assert harness.judge_alerts(blowup, late, plain)["problems"][0].startswith("LATE")
    on_time = [(None, Run([{"kind": "exploding", "step": 5, "message": "x"}]))]
    assert harness.judge_alerts(blowup, on_time, plain)["problems"] == []
    assert harness.judge_alerts(blowup, [], plain)["problems"][0].startswith("MISSED")


def test_one_script_end_to_end_through_the_harness(tmp_path):
    """A small CNN run plain and watched: bit-identical, measured, no alert."""
    harness = _harness()
    rows = harness.run_corpus(["mnist_cnn"], seed=3, quick=True, keep=tmp_path,
                              echo=lambda *a, **k: None, parallel=True)
    (row,) = rows
    assert row["truth"]["verdict"] == "healthy"
    assert row["identity"]["weights"] == 0.0 and row["identity"]["history"] == 0.0
    assert row["identity"]["steps"] == 0.0
    assert "grad_norm" in row["identity"]["extra_keys"]
    assert row["measured"]["per_model"]["mnist_cnn"]["measurements"] >= 2
    assert row["alerts"]["counts"] == {}
    assert 0 < row["overhead"]["gw_cpu"] < row["overhead"]["fit_cpu"]
    assert row["ok"], row["problems"]


# The loss of relu_rnn_blowup's step 24 is 24x its median and comes back
# at step 25 (3.6); the blow-up (620, then 1.8e20 and NaN) is alerted at
# step 26. The harness's truth asks for an alert at the first 10x step;
# the loss rule waits for what follows a jump, by design since issue 18
# (docs/benchmarks.md, "relu_rnn_blowup"). Strict: a change either way shows.
_DISAGREE = {
    "relu_rnn_blowup": "truth: alert at the first 10x-loss step (24); the loss rule "
                       "waits for what follows a jump (alerted at 26), by design",
}


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    [pytest.param(name, marks=pytest.mark.xfail(reason=_DISAGREE[name], strict=True))
     if name in _DISAGREE else name for name in _scripts()],
)
def test_real_run_matches_its_truth(name, tmp_path):
    harness = _harness()
    (row,) = harness.run_corpus([name], seed=1, quick=False, keep=tmp_path,
                                echo=lambda *a, **k: None)
    assert row["ok"], f"{name}: " + "; ".join(row["problems"])
