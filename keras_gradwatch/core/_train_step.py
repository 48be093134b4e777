"""Private: what GradWatch adds to a Keras model's training step.

`log_grad_norm(model)` makes a plain Keras model's compiled train step log
`grad_norm`, the global L2 norm of the gradients its optimizer applies at
that step (before any clipping the optimizer does), computed inside the
same compiled step. The step also reads, after its update, what GradWatch
checks at every step (the loss tracker's sum and weight, the learning rate,
the update count: `StepReadings`); the train function takes them out of the
logs, so Keras and every callback see the logs they would see without
GradWatch. Nothing else changes: the step applies the same gradients to the
same weights.

How: the model's train step is wrapped (`GradNormStep`) so that, while it
is traced, the optimizer's `apply` shadow (`_compat.ApplyShadow`) holds a
part that computes the norm of the gradients it receives, before the real
`apply` (and any other part, AutoClip's) gets them. The train
function is rebuilt once per model (`make_train_function(force=True)`);
Keras traces it lazily, so a model that has not trained yet pays nothing
extra, and one that has pays one retrace, once. The rebuilt function stays
with the model, so later `fit` calls (with a new `GradWatch` or none) reuse
it instead of retracing.

Keras internals used here (checked on Keras 3.15 with TensorFlow 2.21):
`Model.make_train_function(force=True)` builds the train function from
`self.train_step`, read when it is called; the stock train step calls
`self.optimizer.apply_gradients`, which calls `self.apply(grads, variables)`;
under `tf.distribute` the step runs in replica context and Keras reduces
the returned logs with a mean over replicas.
"""

import contextlib
import functools
import itertools
import math
import threading
import warnings

import keras
import tensorflow as tf

from keras_gradwatch.core import _compat
from keras_gradwatch.core.alerts import _user_stacklevel


def global_norm(optimizer, grads):
    """The global L2 norm of the gradients `optimizer` is about to apply.

    Call it in replica context, before `optimizer.apply(grads)`: under
    `tf.distribute` the norm is that of the sum over replicas (the gradient
    the update uses), and under loss scaling it is divided by the current
    scale (a `LossScaleOptimizer`'s dynamic scale, read before `apply`
    changes it, or the optimizer's `loss_scale_factor`).

    Args:
        optimizer: The Keras optimizer that applies `grads`.
        grads: List of gradient tensors (None entries are ignored).

    Returns:
        A float32 scalar tensor.
    """
    present = [g for g in grads if g is not None]
    if not present:
        return tf.constant(0.0)
    context = tf.distribute.get_replica_context()
    if context is not None and context.num_replicas_in_sync > 1:
        present = context.all_reduce("sum", present)
    norm = tf.cast(tf.linalg.global_norm(present), "float32")
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        norm = norm / tf.cast(optimizer.dynamic_scale, "float32")
    elif optimizer.loss_scale_factor:
        norm = norm / optimizer.loss_scale_factor
    return norm


def log_grad_norm(model):
    """Makes `model`'s train step log `grad_norm` at every step.

    Call it after `make_train_function()` and before the train function's
    first call of a `fit` (i.e. in `on_train_begin`).

    Args:
        model: A compiled Keras model (TensorFlow backend).

    Returns:
        True if the train step logs `grad_norm` (it did already, or now
        does), False if it cannot (no optimizer, or a train step that
        applies no gradients through `model.optimizer`: then the logs simply
        hold no `grad_norm`).
    """
    if getattr(model, "optimizer", None) is None:
        return False
    current = getattr(model, "train_function", None)
    if isinstance(current, StepReadingsFunction):
        return True  # built here with the norm: nothing to rebuild
    _compat.shadow_train_step(model, GradNormStep(model, model.train_step))
    try:
        model.make_train_function(force=True)
    finally:
        # The class's train step again for anything else that builds one.
        _compat.unshadow_train_step(model)
    # It stays the model's train function after this fit (with or without
    # GradWatch): it always takes the readings out of the logs.
    _compat.set_train_function(model, StepReadingsFunction(model.train_function))
    return True


# The key under which the train step built here hands GradWatch its
# readings; the train function takes it out before Keras sees the logs.
READINGS_KEY = "_gradwatch_readings"


def _readings(model):
    """The step's readings, in the step's graph: `[loss total, loss count,
    learning rate, update count, known]` after the step (float64; `known`
    has bit i set when value i was read: a read value may be NaN). Read
    where they are made, they cost GradWatch no eager variable read after
    each step (60-200 µs of CPU each)."""
    context = tf.distribute.get_replica_context()
    if context is not None and context.num_replicas_in_sync > 1:
        return None  # a replica's own metric total is not the global one
    values = [0.0] * 4
    tracker = _compat.loss_tracker(model)
    if tracker is not None:
        values[0], values[1] = tracker.total.value, tracker.count.value
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None:
        if isinstance(optimizer.learning_rate, keras.Variable):
            values[2] = optimizer.learning_rate.value
        values[3] = optimizer.iterations.value
    known = sum(1 << i for i, value in enumerate(values) if not isinstance(value, float))
    return tf.stack([tf.cast(value, tf.float64) for value in [*values, float(known)]])


def with_readings(model, logs):
    """`logs` and the step's readings under `READINGS_KEY`, or `logs` alone
    when they cannot be taken (or are no dict). Call it at the end of a
    train step whose train function is a `StepReadingsFunction`."""
    if not isinstance(logs, dict):
        return logs
    try:
        readings = _readings(model)
    except Exception:  # noqa: BLE001 - never break the user's step: read eagerly
        return logs
    return logs if readings is None else {**logs, READINGS_KEY: readings}


class StepReadings(tuple):
    """What one training step read of its model: `loss_total`, `loss_count`
    (the loss tracker's running sum and weight), `learning_rate` (of the
    step's last update) and `iterations`, each None where unknown."""

    __slots__ = ()

    def __new__(cls, values):
        """`values` as `_readings` returns them (the last: which are known)."""
        *values, known = values
        known = int(known)
        return super().__new__(
            cls, (float(v) if known >> i & 1 else None for i, v in enumerate(values)))

    loss_total = property(lambda self: self[0])
    loss_count = property(lambda self: self[1])
    learning_rate = property(lambda self: self[2])
    iterations = property(lambda self: None if self[3] is None else int(self[3]))


class StepReadingsFunction:
    """A model's train function whose step also returns GradWatch's
    readings: it takes them out of the logs (Keras and every callback see
    the logs they would without GradWatch) and keeps the latest.

    Args:
        function: The train function Keras built.
    """

    def __init__(self, function):
        self.function = function
        self._latest = None

    def __call__(self, *args, **kwargs):
        logs = self.function(*args, **kwargs)
        if isinstance(logs, dict) and READINGS_KEY in logs:
            self._latest = logs.pop(READINGS_KEY)
        return logs

    def take(self):
        """The latest step's `StepReadings` (None if none came since the
        last call)."""
        latest, self._latest = self._latest, None
        if latest is None:
            return None
        try:
            return StepReadings(latest.numpy().tolist())
        except Exception:  # noqa: BLE001 - GradWatch reads eagerly instead
            return None


def _in_this_graph(tensor):
    """Whether `tensor` can be used where the caller is being traced."""
    if tensor is None:
        return False
    if tf.executing_eagerly():
        return not tf.is_symbolic_tensor(tensor)
    return tf.is_symbolic_tensor(tensor) and tensor.graph is tf.compat.v1.get_default_graph()


def build(optimizer, trainable_variables):
    """What `optimizer.apply` does first (builds the optimizer), for code
    that reads the optimizer's variables before its first update."""
    if not optimizer.built and trainable_variables is not None:
        optimizer.build(trainable_variables)


# The grad-norm reader's part of the optimizer's `ApplyShadow`: first, so
# that it reads the gradients the step computed (before AutoClip scales them).
GRAD_NORM_PART = "grad_norm"
GRAD_NORM_ORDER = 0


class GradNormStep:
    """A model's train step that also logs `grad_norm` and hands over the
    step's readings (`with_readings`).

    While the step is traced, the optimizer's `ApplyShadow` holds a part
    that reads the norm of the gradients each update applies. Under
    tf.distribute, replicas trace the step at the same time, each in a
    thread of its own: the part is added once for all of them (the first
    thread in adds it, the last one out removes it), and each thread
    collects its own norms (a `threading.local` of this step).

    Args:
        model: The model.
        step: The train step it wraps (the model's own).
    """

    def __init__(self, model, step):
        self.model = model
        self.step = step
        self._said = False  # the warning below, once per rebuilt train function
        self._lock = threading.Lock()
        self._tracing = 0  # threads tracing the step now
        self._local = threading.local()  # each thread's norms

    def __call__(self, data):
        with self._measuring(self.model.optimizer) as norms:
            logs = self.step(data)
        logs = with_readings(self.model, logs)
        if not isinstance(logs, dict) or "grad_norm" in logs:
            return logs
        # A train step that is a `tf.function` of its own applies the
        # gradients in its own graph: a norm taken there cannot leave it.
        usable = [n for n in norms if _in_this_graph(n)]
        if len(usable) < len(norms):
            if not self._said:
                self._said = True
                warnings.warn(
                    f"GradWatch cannot add grad_norm to the logs of model "
                    f"'{self.model.name}': its train_step applies the gradients inside "
                    "a tf.function (or another graph) of its own. Training is "
                    "unchanged; GradWatch still measures on its probe batch. To "
                    "log the norm, return it from train_step as logs['grad_norm'].",
                    stacklevel=_user_stacklevel(),
                )
            return logs
        norms = usable
        if not norms:
            return logs
        # A step that applies several times (e.g. one per sub-model) logs
        # the norm of all its gradients together.
        norm = norms[0] if len(norms) == 1 else tf.sqrt(tf.add_n([n * n for n in norms]))
        return {**logs, "grad_norm": norm}

    def _read(self, optimizer, grads):
        """The part: records the norm of `grads` for this thread's step."""
        collected = getattr(self._local, "norms", None)
        if collected is not None:
            try:
                collected.append(global_norm(optimizer, grads))
            except Exception:  # noqa: BLE001 - never break the user's step
                collected.append(None)  # no norm for this step
        return grads

    @contextlib.contextmanager
    def _measuring(self, optimizer):
        """The part is in `optimizer.apply` while the step is traced; yields
        this thread's norms."""
        with self._lock:
            if not self._tracing:
                _compat.add_apply_part(
                    optimizer, GRAD_NORM_PART,
                    functools.partial(self._read, optimizer), GRAD_NORM_ORDER)
            self._tracing += 1
        outer = getattr(self._local, "norms", None)
        self._local.norms = norms = []
        try:
            yield norms
        finally:
            self._local.norms = outer
            with self._lock:
                self._tracing -= 1
                if not self._tracing:
                    _compat.remove_apply_part(optimizer, GRAD_NORM_PART)


def next_batches(model, iterator):
    """The batches one call of the train function takes from `iterator`.

    Returns:
        A list of batches, to hand the train function as `iter(batches)`
        in the iterator's place; an empty list at the iterator's end.
    """
    if not isinstance(iterator, (tf.data.Iterator, tf.distribute.DistributedIterator)):
        # A Python iterator of batches (`train_on_batch`, or another hook's).
        return list(itertools.islice(iterator, model.steps_per_execution))
    batches = []
    for _ in range(model.steps_per_execution):
        optional = iterator.get_next_as_optional()
        if not bool(optional.has_value()):
            break
        batches.append(optional.get_value())
    return batches


def replay(iterator, batches):
    """An iterator over `batches` that Keras's train function runs exactly
    as it runs `iterator`.

    A `tf.data.Iterator` is replaced by one with the same element spec, so
    that the step reuses the compiled step function of the epoch's other
    steps (a plain Python iterator runs another trace of the step, whose
    graph may round differently: training would not be bit-identical).
    Other iterators are replaced by a Python iterator of the batches.
    """
    if isinstance(iterator, tf.data.Iterator):
        try:
            dataset = tf.data.Dataset.from_generator(
                lambda: iter(batches), output_signature=iterator.element_spec
            )
            return iter(dataset)
        except (TypeError, ValueError):  # a spec from_generator cannot take
            pass
    return iter(batches)


class TrainFunctionHook:
    """Wraps `model.train_function` for the duration of one `fit` call.

    The wrapper hands the first batch of training data to `take_probe` (when
    `wants_probe()` says so) before Keras's step function trains on that
    same batch, and reports an exception or a `KeyboardInterrupt` raised
    inside a step to `on_error` before it goes on.

    Keras internals used here (checked on Keras 3.15): `fit` calls
    `self.train_function(iterator)` at every step, with a `tf.data.Iterator`
    or a `tf.distribute.DistributedIterator`; the train function also accepts
    a plain Python iterator of batches, which it runs step by step for
    `steps_per_execution` steps.

    Args:
        model: The model being trained.
        wants_probe: Function returning whether a probe batch is wanted.
        take_probe: Function called with the first batch (as the iterator
            yields it).
        on_error: Function called with the exception, before it propagates.
    """

    def __init__(self, model, wants_probe, take_probe, on_error):
        self.model = model
        self._original = model.train_function
        self._wrapper = None
        if self._original is None:
            return
        original = self._original

        def train_function(iterator):
            try:
                if wants_probe():
                    batches = next_batches(model, iterator)
                    if batches:
                        take_probe(batches[0])
                        return original(replay(iterator, batches))
                return original(iterator)
            except (StopIteration, tf.errors.OutOfRangeError):
                raise
            except BaseException as error:
                on_error(error)
                raise

        self._wrapper = train_function
        _compat.set_train_function(model, train_function)

    def remove(self):
        """Puts the original train function back (once)."""
        if self._wrapper is not None and self.model.train_function is self._wrapper:
            _compat.set_train_function(self.model, self._original)
        self._wrapper = None


class StepLoss:
    """Each step's own loss, from the metric that averages it over the epoch.

    `fit`'s logs hold the epoch's running mean of the loss. This step's loss
    is the change of the loss tracker's weighted sum divided by the change
    of its weight since the previous step: exact for any batch weighting (a
    short last batch, `TruncatedBPTT`'s rows x steps), and a mean over the
    steps of one execution when `steps_per_execution > 1`. A model without
    such a tracker falls back on the running mean, assuming equal weights.

    Args:
        model: The model being trained.
    """

    def __init__(self, model):
        self._tracker = _compat.loss_tracker(model)
        self._total = None
        self._count = None
        self._running = None

    def new_epoch(self):
        """Keras resets its metrics when an epoch begins."""
        self._running = None

    def __call__(self, running, batch, readings=None):
        """This step's loss, given the running mean in the logs (or None),
        the step's batch index in the epoch and its `StepReadings` (read
        in the step; without them, the tracker is read here)."""
        if readings is not None and readings.loss_count is not None:
            return self._from_totals(readings.loss_total, readings.loss_count, running, batch)
        if self._tracker is not None:
            return self._from_totals(float(self._tracker.total.numpy()),
                                     float(self._tracker.count.numpy()), running, batch)
        return self._from_running(running, batch + 1)

    def _from_totals(self, total, count, running, batch):
        previous = (self._total, self._count)
        self._total, self._count = total, count
        if previous[0] is None or count < previous[1]:
            previous = (0.0, 0.0)  # the tracker was reset
        if count > previous[1]:
            return (total - previous[0]) / (count - previous[1])
        return self._from_running(running, batch + 1)

    def _from_running(self, running, count):
        if running is None:
            return None
        before, self._running = self._running, running
        if before is None or count <= 1 or not math.isfinite(before):
            return running
        return count * running - (count - 1) * before
