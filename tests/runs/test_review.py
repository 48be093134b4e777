"""The review agrees with itself: report.html, the notebook card and
`gradwatch summary` say the same things, in words that match the verdicts."""

import json

import pytest
from conftest import write_synthetic_run

from keras_gradwatch import alerts
from keras_gradwatch import cli
from keras_gradwatch import records
from keras_gradwatch import report
from keras_gradwatch.runs import _html
from keras_gradwatch.watch import _alerting


def views(run_dir):
    """The three views of a run: report.html, the notebook card, the CLI."""
    page = report.render(records.load_run(run_dir), [])
    card = records.load_run(run_dir).summary_html()
    text = cli.summary_text(records.load_run(run_dir))
    return page, card, text


def write_summary(run_dir, **fields):
    (run_dir / records.SUMMARY).write_text(json.dumps({"status": "completed", **fields}))


def test_decay_rate_is_explained_as_a_measure_not_a_verdict(tmp_path):
    page, card, text = views(write_synthetic_run(tmp_path))
    for view in (page, card, text):
        assert "it explodes" not in view
        assert "not by itself an explosion" in view
    assert "1.14: 14 % more" in page
    # What the alerts decided, per layer: the synthetic alerts are on "rnn".
    for view in (page, card):
        assert "<th>alerts on the layer</th>" in view
        assert "<td>exploding 3, vanishing 3, nonfinite 3</td>" in view
        assert "<td>none</td>" in view  # lstm
    assert "exploding 3, vanishing 3, nonfinite 3" in text


def test_layer_alerts_counts_the_unreported_repeats():
    found = [{"layer": "a", "kind": "exploding", "suppressed": 2},
             {"layer": "a", "kind": "exploding"}, {"layer": "b", "kind": "vanishing"},
             {"layer": None, "kind": "nonfinite"}]
    assert _html.layer_alerts(found, "a") == "exploding 4"
    assert _html.layer_alerts(found, "b") == "vanishing 1"
    assert _html.layer_alerts(found, "c") == "none"


def test_no_truncation_bias_without_truncation(tmp_path):
    page, card, text = views(write_synthetic_run(tmp_path, tbptt=False))
    for view in (page, card):
        assert "NaN" not in view
        assert "<td class='num'>n/a (no truncation)</td>" in view
    row = next(line for line in text.splitlines() if line.startswith("rnn "))
    assert row.split()[4] == "n/a" and "NaN" not in text
    assert "bias@backprop n/a: no truncation" in text
    # With truncation, the measured bias.
    page, _, text = views(write_synthetic_run(tmp_path / "t", tbptt=True))
    assert "n/a (no truncation)</td>" not in page and "<td class='num'>0.01</td>" in page
    assert "bias@backprop n/a" not in text


def test_a_model_not_measured_says_why_everywhere(tmp_path):
    run_dir = tmp_path / "run"
    writer = records.RunWriter(run_dir)
    writer.open()
    writer.append(records.STEPS, {"step": 1, "epoch": 0, "loss": 0.5, "grad_norm": 1.0})
    writer.close()
    reason = "ValueError: Arguments target and output must have the same rank"
    write_summary(run_dir, measurement_error=reason)
    assert records.summarize(records.load_run(run_dir))["measurement_error"] == reason
    page, card, text = views(run_dir)
    for view in (page, card, text):
        assert f"Not measured: {reason}" in view
        assert "No measurement yet" not in view


def test_measuring_that_stopped_says_when_and_why(tmp_path):
    run_dir = write_synthetic_run(tmp_path, measurements=3)
    write_summary(run_dir, measurement_error="ValueError: shapes differ")
    page, card, text = views(run_dir)
    for view in (page, card, text):
        assert "Measuring stopped after step 10: ValueError: shapes differ" in view


def test_own_time_is_shown_the_same_everywhere(tmp_path):
    run_dir = write_synthetic_run(tmp_path)
    write_summary(run_dir, own_time={"seconds": 0.5, "fit_seconds": 20.0,
                                     "cpu_seconds": 1.0, "fit_cpu_seconds": 50.0,
                                     "one_off_seconds": 0.3, "one_off_cpu_seconds": 0.5})
    page, card, text = views(run_dir)
    said = ("0.5 s of 20 s in fit (2.5 %) wall clock, of which 0.3 s one-off tracing; "
            "1 s of 50 s (2 %) CPU, 1 % without the tracing")
    assert f"GradWatch's own time (up to the drawing of this page): {said}." in page
    assert f"GradWatch's own time: {said}." in card
    assert f"GradWatch's own time:      {said}" in text.splitlines()
    # Records written before it existed show nothing, not a made-up figure.
    write_summary(run_dir)
    assert all("own time" not in view for view in views(run_dir))


def test_summary_shows_adaptive_clipping(tmp_path):
    run_dir = tmp_path / "run"
    writer = records.RunWriter(run_dir)
    writer.open()
    for step in range(1, 5):
        writer.append(records.STEPS, {"step": step, "epoch": 0, "loss": 0.5, "grad_norm": 1.0,
                                      "clip": 0.8 if step > 1 else None,
                                      "clipped_updates": max(0, step - 2)})
    writer.close()
    lines = cli.summary_text(records.load_run(run_dir)).splitlines()
    assert "AutoClip threshold:        0.8 (latest)" in lines
    assert "updates clipped:           2" in lines
    # Without adaptive clipping, no such line.
    plain = cli.summary_text(records.load_run(write_synthetic_run(tmp_path / "p")))
    assert "AutoClip" not in plain


def test_one_clipnorm_for_alerts_and_summary(tmp_path):
    # The norms rise as a plateau ends: 120 steps near 0.1, then 80 near 3.
    norms = [0.1 + 0.001 * i for i in range(120)] + [3.0 + 0.01 * i for i in range(80)]
    writer = records.RunWriter(tmp_path)
    writer.open()
    desk = _alerting.AlertDesk(alerts.resolve_actions(),
                               record=lambda a: None, stop=lambda: None,
                               where=lambda: (0, 0))
    for step, norm in enumerate(norms, 1):
        writer.append(records.STEPS, {"step": step, "epoch": 0, "loss": 1.0, "grad_norm": norm})
        desk.step_norms.add(norm)
    writer.close()
    summary = records.summarize(records.load_run(tmp_path))
    # The median of the last 100 (20 of the plateau, 80 after it), not of
    # the whole run (0.2): clipping there would cut the learning updates.
    assert summary["suggested_clipnorm"] == 3.3  # 3.295, rounded to 2 digits
    assert summary["median_grad_norm"] == pytest.approx(0.1995)
    assert "global_clipnorm=3.3)" in desk.clip_advice()
    page, card, text = views(tmp_path)
    assert f"({records.CLIP_BASIS}, as in the alerts)" in page
    assert f"3.3 ({records.CLIP_BASIS}, as in the alerts)" in text


def test_run_labels_are_the_shortest_distinguishing_ending():
    assert records.run_labels(["x/w_10/gw", "x/w_40/gw"]) == ["w_10/gw", "w_40/gw"]
    assert records.run_labels(["a/b/c", "d/b/c", "e/f/c"]) == ["a/b/c", "d/b/c", "f/c"]
    assert records.run_labels(["runs/lstm"]) == ["lstm"]
    assert records.run_labels(["r/gw", "r/gw"]) == ["gw", "gw #2"]


def test_suspect_measurements_are_counted_and_left_out_of_the_figures():
    from keras_gradwatch import records

    totals = records.Totals()
    clean = {"step": 4, "global_norm": 1.0, "layers": {"lstm": {"decay_rate": 0.9}}}
    odd = {"step": 8, "global_norm": 1e-7, "suspect": "far from grad_norm",
           "layers": {"lstm": {"decay_rate": 1.01}}}
    totals.add_measurement(clean)
    totals.add_measurement(odd)
    summary = totals.summary("completed")
    assert summary["measurements"] == 2
    assert summary["suspect_measurements"] == 1
    assert summary["measured_at_step"] == 4
    assert summary["layers"]["lstm"]["decay_rate"] == 0.9
    assert summary["median_grad_norm"] == 1.0
