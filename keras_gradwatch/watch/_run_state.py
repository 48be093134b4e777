"""Private: what one `GradWatch` holds of its run beyond the records.

The time budget (`_schedule.Budget`) and the drawing left for the end of
the process (`_drawing.ExitDrawing`); the probe batch is the run's own
(`_measuring.Measurer.probe`). One `RunState` per `GradWatch`, nothing kept in the
process: a new `GradWatch` on a continued run folder resumes from the
folder's records (`resume`), as it would in a new process, and never
inherits another callback's budget or probe batch.
"""

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
        self.budget = _schedule.Budget(overhead)
        self.drawing = _drawing.ExitDrawing(log_dir)

    def resume(self, own_time):
        """Continues from a run folder's records: its summary's `own_time`."""
        self.budget.resume(own_time)
