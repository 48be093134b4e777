"""What GradWatch checks steps and measurements for (`_checks`), without a fit."""

import keras
import numpy as np

from keras_gradwatch import _alerting
from keras_gradwatch import _checks
from keras_gradwatch import alerts
from keras_gradwatch.measurement import LayerProfile
from keras_gradwatch.measurement import Measurement


def desk():
    """An alert desk whose actions collect the alerts (nothing printed)."""
    seen = []
    made = _alerting.AlertDesk(
        alerts.resolve_actions(seen.append, seen.append, seen.append),
        record=lambda alert: None,
        stop=lambda: None,
        where=lambda: (5, 0),
    )
    return made, seen


def model():
    made = keras.Sequential([keras.Input((None, 1)), keras.layers.SimpleRNN(2), keras.layers.Dense(1)])
    made.compile(optimizer="sgd", loss="mse")
    return made


def test_step_checks_record_each_step_and_average_the_loss_between_reads():
    made, recorded = desk()
    checks = _checks.StepChecks(made, spike_factor=10.0, warmup=5, max_grad_norm=None)
    checks.begin_fit(model(), step=0)
    rows, broken = [], []

    def nonfinite(*args):
        broken.append(args)

    for step, loss in enumerate([4.0, 2.0, 3.0], start=1):
        logs = {"loss": loss, "grad_norm": 1.0, "window": 8}
        # No loss tracker has run: the step loss comes from the running
        # mean (equal weights): 2 * 2 - 4 = 0 at step 2, 3 * 3 - 2 * 2 = 5 at 3.
        checks.check(logs, step, 0, step - 1, add_step=rows.append, nonfinite=nonfinite)
    assert [r["window"] for r in rows] == [8, 8, 8]
    assert [r["loss"] for r in rows] == [4.0, 0.0, 5.0]
    assert checks.norm_logged and broken == []
    assert checks.loss_level() == 3.0
    assert checks.loss_level() is None  # read: starts again


def test_step_checks_report_a_nonfinite_loss():
    made, recorded = desk()
    checks = _checks.StepChecks(made, spike_factor=10.0, warmup=5, max_grad_norm=None)
    checks.begin_fit(model(), step=0)
    broken = []
    checks.check({"loss": float("nan")}, 1, 0, 0, add_step=lambda r: None,
                 nonfinite=lambda *args: broken.append(args))
    assert broken and broken[0][0] == "loss"


def _measurement(profile, site="input"):
    record = LayerProfile.from_profile("lstm", site, profile, None, 1e-2, 0.05)
    return Measurement(layers={"lstm": record}, length=len(profile), sequences=16,
                       loss_steps="last", window=None, global_norm=1.0,
                       layer_norms={"lstm": 1.0})


def test_measurement_checks_find_growth_in_time_but_not_one_standing_lag():
    made, found = desk()
    checks = _checks.MeasurementChecks(
        made, spike_factor=10.0, warmup=5, max_grad_norm=None, max_decay_rate=1.05,
        vanishing_fraction=1e-3, vanishing_patience=3,
    )
    standing = 0.91 ** np.arange(51)
    standing[50] = 14 * standing[1:].min()
    kwargs = dict(counts=True, backprop=None, facts={}, step_norms_logged=True,
                  overflowed=lambda: True, nonfinite=lambda *a, **k: None)
    checks.check(_measurement(standing), 10, 1.0, **kwargs)
    assert found == []
    checks.check(_measurement(0.5 * 1.2 ** np.arange(30)), 11, 1.0, **kwargs)
    assert [a.kind for a in found] == ["exploding"] and "grows going back" in found[0].message
