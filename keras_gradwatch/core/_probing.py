"""Private machinery of gradient probes.

A probe is a zero tensor added to an activation `a` of shape
`(batch, time, units)`; its gradient is ∂L/∂a at every step, and adding zero
changes no value. Probes exist only while a `Session` is open: the
measurement opens one around its forward pass, layers ask it for a probe
when they run, and the gradient is taken with respect to each probe. Outside a
session, layers run exactly as the stock Keras layers.

Three kinds of sites ask for probes:

- `keras_gradwatch.layers` recurrent layers add a probe to their first state
  inside the recurrence (site `"state"`): its gradient is the total
  derivative ∂L/∂h_t, through the outputs and through the recurrence;
- stock Keras recurrent layers get a probe added to their input while a
  session patches them (site `"input"`): ∂L/∂x_t;
- `keras_gradwatch.layers.Probe` identity layers (site `"probe"`).

Across depth, a session also collects the outputs of given layers (the
depth profile's units, see `measurement`) while it patches them: their
gradient is ∂L/∂(layer output). These are `DepthSite`s, named apart from
the sites in time (a stock recurrent layer can be both).
"""

import contextlib
import threading

import keras
import tensorflow as tf

from keras_gradwatch.core import _compat


class OpenSessions:
    """The probing session open in each thread.

    The one piece of process-wide state of the package, and why it must
    be: Keras calls the layers (`RNN.inner_loop`, `Probe.call`, a fused
    LSTM loop), so the measurement cannot hand them its `Session`; they
    find it here. Per thread: under tf.distribute, replicas trace the
    training step concurrently in threads of their own, and a step traced
    in another thread must never see (or add) a measurement's probes. It
    holds no run's data: only the session of the measurement being traced,
    and only while it is traced (`session` closes it, whatever happens).
    """

    def __init__(self):
        self._local = threading.local()

    def current(self):
        """The session open in this thread, or None."""
        return getattr(self._local, "session", None)

    def open(self, opened):
        """`opened` is this thread's session (none may be open)."""
        if self.current() is not None:
            raise RuntimeError("A probing session is already open.")
        self._local.session = opened

    def close(self):
        """This thread has no session again."""
        self._local.session = None


OPEN = OpenSessions()


class Site:
    """One probed tensor: where it is, and its probe."""

    def __init__(self, name, kind, probe):
        self.name = name
        self.kind = kind
        self.probe = probe


class DepthSite:
    """The outputs of one call of a depth unit.

    Attributes:
        name: The layer's name (`#2` for a shared layer's second call).
        layer: The layer.
        outputs: Its float output tensors (batch first): the gradient is
            taken with respect to them.
    """

    def __init__(self, name, layer, outputs):
        self.name = name
        self.layer = layer
        self.outputs = outputs


class Session:
    """Creates, watches and collects the probes of one forward pass.

    Args:
        tape: A `tf.GradientTape` to watch the probes with, or None when the
            gradients are taken symbolically (`tf.gradients` in a graph).
    """

    def __init__(self, tape):
        self.tape = tape
        self.sites = []
        self.depth = []

    def add_outputs(self, layer, outputs):
        """Records the float outputs of `layer` (a depth unit) as a
        `DepthSite`; returns them unchanged.

        No probe is added: a layer's output is a tensor of the traced graph
        (not a state inside a loop), so its gradient is taken with respect
        to the output itself, at no cost beyond the backward pass.
        """
        leaves = [
            leaf for leaf in keras.tree.flatten(outputs)
            if isinstance(leaf, tf.Tensor)
            and leaf.shape.rank is not None
            and leaf.shape.rank >= 1
            and leaf.dtype.is_floating
        ]
        if leaves:
            if self.tape is not None:
                for leaf in leaves:
                    self.tape.watch(leaf)
            taken = {site.name for site in self.depth}
            name, count = layer.name, 2
            while name in taken:  # a shared layer called twice
                name = f"{layer.name}#{count}"
                count += 1
            self.depth.append(DepthSite(name, layer, leaves))
        return outputs

    def add(self, layer, probe, kind):
        """Records a zero probe `(batch, time, ...)` and its site."""
        if self.tape is not None:
            self.tape.watch(probe)
        name = layer.name
        taken = {site.name for site in self.sites}
        count = 2
        while name in taken:  # a shared layer called twice
            name = f"{layer.name}#{count}"
            count += 1
        self.sites.append(Site(name, kind, probe))
        return probe


def current():
    """The open session, or None."""
    return OPEN.current()


@contextlib.contextmanager
def session(tape, stock_layers=(), depth_layers=()):
    """Opens a probing session; patches `stock_layers` to probe inputs and
    `depth_layers` to probe outputs."""
    opened = Session(tape)
    OPEN.open(opened)
    patched = []
    inputs = {id(layer) for layer in stock_layers}
    outputs = {id(layer) for layer in depth_layers}
    try:
        for layer in {id(item): item for item in (*stock_layers, *depth_layers)}.values():
            _patch(layer, id(layer) in inputs, id(layer) in outputs)
            patched.append(layer)
        yield opened
    finally:
        for layer in patched:
            _compat.unshadow_call(layer)
        OPEN.close()


def _patch(layer, inputs, outputs):
    """Shadows the layer's `call` (one shadow per layer, whatever it probes)."""
    original = layer.call

    def call(first, *args, **kwargs):
        if inputs:
            first = add_input_probe(layer, first, "input")
        result = original(first, *args, **kwargs)
        opened = current()
        if outputs and opened is not None:
            result = opened.add_outputs(layer, result)
        return result

    # Shadows the class's `call` until the session ends.
    _compat.shadow_call(layer, call)


def add_input_probe(layer, inputs, kind):
    """Adds a probe to `inputs` if a session is open (casts ints to float)."""
    opened = current()
    if opened is None:
        return inputs
    if not keras.backend.is_float_dtype(keras.backend.standardize_dtype(inputs.dtype)):
        # Token ids or booleans have no gradient: measure at the first float
        # tensor, the one the layer would compute on.
        inputs = tf.cast(inputs, layer.compute_dtype)
    return inputs + opened.add(layer, tf.zeros_like(inputs), kind)


def state_probe(layer, sequences, units):
    """A probe for a recurrent layer's first state, or None."""
    opened = current()
    if opened is None:
        return None
    shape = tf.concat([tf.shape(sequences)[:2], [units]], axis=0)
    probe = tf.zeros(shape, dtype=layer.compute_dtype)
    return opened.add(layer, probe, "state")
