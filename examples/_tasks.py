"""Synthetic tasks shared by the examples (no downloads needed)."""

import numpy as np


def adding_problem(num_sequences, length, seed=0):
    """Generates the adding problem (Hochreiter & Schmidhuber 1997).

    Each sequence holds random values in [0, 1] (feature 0) and two marker
    flags (feature 1); the target is the sum of the two marked values. One
    marker is in the first half of the sequence, one in the second. A model
    that ignores the inputs can do no better than predicting the mean, 1.0:
    a mean squared error of 1/6 ~ 0.167, the baseline.

    Args:
        num_sequences: Number of sequences.
        length: Time steps per sequence.
        seed: Random seed.

    Returns:
        `(x, y)`: `x` of shape `(num_sequences, length, 2)`, `y` of shape
        `(num_sequences, 1)`.
    """
    rng = np.random.default_rng(seed)
    x = np.zeros((num_sequences, length, 2), dtype="float32")
    x[..., 0] = rng.uniform(size=(num_sequences, length))
    rows = np.arange(num_sequences)
    first = rng.integers(0, length // 2, num_sequences)
    second = rng.integers(length // 2, length, num_sequences)
    x[rows, first, 1] = 1.0
    x[rows, second, 1] = 1.0
    y = (x[rows, first, 0] + x[rows, second, 0])[:, None]
    return x, y.astype("float32")


ADDING_BASELINE_MSE = 1.0 / 6.0


def sine_streams(num_streams, length, seed=0, noise=0.1):
    """Long noisy multi-frequency sine streams, one per row.

    Each stream sums three sines with periods drawn between 20 and 400
    steps and random phases, plus Gaussian noise.

    Returns:
        An array of shape `(num_streams, length)`.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(length)[None, :]
    signal = np.zeros((num_streams, length))
    for _ in range(3):
        period = rng.uniform(20, 400, size=(num_streams, 1))
        phase = rng.uniform(0, 2 * np.pi, size=(num_streams, 1))
        signal += np.sin(2 * np.pi * t / period + phase) / 3
    signal += rng.normal(0, noise, size=signal.shape)
    return signal.astype("float32")
