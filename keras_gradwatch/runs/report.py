"""`report.html`: one self-contained page that reviews a run.

`write_report(log_dir)` reads the run's records (see `records`), redraws the
plots (see `plots`) and writes `report.html` into the run folder: the plots
embedded as images, a summary table per layer, the global figures, the
alerts with their suggestions and the run's settings. It needs nothing but
the records, so a crashed run gets a report too.
"""

import datetime
import html
import json
import os
import pathlib
import tempfile

from keras_gradwatch.core import depth as depth_lib
from keras_gradwatch.core._detectors import kinds
from keras_gradwatch.runs import _html
from keras_gradwatch.runs import plots
from keras_gradwatch.runs import records

REPORT = "report.html"

_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1100px;
       color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.6em 0; }
th, td { border: 1px solid #ccc; padding: 4px 10px; text-align: left; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.status { display: inline-block; padding: 2px 8px; border-radius: 4px; background: #eee; }
img { max-width: 100%; border: 1px solid #ddd; margin: 0.5em 0; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; }
.muted { color: #666; }
.note { background: #fff6d6; border: 1px solid #e8d48a; padding: 6px 10px; }
""" + kinds.css() + "\n"


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
        _html.status_line(summary),
    ]
    note = records.trend_note(summary)
    if note:
        parts.append(f"<p class='note'>{e(note)}</p>")
    parts.append("<h2>Layers</h2>")
    parts.append(_html.layer_table(summary, options, alerts=run.alerts))
    if summary.get("depth"):
        parts.append(f"<p>Across depth (latest): "
                     f"{e(depth_lib.finding_text(summary['depth']))}.</p>")
    parts += [
        "<h2>Gradient norms</h2><table>",
        f"<tr><th>median gradient norm (whole run)</th><td class='num'>{_html.fmt(summary['median_grad_norm'])}</td></tr>",
        f"<tr><th>suggested global_clipnorm</th>"
        f"<td>{e(records.clip_suggestion_text(summary))}</td></tr>",
        f"<tr><th>skipped updates</th><td class='num'>{_html.fmt(summary['skipped_updates'])}</td></tr>",
        *(
            [f"<tr><th>updates clipped by AutoClip</th><td class='num'>{_html.fmt(summary['clipped_updates'])}</td></tr>",
             f"<tr><th>AutoClip threshold (latest)</th><td class='num'>{_html.fmt(summary['clip'])}</td></tr>"]
            if summary.get("clipped_updates") is not None else []
        ),
        "</table>",
        _html.own_time(summary, report=True),
        _html.ratio_table(summary),
        "<h2>Plots</h2>",
    ]
    parts += [_html.image(path) for path in images] or ["<p class='muted'>No plot.</p>"]
    counts = ", ".join(f"{kind} {count}" for kind, count in summary["alerts"].items())
    parts.append(f"<h2>Alerts</h2><p>Occurrences: {e(counts)}.</p>")
    parts.append(_html.alert_table(run.alerts))
    parts += [
        "<h2>Settings</h2>",
        f"<pre>{e(json.dumps(settings, indent=2))}</pre>",
        "</body></html>",
    ]
    return "\n".join(parts)


def write_report(log_dir, output=None):
    """Redraws the plots and writes `report.html` into the run folder.

    Args:
        log_dir: A run folder written by `GradWatch`.
        output: The folder to write the page and the plots into instead
            (created if missing), e.g. when the run sits on a read-only disk.

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
    folder = run.path if output is None else pathlib.Path(output)
    folder.mkdir(parents=True, exist_ok=True)
    summary = records.summarize(run)  # once, for the plots and the page
    images = plots.plot_all(run, summary=summary, folder=folder)
    path = folder / REPORT
    text = render(run, images, summary)
    # Created exclusively, then renamed: a symlink planted at either name
    # is not written through.
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{REPORT}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(temporary, path)
    finally:
        if os.path.lexists(temporary):
            os.unlink(temporary)
    return path
