"""The shared core: what both features and the run folders stand on.

The measurement (`measurement`: one probed forward/backward pass; `layers`
and `_probing`: the layers and tensors that make a state gradient
measurable; `_objective`, `_random_state`, `_residual`), the helpers on
models and batches (`_state`, `_sequence`, `_batch_plan`, `_probe`), the
Keras hooks (`_train_step`) and every use of Keras internals (`_compat`),
and the pure vocabulary every wing shares: `stats`, `depth`, `errors`,
`alerts` and the alert kinds with their detectors (`_detectors`), which the
run folders' readers read too.

Imports run one way: the wings (`tbptt`, `watch`, `runs`) import the core,
the core imports no wing. This package's `__init__` imports nothing, so
that the readers importing `stats`, `depth` or `alerts` stay free of
TensorFlow.
"""
