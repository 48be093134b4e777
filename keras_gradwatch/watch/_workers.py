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
- the alert actions (`stop`, `raise`, `clip`) are agreed after every step
  and epoch: if one worker takes one, all do, at that step (a worker left
  training alone would wait forever in the next gradient all-reduce); the
  same reduction carries the chief's measurement-budget decisions (they
  depend on its clock), which the next step's schedule uses on every worker.

An agreement is one collective reduction of five numbers, run eagerly by
every worker at the same points of `fit` (a collective one worker skips
would block the others): one per step and one per epoch end.
"""

import shutil
import tempfile
import time
import weakref

import tensorflow as tf

from keras_gradwatch.core import _compat


class Workers:
    """The workers of one multi-worker strategy, as one GradWatch sees them.

    Args:
        strategy: A strategy in multi-worker mode.
    """

    def __init__(self, strategy):
        self.strategy = strategy
        self.chief = bool(strategy.extended.should_checkpoint)
        self.agreements = 0  # collective reductions run, and their time
        self.seconds = 0.0
        # The chief's budget decisions `(can_measure(False), can_measure(True))`,
        # agreed after the last step: the next step's schedule reads them.
        self.allowed = None
        # Traced once: an eager collective costs 11 ms, a traced one 1.6 ms
        # (two workers on one machine).
        self._mean = tf.function(
            lambda values: strategy.reduce("MEAN", values, axis=None),
            input_signature=[tf.TensorSpec([None], tf.float32)],
        )

    def folder(self, owner):
        """A temporary folder for a non-chief worker's records, deleted when
        `owner` is collected or the process exits."""
        path = tempfile.mkdtemp(prefix="gradwatch-worker-")
        weakref.finalize(owner, shutil.rmtree, path, True)
        return path

    def agree(self, flags=(), chief_flags=()):
        """Booleans agreed by every worker, in one collective reduction:
        each of `flags` is True if it is on any worker, each of
        `chief_flags` if it is on the chief.

        Returns:
            `(flags, chief_flags)`, agreed, as tuples.
        """
        start = time.perf_counter()
        mine = [float(bool(f)) for f in flags]
        mine += [float(bool(f)) if self.chief else 0.0 for f in chief_flags]
        # The mean over all replicas is above zero iff some worker sent 1.
        mean = self._mean(tf.constant(mine, "float32"))
        agreed = tuple(bool(v > 0) for v in mean.numpy())
        self.agreements += 1
        self.seconds += time.perf_counter() - start
        return agreed[: len(flags)], agreed[len(flags):]

    def agree_actions(self, stop, raised, clip, budget):
        """`(stop, raised, clip)` agreed (on any worker), and the chief's
        budget decisions for the next step (one reduction a step)."""
        chief = (budget.can_measure(False), budget.can_measure(True)) if budget else ()
        agreed, allowed = self.agree((stop, raised, clip), chief)
        if budget is not None:
            self.allowed = allowed
        return agreed

    def budget(self, budget):
        """`budget` whose `can_measure` is the chief's decision, as agreed
        after the last step (agreed now if none was)."""
        return _ChiefBudget(budget, self)


class _ChiefBudget:
    """A `Budget` whose measuring decisions are the chief's (its clock)."""

    def __init__(self, budget, workers):
        self._budget = budget
        self._workers = workers

    def can_measure(self, reserve_drawing=True):
        workers = self._workers
        if workers.allowed is None:
            _, workers.allowed = workers.agree(
                (), (self._budget.can_measure(False), self._budget.can_measure(True)))
        return workers.allowed[bool(reserve_drawing)]

    def __getattr__(self, name):
        return getattr(self._budget, name)


def for_strategy(strategy):
    """`Workers` for a strategy in multi-worker mode, else None."""
    return Workers(strategy) if _compat.in_multi_worker_mode(strategy) else None
