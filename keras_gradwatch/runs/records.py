"""Run records: the files `GradWatch` writes and the plots and CLI read.

A run folder holds:

- `run.json`: the run's settings and one entry per `fit` call;
- `steps.jsonl`: one object per training step (`step`, `epoch`, `loss`, and
  on `TruncatedBPTT` models `grad_norm` and `skipped_updates`);
- `measurements.jsonl`: one object per measurement (gradient norms, and per
  measured layer its site and statistics), with the profiles in
  `profiles/NNNNNN.npz` (one array per layer, indexed by lag);
- `alerts.jsonl`: one object per reported alert, with a `"kind"` field;
- `summary.json`: the run's figures, rewritten at each epoch end and at the
  end of training.

JSON Lines files are only appended to, one whole line per record, and
flushed; JSON and `.npz` files are written to a temporary file and renamed
into place. After an exception, a `KeyboardInterrupt` or a stop, every file
holds complete, readable records. Non-finite numbers are written as the
strings `"NaN"`, `"Infinity"` and `"-Infinity"` (JSON has no literal for
them); `number()` reads them back.

Every record read is checked against its kind's definition (`_schema`): a
line that is not JSON, or holds a value of the wrong type, is skipped with
one warning (`RunRecordWarning`) naming the file, the line and the field,
and the rest of the run is read. `steps.jsonl` is streamed: `summarize`
reads it line by line, and `Run.steps` loads it only when asked.
"""

import array
import contextlib
import json
import math
import os
import pathlib
import random
import re
import tempfile
import warnings
import zipfile

import numpy as np

from keras_gradwatch.core import alerts
from keras_gradwatch.core import depth as depth_lib
from keras_gradwatch.core._detectors import kinds
from keras_gradwatch.core.errors import RunDirectoryError
from keras_gradwatch.core.errors import RunFormatError
from keras_gradwatch.core.errors import RunRecordWarning
from keras_gradwatch.runs import _html
from keras_gradwatch.runs import _schema

RUN = "run.json"
STEPS = "steps.jsonl"
MEASUREMENTS = "measurements.jsonl"
ALERTS = "alerts.jsonl"
SUMMARY = "summary.json"
# With several models watched by one GradWatch: each model's run folder.
MODELS = "models.json"
PROFILES = "profiles"
DECAY_PLOT = "decay_profile.png"  # drawn by `plots`, shown by `Run._repr_html_`
DEPTH_PLOT = "depth_profile.png"  # likewise
FORMAT_VERSION = 1
# `run.json`'s "writer": the folder is a GradWatch run (see `_folder`).
WRITER = "keras_gradwatch"
# The definition each file's records are checked against.
SCHEMAS = {RUN: _schema.RUN, STEPS: _schema.STEP, MEASUREMENTS: _schema.MEASUREMENT,
           ALERTS: _schema.ALERT, SUMMARY: _schema.SUMMARY}
# Values the whole-run median of the gradient norm is taken over: all of
# them up to this many, then a uniform sample of this many (`Reservoir`).
RESERVOIR_SIZE = 10_000
_DECODER = json.JSONDecoder()
# With NOFOLLOW, a symlink planted at a record's name is not written through.
_APPEND_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
# Measurements at fewer distinct steps than this show no trend over training.
TREND_MEASUREMENTS = 3
# What the suggested clipnorm is, in the summary, report and plot: the
# alerts' advice is computed the same way (`alerts.clip_suggestion`).
CLIP_BASIS = "median of the last 100 step norms"


def folder_key(log_dir):
    """The key of a run folder in this process: its real path, so that
    `runs/a`, `./runs/a` and a symlink to it are one folder."""
    return os.path.realpath(os.fspath(log_dir))


def encode(value):
    """Makes a value JSON-safe: numpy scalars, arrays, non-finite floats."""
    if isinstance(value, dict):
        return {str(k): encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    if isinstance(value, np.ndarray):
        return encode(value.tolist())
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return value
    return value


def number(value):
    """Reads a number written by `encode`; None stays None."""
    if value is None:
        return None
    return float(value)


class RunWriter:
    """Appends records to a run folder (see the module docstring).

    It never writes through a symbolic link planted in the folder: record
    files are opened with `O_NOFOLLOW`, temporary files are created
    exclusively (`tempfile.mkstemp`) and renamed over the target, and a
    profile file that exists already is never replaced.

    Args:
        log_dir: The run folder; created if missing.
    """

    def __init__(self, log_dir):
        self.path = pathlib.Path(log_dir)
        self._files = {}

    def open(self):
        """Creates the folder and checks that it can be written.

        Raises:
            RunDirectoryError: If the folder cannot be created or written.
        """
        try:
            (self.path / PROFILES).mkdir(parents=True, exist_ok=True)
            handle, check = tempfile.mkstemp(dir=self.path, prefix=".write-check-", suffix=".tmp")
            os.close(handle)
            os.unlink(check)
        except OSError as error:
            raise RunDirectoryError(
                f"Cannot write the run folder. Received: log_dir="
                f"'{self.path}' ({error.strerror or error}). Pass a folder "
                "you can write to, e.g. GradWatch('runs/exp1')."
            ) from error

    def append(self, name, record, flush=True):
        """Appends one record (a dict) as one line of `name`."""
        handle = self._files.get(name)
        if handle is None:
            descriptor = os.open(self.path / name, _APPEND_FLAGS, 0o644)
            handle = os.fdopen(descriptor, "a", encoding="utf-8")
            self._files[name] = handle
        handle.write(json.dumps(encode(record), allow_nan=False) + "\n")
        if flush:
            handle.flush()

    def flush(self):
        for handle in self._files.values():
            handle.flush()

    def write_json(self, name, obj):
        """Writes `name` atomically (temporary file, then rename)."""
        text = json.dumps(encode(obj), indent=2, allow_nan=False)
        self._replace(self.path / name, lambda f: f.write(text.encode("utf-8")))

    def write_profiles(self, index, profiles):
        """Writes one measurement's profiles; returns the relative path.

        A file of that name that exists already (a run continued after
        damage) is kept: the profiles go to `NNNNNN-1.npz`, ... instead.
        """
        arrays = {name: np.asarray(p, dtype="float64") for name, p in profiles.items()}
        folder = self.path / PROFILES
        handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{index:06d}.", suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as f:
                np.savez(f, **arrays)
                f.flush()
                os.fsync(f.fileno())
            for suffix in ("", *(f"-{k}" for k in range(1, 1000))):
                relative = f"{PROFILES}/{index:06d}{suffix}.npz"
                if _link_new(temporary, self.path / relative):
                    return relative
            raise FileExistsError(f"'{folder}' holds 1000 profiles of measurement {index}")
        finally:
            _remove(temporary)

    def close(self):
        errors = []
        for handle in self._files.values():
            try:
                handle.close()
            except OSError as error:  # its buffer could not be written
                errors.append(error)
        self._files = {}
        if errors:
            raise errors[0]

    def abandon(self):
        """Drops the open files without writing what they buffer (after a
        write error: their buffers cannot be written)."""
        for handle in self._files.values():
            with contextlib.suppress(OSError):
                os.close(handle.fileno())
            with contextlib.suppress(OSError, ValueError):
                handle.close()
        self._files = {}

    @staticmethod
    def _replace(target, write):
        handle, temporary = tempfile.mkstemp(
            dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"
        )
        try:
            with os.fdopen(handle, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temporary, target)  # replaces a symlink, never follows it
        finally:
            _remove(temporary)


def _link_new(source, target):
    """Gives `source` the name `target` unless that name exists; whether it did."""
    try:
        os.link(source, target)  # fails on an existing name: nothing is replaced
        return True
    except FileExistsError:
        return False
    except OSError:
        # A file system without hard links: a check, then a rename.
        if os.path.lexists(target):
            return False
        os.replace(source, target)
        return True


def _remove(path):
    with contextlib.suppress(OSError):
        os.unlink(path)


class Run:
    """The records of one run folder, as read back by `load_run`.

    Attributes:
        path: The run folder.
        settings: Contents of `run.json` (empty dict if missing or damaged).
        steps: List of step records (read from `steps.jsonl` when first
            asked; `iter_steps` streams them without keeping them).
        measurements: List of measurement records.
        alerts: List of alert records.
        summary: Contents of `summary.json`, or None if not written yet
            (or damaged: `summarize` rebuilds it from the records).
        damaged: Per file name, the damaged lines skipped so far, as
            `(line, why)` pairs (line 0: the whole file).
    """

    def __init__(self, path, settings, steps, measurements, alerts, summary, damaged=None):
        self.path = pathlib.Path(path)
        self.settings = settings
        self._steps = steps  # None: read from the file when first asked
        self.measurements = measurements
        self.alerts = alerts
        self.summary = summary
        self.damaged = {} if damaged is None else damaged

    def __repr__(self):
        return f"Run({str(self.path)!r})"

    @property
    def steps(self):
        if self._steps is None:
            self._steps = list(self.iter_steps())
        return self._steps

    @steps.setter
    def steps(self, value):
        self._steps = value

    def iter_steps(self):
        """The step records, one at a time (streamed from the file unless
        `steps` was read already): memory does not grow with the run."""
        if self._steps is not None:
            return iter(self._steps)
        return _read_lines(self.path / STEPS, STEPS, self.damaged)

    def profiles(self, measurement):
        """The profiles of a measurement record: dict of name -> array.

        Raises:
            RunDirectoryError: If the file is damaged, or the record points
                outside the run folder.
        """
        relative = measurement.get("profiles")
        if not relative:
            return {}
        folder = self.path.resolve()
        target = (folder / str(relative)).resolve()
        if not target.is_relative_to(folder):
            raise RunDirectoryError(
                f"The measurement at step {measurement.get('step')} of '{self.path}' "
                f"points at {str(relative)!r}, outside the run folder: not read."
            )
        try:
            with np.load(target, allow_pickle=False) as data:
                return {name: data[name] for name in data.files}
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as error:
            raise RunDirectoryError(
                f"Damaged profile file '{self.path / relative}': {error}."
            ) from error

    def _repr_html_(self):
        """What Jupyter shows when a cell ends with the run: `summary_html`."""
        return self.summary_html()

    def summary_html(self):
        """The run as a notebook shows it when a cell ends with it: status,
        the layer table, the latest alerts and the decay plot (if drawn).

        Example:

        >>> import tempfile
        >>> writer = RunWriter(tempfile.mkdtemp())
        >>> writer.open()
        >>> writer.append("steps.jsonl", {"step": 1, "loss": 0.5})
        >>> "Status:" in load_run(writer.path).summary_html()
        True
        """
        summary = summarize(self)
        tbptt = self.settings.get("tbptt")
        model_line = f"model {self.settings.get('model', '?')}" + (
            f", truncated BPTT {describe_tbptt(tbptt, summary.get('window'))}" if tbptt else ""
        )
        decay = self.path / DECAY_PLOT
        notes = [trend_note(summary)]
        if not decay.exists():
            decay = None
        elif self.measurements and decay.stat().st_mtime < (self.path / MEASUREMENTS).stat().st_mtime:
            notes.append("The plot was drawn before the latest measurement: "
                         "GradWatch.draw() or `gradwatch report` redraws it.")
        depth = self.path / DEPTH_PLOT
        return _html.run_card(
            self.path.name, model_line, summary, self.settings.get("settings") or {},
            self.alerts, decay_png=decay, note=" ".join(n for n in notes if n) or None,
            depth_png=depth if depth.exists() else None,
        )


def load_run(log_dir):
    """Reads a run folder written by `GradWatch`.

    A run that crashed reads fine: a last line cut short by a crash is
    skipped. A damaged line elsewhere (not JSON, or a value of the wrong
    type) is skipped too, with one `RunRecordWarning` per file naming the
    file, the line and the field; a damaged `summary.json` is left out
    (`summarize` rebuilds its figures from the records). `steps.jsonl` is
    read only when `Run.steps` is asked for.

    Args:
        log_dir: The run folder.

    Returns:
        A `Run`.

    Raises:
        RunDirectoryError: If the folder does not exist or holds no records.
        RunFormatError: If the records were written by a newer version
            of the package, in a format this one does not read.

    Example:

    >>> import tempfile
    >>> from keras_gradwatch.records import RunWriter, load_run
    >>> writer = RunWriter(tempfile.mkdtemp())
    >>> writer.open()
    >>> writer.append("steps.jsonl", {"step": 1, "loss": float("nan")})
    >>> writer.close()
    >>> load_run(writer.path).steps
    [{'step': 1, 'loss': 'NaN'}]
    """
    path = pathlib.Path(log_dir)
    if not path.is_dir():
        raise RunDirectoryError(
            f"No run folder at '{path}'. Pass the log_dir given to GradWatch."
        )
    names = (RUN, STEPS, MEASUREMENTS, ALERTS, SUMMARY)
    if not any((path / name).exists() for name in names):
        raise RunDirectoryError(
            f"'{path}' holds no GradWatch records (none of {', '.join(names)})."
        )
    run = Run(path, {}, None, [], [], None)
    # The format first: a newer writer may have changed what the schema
    # below checks, and its records are "newer", not "damaged".
    written = _written_format(path / RUN) or FORMAT_VERSION
    if written > FORMAT_VERSION:
        raise RunFormatError(
            f"'{path}' holds records in format {written!r}, written by a newer "
            f"keras_gradwatch; this version reads format {FORMAT_VERSION} and "
            "older. Upgrade it (pip install -U keras-gradwatch), or give "
            "GradWatch another log_dir."
        )
    run.settings = read_json(path / RUN, run.damaged) or {}
    run.measurements = list(_read_lines(path / MEASUREMENTS, MEASUREMENTS, run.damaged))
    run.alerts = list(_read_lines(path / ALERTS, ALERTS, run.damaged))
    run.summary = read_json(path / SUMMARY, run.damaged)
    return run


def _written_format(path):
    """The `format` a `run.json` declares (an int), or None if it declares
    none or cannot be read (then `read_json` says why)."""
    try:
        value = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    written = value.get("format") if isinstance(value, dict) else None
    return written if isinstance(written, int) and not isinstance(written, bool) else None


def read_json(path, damaged=None):
    """A JSON record file checked against its definition, or None if it is
    missing or damaged (a `RunRecordWarning` says why)."""
    if not path.exists():
        return None
    try:
        value = json.loads(path.read_bytes())
        problem = _schema.check(value, SCHEMAS[path.name])
    except (OSError, ValueError) as error:
        problem = f"not JSON ({getattr(error, 'msg', None) or error})"
    if problem is None:
        return value
    if damaged is not None:
        damaged[path.name] = [(0, problem)]
    what = ("its figures are rebuilt from the records" if path.name == SUMMARY
            else "read without it")
    warnings.warn(f"Damaged record file '{path}': {problem}; {what}.",
                  RunRecordWarning, stacklevel=3)
    return None


def _read_lines(path, name, damaged):
    """The records of a JSON Lines file, one at a time.

    A last line without its newline (a write cut short by a crash) is
    skipped silently unless it is a whole record; any other line that is
    not a record of its kind is skipped, and once the file is read one
    `RunRecordWarning` names the first of them.
    """
    if not path.exists():
        return
    schema, bad = SCHEMAS[name], []
    decode = _DECODER.raw_decode  # a third faster than json.loads on a line
    try:
        # Bytes that are no UTF-8 read as U+FFFD: one damaged line cannot
        # stop the reading of the others.
        with open(path, encoding="utf-8", errors="replace") as f:
            for number_, line in enumerate(f, 1):
                cut = not line.endswith("\n")  # only the last line can be
                try:
                    record, end = decode(line)
                    if line[end:].strip():
                        raise ValueError("extra data after the record")
                except ValueError as error:
                    if not line.strip():
                        continue
                    try:
                        record = json.loads(line)  # e.g. leading spaces
                    except ValueError:
                        if not cut:
                            bad.append((number_, f"not JSON ({getattr(error, 'msg', error)})"))
                        continue
                problem = _schema.check(record, schema)
                if problem is None:
                    yield record
                elif not cut:
                    bad.append((number_, problem))
    except OSError as error:
        raise RunDirectoryError(f"Cannot read '{path}': {error}.") from error
    if bad:
        damaged[name] = bad
        first, why = bad[0]
        more = f" (and {len(bad) - 1} more line(s))" if len(bad) > 1 else ""
        warnings.warn(
            f"Skipped a damaged record at line {first} of '{path}': {why}{more}. "
            "The rest of the run is read.",
            RunRecordWarning, stacklevel=2,
        )


class Reservoir:
    """A fixed-size uniform sample of a stream of numbers: every value
    while there are at most `size`, then a uniform sample of `size`
    (reservoir sampling, seeded: the same stream gives the same sample,
    whether fed by the writer or re-read from the records).

    Example:

    >>> sample = Reservoir(size=3)
    >>> for value in (5.0, 1.0, 3.0):
    ...     sample.add(value)
    >>> sample.median(), sample.count
    (3.0, 3)
    """

    def __init__(self, size=RESERVOIR_SIZE):
        self.size = size
        self.count = 0
        self.values = array.array("d")
        self._random = random.Random(0)

    def add(self, value):
        self.count += 1
        if len(self.values) < self.size:
            self.values.append(value)
            return
        slot = self._random.randrange(self.count)
        if slot < self.size:
            self.values[slot] = value

    def __len__(self):
        return self.count

    def median(self):
        """The median of the values (exact up to `size` of them), or None."""
        return float(np.median(self.values)) if self.values else None


class Totals:
    """The running figures of a run's records, fed record by record.

    `summarize` feeds it a run read from disk; `GradWatch` feeds it each
    record as it writes it, so that its `summary.json` never re-reads the
    files. Memory is bounded: the whole-run median comes from a
    `Reservoir`, the suggested clipnorm from the last 100 norms.
    """

    def __init__(self):
        self.step = 0
        self.step_records = 0
        self.epoch = -1
        self.skipped = None
        self.window = None  # TruncatedBPTT(window="auto"): the latest window
        self.update_ratios = None  # the latest update-to-weight ratios
        self.clipped_updates = None  # with adaptive clipping: updates clipped so far
        self.clip = None  # ... and its latest threshold
        self.update_ratio_step = None
        self.measurements = 0
        self.measured_steps = 0  # distinct steps with a measurement
        self.suspect = 0  # measurements marked suspect, left out of the figures
        self.suspect_reason = None  # why the latest of them was
        self.last_measurement = {}
        self.depth = None  # the latest depth profile's finding (a dict)
        self.alerts = 0
        # Every registered kind, and any other kind the records hold.
        self.alert_counts = dict.fromkeys(kinds.NAMES, 0)
        self._step_norms = Reservoir()
        self._measured_norms = Reservoir()
        # The suggested clipnorm reads the recent norms, as alerts do.
        self._recent_step_norms = alerts.RollingWindow()
        self._recent_measured_norms = alerts.RollingWindow()

    def add_step(self, record):
        get = record.get  # once per step of a million-step run: kept lean
        self.step_records += 1
        step, epoch = get("step", 0), get("epoch", 0)
        if step > self.step:
            self.step = int(step)
        if epoch is not None and epoch > self.epoch:
            self.epoch = int(epoch)
        if get("skipped_updates") is not None:
            self.skipped = record["skipped_updates"]
        if get("window") is not None:
            self.window = int(record["window"])
        if get("clipped_updates") is not None:
            self.clipped_updates = int(record["clipped_updates"])
            self.clip = get("clip")
        if get("update_ratios"):
            self.update_ratios = record["update_ratios"]
            self.update_ratio_step = get("step")
        norm = get("grad_norm")
        if norm is not None:
            norm = float(norm)
            if math.isfinite(norm):
                self._step_norms.add(norm)
                self._recent_step_norms.add(norm)

    def add_measurement(self, record):
        self.step = max(self.step, int(record.get("step", 0)))
        self.measurements += 1
        if record.get("suspect"):
            # Its numbers disagree with training's, or it measured nothing
            # (see `_sanity`): counted, never summarised as the run's profile.
            self.suspect += 1
            self.suspect_reason = record["suspect"]
            return
        if record.get("step") != self.last_measurement.get("step"):
            self.measured_steps += 1
        self.last_measurement = record
        profile = depth_lib.DepthProfile.from_record(record.get("depth"))
        if profile is not None:
            self.depth = profile.finding(record.get("step"))
        norm = number(record.get("global_norm"))
        if norm is not None and math.isfinite(norm):
            self._measured_norms.add(norm)
            self._recent_measured_norms.add(norm)

    def add_alert(self, record):
        self.step = max(self.step, int(record.get("step", 0)))
        self.alerts += 1
        kind = record.get("kind")
        if kind:
            count = 1 + int(record.get("suppressed") or 0)
            self.alert_counts[kind] = self.alert_counts.get(kind, 0) + count

    def summary(self, status):
        """The figures, as in `summary.json` (see `summarize`)."""
        # Training steps' norms when the model logs them, else measured ones.
        norms = self._step_norms or self._measured_norms
        median = norms.median()
        recent = self._recent_step_norms if norms is self._step_norms else self._recent_measured_norms
        last = self.last_measurement
        return {
            "status": status,
            "steps": self.step,
            "epochs": self.epoch + 1,
            "measurements": self.measurements,
            "measured_steps": self.measured_steps,
            "suspect_measurements": self.suspect,
            "suspect_reason": self.suspect_reason,
            "measured_at_step": last.get("step"),
            "layers": {
                # Records of format 1 before this name: "window".
                name: {**values, "backprop": last.get("backprop", last.get("window"))}
                for name, values in (last.get("layers") or {}).items()
            },
            "median_grad_norm": median,
            "suggested_clipnorm": alerts.clip_suggestion(recent),
            "skipped_updates": self.skipped,
            "window": self.window,
            "update_ratios": self.update_ratios,
            "update_ratio_step": self.update_ratio_step,
            "depth": self.depth,
            "clip": self.clip,
            "clipped_updates": self.clipped_updates,
            "alerts": dict(self.alert_counts),
            "alerts_reported": self.alerts,
        }


def totals(run):
    """A `Totals` fed with every record of a run."""
    result = Totals()
    for record in run.iter_steps():
        result.add_step(record)
    for record in run.measurements:
        result.add_measurement(record)
    for record in run.alerts:
        result.add_alert(record)
    return result


def describe_tbptt(tbptt, window=None):
    """How reviews name a run's truncated BPTT setting, e.g. "window=20
    backprop=20 reset='batch'" or "window=auto (tolerance 0.1, 2..100
    steps; latest 32) ...".

    Args:
        tbptt: The `tbptt` entry of the run's settings.
        window: The latest window logged (`summary["window"]`), if any.
    """
    auto = tbptt.get("auto_window")
    if auto:
        text = (f"window=auto (tolerance {auto.get('tolerance')}, "
                f"{auto.get('min_window')}..{auto.get('max_window')} steps; "
                f"latest {window if window is not None else tbptt.get('window')})")
    else:
        text = f"window={tbptt.get('window')} backprop={tbptt.get('backprop')}"
    return f"{text} reset={tbptt.get('reset')!r}"


def summarize(run):
    """The run's figures, computed from its records.

    The same fields as `summary.json`, derived from the other files, so a
    run whose `summary.json` is missing or stale (a hard crash) still gets
    one. Counts of alerts come from `summary.json` when it has them (it
    counts the occurrences that rate limiting left unreported).

    Args:
        run: A `Run`.

    Returns:
        A dict: `status`, `steps`, `epochs`, `measurements`,
        `measured_steps` (how many distinct steps were measured: fewer than
        3 show no trend), `measured_at_step` (the step of the latest
        measurement), `layers` (per layer: `site`, `decay_rate`, `horizon`,
        `truncation_bias`, `backprop`, `suggested_window`, from the latest
        measurement),
        `median_grad_norm` (over the whole run), `suggested_clipnorm`
        (the median of the last 100 step norms, rounded to 2 digits: the
        value alerts suggest, `alerts.clip_suggestion`), `skipped_updates`,
        `window` (the latest window of a `TruncatedBPTT(window="auto")`,
        else None), `update_ratios` (the latest update-to-weight ratio of
        each layer, ‖Δw‖/‖w‖ of one step, or None) and
        `update_ratio_step`, `depth` (the latest depth profile's first
        layer over its reference, `depth.DepthProfile.finding`, or None),
        `clip` and `clipped_updates` (adaptive
        clipping's latest threshold and the updates it clipped, or None),
        `alerts` (counts per kind), `alerts_reported`; from `summary.json`
        (None without it): `measurement_error` (why the model was not, or
        no longer, measured) and `own_time` (`seconds` and `cpu_seconds`
        inside GradWatch, `fit_seconds` and `fit_cpu_seconds` in `fit`,
        `one_off_seconds` and `one_off_cpu_seconds` of tracing: wall clock
        and CPU, over the run's `fit` calls);
        `rollbacks` (the `"rollback"` action's) and `clip_note` (why
        clipping cannot bound the optimizer's step, or None);
        `recording_error` (why GradWatch stopped writing the records, or
        None).
    """
    written = run.summary or {}
    status = written.get("status", "unknown")
    figures = totals(run)
    if status == "running" and written.get("steps", 0) < figures.step:
        status = "incomplete"  # records went on after the last summary
    summary = figures.summary(status)
    if not figures.step_records:
        summary["epochs"] = written.get("epochs", 0)
    for kind, count in (written.get("alerts") or {}).items():
        summary["alerts"][kind] = max(summary["alerts"].get(kind, 0), int(count))
    if written.get("auto_window") is not None:
        summary["auto_window"] = written["auto_window"]
    # Known to the callback only: they come from summary.json.
    summary["measurement_error"] = written.get("measurement_error")
    summary["own_time"] = written.get("own_time")
    # What only the callback knows: its rollbacks, why clipping cannot bound the step.
    summary["rollbacks"] = written.get("rollbacks") or []
    summary["clip_note"] = written.get("clip_note")
    # GradWatch stopped writing (a full disk...): the records end early.
    summary["recording_error"] = written.get("recording_error")
    return summary


def clip_suggestion_text(summary):
    """The suggested `global_clipnorm` in words: the value and its basis, or
    why none is suggested (an adaptive optimizer, whose step clipping cannot
    bound: `summary["clip_note"]`).

    Example:

    >>> clip_suggestion_text({"suggested_clipnorm": 0.52})
    '0.52 (median of the last 100 step norms, as in the alerts)'
    >>> clip_suggestion_text({"suggested_clipnorm": 0.52, "clip_note": "Clipping cannot..."})
    'none: clipping cannot bound the step of this optimizer (an adaptive one: the learning rate sets it)'
    """
    if summary.get("clip_note"):
        return ("none: clipping cannot bound the step of this optimizer (an adaptive one: "
                "the learning rate sets it)")
    value = summary.get("suggested_clipnorm")
    value = None if value is None else number(value)
    if value is None:
        return "-"
    return f"{value:g} ({CLIP_BASIS}, as in the alerts)"


def trend_note(summary):
    """A sentence on what the run's measurements can show, or "": why a
    model was not measured, that measuring stopped (and why), or that too
    few measurements show no trend.

    Args:
        summary: A summary dict (`summarize`, or `summary.json`).

    Example:

    >>> print(trend_note({"measured_steps": 1, "measured_at_step": 0})[:110])
    Only 1 measurement step(s): too few to show a trend over training; the figures describe the network at step 0.
    >>> trend_note({"measured_steps": 0, "measurement_error": "ValueError: rank"})
    'Not measured: ValueError: rank'
    """
    suspect = summary.get("suspect_measurements") or 0
    if suspect and summary.get("suspect_reason"):
        # Left out of the figures: the reader is told why.
        left_out = (f"{suspect} measurement(s) left out of the figures: the latest "
                    f"{summary['suspect_reason']}.")
        rest = trend_note({**summary, "suspect_measurements": 0})
        if not (summary.get("measured_steps") or 0) and rest == "No measurement yet.":
            rest = "No other measurement."
        return f"{left_out} {rest}".strip()
    count = summary.get("measured_steps") or 0
    error = summary.get("measurement_error")
    if error and not count:
        # The reason may say "not measured:" itself (`measurement.not_measured`).
        reason = re.sub(r"(?i)^not measured:\s*", "", error)
        return f"Not measured: {reason}"
    stopped = (
        f"Measuring stopped after step {summary.get('measured_at_step')}: {error}"
        if error else ""
    )
    if count >= TREND_MEASUREMENTS:
        return stopped
    if not count:
        return "No measurement yet."
    return " ".join(filter(None, (
        f"Only {count} measurement step(s): too few to show a trend over "
        "training; the figures describe the network at step "
        f"{summary.get('measured_at_step')}. (GradWatch measures as often as "
        "keeps it within `overhead` of the CPU time of training: pass a larger "
        "overhead, or every=N, to measure more.)",
        stopped,
    )))


def run_labels(paths):
    """Names that tell runs apart: the shortest ending of each path that no
    other run shares (`w_10/gw` and `w_40/gw`, not `gw` twice).

    Args:
        paths: The run folders.

    Returns:
        One label per path, in order; the same folder given twice is
        numbered ("gw #2").

    Example:

    >>> run_labels(["runs/w_10/gw", "runs/w_40/gw", "runs/lstm"])
    ['w_10/gw', 'w_40/gw', 'lstm']
    """
    folders = [os.path.abspath(os.fspath(path)) for path in paths]
    unique = list(dict.fromkeys(folders))  # the same folder twice: one label
    parts = []
    for folder in unique:
        absolute = pathlib.Path(folder)
        parts.append([p for p in absolute.parts if p != absolute.anchor] or [folder])
    depths = [1] * len(parts)
    while True:
        names = ["/".join(p[-d:]) for p, d in zip(parts, depths)]
        shared = {name for name in names if names.count(name) > 1}
        longer = [i for i, name in enumerate(names)
                  if name in shared and depths[i] < len(parts[i])]
        if not longer:
            break
        for i in longer:
            depths[i] += 1
    name_of = dict(zip(unique, names))
    labels, seen = [], {}
    for folder in folders:
        seen[folder] = seen.get(folder, 0) + 1
        count = seen[folder]
        labels.append(name_of[folder] + (f" #{count}" if count > 1 else ""))
    return labels


def model_runs(log_dir):
    """The runs of the models one `GradWatch` watched in `log_dir`.

    Returns:
        A list of dicts (`index`, `model`, `folder`: the path of its run
        folder), the first model's run being `log_dir` itself; an empty
        list when one model was watched (no `models.json`).

    Raises:
        RunDirectoryError: If `models.json` is damaged.
    """
    path = pathlib.Path(log_dir) / MODELS
    if not path.is_file():
        return []
    try:
        listing = json.loads(path.read_text(encoding="utf-8"))
        entries = [
            {"index": int(e["index"]), "model": str(e["model"]),
             "folder": pathlib.Path(log_dir) / _inside(str(e["folder"]))}
            for e in listing["models"]
        ]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise RunDirectoryError(f"Damaged '{path}': {error}.") from error
    return entries


def _inside(relative):
    """A relative folder that stays inside the run folder, or an error."""
    parts = pathlib.PurePosixPath(relative).parts
    if pathlib.PurePosixPath(relative).is_absolute() or ".." in parts:
        raise ValueError(f"folder {relative!r} is outside the run folder")
    return relative
