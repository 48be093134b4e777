"""Private: the probe batch that `GradWatch` measures on.

A run measures one batch all along, so that its profiles are comparable
from one measurement to the next: `probe_data` if given, else the first
`PROBE_ROWS` sequences of the first training batch. The batch lives on the
`GradWatch` that took it: a new `GradWatch` continuing a run folder takes
its own, as it would in a new process.
"""

import keras
import numpy as np
import tensorflow as tf

from keras_gradwatch.core import _compat

# Sequences of the first training batch that make the probe batch: enough
# for a mean profile, and a measurement's cost does not grow with the batch.
PROBE_ROWS = 16
# Probe batches replaced at most, in a run, when one measured nothing (all
# its sequences masked): data that is masked throughout gets no more tries.
RETAKES = 3

def from_batch(batch, strategy, rows=PROBE_ROWS):
    """`(x, y, sample_weight)`: the first `rows` sequences of a training
    batch (its sample weights include those `fit` makes of `class_weight`)."""
    return tuple(_first_rows(part, rows) for part in split(batch, strategy))


def split(data, strategy):
    """`(x, y, sample_weight)` of a batch, read as Keras reads `fit`'s data.

    Per-replica values (under `tf.distribute`) are put back together into
    the global batch, so that measurements match a single-device run.
    """
    if isinstance(data, (tuple, list)) and len(data) in (1, 2, 3):
        parts = keras.utils.unpack_x_y_sample_weight(tuple(data))
    else:
        parts = (data, None, None)
    return tuple(_global(part, strategy) for part in parts)


def is_finite(probe):
    """Whether every float value of the probe batch is finite."""
    return all(
        not np.issubdtype(np.asarray(leaf).dtype, np.floating)
        or np.isfinite(np.asarray(leaf)).all()
        for leaf in keras.tree.flatten(probe)
        if leaf is not None
    )


def is_empty(probe):
    """Whether every input value of the probe batch is zero (its sequences
    fully masked, as `Masking(0.0)` or `Embedding(mask_zero=True)` mask)."""
    leaves = [np.asarray(leaf) for leaf in keras.tree.flatten(probe[0]) if leaf is not None]
    return bool(leaves) and not any(np.any(leaf) for leaf in leaves)


def _first_rows(structure, rows):
    if structure is None:
        return None
    return keras.tree.map_structure(
        lambda t: t if t is None or len(t.shape) == 0 else t[:rows], structure
    )


def _global(structure, strategy):
    def gather(value):
        if isinstance(value, tf.distribute.DistributedValues):
            if _compat.in_multi_worker_mode(strategy):
                # Every worker's share, in replica order: the global batch
                # (a collective: every worker takes its probe at one step).
                return strategy.gather(value, axis=0)
            return tf.concat(strategy.experimental_local_results(value), axis=0)
        return value

    if structure is None:
        return None
    return keras.tree.map_structure(gather, structure)
