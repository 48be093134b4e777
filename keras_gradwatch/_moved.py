"""Private: the documented import paths of the modules that moved into the
core and the wings.

`keras_gradwatch.records` is `keras_gradwatch.runs.records`,
`keras_gradwatch.callback` is `keras_gradwatch.watch.callback`, and so on
(`MOVED`): an import by the former path gets the module itself, not a copy,
and only when asked for, so that `keras_gradwatch.callback` still imports
Keras on first use only. `keras_gradwatch.tbptt` needs no entry: it is the
TBPTT wing, whose `TruncatedBPTT` loads `tbptt/model.py`.
"""

import importlib
import importlib.abc
import importlib.util
import sys

_PACKAGE = __name__.rsplit(".", 1)[0]

# Former name -> where the module lives now, in the package.
MOVED = {
    "alerts": "core.alerts",
    "callback": "watch.callback",
    "cli": "runs.cli",
    "depth": "core.depth",
    "errors": "core.errors",
    "inference": "tbptt.inference",
    "layers": "core.layers",
    "measurement": "core.measurement",
    "plots": "runs.plots",
    "records": "runs.records",
    "report": "runs.report",
    "stats": "core.stats",
    "streams": "tbptt.streams",
}


def install():
    """Lets Python find the former paths (once per process)."""
    if not any(isinstance(finder, _MovedFinder) for finder in sys.meta_path):
        # First: a finder of another copy of the package (an editable
        # install of another checkout) would find its former files instead.
        # It answers for the names of `MOVED` only.
        sys.meta_path.insert(0, _MovedFinder())


class _MovedFinder(importlib.abc.MetaPathFinder):
    """Finds `keras_gradwatch.<former name>` and nothing else."""

    def find_spec(self, fullname, path=None, target=None):
        package, _, name = fullname.rpartition(".")
        if package != _PACKAGE or name not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, _MovedLoader(f"{_PACKAGE}.{MOVED[name]}"))


class _MovedLoader(importlib.abc.Loader):
    """Loads a former path as the module where it lives now."""

    def __init__(self, where):
        self.where = where

    def create_module(self, spec):
        module = importlib.import_module(self.where)
        self.spec = module.__spec__
        return module

    def exec_module(self, module):
        # The import machinery set the former path's spec on the module:
        # the module keeps its own (its name, its file).
        module.__spec__ = self.spec
