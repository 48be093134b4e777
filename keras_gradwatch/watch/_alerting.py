"""Private: `GradWatch`'s alert desk, from a finding to an acted-on `Alert`.

It stamps a detector's `Finding` with the run's current step and epoch,
assembles the advice the finding asks for (`advice`: the one place where
advice text is written, fit to the optimizer by `_advice`: the learning
rate's rise when it rose before a blow-up, a lower learning rate for
adaptive optimizers, a `global_clipnorm` suggested from the gradient norms
seen so far where clipping bounds the step), names the first
layer affected when a finding asks for it (only when the alert will be
reported: the diagnosis may measure), and hands the `Alert` to
`alerts.AlertDispatcher`, which rate-limits, records and acts (warn, stop,
raise, a callable, or nothing).
"""

from keras_gradwatch.core import alerts
from keras_gradwatch.watch import _advice
from keras_gradwatch.watch import _lr_history


class AlertDesk:
    """Makes and dispatches the alerts of one `GradWatch`.

    Args:
        actions: The action of each kind (`alerts.resolve_actions`).
        record: Function called with each reported `Alert`.
        stop: Function that stops training.
        where: Function returning the current `(step, epoch)`.
        clip: Function starting adaptive clipping (the `"clip"` action),
            returning a sentence that says so; or None.
        diagnose: Function returning `(layer, sentence)`: the first layer
            affected by a non-finite value (it may measure); or None.
        line: The `alerts.ProgressLine` to end before a warning, or None.
        rollback: Function rolling back (the `"rollback"` action),
            returning a sentence that says what it did; or None.
    """

    def __init__(self, actions, record, stop, where, clip=None, diagnose=None, line=None,
                 rollback=None):
        self.dispatcher = alerts.AlertDispatcher(
            actions, record=record, stop=stop, clip=clip, line=line, rollback=rollback
        )
        self.where = where
        self.diagnose = diagnose
        self.step_norms = alerts.RollingWindow()  # every step's grad_norm
        self.measured_norms = alerts.RollingWindow()  # the probe batch's
        self.optimizer = "keras.optimizers.Adam"  # named in the advice
        self.family = _advice.UNKNOWN  # whether clipping bounds its step
        self.learning_rates = _lr_history.LearningRateHistory()  # each step's
        # The model's optimizer makes no update (a custom train_step applies
        # its own): advice cannot name its optimizer or learning rate.
        self.optimizer_idle = False

    @property
    def counts(self):
        """Occurrences of each kind, reported or rate-limited."""
        return self.dispatcher.counts

    def active(self, kind):
        """Whether alerts of `kind` are on (their action is not None)."""
        return self.dispatcher.active(kind)

    def clip_advice(self):
        """The advice of an exploding or non-finite alert at the current
        step (`_advice.advice`): the learning rate first when it rose before
        it, clipping where it bounds the optimizer's step."""
        if self.optimizer_idle:
            return (f"Lower the learning rate of the optimizers your train_step applies, "
                    f"or clip their gradients (the compiled {self.optimizer} made no "
                    "update).")
        norms = self.step_norms if len(self.step_norms) else self.measured_norms
        step, _ = self.where()
        return _advice.advice(
            self.family, self.optimizer,
            rise=self.learning_rates.rise_before(step),
            clipnorm=alerts.clip_suggestion(norms),
            rate=self.learning_rates.latest(),
        )

    def advice(self, finding):
        """The advice appended to a finding's message (may be ""): the
        optimizer's (`clip_advice`) for every finding that asks for one."""
        if not finding.advice:
            text = ""
        elif finding.advice == "nonfinite":
            text = " " + self.clip_advice() + " Check the data for NaN or Inf."
        elif finding.advice == "data_first":
            then = self.clip_advice()
            text = (" Check the data first (NaN or Inf in the inputs, targets or "
                    "sample weights), and the loss for log(0) or 0/0. If they are "
                    "clean: " + then[:1].lower() + then[1:])
        else:  # "clip", "clip_then_lr", "lr_or_clip": one sentence fit to the optimizer
            text = " " + self.clip_advice()
        return text + (" " + finding.remedy if finding.remedy else "")

    def report(self, finding):
        """Dispatches a detector's `Finding` with its advice.

        Returns:
            The reported `Alert`, or None (kind off, or rate-limited).
        """
        if not self.active(finding.kind):
            return None
        key = (finding.kind, finding.signal, finding.layer)
        layer, message = finding.layer, finding.message
        if finding.diagnose and layer is None:
            # A step signal names no layer: rate-limit it as one signal, and
            # diagnose only when it will be reported.
            if not self.dispatcher.due(key):
                self.dispatcher.skip(finding.kind, key)
                return None
            if self.diagnose is not None:
                layer, detail = self.diagnose()
                message += " " + detail
        return self.alert(
            finding.kind, layer, finding.value, finding.threshold, finding.signal,
            message + self.advice(finding), key=key, evidence=finding.evidence,
        )

    def alert(self, kind, layer, value, threshold, signal, message, key=None, evidence=None):
        """Dispatches an `Alert` at the current step."""
        step, epoch = self.where()
        return self.dispatcher.dispatch(
            alerts.Alert(
                kind=kind,
                step=step,
                epoch=epoch,
                layer=layer,
                value=float(value),
                threshold=None if threshold is None else float(threshold),
                message=message,
                signal=signal,
                evidence=dict(evidence or {}),
            ),
            key=key,
        )
