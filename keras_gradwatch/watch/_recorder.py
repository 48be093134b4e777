"""Private: `GradWatch`'s run recorder, the one writer of a run folder.

It writes the records of `keras_gradwatch.records` (steps, measurements,
alerts, profiles, `run.json`, `summary.json`) as the run goes, keeps their
running totals (`records.Totals`, so the summary never re-reads a file),
continues a run already in the folder, and feeds TensorBoard, when asked,
as a second sink of the same values.

The folder is its own (see `_folder`): a folder holding other files is
refused, and the folder's lock is held from the start of each `fit` to its
end. Continuing a run repairs it forward: a half last line is set aside,
damaged lines are skipped, a damaged `run.json` or `summary.json` is
renamed aside before a new one is written, and the numbering of steps and
measurements goes on after the highest one found. A write that fails
(a full disk, a vanished folder, permissions) stops the recording with one
`RunRecordWarning`; training goes on (turn the warning into an error,
`warnings.simplefilter("error", RunRecordWarning)`, to stop it instead).
"""

import contextlib
import os
import pathlib
import re
import time
import warnings

from keras_gradwatch.core.errors import RunDirectoryError
from keras_gradwatch.core.errors import RunFormatError
from keras_gradwatch.core.errors import RunRecordWarning
from keras_gradwatch.runs import _folder
from keras_gradwatch.runs import records
from keras_gradwatch.watch import _tensorboard

# Step records are buffered and written at most this often (seconds).
FLUSH_SECONDS = 1.0


class Resumed:
    """Where a run already in the folder left off."""

    def __init__(self, totals, fits, alert_counts, own_time=None, next_index=0):
        self.own_time = own_time  # GradWatch's and the fits' times so far
        self.step = totals.step
        self.epoch = totals.epoch
        # The index of the next measurement (after every one on disk).
        self.measurements = max(totals.measurements, next_index)
        self.measured_step = totals.last_measurement.get("step")
        self.fits = fits
        self.alert_counts = alert_counts


class RunRecorder:
    """Writes one run folder's records and keeps their totals.

    Args:
        log_dir: The run folder.
        tensorboard: Also write TensorBoard event files into it.
    """

    def __init__(self, log_dir, tensorboard=False):
        self.log_dir = log_dir
        self.tensorboard = tensorboard
        self.totals = records.Totals()
        self.failed = None  # why recording stopped, once it has
        self.continued_elsewhere = False  # another writer went on since our last fit
        self._writer = records.RunWriter(log_dir)
        self._lock = _folder.FolderLock(pathlib.Path(log_dir))
        self._left = None  # the record files' sizes when this recorder closed them
        self._board = None
        self._pending = []
        self._last_flush = 0.0

    def open(self):
        """Claims the folder for a `fit`: checks that it is a run (or new),
        creates it, takes its lock and repairs a half last line.

        Raises:
            RunDirectoryError: If the folder holds files GradWatch did not
                write, or cannot be written.
            RunLockedError: If another writer holds the folder.
        """
        path = pathlib.Path(self.log_dir)
        if self._left is None:  # this recorder's own folder from its first fit on
            _folder.check_ownership(path)
        self._writer.open()
        self._lock.acquire()
        self.failed = None  # a new fit tries again (the disk may have room)
        self.continued_elsewhere = self._left is not None and self._left != self._sizes()
        if self.continued_elsewhere:
            warnings.warn(
                f"GradWatch: '{path}' was continued by another writer since the last "
                "fit of this callback; this fit's records follow its records.",
                RunRecordWarning, stacklevel=4,
            )
        for name in (records.STEPS, records.MEASUREMENTS, records.ALERTS):
            self._guard(f"repairing {name}", lambda name=name: self._cut(path / name))
        if self.tensorboard and self._board is None:
            self._board = _tensorboard.Board(self.log_dir)
        self._last_flush = time.perf_counter()

    @staticmethod
    def _cut(path):
        cut = _folder.cut_partial_line(path)
        if cut:
            warnings.warn(
                f"GradWatch: the last line of '{path}' was cut short (a crash or a "
                f"full disk); its {cut} bytes are kept in '{path.name}.partial' and "
                "the run continues on a new line.",
                RunRecordWarning, stacklevel=5,
            )

    def _sizes(self):
        path = pathlib.Path(self.log_dir)
        sizes = []
        for name in (records.STEPS, records.MEASUREMENTS, records.ALERTS):
            try:
                sizes.append(os.stat(path / name).st_size)
            except OSError:
                sizes.append(-1)
        return tuple(sizes)

    def resume(self, kinds):
        """Reads a run already in the folder; returns `Resumed` or None.

        Damaged records are skipped (a warning names them); a damaged
        `run.json` or `summary.json` is renamed aside, so that the new one
        overwrites nothing; the next measurement index follows every
        index and profile file on disk.
        """
        try:
            run = records.load_run(self.log_dir)
        except RunFormatError:
            self.release()  # refused: the folder stays as it was
            raise  # continuing it could damage it
        except RunDirectoryError:
            return None  # an empty or new folder
        self.totals = records.totals(run)
        for name in (records.RUN, records.SUMMARY):
            if name in run.damaged:
                self._guard(f"setting {name} aside",
                            lambda name=name: _folder.set_aside(run.path / name))
        counts = ((run.summary or {}).get("alerts")) or {}
        return Resumed(
            self.totals,
            list(run.settings.get("fits") or []),
            {k: v for k, v in counts.items() if k in kinds},
            (run.summary or {}).get("own_time"),
            next_index=_next_index(run),
        )

    def write_settings(self, settings):
        self._guard(records.RUN, lambda: self._writer.write_json(
            records.RUN, {"writer": records.WRITER, **settings}))

    def write_summary(self, summary):
        summary = {**summary, "recording_error": self.failed}  # None: every record written
        if self.failed is not None and self._lock.held and not self._lock.superseded:
            with contextlib.suppress(OSError):  # once more, quietly: the disk may have room
                self._writer.write_json(records.SUMMARY, summary)
        else:
            self._guard(records.SUMMARY,
                        lambda: self._writer.write_json(records.SUMMARY, summary))

    def add_step(self, record):
        """Buffers a step record; writes the buffer once a second."""
        self._pending.append(record)
        now = time.perf_counter()
        if now - self._last_flush >= FLUSH_SECONDS:
            self.flush()
            self._last_flush = now

    def flush(self):
        """Writes the buffered step records."""
        pending, self._pending = self._pending, []
        for record in pending:
            self.totals.add_step(record)

        def write():
            for record in pending:
                self._writer.append(records.STEPS, record, flush=False)
            self._writer.flush()

        self._guard(records.STEPS, write)
        if self._board is not None:
            self._board.steps(pending)

    def add_measurement(self, result, **fields):
        """Writes a `Measurement`, its profiles and `fields`; returns the record.

        `fields` are the record's own keys: index, step, epoch, reason,
        seconds and traced.
        """
        profiles = {name: r.profile for name, r in result.layers.items()}

        def write():
            relative = (self._writer.write_profiles(fields["index"], profiles)
                        if profiles else None)
            record = measurement_record(result, relative, **fields)
            self._writer.append(records.MEASUREMENTS, record)
            return record

        record = self._guard(records.MEASUREMENTS, write)
        if record is None:
            record = measurement_record(result, None, **fields)
        self.totals.add_measurement(record)
        if self._board is not None:
            self._board.measurement(fields["step"], result)
        return record

    def add_alert(self, alert):
        record = alert.to_dict()
        self._guard(records.ALERTS, lambda: self._writer.append(records.ALERTS, record))
        self.totals.add_alert(record)

    def _guard(self, what, write):
        """Runs `write`; a failure (an `OSError`) stops the recording with
        one warning. Returns what `write` returned, or None."""
        if self.failed is not None:
            return None
        if self._lock.superseded:
            self._stop("another GradWatch of this process took the folder over", what)
            return None
        if not self._lock.held:
            return None  # between fits: the folder is not this writer's
        try:
            return write()
        except OSError as error:
            self._stop(f"{type(error).__name__}: {error}", what)
            return None

    def _stop(self, why, what):
        self.failed = f"{why} (while writing {what}, after step {self.totals.step})"
        self._writer.abandon()
        warnings.warn(
            f"GradWatch stopped recording to '{self.log_dir}': {self.failed}. Training "
            "goes on; the records written so far stay readable (`gradwatch summary "
            f"{self.log_dir}`). Free the space or fix the folder; the next fit tries again.",
            RunRecordWarning, stacklevel=5,
        )

    def images(self, step):
        """Adds the drawn plots to TensorBoard (if it is on)."""
        if self._board is not None:
            from keras_gradwatch.runs import plots

            self._board.images(step, (plots.DECAY, plots.HEATMAP, plots.NORMS))

    def images_later(self, step):
        """A function that adds the plots to TensorBoard once drawn, or None."""
        if self._board is None:
            return None

        def then():
            self.images(step)
            self._board.flush()

        return then

    def close(self):
        """Writes what is buffered and closes the files (end of a `fit`;
        the lock is kept for its last summary: `release`)."""
        self.flush()
        self._guard("the record files", self._writer.close)
        self._writer.abandon()  # after a failure: what could not be written
        if self._board is not None:
            self._board.flush()

    def release(self):
        """Gives the folder's lock up (the `fit` has written all it writes)."""
        if self._lock.held:
            self._left = self._sizes()
        self._lock.release()


def _next_index(run):
    """The index after every measurement record and profile file on disk."""
    indexes = [m.get("index") for m in run.measurements if isinstance(m.get("index"), int)]
    try:
        names = os.listdir(run.path / records.PROFILES)
    except OSError:
        names = []
    for name in names:
        match = re.match(r"^(\d+)(-\d+)?\.npz$", name)
        if match:
            indexes.append(int(match.group(1)))
    return max(indexes, default=-1) + 1


def measurement_record(result, profiles, *, index, step, epoch, reason, seconds, traced):
    """The `measurements.jsonl` record of a `Measurement`."""
    return {
        "index": index,
        "step": step,
        "epoch": epoch,
        "reason": reason,
        "time": time.time(),
        "seconds": seconds,
        "traced": traced,
        "length": result.length,
        "sequences": result.sequences,
        "loss_steps": result.loss_steps,
        # The span the truncation bias is measured against: a
        # TruncatedBPTT's backprop (None on other models).
        "backprop": result.window,
        "global_norm": result.global_norm,
        "layer_norms": result.layer_norms,
        "profiles": profiles,
        # Why the measurement is not the gradient training follows (absent
        # when it is): its profiles are no picture of training.
        **({"suspect": result.suspect} if getattr(result, "suspect", None) else {}),
        # The gradient across depth (`depth.DepthProfile.to_record`), when measured.
        **({"depth": result.depth.to_record()} if getattr(result, "depth", None) else {}),
        "layers": {
            name: {
                "site": r.site,
                "decay_rate": r.decay_rate,
                "horizon": r.horizon,
                "truncation_bias": r.truncation_bias,
                "suggested_window": r.suggested_window,
                "lag0": float(r.profile[0]) if r.profile.size else None,
            }
            for name, r in result.layers.items()
        },
    }
