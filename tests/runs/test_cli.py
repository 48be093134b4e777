"""Tests of the `gradwatch` command line."""

import pathlib
import subprocess
import sys

import pytest
from conftest import write_synthetic_run

from keras_gradwatch import cli


def test_summary_prints_the_table(tmp_path, capsys):
    assert cli.main(["summary", str(write_synthetic_run(tmp_path))]) == 0
    out = capsys.readouterr().out
    assert "TBPTT window=10 backprop=15" in out
    assert "rnn" in out and "lstm" in out
    assert "suggested global_clipnorm" in out
    assert "exploding 3" in out  # 1 reported + 2 left unreported


def test_report_and_compare_write_files(tmp_path, capsys):
    a = write_synthetic_run(tmp_path / "a", layers=("simple",))
    b = write_synthetic_run(tmp_path / "b", layers=("lstm",))
    assert cli.main(["report", str(a)]) == 0
    assert (a / "report.html").exists() and (a / "decay_profile.png").exists()
    output = tmp_path / "both.png"
    assert cli.main(["compare", str(a), str(b), "-o", str(output)]) == 0
    assert output.read_bytes()[:4] == b"\x89PNG"
    assert str(output) in capsys.readouterr().out


@pytest.mark.parametrize("command", ["report", "summary", "compare"])
def test_bad_path_is_a_message_not_a_traceback(tmp_path, capsys, command):
    assert cli.main([command, str(tmp_path / "missing")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"gradwatch {command}: No run folder")
    assert "Traceback" not in err


def test_damaged_records_are_a_message(tmp_path, capsys):
    run_dir = write_synthetic_run(tmp_path)
    (run_dir / "alerts.jsonl").write_text('{"kind": "exploding"}\n{oops\n{"kind": 1}\n')
    # Skipped with one line naming the first, the rest shown.
    assert cli.main(["summary", str(run_dir)]) == 0
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1
    assert "warning: Skipped a damaged record at line 2" in captured.err
    assert "(and 1 more line(s))" in captured.err and "exploding 1" in captured.out
    (run_dir / "alerts.jsonl").write_text("")
    (run_dir / "profiles" / "000000.npz").write_bytes(b"not a zip")
    assert cli.main(["report", str(run_dir)]) == 0
    assert "Damaged profile file" in capsys.readouterr().err


def test_installed_command_and_module_entry(tmp_path):
    run_dir = write_synthetic_run(tmp_path)
    script = pathlib.Path(sys.executable).parent / "gradwatch"
    for command in ([str(script)], [sys.executable, "-m", "keras_gradwatch"]):
        done = subprocess.run(
            command + ["summary", str(run_dir)], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        assert "median gradient norm" in done.stdout
    done = subprocess.run(
        [sys.executable, "-m", "keras_gradwatch", "summary", str(tmp_path / "x")],
        capture_output=True, text=True,
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr
    done = subprocess.run(
        [sys.executable, "-m", "keras_gradwatch", "frobnicate"],
        capture_output=True, text=True,
    )
    assert done.returncode == 2
