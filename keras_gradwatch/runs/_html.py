"""Private: the HTML pieces of a run's review, from plain values.

`report.html` (the full page) and the notebook display of a run
(`records.Run._repr_html_`, `GradWatch._repr_html_`) are built from these
pieces, so the two always show the same tables. They take dicts, lists and
paths as the records hold them and import nothing of the package but the
registry of alert kinds (its colours): the records can display themselves
without importing the report.
"""

import base64
import html

from keras_gradwatch.core._detectors import kinds

STYLE = """
.gw-run table { border-collapse: collapse; margin: 0.6em 0; }
.gw-run th, .gw-run td { border: 1px solid #ccc; padding: 4px 10px; text-align: left; }
.gw-run th { background: #f3f3f3; }
.gw-run td.num { text-align: right; font-variant-numeric: tabular-nums; }
.gw-run .status { display: inline-block; padding: 2px 8px; border-radius: 4px; background: #eee; }
.gw-run img { max-width: 100%; border: 1px solid #ddd; margin: 0.5em 0; }
.gw-run .muted { color: #666; }
.gw-run .note { background: #fff6d6; border: 1px solid #e8d48a; padding: 6px 10px; }
""" + kinds.css(".gw-run ") + "\n"

escape = html.escape


def fmt(value, digits=4):
    """A number as the tables show it: "—" for none, "NaN", 4 digits."""
    if value is None:
        return "—"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    try:
        number = float(value)  # also "NaN" / "Infinity" as the records write them
    except (TypeError, ValueError):
        return escape(str(value))
    if number != number:
        return "NaN"
    return f"{number:.{digits}g}"


def percent(fraction):
    try:
        return f"{100 * float(fraction):g} %"
    except (TypeError, ValueError):
        return str(fraction)  # a damaged setting: shown as it is (and escaped)


def image(path):
    """An `<img>` holding the PNG at `path` (embedded: the page stands alone)."""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{escape(path.name)}" src="data:image/png;base64,{data}">'


def status_line(summary):
    return (
        f"<p>Status: <span class='status'>{escape(str(summary['status']))}</span> "
        f"after {escape(str(summary['steps']))} steps, "
        f"{escape(str(summary['epochs']))} epoch(s), "
        f"{escape(str(summary['measurements']))} measurement(s).</p>"
        + (f"<p class='note'>Recording stopped: {escape(str(summary['recording_error']))}; "
           "the records after it are missing.</p>"
           if summary.get("recording_error") else "")
    )


NO_TRUNCATION = "n/a (no truncation)"


def layer_alerts(alerts, name):
    """The alerts on layer `name`, as counts per kind ("exploding 2"), or
    "none": what the alerts decided about the layer."""
    counts = {}
    for alert in alerts or ():
        if alert.get("layer") == name:
            kind = str(alert.get("kind"))
            counts[kind] = counts.get(kind, 0) + 1 + int(alert.get("suppressed") or 0)
    return ", ".join(f"{kind} {count}" for kind, count in counts.items()) or "none"


def decay_explanation(options):
    """What the layer table's columns mean, in words that agree with the
    alerts' verdicts (plain text)."""
    return (
        "Decay rate: the per-step factor of the gradient going back in time, "
        "fitted over the whole profile (0.9: each step further back gets 10 % "
        "less gradient; 1.14: 14 % more). It describes the profile, it is not "
        "a verdict: a rate above 1 is not by itself an explosion (the "
        "gradient can be larger further back where the useful inputs sit, "
        "e.g. a sentence padded at its end), and a rate below 1 is how a healthy "
        "recurrence forgets. Whether a layer's gradient explodes or vanishes "
        "is what the alerts decided, from more evidence (how long the growth "
        "lasts, the loss, repeated measurements): see the alerts column and "
        "the Alerts section. Horizon: first lag where the gradient falls "
        f"below {percent(options.get('threshold', 0.01))} of the gradient "
        "entering the recurrence (one step back from the loss). Truncation "
        "bias: share of the gradient beyond backprop, the steps each "
        f"truncated BPTT update reaches, which it drops; \"{NO_TRUNCATION}\" "
        "when the model trains on whole sequences. Suggested window: the "
        "smallest with a bias of at most "
        f"{percent(options.get('tolerance', 0.05))}."
    )


def layer_table(summary, options, explain=True, alerts=None):
    """The per-layer table of the latest measurement (and what it means).

    Args:
        summary: The run's summary dict.
        options: The GradWatch settings recorded in `run.json`.
        explain: Add the paragraph that says what the columns mean (the
            notebook card shows a one-line version).
        alerts: The alert records, for the per-layer alerts column.
    """
    layers = summary["layers"]
    if not layers:
        return "<p class='muted'>No time profile was measured.</p>"
    parts = [
        "<table><tr><th>layer</th><th>site</th><th>decay rate (per step)"
        "</th><th>horizon (steps)</th><th>truncation bias at backprop"
        "</th><th>backprop (steps)</th><th>suggested window</th>"
        "<th>alerts on the layer</th></tr>"
    ]
    for name, values in layers.items():
        truncated = values.get("backprop") is not None
        bias = fmt(values.get("truncation_bias")) if truncated else NO_TRUNCATION
        parts.append(
            f"<tr><td>{escape(name)}</td><td>{escape(str(values.get('site', '')))}</td>"
            f"<td class='num'>{fmt(values.get('decay_rate'))}</td>"
            f"<td class='num'>{fmt(values.get('horizon'))}</td>"
            f"<td class='num'>{bias}</td>"
            f"<td class='num'>{fmt(values.get('backprop'))}</td>"
            f"<td class='num'>{fmt(values.get('suggested_window'))}</td>"
            f"<td>{escape(layer_alerts(alerts, name))}</td></tr>"
        )
    parts.append("</table>")
    where = f"From the latest measurement, at step {escape(str(summary.get('measured_at_step')))}."
    if not explain:
        return "".join(parts) + (
            f"<p class='muted'>{where} A decay rate above 1 is not by itself "
            "an explosion: the alerts column says what the alerts decided.</p>"
        )
    parts.append(f"<p class='muted'>{where} {escape(decay_explanation(options))}</p>")
    return "".join(parts)


def _seconds(value, digits):
    """`digits` significant digits, never an exponent (123 s, not 1.2e+02)."""
    return f"{value:.0f}" if abs(value) >= 10 ** digits else f"{value:.{digits}g}"


def own_time_text(summary):
    """GradWatch's own time against the time in `fit`, as the summary,
    report and notebook card say it, or "" before any is recorded.

    Args:
        summary: A summary dict with `own_time` (see `records.summarize`).

    Example:

    >>> own_time_text({"own_time": {"seconds": 0.5, "fit_seconds": 20.0,
    ...                             "cpu_seconds": 1.0, "fit_cpu_seconds": 50.0}})
    '0.5 s of 20 s in fit (2.5 %) wall clock; 1 s of 50 s (2 %) CPU'
    """
    own = summary.get("own_time") or {}

    def share(inside, total):
        inside, total = own.get(inside), own.get(total)
        if inside is None or not total:
            return None
        try:
            inside, total = float(inside), float(total)
        except (TypeError, ValueError):
            return None
        if not total > 0:
            return None
        return (f"{_seconds(inside, 2)} s of {_seconds(total, 3)} s",
                f"{_seconds(100 * inside / total, 2)} %")

    wall = share("seconds", "fit_seconds")
    if wall is None:
        return ""
    text = f"{wall[0]} in fit ({wall[1]}) wall clock"
    one_off = own.get("one_off_seconds")
    if isinstance(one_off, (int, float)) and one_off > 0:
        text += f", of which {_seconds(one_off, 2)} s one-off tracing"
    cpu = share("cpu_seconds", "fit_cpu_seconds")
    if cpu is None:
        return text
    text += f"; {cpu[0]} ({cpu[1]}) CPU"
    one_off_cpu, total = own.get("one_off_cpu_seconds"), own.get("fit_cpu_seconds")
    if isinstance(one_off_cpu, (int, float)) and one_off_cpu > 0:
        # Tracing ran inside the fit: taken out of both.
        steady = max(float(own["cpu_seconds"]) - one_off_cpu, 0.0)
        rest = float(total) - one_off_cpu
        if rest > 0:
            text += f", {_seconds(100 * steady / rest, 2)} % without the tracing"
    return text


def own_time(summary, report=False):
    """A paragraph with GradWatch's own time and its share of the fit, or ""."""
    text = own_time_text(summary)
    if not text:
        return ""
    # The report is drawn at the end of a fit: its own drawing comes after.
    later = " (up to the drawing of this page)" if report else ""
    return f"<p>GradWatch's own time{later}: {escape(text)}.</p>"


def ratio_table(summary):
    """The latest update-to-weight ratio of each layer, or "" if none."""
    ratios = summary.get("update_ratios")
    if not ratios:
        return ""
    rows = "".join(
        f"<tr><td>{escape(name)}</td><td class='num'>{fmt(value, 3)}</td></tr>"
        for name, value in ratios.items()
    )
    return (
        "<table><tr><th>layer</th><th>update / weights (‖Δw‖/‖w‖)</th></tr>"
        f"{rows}</table><p class='muted'>One training step, at step "
        f"{escape(str(summary.get('update_ratio_step')))}. About 1e-3 is healthy (CS231n); "
        "far below, the learning rate is likely too low; above 0.1 steps "
        "rewrite the layer (an exploding alert when it lasts).</p>"
    )


def alert_table(alerts, limit=None):
    """The alerts, oldest first (with `limit`: the latest `limit` of them)."""
    if not alerts:
        return "<p class='muted'>No alert.</p>"
    shown = alerts if limit is None else alerts[-limit:]
    parts = []
    if len(shown) < len(alerts):
        parts.append(f"<p class='muted'>The latest {len(shown)} of {len(alerts)} alerts.</p>")
    parts.append(
        "<table><tr><th>step</th><th>epoch</th><th>kind</th><th>layer</th>"
        "<th>value</th><th>threshold</th><th>message</th></tr>"
    )
    for alert in shown:
        kind = escape(str(alert.get("kind")))
        more = alert.get("suppressed") or 0
        parts.append(
            f"<tr><td class='num'>{escape(str(alert.get('step')))}</td>"
            f"<td class='num'>{escape(str(alert.get('epoch')))}</td>"
            f"<td class='{kind}'>{kind}</td>"
            f"<td>{escape(str(alert.get('layer') or '—'))}</td>"
            f"<td class='num'>{fmt(alert.get('value'))}</td>"
            f"<td class='num'>{fmt(alert.get('threshold'))}</td>"
            f"<td>{escape(str(alert.get('message')))}"
            + (f" <span class='muted'>({escape(str(more))} similar not shown)</span>" if more else "")
            + "</td></tr>"
        )
    parts.append("</table>")
    return "".join(parts)


def run_card(title, model_line, summary, options, alerts, decay_png=None, note=None,
             depth_png=None):
    """The compact view of a run a notebook shows: status, layers, the latest
    alerts, the decay plot and the depth plot, in one `<div>` with its own
    scoped style.

    Args:
        title: The run's name.
        model_line: What was trained (model, TBPTT setting), plain text.
        summary: The run's summary dict (`records.summarize`).
        options: The GradWatch settings recorded in `run.json`.
        alerts: The alert records.
        decay_png: Path of the decay plot, if drawn.
        depth_png: Path of the depth plot, if drawn.
        note: A sentence to show first (e.g. too few measurements), or None.
    """
    counts = ", ".join(f"{kind} {count}" for kind, count in summary["alerts"].items())
    parts = [
        f"<div class='gw-run'><style>{STYLE}</style>",
        f"<b>GradWatch run {escape(title)}</b> <span class='muted'>({escape(model_line)})</span>",
        status_line(summary),
    ]
    if note:
        parts.append(f"<p class='note'>{escape(note)}</p>")
    parts.append(layer_table(summary, options, explain=False, alerts=alerts))
    parts.append(
        f"<p>Median gradient norm {fmt(summary['median_grad_norm'])}; "
        f"skipped updates {fmt(summary['skipped_updates'])}; alerts: {escape(counts)}"
        + (f"; adaptive clipping: {fmt(summary.get('clipped_updates'))} updates clipped, "
           f"latest threshold {fmt(summary.get('clip'))}"
           if summary.get("clipped_updates") is not None else "")
        + ".</p>"
    )
    parts.append(own_time(summary))
    parts.append(ratio_table(summary))
    parts.append(alert_table(alerts, limit=5))
    if decay_png is not None or depth_png is not None:
        parts += [image(png) for png in (decay_png, depth_png) if png is not None]
    else:
        parts.append(
            "<p class='muted'>No plot drawn yet: <code>gradwatch report RUN</code> "
            "(or <code>GradWatch.draw()</code>) draws them.</p>"
        )
    parts.append("</div>")
    return "\n".join(parts)
