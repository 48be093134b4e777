"""Private: `GradWatch`'s alert desk, from a finding to an acted-on `Alert`.

It stamps an alert with the run's current step and epoch, adds the advice
every exploding or non-finite alert carries (fit to the optimizer by
`_advice`: the learning rate's rise when it rose before the blow-up, a lower
learning rate for adaptive optimizers, a `global_clipnorm` suggested from
the gradient norms seen so far where clipping bounds the step), rate-limits
non-finite alerts as one signal until a layer is named, and hands the
`Alert` to `alerts.AlertDispatcher`, which records it and acts (warn, stop,
raise, a callable, or nothing).
"""

from keras_gradwatch import _advice
from keras_gradwatch import _lr_history
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
        rollback: Function rolling back (the `"rollback"` action),
            returning a sentence that says what it did; or None.
    """

    def __init__(self, actions, record, stop, where, clip=None, rollback=None):
        self.dispatcher = alerts.AlertDispatcher(
            actions, record=record, stop=stop, clip=clip, rollback=rollback
        )
        self.where = where
        self.step_norms = alerts.RollingWindow()  # every step's grad_norm
        self.measured_norms = alerts.RollingWindow()  # the probe batch's
        self.optimizer = "keras.optimizers.Adam"  # named in the advice
        self.family = _advice.UNKNOWN  # whether clipping bounds its step
        self.learning_rates = _lr_history.LearningRateHistory()  # each step's

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
        norms = self.step_norms if len(self.step_norms) else self.measured_norms
        step, _ = self.where()
        return _advice.advice(
            self.family, self.optimizer,
            rise=self.learning_rates.rise_before(step),
            clipnorm=alerts.clip_suggestion(norms),
            rate=self.learning_rates.latest(),
        )

    def report(self, finding, advice=""):
        """Dispatches a detector's `Finding`, with `advice` appended."""
        return self.alert(
            finding.kind, finding.layer, finding.value, finding.threshold,
            finding.signal, finding.message + advice,
        )

    def alert(self, kind, layer, value, threshold, signal, message, key=None):
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
            ),
            key=key,
        )

    def nonfinite(self, signal, value, what, diagnose, layer=None):
        """A `nonfinite` alert for `signal`.

        Args:
            signal: What is not finite (`"loss"`, `"grad_norm"`...).
            value: Its value.
            what: The sentence's subject, e.g. "The loss is not finite".
            diagnose: Function returning `(layer, sentence)`: the first
                layer affected, called only when the alert is due and
                `layer` is None (it may measure).
            layer: The layer, when known.
        """
        if not self.active("nonfinite"):
            return
        # Step signals name no layer until diagnosed: rate-limit them as one.
        key = ("nonfinite", signal, layer)
        if not self.dispatcher.due(key):
            self.dispatcher.skip("nonfinite", key)
            return
        if layer is None:
            layer, detail = diagnose()
        else:
            detail = f"First layer affected: '{layer}'."
        step, epoch = self.where()
        self.alert(
            "nonfinite", layer, value, None, signal,
            f"{what} at step {step} (epoch {epoch}). {detail} "
            + self.clip_advice()
            + " Check the data for NaN or Inf.",
            key=key,
        )
