"""Private: how the stateful layers run inside `TruncatedBPTT`'s steps.

For the calls made inside a step, the stateful layers' `unroll` is set by
the wrapper (unrolled over a span of static length, else not), and the
layers chosen for the fused kernel (`_fused.planned_path`) run
`tf.raw_ops.BlockLSTM`; the layers' own values come back when the step
ends. While a training window is traced, the path each layer takes is
recorded (`TruncatedBPTT.recurrence_paths`). Every change goes through
`core/_compat.py`.
"""

import contextlib

import keras

from keras_gradwatch.core import _compat
from keras_gradwatch.core import _state
from keras_gradwatch.tbptt import _fused


# Measured at 20 steps (forward + backward, batch 32, TF 2.21 CPU, 2 cores):
# unrolling a SimpleRNN(64) saves 0.7 ms per window for 0.02 s more trace,
# repaid within 30 windows (220 at 32 steps); unrolling a GRU or an LSTM
# (16-256 units) saves 0.4-2.4 ms per window for 0.3-0.8 s more trace,
# repaid only after 330-1500 windows: more than a first epoch of most fits
# (200 windows in the benchmark's), so their first epoch would pay a trace
# a plain `fit` does not (docs/benchmarks.md, "Tracing").
def unrolls_when_auto(layer):
    """Whether `unroll="auto"` unrolls `layer`'s static spans (of at most
    `_windows.AUTO_UNROLL_STEPS` steps): a `SimpleRNN`'s cell, whose
    unrolled trace is repaid within tens of windows."""
    return isinstance(getattr(layer, "cell", None), keras.layers.SimpleRNNCell)


class RecurrenceSwitch:
    """The recurrence switches of one wrapped model's stateful layers.

    Args:
        inner: The wrapped model.

    Attributes:
        paths: The path each stateful layer took in the traced training
            step of each window: `{key: {layer name: path}}` (key: see
            `_windows.WindowSchedule.key`), path
            `"fused"`, `"unrolled"` or `"loop"`.
    """

    def __init__(self, inner):
        self.inner = inner
        self.paths = {}
        self._depth = 0  # nesting of `unrolled`, across replicas
        self._saved = ()
        self._fused_layers = ()  # layers running BlockLSTM inside a step
        self._recording = None  # the window whose paths are being recorded

    @contextlib.contextmanager
    def unrolled(self, unroll, recurrence=None, auto=False):
        """Sets `unroll` on the stateful layers for the calls made inside
        (with `auto`, only on those `unrolls_when_auto` picks); the
        outermost use (a step) also runs the layers `recurrence` chooses for
        the fused kernel with it.

        The layers' own values come back when the outermost use ends. Under
        `MirroredStrategy` each replica's step runs in its own thread and
        they interleave at `merge_call`: a replica that enters second sees
        the first one's setting, not the layers' own, so it must not restore
        what it saw.
        """
        stateful = _state.stateful_layers(self.inner)
        layers = [layer for layer in stateful if hasattr(layer, "unroll")]
        if self._depth == 0:
            self._saved = tuple(layer.unroll for layer in layers)
            self._fused_layers = tuple(
                layer for layer in stateful
                if recurrence is not None and _fused.planned_path(layer, recurrence)[0]
            )
            for layer in self._fused_layers:
                _compat.shadow_inner_loop(layer, _fused.fused_inner_loop(layer, self._record_path))
        self._depth += 1
        previous = [layer.unroll for layer in layers]
        for layer in layers:
            _compat.set_unroll(layer, unroll and (not auto or unrolls_when_auto(layer)))
        try:
            yield
        finally:
            self._depth -= 1
            restore = previous if self._depth else self._saved
            for layer, value in zip(layers, restore):
                _compat.set_unroll(layer, value)
            if not self._depth:
                for layer in self._fused_layers:
                    _compat.unshadow_inner_loop(layer)
                self._fused_layers = ()

    def static_spans_help(self, unroll, recurrence):
        """Whether a span of static length changes how some stateful layer
        runs: `unroll=True`, or under `"auto"` a layer that runs fused or
        that `unrolls_when_auto` picks. If not, one traced step serves
        every window size (`_windows.WindowVariables`)."""
        if unroll is True:
            return True
        return unroll == "auto" and any(
            _fused.planned_path(layer, recurrence)[0] or unrolls_when_auto(layer)
            for layer in _state.stateful_layers(self.inner)
        )

    @contextlib.contextmanager
    def recording(self, key):
        """Records, under `key` (a window, see `_windows.WindowSchedule.key`),
        the path each stateful layer takes in the calls made inside (a
        training span being traced)."""
        self._recording = key
        fused = {id(layer) for layer in self._fused_layers}
        for layer in _state.stateful_layers(self.inner):
            if id(layer) not in fused:
                self._record_path(layer, False)
        try:
            yield
        finally:
            self._recording = None

    def _record_path(self, layer, fused):
        """Notes the path `layer` took in the training window being traced."""
        if self._recording is not None:
            path = "fused" if fused else ("unrolled" if layer.unroll else "loop")
            self.paths.setdefault(self._recording, {})[layer.name] = path
