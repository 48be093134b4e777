"""The former flat keywords of `GradWatch` (`spike_factor=20`...): they
still work, each with one `DeprecationWarning` naming the grouped form, and
give the same settings as the grouped form."""

import json
import warnings

import keras
import numpy as np
import pytest

from keras_gradwatch import Alerting
from keras_gradwatch import AutoClip
from keras_gradwatch import GradWatch
from keras_gradwatch import InvalidInputError
from keras_gradwatch import Measuring

PROBE = (np.zeros((4, 6, 1), "float32"), np.zeros((4, 1), "float32"))

# (flat keyword and value, the grouped form, the message's advice)
CASES = [
    ({"probe_data": PROBE}, {"measuring": Measuring(probe_data=PROBE)},
     "measuring=Measuring(probe_data="),
    ({"loss": "mae"}, {"measuring": Measuring(loss="mae")}, "measuring=Measuring(loss='mae')"),
    ({"loss_steps": "all"}, {"measuring": Measuring(loss_steps="all")},
     "measuring=Measuring(loss_steps='all')"),
    ({"threshold": 0.1}, {"measuring": Measuring(threshold=0.1)},
     "measuring=Measuring(threshold=0.1)"),
    ({"tolerance": 0.2}, {"measuring": Measuring(tolerance=0.2)},
     "measuring=Measuring(tolerance=0.2)"),
    ({"nonfinite": "warn"}, {"alerting": Alerting(nonfinite="warn")},
     "alerting=Alerting(nonfinite='warn')"),
    ({"exploding": "rollback"}, {"alerting": Alerting(exploding="rollback")},
     "alerting=Alerting(exploding='rollback')"),
    ({"vanishing": None}, {"alerting": Alerting(vanishing=None)},
     "alerting=Alerting(vanishing=None)"),
    ({"actions": {"truncation": None}}, {"alerting": Alerting(actions={"truncation": None})},
     "alerting=Alerting(actions={'truncation': None})"),
    ({"spike_factor": 20}, {"alerting": Alerting(spike_factor=20)},
     "alerting=Alerting(spike_factor=20)"),
    ({"warmup": 7}, {"alerting": Alerting(warmup=7)}, "alerting=Alerting(warmup=7)"),
    ({"max_grad_norm": 5.0}, {"alerting": Alerting(max_grad_norm=5.0)},
     "alerting=Alerting(max_grad_norm=5.0)"),
    ({"max_decay_rate": 1.2}, {"alerting": Alerting(max_decay_rate=1.2)},
     "alerting=Alerting(max_decay_rate=1.2)"),
    ({"vanishing_fraction": 1e-4}, {"alerting": Alerting(vanishing_fraction=1e-4)},
     "alerting=Alerting(vanishing_fraction=0.0001)"),
    ({"vanishing_patience": 5}, {"alerting": Alerting(vanishing_patience=5)},
     "alerting=Alerting(vanishing_patience=5)"),
]


def flat_watch(tmp_path, **keywords):
    """A GradWatch from flat keywords, and the deprecation warnings."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        watch = GradWatch(tmp_path, **keywords)
    return watch, [w for w in caught if issubclass(w.category, DeprecationWarning)]


@pytest.mark.parametrize("flat, grouped, advice", CASES, ids=[next(iter(c[0])) for c in CASES])
def test_a_flat_keyword_warns_once_and_gives_the_grouped_settings(tmp_path, flat, grouped,
                                                                  advice):
    watch, caught = flat_watch(tmp_path, **flat)
    assert len(caught) == 1
    (name, value), = flat.items()
    message = str(caught[0].message)
    assert message.startswith(f"GradWatch({name}=") and " is deprecated: pass " in message
    assert advice in message
    assert caught[0].filename == __file__  # points at the caller's line
    expected = GradWatch(tmp_path, **grouped)
    assert watch._settings == expected._settings
    assert watch._settings.recorded() == expected._settings.recorded()
    assert getattr(watch, name) is getattr(expected, name) or (
        getattr(watch, name) == getattr(expected, name))


def test_several_flat_keywords_and_the_clip_percentile(tmp_path):
    watch, caught = flat_watch(tmp_path, spike_factor=20, loss_steps="all", exploding="clip",
                               clip_percentile=10)
    assert [str(w.message) for w in caught] == [
        "GradWatch(spike_factor=20) is deprecated: pass alerting=Alerting(spike_factor=20).",
        "GradWatch(loss_steps='all') is deprecated: pass measuring=Measuring(loss_steps='all').",
        "GradWatch(exploding='clip') is deprecated: pass alerting=Alerting(exploding='clip').",
        "GradWatch(clip_percentile=10) is deprecated: pass "
        "alerting=Alerting(exploding=AutoClip(percentile=10)).",
    ]
    grouped = GradWatch(tmp_path, measuring=Measuring(loss_steps="all"),
                        alerting=Alerting(spike_factor=20, exploding=AutoClip(percentile=10)))
    assert watch._settings == grouped._settings
    recorded = watch._settings.recorded()
    assert recorded == grouped._settings.recorded()
    assert (recorded["clip"], recorded["clip_percentile"]) == (None, 10.0)
    assert recorded["actions"]["exploding"] == "clip"
    assert (watch.exploding, watch.clip, watch.clip_percentile) == ("clip", None, 10.0)

    watch, caught = flat_watch(tmp_path, clip="auto", clip_percentile=10)
    assert [str(w.message) for w in caught] == [
        "GradWatch(clip_percentile=10) is deprecated: pass clip=AutoClip(percentile=10)."]
    assert watch._settings == GradWatch(tmp_path, clip=AutoClip(percentile=10))._settings
    assert (watch.clip, watch.clip_percentile) == ("auto", 10.0)


@pytest.mark.parametrize(
    "keywords, match",
    [
        ({"nonfinite": "explode"}, "Received: nonfinite='explode'"),
        ({"loss_steps": "first"}, "Received: loss_steps='first'. Pass 'last' or 'all'."),
        ({"warmup": 1.5}, r"Received: warmup=1.5. Pass a positive integer."),
        ({"clip": "auto", "clip_percentile": 0}, r"Received: clip_percentile=0. Pass a percentile"),
        ({"spike_factor": 20, "alerting": Alerting()},
         r"Received: spike_factor=20 and alerting=Alerting\(.*\)\. Pass spike_factor inside "
         r"alerting only, e.g. alerting=Alerting\(spike_factor=20\)"),
        ({"probe_data": PROBE, "measuring": Measuring(loss="mae")},
         "Received: probe_data=.* and measuring=Measuring"),
        ({"clip_percentile": 10, "clip": AutoClip(percentile=20)},
         r"Received: clip_percentile=10 and clip=AutoClip\(percentile=20.0\)"),
    ],
)
def test_bad_flat_keywords_are_the_same_errors(tmp_path, keywords, match):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with pytest.raises(InvalidInputError, match=match):
            GradWatch(tmp_path, **keywords)


def test_an_unknown_keyword_is_still_a_type_error(tmp_path):
    with pytest.raises(TypeError, match="unexpected keyword argument 'spike'"):
        GradWatch(tmp_path, spike=20)


def test_a_run_with_flat_keywords_records_the_same_settings(tmp_path):
    model = keras.Sequential([keras.Input((6, 1)), keras.layers.SimpleRNN(2),
                              keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    x = np.random.default_rng(0).normal(size=(8, 6, 1)).astype("float32")
    flat = dict(probe_data=(x[:4], x[:4, 0]), spike_factor=20, vanishing=None,
                clip="auto", clip_percentile=50)
    grouped = dict(measuring=Measuring(probe_data=flat["probe_data"]),
                   alerting=Alerting(spike_factor=20, vanishing=None),
                   clip=AutoClip(percentile=50))
    for name, keywords in (("flat", flat), ("grouped", grouped)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(x, x[:, 0], epochs=1, verbose=0,
                      callbacks=[GradWatch(tmp_path / name, plots=None, **keywords)])
    settings = [json.loads((tmp_path / name / "run.json").read_text())["settings"]
                for name in ("flat", "grouped")]
    assert settings[0] == settings[1]
    assert (settings[0]["spike_factor"], settings[0]["clip_percentile"]) == (20.0, 50.0)
