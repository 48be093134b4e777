"""GradWatch: the callback that watches gradients during `fit`.

`callback` (`GradWatch`, a thin adapter from the Keras callback protocol)
and its engine: `_engine` (one run, the moments of a fit), `_settings`
(the checked settings), `_measuring` (the probe batch, the measurements),
`_interventions` (clipping, rollback), `_finishing` (summary, end of a fit,
drawing), `_schedule` (when to measure, the time budget), `_checks` (the evidence the detectors
of `core._detectors` get), `_alerting` and `_advice` (from a finding to an
acted-on alert), `_autoclip`, `_rollback`, `_learning_rate` and
`_lr_history`, `_sanity`, `_model_facts`, `_model_runs`, and
the recorder that writes the run folder (`_recorder`, `_tensorboard`,
`_drawing`).

It imports the core and writes through `runs`; it never imports the
`tbptt` wing (a `TruncatedBPTT` is recognised through the core).
"""
