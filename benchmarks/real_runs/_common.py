"""What every script of the corpus shares: its declared truth and its outcome.

A script of the corpus is a module with:

- `TITLE`: one line saying what it trains;
- `MODELLED_ON`: the real script it imitates (e.g. a keras-io example);
- `TRUTH`: a `Truth`, what a correct GradWatch says about this run;
- `run(callbacks, seed, quick=False)`: builds the data and the model(s),
  trains, and returns an `Outcome`. `callbacks()` returns the callback list
  to pass to `fit`; the script calls it where its user would create the
  list (once for a list shared by every `fit`, or once per `fit`).

The harness (`benchmarks/bench_real_runs.py`) runs each script twice, with
and without `GradWatch` in that list, and judges the watched run against
`TRUTH`. Data is generated (seeded) in the format and, scaled down, the
sizes of the real script's dataset, with a signal a model can learn.
"""

import dataclasses

# The kinds a healthy run must never raise: each is a claim that training
# is failing.
FAILURE_KINDS = ("nonfinite", "exploding", "vanishing")


@dataclasses.dataclass(frozen=True)
class Truth:
    """What is known about a script's run, as the harness checks it.

    Attributes:
        verdict: `"healthy"` (the loss falls, nothing fails) or
            `"blow-up"` (the loss or the weights blow up).
        detect: For a blow-up: the alert kinds, any one of which counts as
            detecting it. Empty for a healthy run.
        forbid: Alert kinds that are false alarms on this run.
        by_loss_jump: For a blow-up: the first detecting alert must come at
            or before the first step whose loss is 10x its recent level
            (the median of the 10 steps before) or not finite.
        advice: For a blow-up: words the first detecting alert's first
            suggestion must be about (e.g. `("learning rate",
            "learning_rate")`: either), or None.
        measured: `"all"`: every model trained is measured on its real loss.
            `"or-declared"`: measured on its real loss, or declared
            unmeasurable with a reason (in `summary.json`).
        note: What the run shows, in a few words (printed with the table).
    """

    verdict: str
    detect: tuple = ()
    forbid: tuple = FAILURE_KINDS
    by_loss_jump: bool = False
    advice: tuple | None = None
    measured: str = "all"
    note: str = ""

    def to_dict(self):
        return dataclasses.asdict(self)


HEALTHY = Truth("healthy")


@dataclasses.dataclass
class Outcome:
    """What a script's `run` returns.

    Attributes:
        models: The Keras models trained, in training order (their final
            weights and optimizer variables are compared across runs).
        histories: The `History` of every `fit` call, in order.
        info: Free-form facts about the run worth printing (e.g. the loss
            a trivial predictor gets), JSON-serialisable.
    """

    models: list
    histories: list
    info: dict = dataclasses.field(default_factory=dict)
