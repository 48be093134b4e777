"""Tests of `keras_gradwatch.report`: one self-contained page per run."""

import re

import pytest
from conftest import write_synthetic_run

from keras_gradwatch import RunDirectoryError
from keras_gradwatch import report


def test_report_is_self_contained_and_complete(tmp_path):
    path = report.write_report(write_synthetic_run(tmp_path))
    page = path.read_text()
    assert path.name == "report.html"
    images = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert len(images) == 3
    assert all(src.startswith("data:image/png;base64,") for src in images)
    assert "http://" not in page and "https://" not in page
    # Summary table per layer, global figures, alerts, settings.
    for text in ("rnn", "lstm", "decay rate", "suggested global_clipnorm",
                 "skipped updates", "exploding", "vanishing", "nonfinite",
                 "&quot;backprop&quot;: 15", "(2 similar not shown)"):
        assert text in page, text
    # Alert messages are escaped, not injected.
    assert "&lt;with markup &amp; a suggestion&gt;" in page
    assert "<with markup" not in page


def test_report_of_a_crashed_run(tmp_path):
    run_dir = write_synthetic_run(tmp_path, measurements=2)
    (run_dir / "summary.json").unlink(missing_ok=True)
    with open(run_dir / "steps.jsonl", "a") as f:
        f.write('{"step": 99, "lo')  # cut short by a crash
    page = report.write_report(run_dir).read_text()
    assert "Status: <span class='status'>unknown</span>" in page
    assert "after 10 steps" in page


def test_report_of_a_missing_folder(tmp_path):
    with pytest.raises(RunDirectoryError, match="No run folder"):
        report.write_report(tmp_path / "nope")
