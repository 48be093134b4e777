"""The alert desk and the actions: from a finding to a recorded alert (no model, no fit)."""

import io
import math
import sys
import warnings

import pytest

from keras_gradwatch import GradientWarning
from keras_gradwatch import InvalidInputError
from keras_gradwatch import alerts
from keras_gradwatch.core._detectors.base import Finding
from keras_gradwatch.watch import _alerting


def desk(diagnose=None, line=None, **actions):
    recorded, stops = [], []
    where = {"step": 7, "epoch": 1}
    made = _alerting.AlertDesk(
        alerts.resolve_actions(actions),
        record=recorded.append,
        stop=lambda: stops.append(True),
        where=lambda: (where["step"], where["epoch"]),
        diagnose=diagnose,
        line=line,
    )
    return made, recorded, stops, where


def test_actions_come_from_the_registry():
    assert alerts.KINDS == ("nonfinite", "exploding", "vanishing", "truncation")
    assert alerts.DEFAULT_ACTIONS == {
        "nonfinite": "stop", "exploding": "warn", "vanishing": "warn", "truncation": "warn"}
    assert alerts.resolve_actions({"exploding": "clip", "truncation": None}) == {
        "nonfinite": "stop", "exploding": "clip", "vanishing": "warn", "truncation": None}
    with pytest.raises(InvalidInputError, match="vanishing='clip'"):
        alerts.resolve_actions({"vanishing": "clip"})
    with pytest.raises(InvalidInputError, match="kind 'typo'.*'truncation'"):
        alerts.resolve_actions({"typo": "warn"})


def test_findings_are_stamped_with_the_current_step_and_carry_advice():
    made, recorded, _, where = desk(exploding=lambda alert: None)
    made.step_norms.add(2.0)
    made.optimizer, made.family = "keras.optimizers.SGD", "sgd"
    made.report(Finding("exploding", None, 50.0, 20.0, "grad_norm", "It jumped.",
                        evidence={"grad_norm": 50.0}, advice="clip", remedy="Also this."))
    where["step"] = 9
    made.report(Finding("exploding", "lstm", 3.0, None, "profile", "Again."))
    assert [(a.step, a.epoch, a.kind) for a in recorded] == [(7, 1, "exploding"), (9, 1, "exploding")]
    assert recorded[0].message == (
        "It jumped. Clip gradients around the typical norm (Pascanu et al. 2013): "
        "optimizer=keras.optimizers.SGD(..., global_clipnorm=2). Or lower the "
        "learning rate. Also this."
    )
    assert recorded[1].message == "Again."
    assert recorded[0].value == 50.0 and recorded[0].threshold == 20.0
    assert recorded[0].evidence == {"grad_norm": 50.0} and recorded[1].evidence == {}
    assert recorded[0].to_dict()["evidence"] == {"grad_norm": 50.0}


def test_nonfinite_is_rate_limited_and_diagnosed_only_when_reported():
    diagnosed = []

    def diagnose():
        diagnosed.append(where["step"])
        return "dense", "First layer affected: 'dense'."

    made, recorded, stops, where = desk(diagnose=diagnose, nonfinite="stop")
    for step in range(1, 9):
        where["step"] = step
        made.report(Finding("nonfinite", None, math.nan, None, "loss",
                            f"The loss is not finite at step {step} (epoch 1).",
                            advice="nonfinite", diagnose=True))
    # Reported at the 1st, 2nd, 4th and 8th occurrence; diagnosed only then.
    assert [a.step for a in recorded] == [1, 2, 4, 8] == diagnosed
    assert recorded[0].layer == "dense" and recorded[0].message.startswith(
        "The loss is not finite at step 1 (epoch 1). First layer affected: 'dense'. "
        "Lower the learning rate, or clip gradients")
    assert recorded[0].message.endswith("Check the data for NaN or Inf.")
    assert made.counts["nonfinite"] == 8 and len(stops) == 4


def test_a_nan_that_came_at_once_names_the_data_first():
    made, recorded, _, where = desk(nonfinite="warn")
    made.report(Finding("nonfinite", None, math.nan, None, "loss",
                        "The loss is not finite at step 1 (epoch 0).", advice="data_first"))
    message = recorded[0].message
    assert "Check the data first (NaN or Inf in the inputs, targets or sample weights)" in message
    assert "If they are clean: lower the learning rate" in message
    made.optimizer_idle = True  # a custom train_step applies optimizers of its own
    where["step"] = 2
    made.report(Finding("nonfinite", None, math.nan, None, "grad_norm",
                        "The gradient norm is not finite at step 2 (epoch 0).",
                        advice="nonfinite"))
    assert "the optimizers your train_step applies" in recorded[1].message


def test_a_kind_switched_off_is_neither_diagnosed_nor_counted():
    made, recorded, _, _ = desk(diagnose=lambda: 1 / 0, nonfinite=None)
    made.report(Finding("nonfinite", None, math.nan, None, "loss", "NaN.", diagnose=True))
    assert not made.active("nonfinite") and recorded == [] and made.counts["nonfinite"] == 0


def test_a_warning_starts_on_its_own_line_under_a_progress_bar(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    line = alerts.ProgressLine()
    made, recorded, _, _ = desk(line=line)
    out.write("\r 3/10 ━━━━━━ loss: 0.5")  # the bar, its line open
    line.open = True
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        made.report(Finding("vanishing", "rnn", 1e-4, 1e-3, "profile", "Faded."))
        made.report(Finding("vanishing", "gru", 1e-4, 1e-3, "profile", "Faded."))
    assert [w.category for w in caught] == [GradientWarning] * 2
    assert out.getvalue() == "\r 3/10 ━━━━━━ loss: 0.5\n"  # one new line, once
    assert not line.open
