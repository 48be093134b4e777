"""Plots of a run, drawn from its saved records only.

Each function takes a `records.Run` (see `records.load_run`), so a run that
crashed half-way plots as well as a finished one, and writes one PNG:

- `plot_decay`: per measured layer, the gradient norm (log scale) against
  steps back from the loss, one curve per measurement coloured from early to
  late in training, with the truncation window and the latest statistics;
- `plot_heatmap`: per measured layer, training step x steps back, coloured
  by log10 of the gradient norm;
- `plot_norms`: global and per-layer gradient norms over training, with the
  alerts, the suggested clipping threshold and the per-step loss.

Plotting is headless: figures are `matplotlib.figure.Figure` objects drawn
on the Agg canvas, never registered with pyplot, and cleared once saved.
matplotlib is imported only when a plot is drawn.
"""

import contextlib
import math
import os
import pathlib

import numpy as np

from keras_gradwatch import records

DECAY = "decay_profile.png"
HEATMAP = "decay_heatmap.png"
NORMS = "gradient_norms.png"
MAX_CURVES = 40
ALERT_STYLE = {
    "nonfinite": ("tab:red", "X"),
    "exploding": ("tab:orange", "^"),
    "vanishing": ("tab:blue", "v"),
}


@contextlib.contextmanager
def _figure(width, height):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    try:
        yield figure
    finally:
        figure.clear()


def _save(figure, path):
    path = pathlib.Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    figure.savefig(temporary, format="png")
    os.replace(temporary, path)
    return path


def layer_series(run):
    """Per measured layer, the measurements' steps and profiles.

    Returns:
        Dict mapping each layer name (in the order first measured) to a
        `(steps, profiles)` pair: a list of training steps and a 2-D array,
        one row per measurement, one column per lag (NaN-padded).
    """
    series = {}
    for measurement in run.measurements:
        if not measurement.get("profiles"):
            continue
        for name, profile in run.profiles(measurement).items():
            steps, rows = series.setdefault(name, ([], []))
            steps.append(int(measurement["step"]))
            rows.append(np.asarray(profile, dtype="float64"))
    out = {}
    for name, (steps, rows) in series.items():
        width = max(len(r) for r in rows)
        table = np.full((len(rows), width), np.nan)
        for i, row in enumerate(rows):
            table[i, : len(row)] = row
        out[name] = (steps, table)
    return out


def _window(run):
    tbptt = run.settings.get("tbptt") or {}
    return tbptt.get("backprop"), tbptt.get("window")


def _grid(count):
    columns = 1 if count == 1 else 2
    return math.ceil(count / columns), columns


def _picked(count):
    """Indices of at most MAX_CURVES measurements, first and last included."""
    if count <= MAX_CURVES:
        return list(range(count))
    return sorted(set(np.linspace(0, count - 1, MAX_CURVES).round().astype(int)))


def _positive(values):
    values = np.array(values, dtype="float64")
    values[~(values > 0)] = np.nan  # log axes: zeros and NaNs are gaps
    return values


def plot_decay(run, path=None):
    """Draws the decay profiles; returns the PNG path, or None if none."""
    from matplotlib import cm
    from matplotlib.colors import Normalize

    series = layer_series(run)
    if not series:
        return None
    backprop, window = _window(run)
    rows, columns = _grid(len(series))
    last_layers = run.measurements[-1].get("layers", {}) if run.measurements else {}
    with _figure(6.4 * columns, 4.2 * rows) as figure:
        axes = figure.subplots(rows, columns, squeeze=False).ravel()
        for ax in axes[len(series) :]:
            ax.set_visible(False)
        all_steps = [s for steps, _ in series.values() for s in steps]
        single = len(set(all_steps)) == 1
        norm = Normalize(min(all_steps), max(max(all_steps), min(all_steps) + 1))
        colours = cm.viridis
        for ax, (name, (steps, table)) in zip(axes, series.items()):
            picked = _picked(len(steps))
            lags = np.arange(table.shape[1])
            width = 1.6 if len(picked) < 5 else 0.9
            for i in picked:
                ax.plot(
                    lags,
                    _positive(table[i]),
                    color=colours(norm(steps[i])),
                    lw=width,
                    alpha=1.0 if i == picked[-1] else 0.7,
                    label=f"measured at step {steps[i]}" if single else None,
                )
            ax.set_yscale("log")
            ax.set_xlabel("steps back from the loss (time steps)")
            ax.set_ylabel("gradient norm ‖∂L/∂h‖ (L2)")
            site = (last_layers.get(name) or {}).get("site", "")
            ax.set_title(f"{name}" + (f" ({site})" if site else ""))
            if backprop:
                ax.axvline(backprop, color="tab:red", ls="--", lw=1.2,
                           label=f"TBPTT reach: backprop={backprop} (window={window})")
            if backprop or single:
                ax.legend(loc="upper right", fontsize=8)
            stats = last_layers.get(name)
            if stats:
                rate = records.number(stats["decay_rate"])
                ax.text(
                    0.02,
                    0.03,
                    f"latest (step {steps[-1]}): "
                    + (
                        f"decay {rate:.3f}/step, horizon {stats['horizon']} steps"
                        if rate is not None and math.isfinite(rate)
                        else "gradient not finite"
                    ),
                    transform=ax.transAxes,
                    fontsize=9,
                    bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "0.7"},
                )
            ax.grid(True, which="major", alpha=0.3)
        if not single:
            mappable = cm.ScalarMappable(norm=norm, cmap=colours)
            bar = figure.colorbar(mappable, ax=list(axes[: len(series)]), shrink=0.9)
            bar.set_label("training step of the measurement")
        figure.suptitle(
            f"Gradient decay in time, {len(run.measurements)} measurement(s)"
            + (f" ({len(_picked(len(run.measurements)))} drawn)"
               if len(run.measurements) > MAX_CURVES else "")
        )
        return _save(figure, path or run.path / DECAY)


def plot_heatmap(run, path=None):
    """Draws step x lag heatmaps; returns the PNG path, or None if none."""
    series = layer_series(run)
    if not series:
        return None
    backprop, _ = _window(run)
    rows, columns = _grid(len(series))
    with _figure(6.4 * columns, 4.2 * rows) as figure:
        axes = figure.subplots(rows, columns, squeeze=False).ravel()
        for ax in axes[len(series) :]:
            ax.set_visible(False)
        for ax, (name, (steps, table)) in zip(axes, series.items()):
            values = np.log10(_positive(table)).T  # lag x measurement
            x = np.asarray(steps, dtype="float64")
            if len(x) == 1:
                edges_x = np.array([x[0] - 0.5, x[0] + 0.5])
            else:
                middle = (x[1:] + x[:-1]) / 2
                edges_x = np.concatenate([[x[0] - (middle[0] - x[0])], middle,
                                          [x[-1] + (x[-1] - middle[-1])]])
            edges_y = np.arange(values.shape[0] + 1) - 0.5
            ax.set_facecolor("0.85")  # cells with no finite value show grey
            mesh = ax.pcolormesh(edges_x, edges_y, np.ma.masked_invalid(values),
                                 cmap="magma", shading="flat")
            bar = figure.colorbar(mesh, ax=ax)
            bar.set_label("log10 gradient norm")
            if backprop:
                ax.axhline(backprop - 0.5, color="cyan", ls="--", lw=1.2,
                           label=f"TBPTT backprop={backprop}")
                ax.legend(loc="upper right", fontsize=8)
            ax.set_xlabel("training step of the measurement")
            ax.set_ylabel("steps back from the loss (time steps)")
            ax.set_title(name)
        figure.suptitle(
            "Gradient norm by time step and training step (grey: not finite or zero)"
        )
        return _save(figure, path or run.path / HEATMAP)


def plot_norms(run, path=None):
    """Draws gradient norms over training; returns the PNG path or None."""
    steps = [s for s in run.steps if records.number(s.get("grad_norm")) is not None]
    measured = [m for m in run.measurements if m.get("global_norm") is not None]
    if not steps and not measured and not run.steps:
        return None
    summary = records.summarize(run)
    broken = sorted(
        {s["step"] for s in steps if not math.isfinite(records.number(s["grad_norm"]))}
        | {m["step"] for m in measured if not math.isfinite(records.number(m["global_norm"]))}
    )
    with _figure(11.0, 4.8) as figure:
        ax = figure.subplots()
        finite_steps = [s for s in steps if math.isfinite(records.number(s["grad_norm"]))]
        if finite_steps:
            x = np.array([s["step"] for s in finite_steps])
            values = _positive([records.number(s["grad_norm"]) for s in finite_steps])
            if len(x) <= 200:
                ax.plot(x, values, color="0.35", lw=0.8,
                        marker="." if len(x) < 30 else None,
                        label="grad_norm of each training step")
            else:
                # Thousands of noisy steps read as a band: draw each bin's
                # range, and their median as the trend.
                bins = np.array_split(np.arange(len(x)), min(120, len(x) // 5))
                centres = [x[b].mean() for b in bins]
                ax.fill_between(
                    centres,
                    [np.nanmin(values[b]) for b in bins],
                    [np.nanmax(values[b]) for b in bins],
                    color="0.75", alpha=0.6, lw=0,
                    label="grad_norm of the training steps (range per bin)",
                )
                ax.plot(centres, [np.nanmedian(values[b]) for b in bins],
                        color="0.15", lw=1.3,
                        label=f"median per bin of {len(x) // len(bins)} steps")
        if measured:
            x = [m["step"] for m in measured]
            ax.plot(x, _positive([records.number(m["global_norm"]) for m in measured]),
                    "o-", color="black", ms=3, lw=1.2,
                    label="global norm on the probe batch")
            names = list(measured[-1].get("layer_norms") or {})
            palette = ["tab:purple", "tab:green", "tab:brown", "tab:pink",
                       "tab:cyan", "tab:olive", "tab:gray"]
            for i, name in enumerate(names[: len(palette)]):
                values = [records.number((m.get("layer_norms") or {}).get(name)) for m in measured]
                ax.plot(x, _positive([np.nan if v is None else v for v in values]),
                        ".-", color=palette[i], ms=2, lw=0.9, alpha=0.85,
                        label=f"layer {name}")
        clip = summary.get("suggested_clipnorm")
        if clip:
            ax.axhline(clip, color="tab:green", ls="--", lw=1.2,
                       label=f"suggested global_clipnorm = {clip:g}")
        for kind, (colour, marker) in ALERT_STYLE.items():
            found = [a for a in run.alerts if a.get("kind") == kind]
            for j, alert in enumerate(found):
                ax.axvline(alert["step"], color=colour, alpha=0.6, lw=1,
                           label=f"{kind} alert ({len(found)})" if j == 0 else None)
        if broken:
            # Non-finite norms have no place on a log axis: mark them on top.
            ax.plot(broken, [1.0] * len(broken), "X", color="tab:red", ms=9,
                    transform=ax.get_xaxis_transform(), clip_on=False,
                    label=f"non-finite norm ({len(broken)} step(s))")
        ax.set_yscale("log")
        ax.set_xlabel("training step")
        ax.set_ylabel("gradient norm (L2)")
        ax.set_title("Gradient norms over training")
        ax.grid(True, alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        losses = [(s["step"], records.number(s.get("loss"))) for s in run.steps
                  if records.number(s.get("loss")) is not None]
        losses = [(x, v) for x, v in losses if math.isfinite(v) and v > 0]
        if losses:
            # The loss, on its own axis: the one per-step signal of every model.
            right = ax.twinx()
            right.plot(*zip(*losses), color="tab:blue", lw=0.7, alpha=0.5)
            right.set_yscale("log")
            right.set_ylabel("training loss (per step)", color="tab:blue")
            handles += right.get_lines()
            labels += ["training loss (right axis)"]
        # Outside the axes: the legend never hides a series.
        ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.08, 1.0),
                  fontsize=8)
        return _save(figure, path or run.path / NORMS)


def plot_all(run):
    """Draws every plot the records allow; returns the written paths.

    Example:

    >>> import tempfile
    >>> from keras_gradwatch import plots, records
    >>> writer = records.RunWriter(tempfile.mkdtemp())
    >>> writer.open()
    >>> for step in range(1, 4):
    ...     writer.append("steps.jsonl", {"step": step, "grad_norm": 1.0 / step})
    >>> writer.close()
    >>> [path.name for path in plots.plot_all(records.load_run(writer.path))]
    ['gradient_norms.png']
    """
    paths = [plot_decay(run), plot_heatmap(run), plot_norms(run)]
    return [p for p in paths if p is not None]


def plot_comparison(runs, path, layer=None):
    """Latest decay profile of several runs on one figure.

    Args:
        runs: List of `records.Run`.
        path: Where to write the PNG.
        layer: Layer name to compare; default each run's first layer.

    Returns:
        The PNG path.
    """
    with _figure(8.0, 5.0) as figure:
        ax = figure.subplots()
        drawn = 0
        for run in runs:
            series = layer_series(run)
            name = layer if layer in series else next(iter(series), None)
            if name is None:
                continue
            steps, table = series[name]
            stats = (run.measurements[-1].get("layers") or {}).get(name, {})
            ax.plot(
                _positive(table[-1]),
                lw=1.6,
                label=(
                    f"{run.path.name}: {name} at step {steps[-1]} (decay "
                    f"{records.number(stats.get('decay_rate', float('nan'))):.3f}"
                    f"/step, horizon {stats.get('horizon', '?')})"
                ),
            )
            drawn += 1
        ax.set_yscale("log")
        ax.set_xlabel("steps back from the loss (time steps)")
        ax.set_ylabel("gradient norm ‖∂L/∂h‖ (L2)")
        ax.set_title(f"Gradient decay in time: {drawn} run(s), latest measurement")
        ax.grid(True, alpha=0.3)
        if drawn:
            ax.legend(loc="best", fontsize=8)
        return _save(figure, path)
