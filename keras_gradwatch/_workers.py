"""Private: one GradWatch run over the workers of a multi-worker strategy.

Under `tf.distribute.MultiWorkerMirroredStrategy` with several workers, each
worker runs the same script, hence its own `GradWatch`. They make one run:

- only the chief (`strategy.extended.should_checkpoint`: task "chief", or
  worker 0 without one) writes the run folder the user named; every other
  worker keeps its records in a temporary folder of its own, deleted when
  the process ends, so that the user's folder is written once;
- the probe batch is the global one, gathered from every worker
  (`_probe`), and the measurements run at the same steps, so every worker
  computes the same numbers and raises the same alerts;
- the decisions that depend on one worker's clock (the measurement
  budget) are the chief's, and the alert actions (`stop`, `raise`, `clip`)
  are agreed after every step: if one worker takes one, all do, at that
  step. A worker left training alone would wait forever in the next
  gradient all-reduce.

The agreements are collective reductions of a few numbers, run eagerly by
every worker at the same points of `fit` (a collective one worker skips
would block the others).
"""

import shutil
import tempfile
import weakref

import tensorflow as tf

from keras_gradwatch import _compat


class Workers:
    """The workers of one multi-worker strategy, as one GradWatch sees them.

    Args:
        strategy: A strategy in multi-worker mode.
    """

    def __init__(self, strategy):
        self.strategy = strategy
        self.chief = bool(strategy.extended.should_checkpoint)
        self.agreements = 0  # collective reductions run (for the tests)

    def folder(self, owner):
        """A temporary folder for a non-chief worker's records, deleted when
        `owner` is collected or the process exits."""
        path = tempfile.mkdtemp(prefix="gradwatch-worker-")
        weakref.finalize(owner, shutil.rmtree, path, True)
        return path

    def agree(self, *flags, chief_decides=False):
        """Booleans agreed by every worker: each is True if it is on any
        worker (or, with `chief_decides`, on the chief)."""
        values = [float(bool(f)) if self.chief or not chief_decides else 0.0 for f in flags]
        # The mean over all replicas is above zero iff some worker sent 1.
        mean = self.strategy.reduce("MEAN", tf.constant(values, "float32"), axis=None)
        self.agreements += 1
        return tuple(bool(v > 0) for v in mean.numpy())

    def budget(self, budget):
        """`budget` whose `can_measure` is the chief's decision."""
        return _ChiefBudget(budget, self)


class _ChiefBudget:
    """A `Budget` whose measuring decisions are the chief's (its clock)."""

    def __init__(self, budget, workers):
        self._budget = budget
        self._workers = workers

    def can_measure(self, reserve_drawing=True):
        (decided,) = self._workers.agree(
            self._budget.can_measure(reserve_drawing), chief_decides=True)
        return decided

    def __getattr__(self, name):
        return getattr(self._budget, name)


def for_strategy(strategy):
    """`Workers` for a strategy in multi-worker mode, else None."""
    return Workers(strategy) if _compat.in_multi_worker_mode(strategy) else None
