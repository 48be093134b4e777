"""The alert desk: from a finding to a recorded alert (no model, no fit)."""

import math

from keras_gradwatch import _alerting
from keras_gradwatch import _detectors
from keras_gradwatch import alerts


def desk(**actions):
    recorded, stops = [], []
    where = {"step": 7, "epoch": 1}
    made = _alerting.AlertDesk(
        alerts.resolve_actions(
            actions.get("nonfinite", "stop"), actions.get("exploding", "warn"), actions.get("vanishing", "warn")
        ),
        record=recorded.append,
        stop=lambda: stops.append(True),
        where=lambda: (where["step"], where["epoch"]),
    )
    return made, recorded, stops, where


def test_findings_are_stamped_with_the_current_step_and_carry_advice():
    made, recorded, _, where = desk(exploding=lambda alert: None)
    made.step_norms.add(2.0)
    made.optimizer = "keras.optimizers.SGD"
    finding = _detectors.Finding("exploding", None, 50.0, 20.0, "grad_norm", "It jumped.")
    made.report(finding, " " + made.clip_advice())
    where["step"] = 9
    made.alert("exploding", "lstm", 3.0, None, "profile", "Again.")
    assert [(a.step, a.epoch, a.kind) for a in recorded] == [(7, 1, "exploding"), (9, 1, "exploding")]
    assert recorded[0].message.startswith("It jumped. ")
    assert "keras.optimizers.SGD(" in recorded[0].message and "global_clipnorm=2" in recorded[0].message
    assert recorded[0].value == 50.0 and recorded[0].threshold == 20.0


def test_nonfinite_is_rate_limited_and_diagnosed_only_when_reported():
    made, recorded, stops, where = desk(nonfinite="stop")
    diagnosed = []

    def diagnose():
        diagnosed.append(where["step"])
        return "dense", "First layer affected: 'dense'."

    for step in range(1, 9):
        where["step"] = step
        made.nonfinite("loss", math.nan, "The loss is not finite", diagnose)
    # Reported at the 1st, 2nd, 4th and 8th occurrence; diagnosed only then.
    assert [a.step for a in recorded] == [1, 2, 4, 8] == diagnosed
    assert recorded[0].layer == "dense" and "step 1 (epoch 1)" in recorded[0].message
    assert "Check the data for NaN or Inf." in recorded[0].message
    assert made.counts["nonfinite"] == 8 and len(stops) == 4


def test_a_kind_switched_off_is_neither_diagnosed_nor_counted():
    made, recorded, _, _ = desk(nonfinite=None)
    made.nonfinite("loss", math.nan, "The loss is not finite", lambda: 1 / 0)
    assert not made.active("nonfinite") and recorded == [] and made.counts["nonfinite"] == 0
