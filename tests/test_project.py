"""Project-level checks: the README's commands, CI, examples, public API."""

import ast
import importlib.util
import os
import pathlib
import re
import subprocess
import sys

import pytest

import keras_gradwatch

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _readme_commands():
    text = (ROOT / "README.md").read_text()
    section = text.split("## Set up", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```\n(.+?)\n```", section)


def test_readme_has_exactly_two_setup_commands():
    commands = _readme_commands()
    assert len(commands) == 2
    demo, tests = commands
    assert "examples/" in demo and "pip install" in demo
    assert "pytest" in tests and "pip install" in tests


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert _readme_commands()[1] in ci.splitlines()


def test_public_api_is_declared():
    for name in keras_gradwatch.__all__:
        assert hasattr(keras_gradwatch, name)
    assert issubclass(
        keras_gradwatch.InvalidInputError, keras_gradwatch.KerasGradwatchError
    )
    assert issubclass(keras_gradwatch.InvalidInputError, ValueError)


def test_package_never_imports_private_keras():
    for path in (ROOT / "keras_gradwatch").rglob("*.py"):
        assert "keras.src" not in path.read_text(), path


def _private_accesses(path):
    """Private attributes read or set on objects other than the module's own
    (`self`, `cls`, `super()`) and the package's modules."""
    tree = ast.parse(path.read_text())
    own = {"self", "cls"}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("keras_gradwatch"):
            own.update(alias.asname or alias.name for alias in node.names)
    found = []
    for node in ast.walk(tree):
        name = None
        if isinstance(node, ast.Attribute):
            name, owner = node.attr, node.value
            if isinstance(owner, ast.Name) and owner.id in own:
                continue
            if isinstance(owner, ast.Call) and getattr(owner.func, "id", None) == "super":
                continue
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", None) in ("getattr", "setattr", "hasattr", "delattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
        ):
            name = node.args[1].value
        if name and name.startswith("_") and not name.startswith("__"):
            found.append(f"{path.name}:{node.lineno} {name}")
    return found


# The one module that may use Keras and TensorFlow internals.
COMPAT = ROOT / "keras_gradwatch" / "core" / "_compat.py"


def test_keras_internals_are_used_only_in_the_compat_module():
    found = []
    for path in sorted((ROOT / "keras_gradwatch").rglob("*.py")):
        if path != COMPAT:
            found += _private_accesses(path)
    assert not found, "private attributes used outside _compat.py: " + ", ".join(found)


# What the package changes on Keras objects it does not own: only through
# the hooks of `core/_compat.py`, each with the versions it was checked on.
HOOKED = {"apply", "train_function", "train_step", "learning_rate", "unroll", "stateful", "call",
          "inner_loop", "update_state"}


def _hooked_changes(path):
    """Sets and deletions of `HOOKED` attributes on objects other than the
    module's own (`self`, `cls`), by assignment or `setattr`/`delattr`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        targets = []
        if isinstance(node, (ast.Assign, ast.Delete)):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        for target in targets:
            if (isinstance(target, ast.Attribute) and target.attr in HOOKED
                    and not (isinstance(target.value, ast.Name) and target.value.id in ("self", "cls"))):
                found.append(f"{path.name}:{node.lineno} {target.attr}")
        if (isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("setattr", "delattr")
                and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)
                and node.args[1].value in HOOKED):
            found.append(f"{path.name}:{node.lineno} {node.args[1].value}")
    return found


def test_keras_objects_are_changed_only_through_the_hooks():
    found = []
    for path in sorted((ROOT / "keras_gradwatch").rglob("*.py")):
        if path != COMPAT:
            found += _hooked_changes(path)
    assert not found, "Keras objects changed outside core/_compat.py: " + ", ".join(found)


def test_the_hook_check_finds_what_it_looks_for(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "def f(model, layer, optimizer):\n"
        "    model.train_function = None\n"
        "    layer.unroll = True\n"
        "    del optimizer.apply\n"
        "    setattr(layer, 'stateful', False)\n"
        "    model.train_step = None\n"
        "class Own:\n"
        "    def g(self):\n"
        "        self.train_function = None\n"
    )
    assert sorted(_hooked_changes(sample)) == [
        "sample.py:2 train_function", "sample.py:3 unroll", "sample.py:4 apply", "sample.py:5 stateful",
        "sample.py:6 train_step"]


# State lives on objects: a module may hold constants, not registries. The
# two process-wide objects, each documented where it is defined.
PROCESS_WIDE = {
    "core/_probing.py OPEN",  # the probing session open in each thread (Keras calls the layers)
    "runs/_folder.py PROCESS_LOCKS",  # the folder locks this process holds (flock is per descriptor)
}
MUTABLE_CALLS = {"local", "Lock", "RLock", "WeakKeyDictionary", "WeakValueDictionary", "WeakSet",
                 "dict", "list", "set", "defaultdict", "OrderedDict", "deque", "Counter"}


def _module_state(path, relative):
    """Module-level names bound to an empty container, a mutable-state
    constructor (`threading.local()`, a weak dictionary, ...) or an instance
    of a class of the module."""
    tree = ast.parse(path.read_text())
    classes = {node.name for node in tree.body if isinstance(node, ast.ClassDef)}
    found = []
    for node in tree.body:
        if not isinstance(node, (ast.Assign, ast.AnnAssign)) or node.value is None:
            continue
        value = node.value
        empty = (isinstance(value, ast.Dict) and not value.keys) or (
            isinstance(value, (ast.List, ast.Set)) and not value.elts)
        called = None
        if isinstance(value, ast.Call):
            called = getattr(value.func, "attr", None) or getattr(value.func, "id", None)
        if empty or called in MUTABLE_CALLS or called in classes:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                name = f"{relative} {getattr(target, 'id', ast.unparse(target))}"
                if name not in PROCESS_WIDE:
                    found.append(f"{name} (line {node.lineno})")
    return found


def test_no_module_level_mutable_registries():
    package = ROOT / "keras_gradwatch"
    found = []
    for path in sorted(package.rglob("*.py")):
        found += _module_state(path, path.relative_to(package).as_posix())
    assert not found, "module-level mutable state (keep it on an object): " + ", ".join(found)


def test_the_module_state_check_finds_what_it_looks_for(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import threading, weakref\n"
        "class Box:\n"
        "    pass\n"
        "_local = threading.local()\n"
        "_by_model = weakref.WeakKeyDictionary()\n"
        "_seen = {}\n"
        "BOX = Box()\n"
        "KINDS = ('a', 'b')\n"
        "STYLE = {'a': 1}\n"
    )
    assert _module_state(sample, "sample.py") == [
        "sample.py _local (line 4)", "sample.py _by_model (line 5)", "sample.py _seen (line 6)",
        "sample.py BOX (line 7)"]


def test_the_private_access_check_finds_what_it_looks_for(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from keras_gradwatch import _state\n"
        "def f(model, t):\n"
        "    _state.recurrent_layers(model)\n"
        "    model._flatten_layers()\n"
        "    return getattr(t, '_keras_mask', None)\n"
    )
    assert sorted(_private_accesses(sample)) == ["sample.py:4 _flatten_layers", "sample.py:5 _keras_mask"]


# What each part of the package may import: the core no wing; the TBPTT and
# the watch wings never each other; the runs wing (no TensorFlow) the core only.
MAY_IMPORT = {
    "core": {"core"},
    "tbptt": {"core", "tbptt"},
    "watch": {"core", "watch", "runs"},
    "runs": {"core", "runs"},
}


def _package_imports(path):
    """The parts of the package (`core`, a wing, or a front-door module)
    that the module at `path` imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            parts = node.module.split(".")
            if parts[0] != "keras_gradwatch":
                continue
            if len(parts) > 1:
                found.add(parts[1])
            else:
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "keras_gradwatch":
                    found.add(parts[1] if len(parts) > 1 else "keras_gradwatch")
    return found


def test_imports_run_one_way_from_the_wings_to_the_core():
    wrong = []
    for part, allowed in MAY_IMPORT.items():
        for path in sorted((ROOT / "keras_gradwatch" / part).rglob("*.py")):
            for target in sorted(_package_imports(path) - allowed):
                wrong.append(f"{path.relative_to(ROOT)} imports {target}")
    assert not wrong, "imports against the direction of the tree: " + ", ".join(wrong)


def test_every_module_is_in_the_architecture_page():
    page = (ROOT / "docs" / "architecture.md").read_text()
    package = ROOT / "keras_gradwatch"
    missing = [
        str(path.relative_to(package))
        for path in sorted(package.rglob("*.py"))
        if f"`{path.relative_to(package).as_posix()}`" not in page
        and not (path.parent == package and f"`{path.name}`" in page)
    ]
    assert not missing, "modules missing from docs/architecture.md: " + ", ".join(missing)


def test_tensorflow_backend_is_required_with_a_clear_error():
    code = (
        "import keras\n"
        "from keras_gradwatch import GradWatch, TruncatedBPTT\n"
        "from keras_gradwatch.errors import InvalidInputError\n"
        "for make in (lambda: GradWatch('unused'),\n"
        "             lambda: TruncatedBPTT(keras.Sequential([keras.layers.Dense(1)]), window=5)):\n"
        "    try:\n"
        "        make()\n"
        "    except InvalidInputError as error:\n"
        "        print(error)\n"
    )
    backends = ["numpy"] + [b for b in ("jax", "torch") if importlib.util.find_spec(b)]
    for backend in backends:
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
            env={**os.environ, "KERAS_BACKEND": backend},
        )
        assert done.returncode == 0, done.stderr
        lines = done.stdout.strip().splitlines()
        assert len(lines) == 2, done.stdout
        for owner, line in zip(("GradWatch", "TruncatedBPTT"), lines):
            assert f"{owner} on the Keras backend '{backend}'" in line
            assert "KERAS_BACKEND=tensorflow" in line


def test_import_is_light_and_leaves_the_environment_alone():
    code = (
        "import os, sys\n"
        "before = dict(os.environ)\n"
        "import keras_gradwatch\n"
        "from keras_gradwatch import cli, plots, records, report\n"
        "print(sorted(m for m in ('tensorflow', 'keras', 'matplotlib') if m in sys.modules))\n"
        "print(dict(os.environ) == before)\n"
        "print(callable(keras_gradwatch.GradWatch), 'tensorflow' in sys.modules)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:3] == ["[]", "True", "True True"]


def test_a_private_module_imported_first_imports():
    # Its `import keras` registers the package's objects, whose module
    # imports it back while it is half loaded: that registration waits for
    # the model's own import (which registers it).
    code = (
        "import keras_gradwatch.tbptt._windowed_training\n"
        "import keras\n"
        "from keras_gradwatch import TruncatedBPTT\n"
        "print(keras.saving.get_registered_object('keras_gradwatch>TruncatedBPTT'))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "keras_gradwatch.tbptt.model.TruncatedBPTT" in done.stdout


@pytest.mark.slow
@pytest.mark.parametrize(
    "script, labels",
    [
        ("bench_tbptt.py", ("b/a =", "b/c =", "char-level LM, window 100, wall time",
                            "char-level LM, window 20, cpu time", "memory ratio", "compile ratio",
                            "versus LSTM(8) window 50", "wall LSTM(64) window 20",
                            "paths LSTM(8) window 50: loop")),
        ("bench_measure.py", ("vs train_on_batch", "vs one fit step")),
        ("bench_auto_window.py", ("lag-adding, L = 10", "lag-adding, L = 50", "auto/best val loss")),
        ("bench_gradwatch.py", ("step overhead ratio", "overhead ratio", "time inside GradWatch")),
        ("bench_real_usage.py", ("(a) keras-io", "(b) one fit", "(c) TruncatedBPTT",
                                 "wall-time ratio", "exploding over all runs: 0")),
    ],
)
def test_benchmark_script_quick(script, labels):
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--quick"],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    ).stdout
    for label in labels:
        assert label in out, (script, label, out)


def test_code_is_clean_under_the_linter():
    done = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--output-format", "concise", str(ROOT)],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_ci_tests_the_oldest_supported_versions():
    oldest = dict(
        line.split("==") for line in (ROOT / ".ci" / "oldest.txt").read_text().splitlines()
        if line and not line.startswith("#")
    )
    pyproject = (ROOT / "pyproject.toml").read_text()
    for package, version in oldest.items():
        floor = ".".join(version.split(".")[:2])
        assert f'"{package}>={floor}"' in pyproject, (package, floor)
    assert ".ci/oldest.txt" in (ROOT / ".ci" / "run").read_text()
