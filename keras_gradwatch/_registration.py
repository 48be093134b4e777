"""Private: registers the package's Keras objects once Keras is imported.

`import keras_gradwatch` does not import Keras (the records, plots and CLI
start fast without TensorFlow). But `keras.models.load_model` finds the
package's layers and `TruncatedBPTT` only once they are registered, i.e.
once their modules are imported. So: if Keras is already imported, they are
imported now; otherwise right after Keras itself is, by a one-shot import
hook (the post-import hook pattern of `wrapt`/PEP 369).
"""

import importlib
import importlib.abc
import sys

_MODULES = ("keras_gradwatch.core.layers", "keras_gradwatch.tbptt.model")


def register_when_keras_loads():
    if "keras" in sys.modules:
        _register()
    elif not any(isinstance(finder, _AfterKeras) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AfterKeras())


def _register():
    for module in _MODULES:
        try:
            importlib.import_module(module)
        except ImportError as error:
            # Keras was first imported by one of the package's own modules
            # (e.g. a private module imported on its own), which the module
            # to register imports back while it is half loaded (it is in
            # `sys.modules` already): that module registers itself when it
            # is imported later.
            half_loaded = error.name in sys.modules
            if not (half_loaded and error.name.startswith("keras_gradwatch.")):
                raise


class _AfterKeras(importlib.abc.MetaPathFinder):
    """Finds nothing itself: wraps the loader of `keras` so that the
    package's modules are imported once `keras` has finished loading."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "keras":
            return None
        sys.meta_path.remove(self)  # one shot; also avoids finding itself
        for finder in sys.meta_path:
            spec = finder.find_spec(fullname, path, target) if hasattr(finder, "find_spec") else None
            if spec is not None and spec.loader is not None:
                spec.loader = _Loader(spec.loader)
                return spec
        return None


class _Loader(importlib.abc.Loader):
    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        _register()
