"""Private: `GradWatch`'s run recorder, the one writer of a run folder.

It writes the records of `keras_gradwatch.records` (steps, measurements,
alerts, profiles, `run.json`, `summary.json`) as the run goes, keeps their
running totals (`records.Totals`, so the summary never re-reads a file),
continues a run already in the folder, and feeds TensorBoard, when asked,
as a second sink of the same values.
"""

import time

from keras_gradwatch import _tensorboard
from keras_gradwatch import records
from keras_gradwatch.errors import RunDirectoryError
from keras_gradwatch.errors import RunFormatError

# Step records are buffered and written at most this often (seconds).
FLUSH_SECONDS = 1.0


class Resumed:
    """Where a run already in the folder left off."""

    def __init__(self, totals, fits, alert_counts, own_time=None):
        self.own_time = own_time  # GradWatch's and the fits' times so far
        self.step = totals.step
        self.epoch = totals.epoch
        self.measurements = totals.measurements
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
        self._writer = records.RunWriter(log_dir)
        self._board = None
        self._pending = []
        self._last_flush = 0.0

    def open(self):
        """Creates the folder and opens the record files (for a `fit`)."""
        self._writer.open()
        if self.tensorboard and self._board is None:
            self._board = _tensorboard.Board(self.log_dir)
        self._last_flush = time.perf_counter()

    def resume(self, kinds):
        """Reads a run already in the folder; returns `Resumed` or None."""
        try:
            run = records.load_run(self.log_dir)
        except RunFormatError:
            raise  # continuing it could damage it
        except RunDirectoryError:
            return None  # an empty or new folder
        self.totals = records.totals(run)
        counts = ((run.summary or {}).get("alerts")) or {}
        return Resumed(
            self.totals,
            list(run.settings.get("fits", [])),
            {k: v for k, v in counts.items() if k in kinds},
            (run.summary or {}).get("own_time"),
        )

    def write_settings(self, settings):
        self._writer.write_json(records.RUN, settings)

    def write_summary(self, summary):
        self._writer.write_json(records.SUMMARY, summary)

    def add_step(self, record):
        """Buffers a step record; writes the buffer once a second."""
        self._pending.append(record)
        now = time.perf_counter()
        if now - self._last_flush >= FLUSH_SECONDS:
            self.flush()
            self._last_flush = now

    def flush(self):
        """Writes the buffered step records."""
        for record in self._pending:
            self._writer.append(records.STEPS, record, flush=False)
            self.totals.add_step(record)
        if self._board is not None:
            self._board.steps(self._pending)
        self._pending = []
        self._writer.flush()

    def add_measurement(self, result, **fields):
        """Writes a `Measurement`, its profiles and `fields`; returns the record.

        `fields` are the record's own keys: index, step, epoch, reason,
        seconds and traced.
        """
        profiles = {name: r.profile for name, r in result.layers.items()}
        relative = self._writer.write_profiles(fields["index"], profiles) if profiles else None
        record = measurement_record(result, relative, **fields)
        self._writer.append(records.MEASUREMENTS, record)
        self.totals.add_measurement(record)
        if self._board is not None:
            self._board.measurement(fields["step"], result)
        return record

    def add_alert(self, alert):
        record = alert.to_dict()
        self._writer.append(records.ALERTS, record)
        self.totals.add_alert(record)

    def images(self, step):
        """Adds the drawn plots to TensorBoard (if it is on)."""
        if self._board is not None:
            from keras_gradwatch import plots

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
        """Writes what is buffered and closes the files (end of a `fit`)."""
        self.flush()
        self._writer.close()
        if self._board is not None:
            self._board.flush()


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
