"""Private: drawing a run's plots and report now, or when the process ends.

`GradWatch` draws when the time budget allows, and otherwise defers: a
deferred folder is drawn once, when the Python process exits (also after an
uncaught exception or Ctrl-C), unless something draws it before. Drawing
reads only the saved records, so it needs no model and no TensorFlow.

In an interactive session (Jupyter, IPython, the Python prompt) the process
may not end for hours, so the end of a `fit` also draws when the last
drawing is older than `INTERACTIVE_SECONDS`.
"""

import atexit
import sys
import time
import warnings

from keras_gradwatch.runs import records

INTERACTIVE_SECONDS = 60.0

_deferred = {}  # real path -> (the log_dir as given, what to do after)


def draw(log_dir):
    """Writes the plots and `report.html` of a run folder.

    Returns:
        The seconds it took, or None if it failed (a warning says why; the
        records are untouched).
    """
    from keras_gradwatch.runs import report

    _deferred.pop(records.folder_key(log_dir), None)
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


def defer(log_dir, then=None):
    """Draws `log_dir` when the process exits (unless drawn before).

    Args:
        log_dir: The run folder.
        then: A function called after that drawing (e.g. to write the plots
            to TensorBoard), or None.
    """
    _deferred[records.folder_key(log_dir)] = (log_dir, then)


def deferred():
    """The folders waiting to be drawn at exit."""
    return [log_dir for log_dir, _ in _deferred.values()]


def _interactive():
    """Whether Python runs interactively (a notebook, IPython, `python -i`)."""
    if hasattr(sys, "ps1") or sys.flags.interactive:
        return True
    ipython = sys.modules.get("IPython")
    return ipython is not None and getattr(ipython, "get_ipython", lambda: None)() is not None


def _draw_deferred():
    for log_dir, then in list(_deferred.values()):
        try:
            if draw(log_dir) is not None and then is not None:
                then()
        except KeyboardInterrupt:
            return  # a second Ctrl-C: leave the rest to `gradwatch report`


atexit.register(_draw_deferred)
