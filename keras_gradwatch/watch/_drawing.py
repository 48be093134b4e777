"""Private: drawing a run's plots and report now, or when the process ends.

`GradWatch` draws when the time budget allows, and otherwise defers: its
`ExitDrawing` draws the run once, when the Python process exits (also after
an uncaught exception or Ctrl-C), unless it was drawn before. Each
`GradWatch` owns its own (nothing is shared through the process): several
on one folder (`fit` in a loop, a new callback each time) draw it once, the
latest first, the others finding the report newer than the records.
Drawing reads only the saved records, so it needs no model and no
TensorFlow.

In an interactive session (Jupyter, IPython, the Python prompt) the process
may not end for hours, so the end of a `fit` also draws when the last
drawing is older than `INTERACTIVE_SECONDS`.
"""

import atexit
import os
import sys
import time
import warnings

from keras_gradwatch.runs import records

INTERACTIVE_SECONDS = 60.0

# The records a report is drawn from (the summary is rewritten after every
# drawing, with GradWatch's own time: it does not make a report stale).
_DRAWN_FROM = (records.RUN, records.STEPS, records.MEASUREMENTS, records.ALERTS)


def draw(log_dir):
    """Writes the plots and `report.html` of a run folder.

    Returns:
        The seconds it took, or None if it failed (a warning says why; the
        records are untouched).
    """
    from keras_gradwatch.runs import report

    start = time.perf_counter()
    try:
        report.write_report(log_dir)
    except Exception as error:  # noqa: BLE001 - never break training
        warnings.warn(
            f"GradWatch could not draw the report: {type(error).__name__}: "
            f"{error}. The records are intact; `gradwatch report {log_dir}` "
            "draws it later.",
            stacklevel=3,
        )
        return None
    return time.perf_counter() - start


class ExitDrawing:
    """The drawing of one run left for the end of the process.

    Args:
        log_dir: The run folder.
    """

    def __init__(self, log_dir):
        self.log_dir = log_dir
        self.then = None
        self.pending = False

    def defer(self, then=None):
        """Draws the run when the process exits, unless drawn before.

        Args:
            then: A function called after that drawing (e.g. to write the
                plots to TensorBoard), or None.
        """
        self.then = then
        if not self.pending:
            self.pending = True
            atexit.register(self.at_exit)

    def drawn(self):
        """The run was drawn: nothing is left for the exit."""
        if self.pending:
            self.pending = False
            atexit.unregister(self.at_exit)

    def at_exit(self):
        """What the end of the process does: draws the run if it is waiting
        and its report is older than its records."""
        if not self.pending:
            return
        self.drawn()
        if _report_is_current(self.log_dir):
            return  # another GradWatch on the folder drew it since
        try:
            if draw(self.log_dir) is not None and self.then is not None:
                self.then()
        except KeyboardInterrupt:
            return  # a second Ctrl-C: leave it to `gradwatch report`


def _report_is_current(log_dir):
    """Whether `report.html` was written after every record it shows."""
    from keras_gradwatch.runs import report

    try:
        drawn = os.stat(os.path.join(log_dir, report.REPORT)).st_mtime_ns
    except OSError:
        return False
    for name in _DRAWN_FROM:
        try:
            if os.stat(os.path.join(log_dir, name)).st_mtime_ns >= drawn:
                return False
        except OSError:
            continue  # a record the run does not have
    return True


def _interactive():
    """Whether Python runs interactively (a notebook, IPython, `python -i`)."""
    if hasattr(sys, "ps1") or sys.flags.interactive:
        return True
    ipython = sys.modules.get("IPython")
    return ipython is not None and getattr(ipython, "get_ipython", lambda: None)() is not None
