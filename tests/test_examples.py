"""Every example runs in quick mode and writes what it promises."""

import argparse
import json
import math
import pathlib
import runpy

import pytest
from conftest import draw_runs_left_for_exit

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def run_example(name, *args):
    module = runpy.run_path(str(EXAMPLES / f"{name}.py"), run_name="example")
    result = module["main"](["--quick", *args])
    # A script's short runs are drawn when its process exits: do that here.
    draw_runs_left_for_exit()
    return result


def test_adding_problem_compares_simple_rnn_and_lstm(tmp_path, capsys):
    results = run_example("adding_problem", "--runs", str(tmp_path))
    assert set(results) == {"SimpleRNN", "LSTM"}
    for kind in results:
        for name in ("report.html", "decay_profile.png", "summary.json"):
            assert (tmp_path / kind / name).exists()
    assert (tmp_path / "compare.png").read_bytes()[:4] == b"\x89PNG"
    out = capsys.readouterr().out
    assert "report.html" in out and "compare.png" in out


def test_adding_problem_with_truncated_bptt(capsys):
    history = run_example("adding_problem_tbptt")
    assert len(history.history["loss"]) == 2
    assert "Validation MSE" in capsys.readouterr().out


@pytest.mark.slow  # four runs; AutoClip's own tests are in tests/watch/test_autoclip.py
def test_exploding_gradients_alert_then_clipping_trains(tmp_path):
    losses = run_example("exploding_gradients", "--runs", str(tmp_path))
    alerts = [
        json.loads(line)
        for line in (tmp_path / "unclipped" / "alerts.jsonl").read_text().splitlines()
    ]
    first_nonfinite = min(a["step"] for a in alerts if a["kind"] == "nonfinite")
    # The blow-up is named first, no later than the NaN it causes, with the
    # leap it rests on (a single leap is confirmed by the next step).
    assert alerts[0]["kind"] == "exploding" and alerts[0]["step"] <= first_nonfinite
    jump = next(a for a in alerts if a["kind"] == "exploding" and a["signal"] == "loss")
    assert "jumped" in jump["message"] and jump["step"] == first_nonfinite
    # The profile before the first update rises only at its far end: no
    # verdict on the recurrence from it.
    assert not any(a["signal"] == "profile" for a in alerts)
    assert (tmp_path / "unclipped" / "report.html").exists()
    assert all(loss == loss for loss in losses)  # finite with clipping
    assert (tmp_path / "clipped" / "report.html").exists()
    # Adaptive clipping, from the start or from the first alert, trains too.
    for folder in ("autoclip", "clip_on_alert"):
        summary = json.loads((tmp_path / folder / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["clipped_updates"] > 0


def test_sine_stream_with_truncated_bptt_in_epoch_mode(tmp_path):
    history, record = run_example("sine_stream", "--runs", str(tmp_path))
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["layers"]["lstm"]["backprop"] == 50
    assert 0.0 <= record.truncation_bias <= 1.0
    assert (tmp_path / "decay_profile.png").exists()


@pytest.mark.slow  # 8 s; streams and TruncatedBPTT end to end: test_streams, test_tbptt
def test_char_rnn_language_model_on_stdlib_text(tmp_path, capsys):
    result = run_example("char_rnn", "--out", str(tmp_path), "--sample", "40")
    for name in ("report.html", "summary.json", "decay_profile.png", "gradient_norms.png"):
        assert (tmp_path / name).exists(), name
    assert (tmp_path / "decay_profile.png").read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["layers"]["lstm"]["backprop"] == 20
    # Bits per character: loss / ln 2, finite, below a uniform guess, falling.
    history = result["history"].history
    train, val = result["train_bits"], result["val_bits"]
    assert val == pytest.approx([v / math.log(2) for v in history["val_loss"]])
    assert len(train) == len(val) == 2 and all(map(math.isfinite, train + val))
    assert max(train + val) < math.log2(result["vocab_size"])
    assert train[1] < train[0] and val[1] < val[0]
    sample = result["sample"]
    assert len(sample) == 40 and "\N{REPLACEMENT CHARACTER}" not in sample
    out = capsys.readouterr().out
    assert sample in out and str(tmp_path) in out


def test_char_rnn_window_option_passes_auto_through():
    module = runpy.run_path(str(EXAMPLES / "char_rnn.py"), run_name="example")
    assert module["window_arg"]("20") == 20
    assert module["window_arg"]("auto") == "auto"
    with pytest.raises(argparse.ArgumentTypeError):
        module["window_arg"]("0")


def test_one_line_example(tmp_path):
    run_example("one_line", "--runs", str(tmp_path))
    assert (tmp_path / "report.html").exists()


@pytest.mark.slow
def test_adding_problem_full(tmp_path):
    module = runpy.run_path(str(EXAMPLES / "adding_problem.py"), run_name="example")
    results = module["main"](["--runs", str(tmp_path)])
    (lstm_scores, lstm), (rnn_scores, rnn) = results["LSTM"], results["SimpleRNN"]
    assert lstm_scores[200] < 0.05 < 0.14 < rnn_scores[200]
    assert lstm.horizon > 2 * rnn.horizon


@pytest.mark.slow  # four runs; the rescue's own tests are in tests/watch/test_rollback.py
def test_learning_rate_fault_is_named_and_rolled_back(tmp_path):
    results = run_example("learning_rate_fault", "--runs", str(tmp_path))
    rescued = results["exploding='rollback'"]
    assert rescued["rollbacks"] >= 1
    assert math.isfinite(rescued["final"]) and rescued["final"] < 2 * rescued["before"]
    for name in ("no GradWatch", "GradWatch() (warn)", "exploding='clip'", "clip='auto'"):
        assert results[name]["final"] > 2 * results[name]["before"], name
    for folder in ("warn", "clip", "autoclip", "rollback"):
        first = json.loads((tmp_path / folder / "alerts.jsonl").read_text().splitlines()[0])
        assert "The learning rate rose 1000x at step 27, from 0.01 to 10" in first["message"]
        assert "global_clipnorm" not in first["message"]


def test_deep_mlp_depth_sigmoid_alerts_and_relu_twin_does_not(tmp_path, capsys):
    results = run_example("deep_mlp_depth", "--runs", str(tmp_path))
    sigmoid, relu = results["sigmoid"], results["relu_he"]
    kinds = [(kind, epoch) for kind, _, epoch, _, _ in sigmoid["alerts"]]
    assert ("vanishing", 3) in kinds and sigmoid["fraction"] < 1e-9
    assert relu["alerts"] == [] and relu["fraction"] > 1e-2
    assert relu["accuracy"] > 0.7 > 0.56 > sigmoid["accuracy"]  # it learns; the sigmoid: chance
    for name in ("sigmoid", "relu_he"):
        assert (tmp_path / name / "depth_profile.png").exists()
    out = capsys.readouterr().out
    assert "vanishes across depth" in out and "GradWatch: no alert." in out
