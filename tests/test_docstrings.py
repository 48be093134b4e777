"""Runs the examples of every public docstring, so they cannot rot."""

import doctest
import importlib
import pkgutil

import pytest

import keras_gradwatch

# The public modules where they live (the core and the wings), not the
# packages nor the alias modules that keep their former import paths.
MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(keras_gradwatch.__path__, "keras_gradwatch.")
    if not info.ispkg
    and info.name.count(".") == 2
    and not info.name.rsplit(".", 1)[1].startswith("_")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no docstring example"
    assert result.failed == 0, f"{result.failed} docstring example(s) failed"
