"""The notebook display of a run (`_html`, `Run._repr_html_`, `GradWatch._repr_html_`)."""

import html.parser
import re

import keras
import numpy as np
from conftest import write_synthetic_run

from keras_gradwatch import GradWatch
from keras_gradwatch import plots
from keras_gradwatch import records
from keras_gradwatch.runs import _html

VOID = {"img", "br", "meta", "hr", "input"}


class _Balance(html.parser.HTMLParser):
    """Checks that every opened tag is closed, in order."""

    def __init__(self):
        super().__init__()
        self.open, self.errors, self.tags = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag not in VOID:
            self.open.append(tag)

    def handle_endtag(self, tag):
        if not self.open or self.open.pop() != tag:
            self.errors.append(tag)


def well_formed(text):
    checker = _Balance()
    checker.feed(text)
    checker.close()
    return not checker.errors and not checker.open, checker.tags


def test_a_loaded_run_shows_status_layers_alerts_and_plot(tmp_path):
    run_dir = write_synthetic_run(tmp_path)
    plots.plot_all(records.load_run(run_dir))
    shown = records.load_run(run_dir)._repr_html_()
    ok, tags = well_formed(shown)
    assert ok
    assert shown.startswith("<div class='gw-run'>") and tags.count("table") == 2
    for text in ("Status:", "<th>layer</th>", "rnn", "lstm", "decay rate", "exploding"):
        assert text in shown, text
    assert re.search(r'<img alt="decay_profile.png" src="data:image/png;base64,', shown)
    # Escaped, as in the report.
    assert "&lt;with markup" in shown and "<with markup" not in shown


def test_a_run_without_plots_says_how_to_draw_them(tmp_path):
    shown = records.load_run(write_synthetic_run(tmp_path))._repr_html_()
    assert well_formed(shown)[0]
    assert "<img" not in shown and "gradwatch report RUN" in shown


def test_alert_table_shows_the_latest_alerts_only_when_limited():
    alerts = [{"step": i, "epoch": 0, "kind": "exploding", "message": f"m{i}"} for i in range(8)]
    limited = _html.alert_table(alerts, limit=5)
    assert "The latest 5 of 8 alerts" in limited and "m2" not in limited and "m7" in limited
    assert "m0" in _html.alert_table(alerts)
    assert _html.fmt(None) == "—" and _html.fmt("NaN") == "NaN" and _html.fmt(3) == "3"


def test_gradwatch_shows_its_run_in_a_notebook(tmp_path):
    watch = GradWatch(tmp_path / "run")
    assert "no training yet" in watch._repr_html_()
    model = keras.Sequential([keras.Input((None, 2)), keras.layers.LSTM(4, name="lstm"),
                              keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    x = np.random.default_rng(0).normal(size=(16, 12, 2)).astype("float32")
    model.fit(x, x[:, -1, :1], epochs=1, batch_size=8, verbose=0, callbacks=[watch])
    shown = watch._repr_html_()
    assert well_formed(shown)[0]
    assert "lstm" in shown and "completed" in shown and "<img" in shown
