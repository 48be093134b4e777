"""Private: what one `GradWatch` holds of its run beyond the records.

The time budget (`_schedule.Budget`), the drawing left for the end of
the process (`_drawing.ExitDrawing`) and the run's adaptive clipping
(`_autoclip.AutoClip`, with its norm history); the probe batch is the
run's own (`_measuring.Measurer.probe`). One `RunState` per `GradWatch`,
nothing kept in the process: a new `GradWatch` on a continued run folder
resumes from the folder's records (`resume`), as it would in a new
process, and never inherits another callback's budget, probe batch or
clipping history.
"""

import warnings

from keras_gradwatch.core.errors import RunDirectoryError
from keras_gradwatch.core.errors import RunFormatError
from keras_gradwatch.runs import records
from keras_gradwatch.watch import _autoclip
from keras_gradwatch.watch import _drawing
from keras_gradwatch.watch import _schedule


class RunState:
    """The state of one run of one `GradWatch`.

    Args:
        log_dir: The run folder.
        overhead: Share of the training's CPU time the callback may take.

    Attributes:
        budget: The run's `_schedule.Budget`.
        drawing: Its `_drawing.ExitDrawing`.
    """

    def __init__(self, log_dir, overhead):
        self.log_dir = log_dir
        self.budget = _schedule.Budget(overhead)
        self.drawing = _drawing.ExitDrawing(log_dir)
        self._clipper = None  # the run's AutoClip, once a setting asks for one
        self._restore = False  # the next AutoClip continues the folder's records

    def resume(self, own_time):
        """Continues from a run folder's records: its summary's `own_time`;
        the next `clipper` restores its history from the step records."""
        self.budget.resume(own_time)
        self._clipper = None
        self._restore = True

    def clipper(self, model, percentile, active, one_update_per_step=True):
        """The run's `AutoClip` for `model` (made on first use), at `percentile`.

        It keeps its norm history over the run's fits and, once switched on,
        stays on. Made for a continued folder, it restores them from the
        folder's step records (`_autoclip.history_from_records`).

        Args:
            model: The model trained (its optimizer is clipped).
            percentile: The percentile to clip at.
            active: Whether clipping is on from the start.
            one_update_per_step: Whether a step record's `grad_norm` is the
                norm of one update (not a `TruncatedBPTT`'s several).
        """
        clipper = self._clipper
        if clipper is None or clipper.model is not model or clipper.optimizer is not model.optimizer:
            clipper = self._clipper = _autoclip.AutoClip(model, percentile, active)
            if self._restore:
                self._restore = False
                restored = self._history(one_update_per_step)
                if restored is not None:
                    clipper.restore(*restored)
        else:
            clipper.percentile = float(percentile)  # traced anew by `install`
            if active:
                clipper.active.assign(True)
        return clipper

    def _history(self, one_update_per_step):
        try:
            run = records.load_run(self.log_dir)
            return _autoclip.history_from_records(run.iter_steps(), one_update_per_step)
        except (RunDirectoryError, RunFormatError, OSError) as error:
            # Never break training: the clipping starts a history of its own.
            warnings.warn(
                f"GradWatch: the clipping history of '{self.log_dir}' could not be read "
                f"({error}); adaptive clipping starts a new norm history.",
                stacklevel=2,
            )
            return None
