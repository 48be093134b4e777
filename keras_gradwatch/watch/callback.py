"""`GradWatch`: the Keras callback that watches gradients during `fit`.

A thin adapter: it follows the Keras callback protocol (`on_train_begin`,
`on_epoch_begin`, `on_train_batch_end`, `on_epoch_end`, `on_train_end`) and
hands each moment to its run's engine (`_engine.WatchEngine`), which knows
no callback protocol. Its settings are one checked object
(`_settings.WatchSettings`, with its groups `Measuring` and `Alerting`),
whose fields are this class's keywords and its docstring's `Args`. It also starts a fresh run for another model
(`_model_runs`) or, under a multi-worker strategy, another worker
(`_workers`).
"""

import html
import warnings
import weakref

import keras

from keras_gradwatch.core import _compat
from keras_gradwatch.core import _probe
from keras_gradwatch.runs import records
from keras_gradwatch.watch import _engine
from keras_gradwatch.watch import _model_facts
from keras_gradwatch.watch import _model_runs
from keras_gradwatch.watch import _settings
from keras_gradwatch.watch import _workers

PLOT_MODES = _settings.PLOT_MODES
PROBE_ROWS = _probe.PROBE_ROWS


class GradWatch(keras.callbacks.Callback):
    """Watches gradients during `fit`: measures, alerts, keeps run records.

    Attach it to any Keras model (Sequential, functional or subclassed,
    recurrent or feed-forward) or to a `TruncatedBPTT` model:
    `model.fit(..., callbacks=[GradWatch("runs/exp1")])`. It needs nothing
    else: it takes its probe batch from the first training batch (its first
    16 sequences), or from `measuring=Measuring(probe_data=...)`.

    Its settings: a few keywords, and two groups, `Measuring` (what the
    measurements use) and `Alerting` (the detectors and their actions),
    small objects checked when made:
    `GradWatch("runs/exp1", alerting=Alerting(spike_factor=20))`. The
    former flat keywords (`spike_factor=20`) still work, deprecated.

    What it does:

    - at every step, cheap checks of the logs: a non-finite loss, a loss
      jump, and the global gradient norm `grad_norm` of the update (a spike,
      or a jump by orders of magnitude in the first steps). `TruncatedBPTT`
      logs `grad_norm` itself; for other models GradWatch adds it to the
      compiled train step (the norm of the gradients the optimizer applies,
      before clipping), so it is in every step's logs and in `History`;
    - measurements on the probe batch: global and per-layer gradient norms,
      and for recurrent layers the profile ‖∂L/∂h_t‖ against steps back from
      the loss with its statistics (see `keras_gradwatch.measure`). By
      default before the first update, then as often as keeps the
      callback's CPU time within `overhead` of the training's: first at
      steps 1, 2, 4, 8..., halfway through and at the end of every epoch,
      then at any step;
    - alerts (`"nonfinite"`, `"exploding"`, `"vanishing"`, `"truncation"`)
      that state the evidence they rest on, with a concrete suggestion,
      acted on per kind, rate-limited (see `keras_gradwatch.alerts` and
      docs/gradwatch.md);
    - run records in `log_dir` (see `keras_gradwatch.records`), and the plots
      and `report.html` drawn from them: at the end of a `fit` when the time
      budget allows (or it ended early), and in any case when the process
      exits; `draw()` draws them at any time. The summary says how long
      GradWatch itself took, and its share of the time in `fit`.

    Keys it adds to the logs, so to `History` (code that loops over
    `history.history` sees them next to the loss and metrics): `grad_norm`
    only, on models whose train step it can extend (stock `train_step`) and
    on `TruncatedBPTT` models (which also log `skipped_updates`, and
    `window` with `window="auto"`); per epoch, the value of the epoch's
    last step (Keras keeps a step's own logs as they are). The
    measurements (decay rate, horizon, probe-batch norms) are in the
    records and the report, not in the logs: a decay rate of 2.5 in the
    progress bar, without its profile and the alerts' verdict, reads as an
    alarm it is not.

    It changes nothing in training: weights after `fit` are the same with or
    without it (unless asked to: `clip="auto"`, and the `"clip"` and
    `"rollback"` actions, change training by design). Reused over several `fit` calls, it continues one run, with a
    continuing step count; a `log_dir` holding an earlier run is continued,
    never overwritten.

    {settings}

    Example:

    >>> import numpy as np, keras, tempfile
    >>> from keras_gradwatch import GradWatch, layers
    >>> model = keras.Sequential([keras.Input((20, 1)), layers.LSTM(4),
    ...                           keras.layers.Dense(1)])
    >>> model.compile(optimizer="adam", loss="mse")
    >>> x = np.random.rand(32, 20, 1).astype("float32")
    >>> y = x.sum(axis=1)
    >>> run = tempfile.mkdtemp()
    >>> history = model.fit(x, y, epochs=2, verbose=0,
    ...                     callbacks=[GradWatch(run)])
    >>> sorted(k for k in history.history)
    ['grad_norm', 'loss']
    >>> import os; sorted(f for f in os.listdir(run) if f.endswith("json"))
    ['run.json', 'summary.json']
    """

    def __init__(
        self,
        log_dir,
        *,
        every=None,
        overhead=0.03,
        measuring=None,
        alerting=None,
        plots="end",
        tensorboard=False,
        clip=None,
        **flat,
    ):
        # The keywords are `WatchSettings`'s fields (a test checks it); the
        # settings check themselves. `flat`: the former flat keywords
        # (`spike_factor=...`), deprecated, put into their groups.
        arguments = {k: v for k, v in locals().items()
                     if k not in ("self", "__class__", "flat")}
        settings, deprecated = _settings.from_flat(arguments, flat)
        for message in deprecated:
            warnings.warn(message, DeprecationWarning, stacklevel=2)
        _compat.require_tensorflow_backend("GradWatch")
        if _compat.multi_worker_config():  # fit needs them before any callback
            _compat.fix_multi_worker()
        super().__init__()
        self._model_runs = _model_runs.ModelRuns(log_dir)  # one run folder per model
        self._watched = None  # weak reference to the model this run records
        self._start_run(settings, alerts=[])

    def _start_run(self, settings, alerts):
        """A fresh run with `settings`: its engine, and the settings as
        attributes: the groups (`measuring`, `alerting`) and each setting
        under its former flat name (`log_dir`, `every`, `spike_factor`,
        ..., `clip` as `"auto"` or None, `clip_percentile`; `actions` is
        the action of every kind)."""
        self._settings = settings
        for name, value in settings.flat().items():
            setattr(self, name, value)
        self.measuring, self.alerting = settings.measuring, settings.alerting
        self.actions = settings.actions_by_kind
        self.alerts = alerts  # every reported Alert
        self._engine = _engine.WatchEngine(settings, alerts)

    @property
    def last_measurement(self):
        """The latest `Measurement` of the run, or None."""
        return self._engine.measurer.last

    # The Keras callback protocol ---------------------------------------------------

    def on_train_begin(self, logs=None):
        self._join_workers()
        self._follow_model()
        verbose = (self.params or {}).get("verbose")
        bar = verbose in (1, "auto") and keras.config.is_interactive_logging_enabled()
        steps = self.params.get("steps") if self.params else None
        self._engine.begin_fit(self.model, steps, bar)

    def on_epoch_begin(self, epoch, logs=None):
        self._engine.epoch_begin()

    def on_train_batch_end(self, batch, logs=None):
        self._engine.batch_end(batch, logs or {})

    def on_epoch_end(self, epoch, logs=None):
        self._engine.epoch_end(logs if logs is not None else {})

    def on_train_end(self, logs=None):
        self._engine.end_fit()

    # A non-chief worker's temporary folder (see `_join_workers`).
    _worker_folder = None

    def _join_workers(self):
        """Under a multi-worker strategy, only the chief writes `log_dir`:
        another worker keeps its records in a temporary folder (`_workers`)."""
        workers = _workers.for_strategy(self.model.distribute_strategy)
        if workers is not None and not workers.chief and self._worker_folder is None:
            folder = workers.folder(self)
            self._start_run(self._settings.replace(log_dir=folder, plots=None,
                                                   tensorboard=False), alerts=[])
            self._model_runs = _model_runs.ModelRuns(folder)
            self._watched = None
            self._worker_folder = folder
        self._engine.workers = workers

    def _follow_model(self):
        """A model other than the last `fit`'s gets a run of its own (see
        `_model_runs`): the same settings, a fresh state, its own folder."""
        inner = _model_facts.inner(self.model)
        folder, _ = self._model_runs.folder_for(inner)
        if self._watched is not None and self._watched() is not inner:
            workers = self._engine.workers
            self._start_run(self._settings.replace(log_dir=folder), alerts=self.alerts)
            self._engine.workers = workers
        self._watched = weakref.ref(inner)

    # Records and drawing --------------------------------------------------------

    def _repr_html_(self):
        """The run as a notebook shows it when a cell ends with the callback:
        its records so far, with the plots redrawn (see `records.Run`)."""
        if not self._engine.started:
            return (f"<p>GradWatch({html.escape(str(self.log_dir))}): no training "
                    "yet; add it to <code>fit(callbacks=[...])</code>.</p>")
        self._engine.recorder.write_summary(self.summary())
        self.draw()
        return records.load_run(self.log_dir).summary_html()

    def summary(self):
        """The run's figures, as written to `summary.json`.

        Computed from the records as they are written (`records.Totals`),
        with this callback's status and its count of every alert.
        """
        return self._engine.finishing.summary()

    def draw(self):
        """Draws the plots and `report.html` into `log_dir` now.

        `GradWatch` draws by itself (see `plots`); call this to look at a
        run between `fit` calls, e.g. in a notebook.

        Returns:
            The path of `report.html`, or None if drawing failed (a warning
            says why; the records are intact).
        """
        return self._engine.finishing.draw_now()


# The `Args` of the docstring are the settings' fields (`_settings.args_doc`).
GradWatch.__doc__ = GradWatch.__doc__.replace("    {settings}", _settings.args_doc())
