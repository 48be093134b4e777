"""The PyTorch side of `bench_tbptt.py versus`: the same work in PyTorch.

Run by the interpreter of an environment with torch installed (torch is
not a dependency of keras_gradwatch). Prints one JSON line: the seconds of
each epoch. Usage:

    python _torch_tbptt.py KIND UNITS WINDOW EPOCHS

The model is `nn.LSTM` or `nn.GRU` (batch first) + `nn.Linear(units, 1)`,
Adam (lr 1e-3), MSE; each batch of sequences starts from a zero state,
and after each window the state is detached: truncated BPTT with one
update per window, as `TruncatedBPTT(window=WINDOW)` trains.
"""

import json
import sys
import time

import numpy as np
import torch

BATCH, LENGTH, SEQUENCES, FEATURES = 32, 1000, 128, 8


def main(kind, units, window, epochs):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(SEQUENCES, LENGTH, FEATURES)).astype("float32")
    y = (np.cumsum(x[..., :1], axis=1) / np.sqrt(LENGTH)).astype("float32")
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    rnn = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[kind](
        FEATURES, units, batch_first=True
    )
    head = torch.nn.Linear(units, 1)
    params = list(rnn.parameters()) + list(head.parameters())
    optimizer = torch.optim.Adam(params, lr=1e-3)
    loss_fn = torch.nn.MSELoss()
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        for b in range(0, SEQUENCES, BATCH):
            state = None
            for begin in range(0, LENGTH, window):
                xw = x[b : b + BATCH, begin : begin + window]
                yw = y[b : b + BATCH, begin : begin + window]
                out, state = rnn(xw, state)
                loss = loss_fn(head(out), yw)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                state = (
                    tuple(s.detach() for s in state)
                    if isinstance(state, tuple)
                    else state.detach()
                )
        times.append(time.perf_counter() - start)
    print(json.dumps({"epochs_s": times}))


if __name__ == "__main__":
    kind, units, window, epochs = sys.argv[1:]
    main(kind, int(units), int(window), int(epochs))
