"""Private: a fused LSTM recurrence (`tf.raw_ops.BlockLSTM`) for training windows.

`BlockLSTM` runs a whole window of an LSTM as one op, forward and backward:
no step-by-step trace (tracing costs nothing whatever the window) and on
CPU faster than Keras's `while` loop or its unrolled graph at small and
medium widths (see docs/benchmarks.md). With `forget_bias=0`,
`cell_clip=-1` (no clipping), no peephole, and Keras's gate layout
(i, f, c, o) reordered to the op's (i, c, f, o), it computes what
`keras.layers.LSTMCell` computes with its default activations (tanh,
sigmoid):

    i = sigmoid(z_i), f = sigmoid(z_f), o = sigmoid(z_o),
    c_t = f * c_{t-1} + i * tanh(z_c), h_t = o * tanh(c_t),

z = [x_t, h_{t-1}] @ [kernel; recurrent_kernel] + bias. Its registered
gradient is checked against finite differences in tests/test_fused.py.
(`BlockLSTMV2` takes Keras's layout directly, but its registered gradient
disagrees with finite differences in TF 2.21: not used.)

`fused_inner_loop` replaces a layer's `RNN.inner_loop` (same arguments,
same results); `unfused_reason` says whether a layer can take it.
"""

import keras
import tensorflow as tf

from keras_gradwatch.core import _probing

# Compute dtypes BlockLSTM has CPU and GPU kernels for.
_DTYPES = ("float32", "float16")
# `TruncatedBPTT(recurrence=...)`.
RECURRENCES = ("auto", "fused", "stock")
# With recurrence="auto", LSTMs of at most FUSED_MAX_UNITS or at least
# FUSED_MIN_WIDE_UNITS units run fused; Keras's recurrence is faster in
# between. Measured per window forward + backward (batch 32, 8 features,
# window 50, TF 2.21 CPU, docs/benchmarks.md, `paths` and the stepwise
# gradient's notes there): fused 2.0 / 5.1 / 8.4 ms at 8 / 64 / 96 units
# against Keras's loop 3.6 / 8.8 / 12.1 ms and its unrolled graph 2.9 /
# 8.3 ms; at 128 units `BlockLSTMGrad` falls off (31 ms against 16 ms for
# the loop) and even the stepwise gradient is slower (18.8 against 15.6
# ms), 160-192 units tie (24.0 / 26.4 against 23.3 / 26.1 ms), 224 units
# 45 against 38 ms, and from 256 units the fused kernel with the
# stepwise gradient wins (256: 49 against 79 ms; 256 units with 64
# features 34 against 64 ms; 512: 144 against 280 ms).
FUSED_MAX_UNITS = 96
FUSED_MIN_WIDE_UNITS = 256
# From this width the fused kernel's backward pass runs step by step
# (`_block_lstm_stepwise_gradient`) instead of `BlockLSTMGrad`. Measured
# (forward + backward of one window, batch 32, 8 features, window 50, TF
# 2.21 CPU, load about 2): 96 units 8.4 ms with `BlockLSTMGrad` against
# 9.8 ms step by step; 128 units 31.1 against 18.7 ms; 256 units 107
# against 52 ms; 128 units, 64 features, window 100: 80 against 44 ms.
STEPWISE_GRADIENT_MIN_UNITS = 128


def planned_path(layer, recurrence):
    """Whether `layer` runs fused under `recurrence`, and why (not).

    Args:
        layer: A `keras.layers.RNN` layer.
        recurrence: One of `RECURRENCES`.

    Returns:
        `(fused, reason)`: `fused` a bool, `reason` a short fragment for
        messages and `summary()` (why it is not fused; None when it is).
    """
    if recurrence == "stock":
        return False, "recurrence='stock'"
    reason = unfused_reason(layer)
    units = layer.cell.units if reason is None else None
    if recurrence == "auto" and units is not None and FUSED_MAX_UNITS < units < FUSED_MIN_WIDE_UNITS:
        reason = (
            f"{units} units, between {FUSED_MAX_UNITS} and {FUSED_MIN_WIDE_UNITS} "
            "(Keras's own recurrence is faster there)"
        )
    return reason is None, reason


def unfused_reason(layer):
    """Why `layer` cannot run the fused kernel, or None if it can.

    The check is on the layer's settings (a call with a mask, or inside a
    gradient measurement, also falls back, see `fused_inner_loop`).

    Args:
        layer: A `keras.layers.RNN` layer.

    Returns:
        None, or a short reason (a sentence fragment) for a message.
    """
    from keras_gradwatch.core import layers as probed_layers

    if not isinstance(layer, keras.layers.LSTM):
        return f"{type(layer).__name__} has no fused kernel (LSTM only)"
    stock = (keras.layers.LSTM.inner_loop, probed_layers.LSTM.inner_loop)
    if type(layer).inner_loop not in stock or type(layer).call not in (
        keras.layers.LSTM.call,
    ):
        return f"{type(layer).__name__} overrides LSTM's call or inner_loop"
    cell = layer.cell
    if type(cell) is not keras.layers.LSTMCell:
        return f"its cell is a {type(cell).__name__}, not an LSTMCell"
    if cell.activation is not keras.activations.tanh:
        return f"activation={_name(cell.activation)} (the kernel computes tanh)"
    if cell.recurrent_activation is not keras.activations.sigmoid:
        return (
            f"recurrent_activation={_name(cell.recurrent_activation)} "
            "(the kernel computes sigmoid)"
        )
    if cell.dropout or cell.recurrent_dropout:
        return (
            f"dropout={cell.dropout}, recurrent_dropout={cell.recurrent_dropout} "
            "(the kernel has no dropout)"
        )
    if layer.compute_dtype not in _DTYPES:
        return f"compute dtype {layer.compute_dtype} (the kernel runs float32 and float16)"
    return None


def _name(function):
    return getattr(function, "__name__", repr(function))


def fused_inner_loop(layer, record=None):
    """A replacement for `layer.inner_loop` that runs `BlockLSTM`.

    Falls back to the layer's own `inner_loop` for a call with a mask or
    inside a gradient measurement (the probes live inside Keras's loop).

    Args:
        layer: A `keras.layers.LSTM` for which `unfused_reason` is None.
        record: Optional callable, `record(layer, fused)` at every call
            (while tracing): whether that call ran the fused kernel.

    Returns:
        A function of `(sequences, initial_state, mask, training=False)`
        returning `(last_output, outputs, states)` as `RNN.inner_loop` does.
    """
    own = type(layer).inner_loop

    def inner_loop(sequences, initial_state, mask, training=False):
        if keras.tree.is_nested(mask):
            mask = mask[0]
        fused = mask is None and _probing.current() is None
        if record is not None:
            record(layer, fused)
        if not fused:
            return own(layer, sequences, initial_state, mask, training=training)
        return run(layer, sequences, initial_state, layer.return_sequences)

    return inner_loop


def _block_weights(cell, dtype):
    """The op's weight matrix and bias from the cell's, gates reordered."""
    kernel = tf.cast(cell.kernel, dtype)
    recurrent = tf.cast(cell.recurrent_kernel, dtype)
    w = tf.concat([kernel, recurrent], axis=0)
    i, f, c, o = tf.split(w, 4, axis=1)
    w = tf.concat([i, c, f, o], axis=1)
    if cell.use_bias:
        bi, bf, bc, bo = tf.split(tf.cast(cell.bias, dtype), 4)
        b = tf.concat([bi, bc, bf, bo], axis=0)
    else:
        b = tf.zeros([4 * cell.units], dtype)
    return w, b


@tf.custom_gradient
def _swap_time_batch(t):
    """`t` with its first two axes swapped (batch major <-> time major).

    The bits are moved as integers of the same width: with oneDNN on
    (TensorFlow's default on x86 CPUs) a float32 `tf.transpose` runs as
    `_MklTranspose`, which took about 100 us for a window's (32, 50, 8) or
    (50, 32, 64) tensor against about 20 us for TensorFlow's own transpose
    (TF 2.21, 2-core CPU): the three of a window's update were 30 % of an
    LSTM(8)'s. A permutation: the values are the same.
    """
    perm = [1, 0] + list(range(2, t.shape.rank))
    return _permute_bits(t, perm), lambda grad: _permute_bits(grad, perm)


def _permute_bits(t, perm):
    bits = {"float32": tf.int32, "float16": tf.int16}.get(t.dtype.name)
    if bits is None:
        return tf.transpose(t, perm)
    return tf.bitcast(tf.transpose(tf.bitcast(t, bits), perm), t.dtype)


def _block_lstm(x, c0, h0, w, b):
    """`BlockLSTM` over time-major `x`: `(i, cs, f, o, ci, co, h)`."""
    peephole = tf.zeros(tf.shape(c0)[1:], x.dtype)
    return tf.raw_ops.BlockLSTM(
        seq_len_max=tf.cast(tf.shape(x)[0], "int64"),
        x=x,
        cs_prev=c0,
        h_prev=h0,
        w=w,
        wci=peephole,
        wcf=peephole,
        wco=peephole,
        b=b,
        forget_bias=0.0,
        cell_clip=-1.0,
        use_peephole=False,
    )


@tf.custom_gradient
def _block_lstm_stepwise_gradient(x, c0, h0, w, b):
    """`BlockLSTM`'s `(cs, h)`, differentiated step by step.

    The same gradient as the op's registered one (`BlockLSTMGrad`),
    computed differently: a `while` loop runs `LSTMBlockCellGrad` (the
    gates' gradient, element-wise) and one matmul per step (the gradient
    flowing to the previous step's output); the gradients of `w`, `b` and
    `x` are then one matmul each over the whole window. `BlockLSTMGrad`
    accumulates the weights' gradient with a small matmul at every step,
    which is what makes it slow from 128 units (see
    `STEPWISE_GRADIENT_MIN_UNITS`).
    """
    i, cs, f, o, ci, co, h = _block_lstm(x, c0, h0, w, b)
    features = x.shape[-1] if x.shape[-1] is not None else tf.shape(x)[-1]

    def grad(dcs, dh):
        dcs = tf.zeros_like(cs) if dcs is None else dcs
        dh = tf.zeros_like(h) if dh is None else dh
        cs_prev = tf.concat([c0[None], cs[:-1]], 0)
        # What each step reads, in one tensor: one slice per step.
        saved = tf.concat([i, cs, f, o, ci, co, cs_prev], axis=-1)
        # Transposed once here: a transposed operand costs the matmul a
        # copy of it at every step (1.8x slower at 256 units).
        w_h_t = _permute_bits(w[features:], [1, 0])  # see _swap_time_batch
        peephole = tf.zeros(tf.shape(c0)[1:], x.dtype)
        steps = tf.shape(x)[0]

        def body(t, dh_next, dc_next, gates):
            i_t, cs_t, f_t, o_t, ci_t, co_t, cs_prev_t = tf.split(saved[t], 7, axis=-1)
            # x, h_prev, w and b only give the op its shapes.
            dc_prev, dgates, _, _, _ = tf.raw_ops.LSTMBlockCellGrad(
                x=x[0], cs_prev=cs_prev_t, h_prev=h0, w=w, wci=peephole,
                wcf=peephole, wco=peephole, b=b, i=i_t, cs=cs_t, f=f_t,
                o=o_t, ci=ci_t, co=co_t, cs_grad=dcs[t] + dc_next,
                h_grad=dh[t] + dh_next, use_peephole=False,
            )
            dh_prev = tf.matmul(dgates, w_h_t)
            return t - 1, dh_prev, dc_prev, gates.write(t, dgates)

        gates = tf.TensorArray(x.dtype, size=steps, element_shape=tf.TensorShape(
            [h0.shape[0], None]))
        _, dh0, dc0, gates = tf.while_loop(
            lambda t, *_: t >= 0,
            body,
            [steps - 1, tf.zeros_like(h0), tf.zeros_like(c0), gates],
            parallel_iterations=1,
        )
        gates = gates.stack()  # (time, batch, 4 * units)
        flat = tf.reshape(gates, [-1, tf.shape(w)[1]])
        h_prev = tf.concat([h0[None], h[:-1]], 0)
        xh = tf.reshape(tf.concat([x, h_prev], axis=-1), [-1, tf.shape(w)[0]])
        dw = tf.matmul(xh, flat, transpose_a=True)
        db = tf.reduce_sum(flat, axis=0)
        dx = tf.reshape(tf.matmul(flat, w[:features], transpose_b=True), tf.shape(x))
        return dx, dc0, dh0, dw, db

    return (cs, h), grad


def run(layer, sequences, initial_state, return_sequences):
    """Runs an LSTM layer's recurrence over `sequences` with `BlockLSTM`.

    Args:
        layer: A `keras.layers.LSTM` (its cell's weights, `go_backwards`).
        sequences: `(batch, time, features)` inputs, in the compute dtype.
        initial_state: `[h, c]`, each `(batch, units)`.
        return_sequences: Whether `outputs` must hold every step.

    Returns:
        `(last_output, outputs, [h, c])`; `outputs` is `(batch, time,
        units)`, or `(batch, 1, units)` when not `return_sequences`.
    """
    cell = layer.cell
    dtype = sequences.dtype
    h0, c0 = (tf.cast(s, dtype) for s in initial_state)
    w, b = _block_weights(cell, dtype)
    x = _swap_time_batch(sequences)  # time major
    if layer.go_backwards:
        x = tf.reverse(x, [0])
    if cell.units >= STEPWISE_GRADIENT_MIN_UNITS:
        cs, h = _block_lstm_stepwise_gradient(x, c0, h0, w, b)
    else:
        cs, h = _block_lstm(x, c0, h0, w, b)[1::5]
    last_h, last_c = h[-1], cs[-1]
    if return_sequences:
        outputs = _swap_time_batch(h)
    else:
        outputs = last_h[:, None]
    return last_h, outputs, [last_h, last_c]


def recurrence_plan(layers, recurrence, window, taken):
    """`TruncatedBPTT.recurrence_plan`: how each layer runs its training
    windows.

    Args:
        layers: The stateful recurrent layers.
        recurrence: One of `RECURRENCES`.
        window: The window in use, or None when one traced step serves
            every window.
        taken: The paths traced for that window, by layer name.

    Returns:
        A dict from layer name to `"fused"` or `"Keras's recurrence
        (why)"`, followed by the path traced, if any.
    """
    plan = {}
    for layer in layers:
        fused, reason = planned_path(layer, recurrence)
        planned = "fused" if fused else f"Keras's recurrence ({reason})"
        if layer.name in taken:
            traced = "every window" if window is None else f"window {window}"
            planned += f"; traced for {traced}: {taken[layer.name]}"
        plan[layer.name] = planned
    return plan
