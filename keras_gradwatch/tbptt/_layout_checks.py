"""Private: `TruncatedBPTT`'s checks of the data given to fit/evaluate/predict.

They run when `fit`, `evaluate` or `predict` is called, before Keras builds
an iterator or runs a step, and read static facts only: array shapes, the
streams an array was laid out for (`streams.StreamArray`), a
`tf.data.Dataset`'s `element_spec`, the compiled loss and the model's output
spec. Where a fact is unknown (a generator, a `keras.utils.PyDataset`, a
dataset of unknown batch size, a custom loss, a model of several outputs)
they say nothing rather than guess. Each error names the argument that is
wrong, what it received and the fix.

With `reset="epoch"` row i of every batch continues row i of the previous
one, so data comes in whole batches of exactly the stateful layers' batch
size (the streams, times the replicas under `tf.distribute`): another batch
size, a number of rows that is not a multiple of it, or arrays laid out by
`make_streams` for another number of streams would feed one stream's chunk
to another stream's state, and training would go on without a word.
"""

import math

import keras
import tensorflow as tf

from keras_gradwatch.core import _sequence
from keras_gradwatch.core import _state
from keras_gradwatch.core.errors import InvalidInputError
from keras_gradwatch.tbptt import _target_shapes
from keras_gradwatch.tbptt.streams import StreamArray


class Data:
    """One piece of data as passed to a call, with the names to report.

    Attributes:
        name: The argument holding `x` (`"x"`, `"validation_data"`).
        x, y: Its inputs and targets (y None when absent or in `x`).
        x_label, y_label: How the message names the inputs and targets
            (`"x"`, `"validation_data[1]"`).
        batch_name: The argument that sets its batch size.
        batch_size: That argument's value.
    """

    def __init__(self, name, x, y, batch_name, batch_size, labels=None):
        self.name = name
        self.x, self.y = x, y
        self.x_label, self.y_label = labels or (name, "y")
        self.batch_name = batch_name
        self.batch_size = batch_size


class DataChecks:
    """The data checks of one `TruncatedBPTT` (see the module docstring).

    Args:
        wrapper: The `TruncatedBPTT` (its wrapped model, loss and
            distribution strategy are read at each check).
        reset_policy: Its `_reset_policy.ResetPolicy` (the wrapper sets a
            new one here when its `reset` changes).
    """

    def __init__(self, wrapper, reset_policy):
        self.wrapper = wrapper
        self.reset_policy = reset_policy
        # Output shape per input shapes: `fit(epochs=1)` in a loop checks
        # the same shapes at every call, and the spec costs a trace.
        self._output_shapes = {}

    def fit(self, arguments):
        """Checks `fit`'s arguments (a dict by name) and fills in the batch
        sizes Keras should use (the stateful one where unset)."""
        x = arguments.get("x")
        arguments["batch_size"] = self.check(
            Data("x", x, arguments.get("y"), "batch_size", arguments.get("batch_size"))
        )
        validation = arguments.get("validation_data")
        validation_batch = arguments.get("validation_batch_size")
        if validation is not None:
            if isinstance(validation, (tuple, list)):
                val_x, val_y, _ = keras.utils.unpack_x_y_sample_weight(tuple(validation))
                labels = ("validation_data[0]", "validation_data[1]")
            else:
                val_x, val_y, labels = validation, None, ("validation_data", "validation_data")
            arguments["validation_batch_size"] = self.check(
                Data("validation_data", val_x, val_y, "validation_batch_size",
                     validation_batch, labels)
            )
        elif arguments.get("validation_split"):
            self.check_split(x, arguments["validation_split"])
            if validation_batch is not None and _is_array_data(x):
                self._check_batch_size("validation_batch_size", validation_batch)

    def check(self, data, targets=True):
        """Checks one piece of data; returns the batch size Keras should use.

        Args:
            data: A `Data`.
            targets: False for `predict` (a dataset's targets are not used).
        """
        x = data.x
        if isinstance(x, tf.data.Dataset):
            self._check_dataset(data, targets)
            return data.batch_size
        if x is None or not _is_array_data(x) or self.streams is None:
            return data.batch_size
        self._check_batch_size(data.batch_name, data.batch_size)
        if self.epoch_mode:
            self._check_streams(data)
            self._check_rows(data.x_label, _rows(x))
        if targets and data.y is not None and _is_array_data(data.y):
            self._check_targets(data, x, data.y)
        return self.streams if data.batch_size is None else data.batch_size

    @property
    def epoch_mode(self):
        """Whether batches carry streams (row i continues row i)."""
        return self.reset_policy.carries_streams

    @property
    def streams(self):
        """The global batch size: the stateful layers' times the replicas
        (`tf.distribute` gives each replica its share of the rows); None
        while the stateful layers are not built."""
        batch = _state.state_batch_size(_state.stateful_layers(self.wrapper.model))
        if batch is None:
            return None
        return batch * self.wrapper.distribute_strategy.num_replicas_in_sync

    def _model_name(self):
        return self.wrapper.model.name

    def _held(self):
        """'32 streams', with the replicas' share under `tf.distribute`."""
        replicas = self.wrapper.distribute_strategy.num_replicas_in_sync
        if replicas == 1:
            return f"{self.streams} streams"
        return f"{self.streams} streams ({self.streams // replicas} per replica on {replicas} replicas)"

    # Batch sizes, rows and streams ----------------------------------------

    def _check_global_batch_shape(self, received, batch):
        """A global batch equal to the stateful layers' batch under several
        replicas: `batch_shape` was given as the global batch, but it is
        each replica's (each replica would get a fraction of its rows)."""
        replicas = self.wrapper.distribute_strategy.num_replicas_in_sync
        expected = self.streams
        if replicas == 1 or batch is None or batch * replicas != expected:
            return
        raise InvalidInputError(
            f"Received {received}: global batches of {batch} rows under a "
            f"tf.distribute strategy with {replicas} replicas, but the stateful "
            f"layers of '{self._model_name()}' were built with a batch of {batch}, "
            "which is each replica's batch, not the global one: every replica "
            f"would get {batch // replicas} rows for {batch} states. For a global "
            f"batch of {batch}, build them with batch_shape=({batch // replicas}, ...) "
            f"(the per-replica batch); to keep batch_shape=({batch}, ...), pass "
            f"global batches of {expected}."
        )

    def _check_batch_size(self, name, value):
        self._check_global_batch_shape(f"{name}={value}", value)
        expected = self.streams
        if value is not None and value > expected:
            raise InvalidInputError(
                f"Received: {name}={value}, but the stateful layers of "
                f"'{self._model_name()}' were built for batches of {expected}. "
                f"Pass {name}={expected} (or leave it unset)."
            )
        if self.epoch_mode and value is not None and value != expected:
            raise InvalidInputError(
                f"Received: {name}={value} with reset='epoch', but the stateful "
                f"layers of '{self._model_name()}' hold {self._held()}: row i "
                "of each batch must continue row i of the previous one. "
                f"Pass {name}={expected} (or leave it unset)."
            )

    def _check_rows(self, label, rows):
        expected = self.streams
        if rows is not None and rows % expected:
            raise InvalidInputError(
                f"Received {label} with {rows} rows with reset='epoch' and batches "
                f"of {expected} streams: the last batch would hold {rows % expected} "
                "rows and break the streams' continuity. Pass a multiple of "
                f"{expected} rows, e.g. laid out by keras_gradwatch.streams."
                f"make_streams(sequence, batch_size={expected})."
            )

    def _check_streams(self, data):
        expected = self.streams
        for label, part in ((data.x_label, data.x), (data.y_label, data.y)):
            for leaf in keras.tree.flatten(part):
                laid_out = leaf.streams if isinstance(leaf, StreamArray) else None
                if laid_out is not None and laid_out != expected:
                    raise InvalidInputError(
                        f"Received {label} laid out by make_streams for {laid_out} "
                        f"streams, but with reset='epoch' the stateful layers of "
                        f"'{self._model_name()}' hold {self._held()}, one per "
                        "batch row: each batch would mix chunks of different "
                        "streams. Lay the sequence out for this model: "
                        f"make_streams(sequence, batch_size={expected}, chunk=...)."
                    )

    def check_split(self, x, split):
        """With `reset="epoch"`: both parts of Keras's `validation_split` of
        array data must be whole batches of streams."""
        if not self.epoch_mode or not _is_array_data(x) or self.streams is None:
            return
        rows = _rows(x)
        expected = self.streams
        if rows is None or rows % expected or not 0 < split < 1:
            return  # x's own check (or Keras's) says what is wrong
        # Keras's own cut (see the checklist in _compat.py).
        split_at = int(math.floor(rows * (1.0 - split)))
        if split_at in (0, rows) or split_at % expected == 0:
            return
        batches = rows // expected
        if batches < 2:
            fix = (
                f"x holds one batch of {expected} streams, nothing to split: pass "
                "validation_data laid out by make_streams from held-out steps."
            )
        else:
            fix = f"Pass {_split_suggestion(rows, expected, split)}."
        raise InvalidInputError(
            f"Received: validation_split={split!r} with reset='epoch': Keras would "
            f"split x's {rows} rows at row {split_at}, leaving batches of fewer than "
            f"the {expected} streams. Both parts must be whole batches (the "
            "streams' first chunks train, their last chunks validate). " + fix
        )

    def _check_dataset(self, data, targets):
        spec = data.x.element_spec
        x_spec, y_spec = (spec[0], spec[1] if len(spec) > 1 else None) if (
            isinstance(spec, tuple)
        ) else (spec, None)
        shapes = [getattr(leaf, "shape", None) for leaf in keras.tree.flatten(x_spec)]
        rows = {shape[0] for shape in shapes if shape is not None and shape.rank}
        expected = self.streams
        if expected is None:
            return
        batch = rows.pop() if len(rows) == 1 else None
        self._check_global_batch_shape(f"a tf.data.Dataset as {data.name}", batch)
        if batch is not None and (batch > expected or (self.epoch_mode and batch != expected)):
            epoch = (
                f"with reset='epoch' the stateful layers of '{self._model_name()}' "
                f"hold {self._held()}, one per batch row"
                if self.epoch_mode
                else f"the stateful layers of '{self._model_name()}' were built for "
                f"batches of at most {expected}"
            )
            raise InvalidInputError(
                f"Received a tf.data.Dataset as {data.name} with batches of {batch} "
                f"rows (element_spec {spec}), but {epoch}. Batch it by {expected} "
                f"(.batch({expected}, drop_remainder=True)), or lay the steps out "
                f"with make_streams(steps, batch_size={expected}, chunk=...)."
            )
        if targets and y_spec is not None:
            self._check_targets(data, x_spec, y_spec, dataset=True)

    # Targets ----------------------------------------------------------------

    def _check_targets(self, data, x, y, dataset=False):
        """Targets an element-wise loss would broadcast against the output.

        `x` and `y` are arrays, or a dataset's specs with `dataset=True`.
        """
        loss = _target_shapes.elementwise_loss_name(getattr(self.wrapper, "loss", None))
        leaves = keras.tree.flatten(y)
        if loss is None or len(leaves) != 1 or leaves[0] is None:
            return
        if not all(_known_rank(leaf) for leaf in keras.tree.flatten(x) + leaves):
            return  # e.g. a generator's dataset of unknown shapes: no claim
        output = self._output_shape(x)
        y_shape = tuple(leaves[0].shape)
        if output is None or not _target_shapes.broadcasts(y_shape, output):
            return
        wanted = (y_shape[0],) + output[1:]
        x_shape = tuple(_sequence.first_leaf(x).shape)
        if dataset:
            received = f"a tf.data.Dataset as {data.name} whose targets are shaped {y_shape}"
            fix = f"Map the dataset to targets shaped {wanted}."
        else:
            received = f"{data.y_label} of shape {y_shape}"
            fix = f"Pass {data.y_label} shaped {wanted}."
        if len(output) >= 2 and len(y_shape) >= 2 and output[1] == x_shape[1] != y_shape[1]:
            raise InvalidInputError(
                "The model's outputs have a time axis, so the targets need one of "
                f"the same length as the inputs. Received {received}, inputs shaped "
                f"{x_shape}. {fix}"
            )
        message = (
            f"Received {received}, for a model whose output is shaped {output} "
            f"per batch: the loss '{loss}' compares targets and outputs element by "
            "element, and Keras would broadcast these shapes against each other "
            "(every output trained against every target channel) instead of "
            f"raising. {fix}"
        )
        x_leaves = keras.tree.flatten(x)
        next_steps = isinstance(leaves[0], StreamArray) and leaves[0].role == "targets"
        if next_steps or (len(x_leaves) == 1 and tuple(x_leaves[0].shape) == y_shape):
            k = output[-1] if len(output) == len(y_shape) else 1
            select = (
                f"`{data.name}.map(lambda x, y: (x, y[..., :{k}]))`"
                if dataset
                else f"{data.y_label}[..., :{k}]"
            )
            message += (
                " These targets look like make_streams' targets='next', the next "
                "step of every input feature: to predict some of those features, "
                f"keep them alone (e.g. {select}); for targets of your own, call "
                "make_streams(..., targets=None) for the inputs and lay the targets "
                "out the same way, with targets=None too."
            )
        raise InvalidInputError(message)

    def _output_shape(self, x):
        """The model's output shape for inputs shaped like `x` (one batch of
        the stateful size), or None (several outputs, or no spec)."""
        batch = _state.state_batch_size(_state.stateful_layers(self.wrapper.model))
        leaves = keras.tree.flatten(x)
        key = tuple((tuple(leaf.shape[1:]), str(leaf.dtype)) for leaf in leaves)
        if key not in self._output_shapes:
            self._output_shapes[key] = _output_shape(self.wrapper.model, x, batch)
        return self._output_shapes[key]


def _output_shape(model, x, batch):
    def spec(leaf):
        return keras.KerasTensor(
            (batch,) + tuple(leaf.shape[1:]),
            dtype=keras.backend.standardize_dtype(leaf.dtype),
        )

    try:
        outputs = keras.tree.flatten(
            model.compute_output_spec(keras.tree.map_structure(spec, x))
        )
    except Exception:  # noqa: BLE001 (no spec, no check: the first step will say)
        return None
    return tuple(outputs[0].shape) if len(outputs) == 1 else None


def _split_suggestion(rows, streams, split):
    """A `validation_split` near `split` that Keras cuts at a whole batch."""
    batches = rows // streams
    held = min(max(round(split * batches), 1), batches - 1)
    target = rows - held * streams

    def cut(value):
        return int(math.floor(rows * (1.0 - value)))

    # Keras cuts at `target` for splits in (1 - (target + 1) / rows,
    # 1 - target / rows]: the decimal with fewest digits in there (the one
    # nearest held / batches among those), checked with Keras's own cut.
    exact = held / batches
    low, high = 1.0 - (target + 1) / rows, 1.0 - target / rows
    value = exact
    for digits in range(1, 18):
        scale = 10**digits
        fits = [
            n / scale
            for n in range(math.floor(low * scale), math.floor(high * scale) + 2)  # cut() decides
            if cut(n / scale) == target
        ]
        if fits:
            value = min(fits, key=lambda candidate: abs(candidate - exact))
            break
    return f"validation_split={value!r}: the last {held} of the {batches} batches validate"


def _known_rank(leaf):
    shape = getattr(leaf, "shape", None)
    if shape is None:
        return False
    # A TensorShape may have no rank; a numpy or tuple shape always has one.
    return not hasattr(shape, "rank") or shape.rank is not None


def _rows(x):
    return _sequence.first_leaf(x).shape[0]


def _is_array_data(x):
    if isinstance(x, (tf.data.Dataset, keras.utils.PyDataset)):
        return False
    leaves = keras.tree.flatten(x)
    return bool(leaves) and all(
        hasattr(leaf, "shape") and hasattr(leaf, "dtype") for leaf in leaves
    )
