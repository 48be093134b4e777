"""Two workers of a MultiWorkerMirroredStrategy on 127.0.0.1, against one
process: the same weights, one run folder, the same measurements, the same
alert action at the same step.

Each worker is a process of its own (`multi_worker_check.py`) with a
`TF_CONFIG` naming two free local ports; every process has a time limit and
is killed if the test leaves it running.
"""

import json
import os
import pathlib
import socket
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_gradwatch import records

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tests" / "multi_worker_check.py"
TIMEOUT = 120  # seconds per process
# Keras 3.8 keeps metric variables in sync on write, not on read: under two
# workers its loss metric (fit's loss, GradWatch's step loss) is not the
# single process's, though the training is (measured: epoch loss 0.855 vs
# 0.967). Keras 3.15 reads them in sync: the same loss.
LOCAL_METRICS = keras.version().startswith("3.8.")


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _start(case, log_dir, out, tf_config=None):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), case, str(log_dir), str(out)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )


def run_case(case, tmp_path):
    """Two workers and one single process of `case`, all at once; returns
    `(worker 0, worker 1, single)` results and the folders."""
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    folder, single_folder = tmp_path / "run", tmp_path / "single"
    outs = [tmp_path / f"out{i}.json" for i in range(3)]
    processes = []
    try:
        for index in range(2):
            config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
            processes.append(_start(case, folder, outs[index], config))
        processes.append(_start(case, single_folder, outs[2]))
        for process in processes:
            _, errors = process.communicate(timeout=TIMEOUT)
            assert process.returncode == 0, errors[-3000:]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    return [json.loads(out.read_text()) for out in outs], folder, single_folder


def _weights_diff(a, b):
    return max(float(np.max(np.abs(np.asarray(u) - np.asarray(v)))) for u, v in zip(a, b))


def _check_same_training(results, folder, single_folder, tolerance):
    first, second, single = results
    assert [first["replicas"], second["replicas"], single["replicas"]] == [2, 2, 1]
    assert [first["chief"], second["chief"], single["chief"]] == [True, False, None]
    # Float32 round-off only: a worker's gradient is the sum of two halves.
    assert _weights_diff(first["weights"], single["weights"]) <= tolerance
    assert _weights_diff(first["weights"], second["weights"]) == 0.0
    assert first["history"]["loss"] == second["history"]["loss"]
    assert first["records"]["step_loss"] == second["records"]["step_loss"]
    if not LOCAL_METRICS:
        np.testing.assert_allclose(first["history"]["loss"], single["history"]["loss"], rtol=1e-5)
        np.testing.assert_allclose(
            first["records"]["step_loss"], single["records"]["step_loss"], rtol=1e-5)
    # One run folder, written by the chief only; the other worker's records
    # went to a temporary folder of its own (deleted at its exit).
    assert first["log_dir"] == str(folder)
    assert second["log_dir"] != str(folder) and not pathlib.Path(second["log_dir"]).exists()
    run, alone = records.load_run(folder), records.load_run(single_folder)
    steps = [s["step"] for s in run.steps]
    assert steps == sorted(set(steps)) == [s["step"] for s in alone.steps]
    assert len(run.measurements) == len(alone.measurements) > 0
    for key in ("steps", "measurements", "status"):
        assert run.summary[key] == alone.summary[key], key
    # Both workers measured the same global probe batch at the same steps:
    # the same numbers, equal to one process's.
    assert first["records"] == second["records"] or _same_records(first, second, 0.0)
    _same_records(first, single, 1e-5)


def _same_records(one, other, rtol):
    a, b = one["records"], other["records"]
    assert [s[0] for s in a["steps"]] == [s[0] for s in b["steps"]]
    np.testing.assert_allclose([s[1] for s in a["steps"]], [s[1] for s in b["steps"]], rtol=rtol)
    assert [m[0] for m in a["measurements"]] == [m[0] for m in b["measurements"]]
    for m1, m2 in zip(a["measurements"], b["measurements"]):
        np.testing.assert_allclose(m1[1], m2[1], rtol=rtol)
        for name in m1[2]:
            np.testing.assert_allclose(m1[2][name], m2[2][name], rtol=rtol, atol=1e-12)
    return True


def test_two_workers_train_and_measure_as_one_process(tmp_path):
    results, folder, single_folder = run_case("plain", tmp_path)
    _check_same_training(results, folder, single_folder, 1e-6)
    # The budget is the chief's: agreed at every step (every=1 needs none)
    # and the alert actions after every step and epoch.
    assert results[0]["agreements"] == results[1]["agreements"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("case", ["tbptt", "clip"])
def test_two_workers_truncated_bptt_and_autoclip(case, tmp_path):
    results, folder, single_folder = run_case(case, tmp_path)
    _check_same_training(results, folder, single_folder, 1e-6)
    if case == "clip":  # clipped as in one process, at the same threshold
        (limit0, clipped0), (limit1, clipped1), (limit, clipped) = (r["clip"] for r in results)
        assert clipped0 == clipped1 == clipped > 0 and limit0 == limit1
        assert limit0 == pytest.approx(limit, rel=1e-5)


@pytest.mark.slow
def test_an_exploding_alert_stops_both_workers_at_one_step(tmp_path):
    results, folder, _ = run_case("stop", tmp_path)
    first, second, single = results
    assert first["alerts"] == second["alerts"] == single["alerts"]
    assert first["alerts"][0][0] == "exploding"
    assert first["stopped"] and second["stopped"] and single["stopped"]
    assert first["steps"] == second["steps"] == single["steps"] == first["alerts"][0][2]
    # The exploding step (gradient norm ~300) moved the weights by ~10:
    # its round-off (measured 3.1e-5) is relative to that.
    largest = max(float(np.max(np.abs(w))) for w in single["weights"])
    assert _weights_diff(first["weights"], single["weights"]) <= 1e-5 * largest
    assert records.load_run(folder).summary["status"] == "stopped"


@pytest.mark.slow
def test_the_chief_budget_schedules_both_workers(tmp_path):
    results, folder, _ = run_case("budget", tmp_path)
    first, second, _ = results
    # The steps measured follow the chief's CPU budget, on both workers.
    assert first["records"] == second["records"]
    assert len(records.load_run(folder).measurements) == len(first["records"]["measurements"])
    # Agreed at the budget's decisions too, beyond one per step and epoch end.
    assert first["agreements"] == second["agreements"] > first["steps"] + 2


# In this process: the pieces, without workers -------------------------------


def test_the_keras_fixes_are_for_several_tasks_and_can_be_undone():
    from keras_gradwatch.core import _compat

    def config(workers):
        cluster = {"worker": [f"127.0.0.1:{2000 + i}" for i in range(workers)]}
        return {"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker",
                                                                       "index": 0}})}

    assert _compat.multi_worker_config(config(2)) and not _compat.multi_worker_config(config(1))
    assert not _compat.multi_worker_config({}) and not _compat.multi_worker_config(
        {"TF_CONFIG": "not json"})
    trainer = _compat._trainer_class()
    module = sys.modules[trainer.__module__]

    def current():
        return vars(trainer)["_maybe_symbolic_build"], module.reduce_per_replica

    keras_own = current()
    try:
        assert _compat.fix_multi_worker()
        fixed = current()
        assert fixed[0] is not keras_own[0] and fixed[1] is not keras_own[1]
        assert _compat.fix_multi_worker() and current() == fixed  # once
        # Outside multi-worker mode they are Keras's own: a fit as usual.
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
        model.compile(optimizer="sgd", loss="mse")
        history = model.fit(np.ones((4, 3)), np.ones((4, 1)), verbose=0)
        assert np.isfinite(history.history["loss"][0])
    finally:
        _compat.unfix_multi_worker()
    assert current() == keras_own


class _FakeStrategy:
    """Two workers, one replica each: `reduce` averages this worker's values
    with the other's."""

    def __init__(self, chief, other):
        self.extended = type("Extended", (), {"should_checkpoint": chief})()
        self.other = other

    def reduce(self, op, values, axis):
        assert op == "MEAN" and axis is None
        return (values + self.other) / 2


def test_workers_agree_on_any_action_and_on_the_chief_decisions():
    import tensorflow as tf

    from keras_gradwatch.watch import _workers

    # The other worker sends: stop, no raise, no clip; budget allows, allows.
    other = tf.constant([1.0, 0.0, 0.0, 0.0, 0.0])
    for chief, budget, expected in ((True, [False, True], (False, True)),
                                    (False, [True, True], (False, False))):
        workers = _workers.Workers(_FakeStrategy(chief, other))

        class Budget:
            def can_measure(self, reserve_drawing=True, decisions=tuple(budget)):
                return decisions[reserve_drawing]

        assert workers.agree_actions(False, False, False, Budget()) == (True, False, False)
        # The budget's decisions are the chief's, whatever this worker's says.
        assert workers.allowed == expected
        agreed = workers.budget(Budget())
        assert (agreed.can_measure(False), agreed.can_measure(True)) == expected
    assert workers.agreements == 1
