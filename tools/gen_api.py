"""Generates docs/api.md, the API reference, from the docstrings.

    python tools/gen_api.py          # rewrite docs/api.md
    python tools/gen_api.py --check  # exit 1 if docs/api.md is stale

A test runs the check, so the reference cannot drift from the code.
"""

import argparse
import inspect
import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "docs" / "api.md"
# The package of this checkout, not another one installed (a git worktree).
sys.path.insert(0, str(ROOT))

# (module, names): the public API, in reading order.
SECTIONS = [
    ("keras_gradwatch", ["TruncatedBPTT", "GradWatch", "Measuring", "Alerting", "AutoClip",
                         "measure", "Measurement", "LayerProfile", "Alert"]),
    ("keras_gradwatch.layers", ["SimpleRNN", "GRU", "LSTM", "RNN", "Probe"]),
    ("keras_gradwatch.streams", ["make_streams", "StreamArray"]),
    ("keras_gradwatch.inference", ["with_batch_size"]),
    ("keras_gradwatch.stats", ["decay_rate", "tail_decay_rate", "horizon",
                               "truncation_bias", "suggested_window"]),
    ("keras_gradwatch.depth", ["DepthProfile"]),
    ("keras_gradwatch.records", ["load_run", "Run", "summarize", "RunWriter",
                                 "number"]),
    ("keras_gradwatch.plots", ["plot_decay", "plot_heatmap", "plot_norms",
                               "plot_depth", "plot_all", "plot_comparison"]),
    ("keras_gradwatch.report", ["write_report"]),
    ("keras_gradwatch.cli", ["main"]),
    ("keras_gradwatch.errors", ["KerasGradwatchError", "InvalidInputError",
                                "RunDirectoryError", "RunFormatError",
                                "GradientAlertError",
                                "GradientWarning"]),
]


def _signature(obj):
    target = obj.__init__ if inspect.isclass(obj) else obj
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return "()"
    parameters = [p for p in signature.parameters.values() if p.name != "self"]
    return str(signature.replace(parameters=parameters, return_annotation=inspect.Signature.empty))


def render():
    import importlib

    lines = [
        "# API reference",
        "",
        "Generated from the docstrings by `python tools/gen_api.py`; do not "
        "edit by hand.",
        "",
    ]
    for module_name, names in SECTIONS:
        module = importlib.import_module(module_name)
        lines += [f"## `{module_name}`", ""]
        summary = inspect.getdoc(module)
        if summary and module_name != "keras_gradwatch":
            lines += [summary.split("\n\n")[0], ""]
        for name in names:
            obj = getattr(module, name)
            kind = "class" if inspect.isclass(obj) else "function"
            lines += [f"### `{module_name}.{name}`", ""]
            if kind == "class" and issubclass(obj, BaseException):
                lines += [f"`class {name}`", ""]
            else:
                prefix = "class " if kind == "class" else ""
                lines += ["```text", f"{prefix}{name}{_signature(obj)}", "```", ""]
            doc = inspect.getdoc(obj) or "(no docstring)"
            lines += ["```text", doc, "```", ""]
    return "\n".join(lines).rstrip() + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not OUTPUT.exists() or OUTPUT.read_text() != text:
            print(f"{OUTPUT} is stale: run python tools/gen_api.py", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text)
    print(f"Wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
