"""Private: every use of Keras or TensorFlow internals, and every change
the package makes to a Keras object, in one place (the hooks).

The rest of the package uses public Keras and TensorFlow only, and comes
here for what the public API does not offer, and to change a Keras object
it does not own: a model's train function and train step, an optimizer's
`apply` (one `ApplyShadow` with ordered parts: the grad-norm reader, AutoClip)
and learning rate, a layer's `call`, `inner_loop`, `unroll` and `stateful`
(section "Hooks" below). The state of a change lives on the object changed
(the shadow is the optimizer's `apply` attribute), never in this module. Each function says what it relies on and the
versions it was checked against; when a Keras release changes one of
them, this module is the one to fix (`tests/test_project.py` fails on
private attribute access, and on any of these changes, anywhere else).

Checked on: TensorFlow 2.21 with Keras 3.15.1 (the latest), and TensorFlow
2.18.1 with Keras 3.8.0 (the oldest supported: `.ci/oldest.txt`, run by CI).

Keras behaviour the package relies on without touching private names (kept
here as a list, so that a review of a new Keras release has one checklist):

- `Model.make_train_function(force=True)` builds the train function from
  `self.train_step`, read when it is called; `fit` calls
  `self.train_function(iterator)` once per step with a `tf.data.Iterator`
  or a `tf.distribute.DistributedIterator`, and the function also runs a
  plain Python iterator of batches (`_train_step.py`).
- The stock train step calls `optimizer.apply_gradients`, which calls
  `optimizer.apply(grads, variables)` (`_train_step.py`).
- `keras.layers.RNN.inner_loop(sequences, initial_state, mask, training)`
  runs the recurrence of `RNN.call`; the probed layers override it
  (`layers.py`).
- A recurrent layer's `stateful` and `unroll` flags are read when its call
  is traced (`_state.stateless`, `tbptt.py`).
- A stateful layer's state lives in `layer.states` variables, read at the
  start of a call and assigned at its end (`_state.py`).
- A `keras.random.SeedGenerator` keeps its state in a variable named
  `seed_generator_state`, listed in its layer's `variables`; a recurrent
  layer with dropout draws its masks from it at every call, in inference
  too (`RNN.call` prepares the masks before the loop), so a measurement
  would advance it (`_random_state.py`).
- `fit` validates by calling `self.evaluate(..., _use_cached_eval_dataset=True)`
  on the validation data it was given (`validates_for_fit`), and splits
  `validation_split` at row `floor(rows * (1 - validation_split))`
  (`_layout_checks.py`).
"""

import contextlib
import json
import os
import sys

import keras
import tensorflow as tf

from keras_gradwatch.core.errors import InvalidInputError

# Hooks: the changes the package makes to Keras objects ---------------------


def set_train_function(model, function):
    """Makes `function` the model's train function; None has the next
    `fit` trace the train step anew.

    `fit` calls `make_train_function()`, which returns `model.train_function`
    as it is when set, and traces `train_step` when it is None; `fit` then
    calls it once per step with the iterator (checked on Keras 3.8 and 3.15).
    """
    model.train_function = function


class ApplyShadow:
    """The one shadow of an optimizer's `apply`: its parts, in order, then
    the `apply` it covers.

    The package changes what an update applies in one place: a part is a
    function `grads -> grads` (an observer returns them unchanged) run in
    the training step's graph, each with an `order` (lower first: the
    grad-norm reader at 0 sees the gradients the step computed, AutoClip
    at 10 scales them). The optimizer is built before the first part runs
    (as `apply` does first), so that a part can read its loss scale.

    An instance attribute shadows the class's method: `apply_gradients`
    calls `self.apply(grads, variables)` through the instance (checked on
    Keras 3.8 and 3.15). The shadow is the optimizer's `apply` attribute
    itself, so its state is on the optimizer and nowhere else; it covers
    what `apply` was before (the class's method, or another shadow) and
    puts that back when its last part is removed (`remove_apply_part`).

    Args:
        optimizer: The Keras optimizer whose `apply` is shadowed.
    """

    def __init__(self, optimizer):
        self._optimizer = optimizer
        self._covered = vars(optimizer).get("apply")  # None: the class's method
        self._apply = optimizer.apply
        self._parts = ()  # (order, name, part), sorted

    @property
    def names(self):
        """The names of the parts, in the order they run."""
        return [name for _, name, _ in self._parts]

    def __call__(self, grads, trainable_variables=None):
        grads = list(grads)
        optimizer = self._optimizer
        if not optimizer.built and trainable_variables is not None:
            optimizer.build(trainable_variables)
        for _, _, part in self._parts:
            grads = part(grads)
        return self._apply(grads, trainable_variables)

    def add(self, name, part, order):
        """Adds (or replaces) the part `name`."""
        kept = [entry for entry in self._parts if entry[1] != name]
        # A new tuple, never changed in place: a replica thread tracing the
        # step reads a whole one.
        self._parts = tuple(sorted([*kept, (order, name, part)], key=lambda e: e[0]))

    def remove(self, name):
        """Removes the part `name`, if present."""
        self._parts = tuple(entry for entry in self._parts if entry[1] != name)


def apply_shadow(optimizer):
    """The optimizer's `ApplyShadow`, or None."""
    current = vars(optimizer).get("apply")
    return current if isinstance(current, ApplyShadow) else None


def add_apply_part(optimizer, name, part, order):
    """Adds the part `name` to the optimizer's `ApplyShadow`, shadowing
    `optimizer.apply` with one first if needed; returns the shadow."""
    shadow = apply_shadow(optimizer)
    if shadow is None:
        shadow = ApplyShadow(optimizer)
        optimizer.apply = shadow
    shadow.add(name, part, order)
    return shadow


def remove_apply_part(optimizer, name):
    """Removes the part `name`; without parts left, the shadow is removed
    (what it covered is `optimizer.apply` again)."""
    shadow = apply_shadow(optimizer)
    if shadow is None:
        return
    shadow.remove(name)
    if not shadow.names:
        if shadow._covered is None:
            del optimizer.apply
        else:
            optimizer.apply = shadow._covered


def shadow_train_step(model, train_step):
    """Makes `train_step` the model's `train_step` until
    `unshadow_train_step(model)`.

    `make_train_function` builds the train function from `self.train_step`
    as it is when called (Keras 3.15: `_make_function(self.train_step)`;
    see the list above, checked on Keras 3.8 and 3.15): shadowed only while
    the train function is made, the step stays in that function, and
    anything else that builds one later gets the class's step.
    """
    model.train_step = train_step


def unshadow_train_step(model):
    """Removes what `shadow_train_step` set."""
    del model.train_step


# The attribute a model's compiled measurements are kept under.
MEASUREMENTS = "_keras_gradwatch_measurements"


class ModelCache(dict):
    """What the package keeps on a model it does not own: a dict that a
    copy or a pickle of the model does not take along (a copy traces its
    own: what is kept holds `tf.function`s of the original)."""

    def __deepcopy__(self, memo):
        return ModelCache()

    def __copy__(self):
        return ModelCache()

    def __reduce__(self):
        return (ModelCache, ())


def measurement_cache(model):
    """The compiled measurements kept on `model` (a `ModelCache`, made on
    first use), so that they live and die with it: a callback measures one
    model many times, and `measure(model, ...)` called again must not trace
    again.

    Set with `object.__setattr__`: Keras's `Layer.__setattr__` (and
    TensorFlow's `AutoTrackable`) would track a dict set on a model, and
    put it in its checkpoints; an attribute set past them is a plain
    instance attribute (checked on Keras 3.8 and 3.15).
    """
    cache = vars(model).get(MEASUREMENTS)
    if cache is None:
        cache = ModelCache()
        object.__setattr__(model, MEASUREMENTS, cache)
    return cache


def quiet_tracing_warning(function):
    """Keeps `function` (a `tf.function`) out of TensorFlow's "N out of the
    last M calls triggered tf.function retracing" warning.

    TensorFlow counts traces by the Python code object, across instances:
    each model a script builds gets its own compiled measurement, traced
    once, and from the fifth model on the count reads as a retracing
    problem of the user's. The flag is the one TensorFlow reads
    (`Function._omit_frequent_tracing_warning`, checked on TF 2.18 and
    2.21). Returns `function`.
    """
    if hasattr(function, "_omit_frequent_tracing_warning"):
        function._omit_frequent_tracing_warning = True
    return function


def set_learning_rate(optimizer, learning_rate):
    """Sets the optimizer's learning rate (a float, or a schedule: the
    train step must then be traced again, it reads the schedule then).

    `Optimizer.learning_rate`'s setter takes a schedule in place of a
    variable (checked on Keras 3.8 and 3.15).
    """
    optimizer.learning_rate = learning_rate


def set_unroll(layer, unroll):
    """Sets a recurrent layer's `unroll`, read when its call is traced
    (checked on Keras 3.8 and 3.15): a trace made with it unrolls."""
    layer.unroll = unroll


def set_stateful(layer, stateful):
    """Sets a recurrent layer's `stateful`, read when its call is traced
    (checked on Keras 3.8 and 3.15): a stateless trace starts from a zero
    state and leaves the state variables alone."""
    layer.stateful = stateful


# Internals -------------------------------------------------------------------


def sublayers(model):
    """Every layer inside `model` (not itself), nested ones included.

    `Model.layers` is one level deep: it misses layers nested in wrappers
    (`Bidirectional`, `TimeDistributed`) and in subclassed layers. Uses
    `Layer._flatten_layers(include_self, recursive)` (checked on Keras 3.8 and 3.15).
    """
    return list(model._flatten_layers(include_self=False, recursive=True))


def keras_mask(tensor):
    """The Keras mask attached to a tensor (`tensor._keras_mask`), or None.

    Keras 3 (checked on 3.8 and 3.15) carries masks between layers on this attribute.
    """
    return getattr(tensor, "_keras_mask", None)


def set_keras_mask(tensor, mask):
    """Attaches `mask` to `tensor` as Keras does; returns the tensor."""
    if mask is None:
        return tensor
    # Some tensor types refuse new attributes; losses then see no mask.
    with contextlib.suppress(AttributeError):
        tensor._keras_mask = mask
    return tensor


def shadow_call(layer, call):
    """Makes `call` the layer's `call` until `unshadow_call(layer)`.

    An instance attribute shadows the class's method; `Layer.__call__`
    looks `self.call` up on every call (checked on Keras 3.8 and 3.15).
    """
    layer.call = call


def unshadow_call(layer):
    """Removes what `shadow_call` set: the class's `call` applies again."""
    del layer.call


def shadow_inner_loop(layer, inner_loop):
    """Makes `inner_loop` the recurrent layer's `inner_loop` until
    `unshadow_inner_loop(layer)`.

    `keras.layers.RNN.call` runs its recurrence through
    `self.inner_loop(sequences=..., initial_state=..., mask=...,
    training=...)`, looked up on every call, and returns
    `(last_output, outputs, states)` from it (checked on Keras 3.8 and 3.15):
    an instance attribute shadows the class's method.
    """
    layer.inner_loop = inner_loop


def unshadow_inner_loop(layer):
    """Removes what `shadow_inner_loop` set."""
    vars(layer).pop("inner_loop", None)


def validates_for_fit(kwargs):
    """Whether an `evaluate` call (its keyword arguments) is `fit`'s own
    validation: Keras 3's `fit` passes `_use_cached_eval_dataset=True`
    (checked on 3.8 and 3.15), and evaluates the data `fit` was given."""
    return bool(kwargs.get("_use_cached_eval_dataset"))


def loss_tracker(model):
    """The metric that averages the loss in `fit`'s logs, or None.

    Keras 3 compiles a `keras.metrics.Mean` named "loss" into
    `model.metrics` (checked on 3.8 and 3.15); its `total` and `count` variables hold the
    running sum and weight of the epoch. Subclassed models that track their
    own loss under that name are found the same way.
    """
    for metric in getattr(model, "metrics", None) or ():
        if metric.name == "loss" and hasattr(metric, "total") and hasattr(metric, "count"):
            return metric
    return None


def require_tensorflow_backend(owner):
    """Raises `InvalidInputError` unless Keras runs on TensorFlow.

    The training step, the measurements and the state handling are written
    with TensorFlow (`tf.function`, `tf.gradients`, `tf.distribute`).
    """
    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise InvalidInputError(
            f"Received: {owner} on the Keras backend {backend!r}. "
            f"{owner} works with the TensorFlow backend only: set the "
            "environment variable KERAS_BACKEND=tensorflow before Keras is "
            "imported (or \"backend\": \"tensorflow\" in ~/.keras/keras.json)."
        )


def seed_generator_states(model):
    """The state variables of every `keras.random.SeedGenerator` of `model`.

    Found by their variable name, `seed_generator_state` (checked on Keras
    3.8.0 and 3.15.1): layers keep their seed generators in a private list.
    """
    return [v for v in model.variables if v.name == "seed_generator_state"]


def build_compiled_loss(model, data_batch):
    """Builds the model's compiled loss symbolically, if not built yet.

    Keras builds its compiled loss (`CompileLoss`) when the first train
    step is traced (under a distribution strategy: symbolically, when `fit`
    starts); a measurement can come first. A multi-output compiled loss
    creates one loss metric per output when it is built: built inside the
    measurement's traced function, those metrics would be created there and
    updated by every measurement. This runs the symbolic build `fit` runs
    under a strategy: `Trainer._compile_loss` (`.built`) and
    `Trainer._symbolic_build(data_batch=...)` (checked on Keras 3.8 and
    3.15). It builds the model, the compiled metrics and the optimizer as
    well, each only if not built yet, as Keras does.
    """
    compiled = getattr(model, "_compile_loss", None)
    if compiled is None or compiled.built or not hasattr(model, "_symbolic_build"):
        return
    model._symbolic_build(data_batch=data_batch)


def compiled_loss_id(model):
    """Identifies the model's compiled loss: a new `compile` makes a new one.

    A traced measurement calls the compiled loss it found when traced; a
    model compiled again needs a new trace. Uses `Trainer._compile_loss`
    (None before `compile` or without a loss; checked on Keras 3.8 and 3.15).
    """
    return id(getattr(model, "_compile_loss", None))


def _no_update(*args, **kwargs):
    return None


@contextlib.contextmanager
def metrics_untouched(model):
    """Inside (while tracing), updating the model's metrics adds no op.

    Keras's compiled loss updates a loss metric per output of a
    multi-output model, and a `compute_loss` override may update trackers
    of its own: a measurement evaluating the loss must not move the figures
    `fit` reports. An instance attribute shadows the class's `update_state`
    (`Metric.update_state` is looked up on the instance at each call;
    checked on Keras 3.8 and 3.15).
    """
    shadowed = []
    for metric in getattr(model, "metrics", None) or ():
        if "update_state" not in vars(metric):
            metric.update_state = _no_update
            shadowed.append(metric)
    try:
        yield
    finally:
        for metric in shadowed:
            del metric.update_state

def learning_rate_schedule(optimizer):
    """The `LearningRateSchedule` an optimizer was built with, or None.

    A Keras optimizer keeps its `learning_rate` argument in `_learning_rate`:
    a Variable for a number, the schedule object, or a callable; the public
    `learning_rate` property evaluates a schedule at the current update
    count, i.e. gives the rate of the *next* update (checked on Keras 3.8
    and 3.15). A `LossScaleOptimizer`'s is its inner optimizer's.
    """
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    value = getattr(inner, "_learning_rate", None)
    if isinstance(value, keras.optimizers.schedules.LearningRateSchedule):
        return value
    return None


def functional_nodes(model):
    """The call nodes of a functional model, each after the nodes it reads
    (an empty list for a Sequential or subclassed model).

    Each node has `operation`, `input_tensors` and `output_tensors`. Uses
    `Function._nodes_by_depth` (a node's depth: its longest path to an
    output; checked on Keras 3.15).
    """
    by_depth = getattr(model, "_nodes_by_depth", None)
    if not isinstance(by_depth, dict) or isinstance(model, keras.Sequential):
        return []
    return [node for depth in sorted(by_depth, reverse=True) for node in by_depth[depth]]


# Multi-worker training: two fixes of Keras's TensorFlow trainer ---------------
#
# Under `tf.distribute.MultiWorkerMirroredStrategy` with several workers, stock
# Keras `fit` fails twice before its first step (checked on Keras 3.15.1 / TF
# 2.21 and Keras 3.8.0 / TF 2.18.1; the code of both places is the same there):
#
# - keras-team/keras#20585: `fit` calls `TensorFlowTrainer._maybe_symbolic_build(
#   iterator=...)`, which reduces the first batch, a tuple of `PerReplica`
#   values, with `strategy.reduce("MEAN", batch, axis=None)`: the collective
#   reduce cannot take a structure ("Attempt to convert a value
#   (PerReplica:{...}) ... to a Tensor"). The build only needs the batch's
#   shapes and dtypes: the local replica's share has them.
# - tensorflow/tensorflow#72388: the train function reduces the step's logs
#   with the module function `reduce_per_replica(logs, strategy, "auto")`,
#   which under a multi-worker collective strategy calls
#   `strategy.reduce("MEAN", value, axis=0)` on every value; the logs are
#   scalars ("Invalid reduction dimension 0 for input with 0 dimensions").
#   A scalar is averaged over the replicas with `axis=None` instead.
#
# Both fixes delegate to Keras's own code unless the model's strategy is in
# multi-worker mode, so a process that also trains on one device is not
# affected. `fix_multi_worker()` installs them (once per process) when a
# `GradWatch` or a `TruncatedBPTT` is made in a process whose `TF_CONFIG`
# names several tasks: the first one runs in `fit` before any callback is
# called, the second when the train function is traced.

_FIXED = "_keras_gradwatch_multi_worker_fix"  # marks a replaced function


def in_multi_worker_mode(strategy):
    """Whether `strategy` trains on several workers (processes).

    Uses `StrategyExtended._in_multi_worker_mode()` (MultiWorkerMirrored:
    True when its cluster has more than one task; checked on TF 2.18.1 and
    2.21), False for a strategy without it.
    """
    method = getattr(getattr(strategy, "extended", None), "_in_multi_worker_mode", None)
    return bool(method()) if method is not None else False


def multi_worker_config(environ=None):
    """Whether `TF_CONFIG` (in `environ`, default `os.environ`) names more
    than one chief or worker task."""
    text = (os.environ if environ is None else environ).get("TF_CONFIG")
    try:
        cluster = json.loads(text).get("cluster", {}) if text else {}
        return sum(len(cluster.get(kind, ())) for kind in ("chief", "worker")) > 1
    except (ValueError, AttributeError, TypeError):
        return False  # TensorFlow itself reports a malformed TF_CONFIG


def _trainer_class():
    """The class of `keras.Model`'s bases that defines `_maybe_symbolic_build`
    (Keras's `TensorFlowTrainer`), or None."""
    for cls in keras.Model.__mro__:
        if "_maybe_symbolic_build" in vars(cls):
            return cls
    return None


def _local_share(strategy, value):
    if isinstance(value, tf.distribute.DistributedValues):
        return strategy.experimental_local_results(value)[0]
    return value


def _build_from_local_batch(original):
    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        strategy = getattr(self, "_distribute_strategy", None)
        if iterator is None or not in_multi_worker_mode(strategy):
            return original(self, iterator=iterator, data_batch=data_batch)
        # As Keras: the first batch of the epoch iterator (Keras 3.8 yields
        # (step, iterator), 3.15 (begin, end, iterator)), the local share.
        for *_, it in iterator:
            batch = next(it)
            data_batch = keras.tree.map_structure(
                lambda value: _local_share(strategy, value), batch)
            break
        return original(self, data_batch=data_batch)

    setattr(_maybe_symbolic_build, _FIXED, original)
    return _maybe_symbolic_build


def _average_scalars(original):
    def reduce_per_replica(values, strategy, reduction):
        if reduction not in ("auto", "mean") or not in_multi_worker_mode(strategy):
            return original(values, strategy, reduction)

        def reduce(value):
            local = _local_share(strategy, value)
            if getattr(getattr(local, "shape", None), "rank", None) == 0:
                return strategy.reduce("MEAN", value, axis=None)
            return original(value, strategy, reduction)

        return keras.tree.map_structure(reduce, values)

    setattr(reduce_per_replica, _FIXED, original)
    return reduce_per_replica


def fix_multi_worker():
    """Installs the two multi-worker fixes above (once per process).

    Returns:
        True if they are in place (now or before), False if this Keras has
        no such functions to fix (nothing is changed then).
    """
    trainer = _trainer_class()
    module = sys.modules.get(getattr(trainer, "__module__", None))
    reduce = getattr(module, "reduce_per_replica", None)
    if trainer is None or reduce is None:
        return False
    build = vars(trainer)["_maybe_symbolic_build"]
    if not hasattr(build, _FIXED):
        trainer._maybe_symbolic_build = _build_from_local_batch(build)
    if not hasattr(reduce, _FIXED):
        module.reduce_per_replica = _average_scalars(reduce)
    return True


def unfix_multi_worker():
    """Undoes `fix_multi_worker` (Keras's own functions again)."""
    trainer = _trainer_class()
    if trainer is None:
        return
    build = vars(trainer)["_maybe_symbolic_build"]
    if hasattr(build, _FIXED):
        trainer._maybe_symbolic_build = getattr(build, _FIXED)
    module = sys.modules.get(trainer.__module__)
    reduce = getattr(module, "reduce_per_replica", None)
    if hasattr(reduce, _FIXED):
        module.reduce_per_replica = getattr(reduce, _FIXED)
