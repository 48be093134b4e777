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
"""

import contextlib
import threading

import keras
import tensorflow as tf

from keras_gradwatch import _compat

_local = threading.local()


class Site:
    """One probed tensor: where it is, and its probe."""

    def __init__(self, name, kind, probe):
        self.name = name
        self.kind = kind
        self.probe = probe


class Session:
    """Creates, watches and collects the probes of one forward pass.

    Args:
        tape: A `tf.GradientTape` to watch the probes with, or None when the
            gradients are taken symbolically (`tf.gradients` in a graph).
    """

    def __init__(self, tape):
        self.tape = tape
        self.sites = []

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
    return getattr(_local, "session", None)


@contextlib.contextmanager
def session(tape, stock_layers=()):
    """Opens a probing session; patches `stock_layers` to probe inputs."""
    if current() is not None:
        raise RuntimeError("A probing session is already open.")
    opened = Session(tape)
    _local.session = opened
    patched = []
    try:
        for layer in stock_layers:
            _patch_input(layer)
            patched.append(layer)
        yield opened
    finally:
        for layer in patched:
            _compat.unshadow_call(layer)
        _local.session = None


def _patch_input(layer):
    original = layer.call

    def call(inputs, *args, **kwargs):
        return original(add_input_probe(layer, inputs, "input"), *args, **kwargs)

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
