"""Tests of `keras_gradwatch.plots`: valid PNGs from records alone."""

import gc
import struct
import weakref

import matplotlib.figure
import pytest
from conftest import write_synthetic_run

from keras_gradwatch import plots
from keras_gradwatch import records


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.mark.parametrize("measurements", [1, 3, 1000])
def test_every_plot_is_a_sensible_png(tmp_path, measurements):
    run = records.load_run(
        write_synthetic_run(tmp_path, measurements=measurements, nan_step=4)
    )
    paths = plots.plot_all(run)
    assert [p.name for p in paths] == [plots.DECAY, plots.HEATMAP, plots.NORMS]
    for path in paths:
        width, height = png_size(path)
        assert 600 <= width <= 2000 and 400 <= height <= 1500, (path, width, height)
        assert path.stat().st_size > 20_000  # drawn, not blank
    assert not list(tmp_path.glob(".*.tmp"))


def test_single_layer_feed_forward_and_empty_runs(tmp_path):
    run = records.load_run(write_synthetic_run(tmp_path / "a", layers=("only",), tbptt=False))
    assert len(plots.plot_all(run)) == 3
    writer = records.RunWriter(tmp_path / "b")
    writer.open()
    writer.write_json(records.RUN, {"model": "nothing yet"})
    writer.close()
    assert plots.plot_all(records.load_run(tmp_path / "b")) == []
    writer.append(records.STEPS, {"step": 1, "loss": 0.3})
    writer.close()
    # Losses alone (no measurement yet, e.g. a crash at step 1) still plot.
    paths = plots.plot_all(records.load_run(tmp_path / "b"))
    assert [p.name for p in paths] == [plots.NORMS]


def test_comparison_of_runs(tmp_path):
    runs = [
        records.load_run(write_synthetic_run(tmp_path / name, layers=(name,)))
        for name in ("simple", "lstm")
    ]
    path = plots.plot_comparison(runs, tmp_path / "compare.png")
    assert png_size(path)[0] >= 600


@pytest.mark.slow  # a stress test: many drawings (about 30 s)
def test_no_figure_is_left_open_after_many_plots(tmp_path):
    import matplotlib.pyplot as pyplot

    created = []
    original = matplotlib.figure.Figure.__init__

    def tracking(self, *args, **kwargs):
        created.append(weakref.ref(self))
        original(self, *args, **kwargs)

    def alive():
        for _ in range(3):  # cycles through finalizers take a few passes
            gc.collect()
        return len([ref for ref in created if ref() is not None])

    matplotlib.figure.Figure.__init__ = tracking
    try:
        run = records.load_run(write_synthetic_run(tmp_path, measurements=5))
        for _ in range(2):  # lets matplotlib's own caches fill
            plots.plot_all(run)
        counts = []
        for _ in range(3):
            for _ in range(2):
                plots.plot_all(run)
            counts.append(alive())
    finally:
        matplotlib.figure.Figure.__init__ = original
    assert len(created) == 24
    # Nothing registers with pyplot, and every figure drawn is freed.
    assert pyplot.get_fignums() == []
    assert counts == [0, 0, 0], counts


def drawn(monkeypatch, what):
    """Calls `what(figure)` on each figure as it is saved (drawn, not yet
    cleared); returns the list of its results."""
    results = []
    save = plots._save

    def spy(figure, path):
        out = save(figure, path)
        results.append(what(figure))
        return out

    monkeypatch.setattr(plots, "_save", spy)
    return results


def legend_texts(figure):
    return [t.get_text() for ax in figure.axes if ax.get_legend()
            for t in ax.get_legend().get_texts()]


def write_norms_run(path, norms, alerts=(), sequences=16):
    writer = records.RunWriter(path)
    writer.open()
    writer.write_json(records.RUN, {"model": "m"})
    for step, norm in enumerate(norms, 1):
        writer.append(records.STEPS, {"step": step, "epoch": 0, "loss": 1.0,
                                      "grad_norm": float(norm)})
    for step in (0, len(norms)):
        writer.append(records.MEASUREMENTS, {
            "index": step, "step": step, "epoch": 0, "sequences": sequences,
            "global_norm": 2.5 * float(norms[0]), "layer_norms": {"lstm": 1.0},
            "profiles": None, "layers": {}})
    for alert in alerts:
        writer.append(records.ALERTS, {"epoch": 0, "layer": None, "value": 1.0,
                                       "message": "m", **alert})
    writer.close()
    return records.load_run(path)


def test_alert_markers_say_what_fired(tmp_path, monkeypatch):
    found = [
        {"kind": "exploding", "step": 3, "signal": "grad_norm", "suppressed": 2},
        {"kind": "exploding", "step": 5, "signal": "profile", "layer": "lstm"},
        {"kind": "vanishing", "step": 7, "signal": "profile", "layer": "lstm"},
        {"kind": "nonfinite", "step": 9, "signal": "loss"},
    ]
    run = write_norms_run(tmp_path, [1.0 + 0.1 * i for i in range(12)], found)
    texts = drawn(monkeypatch, legend_texts)
    markers = drawn(monkeypatch, lambda f: {
        line.get_label(): (line.get_marker(), line.get_color())
        for line in f.axes[0].get_lines() if ":" in line.get_label()})
    plots.plot_norms(run)
    assert {"exploding: gradient norm jump (3)", "exploding: time profile (1)",
            "vanishing: time profile (1)", "nonfinite: NaN/Inf in the loss (1)"} <= set(texts[0])
    shapes = markers[0]
    # One colour per kind, one shape per signal within it.
    assert shapes["exploding: gradient norm jump (3)"][1] == shapes["exploding: time profile (1)"][1]
    assert shapes["exploding: gradient norm jump (3)"][0] != shapes["exploding: time profile (1)"][0]
    assert shapes["vanishing: time profile (1)"][1] != shapes["exploding: time profile (1)"][1]


def test_a_window_set_between_fits_is_drawn_as_it_moved(tmp_path, monkeypatch):
    # run.json holds the latest fit's window (10); the measurements were
    # taken at backprops 15, 8 and 5.
    run = records.load_run(write_synthetic_run(tmp_path, layers=("lstm",),
                                               backprops=[15, 8, 5]))

    def texts(figure):
        found = [t.get_text() for ax in figure.axes for t in ax.texts]
        return found + [ax.get_xlabel() for ax in figure.axes]

    def reach_lines(figure):
        return [list(line.get_ydata()) for ax in figure.axes for line in ax.get_lines()
                if line.get_color() == "cyan"]

    drawn_texts = drawn(monkeypatch, texts)
    lines = drawn(monkeypatch, reach_lines)
    plots.plot_all(run)
    decay, heatmap, norms = drawn_texts
    assert "TBPTT reach: backprop=5\n(window=latest 10)" in decay
    assert "TBPTT backprop=5 (latest)" in heatmap
    assert [14.5, 7.5, 4.5, 4.5] in lines[1]  # the reach over training, not one line
    assert any("latest window=10" in text for text in norms)


def test_probe_batch_norm_says_it_is_the_probe_batch(tmp_path, monkeypatch):
    run = write_norms_run(tmp_path, [1.0] * 10, sequences=16)
    texts = drawn(monkeypatch, legend_texts)
    plots.plot_norms(run)
    assert "global norm on the probe batch, 16 rows" in texts[0]
    assert "layer lstm (probe batch, 16 rows)" in texts[0]
    assert "grad_norm of each training step\n(its whole training batch)" in texts[0]
    assert ("suggested global_clipnorm = 1\n(median of the last 100 step norms)"
            in texts[0])


def test_no_clipnorm_is_drawn_for_an_adaptive_optimizer(tmp_path, monkeypatch):
    # Adam's step is set by its learning rate: the alerts suggest no
    # clipnorm, and neither does the plot.
    run = write_norms_run(tmp_path, [1.0] * 10)
    writer = records.RunWriter(tmp_path)
    writer.open()
    writer.write_json(records.SUMMARY, {"status": "completed", "clip_note": "Clipping cannot"})
    writer.close()
    run = records.load_run(tmp_path)
    texts = drawn(monkeypatch, legend_texts)
    plots.plot_norms(run)
    assert not any("clipnorm" in text for text in texts[0])
    assert records.clip_suggestion_text(records.summarize(run)).startswith("none: clipping")


def tick_labels(figure):
    """Per log axis: its visible y tick labels and whether any two touch."""
    renderer = figure.canvas.get_renderer()
    out = []
    for ax in figure.axes:
        if ax.get_yscale() != "log":
            continue
        low, high = sorted(ax.get_ylim())
        shown = [t for t in ax.get_yticklabels(which="both")
                 if t.get_visible() and t.get_text() and low <= t.get_position()[1] <= high]
        boxes = [t.get_window_extent(renderer) for t in shown]
        touch = any(boxes[i].overlaps(boxes[j])
                    for i in range(len(boxes)) for j in range(i + 1, len(boxes)))
        out.append(([t.get_text() for t in shown], touch))
    return out


@pytest.mark.parametrize("low, high", [(0.6, 1.6), (1.2, 1.9), (1.01, 1.05),
                                       (0.05, 0.9), (3.0, 90.0)])
def test_narrow_log_axes_have_distinct_labels_that_never_touch(tmp_path, monkeypatch, low, high):
    import numpy as np

    norms = np.geomspace(low, high, 40)
    run = write_norms_run(tmp_path / "n", norms, sequences=16)
    seen = drawn(monkeypatch, tick_labels)
    plots.plot_norms(run)
    profiles = records.RunWriter(tmp_path / "d")
    profiles.open()
    for i in range(2):
        relative = profiles.write_profiles(i, {n: np.geomspace(high, low, 30) for n in "abc"})
        profiles.append(records.MEASUREMENTS, {
            "index": i, "step": 5 * i, "epoch": 0, "global_norm": 1.0, "profiles": relative,
            "layers": {n: {"site": "state", "decay_rate": 0.9, "horizon": 30} for n in "abc"}})
    profiles.close()
    plots.plot_decay(records.load_run(tmp_path / "d"))
    for figure in seen:
        for labels, touch in figure:
            assert 2 <= len(labels) <= 8, labels
            assert len(set(labels)) == len(labels), labels
            assert not touch, labels


def test_round_log_ticks_and_their_labels():
    assert plots._log_ticks(0.6, 1.6, 8) == [0.6, 0.8, 1.0, 1.5]
    assert plots._log_ticks(0.05, 0.9, 8) == [0.05, 0.1, 0.2, 0.5]
    assert plots._log_ticks(2.0, 15.0, 8) == [2.0, 5.0, 10.0]
    assert [plots._plain(v, 2) for v in (100.0, 0.5, 2e-5, 15000.0)] == [
        "100", "0.5", "2e-05", "15000"]


def test_comparison_labels_runs_by_their_distinguishing_path(tmp_path, monkeypatch):
    runs = [records.load_run(write_synthetic_run(tmp_path / w / "gw", layers=("lstm",)))
            for w in ("w_10", "w_40")]
    texts = drawn(monkeypatch, legend_texts)
    plots.plot_comparison(runs, tmp_path / "compare.png")
    assert [t.split(":")[0] for t in texts[0]] == ["w_10/gw", "w_40/gw"]


@pytest.mark.parametrize("rated, long_name", [(False, False), (True, False), (False, True)])
def test_the_norms_legend_fits_in_the_figure(tmp_path, monkeypatch, rated, long_name):
    run = write_norms_run(tmp_path, [1.0 + 0.1 * i for i in range(12)],
                          [{"kind": "exploding", "step": 3, "signal": "update_ratio"}])
    if rated:  # the learning rate's axis sits between the axes and the legend
        for number, record in enumerate(run.steps):
            record["lr"] = 1e-3 if number < 6 else 1.0
    if long_name:  # a keras-io Transformer's first layer
        for record in run.measurements:
            record["layer_norms"] = {"token_and_position_embedding": 1.0}

    def right_edges(figure):
        figure.canvas.draw()
        legend = figure.axes[0].get_legend().get_window_extent()
        return legend.x1, figure.bbox.x1

    edges = drawn(monkeypatch, right_edges)
    plots.plot_norms(run)
    legend_right, figure_right = edges[0]
    assert legend_right <= figure_right


def test_log_axes_are_labelled_in_unicode():
    # The figures draw names as plain text (no mathtext): matplotlib's own
    # log labels ("$\mathdefault{10^{8}}$") are given in Unicode instead.
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with matplotlib.rc_context({"text.parse_math": False}):
        figure = Figure()
        FigureCanvasAgg(figure)
        wide, short = figure.subplots(2)
        wide.plot([1, 2, 3], [1e-3, 50, 1e8])
        wide.set_yscale("log")
        short.plot([1, 2], [200, 3000])
        short.set_yscale("log")
        plots._unicode_log_ticks(figure)
        figure.canvas.draw()
    labels = [t.get_text() for t in wide.get_yticklabels()]
    assert labels == ["10⁻⁴", "10⁻²", "10⁰", "10²", "10⁴", "10⁶", "10⁸", "10¹⁰"]
    minor = [t.get_text() for t in short.yaxis.get_minorticklabels() if t.get_text()]
    assert minor[:3] == ["2×10²", "3×10²", "4×10²"]
    assert not any("$" in t.get_text() for ax in (wide, short) for t in ax.get_yticklabels())
