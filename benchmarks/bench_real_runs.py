"""GradWatch on a corpus of realistic training scripts, against their known truth.

Each script of `benchmarks/real_runs/` (see `real_runs/_common.py`) imitates
a real Keras script on generated data and declares what a correct GradWatch
says about it. For each script this harness:

1. runs it twice, each in a fresh process with the same seed: plain, and
   with `GradWatch(<tmp>/gw)` in its callback list (every `GradWatch` the
   script creates is watched; nothing of the package is stubbed out);
2. compares the two runs: `History`, every step's logs, the final weights
   and optimizer variables (bit-identical expected; the largest absolute
   difference is printed). A run that GradWatch stopped (e.g. `nonfinite`
   -> "stop") is compared over the steps it made;
3. reads the run folder (`keras_gradwatch.records`): alerts per kind against
   the truth (false alarm / missed / ok; for a blow-up the step of the first
   alert against the first step whose loss is 10x its recent level), whether
   each model was measured (and the reason if not; a measurement whose
   global norm is 100x away from the training `grad_norm` is flagged as
   measuring something else), and
4. the time inside GradWatch (CPU time of the process while one of its
   callback methods runs, outermost calls) as a share of the CPU time inside
   `fit`; "steady" leaves out the measurements that traced (one-off cost);
   "own" is GradWatch's own account of it (`own_time` in summary.json,
   steady): a light hook counts its own thread's CPU, not the process's
   (TensorFlow's pool winding down after a step runs during it, with or
   without GradWatch), a measurement or drawing the process's.

and prints one table. Run it against any checkout:

    PYTHONPATH=<checkout> python benchmarks/bench_real_runs.py [--only NAME ...] [--quick]

Without PYTHONPATH the checkout holding this file is used. `--json PATH`
writes every figure; `--keep DIR` keeps the run folders, and `--rejudge DIR`
judges kept runs again without running anything; `--control` also runs
each script plain a second time, to show that the plain runs themselves
repeat bit for bit; `--parallel` runs the plain and the watched run of a
script side by side (faster; the default, one after the other, keeps
the timings cleaner). The whole corpus takes about 17 minutes on 2 cores.
"""

import argparse
import contextlib
import functools
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
GW_DIR = "gw"
# A measurement's global norm this many times away from the training
# grad_norm around it (either way) measures something else than the
# training loss (e.g. a stand-in for an add_loss objective). The probe batch
# is smaller than a training batch, so a few times larger is normal.
PLAUSIBLE_FACTOR = 100.0
# A loss this many times its recent level is a blow-up (issue 18's target).
JUMP_FACTOR = 10.0
RECENT_STEPS = 10
CHILD_TIMEOUT = 1800


# ----------------------------------------------------------------------------
# The child: runs one script, plain or watched, and writes what happened.
# ----------------------------------------------------------------------------


class _Clock:
    """Adds up CPU and wall time inside wrapped callables (outermost calls)."""

    def __init__(self, keep_calls=False):
        self.cpu = 0.0
        self.wall = 0.0
        self.calls = 0
        # With keep_calls: (epoch start, epoch end, cpu, wall) of each call.
        self.spans = [] if keep_calls else None
        self._depth = 0

    def wrap(self, method):
        @functools.wraps(method)  # signature kept: TruncatedBPTT.fit inspects Model.fit's
        def timed(*args, **kwargs):
            self._depth += 1
            cpu, wall, began = time.process_time(), time.perf_counter(), time.time()
            try:
                return method(*args, **kwargs)
            finally:
                self._depth -= 1
                if not self._depth:
                    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                    self.cpu += cpu
                    self.wall += wall
                    self.calls += 1
                    if self.spans is not None and wall > 0.05:  # the long calls only
                        self.spans.append((began, time.time(), cpu, wall))

        return timed


def _watch_methods(callback, clock):
    """Times every hook Keras calls on `callback`, and its probe-taking hook
    (called from inside the train function, not from a Keras hook)."""
    names = [n for n in dir(callback) if n.startswith("on_") and callable(getattr(callback, n))]
    for name in names:
        setattr(callback, name, clock.wrap(getattr(callback, name)))
    measurer = callback._engine.measurer  # the hook reads take_probe at train begin
    measurer.take_probe = clock.wrap(measurer.take_probe)


def _measurement_count(root):
    total = 0
    for path in pathlib.Path(root).rglob("measurements.jsonl"):
        total += sum(1 for line in path.read_text().splitlines() if line.strip())
    return total


def _step_log_class():
    import keras

    class StepLog(keras.callbacks.Callback):
        """Every step's logs and each fit's model, in both runs alike."""

        def __init__(self, watch_root):
            super().__init__()
            self.watch_root = watch_root
            self.step = 0
            self.steps = []
            self.fits = []

        def on_train_begin(self, logs=None):
            self.fits.append({"model": self.model.name, "first_step": self.step})

        def on_train_batch_end(self, batch, logs=None):
            self.step += 1
            record = {"step": self.step, "_batch": int(batch)}
            for key, value in (logs or {}).items():
                with contextlib.suppress(TypeError, ValueError):
                    record[key] = float(value)
            self.steps.append(record)

        def on_train_end(self, logs=None):
            fit = self.fits[-1]
            fit["last_step"] = self.step
            if self.watch_root is not None:
                fit["measurements_after"] = _measurement_count(self.watch_root)

    return StepLog


def _arrays(models):
    out = {}
    for i, model in enumerate(models):
        for j, variable in enumerate(model.weights):
            out[f"m{i}_w{j:03d}_{variable.path}"] = variable.numpy()
        optimizer = getattr(model, "optimizer", None)
        for j, variable in enumerate(optimizer.variables if optimizer is not None else []):
            out[f"m{i}_o{j:03d}_{variable.path}"] = variable.numpy()
    return out


def _history(history):
    return {k: [float(v) for v in values] for k, values in history.history.items()}


def child(name, mode, seed, out, quick):
    """Runs script `name` once and writes `result.json` and `weights.npz`."""
    import importlib

    import keras
    import numpy as np

    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    watch_root = out / GW_DIR if mode == "watched" else None
    result = {"name": name, "mode": mode, "seed": seed, "error": None}
    gw_clock, fit_clock = _Clock(keep_calls=True), _Clock()
    # The time inside fit, over every fit (outermost: TruncatedBPTT.fit
    # calls keras.Model.fit).
    keras.Model.fit = fit_clock.wrap(keras.Model.fit)
    step_log = _step_log_class()(watch_root)
    watches = []

    def callbacks():
        chosen = []
        if watch_root is not None:
            from keras_gradwatch import GradWatch

            watch = GradWatch(watch_root)
            _watch_methods(watch, gw_clock)
            watches.append(watch)
            chosen.append(watch)
        return chosen + [step_log]  # the step log after GradWatch: see fits

    keras.utils.set_random_seed(seed)
    outcome = None
    started = time.process_time()
    try:
        script = importlib.import_module(f"real_runs.{name}")
        result.update(truth=script.TRUTH.to_dict(), title=script.TITLE,
                      modelled_on=script.MODELLED_ON)
        outcome = script.run(callbacks, seed, quick=quick)
    except Exception:  # noqa: BLE001 - a crash is a finding, reported
        result["error"] = traceback.format_exc()
    import keras_gradwatch

    result.update(
        process_cpu_run=time.process_time() - started,
        fit_cpu=fit_clock.cpu, fit_wall=fit_clock.wall, fits_timed=fit_clock.calls,
        gw_cpu=gw_clock.cpu, gw_wall=gw_clock.wall, gw_calls=gw_clock.calls,
        gw_spans=gw_clock.spans,
        watches=len(watches), steps=step_log.steps, fits=step_log.fits,
        package=os.path.dirname(keras_gradwatch.__file__),
    )
    if outcome is not None:
        result["histories"] = [_history(h) for h in outcome.histories]
        result["models"] = [m.name for m in outcome.models]
        result["info"] = outcome.info
        np.savez(out / "weights.npz", **_arrays(outcome.models))
    (out / "result.json").write_text(json.dumps(result))


# ----------------------------------------------------------------------------
# The parent: runs the children, compares, judges, prints.
# ----------------------------------------------------------------------------


def _start_child(name, mode, seed, out, quick, env):
    """Starts one run in a new process; `_finish_child` waits for it."""
    out.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, str(pathlib.Path(__file__).resolve()), "--child", name,
               "--mode", mode, "--seed", str(seed), "--out", str(out)]
    if quick:
        command.append("--quick")
    with open(out / "stderr.txt", "w") as stderr:
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    return process, out, time.perf_counter()


def _finish_child(started):
    """Waits for a run; its result with the process's own CPU and wall time."""
    process, out, start = started
    deadline = start + CHILD_TIMEOUT
    while True:  # os.wait4 gives this child's own resource usage
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() > deadline:
            process.kill()
            pid, status, usage = os.wait4(process.pid, 0)
            break
        time.sleep(0.05)
    process.returncode = os.waitstatus_to_exitcode(status)
    stderr = (out / "stderr.txt").read_text(errors="replace")
    path = out / "result.json"
    result = json.loads(path.read_text()) if path.exists() else {
        "error": f"process exited {process.returncode}: {stderr[-3000:]}"}
    result["process_cpu"] = usage.ru_utime + usage.ru_stime
    result["process_wall"] = time.perf_counter() - start
    result["stderr_tail"] = stderr[-3000:]
    result["warnings"] = [line.strip() for line in stderr.splitlines()
                          if "GradWatch" in line and "Warning" in line][:20]
    path.write_text(json.dumps(result))  # what --rejudge reads back
    return result


def _run_pair(name, seed, folder, quick, env, parallel):
    """The plain and the watched run of a script, one after the other or
    side by side."""
    plain = _start_child(name, "plain", seed, folder / "plain", quick, env)
    if not parallel:
        plain = _finish_child(plain)
    watched = _finish_child(_start_child(name, "watched", seed, folder / "watched", quick, env))
    return (plain if not parallel else _finish_child(plain)), watched


def _load_child(out):
    path = out / "result.json"
    return json.loads(path.read_text()) if path.exists() else {
        "error": f"no result in {out}"}


def _max_abs(a, b):
    """Largest |a - b| over aligned arrays, NaN-aware (NaN vs NaN: equal;
    NaN vs a number: infinite); None when shapes differ."""
    import numpy as np

    a = np.atleast_1d(np.asarray(a, dtype="float64"))
    b = np.atleast_1d(np.asarray(b, dtype="float64"))
    if a.shape != b.shape:
        return None
    if a.size == 0:
        return 0.0
    both_nan = np.isnan(a) & np.isnan(b)
    with np.errstate(invalid="ignore"):
        diff = np.abs(a - b)
    diff[both_nan] = 0.0
    diff[np.isnan(diff)] = np.inf  # NaN against a number, or inf - inf
    same_inf = np.isinf(a) & (a == b)
    diff[same_inf] = 0.0
    return float(diff.max())


def compare(plain, watched, plain_dir, watched_dir):
    """History, step logs and final weights of the two runs."""
    import numpy as np

    report = {"history": None, "steps": None, "weights": None, "extra_keys": [],
              "stopped_early": False, "details": []}
    steps_p, steps_w = plain.get("steps", []), watched.get("steps", [])
    common = min(len(steps_p), len(steps_w))
    report["stopped_early"] = len(steps_w) < len(steps_p)
    worst, report["first_differing_step"] = 0.0, None
    for sp, sw in zip(steps_p[:common], steps_w[:common]):
        for key in sp:
            if key == "step" or key.startswith("_"):
                continue
            diff = _max_abs(sp[key], sw.get(key, float("nan")))
            if diff and report["first_differing_step"] is None:
                report["first_differing_step"] = sp["step"]
            worst = max(worst, diff)
    report["steps"] = worst if common else None
    if steps_w and steps_p:
        extra = sorted(set(steps_w[0]) - set(steps_p[0]))
        report["extra_keys"] = extra
    hp, hw = plain.get("histories"), watched.get("histories")
    if hp is not None and hw is not None and not report["stopped_early"]:
        worst, shapes = 0.0, True
        for a, b in zip(hp, hw):
            for key, values in a.items():
                diff = _max_abs(values, b.get(key, []))
                if diff is None:
                    shapes = False
                    report["details"].append(f"history '{key}': {len(values)} vs "
                                             f"{len(b.get(key, []))} values")
                else:
                    worst = max(worst, diff)
        report["history"] = worst if shapes and len(hp) == len(hw) else float("inf")
    wp, ww = plain_dir / "weights.npz", watched_dir / "weights.npz"
    if wp.exists() and ww.exists() and not report["stopped_early"]:
        with np.load(wp) as a, np.load(ww) as b:
            if sorted(a.files) != sorted(b.files):
                report["weights"] = float("inf")
                report["details"].append("different variables: "
                                         f"{sorted(set(a.files) ^ set(b.files))[:4]}")
            else:
                worst = 0.0
                for key in a.files:
                    diff = _max_abs(a[key], b[key])
                    if diff is None:
                        diff = float("inf")
                    if diff:
                        report["details"].append(f"{key}: max |diff| {diff:.3g}")
                    worst = max(worst, diff)
                report["weights"] = worst
    return report


def _loss_per_step(steps):
    """Each step's own loss, from Keras's running mean over the epoch
    (equal batch weights assumed: the scripts with a blow-up use full
    batches); the mean restarts at batch 0."""
    losses, previous, count = [], None, 0
    for record in steps:
        mean = record.get("loss")
        if record.get("_batch") == 0:
            previous, count = None, 0
        if mean is None:
            losses.append(None)
            continue
        count += 1
        losses.append(mean if previous is None else count * mean - (count - 1) * previous)
        previous = mean
    return losses


def first_jump(steps):
    """The first step whose own loss is not finite or >= JUMP_FACTOR x the
    median of the RECENT_STEPS steps before it (at least 3), or None."""
    import math
    import statistics

    losses = _loss_per_step(steps)
    for i, loss in enumerate(losses):
        if loss is None:
            continue
        if not math.isfinite(loss):
            return steps[i]["step"], loss
        recent = [v for v in losses[max(0, i - RECENT_STEPS):i] if v is not None]
        if len(recent) >= 3 and math.isfinite(statistics.median(recent)) and \
                loss >= JUMP_FACTOR * statistics.median(recent) > 0:
            return steps[i]["step"], loss
    return None, None


def read_runs(watched_dir):
    """Every run folder GradWatch wrote (the run, and any sub-run)."""
    from keras_gradwatch import records

    root = watched_dir / GW_DIR
    folders = sorted({p.parent for name in ("run.json", "summary.json")
                      for p in root.rglob(name)}) if root.exists() else []
    return [(folder, records.load_run(folder)) for folder in folders]


def _alert_text(alert):
    for key in ("advice", "suggestion", "suggestions"):
        value = alert.get(key)
        if value:
            return value if isinstance(value, str) else " ".join(map(str, value))
    return alert.get("message", "")


def _first_advice_ok(alert, words):
    """Whether the alert's first suggestion is about one of `words`: the
    earliest of them comes before any mention of clipping."""
    text = _alert_text(alert).lower()
    found = [text.find(w) for w in words if text.find(w) >= 0]
    if not found:
        return False
    clip = [i for i in (text.find("clip"),) if i >= 0]
    return not clip or min(found) < min(clip)


def judge_alerts(truth, runs, plain):
    """Counts per kind and the verdict against the truth."""
    counts, reported = {}, []
    for _, run in runs:
        summary = run.summary or {}
        for kind, count in (summary.get("alerts") or {}).items():
            counts[kind] = counts.get(kind, 0) + int(count or 0)
        for alert in run.alerts:
            reported.append(alert)
            kind = alert.get("kind")
            if kind not in (summary.get("alerts") or {}):
                counts[kind] = counts.get(kind, 0) + 1 + int(alert.get("suppressed") or 0)
    reported.sort(key=lambda a: a.get("step", 0))
    counts = {k: v for k, v in counts.items() if v}
    verdict = {"counts": counts, "problems": [], "first": None, "jump_step": None}
    false = {k: counts[k] for k in truth["forbid"] if counts.get(k) and k not in truth["detect"]}
    for kind, count in false.items():
        first = next(a for a in reported if a.get("kind") == kind)
        verdict["problems"].append(
            f"FALSE ALARM {kind} x{count} (first at step {first.get('step')}: "
            f"{first.get('message', '')[:160]})")
    if truth["verdict"] == "blow-up":
        jump, _ = first_jump(plain.get("steps", []))
        verdict["jump_step"] = jump
        hits = [a for a in reported if a.get("kind") in truth["detect"]]
        if not hits:
            verdict["problems"].append(
                f"MISSED: no {'/'.join(truth['detect'])} alert (loss jump at step {jump})")
        else:
            first = hits[0]
            verdict["first"] = {"kind": first.get("kind"), "step": first.get("step"),
                                "message": first.get("message", "")}
            if truth["by_loss_jump"] and jump is not None and first.get("step", 0) > jump:
                verdict["problems"].append(
                    f"LATE: first {first.get('kind')} at step {first.get('step')}, "
                    f"after the loss jump at step {jump}")
            if truth["advice"] and not _first_advice_ok(first, truth["advice"]):
                verdict["problems"].append(
                    f"ADVICE: first suggestion not about {truth['advice'][0]}: "
                    f"{_alert_text(first)[:200]}")
    return verdict


def _measurements_by_fit(watched, runs):
    """Measurement records of each fit, by the count after each fit."""
    records_ = [m for _, run in runs for m in run.measurements]
    out, before = [], 0
    for fit in watched.get("fits", []):
        after = fit.get("measurements_after", before)
        out.append((fit, records_[before:after]))
        before = after
    return out


def _one_line(text):
    """A message on one line, without terminal colour codes."""
    return " ".join(re.sub(r"\x1b\[[0-9;]*m", "", str(text)).split())


def judge_measured(truth, watched, runs, before_step=None):
    """Whether every model was measured on its loss, or said why not.

    A measurement is compared with the training `grad_norm` of the steps
    around it (same fit); with `before_step`, only measurements before that
    step (in a blow-up the norms swing by orders of magnitude per step)."""
    import math
    import statistics

    reasons = [_one_line(r) for _, run in runs for r in (
        (run.summary or {}).get("measurement_error"),
        (run.summary or {}).get("not_measured"),
    ) if r]
    norms = {r["step"]: r["grad_norm"] for r in watched.get("steps", [])
             if isinstance(r.get("grad_norm"), float) and math.isfinite(r["grad_norm"])}
    per_model, problems = {}, []
    for fit, measured in _measurements_by_fit(watched, runs):
        entry = per_model.setdefault(fit["model"], {"measurements": 0, "implausible": []})
        entry["measurements"] += len(measured)
        for record in measured:
            if before_step is not None and record["step"] >= before_step:
                continue
            norm = record.get("global_norm")
            near = [norms[s] for s in range(record["step"] - 5, record["step"] + 6)
                    if s in norms and fit["first_step"] < s <= fit.get("last_step", s)]
            if isinstance(norm, (int, float)) and near and norm > 0:
                ratio = norm / statistics.median(near)
                if not 1 / PLAUSIBLE_FACTOR <= ratio <= PLAUSIBLE_FACTOR:
                    entry["implausible"].append((record["step"], norm, statistics.median(near)))
    unmeasured = [m for m, e in per_model.items() if not e["measurements"]]
    implausible = {m: e["implausible"] for m, e in per_model.items() if e["implausible"]}
    for model, cases in implausible.items():
        step, norm, train = cases[0]
        problems.append(f"MEASURED SOMETHING ELSE on '{model}': {len(cases)} measurement(s) "
                        f"with global norm {norm:.3g} vs training grad_norm {train:.3g} "
                        f"(step {step})")
    if unmeasured:
        declared = truth["measured"] == "or-declared" and reasons
        if not declared:
            problems.append(f"NOT MEASURED: {', '.join(unmeasured)}"
                            + (f" (reason: {reasons[0][:160]})" if reasons else " (no reason)"))
    if not per_model:
        problems.append("NOT MEASURED: no fit recorded")
    good = sum(1 for m, e in per_model.items() if e["measurements"] and m not in implausible)
    status = "all" if per_model and good == len(per_model) else f"{good}/{len(per_model)}"
    return {"per_model": per_model, "status": status, "reasons": reasons,
            "problems": problems}


def overhead(watched, runs):
    """CPU time inside GradWatch as a share of the CPU time inside `fit`.

    "steady" leaves out the measurements that traced (a one-off cost): the
    wall seconds of each (from its record) converted to CPU seconds at the
    CPU/wall ratio of the GradWatch call it ran in."""
    fit = watched.get("fit_cpu") or 0.0
    gw, gw_wall = watched.get("gw_cpu") or 0.0, watched.get("gw_wall") or 0.0
    spans = watched.get("gw_spans") or []
    traced = traced_cpu = 0.0
    for _, run in runs:
        for record in run.measurements:
            if not record.get("traced"):
                continue
            seconds, at = float(record.get("seconds") or 0), record.get("time")
            traced += seconds
            span = next((s for s in spans if at is not None and s[0] <= at <= s[1] + 1e-3),
                        None)
            ratio = span[2] / span[3] if span and span[3] > 0 else (gw / gw_wall if gw_wall
                                                                     else 1.0)
            traced_cpu += seconds * ratio
    traced_cpu = min(traced_cpu, gw)
    # GradWatch's own account (summary.json `own_time`): light hooks at
    # their thread's CPU, measurements and drawings at the process's.
    own = [(run.summary or {}).get("own_time") or {} for _, run in runs]
    own_cpu = sum(float(o.get("cpu_seconds") or 0) - float(o.get("one_off_cpu_seconds") or 0)
                  for o in own)
    own_fit = sum(float(o.get("fit_cpu_seconds") or 0) for o in own)
    return {"own_steady_share": own_cpu / own_fit if own_fit else None,
            "gw_cpu": gw, "gw_wall": gw_wall, "fit_cpu": fit, "fit_wall": watched.get("fit_wall"),
            "traced_seconds": traced, "traced_cpu": traced_cpu,
            "share": gw / fit if fit else None,
            "steady_share": (gw - traced_cpu) / fit if fit else None,
            "measurements": sum(len(run.measurements) for _, run in runs)}


def evaluate(name, truth, plain, watched, plain_dir, watched_dir):
    row = {"name": name, "truth": truth, "problems": []}
    if plain.get("error"):
        row["problems"].append("PLAIN RUN FAILED: " + plain["error"].strip().splitlines()[-1])
    if watched.get("error"):
        row["problems"].append("CRASH with GradWatch: "
                               + _one_line(watched["error"].strip().splitlines()[-1]))
        row["crash"] = watched["error"]
    runs = read_runs(watched_dir)
    row["identity"] = compare(plain, watched, plain_dir, watched_dir)
    ident = row["identity"]
    if row.get("crash"):
        pass  # nothing to compare after a crash; steps before it are in the JSON
    elif not ident["stopped_early"]:
        worst = max((v for v in (ident["history"], ident["steps"], ident["weights"])
                     if v is not None), default=None)
        if worst is None or worst > 0:
            row["problems"].append(f"DIFFERS from the plain run (max |diff| {_fmt(worst)})")
    elif ident["steps"]:
        row["problems"].append(f"DIFFERS before the stop (max |diff| {_fmt(ident['steps'])})")
    row["alerts"] = judge_alerts(truth, runs, plain)
    row["problems"] += row["alerts"]["problems"]
    jump = row["alerts"]["jump_step"] if truth["verdict"] == "blow-up" else None
    row["measured"] = judge_measured(truth, watched, runs, before_step=jump)
    row["problems"] += row["measured"]["problems"]
    row["overhead"] = overhead(watched, runs)
    row["status"] = [(run.summary or {}).get("status") for _, run in runs]
    row["stopped_by_gradwatch"] = ident["stopped_early"]
    row["warnings"] = watched.get("warnings", [])
    row["info"] = plain.get("info")
    row["plain_loss"] = _loss_trend(plain)
    row["process_cpu"] = {"plain": plain.get("process_cpu"), "watched": watched.get("process_cpu")}
    row["ok"] = not row["problems"]
    return row


def _loss_trend(result):
    histories = result.get("histories") or []
    losses = [v for h in histories for v in h.get("loss", [])]
    val = [v for h in histories for v in h.get("val_loss", [])]
    return {"first": losses[0] if losses else None, "last": losses[-1] if losses else None,
            "val_first": val[0] if val else None, "val_last": val[-1] if val else None}


def _fmt(value, spec=".3g"):
    if value is None:
        return "-".rjust(int(re.match(r"\d*", spec).group() or 0))
    return format(value, spec)


# The verdict column's name for each kind of problem.
SHORT = {"CRASH": "CRASH", "FALSE": "FALSE", "MISSED": "MISSED", "LATE": "LATE",
         "ADVICE": "ADVICE", "DIFFERS": "DIFF", "NOT": "UNMEAS", "MEASURED": "STANDIN",
         "PLAIN": "PLAIN-FAIL"}


def print_table(rows):
    head = (f"{'script':<18} {'truth':<8} {'alerts (kind x count)':<30} {'verdict':<14} "
            f"{'identical':<10} {'measured':<9} {'GW CPU %':>9} {'steady %':>9} "
            f"{'own %':>7} {'fit CPU s':>9}  loss first->last")
    print(head)
    print("-" * len(head))
    for row in rows:
        counts = row["alerts"]["counts"]
        alerts = ", ".join(f"{k} x{v}" for k, v in sorted(counts.items())) or "none"
        kinds = [p.split()[0].rstrip(":") for p in row["problems"]]
        verdict = "ok" if row["ok"] else "+".join(dict.fromkeys(SHORT.get(k, k) for k in kinds))
        ident = row["identity"]
        if row.get("crash"):
            same = "crash"
        elif ident["stopped_early"]:
            same = "stop: " + ("same" if not ident["steps"] else "DIFF")
        else:
            values = [v for v in (ident["history"], ident["steps"], ident["weights"])
                      if v is not None]
            same = "yes" if values and max(values) == 0 else (
                "NO " + _fmt(max(values)) if values else "n/a")
        over = row["overhead"]
        share = None if over["share"] is None else 100 * over["share"]
        steady = None if over["steady_share"] is None else 100 * over["steady_share"]
        own = None if over.get("own_steady_share") is None else 100 * over["own_steady_share"]
        trend = row["plain_loss"]
        loss = f"{_fmt(trend['first'])}->{_fmt(trend['last'])}"
        if trend["val_last"] is not None:
            loss += f" (val {_fmt(trend['val_first'])}->{_fmt(trend['val_last'])})"
        measured = f"{row['measured']['status']} ({over['measurements']})"
        print(f"{row['name']:<18} {row['truth']['verdict']:<8} {alerts:<30} {verdict:<14} "
              f"{same:<10} {measured:<9} {_fmt(share, '9.2f')} "
              f"{_fmt(steady, '9.2f')} {_fmt(own, '7.2f')} {_fmt(over['fit_cpu'], '9.1f')}  {loss}")
    print()
    for row in rows:
        jump = row["alerts"]["jump_step"]
        first = row["alerts"]["first"]
        lines = list(row["problems"])
        if row["truth"]["verdict"] == "blow-up":
            lines.append(f"first 10x-loss step {jump}; first detecting alert "
                         + (f"{first['kind']} at step {first['step']}: {first['message'][:200]}"
                            if first else "none"))
        for name, entry in row["measured"]["per_model"].items():
            if len(row["measured"]["per_model"]) > 1 or not entry["measurements"]:
                lines.append(f"model '{name}': {entry['measurements']} measurement(s)")
        if row["measured"]["reasons"]:
            lines.append(f"declared unmeasured: {row['measured']['reasons'][0][:200]}")
        if row["identity"].get("first_differing_step") is not None:
            lines.append(f"step logs differ from step {row['identity']['first_differing_step']}")
        lines += row["identity"]["details"][:3]
        if lines:
            print(f"{row['name']}:")
            for line in lines:
                print(f"  - {line}")


def _env():
    """The children's environment: the chosen checkout first, then this
    folder (for `real_runs`), quiet TensorFlow."""
    env = dict(os.environ)
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p] or [str(ROOT)]
    env["PYTHONPATH"] = os.pathsep.join(paths + [str(HERE)])
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return env, paths


def _checkout_commit(paths):
    for path in paths:
        done = subprocess.run(["git", "-C", path, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True)
        if done.returncode == 0:
            dirty = subprocess.run(["git", "-C", path, "status", "--porcelain",
                                    "--untracked-files=no"], capture_output=True, text=True)
            return done.stdout.strip() + (" (with uncommitted changes)"
                                          if dirty.stdout.strip() else "")
    return "unknown"


def run_corpus(names, seed, quick, keep=None, control=False, echo=print, rejudge=False,
               parallel=False):
    """Runs the scripts and returns one row per script (see `evaluate`).

    With `rejudge`, runs nothing: judges the runs kept in `keep` by an
    earlier call (e.g. after changing what is checked). With `parallel`,
    the plain and the watched run of a script run side by side (faster on
    an idle machine; the time shares are each process's own)."""
    env, paths = _env()
    sys.path[:0] = [p for p in paths if p not in sys.path]  # records of that checkout
    rows = []
    base = pathlib.Path(keep) if keep else pathlib.Path(tempfile.mkdtemp(prefix="real_runs_"))
    try:
        for name in names:
            folder = base / name
            if rejudge:
                plain, watched = _load_child(folder / "plain"), _load_child(folder / "watched")
            else:
                if folder.exists():
                    shutil.rmtree(folder)
                plain, watched = _run_pair(name, seed, folder, quick, env, parallel)
            truth = plain.get("truth") or watched.get("truth") or {
                "verdict": "unknown", "detect": [], "forbid": [], "by_loss_jump": False,
                "advice": None, "measured": "all", "note": ""}
            row = evaluate(name, truth, plain, watched, folder / "plain", folder / "watched")
            row.update(title=plain.get("title"), modelled_on=plain.get("modelled_on"), seed=seed)
            if control and not rejudge:
                again = _finish_child(
                    _start_child(name, "plain", seed, folder / "plain2", quick, env))
                row["control"] = compare(plain, again, folder / "plain", folder / "plain2")
            rows.append(row)
            echo(f"[{name}] {'ok' if row['ok'] else '; '.join(row['problems'])[:300]} "
                 f"(plain {plain.get('process_wall', 0):.0f} s, watched "
                 f"{watched.get('process_wall', 0):.0f} s)", flush=True)
    finally:
        if not keep and not rejudge:
            shutil.rmtree(base, ignore_errors=True)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", help="scripts to run")
    parser.add_argument("--quick", action="store_true", help="small data, few epochs")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", metavar="PATH", help="write every figure here")
    parser.add_argument("--keep", metavar="DIR", help="keep the run folders in DIR")
    parser.add_argument("--control", action="store_true",
                        help="also rerun each script plain, to check it repeats")
    parser.add_argument("--parallel", action="store_true",
                        help="run the plain and the watched run side by side")
    parser.add_argument("--rejudge", metavar="DIR",
                        help="run nothing: judge the runs kept in DIR by --keep")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.mode, args.seed, args.out, args.quick)
        return None
    sys.path.append(str(HERE))
    from real_runs import SCRIPTS

    names = args.only or list(SCRIPTS)
    unknown = sorted(set(names) - set(SCRIPTS))
    if unknown:
        parser.error(f"unknown script(s) {unknown}; choose from {', '.join(SCRIPTS)}")
    env, paths = _env()
    commit = _checkout_commit(paths)
    print(f"keras_gradwatch from {paths[0]} at commit {commit}; seed {args.seed}"
          + (", quick" if args.quick else ""), flush=True)
    start = time.perf_counter()
    if args.rejudge:
        names = [n for n in names if (pathlib.Path(args.rejudge) / n).is_dir()]
    rows = run_corpus(names, args.seed, args.quick, keep=args.rejudge or args.keep,
                      control=args.control, rejudge=bool(args.rejudge),
                      parallel=args.parallel)
    print()
    print_table(rows)
    if args.control and not args.rejudge:
        print()
        for row in rows:
            c = row["control"]
            print(f"control {row['name']}: plain vs plain max |diff| history {c['history']}, "
                  f"steps {c['steps']}, weights {c['weights']}")
    failed = [row["name"] for row in rows if not row["ok"]]
    print(f"\n{len(rows) - len(failed)}/{len(rows)} scripts as their truth says"
          + (f"; not: {', '.join(failed)}" if failed else "")
          + f" ({time.perf_counter() - start:.0f} s)")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(
            {"commit": commit, "package": paths[0], "seed": args.seed, "quick": args.quick,
             "rows": rows}, indent=1, default=str))
    return rows


if __name__ == "__main__":
    main()
