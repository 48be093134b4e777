"""Stores the step records (loss, grad_norm, lr) of kept run folders as a
test fixture: `tests/data/step_series.npz`, one array of shape (steps, 3)
per run, named `<truth>__<name>` (truth: `healthy` or `blowup`).

The step detectors are tested on these real series (`tests/core/test_detectors.py`):
no finding on a healthy run, a finding where a blow-up shows.

    python benchmarks/bench_real_runs.py --keep KEEP   # the corpus
    python tools/heavy_tailed_runs.py MLPS             # healthy heavy tails
    python tools/step_series.py healthy:padded_text=KEEP/padded_text/watched/gw \
        healthy:mlp_separable_sgd=MLPS/separable_sgd:1875 ... blowup:relu_rnn=...

(`:N` keeps the first N steps.) The stored file was made at commit 5ef4601
from the corpus (seed 1) and these MLP runs.
"""

import argparse
import pathlib

import numpy as np

from keras_gradwatch import records


def series(folder, limit=None):
    """`(steps, 3)` float32: loss, grad_norm, lr per step (NaN if missing)."""
    run = records.load_run(folder)
    rows = []
    for step in run.steps[:limit]:
        rows.append([records.number(step.get(key)) if step.get(key) is not None else np.nan
                     for key in ("loss", "grad_norm", "lr")])
    return np.asarray(rows, dtype="float32")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="truth:name=folder[:steps]")
    parser.add_argument("-o", "--output", default="tests/data/step_series.npz")
    args = parser.parse_args(argv)
    arrays = {}
    for spec in args.runs:
        label, folder = spec.split("=", 1)
        truth, name = label.split(":")
        limit = None
        if folder.rsplit(":", 1)[-1].isdigit():
            folder, limit = folder.rsplit(":", 1)
            limit = int(limit)
        arrays[f"{truth}__{name}"] = series(pathlib.Path(folder), limit)
    np.savez_compressed(args.output, **arrays)
    for key, value in arrays.items():
        print(f"{key}: {value.shape[0]} steps")


if __name__ == "__main__":
    main()
