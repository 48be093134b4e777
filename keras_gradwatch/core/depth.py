"""The gradient across depth: what reaches each layer, from the output back.

A measurement (`keras_gradwatch.measure` with `gradient_norms=True`, and
every `GradWatch` measurement) records a `DepthProfile`: for every layer
with trainable weights, in the order the forward pass runs them (layers of
nested models and stacked recurrent layers each count, a wrapper such as
`Bidirectional` or a custom layer holding sublayers counts once), the
gradient that reaches the layer's output and its weights' gradient
relative to the weights.

This module is pure (NumPy only): the records, the plots and the
detectors read it without TensorFlow.
"""

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class DepthProfile:
    """The gradient reaching each layer of a model, input to output.

    Attributes:
        layers: Names of the layers, in execution order (the first layer
            run first; a shared layer's second call gets `#2`).
        output_grad: For each layer, the mean over the measured rows of the
            L2 norm of ∂ℓ_i/∂(layer output)_i, ℓ_i being row i's term of
            the training objective (the batch size times the batch-mean
            loss, so that each row keeps its own scale, as the time
            profiles do). Several outputs of one layer are one vector.
        weight_grad: For each layer, the L2 norm of the gradient of the
            training objective (the batch mean) with respect to its
            trainable weights.
        weight_norm: For each layer, the L2 norm of its trainable weights.
        outputs: For each layer, whether its output is an output of the
            model (the loss reads it directly).
        blocks: For each layer, the number of the residual block it lies
            in (1, 2, ... from the input; None outside any block), or ()
            when the model has none (a Sequential or subclassed model,
            records written before blocks were recorded). A block is what
            lies between a tensor read twice (a skip's source) and the
            layer joining the paths back (`Add`, `Concatenate`, ...) in a
            functional model; nested blocks: the innermost.

    Example:

    >>> profile = DepthProfile(("a", "b", "c"), np.array([1e-4, 0.1, 2.0]),
    ...                        np.array([1e-5, 0.01, 0.5]), np.ones(3),
    ...                        (False, False, True))
    >>> profile.reference
    1
    >>> [float(f) for f in profile.fractions()]
    [0.001, 1.0, 20.0]
    """

    layers: tuple
    output_grad: np.ndarray
    weight_grad: np.ndarray
    weight_norm: np.ndarray
    outputs: tuple
    blocks: tuple = ()

    def __len__(self):
        return len(self.layers)

    @property
    def weight_ratio(self):
        """‖∇w‖/‖w‖ of each layer (NaN where the weights are all zero)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = self.weight_grad / self.weight_norm
        return np.where(self.weight_norm > 0, ratio, np.nan)

    @property
    def reference(self):
        """The index of the layer the others are compared with: the last
        layer whose output is not a model output (the gradient that
        entered the network's body, past the output layer), or None when
        no layer after the first qualifies.

        The output layer itself is no reference: its output gradient is
        ∂L/∂ŷ, shaped by the output's activation and the loss (1/p for a
        cross-entropy on a probability p), not by depth.
        """
        for index in range(len(self.layers) - 1, 0, -1):
            if not self.outputs[index]:
                return index
        return None

    def fractions(self, values=None):
        """Each layer's `output_grad` (or `values`) over the reference's;
        NaN without a reference."""
        values = self.output_grad if values is None else np.asarray(values, "float64")
        index = self.reference
        if index is None or not values[index] > 0:
            return np.full(len(self.layers), np.nan)
        return values / values[index]

    def to_record(self):
        """The dict a measurement record holds (lists of numbers)."""
        return {
            "layers": list(self.layers),
            "output_grad": [float(v) for v in self.output_grad],
            "weight_grad": [float(v) for v in self.weight_grad],
            "weight_norm": [float(v) for v in self.weight_norm],
            "outputs": [bool(v) for v in self.outputs],
            **({"blocks": [None if b is None else int(b) for b in self.blocks]}
               if any(b is not None for b in self.blocks) else {}),
        }

    @classmethod
    def from_record(cls, record):
        """A `DepthProfile` from `to_record`'s dict (numbers may be the
        strings `"NaN"`, `"Infinity"` the records write), or None (also for
        a damaged one: a reader skips it rather than fail on it)."""
        if not isinstance(record, dict) or not isinstance(record.get("layers"), list):
            return None
        if not record["layers"]:
            return None
        try:
            return cls._parse(record, len(record["layers"]))
        except (TypeError, ValueError, AttributeError):
            return None

    @classmethod
    def _parse(cls, record, count):
        def numbers(key):
            values = record.get(key) or [None] * count
            if len(values) != count:
                raise ValueError(f"{key} has {len(values)} values for {count} layers")
            return np.array([np.nan if v is None else float(v) for v in values], "float64")

        blocks = tuple(None if b is None else int(b) for b in (record.get("blocks") or ()))
        outputs = tuple(bool(v) for v in (record.get("outputs") or [False] * count))
        if len(outputs) != count or len(blocks) not in (0, count):
            raise ValueError("outputs or blocks do not match the layers")
        return cls(
            layers=tuple(str(name) for name in record["layers"]),
            output_grad=numbers("output_grad"),
            weight_grad=numbers("weight_grad"),
            weight_norm=numbers("weight_norm"),
            outputs=outputs,
            blocks=blocks,
        )

    def finding(self, step=None):
        """The depth finding in numbers: the first layer's fraction of the
        reference layer, for both signals (JSON-ready; None: no reference).

        Args:
            step: The training step of the measurement, recorded as is.

        Returns:
            A dict: `step`, `layers` (how many), `first` and `reference`
            (names), `gradient_fraction` (`output_grad`) and
            `weight_ratio_fraction` (‖∇w‖/‖w‖), each the first layer's over
            the reference's (None where not a number); or None.
        """
        reference = self.reference
        if reference is None:
            return None

        def plain(value):
            value = float(value)
            return value if np.isfinite(value) else None

        return {
            "step": step,
            "layers": len(self.layers),
            "first": self.layers[0],
            "reference": self.layers[reference],
            "gradient_fraction": plain(self.fractions()[0]),
            "weight_ratio_fraction": plain(self.fractions(self.weight_ratio)[0]),
        }


def finding_text(finding):
    """`DepthProfile.finding` in one line (`"-"` for None), e.g. for the
    summary of a run.

    Example:

    >>> text = finding_text({"step": 300, "layers": 20, "first": "dense",
    ...                      "reference": "dense_18", "gradient_fraction": 1.2e-13,
    ...                      "weight_ratio_fraction": 3e-12})
    >>> print(text.replace(" (the", "\\n(the"))
    step 300: first layer 'dense' gets 1.2e-13 of the gradient reaching 'dense_18'
    (the reference, last before the output) and 3e-12 of its ‖∇w‖/‖w‖ (20 layers)
    """
    if not finding:
        return "-"
    return (f"step {finding.get('step')}: first layer '{finding.get('first')}' gets "
            f"{share_of(finding.get('gradient_fraction'))} the gradient reaching "
            f"'{finding.get('reference')}' (the reference, last before the output) and "
            f"{share_of(finding.get('weight_ratio_fraction'))} its ‖∇w‖/‖w‖ "
            f"({finding.get('layers')} layers)")


def share_of(value):
    """A ratio to the reference, in words before "the ...": `"1.2e-13 of"`
    below 1, `"57x"` (with a times sign) from 1 on, `"-"` for None.

    Example:

    >>> share_of(1.2e-13), share_of(57.3), share_of(None)
    ('1.2e-13 of', '57×', '-')
    """
    if value is None:
        return "-"
    return f"{value:.2g}×" if value >= 1 else f"{value:.2g} of"
