"""Measuring how the gradient decays with distance in time.

`measure(model, x, y)` runs one forward and backward pass with gradient
probes (see `keras_gradwatch.layers`) and returns, for every measured layer,
the profile ‖∂L/∂h_t‖ against the number of steps back from the loss, with
its statistics (`keras_gradwatch.stats`).
"""

import dataclasses
import warnings

import keras
import numpy as np
import tensorflow as tf

from keras_gradwatch.core import _compat
from keras_gradwatch.core import _objective
from keras_gradwatch.core import _probing
from keras_gradwatch.core import _random_state
from keras_gradwatch.core import _residual
from keras_gradwatch.core import _sequence
from keras_gradwatch.core import _state
from keras_gradwatch.core import depth as depth_lib
from keras_gradwatch.core import layers as probed_layers
from keras_gradwatch.core import stats
from keras_gradwatch.core.errors import InvalidInputError
from keras_gradwatch.core.errors import NotMeasurableError

LOSS_STEPS = ("last", "all")
# Values per tensor up to which equal-shaped tensors are stacked
# to be reduced together (see `_segment_square_sums`).
STACKED_VALUES = 4096


@dataclasses.dataclass(frozen=True)
class LayerProfile:
    """The measured gradient profile of one layer, with its statistics.

    Attributes:
        name: Name of the layer (a shared layer's second call gets `#2`).
        site: What was measured: `"state"` (∂L/∂h_t inside a
            `keras_gradwatch.layers` recurrent layer), `"input"` (∂L/∂x_t at
            the input of a stock Keras recurrent layer) or `"probe"` (at a
            `keras_gradwatch.layers.Probe`).
        profile: 1-D float array indexed by lag (lag 0 = the step nearest
            the loss): mean over the batch of the L2 norm of the gradient at
            that step.
        decay_rate: `stats.decay_rate(profile)`.
        horizon: `stats.horizon(profile, threshold)`.
        truncation_bias: `stats.truncation_bias(profile, window)`, NaN when
            no window is known.
        suggested_window: `stats.suggested_window(profile, tolerance)`.
    """

    name: str
    site: str
    profile: np.ndarray
    decay_rate: float
    horizon: int
    truncation_bias: float
    suggested_window: int

    @classmethod
    def from_profile(cls, name, site, profile, window, threshold, tolerance):
        """Computes the statistics of `profile`."""
        profile = np.asarray(profile, dtype="float64")
        return cls(
            name=name,
            site=site,
            profile=profile,
            decay_rate=stats.decay_rate(profile),
            horizon=stats.horizon(profile, threshold),
            truncation_bias=(
                stats.truncation_bias(profile, window)
                if window is not None
                else float("nan")
            ),
            suggested_window=stats.suggested_window(profile, tolerance),
        )


@dataclasses.dataclass(frozen=True)
class Measurement:
    """What `measure` returns.

    Attributes:
        layers: Dict mapping each measured layer's name to its
            `LayerProfile`, in the order the forward pass met them.
        length: Number of time steps of the probe sequence.
        sequences: Number of sequences averaged over.
        loss_steps: `"last"` (loss at the final step) or `"all"`.
        window: The span `truncation_bias` is measured against (the
            `backprop` of `measure`), or None.
        global_norm: With `gradient_norms=True`, the global L2 norm of the
            gradient of the training loss (mean over sequences and steps)
            with respect to the trainable weights; else None.
        layer_norms: With `gradient_norms=True`, a dict mapping each
            top-level layer with trainable weights to the L2 norm of its
            weights' gradient; else None.
        suspect: None, or why this measurement is not to be trusted as a
            picture of training (set by `GradWatch` when its gradient norm
            is far from the training steps', see `_sanity`).
        depth: With `gradient_norms=True`, the gradient across depth (a
            `keras_gradwatch.depth.DepthProfile`: what reaches each layer
            with trainable weights, in execution order); else None.
    """

    layers: dict
    length: int
    sequences: int
    loss_steps: str
    window: object
    global_norm: object = None
    layer_norms: object = None
    suspect: object = None
    depth: object = None

    def summary(self):
        """A plain-text table of the layers' statistics."""
        lines = [
            f"{'layer':<24} {'site':<6} {'decay':>7} {'horizon':>8} "
            f"{'bias@' + str(self.window):>9} {'suggest':>8}"
        ]
        for record in self.layers.values():
            lines.append(
                f"{record.name:<24} {record.site:<6} "
                f"{record.decay_rate:>7.4f} {record.horizon:>8d} "
                f"{record.truncation_bias:>9.4f} {record.suggested_window:>8d}"
            )
        return "\n".join(lines)


def measure(
    model,
    x,
    y=None,
    *,
    sample_weight=None,
    loss=None,
    loss_steps="last",
    backprop=None,
    threshold=stats.DEFAULT_HORIZON_THRESHOLD,
    tolerance=stats.DEFAULT_BIAS_TOLERANCE,
    gradient_norms=False,
    window=None,
):
    """Measures ‖∂L/∂h_t‖ against the number of steps back from the loss.

    One forward and backward pass over `x` (in inference mode) with zero
    probes at every measured site:

    - layers of `keras_gradwatch.layers` (`SimpleRNN`, `GRU`, `LSTM`,
      `RNN`): the total derivative ∂L/∂h_t of the recurrent state, through
      the outputs and through the recurrence;
    - stock Keras recurrent layers and `Bidirectional` wrappers, anywhere in
      the model: ∂L/∂x_t at their input (cast to float first, so token ids
      or booleans are measured at the tensor the layer computes on);
    - `keras_gradwatch.layers.Probe` layers: ∂L/∂x_t where they stand.

    The loss is the model's training objective, as `fit` computes it
    (`model.compute_loss`): the compiled loss of each output, with Keras's
    matching of target and output ranks, its reduction, the sample weights
    and `loss_weights`, plus the terms of `model.losses` (`add_loss` in
    layers or in `call`, weight regularisation). Where that objective
    cannot be evaluated on the batch, `NotMeasurableError` says why.

    The measurement starts from a zero recurrent state and restores the
    state afterwards; it changes no weights, no state and no metric. It
    runs the model in inference mode (no dropout, batch-normalisation
    statistics as stored), so that it draws no random numbers and moves
    no variable that training uses. On a `TruncatedBPTT` model it measures
    the wrapped model over the whole sequence, not window by window, so
    the profile shows what the window cuts off.

    Args:
        model: A Keras model, or a `TruncatedBPTT`.
        x: Input batch `(batch, T, ...)` (numpy or tensor, possibly nested),
            of any batch size, also for stateful models.
        y: Targets, as passed to `fit`. Without targets, a model that has no
            loss at all (not compiled with one, no `add_loss` term) is
            measured on the sum of its outputs at the final step: the
            profile then shows how much the final outputs depend on each
            earlier step.
        sample_weight: Sample weights, as passed to `fit` (per sequence, or
            per step for outputs with a time axis).
        loss: A Keras loss (name, function or `keras.losses.Loss`) that
            replaces the compiled loss (applied to every output and summed;
            `add_loss` terms are still added). Defaults to the model's own
            objective.
        loss_steps: `"last"` (default): the compiled loss at the final step
            only (outputs, targets and per-step weights cut to their last
            step), so the x axis is "steps back from the loss"; for a
            many-to-one model that is the training loss. An objective with
            no per-step part (`add_loss` terms only, or a `compute_loss` of
            the model's own) is measured whole, and the result says
            `loss_steps="all"`. `"all"`: the training loss over all steps.
        backprop: The span `truncation_bias` is measured against: the
            steps each update back-propagates through. Defaults to
            `backprop` of a `TruncatedBPTT` model, else none (no bias).
        threshold: Relative threshold of `horizon` (default 0.01).
        tolerance: Tolerance of `suggested_window` (default 0.05).
        gradient_norms: Also return the global and per-layer norms of the
            weights' gradient of the training loss (mean over sequences and
            steps), and the gradient across depth (`Measurement.depth`),
            from the same forward and backward pass.
        window: Deprecated name of `backprop` (it is not the window of
            an update, k1, but the span its gradient reaches, k2): still
            accepted, with a `DeprecationWarning`.

    Returns:
        A `Measurement`; `.layers[name].profile` is the profile of a layer.

    Raises:
        NotMeasurableError: If the model's training objective cannot be
            evaluated on the batch (the message says why).
        InvalidInputError: If `x` has no time axis, `loss_steps` is unknown,
            targets come without a loss, the model holds nothing to probe,
            or both `backprop` and its former name `window` are passed.

    Example:

    >>> import numpy as np, keras
    >>> from keras_gradwatch import layers, measure
    >>> model = keras.Sequential([
    ...     keras.Input((None, 2)),
    ...     layers.SimpleRNN(8, name="rnn"),
    ...     keras.layers.Dense(1),
    ... ])
    >>> result = measure(model, np.ones((4, 30, 2), "float32"))
    >>> result.layers["rnn"].profile.shape
    (30,)
    >>> result.layers["rnn"].decay_rate < 1.0
    True
    """
    if window is not None:
        if backprop is not None:
            raise InvalidInputError(
                f"Received: backprop={backprop!r} and window={window!r}. `window` is "
                "the former name of `backprop`: pass `backprop` only."
            )
        warnings.warn(
            f"measure(window={window!r}) is deprecated: pass backprop={window!r}, the "
            "span the truncation bias is measured against (the steps each update "
            "back-propagates through).",
            DeprecationWarning,
            stacklevel=2,
        )
        backprop = window
    return _measure(
        model,
        x,
        y,
        sample_weight=sample_weight,
        loss=loss,
        loss_steps=loss_steps,
        window=backprop,
        threshold=threshold,
        tolerance=tolerance,
        gradient_norms=gradient_norms,
        profiles=True,
        stand_in=True,
    )


def _measure(
    model,
    x,
    y,
    *,
    sample_weight=None,
    loss,
    loss_steps,
    window,
    threshold,
    tolerance,
    gradient_norms,
    profiles,
    stand_in=False,
    depth=None,
):
    """`measure`, where `profiles=None` measures time profiles if it can.

    `depth` (default: `gradient_norms`) measures the depth profile; only
    with `gradient_norms` (it shares its backward pass).

    With `profiles=None`, a model with nothing to probe (e.g. feed-forward),
    or inputs without a time axis, gets gradient norms only. With
    `stand_in=False` (`GradWatch`), a model with no loss is not measured on
    the sum of its outputs: `NotMeasurableError` says so.
    """
    if loss_steps not in LOSS_STEPS:
        raise InvalidInputError(
            f"Received: loss_steps={loss_steps!r}. Pass 'last' (the loss at "
            "the final step) or 'all' (the mean loss over all steps)."
        )
    inner, backprop = _unwrap(model)
    if window is None:
        window = backprop
    x, y, sample_weight = (
        None if s is None else keras.tree.map_structure(_to_tensor, s)
        for s in (x, y, sample_weight)
    )
    if profiles:
        _check_inputs(x)
    elif not _has_time_axis(x):
        profiles = False  # inputs without a time axis: gradient norms only
    rows = int(_sequence.first_leaf(x).shape[0])
    depth = gradient_norms if depth is None else bool(depth and gradient_norms)
    measurer = _measurer(
        model, inner, loss, loss_steps, gradient_norms, profiles, stand_in,
        shapes=(y is None, sample_weight is None), depth=depth,
    )
    scale = _loss_scale(model)
    with _random_state.preserved(inner):  # training draws the same masks
        with _state.stateless(inner):
            measurer.objective.check(x, y, sample_weight)
        out = measurer(x, y, sample_weight, tf.constant(scale, "float32"))
        while scale > 1 and not _all_finite(out):
            # Mixed precision: the optimizer's scale overflowed float16 here (as
            # it does in training, where the step is then skipped): lower it.
            scale = max(1.0, scale / 2**4)
            out = measurer(x, y, sample_weight, tf.constant(scale, "float32"))
    records = {}
    for name, per_step in out["profiles"].items():
        profile = per_step.numpy().mean(axis=0)[::-1]
        records[name] = LayerProfile.from_profile(
            name, measurer.kinds[name], profile, window, threshold, tolerance
        )
    norms = {name: float(v) for name, v in out["norms"].items()}
    first = _sequence.first_leaf(x)
    return Measurement(
        layers=records,
        length=int(first.shape[1]) if len(first.shape) >= 2 else 1,
        sequences=rows,
        loss_steps=measurer.loss_steps_used or loss_steps,
        window=window,
        global_norm=(
            float(np.sqrt(sum(v**2 for v in norms.values())))
            if gradient_norms
            else None
        ),
        layer_norms=norms if gradient_norms else None,
        depth=measurer.depth_profile(out) if depth else None,
    )


class _Measurer:
    """A compiled probed forward/backward pass of one model.

    Args:
        model: The model `fit` trains (a `TruncatedBPTT`: the wrapper).
        inner: The model run (a `TruncatedBPTT`: the model it wraps).
        loss, stand_in: See `_objective.Objective`.
        loss_steps, gradient_norms, profiles: See `_measure`.
    """

    def __init__(self, model, inner, loss, loss_steps, gradient_norms, profiles, stand_in,
                 depth=False):
        self.model = inner
        self.depth = depth
        self.depth_names = ()  # the depth units' names and whether each is
        self.depth_outputs = ()  # a model output, known once traced
        self.depth_blocks = ()  # ... and its residual block
        self.objective = _objective.Objective(model, inner, loss, stand_in)
        self.loss_steps = loss_steps
        self.loss_steps_used = None  # known once traced
        self.gradient_norms = gradient_norms
        self.kinds = {}
        self.stock = _stock_recurrent_layers(inner)
        probed = [
            layer
            for layer in _compat.sublayers(inner)
            if isinstance(
                layer, (probed_layers.Probe, probed_layers._ProbedRecurrence)
            )
        ]
        self.profiles = profiles is not False and bool(self.stock or probed)
        if profiles and not self.profiles:
            raise InvalidInputError(
                f"measure found nothing to probe in model '{inner.name}': it "
                "has no recurrent layer (keras_gradwatch.layers or stock "
                "Keras) and no keras_gradwatch.layers.Probe. Build it from "
                "keras_gradwatch.layers, or insert keras_gradwatch.layers."
                "Probe() on the (batch, time, ...) tensor to measure."
            )
        # One trace per model: not the retracing TensorFlow warns of.
        self.function = _compat.quiet_tracing_warning(
            tf.function(self._run, reduce_retracing=True, autograph=False)
        )

    def __call__(self, x, y, sample_weight, scale):
        return self.function(x, y, sample_weight, scale)

    def _forward(self, x):
        """The probed forward pass (traced): `(y_pred, session, has_time)`."""
        with _state.stateless(self.model):
            has_time = self.profiles and _sequence.output_time_axes(
                self.model, x, _sequence.first_leaf(x).shape[0], 2
            )[0]
        # Traced as stateless: the pass starts from a zero state and never
        # reads or writes the model's state variables. The gradients are
        # symbolic (`tf.gradients`, not a tape): a tape records each
        # recurrent loop as a function of its own, which doubles tracing.
        with _state.stateless(self.model), _probing.session(
            None, self.stock if self.profiles else (),
            depth_units(self.model) if self.depth else (),
        ) as session:
            y_pred = self.model(x, training=False)
        return y_pred, session, has_time

    def _run(self, x, y, sample_weight, scale):
        y_pred, session, has_time = self._forward(x)
        sites = session.sites
        depth_sites = session.depth
        depth_probes = [leaf for site in depth_sites for leaf in site.outputs]
        out = {"profiles": {}, "norms": {}}
        # Weight gradients are reported per top-level layer. Read once the
        # model has run: a subclassed model may have built its weights only
        # now.
        weight_groups = [
            (layer.name, layer.trainable_variables)
            for layer in self.model.layers
            if layer.trainable_variables
        ]
        # Under mixed precision, float16 gradients of a few steps back would
        # underflow: scale the losses as the optimizer does, and divide the
        # gradients by the same factor.
        variables = [v for _, weights in weight_groups for v in weights]
        variables = [v.value for v in variables] if self.gradient_norms else []
        probes = [site.probe for site in sites] if self.profiles else []
        profile_loss, weight_loss, shared = self._losses(
            x, y, y_pred, sample_weight, has_time
        )
        weight_grads = depth_grads = None
        rows = tf.cast(tf.shape(_sequence.first_leaf(y_pred))[0], "float32")
        if self.profiles:
            grads = tf.gradients(
                scale * profile_loss,
                probes + (variables + depth_probes if shared else []),
            )
            if shared and (variables or depth_probes):
                # profile_loss is the batch size times the objective: per row.
                after = grads[len(probes):]
                weight_grads = [
                    None if g is None else tf.cast(g, "float32") / rows
                    for g in after[: len(variables)]
                ]
                depth_grads, per_row = after[len(variables):], 1.0
            grads = grads[: len(probes)]
            if all(g is None for g in grads):
                raise InvalidInputError(
                    f"The loss of model '{self.model.name}' does not depend on "
                    f"any probed tensor ({[s.name for s in sites]}), so there "
                    "is no gradient to measure. Check that the probed layers "
                    "lie between the inputs and the outputs."
                )
            self.kinds = {site.name: site.kind for site in sites}
            out["profiles"] = {
                site.name: _per_step_norm(
                    tf.zeros_like(site.probe) if grad is None else grad
                )
                / scale
                for site, grad in zip(sites, grads)
            }
        if self.gradient_norms:
            if weight_grads is None:
                # The depth probes per row: the batch size times the objective.
                both = tf.gradients(scale * weight_loss, variables + depth_probes)
                weight_grads = both[: len(variables)]
                depth_grads, per_row = both[len(variables):], rows
            # One backward pass for every weight, split by layer afterwards;
            # each weight's sum of squares is computed once, for the layer
            # norms and the depth profile alike.
            norms = _GroupNorms(_square_sums(weight_grads), scale)
            start = 0
            for name, weights in weight_groups:
                out["norms"][name] = norms.of(range(start, start + len(weights)))
                start += len(weights)
            if self.depth:
                out["depth"] = self._depth(
                    depth_sites, depth_grads, per_row, y_pred, weight_groups, norms, scale
                )
        return out

    def _depth(self, sites, grads, per_row_scale, y_pred, weight_groups, norms, scale):
        """The depth profile's values, one (3, units) tensor: output
        gradient, weight gradient and weight norm per unit (traced). The
        names and which units are model outputs are kept on the measurer
        (Python values, known once traced)."""
        produced = {id(t) for t in keras.tree.flatten(y_pred)}
        self.depth_names = tuple(site.name for site in sites)
        self.depth_outputs = tuple(
            any(id(t) in produced for t in site.outputs) for site in sites
        )
        blocks = _residual.residual_blocks(self.model, [site.layer for site in sites])
        self.depth_blocks = tuple(blocks.get(id(site.layer)) for site in sites)
        if not sites:
            return tf.zeros([3, 0])
        flat = [v for _, weights in weight_groups for v in weights]
        position = {id(v): i for i, v in enumerate(flat)}
        grads = iter(grads)
        leaves, leaf_owners, weight_grad, owners = [], [], [], []
        for index, site in enumerate(sites):
            for grad in [next(grads) for _ in site.outputs]:
                if grad is not None:
                    leaves.append(tf.cast(grad, "float32"))
                    leaf_owners.append(index)
            own = site.layer.trainable_variables
            weight_grad.append(norms.of(position[id(v)] for v in own if id(v) in position))
            owners += [index] * len(own)
        # Per row, each output's squared norm; per unit, their sum (several
        # outputs: one vector), rooted, averaged over the rows. An output
        # whose first axis is not the batch's: the mean of its own rows.
        batch = _sequence.first_leaf(y_pred).shape[0]
        odd = [i for i, leaf in enumerate(leaves) if leaf.shape[0] != batch]
        output_grad = tf.reduce_mean(tf.sqrt(_segment_square_sums(
            [leaf for i, leaf in enumerate(leaves) if i not in odd],
            [o for i, o in enumerate(leaf_owners) if i not in odd], len(sites), rows=True,
        )), axis=1)
        for i in odd:
            alone = tf.reduce_mean(tf.math.reduce_euclidean_norm(
                leaves[i], axis=list(range(1, max(leaves[i].shape.rank, 1)))))
            output_grad = tf.tensor_scatter_nd_add(output_grad, [[leaf_owners[i]]], [alone])
        # Every unit's weights: sums of squares, summed by unit.
        weights = [tf.cast(v.value, "float32")
                   for site in sites for v in site.layer.trainable_variables]
        weight_norm = tf.sqrt(_segment_square_sums(weights, owners, len(sites)))
        return tf.stack([
            output_grad * (per_row_scale / scale), tf.stack(weight_grad), weight_norm,
        ])

    def depth_profile(self, out):
        """The `DepthProfile` of one run's outputs."""
        values = out.get("depth")
        if values is None:
            return None
        values = values.numpy().astype("float64")
        return depth_lib.DepthProfile(
            layers=self.depth_names, output_grad=values[0], weight_grad=values[1],
            weight_norm=values[2], outputs=self.depth_outputs, blocks=self.depth_blocks,
        )

    def _losses(self, x, y, y_pred, sample_weight, has_time):
        """`(profile_loss, weight_loss, shared)` of one traced pass.

        `weight_loss` is the training objective. `profile_loss` is what the
        profiles differentiate, summed over sequences so that each keeps
        its own gradient scale (the batch size times a batch-mean loss).
        `shared`: `profile_loss` is the batch size times `weight_loss`, so
        one backward pass serves both.
        """
        last = has_time and self.loss_steps == "last"
        rows = tf.cast(tf.shape(_sequence.first_leaf(y_pred))[0], "float32")
        total = self.objective.total(x, y, y_pred, sample_weight)
        if total is None:
            # `measure` on a model with no loss, without targets: the sum
            # of the outputs (per sequence), as documented there.
            self.loss_steps_used = self.loss_steps
            every_step = _output_sums(y_pred, has_time, last=False)
            if last:
                profile_loss = tf.reduce_sum(_output_sums(y_pred, has_time, last=True))
            else:
                profile_loss = tf.reduce_sum(every_step)
            return profile_loss, tf.reduce_mean(every_step), not last
        if last and self.objective.per_step:
            self.loss_steps_used = "last"
            final = self.objective.final_step(x, y, y_pred, sample_weight)
            return rows * final, total, False
        # Many-to-one (the final step's loss is the training loss), all
        # steps, or an objective with no per-step part: measured whole.
        self.loss_steps_used = "all" if last else self.loss_steps
        return rows * total, total, True


class _GroupNorms:
    """L2 norms of groups of weights' gradients, from each weight's sum of
    squares (None: no gradient), divided by the loss scale; a group asked
    for twice (a top-level layer that is also a depth unit) is one tensor."""

    def __init__(self, squares, scale):
        self.squares = squares
        self.scale = scale
        self._made = {}

    def of(self, indices):
        key = tuple(i for i in indices if self.squares[i] is not None)
        if key not in self._made:
            self._made[key] = (
                tf.sqrt(tf.add_n([self.squares[i] for i in key])) / self.scale
                if key else tf.constant(0.0)
            )
        return self._made[key]


def _segment_square_sums(tensors, owners, count, rows=False):
    """Sums of squares of `tensors`, summed by owner: shape (count,), or
    with `rows` (count, rows), the first axis kept.

    A depth profile reduces one weight per variable and one gradient per
    layer: as separate operations, their dispatch would cost more than
    their arithmetic (a 20-layer MLP's measurement is ~500 small
    operations). Tensors of one static shape (a deep stack of equal
    layers) are stacked and reduced in one go, others alone. Stacking
    copies the tensors: only small ones are (at most `STACKED_VALUES`
    values each, a copy that stays in cache; larger ones cost more to copy
    than to dispatch, measured on a 20-layer MLP with 256 rows).
    """
    if not tensors:
        return tf.zeros([count] if not rows else [count, 1])
    groups = {}
    for index, tensor in enumerate(tensors):
        # Known sizes only: with an unknown batch, a gradient is reduced alone.
        size = tensor.shape.num_elements()
        key = tuple(tensor.shape) if size is not None and size <= STACKED_VALUES else index
        groups.setdefault(key, []).append(index)
    parts, order = [], []
    for indices in groups.values():
        members = [tensors[i] for i in indices]
        stacked = tf.stack(members) if len(members) > 1 else tf.expand_dims(members[0], 0)
        axes = list(range(1 + int(rows), stacked.shape.rank))
        squares = tf.square(stacked)
        parts.append(tf.reduce_sum(squares, axis=axes) if axes else squares)
        order += indices
    values = tf.concat(parts, axis=0) if len(parts) > 1 else parts[0]
    ids = [owners[i] for i in order]
    if ids == list(range(count)):
        return values  # one tensor per owner, in order
    if sorted(ids) == list(range(count)):
        return tf.gather(values, [ids.index(owner) for owner in range(count)])
    # Several tensors per owner: summed by a (count, tensors) 0/1 matrix
    # (a small product; a segment sum is slower on CPU).
    summing = np.zeros((count, len(ids)), "float32")
    summing[ids, np.arange(len(ids))] = 1.0
    if rows:
        return tf.matmul(tf.constant(summing), values)
    return tf.linalg.matvec(tf.constant(summing), values)


def _output_sums(y_pred, has_time, last):
    """The sum of the outputs of each sequence (at its final step with
    `last`), shape (batch,): the stand-in loss of a model with none."""
    outputs = keras.tree.flatten(y_pred)
    if has_time and last:
        outputs = [t[:, -1] for t in outputs]
    return tf.add_n([_per_row(tf.cast(t, "float32"), tf.reduce_sum) for t in outputs])


def _per_row(values, reduce):
    """Reduces every axis but the batch axis."""
    if values.shape.rank is None or values.shape.rank <= 1:
        return values
    return reduce(values, axis=list(range(1, values.shape.rank)))


def not_measured(error):
    """The reason, in words, that a measurement raised `error`.

    Starts with "not measured:"; the package's own errors say what to do.
    """
    text = str(error).strip()
    if isinstance(error, NotMeasurableError):
        return text
    if isinstance(error, InvalidInputError):
        return f"not measured: {text}"
    first = text.splitlines()[0] if text else ""
    if isinstance(error, NotImplementedError) and ".call()" in first:
        # Keras's Model.call of a model built for its own train_step only.
        return ("not measured: the model cannot be called on the probe batch (it has "
                f"no call(): {first}). GradWatch measures the gradient of the loss "
                "of model(x); a model whose train_step calls its parts has none. Its "
                "logged losses are still checked.")
    return f"not measured: the measurement failed ({type(error).__name__}: {first})"


def _measurer(model, inner, loss, loss_steps, gradient_norms, profiles, stand_in, shapes,
              depth=False):
    # One compiled measurement per (model, loss, loss_steps, ...), kept on
    # the model measured and reused while it lives: a callback measures the
    # same model many times, in one fit and the next (with a new callback).
    per_model = _compat.measurement_cache(inner)
    # With and without targets (or weights) are different passes, whatever
    # the loss; so are the wrapper's objective and the wrapped model's, and
    # the loss of each `compile`.
    key = (
        id(model), _compat.compiled_loss_id(model), _loss_key(loss), shapes,
        loss_steps, gradient_norms, profiles, stand_in, depth,
    )
    if key not in per_model:
        per_model[key] = _Measurer(
            model, inner, loss, loss_steps, gradient_norms, profiles, stand_in, depth
        )
    return per_model[key]


def _traces(model):
    """How many times the measurements of `model` were traced so far."""
    inner, _ = _unwrap(model)
    return sum(
        measurer.function.experimental_get_tracing_count()
        for measurer in _compat.measurement_cache(inner).values()
    )


def _unwrap(model):
    """`(model trained, backprop)`: a `TruncatedBPTT` gives the model it
    wraps and its backprop span, any other model itself and None.

    Read from the wrapper's public attributes (`model`, a Keras model, and
    `backprop`), so that this module, which `TruncatedBPTT(window="auto")`
    uses, does not import it back.
    """
    inner = getattr(model, "model", None)
    backprop = getattr(model, "backprop", None)
    if isinstance(inner, keras.Model) and isinstance(backprop, int):
        return inner, backprop
    return model, None


def _loss_key(loss):
    if loss is None or isinstance(loss, str):
        return loss
    return id(loss)


def _per_step_norm(grad):
    """L2 norm per (sequence, step) over the remaining axes."""
    grad = tf.cast(grad, "float32")
    axes = list(range(2, grad.shape.rank))
    return tf.sqrt(tf.reduce_sum(tf.square(grad), axis=axes)) if axes else tf.abs(grad)


def depth_units(model):
    """The layers a depth profile measures: every layer with trainable
    weights, looking inside nested models (a `keras.Model` inside the
    model is opened, any other layer is one unit, whatever it holds: a
    `Bidirectional`, an RNN and its cell, a custom block)."""
    units = []
    for layer in getattr(model, "layers", ()):
        if isinstance(layer, keras.Model):
            units.extend(depth_units(layer))
        elif layer.trainable_weights:
            units.append(layer)
    return units


def _square_sums(tensors):
    """Each tensor's sum of squares in float32 (one fused operation each);
    None for None."""
    return [
        None if t is None else 2.0 * tf.nn.l2_loss(tf.cast(t, "float32")) for t in tensors
    ]


def _stock_recurrent_layers(model):
    """Stock Keras recurrent layers to probe at their input.

    A `Bidirectional` around a stock layer is probed as a whole; layers of
    `keras_gradwatch.layers` probe their own state instead.
    """
    found, inside = [], set()
    for layer in _compat.sublayers(model):
        if isinstance(layer, keras.layers.Bidirectional):
            inner = (layer.forward_layer, layer.backward_layer)
            inside.update(id(part) for part in inner)
            if not any(isinstance(part, probed_layers._ProbedRecurrence) for part in inner):
                found.append(layer)
        elif (
            isinstance(layer, keras.layers.RNN)
            and not isinstance(layer, probed_layers._ProbedRecurrence)
            and id(layer) not in inside
        ):
            found.append(layer)
    return found


def _to_tensor(value):
    if value is None or isinstance(value, tf.Tensor):
        return value
    return tf.convert_to_tensor(value)


def _has_time_axis(x):
    return all(len(leaf.shape) >= 2 for leaf in keras.tree.flatten(x) if leaf is not None)


def _check_inputs(x):
    for leaf in keras.tree.flatten(x):
        if leaf is not None and len(leaf.shape) < 2:
            raise InvalidInputError(
                "measure needs sequences shaped (batch, time, ...), but "
                f"received an input with shape {tuple(leaf.shape)}."
            )


def _loss_scale(model):
    """The loss scale of a `LossScaleOptimizer`, else 1."""
    optimizer = getattr(model, "optimizer", None)
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer) and optimizer.built:
        return float(optimizer.dynamic_scale.numpy())
    return 1.0


def _all_finite(out):
    return all(
        bool(tf.reduce_all(tf.math.is_finite(value)))
        for value in keras.tree.flatten(out)
    )
