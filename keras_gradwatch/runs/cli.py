"""The `gradwatch` command: review runs from their saved records.

    gradwatch report RUN_DIR [-o DIR]   redraw the plots, write report.html
    gradwatch summary RUN_DIR           print the summary table
    gradwatch compare RUN_A RUN_B ...   decay profiles of several runs

Also `python -m keras_gradwatch ...`. A bad path or unreadable records give
a one-line message on stderr and exit status 1; damaged records that were
skipped give a one-line warning each (`gradwatch summary: warning: ...`) and
the rest is shown; bad usage exits with 2. Output cut short by its reader
(`gradwatch summary RUN | head -1`) ends quietly.
"""

import argparse
import os
import sys
import warnings

from keras_gradwatch.core import depth as depth_lib
from keras_gradwatch.core.errors import KerasGradwatchError
from keras_gradwatch.runs import _html
from keras_gradwatch.runs import plots
from keras_gradwatch.runs import records
from keras_gradwatch.runs import report


def _number(value, digits=4):
    number = records.number(value) if value is not None else None
    if number is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    return f"{number:.{digits}g}"


def summary_text(run):
    """The summary table of a run, as plain text."""
    summary = records.summarize(run)
    tbptt = run.settings.get("tbptt")
    lines = [
        f"Run {run.path} (model {run.settings.get('model', '?')}"
        + (
            f", TBPTT {records.describe_tbptt(tbptt, summary.get('window'))}"
            if tbptt
            else ""
        )
        + f"): {summary['status']}, {summary['steps']} steps, "
        f"{summary['epochs']} epoch(s), {summary['measurements']} measurement(s).",
    ]
    if summary.get("recording_error"):
        lines.append(f"Recording stopped: {summary['recording_error']}; the records "
                     "after it are missing.")
    note = records.trend_note(summary)
    lines += [note, ""] if note else [""]
    lines += _layer_lines(summary, run.alerts)
    if summary.get("depth"):
        lines += [f"Across depth (latest): {depth_lib.finding_text(summary['depth'])}.", ""]
    alerts = ", ".join(f"{k} {n}" for k, n in summary["alerts"].items())
    lines += [
        f"median gradient norm:      {_number(summary['median_grad_norm'])} (whole run)",
        f"suggested global_clipnorm: {records.clip_suggestion_text(summary)}",
        f"skipped updates:           {_number(summary['skipped_updates'])}",
    ]
    if summary.get("clipped_updates") is not None:
        lines += [
            f"AutoClip threshold:        {_number(summary.get('clip'))} (latest)",
            f"updates clipped:           {_number(summary['clipped_updates'])}",
        ]
    lines.append(f"alerts:                    {alerts}")
    own = _html.own_time_text(summary)
    if own:
        lines.append(f"GradWatch's own time:      {own}")
    lines += _model_lines(run.path)
    return "\n".join(lines)


def _model_lines(path):
    """Where the other models' runs are, when one GradWatch watched several."""
    runs = records.model_runs(path)
    if not runs:
        return []
    lines = [f"This GradWatch watched {len(runs)} models, each in a run of its own "
             "(gradwatch summary FOLDER for each):"]
    for entry in runs:
        where = "this folder" if entry["folder"] == path else str(entry["folder"])
        lines.append(f"  {entry['index']}. {entry['model']}: {where}")
    return lines


def _layer_lines(summary, alerts):
    """The per-layer table of the latest measurement, as lines of text."""
    if not summary["layers"]:
        return ["No time profile was measured.", ""]
    header = (
        f"{'layer':<24} {'site':<6} {'decay/step':>10} {'horizon':>8} "
        f"{'bias@backprop':>13} {'backprop':>8} {'suggested':>10}  alerts on the layer"
    )
    lines = [f"Latest measurement: step {summary.get('measured_at_step')}.", header,
             "-" * len(header)]
    for name, v in summary["layers"].items():
        bias = _number(v.get("truncation_bias")) if v.get("backprop") is not None else "n/a"
        lines.append(
            f"{name:<24} {str(v.get('site', '')):<6} "
            f"{_number(v.get('decay_rate')):>10} {_number(v.get('horizon')):>8} "
            f"{bias:>13} {_number(v.get('backprop')):>8} "
            f"{_number(v.get('suggested_window')):>10}  {_html.layer_alerts(alerts, name)}"
        )
    lines.append(
        "decay/step: the profile's per-step factor going back in time, not a "
        "verdict (above 1 is not by itself an explosion: the alerts decide)."
    )
    if any(v.get("backprop") is None for v in summary["layers"].values()):
        lines.append("bias@backprop n/a: no truncation (whole sequences).")
    return lines + [""]


def _report(args):
    path = report.write_report(args.run_dir, output=args.output)
    print(f"Wrote {path} (and the plots next to it).")


def _summary(args):
    print(summary_text(records.load_run(args.run_dir)))


def _compare(args):
    runs = [records.load_run(path) for path in args.run_dirs]
    path = plots.plot_comparison(runs, args.output, layer=args.layer)
    print(f"Wrote {path}.")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="gradwatch",
        description="Review GradWatch runs from their saved records.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser(
        "report", help="redraw the plots and write report.html into RUN_DIR"
    )
    command.add_argument("run_dir")
    command.add_argument(
        "-o", "--output", metavar="DIR",
        help="folder to write report.html and the plots into (default: RUN_DIR)",
    )
    command.set_defaults(func=_report)
    command = commands.add_parser("summary", help="print the summary table")
    command.add_argument("run_dir")
    command.set_defaults(func=_summary)
    command = commands.add_parser(
        "compare", help="draw the latest decay profile of several runs"
    )
    command.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    command.add_argument(
        "-o", "--output", default="gradwatch-compare.png", help="PNG to write"
    )
    command.add_argument("--layer", help="layer to compare (default: the first)")
    command.set_defaults(func=_compare)
    return parser


def main(argv=None):
    """Runs the command; returns its exit status.

    Example:

    >>> from keras_gradwatch import cli
    >>> cli.main(["summary", "/no/such/run"])
    1
    """
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                args.func(args)
            finally:
                _show_warnings(args.command, caught)
            sys.stdout.flush()
    except BrokenPipeError:
        _quiet_stdout()
        return 0
    except (KerasGradwatchError, OSError) as error:
        print(f"gradwatch {args.command}: {_one_line(error)}", file=sys.stderr)
        return 1
    return 0


def _show_warnings(command, caught):
    """Each warning once, on one line of stderr."""
    shown = set()
    for warning in caught:
        text = _one_line(warning.message)
        if text not in shown:
            shown.add(text)
            print(f"gradwatch {command}: warning: {text}", file=sys.stderr)


def _one_line(message):
    return " ".join(str(message).split())


def _quiet_stdout():
    """The reader of stdout is gone (`| head`): nothing more is written, and
    Python's flush at exit must not complain either."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    sys.exit(main())
