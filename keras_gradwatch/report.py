"""`report.html`: one self-contained page that reviews a run.

`write_report(log_dir)` reads the run's records (see `records`), redraws the
plots (see `plots`) and writes `report.html` into the run folder: the plots
embedded as images, a summary table per layer, the global figures, the
alerts with their suggestions and the run's settings. It needs nothing but
the records, so a crashed run gets a report too.
"""

import base64
import datetime
import html
import json
import os

from keras_gradwatch import plots
from keras_gradwatch import records

REPORT = "report.html"

_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1100px;
       color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.6em 0; }
th, td { border: 1px solid #ccc; padding: 4px 10px; text-align: left; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.status { display: inline-block; padding: 2px 8px; border-radius: 4px; background: #eee; }
.nonfinite { color: #b00020; } .exploding { color: #c55a00; } .vanishing { color: #1f5fa8; }
img { max-width: 100%; border: 1px solid #ddd; margin: 0.5em 0; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; }
.muted { color: #666; }
.note { background: #fff6d6; border: 1px solid #e8d48a; padding: 6px 10px; }
"""


def _fmt(value, digits=4):
    number = records.number(value) if isinstance(value, (str, float, int)) else value
    if number is None:
        return "—"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if number != number:  # NaN
        return "NaN"
    return f"{number:.{digits}g}"


def _percent(fraction):
    return f"{100 * float(fraction):g} %"


def _image(path):
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(path.name)}" src="data:image/png;base64,{data}">'


def render(run, images, summary=None):
    """The HTML text of a run's report.

    Args:
        run: A `records.Run`.
        images: Paths of the PNG plots to embed.
        summary: `records.summarize(run)`, if already computed.
    """
    summary = records.summarize(run) if summary is None else summary
    settings = run.settings
    options = settings.get("settings") or {}
    tbptt = settings.get("tbptt")
    e = html.escape
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>GradWatch report: {e(run.path.name)}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>GradWatch report: {e(run.path.name)}</h1>",
        f"<p class='muted'>Model <b>{e(str(settings.get('model', '?')))}</b>"
        + (
            f", truncated BPTT {e(records.describe_tbptt(tbptt, summary.get('window')))}"
            if tbptt
            else ""
        )
        + f". Written {datetime.datetime.now().isoformat(timespec='seconds')} "
        f"from the records in <code>{e(str(run.path))}</code>.</p>",
        f"<p>Status: <span class='status'>{e(str(summary['status']))}</span> "
        f"after {summary['steps']} steps, {summary['epochs']} epoch(s), "
        f"{summary['measurements']} measurement(s).</p>",
    ]
    note = records.trend_note(summary)
    if note:
        parts.append(f"<p class='note'>{e(note)}</p>")
    parts.append("<h2>Layers</h2>")
    layers = summary["layers"]
    if layers:
        parts.append(
            "<table><tr><th>layer</th><th>site</th><th>decay rate (per step)"
            "</th><th>horizon (steps)</th><th>truncation bias at backprop"
            "</th><th>backprop (steps)</th><th>suggested window</th></tr>"
        )
        for name, values in layers.items():
            parts.append(
                f"<tr><td>{e(name)}</td><td>{e(str(values.get('site', '')))}</td>"
                f"<td class='num'>{_fmt(values.get('decay_rate'))}</td>"
                f"<td class='num'>{_fmt(values.get('horizon'))}</td>"
                f"<td class='num'>{_fmt(values.get('truncation_bias'))}</td>"
                f"<td class='num'>{_fmt(values.get('backprop'))}</td>"
                f"<td class='num'>{_fmt(values.get('suggested_window'))}</td></tr>"
            )
        parts.append(
            "</table><p class='muted'>From the latest measurement, at step "
            f"{summary.get('measured_at_step')}. Decay rate: "
            "per-step factor of the gradient going back in time (below 1: it "
            "vanishes; above 1: it explodes). Horizon: first lag where the "
            f"gradient falls below {_percent(options.get('threshold', 0.01))} of "
            "the gradient entering the recurrence (one step back from the "
            "loss). Truncation bias: share of the gradient beyond backprop, "
            "the steps each truncated BPTT update reaches, which it drops. "
            "Suggested window: the smallest with a bias of at most "
            f"{_percent(options.get('tolerance', 0.05))}.</p>"
        )
    else:
        parts.append("<p class='muted'>No time profile was measured.</p>")
    parts += [
        "<h2>Gradient norms</h2><table>",
        f"<tr><th>median gradient norm</th><td class='num'>{_fmt(summary['median_grad_norm'])}</td></tr>",
        f"<tr><th>suggested global_clipnorm</th><td class='num'>{_fmt(summary['suggested_clipnorm'])}</td></tr>",
        f"<tr><th>skipped updates</th><td class='num'>{_fmt(summary['skipped_updates'])}</td></tr>",
        "</table>",
        "<h2>Plots</h2>",
    ]
    parts += [_image(path) for path in images] or ["<p class='muted'>No plot.</p>"]
    counts = ", ".join(f"{kind} {count}" for kind, count in summary["alerts"].items())
    parts.append(f"<h2>Alerts</h2><p>Occurrences: {e(counts)}.</p>")
    if run.alerts:
        parts.append(
            "<table><tr><th>step</th><th>epoch</th><th>kind</th><th>layer</th>"
            "<th>value</th><th>threshold</th><th>message</th></tr>"
        )
        for alert in run.alerts:
            kind = e(str(alert.get("kind")))
            more = alert.get("suppressed") or 0
            parts.append(
                f"<tr><td class='num'>{alert.get('step')}</td>"
                f"<td class='num'>{alert.get('epoch')}</td>"
                f"<td class='{kind}'>{kind}</td>"
                f"<td>{e(str(alert.get('layer') or '—'))}</td>"
                f"<td class='num'>{_fmt(alert.get('value'))}</td>"
                f"<td class='num'>{_fmt(alert.get('threshold'))}</td>"
                f"<td>{e(str(alert.get('message')))}"
                + (f" <span class='muted'>({more} similar not shown)</span>" if more else "")
                + "</td></tr>"
            )
        parts.append("</table>")
    else:
        parts.append("<p class='muted'>No alert.</p>")
    parts += [
        "<h2>Settings</h2>",
        f"<pre>{e(json.dumps(settings, indent=2))}</pre>",
        "</body></html>",
    ]
    return "\n".join(parts)


def write_report(log_dir):
    """Redraws the plots and writes `report.html` into the run folder.

    Args:
        log_dir: A run folder written by `GradWatch`.

    Returns:
        The path of `report.html`.

    Raises:
        RunDirectoryError: If the folder holds no readable records.

    Example:

    >>> import tempfile
    >>> from keras_gradwatch.records import RunWriter
    >>> from keras_gradwatch.report import write_report
    >>> writer = RunWriter(tempfile.mkdtemp())
    >>> writer.open()
    >>> writer.append("steps.jsonl", {"step": 1, "loss": 0.5})
    >>> write_report(writer.path).name
    'report.html'
    """
    run = records.load_run(log_dir)
    summary = records.summarize(run)  # once, for the plots and the page
    images = plots.plot_all(run, summary=summary)
    path = run.path / REPORT
    temporary = path.with_name(f".{REPORT}.{os.getpid()}.tmp")
    temporary.write_text(render(run, images, summary), encoding="utf-8")
    os.replace(temporary, path)
    return path
