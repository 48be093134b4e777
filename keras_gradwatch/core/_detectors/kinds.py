"""Private: the registry of alert kinds, the one list every reader reads.

Each kind is a `KindSpec`: its name, its default action, what it means, the
colour and marker it is drawn with, the actions it takes beyond `"warn"`,
`"stop"` and `"raise"`, and the detectors that raise it (modules of this
package, loaded by `GradWatch`'s checks). `alerts.KINDS` and
`alerts.DEFAULT_ACTIONS`, `alerts.resolve_actions`, the alert counts of
`summary.json` (`records`), the alert markers of the plots (`plots`) and
the CSS of the report (`_html`, `report`) are all derived from `KINDS`.

Adding a kind is one entry here and one detector module next to this one
(see `base.Detector`). This module imports nothing, so that the readers
(records, plots, report, CLI) stay free of TensorFlow and NumPy.
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class KindSpec:
    """One kind of alert.

    Attributes:
        name: The kind, as in `Alert.kind` and `alerts.jsonl`.
        default_action: `GradWatch`'s action when none is passed.
        description: What an alert of this kind claims, in one sentence.
        color: Hex colour of its markers (plots) and its name (HTML).
        marker: matplotlib marker of its alerts on the norms plot.
        extra_actions: Actions it takes beyond `"warn"`, `"stop"`,
            `"raise"`, a callable and None.
        detectors: Its detectors, as `"module.Class"` in this package.
        consequence: Whether its findings are reported after the other
            kinds' findings of the same moment (a non-finite value is the
            consequence of the exploding gradient found at the same step).
    """

    name: str
    default_action: str
    description: str
    color: str
    marker: str
    extra_actions: tuple = ()
    detectors: tuple = ()
    consequence: bool = False


KINDS = (
    KindSpec(
        "nonfinite", "stop",
        "NaN or Inf in the loss, the gradient norm or the measured gradients, "
        "or an update skipped for non-finite gradients.",
        "#b00020", "X",
        extra_actions=("rollback",),
        detectors=("nonfinite.NonFiniteStep", "nonfinite.NonFiniteProbe",
                   "nonfinite.NonFiniteProfile"),
        consequence=True,
    ),
    KindSpec(
        "exploding", "warn",
        "A gradient blow-up: a loss jump, a norm spike followed by a rising or "
        "non-finite loss, an overflow, a recurrence that amplifies gradients, "
        "a gradient that grows by orders of magnitude toward the input layers, "
        "or updates that rewrite a layer.",
        "#c55a00", "^",
        extra_actions=("clip", "rollback"),
        detectors=("spikes.Spikes", "nonfinite.ProbeOverflow", "growth.GrowthInTime",
                   "update_ratio.UpdateRatio", "depth.DepthGrowth"),
    ),
    KindSpec(
        "vanishing", "warn",
        "The far end of a measured profile, in time or across depth (the first "
        "layers), gets almost none of the gradient while the loss has stalled.",
        "#6a3d9a", "v",
        detectors=("vanishing.VanishingTail", "depth.DepthVanishing"),
    ),
    KindSpec(
        "truncation", "warn",
        "Truncated BPTT cuts off most of the measured gradient while the loss "
        "has stalled.",
        "#00838f", "s",
        detectors=("truncation.TruncationBias",),
    ),
)

NAMES = tuple(spec.name for spec in KINDS)


def spec(name):
    """The `KindSpec` named `name`, or None for a kind not registered (an
    older or newer run's records)."""
    for kind in KINDS:
        if kind.name == name:
            return kind
    return None


def css(scope=""):
    """The CSS rules that colour each kind's name, e.g. in alert tables.

    Args:
        scope: A selector prefix, e.g. `".gw-run "`.

    Example:

    >>> css(".x ").splitlines()[0]
    '.x .nonfinite { color: #b00020; }'
    """
    return "\n".join(f"{scope}.{kind.name} {{ color: {kind.color}; }}" for kind in KINDS)
