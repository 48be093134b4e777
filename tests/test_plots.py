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
