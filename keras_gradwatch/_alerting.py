"""Private: `GradWatch`'s alert desk, from a finding to an acted-on `Alert`.

It stamps a detector's `Finding` with the run's current step and epoch,
assembles the advice the finding asks for (`advice`: the one place where
advice text is written, e.g. a `global_clipnorm` suggested from the
gradient norms seen so far, for the model's optimizer), names the first
layer affected when a finding asks for it (only when the alert will be
reported: the diagnosis may measure), and hands the `Alert` to
`alerts.AlertDispatcher`, which rate-limits, records and acts (warn, stop,
raise, a callable, or nothing).
"""

from keras_gradwatch import alerts


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
    """

    def __init__(self, actions, record, stop, where, clip=None, diagnose=None, line=None):
        self.dispatcher = alerts.AlertDispatcher(
            actions, record=record, stop=stop, clip=clip, line=line
        )
        self.where = where
        self.diagnose = diagnose
        self.step_norms = alerts.RollingWindow()  # every step's grad_norm
        self.measured_norms = alerts.RollingWindow()  # the probe batch's
        self.optimizer = "keras.optimizers.Adam"  # named in the advice

    @property
    def counts(self):
        """Occurrences of each kind, reported or rate-limited."""
        return self.dispatcher.counts

    def active(self, kind):
        """Whether alerts of `kind` are on (their action is not None)."""
        return self.dispatcher.active(kind)

    def clip_advice(self, lead="Clip"):
        """The sentence suggesting a `global_clipnorm` from the norms seen."""
        norms = self.step_norms if len(self.step_norms) else self.measured_norms
        return alerts.clip_advice(
            alerts.clip_suggestion(norms), lead=lead, optimizer=self.optimizer
        )

    def advice(self, finding):
        """The advice appended to a finding's message (may be "")."""
        text = {
            "": "",
            "clip": " " + self.clip_advice(),
            "clip_then_lr": " " + self.clip_advice() + " Lower the learning rate.",
            "lr_or_clip": " Lower the learning rate, or " + self.clip_advice(lead="clip"),
            "nonfinite": " Lower the learning rate, " + self.clip_advice(lead="or clip")
            + " Check the data for NaN or Inf.",
        }[finding.advice]
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
