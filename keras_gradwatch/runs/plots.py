"""Plots of a run, drawn from its saved records only.

Each function takes a `records.Run` (see `records.load_run`), so a run that
crashed half-way plots as well as a finished one, and writes one PNG:

- `plot_decay`: per measured layer, the gradient norm (log scale) against
  steps back from the loss, one curve per measurement coloured from early to
  late in training, with the truncation window and the latest statistics;
- `plot_heatmap`: per measured layer, training step x steps back, coloured
  by log10 of the gradient norm;
- `plot_norms`: global and per-layer gradient norms over training, with the
  alerts and the suggested clipping threshold, above the per-step loss;
- `plot_depth`: the gradient across depth, layer by layer from the output
  back to the input, one curve per measurement coloured by training step.

Plotting is headless: figures are `matplotlib.figure.Figure` objects drawn
on the Agg canvas, never registered with pyplot, and cleared once saved.
matplotlib is imported only when a plot is drawn. Layouts are fixed (no
constrained layout, which costs more than the drawing), and legends sit
outside the axes, so they never hide a series.
"""

import contextlib
import math
import os
import pathlib
import re
import tempfile
import textwrap
import warnings

import numpy as np

from keras_gradwatch.core import _update_ratio
from keras_gradwatch.core import depth as depth_lib
from keras_gradwatch.core._detectors import kinds
from keras_gradwatch.core.errors import RunDirectoryError
from keras_gradwatch.core.errors import RunRecordWarning
from keras_gradwatch.runs import records

DECAY = records.DECAY_PLOT
HEATMAP = "decay_heatmap.png"
NORMS = "gradient_norms.png"
UPDATES = "update_ratios.png"
DEPTH = records.DEPTH_PLOT
# Layer names on the depth plot's axis: at most this many (thinned beyond).
MAX_LAYER_TICKS = 40
MAX_CURVES = 40
# Colour and marker of each kind's alerts, from the registry of kinds; a
# kind it does not know (another version's records) is drawn in grey.
ALERT_STYLE = {kind.name: (kind.color, kind.marker) for kind in kinds.KINDS}
_OTHER_KIND = ("tab:gray", "o")
# What an alert's `signal` checked, in a legend.
_SIGNAL_WORDS = {
    "grad_norm": "gradient norm jump",
    "loss": "loss jump",
    "layer_norm": "layer gradient on the probe batch",
    "profile": "time profile",
    "update_ratio": "update/weight ratio",
    "depth": "depth profile",
}
# What turned non-finite, for `nonfinite` alerts.
_NONFINITE_WORDS = {
    "grad_norm": "the gradient norm",
    "loss": "the loss",
    "logged_loss": "a logged loss",
    "layer_norm": "a layer's gradient on the probe batch",
    "profile": "a time profile",
    "skipped_updates": "gradients (updates skipped)",
}
# Shapes of a kind's further signals (its first has the kind's own marker).
_SIGNAL_MARKERS = ("s", "D", "P", "*", "o", "h", "^", "v", "X")
# Colours of per-layer norms: none is an alert's colour.
_LAYER_COLOURS = ["tab:green", "tab:brown", "tab:pink", "tab:cyan",
                  "tab:olive", "tab:blue", "tab:gray"]
_GRADIENT_WORDS = {
    "state": ("state gradient", "‖∂L/∂h_t‖"),
    "input": ("input gradient", "‖∂L/∂x_t‖"),
    "probe": ("gradient at the Probe", "‖∂L/∂a_t‖"),
}
# Panel sizes and margins, in inches.
_PANEL_W, _PANEL_H = 5.4, 3.3
_LEFT, _RIGHT, _TOP, _BOTTOM, _HSPACE, _WSPACE = 0.85, 0.25, 0.95, 0.6, 1.0, 1.1


@contextlib.contextmanager
def _figure(width, height):
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # Folder, model and layer names are plain text: "$5_to_$10" is no
    # mathtext formula (our own labels use Unicode, never "$...$").
    with matplotlib.rc_context({"text.parse_math": False}):
        figure = Figure(figsize=(width, height), dpi=100)
        FigureCanvasAgg(figure)
        try:
            yield figure
        finally:
            figure.clear()


_SUPERSCRIPT = str.maketrans("0123456789-\u2212", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻⁻")
_MATHTEXT_POWER = re.compile(r"(\d+)\^\{([^}]*)\}")


def _unicode_tick(label):
    """matplotlib's mathtext log tick label in Unicode:
    "$\\mathdefault{2\\times10^{-3}}$" -> "2×10⁻³"."""
    if not (label.startswith("$\\mathdefault{") and label.endswith("}$")):
        return label
    body = label[len("$\\mathdefault{"):-2].replace("\\times", "×")
    return _MATHTEXT_POWER.sub(lambda m: m.group(1) + m.group(2).translate(_SUPERSCRIPT), body)


def _unicode_log_ticks(figure):
    """Log axes labelled in Unicode, with matplotlib's own choice of ticks.

    Its log formatters write mathtext ("$\\mathdefault{10^{8}}$"), which
    `_figure` turns off so that names stay plain text: drawn as is, every
    log axis would read "$\\mathdefault{10^{8}}$", cut off at the margin.
    """
    from matplotlib.ticker import Formatter
    from matplotlib.ticker import LogFormatterMathtext

    class UnicodeLogFormatter(Formatter):
        def __init__(self, inner):
            self.inner = inner

        def set_axis(self, axis):
            super().set_axis(axis)
            self.inner.set_axis(axis)

        def set_locs(self, locs):
            self.inner.set_locs(locs)

        def __call__(self, value, pos=None):
            return _unicode_tick(self.inner(value, pos))

    for ax in figure.axes:
        for axis in (ax.xaxis, ax.yaxis):
            for formatter, use in ((axis.get_major_formatter(), axis.set_major_formatter),
                                   (axis.get_minor_formatter(), axis.set_minor_formatter)):
                if isinstance(formatter, LogFormatterMathtext):
                    use(UnicodeLogFormatter(formatter))


# Characters of a title that fit in an inch (12 pt text: about 0.55 em each).
_TITLE_CHARS_PER_INCH = 10


def _suptitle(figure, text):
    """The figure's title at its top, each line wrapped to the figure's
    width: a one-layer figure is narrow, and a note would be cut off."""
    width = max(20, int(figure.get_figwidth() * _TITLE_CHARS_PER_INCH))
    lines = [wrapped for line in text.split("\n") for wrapped in textwrap.wrap(line, width) or [""]]
    figure.suptitle("\n".join(lines), y=1 - 0.12 / figure.get_figheight(), va="top")


def _save(figure, path):
    """Writes the PNG through an exclusively created temporary file renamed
    into place: a symlink planted at either name is not written through."""
    _unicode_log_ticks(figure)
    path = pathlib.Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as f:
            figure.savefig(f, format="png")
        os.replace(temporary, path)
    finally:
        if os.path.lexists(temporary):
            os.unlink(temporary)
    return path


def layer_series(run):
    """Per measured layer, the measurements' steps and profiles.

    Returns:
        Dict mapping each layer name (in the order first measured) to a
        `(steps, profiles)` pair: a list of training steps and a 2-D array,
        one row per measurement, one column per lag (NaN-padded).
    """
    series, damaged = {}, []
    for measurement in run.measurements:
        if not measurement.get("profiles"):
            continue
        try:
            profiles = {name: np.asarray(profile, dtype="float64").ravel()
                        for name, profile in run.profiles(measurement).items()}
        except (RunDirectoryError, ValueError, TypeError) as error:
            damaged.append(str(error))  # the other measurements are drawn
            continue
        for name, profile in profiles.items():
            steps, rows = series.setdefault(name, ([], []))
            steps.append(int(measurement["step"]))
            rows.append(profile)
    if damaged:
        more = f" (and {len(damaged) - 1} more)" if len(damaged) > 1 else ""
        warnings.warn(f"{damaged[0]}{more} Its profiles are left out of the plots.",
                      RunRecordWarning, stacklevel=2)
    out = {}
    for name, (steps, rows) in series.items():
        width = max(len(r) for r in rows)
        table = np.full((len(rows), width), np.nan)
        for i, row in enumerate(rows):
            table[i, : len(row)] = row
        out[name] = (steps, table)
    return out


def gradient_label(site, short=False):
    """The axis label of a profile measured at `site`."""
    words, symbol = _GRADIENT_WORDS.get(site, ("gradient", "‖∂L/∂a_t‖"))
    return symbol if short else f"{words} {symbol}"


def _sites(run):
    sites = {}
    for measurement in run.measurements:
        for name, values in (measurement.get("layers") or {}).items():
            sites[name] = values.get("site", "")
    return sites


def _tbptt_steps(run):
    """`(backprop, window)` of a TBPTT run: the latest ones, which move
    under `window="auto"` or when set between `fit` calls."""
    tbptt = run.settings.get("tbptt") or {}
    backprop, window = tbptt.get("backprop"), tbptt.get("window")
    windows = _window_series(run)
    window = windows[-1][1] if windows else window
    measured = _backprop_series(run)
    backprop = measured[-1][1] if measured else backprop
    return backprop, window


def _backprop_series(run):
    """`[(step, backprop)]` of the measurements of a TBPTT run."""
    return [(m["step"], m["backprop"]) for m in run.measurements if m.get("backprop")]


def _window_moved(run):
    """`"auto"` (the automatic window), `"set"` (the measurements saw
    other backprops: a window set between fits) or None."""
    if (run.settings.get("tbptt") or {}).get("auto_window"):
        return "auto"
    return "set" if len({b for _, b in _backprop_series(run)}) > 1 else None


def _window_series(run):
    """`[(step, window)]` logged by `TruncatedBPTT(window="auto")`."""
    return [(s["step"], s["window"]) for s in run.steps if s.get("window") is not None]


def _grid(count):
    columns = 1 if count == 1 else 2
    return math.ceil(count / columns), columns


def _panels(figure, rows, columns, right):
    """A rows x columns grid of axes with fixed margins (inches)."""
    width, height = figure.get_size_inches()
    figure.subplots_adjust(
        left=_LEFT / width,
        right=1 - right / width,
        top=1 - _TOP / height,
        bottom=_BOTTOM / height,
        wspace=_WSPACE / _PANEL_W,
        hspace=_HSPACE / _PANEL_H,
    )
    return figure.subplots(rows, columns, squeeze=False).ravel()


def _picked(count):
    """Indices of at most MAX_CURVES measurements, first and last included."""
    if count <= MAX_CURVES:
        return list(range(count))
    return sorted(set(np.linspace(0, count - 1, MAX_CURVES).round().astype(int)))


def _positive(values):
    values = np.array(values, dtype="float64")
    values[~(values > 0)] = np.nan  # log axes: zeros and NaNs are gaps
    return values


def _trend_note(steps):
    distinct = len(set(steps))
    if distinct >= records.TREND_MEASUREMENTS:
        return ""
    return (
        f" - only {distinct} measurement step(s): too few to show a trend"
    )


def _integer_lags(ax):
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


_integer_steps = _integer_lags  # training steps are whole numbers too


# Round values a narrow log axis may be ticked at, roundest first: each
# level adds mantissas between those before it.
_TICK_MANTISSAS = (
    (1.0,), (2.0, 5.0), (3.0,), (1.5, 4.0, 6.0, 8.0),
    tuple(m / 10 for m in range(10, 100)),
)
_MAX_TICKS = 8


def _log_ticks(low, high, room):
    """At most `room` round tick values in [low, high] (0 < low < high),
    evenly enough spread on a log axis that their labels never touch.

    A value is taken, roundest first, only if it lies at least 1/(room-1) of
    the axis (in log units) from every value taken: `room` labels fit.
    """
    import matplotlib.ticker

    if not 0 < low < high:
        return []
    room = max(2, room)
    gap = math.log10(high / low) / (room - 1)

    def far(value, chosen):
        return all(abs(math.log10(value / c)) >= gap * (1 - 1e-9) for c in chosen)

    chosen = []
    first, last = math.floor(math.log10(low)), math.ceil(math.log10(high))
    for mantissas in _TICK_MANTISSAS:
        for exponent in range(first, last + 1):
            for mantissa in mantissas:
                value = float(f"{mantissa * 10.0 ** exponent:.12g}")
                if low <= value <= high and far(value, chosen):
                    chosen.append(value)
        if len(chosen) >= min(3, room):
            return sorted(chosen)
    # Narrower than the finest round values (a few percent): plain steps.
    steps = matplotlib.ticker.MaxNLocator(nbins=room - 1).tick_values(low, high)
    for value in steps:
        if low <= value <= high and far(value, chosen):
            chosen.append(float(value))
    return sorted(chosen)


def _plain(value, digits):
    """`value` to `digits` significant digits, without an exponent between
    1e-4 and 1e6 ("100", not "1e+02")."""
    rounded = float(f"{value:.{digits}g}")
    if not 1e-4 <= abs(rounded) < 1e6:
        return f"{rounded:.{digits}g}"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(rounded))))
    return f"{rounded:.{decimals}f}".rstrip("0").rstrip(".") if decimals else f"{rounded:.0f}"


def _log_scale(ax):
    """A log y axis with readable ticks when something positive and finite
    is drawn on it; else the axis stays linear (a run whose every value is
    NaN or 0 is still drawn, with its markers)."""
    low, high = ax.dataLim.intervaly
    if not (math.isfinite(high) and high > 0):
        return
    ax.set_yscale("log")
    _readable_log_ticks(ax)


def _readable_log_ticks(ax):
    """Round, plain-number ticks on a log y axis that spans less than two
    decades: its default ticks label every minor tick (2, 3, ... 9 of each
    decade), whose labels collide on a short axis or read alike ("1.02"
    twice), or label none. Wider axes keep matplotlib's decade ticks."""
    from matplotlib.ticker import Formatter
    from matplotlib.ticker import LogLocator
    from matplotlib.ticker import NullFormatter

    class RoundLogLocator(LogLocator):
        def tick_values(self, vmin, vmax):
            room = _MAX_TICKS
            if self.axis is not None:
                room = min(room, self.axis.get_tick_space())
            return _log_ticks(min(vmin, vmax), max(vmin, vmax), room)

    class PlainFormatter(Formatter):
        def __call__(self, value, pos=None):
            return _plain(value, 3)

        def format_ticks(self, values):
            # The fewest digits that tell every tick apart.
            for digits in range(2, 8):
                labels = [_plain(v, digits) for v in values]
                if len(set(labels)) == len(labels):
                    break
            return labels

    low, high = ax.get_ylim()
    if ax.get_yscale() == "log" and min(low, high) > 0 and max(low, high) / min(low, high) < 100:
        ax.yaxis.set_major_locator(RoundLogLocator())
        ax.yaxis.set_major_formatter(PlainFormatter())
        ax.yaxis.set_minor_formatter(NullFormatter())


def plot_decay(run, path=None, series=None):
    """Draws the decay profiles; returns the PNG path, or None if none.

    Args:
        run: A `records.Run`.
        path: Where to write the PNG (default `decay_profile.png` in the run
            folder).
        series: `layer_series(run)`, if already computed.
    """
    from matplotlib import cm
    from matplotlib.colors import Normalize

    series = layer_series(run) if series is None else series
    if not series:
        return None
    backprop, window = _tbptt_steps(run)
    auto = {"auto": "auto, latest ", "set": "latest "}.get(_window_moved(run), "")
    sites = _sites(run)
    last_layers = run.measurements[-1].get("layers", {}) if run.measurements else {}
    all_steps = [s for steps, _ in series.values() for s in steps]
    single = len(set(all_steps)) == 1
    rows, columns = _grid(len(series))
    right = _RIGHT if single else 1.2  # room for the colour bar
    size = (_LEFT + columns * _PANEL_W + (columns - 1) * _WSPACE + right,
            _TOP + rows * _PANEL_H + (rows - 1) * _HSPACE + _BOTTOM)
    with _figure(*size) as figure:
        axes = _panels(figure, rows, columns, right)
        for ax in axes[len(series):]:
            ax.set_visible(False)
        norm = Normalize(min(all_steps), max(max(all_steps), min(all_steps) + 1))
        colours = cm.viridis
        for ax, (name, (steps, table)) in zip(axes, series.items()):
            picked = _picked(len(steps))
            lags = np.arange(table.shape[1])
            width = 1.6 if len(picked) < 5 else 0.9
            for i in picked:
                ax.plot(lags, _positive(table[i]), color=colours(norm(steps[i])),
                        lw=width, alpha=1.0 if i == picked[-1] else 0.7,
                        marker="o" if table.shape[1] <= 12 else None, ms=3)
            _log_scale(ax)
            _integer_lags(ax)
            ax.set_xlabel("steps back from the loss (time steps)")
            site = sites.get(name, "")
            ax.set_ylabel(f"{gradient_label(site)} (L2)")
            stats = last_layers.get(name) or {}
            rate = records.number(stats.get("decay_rate"))
            latest = (
                f"step {steps[-1]}: decay {rate:.3f}/step, horizon {stats.get('horizon')} steps"
                if rate is not None and math.isfinite(rate)
                else f"step {steps[-1]}: gradient not finite"
                if stats
                else f"step {steps[-1]}"
            )
            ax.set_title(f"{name} ({site})\n" if site else f"{name}\n", fontsize=11,
                         loc="left", y=1.0)
            ax.set_title(("measured at " if single else "latest, ") + latest,
                         fontsize=8.5, loc="right", color="0.3", y=1.0)
            if backprop:
                ax.axvline(backprop, color="tab:red", ls="--", lw=1.2)
                low, high = ax.get_xlim()
                # Beside the line, on the side with room for the text.
                right_side = (backprop - low) < 0.4 * (high - low)
                ax.annotate(
                    f"TBPTT reach: backprop={backprop}\n(window={auto}{window})",
                    xy=(backprop, 1.0), xycoords=("data", "axes fraction"),
                    xytext=(4 if right_side else -4, -4), textcoords="offset points",
                    ha="left" if right_side else "right",
                    va="top", fontsize=8, color="tab:red",
                )
            ax.grid(True, which="major", alpha=0.3)
        if not single:
            left, bottom = 1 - (right - 0.35) / size[0], _BOTTOM / size[1]
            bar_axes = figure.add_axes(
                [left, bottom, 0.18 / size[0], 1 - (_TOP + _BOTTOM) / size[1]]
            )
            bar = figure.colorbar(cm.ScalarMappable(norm=norm, cmap=colours),
                                  cax=bar_axes)
            bar.set_label("training step of the measurement")
        count = len(run.measurements)
        _suptitle(
            figure,
            f"Gradient decay in time, {count} measurement(s)"
            + (f" ({len(_picked(count))} drawn)" if count > MAX_CURVES else "")
            + _trend_note(all_steps),
        )
        return _save(figure, path or run.path / DECAY)


def plot_heatmap(run, path=None, series=None):
    """Draws step x lag heatmaps; returns the PNG path, or None if none.

    Args:
        run: A `records.Run`.
        path: Where to write the PNG (default `decay_heatmap.png`).
        series: `layer_series(run)`, if already computed.
    """
    series = layer_series(run) if series is None else series
    if not series:
        return None
    backprop, _ = _tbptt_steps(run)
    moved = _window_moved(run)
    # The automatic window is logged at every step; a window set between
    # fits is seen in the measurements' backprop.
    reach = _window_series(run) if moved == "auto" else _backprop_series(run)
    sites = _sites(run)
    rows, columns = _grid(len(series))
    right = 0.9  # the last colour bar's label
    size = (_LEFT + columns * (_PANEL_W + 1.0) + (columns - 1) * _WSPACE + right,
            _TOP + rows * _PANEL_H + (rows - 1) * _HSPACE + _BOTTOM)
    with _figure(*size) as figure:
        axes = _panels(figure, rows, columns, right)
        for ax in axes[len(series):]:
            ax.set_visible(False)
        for ax, (name, (steps, table)) in zip(axes, series.items()):
            values = np.log10(_positive(table)).T  # lag x measurement
            x = np.asarray(steps, dtype="float64")
            if len(set(steps)) == 1:
                edges_x = np.array([x[0] - 0.5, x[0] + 0.5])
                values = values[:, -1:]
                ax.text(0.5, 0.5, f"one measurement (step {steps[0]}):\na heatmap "
                        "shows change over training\nfrom two measurements on",
                        transform=ax.transAxes, ha="center", va="center", fontsize=9,
                        bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "0.7"})
            else:
                middle = (x[1:] + x[:-1]) / 2
                edges_x = np.concatenate([[x[0] - (middle[0] - x[0])], middle,
                                          [x[-1] + (x[-1] - middle[-1])]])
            edges_y = np.arange(values.shape[0] + 1) - 0.5
            ax.set_facecolor("0.85")  # cells with no finite value show grey
            mesh = ax.pcolormesh(edges_x, edges_y, np.ma.masked_invalid(values),
                                 cmap="magma", shading="flat")
            bar = figure.colorbar(mesh, ax=ax, fraction=0.06, pad=0.02)
            bar.set_label(f"log10 {gradient_label(sites.get(name, ''), short=True)}")
            if moved and reach:
                # The reach moves: draw it over training.
                steps_w, values_w = zip(*reach)
                # The latest reach holds to the right edge of the map.
                steps_w += (max(edges_x[-1], steps_w[-1]),)
                values_w += (values_w[-1],)
                ax.step(steps_w, np.array(values_w) - 0.5, where="post", color="cyan",
                        ls="--", lw=1.2)
                ax.set_ylim(edges_y[0], edges_y[-1])  # a window past the profile: off the map
                backprop = values_w[-1]
            if backprop:
                if not (moved and reach):
                    ax.axhline(backprop - 0.5, color="cyan", ls="--", lw=1.2)
                note = {"auto": " (auto)", "set": " (latest)"}.get(moved, "")
                ax.annotate(f"TBPTT backprop={backprop}" + note,
                            xy=(1.0, backprop - 0.5),
                            xycoords=("axes fraction", "data"), xytext=(-4, 3),
                            textcoords="offset points", ha="right", fontsize=8,
                            color="cyan",
                            # Readable on the light end of the colour map too.
                            bbox={"facecolor": "black", "alpha": 0.55, "lw": 0, "pad": 1.5})
            ax.yaxis.get_major_locator().set_params(integer=True)
            _integer_steps(ax)
            if len(set(steps)) == 1:
                ax.set_xticks([steps[0]])
            ax.set_xlabel("training step of the measurement")
            ax.set_ylabel("steps back from the loss (time steps)")
            site = sites.get(name, "")
            ax.set_title(f"{name} ({site})" if site else name, loc="left", fontsize=11,
                         y=1.0)
        all_steps = [s for steps, _ in series.values() for s in steps]
        _suptitle(
            figure,
            "Gradient norm by time step and training step (grey: not finite or zero)"
            + _trend_note(all_steps),
        )
        return _save(figure, path or run.path / HEATMAP)


def _steps_label(run, measured):
    """The x label of training steps; says what a step is on TBPTT models."""
    backprop, window = _tbptt_steps(run)
    if not window:
        return "training step"
    lengths = [m.get("length") for m in measured if m.get("length")]
    latest = "latest " if _window_moved(run) else ""
    if lengths:
        updates = math.ceil(lengths[-1] / window)
        return (f"training step (one batch of {lengths[-1]} time steps = "
                f"{updates} TBPTT update{'s' if updates != 1 else ''}, {latest}window={window})")
    return f"training step (one batch; TBPTT makes one update per {latest}window of {window})"


def _draw_step_norms(ax, steps):
    """Each training step's `grad_norm` (finite ones): a line, or for
    thousands of steps a band of each bin's range and its median."""
    finite_steps = [s for s in steps if math.isfinite(records.number(s["grad_norm"]))]
    if not finite_steps:
        return
    x = np.array([s["step"] for s in finite_steps])
    values = _positive([records.number(s["grad_norm"]) for s in finite_steps])
    if len(x) <= 200:
        ax.plot(x, values, color="0.35", lw=0.8,
                marker="." if len(x) < 30 else None,
                label="grad_norm of each training step\n(its whole training batch)")
        return
    # Thousands of noisy steps read as a band: draw each bin's
    # range, and their median as the trend.
    bins = np.array_split(np.arange(len(x)), min(120, len(x) // 5))
    centres = [x[b].mean() for b in bins]
    ax.fill_between(
        centres,
        [np.nanmin(values[b]) for b in bins],
        [np.nanmax(values[b]) for b in bins],
        color="0.75", alpha=0.6, lw=0,
        label="grad_norm of the training steps\n(range per bin)",
    )
    ax.plot(centres, [np.nanmedian(values[b]) for b in bins],
            color="0.15", lw=1.3,
            label=f"median per bin of {len(x) // len(bins)} steps")


def _draw_probe_norms(ax, measured):
    """The measurements' global and per-layer norms, on the probe batch."""
    if not measured:
        return
    x = [m["step"] for m in measured]
    rows = measured[-1].get("sequences")
    # A smaller batch's mean gradient has a larger norm (the noise
    # of a mean of fewer samples): say how small the probe is.
    probe = f"probe batch, {rows} rows" if rows else "probe batch"
    ax.plot(x, _positive([records.number(m["global_norm"]) for m in measured]),
            "o-", color="black", ms=3.5, lw=1.2,
            label=f"global norm on the {probe}")
    names = list(measured[-1].get("layer_norms") or {})
    for i, name in enumerate(names[: len(_LAYER_COLOURS)]):
        values = [records.number((m.get("layer_norms") or {}).get(name)) for m in measured]
        label = f"layer {name} ({probe})"
        if len(label) > 44:  # a long layer name: the legend stays in the figure
            label = f"layer {name}\n({probe})"
        ax.plot(x, _positive([np.nan if v is None else v for v in values]),
                ".-", color=_LAYER_COLOURS[i], ms=3, lw=0.9, alpha=0.85, label=label)


def _draw_clipping(ax, run, summary):
    """AutoClip's threshold over training, and the suggested clipnorm."""
    clipping = [(s["step"], records.number(s.get("clip")), s["clipped_updates"])
                for s in run.steps if s.get("clipped_updates") is not None]
    if any(v is not None for _, v, _ in clipping):
        # Adaptive clipping: its threshold over training, NaN while off.
        clip_x = [x for x, _, _ in clipping]
        clip_v = [np.nan if v is None else v for _, v, _ in clipping]
        clipped = clipping[-1][2]
        ax.step(clip_x, clip_v, where="post", color="tab:blue", lw=1.4,
                label=f"AutoClip threshold ({clipped} updates clipped)")
    clip = summary.get("suggested_clipnorm")
    if clip and not summary.get("clip_note"):  # an adaptive optimizer: no clipnorm helps
        ax.axhline(clip, color="tab:green", ls="--", lw=1.2,
                   label=f"suggested global_clipnorm = {clip:g}\n({records.CLIP_BASIS})")


def _draw_step_losses(low, run, losses):
    """Each step's loss in the lower panel, with the TBPTT windows."""
    lx, ly = zip(*losses)
    low.plot(lx, ly, color="tab:blue", lw=0.8,
             marker="." if len(lx) < 30 else None)
    positive = [v for v in ly if v > 0]
    if positive and len(positive) == len(ly) and max(ly) / min(positive) > 20:
        low.set_yscale("log")
    low.set_ylabel("loss\n(per step)")
    low.grid(True, alpha=0.3)
    _draw_windows(low, run)


def plot_norms(run, path=None, summary=None):
    """Draws gradient norms over training; returns the PNG path or None.

    Args:
        run: A `records.Run`.
        path: Where to write the PNG (default `gradient_norms.png`).
        summary: `records.summarize(run)`, if already computed.
    """
    from matplotlib.transforms import blended_transform_factory

    steps = [s for s in run.steps if records.number(s.get("grad_norm")) is not None]
    measured = [m for m in run.measurements if m.get("global_norm") is not None]
    if not steps and not measured and not run.steps:
        return None
    summary = records.summarize(run) if summary is None else summary
    broken = sorted(
        {s["step"] for s in steps if not math.isfinite(records.number(s["grad_norm"]))}
        | {m["step"] for m in measured if not math.isfinite(records.number(m["global_norm"]))}
    )
    losses = [(s["step"], records.number(s.get("loss"))) for s in run.steps
              if records.number(s.get("loss")) is not None]
    losses = [(x, v) for x, v in losses if math.isfinite(v)]
    # The legend sits right of the axes, past the learning rate's axis when
    # the steps record one: room for both.
    rated = any(s.get("lr") is not None for s in run.steps)
    width, legend_room = (12.5, 4.3) if rated else (11.5, 3.3)
    height = 5.8 if losses else 4.4
    with _figure(width, height) as figure:
        figure.subplots_adjust(left=1.0 / width, right=1 - legend_room / width,
                               top=1 - 0.5 / height, bottom=0.6 / height, hspace=0.08)
        if losses:
            ax, low = figure.subplots(2, 1, sharex=True, height_ratios=[3, 1.3])
        else:
            ax, low = figure.subplots(), None
        _draw_step_norms(ax, steps)
        _draw_probe_norms(ax, measured)
        _draw_clipping(ax, run, summary)
        top = blended_transform_factory(ax.transData, ax.transAxes)
        _draw_alerts(ax, low, top, run.alerts)
        if broken:
            # Non-finite norms have no place on a log axis: mark them along
            # the bottom (alerts are along the top).
            ax.plot(broken, [0.03] * len(broken), "x", color="darkred", ms=8, mew=2,
                    ls="none", transform=top, clip_on=False,
                    label=f"non-finite norm ({len(broken)} step(s))")
        _log_scale(ax)
        rate_axis = _draw_learning_rate(ax, run)
        ax.set_ylabel("gradient norm (L2)")
        title = "Gradient norms over training"
        if not steps:
            title += " (no per-step grad_norm in the logs: probe batch only)"
        ax.set_title(title, y=1.0)  # a fixed position: placing it costs more
        ax.grid(True, alpha=0.3)
        _integer_steps(ax)
        if low is not None:
            _draw_step_losses(low, run, losses)
        (ax if low is None else low).set_xlabel(_steps_label(run, measured))
        handles, labels = ax.get_legend_handles_labels()
        if handles:
            # Outside the axes: the legend never hides a series.
            # Past the learning rate's axis labels when there is one.
            ax.legend(handles, labels, loc="upper left",
                      bbox_to_anchor=(1.02 if rate_axis is None else 1.12, 1.0),
                      fontsize=8, borderaxespad=0.0)
        return _save(figure, path or run.path / NORMS)


def _alert_label(kind, signal, alerts):
    """What fired, for the legend: e.g. "exploding: gradient norm jump (3)"."""
    if kind == "nonfinite":  # a value that turned NaN/Inf, not a jump
        words = "NaN/Inf in " + _NONFINITE_WORDS.get(signal, signal or "a value")
    else:
        words = _SIGNAL_WORDS.get(signal, signal or "alert")
    count = sum(1 + int(a.get("suppressed") or 0) for a in alerts)
    return f"{kind}: {words} ({count})"


def _draw_alerts(ax, low, top, alerts):
    """Alerts as markers along the top edge, one legend entry per kind and
    signal (colour: kind; shape: signal), with dotted lines through both
    panels."""
    found_kinds = {a.get("kind") for a in alerts}
    for kind in list(ALERT_STYLE) + sorted(k for k in found_kinds - set(ALERT_STYLE) if k):
        colour, marker = ALERT_STYLE.get(kind, _OTHER_KIND)
        of_kind = [a for a in alerts if a.get("kind") == kind]
        for step in sorted({a["step"] for a in of_kind}):
            for panel in (ax, low):
                if panel is not None:
                    panel.axvline(step, color=colour, alpha=0.45, lw=1, ls=":")
        signals = list(dict.fromkeys(a.get("signal") or "" for a in of_kind))
        shapes = [marker] + [m for m in _SIGNAL_MARKERS if m != marker]
        for signal, shape in zip(signals, shapes):
            fired = [a for a in of_kind if (a.get("signal") or "") == signal]
            steps = sorted({a["step"] for a in fired})
            ax.plot(steps, [0.97] * len(steps), shape, color=colour, ms=8, ls="none",
                    mec="black", mew=0.4, transform=top, clip_on=False,
                    label=_alert_label(kind, signal, fired))

def _draw_learning_rate(ax, run):
    """Each step's learning rate (the `lr` of the step records), on a
    right-hand log axis of `ax`; returns that axis, or None without `lr`."""
    rates = [(s["step"], records.number(s.get("lr"))) for s in run.steps
             if s.get("lr") is not None]
    rates = [(x, v) for x, v in rates if v is not None and math.isfinite(v) and v > 0]
    if not rates:
        return None
    steps, values = zip(*rates)
    colour = "darkgoldenrod"  # none of the norms' or the alerts' colours
    right = ax.twinx()
    right.step(steps, values, where="post", color=colour, lw=1.2, alpha=0.9)
    low, high = min(values), max(values)
    if low > 0:  # a rate of 0 (a warm-up's start) has no place on a log axis
        right.set_yscale("log")
        if high < 10 * low:
            # A flat or narrow series: a decade around it, so that it reads as flat.
            right.set_ylim(low / 3, high * 3)
        _readable_log_ticks(right)
    right.set_ylabel("learning rate", color=colour)
    right.tick_params(axis="y", colors=colour)
    ax.plot([], [], color=colour, lw=1.2, label="learning rate (right axis)")
    return right


def _draw_windows(ax, run):
    """The automatic window over training, on a right-hand axis of `ax`."""
    windows = _window_series(run)
    if not windows:
        return
    steps, values = zip(*windows)
    right = ax.twinx()
    right.step(steps, values, where="post", color="tab:purple", lw=1.2)
    right.set_ylabel("TBPTT window\n(auto)", color="tab:purple")
    right.tick_params(axis="y", colors="tab:purple")
    right.set_ylim(0, max(values) * 1.15)


def plot_update_ratios(run, path=None):
    """Draws each layer's update-to-weight ratio over training; returns the
    PNG path, or None when the records hold none.

    Args:
        run: A `records.Run`.
        path: Where to write the PNG (default `update_ratios.png`).
    """
    taken = [s for s in run.steps if s.get("update_ratios")]
    if not taken:
        return None
    names = list(dict.fromkeys(name for s in taken for name in s["update_ratios"]))
    width, legend_room = 11.5, 3.3
    height = 4.4
    with _figure(width, height) as figure:
        figure.subplots_adjust(left=1.0 / width, right=1 - legend_room / width,
                               top=1 - 0.5 / height, bottom=0.75 / height)
        ax = figure.subplots()
        ax.axhspan(_update_ratio.HEALTHY / 10, _update_ratio.HEALTHY * 10, color="tab:green",
                   alpha=0.08, lw=0, label="1e-4 .. 1e-2 (about 1e-3 is healthy, CS231n)")
        ax.axhline(_update_ratio.HIGH, color="tab:orange", ls="--", lw=1.2,
                   label=f"{_update_ratio.HIGH:g}: steps rewrite the layer (alert if it lasts)")
        for i, name in enumerate(names):
            points = [(s["step"], records.number(s["update_ratios"].get(name))) for s in taken
                      if s["update_ratios"].get(name) is not None]
            points = [(x, v) for x, v in points if math.isfinite(v) and v > 0]
            if points:
                x, v = zip(*points)
                ax.plot(x, v, ".-" if len(x) < 200 else "-", ms=3, lw=0.9,
                        color=_LAYER_COLOURS[i % len(_LAYER_COLOURS)], label=f"layer {name}")
        _log_scale(ax)
        ax.set_ylabel("‖Δw‖ / ‖w‖ of one step")
        ax.set_xlabel("training step")
        ax.set_title("Update-to-weight ratio per layer", y=1.0)
        ax.grid(True, alpha=0.3)
        _integer_steps(ax)
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, borderaxespad=0.0)
        return _save(figure, path or run.path / UPDATES)


def depth_series(run):
    """The measurements' depth profiles: `(steps, profiles, names)`, the
    layer names those of the latest profile (output first), each profile
    a `DepthProfile`; None when the records hold none."""
    taken = [(int(m["step"]), depth_lib.DepthProfile.from_record(m.get("depth")))
             for m in run.measurements if m.get("depth") and not m.get("suspect")]
    taken = [(step, profile) for step, profile in taken if profile is not None and len(profile)]
    if not taken:
        return None
    steps, profiles = zip(*taken)
    return list(steps), list(profiles), list(reversed(profiles[-1].layers))


def _by_name(profile, values, names):
    """`values` of `profile` (by its layers) at `names`, NaN where absent."""
    position = {name: i for i, name in enumerate(profile.layers)}
    return np.array([values[position[n]] if n in position else np.nan for n in names])


def _block_spans(blocks):
    """Runs of one residual block in `blocks` (one number or None per
    layer, as drawn): `(first, last, number)` index pairs."""
    spans = []
    for index, block in enumerate(blocks):
        if block is None:
            continue
        if spans and spans[-1][2] == block and spans[-1][1] == index - 1:
            spans[-1] = (spans[-1][0], index, block)
        else:
            spans.append((index, index, block))
    return spans


def _layer_ticks(ax, names, blocks=()):
    """Layer names on the x axis, a residual block's layers under one label
    ("block 3 (4 layers)", at its middle); at most MAX_LAYER_TICKS labels,
    none closer than 1/MAX_LAYER_TICKS of the axis (from the left, the
    others are left out). Returns the block spans (see `_block_spans`)."""
    count = len(names)
    spans = _block_spans(blocks)
    inside = {i for first, last, _ in spans for i in range(first, last + 1)}
    labels = sorted(
        [((first + last) / 2, f"block {number} ({last - first + 1} layer"
          + ("s)" if last > first else ")")) for first, last, number in spans]
        + [(i, names[i]) for i in range(count) if i not in inside]
    )
    gap = max(1.0, count / MAX_LAYER_TICKS)
    kept = []
    for at, text in labels:
        if not kept or at - kept[-1][0] >= gap:
            kept.append((at, text))
    ax.set_xticks([at for at, _ in kept])
    ax.set_xticklabels([text for _, text in kept], rotation=90,
                       fontsize=8 if len(kept) <= 20 else 6.5)
    ax.set_xlim(-0.5, count - 0.5)
    return spans


def _draw_depth_reference(top, low, latest, names, fraction):
    """The layer the depth alerts compare with, and the latest
    measurement's vanishing threshold below it."""
    reference = latest.reference
    if reference is None:
        return
    at = names.index(latest.layers[reference])
    value = latest.output_grad[reference]
    for ax in (top, low):
        ax.axvline(at, color="0.4", ls="--", lw=1)
    if value > 0:
        top.axhline(value * fraction, color=ALERT_STYLE["vanishing"][0], ls=":", lw=1.2,
                    label=f"vanishing_fraction={fraction:g} of the reference "
                          "(latest)")
    top.annotate(f"reference: {latest.layers[reference]}\n(last layer before "
                 "the output)", xy=(at, 1.0), xycoords=("data", "axes fraction"),
                 xytext=(4, -4), textcoords="offset points", ha="left", va="top",
                 fontsize=8, color="0.3")


def _draw_depth_alerts(top, alerts, names):
    """Depth alerts, marked at the layer they name."""
    for alert in alerts:
        if alert.get("signal") == "depth" and alert.get("layer") in names:
            colour, marker = ALERT_STYLE.get(alert.get("kind"), _OTHER_KIND)
            top.plot([names.index(alert["layer"])], [0.97], marker, color=colour, ms=9,
                     mec="black", mew=0.4, ls="none", clip_on=False,
                     transform=top.get_xaxis_transform(),
                     label=f"{alert.get('kind')} across depth (step {alert.get('step')})")


def plot_depth(run, path=None):
    """Draws the gradient across depth; returns the PNG path, or None.

    Two panels share the layers (from the output, left, back to the input,
    right; the layers of a residual block shaded and named once, e.g.
    "block 3 (4 layers)"; names thinned past 40 labels): the gradient reaching each
    layer's output ‖∂L/∂a‖, and its weights' gradient relative to the
    weights ‖∇w‖/‖w‖; one curve per measurement (at most 40), coloured by
    training step. The layer the depth alerts compare with is marked, with
    the latest measurement's vanishing threshold below it; depth alerts
    are marked at the layer they name.

    Args:
        run: A `records.Run`.
        path: Where to write the PNG (default `depth_profile.png`).
    """
    from matplotlib import cm
    from matplotlib.colors import Normalize

    series = depth_series(run)
    if series is None:
        return None
    steps, profiles, names = series
    fraction = (run.settings.get("settings") or {}).get("vanishing_fraction", 1e-3)
    count = len(names)
    width = min(22.0, max(9.0, 3.5 + 0.16 * count))
    # Room under the axes for the longest layer name (rotated, 8 pt: about
    # 0.07 in a character) and the axis label below it.
    bottom = max(1.5, 0.55 + 0.07 * max(len(name) for name in names))
    height = 6.1 + bottom
    with _figure(width, height) as figure:
        figure.subplots_adjust(left=1.0 / width, right=1 - 1.3 / width,
                               top=1 - 0.75 / height, bottom=bottom / height, hspace=0.12)
        top, low = figure.subplots(2, 1, sharex=True)
        norm = Normalize(min(steps), max(max(steps), min(steps) + 1))
        picked = _picked(len(steps))
        x = np.arange(count)
        for i in picked:
            profile = profiles[i]
            style = dict(color=cm.viridis(norm(steps[i])), lw=1.6 if i == picked[-1] else 0.9,
                         alpha=1.0 if i == picked[-1] else 0.6,
                         marker="o" if count <= 30 else None, ms=3)
            top.plot(x, _positive(_by_name(profile, profile.output_grad, names)), **style)
            low.plot(x, _positive(_by_name(profile, profile.weight_ratio, names)), **style)
        latest = profiles[-1]
        reference = latest.reference
        _draw_depth_reference(top, low, latest, names, fraction)
        _draw_depth_alerts(top, run.alerts, names)
        for ax in (top, low):
            _log_scale(ax)
            ax.grid(True, which="major", alpha=0.3)
        top.set_ylabel("gradient reaching the layer\n‖∂L/∂output‖ (L2, mean per row)")
        low.set_ylabel("weights' gradient / weights\n‖∇w‖ / ‖w‖")
        blocks = dict(zip(latest.layers, latest.blocks))
        spans = _layer_ticks(low, names, [blocks.get(name) for name in names])
        for shade, (first, last, _) in enumerate(spans):
            # Alternating greys: neighbouring blocks stay apart.
            for ax in (top, low):
                ax.axvspan(first - 0.5, last + 0.5, color="0.88" if shade % 2 else "0.94",
                           zorder=0, lw=0)
        low.set_xlabel("layers, from the output (left) back to the input (right)"
                       + ("; shaded: residual blocks (from a skip's source to its merge)"
                          if spans else ""))
        handles, labels = top.get_legend_handles_labels()
        unique = dict(zip(labels, handles))
        if unique:
            top.legend(unique.values(), unique.keys(), loc="lower left", fontsize=8)
        if len(set(steps)) > 1:
            bar_axes = figure.add_axes([1 - 1.0 / width, bottom / height, 0.18 / width,
                                        1 - (bottom + 0.75) / height])
            bar = figure.colorbar(cm.ScalarMappable(norm=norm, cmap=cm.viridis), cax=bar_axes)
            bar.set_label("training step of the measurement")
        first = latest.fractions()[0] if reference is not None else float("nan")
        said = (f"\nlatest (step {steps[-1]}): the first layer gets "
                f"{depth_lib.share_of(first)} the reference's gradient"
                + (" (below float32's range)" if first == 0 else "")
                if math.isfinite(first) else "")
        _suptitle(
            figure,
            f"Gradient across depth, {count} layers, {len(steps)} measurement(s)"
            + (f" ({len(picked)} drawn)" if len(steps) > len(picked) else "") + said,
        )
        return _save(figure, path or run.path / DEPTH)


def plot_all(run, summary=None, folder=None):
    """Draws every plot the records allow; returns the written paths.

    The records are read once: each series is computed once for all plots.

    Args:
        run: A `records.Run`.
        summary: `records.summarize(run)`, if already computed.
        folder: Where to write the PNGs (default: the run folder).

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
    series = layer_series(run)
    folder = run.path if folder is None else pathlib.Path(folder)
    paths = [
        plot_decay(run, folder / DECAY, series=series),
        plot_heatmap(run, folder / HEATMAP, series=series),
        plot_norms(run, folder / NORMS, summary=summary),
        plot_update_ratios(run, folder / UPDATES),
        plot_depth(run, folder / DEPTH),
    ]
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
    legend_room = 1.0 + 0.22 * len(runs)  # inches below the axes
    width, height = 8.5, 3.8 + legend_room
    with _figure(width, height) as figure:
        figure.subplots_adjust(left=0.85 / width, right=1 - 0.25 / width,
                               top=1 - 0.45 / height, bottom=legend_room / height)
        ax = figure.subplots()
        drawn, sites = 0, set()
        # Runs in folders of the same name (w_10/gw, w_40/gw) stay apart.
        labels = records.run_labels([run.path for run in runs])
        for run, run_label in zip(runs, labels):
            series = layer_series(run)
            name = layer if layer in series else next(iter(series), None)
            if name is None:
                continue
            steps, table = series[name]
            stats = (run.measurements[-1].get("layers") or {}).get(name, {})
            sites.add(_sites(run).get(name, ""))
            ax.plot(
                _positive(table[-1]),
                lw=1.6,
                label=(
                    f"{run_label}: {name} at step {steps[-1]} (decay "
                    f"{records.number(stats.get('decay_rate', float('nan'))):.3f}"
                    f"/step, horizon {stats.get('horizon', '?')})"
                ),
            )
            drawn += 1
        _log_scale(ax)
        _integer_lags(ax)
        ax.set_xlabel("steps back from the loss (time steps)")
        site = sites.pop() if len(sites) == 1 else ""
        ax.set_ylabel(f"{gradient_label(site)} (L2)")
        ax.set_title(f"Gradient decay in time: {drawn} run(s), latest measurement", y=1.0)
        ax.grid(True, alpha=0.3)
        if drawn:
            # Below the axes: the legend never hides a curve.
            ax.legend(loc="upper left", bbox_to_anchor=(0.0, -0.75 / (height - legend_room - 0.45)),
                      fontsize=8, borderaxespad=0.0)
        return _save(figure, path)
