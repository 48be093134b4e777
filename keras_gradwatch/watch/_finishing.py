"""Private: the summary, the end of a `fit` and the drawing, for `GradWatch`.

The summary (`summary.json`: the records' totals with the run's status,
alert counts, rollbacks and own time), the end of a fit (the hook and the
interventions removed, the records closed) and the plots and report:
drawn now when the budget allows, else at the process exit.
"""

import pathlib
import time

from keras_gradwatch.core import alerts as alerts_lib
from keras_gradwatch.core.errors import GradientAlertError
from keras_gradwatch.watch import _drawing


class Finishing:
    """The summary, end and drawing of one run.

    Args:
        run: The `_engine.WatchEngine` finished.
    """

    def __init__(self, run):
        self._run = run

    def summary(self):
        """The run's figures, as written to `summary.json` (see
        `GradWatch.summary`)."""
        run = self._run
        run.recorder.flush()
        summary = run.recorder.totals.summary(run.status)
        summary.update(
            alerts={kind: run.desk.counts[kind] for kind in alerts_lib.KINDS},
            rollbacks=list(run.interventions.rollbacks),
            clip_note=run.interventions.clip_note,
            measurement_error=run.measurer.error,
            own_time=run.own.totals(),
            updated=time.time(),
        )
        model = run.model
        if model is not None and getattr(model, "auto_window", False):
            # TruncatedBPTT(window="auto"): its latest decision, and whether
            # it sits at max_window with more than its tolerance cut off.
            decisions = model.window_decisions
            summary["auto_window"] = decisions[-1] if decisions else None
        return summary

    def step_failed(self, error):
        """An error inside a step (the hook calls it)."""
        self.finish("raised" if isinstance(error, GradientAlertError) else "interrupted")

    def finish(self, status):
        """Ends the `fit` with `status`: the hooks removed, the records
        closed, the plots drawn (now or at exit)."""
        run = self._run
        if run.hook is None and run.status != "running":
            return  # finished already (an error inside a step, then train end)
        run.status = status
        run.run.budget.end_fit()
        if run.hook is not None:
            run.hook.remove()
            run.hook = None
        run.interventions.end()
        run.recorder.write_summary(self.summary())  # summary() flushes the steps
        run.recorder.close()
        if run.settings.plots is not None:
            try:
                self._draw_at_end()
            except KeyboardInterrupt:
                self._defer()  # a second Ctrl-C: draw at exit
        # The drawing is part of the fit: the final figures count it.
        run.own.end_fit()
        run.recorder.write_summary(self.summary())
        run.recorder.release()  # another writer may have the folder now

    def _draw_at_end(self):
        """Draws now if the budget allows (or, in an interactive session,
        if the last drawing is a minute old); otherwise when the process
        exits, also when training ended early (a short fit stopped by an
        alert would pay a second of drawing for a few seconds of training)."""
        budget = self._run.run.budget
        stale = budget.since_drawing() > _drawing.INTERACTIVE_SECONDS
        if budget.can_draw() or (stale and _drawing._interactive()):
            self.draw()
        else:
            self._defer()

    def _defer(self):
        run = self._run
        run.run.drawing.defer(run.recorder.images_later(run.step))

    def draw(self):
        """Draws the plots and report now; returns the seconds it took, or
        None if drawing failed."""
        run = self._run
        run.own.heavy()
        cpu_start = time.process_time()
        seconds = _drawing.draw(run.settings.log_dir)
        if seconds is None:
            return None
        run.run.drawing.drawn()
        run.run.budget.drew(max(time.process_time() - cpu_start, seconds))
        run.recorder.images(run.step)
        return seconds

    def draw_now(self):
        """`GradWatch.draw`: the path of `report.html`, or None."""
        self._run.recorder.flush()
        if self.draw() is None:
            return None
        from keras_gradwatch.runs import report

        return pathlib.Path(self._run.settings.log_dir) / report.REPORT
