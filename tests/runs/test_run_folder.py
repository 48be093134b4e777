"""A run folder that never loses, mixes or overwrites records (issue 23).

Each finding of the issue is a test here, numbered as in the issue, run
with the package's own tiny models.
"""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest
from conftest import _StepCounter
from conftest import write_synthetic_run

from keras_gradwatch import GradWatch
from keras_gradwatch import RunDirectoryError
from keras_gradwatch import RunLockedError
from keras_gradwatch import RunRecordWarning
from keras_gradwatch import cli
from keras_gradwatch import layers
from keras_gradwatch import records
from keras_gradwatch import report
from keras_gradwatch.runs import _folder
from keras_gradwatch.runs import _schema
from keras_gradwatch.watch import _sanity

B, T, F = 8, 10, 2
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def data(n=32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(n, T, F)).astype("float32")
    return x, x.sum(axis=1)[:, :1] / T


def model_():
    model = keras.Sequential([
        keras.Input((None, F)),
        layers.LSTM(4, name="lstm"),
        keras.layers.Dense(1, name="head"),
    ])
    model.compile(optimizer="adam", loss="mse")
    return model


def train(path, model=None, epochs=1, callbacks=(), **kwargs):
    model = model or model_()
    x, y = data()
    watch = GradWatch(path, every=2, plots=None, **kwargs)
    model.fit(x, y, batch_size=B, epochs=epochs, verbose=0, shuffle=False,
              callbacks=[watch, *callbacks])
    return model, watch


def read_lines(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def snapshot(folder):
    return {p.relative_to(folder): p.read_bytes()
            for p in folder.rglob("*") if p.is_file()}


# 1. A damaged run is continued, never restarted over itself ---------------------


def test_1_damaged_middle_line_is_skipped_and_the_run_continues(tmp_path):
    model, _ = train(tmp_path)
    steps = tmp_path / "steps.jsonl"
    lines = steps.read_text().splitlines(keepends=True)
    lines[1] = "{not json\n"  # a damaged middle line
    steps.write_text("".join(lines))
    profiles_before = {p.name: p.read_bytes() for p in (tmp_path / "profiles").iterdir()}
    measured_before = read_lines(tmp_path / "measurements.jsonl")
    with pytest.warns(RunRecordWarning, match=r"line 2 of .*steps\.jsonl"):
        train(tmp_path, model)
    for name, content in profiles_before.items():  # never overwritten
        assert (tmp_path / "profiles" / name).read_bytes() == content
    measured = read_lines(tmp_path / "measurements.jsonl")
    indexes = [m["index"] for m in measured]
    assert len(indexes) == len(set(indexes)) and len(measured) > len(measured_before)
    profiles = [m["profiles"] for m in measured]
    assert len(profiles) == len(set(profiles))
    run = records.load_run(tmp_path)
    with pytest.warns(RunRecordWarning):  # when the steps are read
        numbers = [s["step"] for s in run.steps]
    assert numbers == sorted(set(numbers)) and numbers[-1] == 8  # 4 + 4, one line lost
    assert len(run.settings["fits"]) == 2
    assert run.settings["writer"] == records.WRITER


def test_1_damaged_summary_is_rebuilt_and_kept_aside(tmp_path):
    model, _ = train(tmp_path)
    (tmp_path / "summary.json").write_text("[1, 2]")  # a list: damaged
    with pytest.warns(RunRecordWarning, match="summary.json.*rebuilt from the records"):
        summary = records.summarize(records.load_run(tmp_path))
    assert summary["steps"] == 4 and summary["measurements"] == 3
    with pytest.warns(RunRecordWarning, match="summary.json"):
        train(tmp_path, model)
    assert (tmp_path / "summary.json.damaged").read_text() == "[1, 2]"
    assert records.load_run(tmp_path).summary["steps"] == 8


# 2. A half last line is set aside before anything is appended -------------------


def test_2_half_last_line_is_cut_aside_not_glued_onto(tmp_path):
    model, _ = train(tmp_path)
    steps = tmp_path / "steps.jsonl"
    with open(steps, "a") as f:
        f.write('{"step": 5, "epo')  # a crash, or a full disk, mid-line
    with pytest.warns(RunRecordWarning, match="cut short.*16 bytes"):
        train(tmp_path, model)
    assert (tmp_path / "steps.jsonl.partial").read_text() == '{"step": 5, "epo\n'
    lines = read_lines(steps)  # every line is a whole record
    assert [s["step"] for s in lines] == list(range(1, 9))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing damaged is left
        assert records.summarize(records.load_run(tmp_path))["steps"] == 8


def test_2_whole_last_record_without_newline_is_kept(tmp_path):
    path = tmp_path / "steps.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}')
    assert _folder.cut_partial_line(path) == 0
    assert path.read_text() == '{"step": 1}\n{"step": 2}\n'


# 3. Foreign files are refused before any step ----------------------------------


@pytest.mark.parametrize("files", [
    {"notes.txt": "mine"},
    {"run.json": '{"name": "another tool"}', "summary.json": "{}"},
    {"steps.jsonl": '{"step": 1, "tool": "other"}\n'},
])
def test_3_folder_with_foreign_files_is_refused_before_any_step(tmp_path, files):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    before = snapshot(tmp_path)
    counter = _StepCounter()
    model = model_()
    x, y = data()
    with pytest.raises(RunDirectoryError, match="did not write") as error:
        model.fit(x, y, batch_size=B, verbose=0,
                  callbacks=[counter, GradWatch(tmp_path, plots=None)])
    assert counter.batches == 0
    for name in files:
        assert name in str(error.value)
    assert "Pass a new or empty folder" in str(error.value)
    assert snapshot(tmp_path) == before


def test_3_a_run_folder_with_a_file_of_the_user_is_continued(tmp_path):
    model, _ = train(tmp_path)
    (tmp_path / "notes.txt").write_text("lr 1e-3 looked fine")
    train(tmp_path, model)
    assert records.summarize(records.load_run(tmp_path))["steps"] == 8
    assert (tmp_path / "notes.txt").read_text() == "lr 1e-3 looked fine"


# 4. Two writers on one folder ------------------------------------------------------

_HOLDER = """
import sys, time, pathlib
from keras_gradwatch.runs import _folder
lock = _folder.FolderLock(pathlib.Path(sys.argv[1]))
lock.acquire()
print("held", flush=True)
time.sleep(60)
"""


def _hold_lock(path):
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(path)], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_4_second_writer_is_refused_before_its_first_step_10_of_10(tmp_path):
    path = tmp_path / "run"
    path.mkdir()
    holder = _hold_lock(path)
    try:
        model = model_()
        x, y = data()
        for _ in range(10):
            counter = _StepCounter()
            with pytest.raises(RunLockedError, match=f"process {holder.pid}") as error:
                model.fit(x, y, batch_size=B, verbose=0,
                          callbacks=[counter, GradWatch(path, plots=None)])
            assert counter.batches == 0
            assert str(path) in str(error.value)
        assert not (path / "steps.jsonl").exists()
    finally:
        holder.kill()
        holder.wait(timeout=10)


def test_4_stale_lock_of_a_killed_process_is_taken_over(tmp_path):
    holder = _hold_lock(tmp_path)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=10)
    assert (tmp_path / _folder.LOCK).read_text().strip() == str(holder.pid)
    train(tmp_path)
    assert records.summarize(records.load_run(tmp_path))["steps"] == 4


def test_4_two_callbacks_of_one_process_take_turns_without_mixing(tmp_path):
    model = model_()
    x, y = data()
    first, second = GradWatch(tmp_path, every=2, plots=None), GradWatch(tmp_path, every=2, plots=None)
    model.fit(x, y, batch_size=B, verbose=0, callbacks=[first])
    model.fit(x, y, batch_size=B, verbose=0, callbacks=[second])
    with pytest.warns(RunRecordWarning, match="continued by another writer"):
        model.fit(x, y, batch_size=B, verbose=0, callbacks=[first])
    run = records.load_run(tmp_path)
    numbers = [s["step"] for s in run.steps]
    assert numbers == list(range(1, 13))
    indexes = [m["index"] for m in run.measurements]
    assert indexes == sorted(set(indexes))
    assert len(run.settings["fits"]) == 3


def test_4_two_callbacks_in_one_fit_the_newer_takes_the_folder(tmp_path):
    model = model_()
    x, y = data()
    with pytest.warns(RunRecordWarning, match="took the folder over"):
        model.fit(x, y, batch_size=B, verbose=0, callbacks=[
            GradWatch(tmp_path, every=2, plots=None), GradWatch(tmp_path, every=2, plots=None)])
    numbers = [s["step"] for s in records.load_run(tmp_path).steps]
    assert numbers == [1, 2, 3, 4]  # one writer's records, not two interleaved


# 5. A write fault never kills training ---------------------------------------------


class _FullDisk:
    """`RunWriter`'s writes fail with ENOSPC from the `after`-th call on."""

    def __init__(self, monkeypatch, after):
        self.calls, self.after = 0, after
        for name in ("append", "write_json", "write_profiles"):
            original = getattr(records.RunWriter, name)
            monkeypatch.setattr(records.RunWriter, name, self._wrap(original))
        fsync = os.fsync
        monkeypatch.setattr(records.os, "fsync", self._wrap(fsync, method=False))

    def _wrap(self, original, method=True):
        def wrapped(*args, **kwargs):
            self.calls += 1
            if self.calls > self.after:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return original(*args, **kwargs)
        return wrapped


def test_5_full_disk_stops_recording_once_and_training_goes_on(tmp_path, monkeypatch):
    _FullDisk(monkeypatch, after=12)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model, _ = train(tmp_path, epochs=3)
    stopped = [w for w in caught if "stopped recording" in str(w.message)]
    assert len(stopped) == 1 and "No space left on device" in str(stopped[0].message)
    assert int(model.optimizer.iterations) == 12  # every step trained
    assert not list(tmp_path.rglob("*.tmp"))
    monkeypatch.undo()
    run = records.load_run(tmp_path)  # what is on disk reads fine
    assert records.summarize(run)["steps"] >= 1


def test_5_full_disk_raises_when_asked(tmp_path, monkeypatch):
    _FullDisk(monkeypatch, after=8)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RunRecordWarning)
        with pytest.raises(RunRecordWarning, match="No space left"):
            train(tmp_path, epochs=3)


def test_5_vanished_folder_is_reported_once(tmp_path):
    path = tmp_path / "run"

    class Remove(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 1 and path.exists():
                shutil.rmtree(path)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model, _ = train(path, epochs=2, callbacks=[Remove()])
    assert int(model.optimizer.iterations) == 8
    assert len([w for w in caught if "stopped recording" in str(w.message)]) == 1


# 6. A probe batch that measures nothing says so ---------------------------------


def masked_model():
    model = keras.Sequential([
        keras.Input((T, F)),
        keras.layers.Masking(0.0),
        layers.LSTM(4, name="lstm"),
        keras.layers.Dense(1, name="head"),
    ])
    model.compile(optimizer="adam", loss="mse")
    return model


def test_6_measured_nothing_oracle():
    assert _sanity.measured_nothing({"a": np.zeros(5), "b": [0.0]}, True).startswith(
        "the probe batch gives no gradient")
    assert _sanity.measured_nothing({"a": np.zeros(5), "b": [0.0, 1e-30]}, True) is None
    assert _sanity.measured_nothing({}, True) is None
    # Zero profiles on inputs that carry something: the network's finding.
    assert _sanity.measured_nothing({"a": np.zeros(5)}, False) is None


def test_6_dead_recurrence_is_not_marked_as_measuring_nothing(tmp_path):
    model = keras.Sequential([
        keras.Input((T, F)),
        layers.SimpleRNN(4, activation="relu", kernel_initializer="zeros",
                         recurrent_initializer="zeros", bias_initializer="zeros", name="rnn"),
        keras.layers.Dense(1, kernel_initializer="zeros", name="head"),
    ])
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    x, y = data(n=16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(x, y, batch_size=B, epochs=1, verbose=0,
                  callbacks=[GradWatch(tmp_path, every=1, plots=None)])
    run = records.load_run(tmp_path)
    assert run.measurements
    assert not np.any(run.profiles(run.measurements[0])["rnn"])  # no gradient through time
    assert not any("measured nothing" in (m.get("suspect") or "") for m in run.measurements)


def test_6_fully_masked_probe_batch_is_marked_and_replaced(tmp_path):
    x, y = data()
    x[:B] = 0.0  # the first batch: every sequence fully masked
    model = masked_model()
    with pytest.warns(UserWarning, match="measured nothing"):
        model.fit(x, y, batch_size=B, epochs=1, verbose=0, shuffle=False,
                  callbacks=[GradWatch(tmp_path, every=2, plots=None)])
    run = records.load_run(tmp_path)
    first, *rest = run.measurements
    assert "measured nothing" in first["suspect"]
    assert rest and not any(m.get("suspect") for m in rest)
    assert all(m["layer_norms"]["lstm"] > 0 for m in rest)
    # The new probe batch is measured at once, and says why.
    assert first["reason"] == "start" and rest[0]["reason"] == "new-probe"
    assert rest[0]["step"] == 1
    summary = records.summarize(run)
    assert summary["suspect_measurements"] == 1
    assert "measured nothing" in records.trend_note(summary)


def test_6_data_masked_throughout_says_so_in_the_summary(tmp_path):
    x, y = data(n=16)
    x[:] = 0.0
    with pytest.warns(UserWarning, match="measured nothing"):
        masked_model().fit(x, y, batch_size=B, epochs=1, verbose=0,
                           callbacks=[GradWatch(tmp_path, every=1, plots=None)])
    summary = records.summarize(records.load_run(tmp_path))
    assert summary["measured_steps"] == 0 and summary["layers"] == {}
    note = records.trend_note(summary)
    assert "left out of the figures" in note and "fully masked" in note


# 7. Damaged or hostile input: one line, and the readable rest ------------------------


@pytest.mark.parametrize("line, field", [
    ('{"step": "abc"}', "field 'step': expected an integer, received 'abc'"),
    ('{"step": null}', "field 'step' is missing"),
    ('{"step": 3, "grad_norm": "xyz"}', "field 'grad_norm': expected a number"),
    ('[1, 2]', "expected a JSON object"),
])
def test_7_wrong_types_are_one_line_naming_file_line_and_field(tmp_path, capsys, line, field):
    run_dir = write_synthetic_run(tmp_path)
    steps = run_dir / "steps.jsonl"
    lines = steps.read_text().splitlines()
    lines[4] = line
    steps.write_text("\n".join(lines) + "\n")
    assert cli.main(["summary", str(run_dir)]) == 0
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and "line 5" in err[0] and "steps.jsonl" in err[0] and field in err[0]
    assert "Traceback" not in captured.err
    assert "14 steps" not in captured.out and "15 steps" in captured.out  # the rest is read


def test_7_format_as_a_string_is_damaged_not_newer(tmp_path):
    run_dir = write_synthetic_run(tmp_path)
    settings = json.loads((run_dir / "run.json").read_text())
    (run_dir / "run.json").write_text(json.dumps({**settings, "format": "1"}))
    with pytest.warns(RunRecordWarning, match="field 'format': expected an integer") as caught:
        run = records.load_run(run_dir)
    assert "newer" not in str(caught[0].message)
    assert run.settings == {} and len(run.measurements) == 3


def test_7_newer_format_whose_fields_changed_is_newer_not_damaged(tmp_path):
    # A newer writer may change a field's type too: the format is read first.
    run_dir = write_synthetic_run(tmp_path)
    settings = json.loads((run_dir / "run.json").read_text())
    newer = {**settings, "format": records.FORMAT_VERSION + 1, "fits": "changed"}
    (run_dir / "run.json").write_text(json.dumps(newer))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "damaged" warning on the way
        with pytest.raises(records.RunFormatError, match="newer keras_gradwatch"):
            records.load_run(run_dir)


def test_7_truncated_npz_reports_the_rest(tmp_path, capsys):
    run_dir = write_synthetic_run(tmp_path)
    profile = run_dir / "profiles" / "000001.npz"
    profile.write_bytes(profile.read_bytes()[:100])
    for command in (["report", str(run_dir)], ["compare", str(run_dir), "-o", str(tmp_path / "c.png")]):
        assert cli.main(command) == 0
        err = capsys.readouterr().err
        assert "Damaged profile file" in err and "000001.npz" in err and "Traceback" not in err
    assert (run_dir / "decay_profile.png").exists()


def test_7_compare_with_dollar_folder_names(tmp_path, capsys):
    a = write_synthetic_run(tmp_path / "price_$5_to_$10")
    b = write_synthetic_run(tmp_path / "$x^{2}$")
    assert cli.main(["compare", str(a), str(b), "-o", str(tmp_path / "c.png")]) == 0
    assert capsys.readouterr().err == ""


def test_7_summary_into_head_ends_quietly(tmp_path):
    run_dir = write_synthetic_run(tmp_path)
    done = subprocess.run(
        f"'{sys.executable}' -m keras_gradwatch summary '{run_dir}' | head -1",
        shell=True, capture_output=True, text=True, cwd=ROOT, timeout=60,
    )
    assert done.stdout.startswith("Run ") and done.stdout.count("\n") == 1
    assert done.stderr == ""


# 8. What a person opens is safe -------------------------------------------------------

HOSTILE = "<img src=x onerror=alert(5)>"


def _records_of(run_dir):
    lines = {name: read_lines(run_dir / name) if (run_dir / name).exists() else []
             for name in ("steps.jsonl", "measurements.jsonl", "alerts.jsonl")}
    return {
        **lines,
        "summary.json": [json.loads((run_dir / "summary.json").read_text())],
        "run.json": [json.loads((run_dir / "run.json").read_text())],
    }


def _write_records(run_dir, files):
    for name, values in files.items():
        if name.endswith(".jsonl"):
            text = "".join(json.dumps(v) + "\n" for v in values)
        else:
            text = json.dumps(values[0])
        (run_dir / name).write_text(text)


def test_8_every_field_of_every_record_is_escaped(tmp_path):
    base = write_synthetic_run(tmp_path / "base")
    (base / "summary.json").write_text(json.dumps(
        {"status": "completed", "steps": 15, "epochs": 2, "alerts": {"exploding": 3},
         "own_time": {"seconds": 1.0, "fit_seconds": 10.0}, "clip_note": None,
         "measurement_error": None, "rollbacks": [], "auto_window": {"window": 3}}))
    files = _records_of(base)
    cases = []
    for name, values in files.items():
        for field in values[-1]:
            cases.append((name, field))
        if name == "measurements.jsonl":
            for field in values[-1]["layers"]["rnn"]:
                cases.append((name, ("layers", field)))
    assert len(cases) > 40
    run_dir = tmp_path / "run"
    for name, field in cases:
        shutil.rmtree(run_dir, ignore_errors=True)
        shutil.copytree(base, run_dir)
        hostile = json.loads(json.dumps(files))
        record = hostile[name][-1]
        if isinstance(field, tuple):
            record["layers"]["rnn"][field[1]] = HOSTILE
        else:
            record[field] = HOSTILE
        if name == "measurements.jsonl" and isinstance(record["layers"], dict):
            # A hostile layer name too.
            record["layers"][HOSTILE] = record["layers"].pop("lstm")
        _write_records(run_dir, hostile)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run = records.load_run(run_dir)
            page = report.render(run, [])
            card = run.summary_html()
        for html in (page, card):
            assert "<img src=x" not in html, (name, field)


def test_8_writes_do_not_follow_planted_symlinks(tmp_path):
    run_dir = write_synthetic_run(tmp_path / "run")
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    for name in ("report.html", f".report.html.{os.getpid()}.tmp",
                 "decay_profile.png", f".decay_profile.png.{os.getpid()}.tmp"):
        os.symlink(outside, run_dir / name)
    report.write_report(run_dir)
    assert outside.read_text() == "precious"
    assert not (run_dir / "report.html").is_symlink()
    (run_dir / "steps.jsonl").unlink()
    os.symlink(outside, run_dir / "steps.jsonl")
    writer = records.RunWriter(run_dir)
    with pytest.raises(OSError):
        writer.append("steps.jsonl", {"step": 99})
    assert outside.read_text() == "precious"


def test_8_profile_path_outside_the_folder_is_refused(tmp_path, capsys):
    run_dir = write_synthetic_run(tmp_path / "run")
    outside = write_synthetic_run(tmp_path / "other") / "profiles" / "000002.npz"
    measured = read_lines(run_dir / "measurements.jsonl")
    measured[-1]["profiles"] = os.path.relpath(outside, run_dir)
    (run_dir / "measurements.jsonl").write_text("".join(json.dumps(m) + "\n" for m in measured))
    run = records.load_run(run_dir)
    with pytest.raises(RunDirectoryError, match="outside the run folder"):
        run.profiles(run.measurements[-1])
    assert cli.main(["report", str(run_dir)]) == 0
    assert "outside the run folder" in capsys.readouterr().err


def test_8_report_into_another_folder(tmp_path, capsys):
    run_dir = write_synthetic_run(tmp_path / "run")
    before = snapshot(run_dir)
    assert cli.main(["report", str(run_dir), "-o", str(tmp_path / "out")]) == 0
    assert snapshot(run_dir) == before
    assert (tmp_path / "out" / "report.html").exists()
    assert (tmp_path / "out" / "decay_profile.png").exists()


# 9. Bounded memory ---------------------------------------------------------------


def test_9_totals_keep_a_fixed_sample_and_an_exact_small_median():
    totals = records.Totals()
    rng = np.random.default_rng(0)
    values = rng.lognormal(size=200_000)
    for step, value in enumerate(values, 1):
        totals.add_step({"step": step, "grad_norm": float(value)})
    assert len(totals._step_norms.values) == records.RESERVOIR_SIZE
    median = totals.summary("completed")["median_grad_norm"]
    # A uniform sample of 10 000: the median's rank is within about 1 %.
    rank = np.mean(values <= median)
    assert abs(rank - 0.5) < 0.01
    small = records.Totals()
    for step, value in enumerate(values[:999], 1):
        small.add_step({"step": step, "grad_norm": float(value)})
    assert small.summary("completed")["median_grad_norm"] == float(np.median(values[:999]))


def test_9_summarize_streams_the_steps(tmp_path):
    run_dir = write_synthetic_run(tmp_path, steps=50)
    run = records.load_run(run_dir)
    assert records.summarize(run)["steps"] == 50
    assert run._steps is None  # never held as a list


# The schema the readers check is what the writer writes ------------------------------


def test_records_of_a_real_run_fit_their_definitions_strictly(tmp_path):
    train(tmp_path, epochs=2)
    definitions = {"steps.jsonl": _schema.STEP, "alerts.jsonl": _schema.ALERT,
                   "summary.json": _schema.SUMMARY, "run.json": _schema.RUN}
    written = _records_of(tmp_path)
    for name, schema in definitions.items():
        for record in written[name]:
            assert _schema.check(record, schema, strict=True) is None, (name, record)
    for record in written["measurements.jsonl"]:
        assert _schema.check(record, _schema.MEASUREMENT) is None


def test_8_html_pieces_escape_every_value_they_are_given():
    from keras_gradwatch.runs import _html

    alert = {field: HOSTILE for field in _schema.ALERT} | {"suppressed": 1}  # checked on read
    summary = {"status": HOSTILE, "steps": HOSTILE, "epochs": HOSTILE,
               "measurements": HOSTILE, "recording_error": HOSTILE,
               "measured_at_step": HOSTILE, "update_ratio_step": HOSTILE,
               "update_ratios": {HOSTILE: HOSTILE}, "alerts": {HOSTILE: HOSTILE},
               "median_grad_norm": HOSTILE, "skipped_updates": HOSTILE,
               "own_time": {"seconds": HOSTILE, "fit_seconds": HOSTILE},
               "layers": {HOSTILE: {field: HOSTILE for field in _schema.LAYER}
                          | {"backprop": HOSTILE}}}
    options = {"threshold": HOSTILE, "tolerance": HOSTILE}
    pieces = [
        _html.alert_table([alert]), _html.status_line(summary),
        _html.layer_table(summary, options, alerts=[alert]), _html.ratio_table(summary),
        _html.run_card(HOSTILE, HOSTILE, summary, options, [alert], note=HOSTILE),
    ]
    for piece in pieces:
        assert "<img src=x" not in piece


# Slow: the targets at full size --------------------------------------------------------

_TRAINER = """
import sys, numpy as np, keras
from keras_gradwatch import GradWatch, layers, RunLockedError
x = np.random.default_rng(0).uniform(size=(64, 10, 2)).astype("float32")
model = keras.Sequential([keras.Input((None, 2)), layers.LSTM(4), keras.layers.Dense(1)])
model.compile(optimizer="adam", loss="mse")
class Count(keras.callbacks.Callback):
    batches = 0
    def on_train_batch_begin(self, batch, logs=None):
        Count.batches += 1
try:
    model.fit(x, x.sum(axis=1)[:, :1], batch_size=8, epochs=3, verbose=0,
              callbacks=[Count(), GradWatch(sys.argv[1], every=2, plots=None)])
except RunLockedError as error:
    print("refused", Count.batches, error)
    sys.exit(0)
print("trained", Count.batches)
"""


@pytest.mark.slow
def test_4_two_trainer_processes_on_one_folder(tmp_path):
    path = tmp_path / "run"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    procs = [subprocess.Popen([sys.executable, "-c", _TRAINER, str(path)], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    try:
        outs = [p.communicate(timeout=240)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    trained = [o for o in outs if o.startswith("trained")]
    refused = [o for o in outs if o.startswith("refused")]
    if len(trained) == 2:  # one finished before the other began: one run, continued
        steps = [s["step"] for s in records.load_run(path).steps]
        assert steps == list(range(1, 49))
        return
    assert len(trained) == 1 and len(refused) == 1, outs
    assert refused[0].startswith("refused 0 ")  # before its first step
    steps = [s["step"] for s in records.load_run(path).steps]
    assert steps == list(range(1, 25))


@pytest.mark.slow
def test_9_summary_of_a_million_steps_under_100_mb(tmp_path):
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        import bench_run_folder
    finally:
        sys.path.pop(0)
    bench_run_folder.write_run(str(tmp_path), 1_000_000)
    done = subprocess.run([sys.executable, "-c", bench_run_folder._SUMMARY, str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    status, seconds, peak, first = done.stdout.split(" ", 3)
    assert status == "0" and "1000000 steps" in first
    assert float(peak) < 100
