"""Private: one run folder per model that a `GradWatch` watches.

A callback list reused across models (a script that trains a linear model,
then a convolutional one, then several LSTMs, each with the same
`callbacks=[...]`) must not pool the figures of different models into one
run, nor measure a new model on the probe batch of the last one. The first
model a `GradWatch` sees is recorded in its `log_dir`; each other model gets
a run folder of its own, `log_dir/models/<k>-<model name>/`, a complete run
that every reader opens as it opens any run. `log_dir/models.json` lists
them all, the first included, in the order they were first trained.

A model trained again later (model A, then B, then A) continues its own
folder.
"""

import pathlib
import re
import warnings
import weakref

from keras_gradwatch.core.errors import RunRecordWarning
from keras_gradwatch.runs import records


class ModelRuns:
    """The run folder of each model one `GradWatch` has watched.

    Args:
        root: The `log_dir` the callback was given.
    """

    def __init__(self, root):
        self.root = pathlib.Path(root)
        self._runs = []  # (weak reference to the model, entry of models.json)

    def folder_for(self, model):
        """`(folder, known)`: the run folder of `model`, and whether it had
        one already (False: this call gives it one, and lists it)."""
        for ref, entry in self._runs:
            if ref() is model:
                return self.root / entry["folder"], True
        index = len(self._runs) + 1
        relative = "." if index == 1 else f"models/{index}-{_safe(model.name)}"
        self._runs.append((weakref.ref(model), {"index": index, "model": model.name,
                                                "folder": relative}))
        if index > 1:
            # A listing only once there is more than one model to list.
            writer = records.RunWriter(self.root)
            try:
                writer.write_json(records.MODELS, {"models": [e for _, e in self._runs]})
            except OSError as error:  # never break training: the runs are whole
                warnings.warn(f"GradWatch could not list the models' runs in "
                              f"'{self.root / records.MODELS}': {error}.",
                              RunRecordWarning, stacklevel=4)
        return self.root / relative, False


def _safe(name):
    """A model name as one plain folder-name component."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", str(name))[:64].strip(".") or "model"
