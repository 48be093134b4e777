"""Private: the loss a measurement differentiates, the model's training objective.

Keras trains on `model.compute_loss(x, y, y_pred, sample_weight)`: the
compiled loss (per output, with Keras's matching of target and output
ranks, its reduction, sample and class weights, `loss_weights`) plus
`model.losses` (terms added with `add_loss`, by layers or in `call`, and
the weights' regularisation). A measurement must differentiate that same
objective on its batch, or it measures something else: `Objective`
evaluates it inside the measurement's traced function, and raises
`NotMeasurableError` with the reason, in words, where it cannot. No other
loss stands in for it, except the sum of the outputs that `measure`
documents for a model with no loss at all (never under `GradWatch`).
"""

import contextlib
import inspect

import keras
import tensorflow as tf

from keras_gradwatch.core import _batch_plan
from keras_gradwatch.core import _compat
from keras_gradwatch.core import _sequence
from keras_gradwatch.core.errors import InvalidInputError
from keras_gradwatch.core.errors import NotMeasurableError

NO_LOSS = (
    "not measured: the model has no training loss that can be evaluated on "
    "a probe batch: it is compiled without a loss, and its layers and call "
    "add none with add_loss when run in inference mode (a train step that "
    "computes a loss of its own cannot be reproduced). Compile the model "
    "with its loss, or pass loss=... with targets."
)


class Objective:
    """The training objective of a model, as a measurement evaluates it.

    Args:
        model: The model `fit` trains; for a `TruncatedBPTT`, the wrapper
            (its compiled loss applies to the wrapped model's outputs).
        inner: The model the measurement runs (the wrapped model).
        loss: None (the model's own objective), or a Keras loss given to
            `measure` or `GradWatch`: it replaces the compiled loss; the
            `add_loss` terms and the regularisation are still added, as in
            `compute_loss`.
        stand_in: Whether a model with no loss at all (not compiled with
            one, no `add_loss` terms) may be measured on the sum of its
            outputs: only `measure` called directly, without targets.
    """

    def __init__(self, model, inner, loss, stand_in):
        self.model = model
        self.inner = inner
        self.given = None if loss is None else as_loss(loss)
        self.stand_in = stand_in
        # A `compute_loss` of the model's own is its objective as written.
        self.custom = _overrides_compute_loss(model)

    @property
    def compiled(self):
        """Whether the model is compiled with a loss (Keras keeps the
        argument of `compile` as `model.loss`)."""
        return getattr(self.model, "loss", None) is not None

    @property
    def per_step(self):
        """Whether the objective has a part evaluated on (target, output)
        pairs, which `loss_steps="last"` restricts to the final step. A
        custom `compute_loss` or `add_loss` terms alone are taken whole."""
        return self.given is not None or (self.compiled and not self.custom)

    def check(self, x, y, sample_weight):
        """Checks, before tracing, that the objective can be evaluated on
        this batch, and builds the compiled loss as the first train step
        would (outside the traced function: see `_compat`).

        Raises:
            NotMeasurableError: If the loss needs targets the batch lacks.
            InvalidInputError: If targets come for a model with no loss.
        """
        if y is None and self.given is not None:
            raise NotMeasurableError(
                "not measured: a loss was given (loss=...) but the batch has "
                "no targets y to evaluate it on. Pass targets, or leave "
                "loss unset."
            )
        if y is None and self.compiled and not self.custom and self.given is None:
            raise NotMeasurableError(
                "not measured: the model is compiled with a loss "
                f"({_loss_name(self.model.loss)}) but the batch has no targets "
                "y, so that loss cannot be evaluated on it (a train step "
                "that computes a loss of its own cannot be reproduced). Pass "
                "targets: measure(model, x, y), or GradWatch(probe_data=(x, y))."
            )
        if (
            y is not None
            and self.given is None
            and not self.custom
            and not getattr(self.model, "compiled", False)
        ):
            raise InvalidInputError(
                "Received targets y but no loss: the model is not compiled. "
                "Pass loss=... (e.g. loss='mse'), or compile the model."
            )
        if self.given is None and self.compiled:
            # Should Keras's symbolic build fail on some model, the loss
            # builds when the measurement is traced, as it used to.
            with contextlib.suppress(Exception):
                _compat.build_compiled_loss(self.model, (x, y, sample_weight))

    def total(self, x, y, y_pred, sample_weight):
        """The training objective on the batch (a float32 scalar), or None
        when the stand-in applies (see `stand_in`). Traced."""
        return self._evaluate(x, y, y_pred, sample_weight)

    def final_step(self, x, y, y_pred, sample_weight):
        """The objective with its per-step part at the final step only:
        targets, outputs and per-step sample weights cut to their last
        step (a time axis of length 1, so that masks and rank matching
        apply as in training). Traced."""
        y, y_pred = _last_step(y), _last_step(y_pred)
        if _batch_plan.weights_have_time(sample_weight):
            sample_weight = _last_step(sample_weight)
        return self._evaluate(x, y, y_pred, sample_weight)

    def _evaluate(self, x, y, y_pred, sample_weight):
        extra = list(self.model.losses)
        if self.given is not None:
            value = self._given(y, y_pred, sample_weight)
            return value + _summed(extra) if extra else value
        # Weight regularisation alone does not depend on the inputs: it is
        # no objective to measure a gradient in time with.
        added = len(extra) > _regularized_weights(self.model)
        if not (self.compiled or self.custom or added):
            return None if self.stand_in and y is None else _raise(NO_LOSS)
        try:
            with _compat.metrics_untouched(self.model):
                value = _compute_loss(self.model, x, y, y_pred, sample_weight)
        except Exception as error:  # noqa: BLE001 - said in words instead
            raise NotMeasurableError(
                "not measured: the model's training loss cannot be evaluated "
                f"on the probe batch ({type(error).__name__}: "
                f"{_first_line(error)})"
            ) from error
        if value is None:
            _raise(NO_LOSS)
        return tf.cast(value, "float32")

    def _given(self, y, y_pred, sample_weight):
        """The given loss on each (target, output) pair, summed, as Keras
        sums one loss over several outputs."""
        outputs = keras.tree.flatten(y_pred)
        targets = keras.tree.flatten(y)
        if len(targets) != len(outputs):
            raise InvalidInputError(
                f"Received {len(targets)} targets for a model with "
                f"{len(outputs)} outputs. Pass one target per output."
            )
        if keras.tree.is_nested(sample_weight):
            weights = keras.tree.flatten(sample_weight)
        else:
            weights = [sample_weight] * len(outputs)
        return tf.add_n(
            [
                tf.cast(self.given(target, output, weight), "float32")
                for target, output, weight in zip(targets, outputs, weights)
            ]
        )


def as_loss(loss):
    """A `keras.losses.Loss` for a loss given by name, function or object.

    A function is wrapped so that targets and outputs are matched in rank
    as Keras matches them for a compiled loss (labels `(N,)` against
    outputs `(N, 1)`).
    """
    if isinstance(loss, str):
        try:
            loss = keras.losses.get(loss)
        except ValueError as error:
            raise InvalidInputError(
                f"Received: loss={loss!r}, which Keras does not know "
                f"({_first_line(error)}). Pass a Keras loss name such as "
                "'mse', a function (y_true, y_pred) or a keras.losses.Loss."
            ) from error
    if isinstance(loss, keras.losses.Loss):
        return loss
    if callable(loss):
        return _RankMatched(loss)
    raise InvalidInputError(
        f"Received: loss={loss!r}. Pass one Keras loss: a name such as "
        "'mse', a function (y_true, y_pred) or a keras.losses.Loss (a model "
        "compiled with one loss per output is measured on its compiled "
        "losses when loss is left unset)."
    )


class _RankMatched(keras.losses.Loss):
    """A loss function, reduced as a Keras loss, its target and output
    matched in rank as Keras's `LossFunctionWrapper` matches them."""

    def __init__(self, fn):
        super().__init__(name=getattr(fn, "__name__", "loss"))
        self.fn = fn

    def call(self, y_true, y_pred):
        y_true, y_pred = same_rank(y_true, y_pred)
        return self.fn(y_true, y_pred)


def same_rank(y_true, y_pred):
    """Keras's rank matching of a target and an output.

    Where the ranks differ by one and the extra axis has size 1, that axis
    is squeezed, except that a rank-1 tensor gets it added instead:
    `(N,)` labels against `(N, 1)` outputs become `(N, 1)`.
    """
    true_rank, pred_rank = len(y_true.shape), len(y_pred.shape)
    if true_rank == pred_rank + 1 and y_true.shape[-1] == 1:
        if pred_rank == 1:
            y_pred = tf.expand_dims(y_pred, -1)
        else:
            y_true = tf.squeeze(y_true, -1)
    elif pred_rank == true_rank + 1 and y_pred.shape[-1] == 1:
        if true_rank == 1:
            y_true = tf.expand_dims(y_true, -1)
        else:
            y_pred = tf.squeeze(y_pred, -1)
    return y_true, y_pred


def _compute_loss(model, x, y, y_pred, sample_weight):
    """`model.compute_loss` as a train step calls it (`training=True`
    where its signature has the argument, added in Keras 3.3)."""
    if "training" in inspect.signature(model.compute_loss).parameters:
        return model.compute_loss(x, y, y_pred, sample_weight, training=True)
    return model.compute_loss(x, y, y_pred, sample_weight)


def _overrides_compute_loss(model):
    return getattr(type(model), "compute_loss", None) is not keras.Model.compute_loss


def _regularized_weights(model):
    """How many of `model.losses` are weight regularisation terms."""
    return sum(
        getattr(v, "regularizer", None) is not None for v in model.trainable_weights
    )


def _last_step(structure):
    def cut(tensor):
        if tensor is None or len(tensor.shape) < 2:
            return tensor
        return _sequence.slice_time(tensor, -1, None, length=1)

    return keras.tree.map_structure(cut, structure)


def _summed(losses):
    """`add_loss` and regularisation terms, each summed, as Keras adds them."""
    return tf.add_n([tf.reduce_sum(tf.cast(loss, "float32")) for loss in losses])


def _loss_name(loss):
    if isinstance(loss, str):
        return repr(loss)
    if isinstance(loss, (dict, list, tuple)):
        return f"one per output: {keras.tree.map_structure(_loss_name, loss)}"
    return getattr(loss, "name", None) or getattr(loss, "__name__", None) or repr(loss)


def _first_line(error):
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _raise(message):
    raise NotMeasurableError(message)
