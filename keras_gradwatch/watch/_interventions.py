"""Private: the alert actions that change training, for `GradWatch`.

Adaptive clipping (`clip="auto"`, or the `"clip"` action: `_autoclip`) and
the `"rollback"` action (`_rollback`): installed when a `fit` begins,
taken when an alert asks, removed when it ends. Opt-in: nothing here runs
unless a setting asks for it.
"""

import math
import warnings

from keras_gradwatch.core import alerts as alerts_lib
from keras_gradwatch.watch import _advice
from keras_gradwatch.watch import _model_facts
from keras_gradwatch.watch import _rollback


class Interventions:
    """Clipping and rollback for one run.

    Args:
        run: The `_engine.WatchEngine` they act for: its settings, model,
            step, alert desk, learning-rate reader and update ratios.

    Attributes:
        clipper: The run's `_autoclip.AutoClip` (`_run_state.RunState.clipper`),
            with `clip="auto"` or `exploding="clip"`, else None.
        clip_note: Why clipping cannot bound the step, if it cannot.
        rollbacks: Every rollback of the run, for the summary.
    """

    def __init__(self, run):
        self._run = run
        self.clipper = None
        self.clip_note = None
        self._clip_warned = False
        self._rollback = None  # _rollback.Rollback, with a "rollback" action
        self.rollbacks = []

    @property
    def clipping(self):
        """Whether a setting asks for clipping (now or on an alert)."""
        settings = self._run.settings
        return settings.clip is not None or settings.clips_on_alert

    def prepare(self, model):
        """A `fit` begins, before the step is traced: the rollback (it may
        wrap a learning-rate schedule) and why clipping cannot help."""
        desk = self._run.desk
        if "rollback" in desk.dispatcher.actions.values():
            self._rollback = _rollback.Rollback(model, self._run.step, self.rollbacks)
        if self.clipping:
            self.clip_note = _advice.clip_note(desk.family, desk.optimizer)

    def install(self, model):
        """Puts AutoClip into the model's step, if a setting asks for it."""
        if not self.clipping:
            return
        settings = self._run.settings
        self.clipper = self._run.run.clipper(
            model, settings.clip_percentile, active=settings.clip is not None,
            one_update_per_step=not _model_facts.is_tbptt(model),
        )
        self.clipper.install()
        if self.clip_note is not None and not self._clip_warned:
            self._clip_warned = True  # once per callback, not once per fit
            flat = settings.flat()
            warnings.warn(f"GradWatch(clip={flat['clip']!r}, "
                          f"exploding={flat['exploding']!r}): " + self.clip_note,
                          stacklevel=alerts_lib._user_stacklevel())

    def is_clipping(self):
        """Whether AutoClip clips now."""
        return self.clipper is not None and self.clipper.is_on()

    def clip_state(self):
        """AutoClip's state for the step record, or None."""
        return self.clipper.state() if self.clipper is not None else None

    def start_clipping(self):
        """The "clip" action: switches AutoClip on (no new trace)."""
        if self.clipper is None:
            return ""
        sentence = self.clipper.switch_on()
        if self.clip_note is not None:
            sentence += (f" (It cannot bound the step of {self._run.desk.optimizer}: "
                         "lower the learning rate, or use exploding='rollback'.)")
        return sentence

    def after_step(self, logs, healthy):
        """Tells the rollback whether the step was healthy (no alert, a
        finite loss, no suspect measurement)."""
        if self._rollback is None:
            return
        loss = logs.get("loss")
        healthy = healthy and (loss is None or math.isfinite(float(loss)))
        self._rollback.after_step(self._run.step, healthy)

    def roll_back(self):
        """The "rollback" action; returns the sentence saying what it did."""
        if self._rollback is None:
            return ""
        run = self._run
        sentence, stop = self._rollback.roll_back(run.step)
        if stop:
            run.stop_training()
            return sentence
        run.learning_rate.forget()
        if run.ratios.pending:
            run.ratios.snapshot()  # the next update is compared with the restored weights
        return sentence

    def end(self):
        """The `fit` ends: the clip and the snapshots are removed."""
        if self.clipper is not None:
            self.clipper.remove()
        if self._rollback is not None:
            self._rollback.end()
            self._rollback = None
