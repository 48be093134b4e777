"""Project-level checks: the README's commands, CI, examples, public API."""

import pathlib
import re
import subprocess
import sys

import pytest

import keras_gradwatch

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _readme_commands():
    text = (ROOT / "README.md").read_text()
    section = text.split("## Set up", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```\n(.+?)\n```", section)


def test_readme_has_exactly_two_setup_commands():
    commands = _readme_commands()
    assert len(commands) == 2
    demo, tests = commands
    assert "examples/" in demo and "pip install" in demo
    assert "pytest" in tests and "pip install" in tests


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert _readme_commands()[1] in ci.splitlines()


def test_public_api_is_declared():
    for name in keras_gradwatch.__all__:
        assert hasattr(keras_gradwatch, name)
    assert issubclass(
        keras_gradwatch.InvalidInputError, keras_gradwatch.KerasGradwatchError
    )
    assert issubclass(keras_gradwatch.InvalidInputError, ValueError)


def test_package_never_imports_private_keras():
    for path in (ROOT / "keras_gradwatch").rglob("*.py"):
        assert "keras.src" not in path.read_text(), path


@pytest.mark.slow
@pytest.mark.parametrize(
    "script, labels",
    [
        ("bench_tbptt.py", ("b/a =", "b/c =", "memory ratio", "compile ratio")),
        ("bench_measure.py", ("vs train_on_batch", "vs one fit step")),
        ("bench_gradwatch.py", ("step overhead ratio", "overhead ratio", "time inside GradWatch")),
        ("bench_real_usage.py", ("(a) keras-io", "(b) one fit", "(c) TruncatedBPTT",
                                 "wall-time ratio", "exploding over all runs: 0")),
    ],
)
def test_benchmark_script_quick(script, labels):
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--quick"],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    ).stdout
    for label in labels:
        assert label in out, (script, label, out)
