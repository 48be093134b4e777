"""Private: when GradWatch measures and draws, and the time it may spend.

Two parts:

- `Budget`: the accounting of one run, in CPU time (one per `GradWatch`;
  a continued run folder resumes it from its summary, `Budget.resume`).
  It adds up the process CPU time spent in `fit` (over every `fit`
  call) and the CPU time spent inside the callback (`OwnTime`'s measure),
  and answers whether a measurement or a drawing fits within `overhead` of
  the training's. One-off costs (tracing a measurement) are waived, never
  charged: a short run must not pay for them with its later measurements.
- `MeasurementSchedule`: the measurement before the first update, always;
  then the steps where a measurement is most useful (log-spaced steps 1, 2,
  4, 8, ..., mid-epoch and each epoch end) whenever the budget allows one,
  and any other step when it allows one and a drawing; or, with `every=N`,
  every N steps. There is no floor: a measurement that costs many training
  steps waits until training has paid for it (a large model's measurement
  at 15 steps' cost and `overhead=0.03` comes about every 500 steps).

CPU, not wall-clock time: on a busy machine the wall clock of a step and of
a measurement both stretch, by different amounts, and the promise to the
user ("GradWatch costs at most 3 % of training") is about the work added.

Both are plain Python, driven by the callback with the step counts Keras
gives it; they take their clocks as arguments so that tests can drive them.
"""

import time

# The share of `overhead` measurements and drawings always get, even when
# the every-step checks alone take more than `overhead`.
MIN_SHARE = 1 / 3

# Until a drawing has been timed in this process: matplotlib's import and a
# first drawing of three small figures take about this long on a laptop.
DEFAULT_DRAW_SECONDS = 1.0

class Budget:
    """Time spent in `fit` and inside the callback, and what fits in it.

    Args:
        overhead: Share of the training's CPU time the callback may take.
        clock: Function returning the process's CPU seconds (default
            `time.process_time`), for the time in `fit`.
        wall_clock: Function returning wall-clock seconds (default
            `time.perf_counter`), for the age of the last drawing.
    """

    def __init__(self, overhead, clock=time.process_time, wall_clock=time.perf_counter):
        self.overhead = overhead
        self.clock = clock
        self.wall_clock = wall_clock
        self.spent = 0.0  # charged seconds inside the callback
        self.heavy_spent = 0.0  # ... of them in measurements and drawings
        self.waived = 0.0  # one-off seconds, not charged
        self.waived_cpu = 0.0  # ... of the process's CPU, taken out of the fit's too
        self.measure_seconds = None  # steady-state CPU cost of a measurement
        self.draw_seconds = None  # CPU cost of the last drawing
        self.drawn_at = None  # wall-clock time of the last drawing
        self._fit_seconds = 0.0  # over finished fits
        self._fit_start = None

    def resume(self, own_time):
        """Continues the accounting of a run folder from its summary's
        `own_time` (`OwnTime.totals`), not from this process's memory: the
        same whether the run was written by this process or another.

        The time in `fit` is the summary's; the one-off (tracing) time is
        waived as a measurement's is, its CPU or wall time, the longer; the
        rest of GradWatch's CPU time counts as charged, all of it as heavy
        work (the summary does not split it: the cautious reading). The
        costs of a measurement and a drawing are learnt again.
        """
        fields = ("fit_cpu_seconds", "cpu_seconds", "one_off_cpu_seconds")
        values = [(own_time or {}).get(field) for field in fields]
        if not all(isinstance(v, (int, float)) and v >= 0 for v in values):
            return
        fit, own, one_off = (float(v) for v in values)
        one_off_wall = own_time.get("one_off_seconds")
        self._fit_seconds = fit
        self.waived = max(one_off, float(one_off_wall)) \
            if isinstance(one_off_wall, (int, float)) else one_off
        self.spent = self.heavy_spent = max(own - one_off, 0.0)

    def start_fit(self):
        self._fit_start = self.clock()

    def end_fit(self):
        if self._fit_start is not None:
            self._fit_seconds += self.clock() - self._fit_start
            self._fit_start = None

    def elapsed(self):
        """CPU seconds spent in `fit` so far, over every `fit` call."""
        running = 0.0 if self._fit_start is None else self.clock() - self._fit_start
        return self._fit_seconds + running

    def allowance(self):
        """Seconds the callback may still spend on measuring and drawing:
        `overhead` x elapsed - spent, all its work counted; but at least
        `MIN_SHARE` x that for measurements and drawings alone, when its
        every-step checks take the whole share (a model whose steps take
        about 2 ms: the checks' 0.1-0.4 ms a step are 5-20 % by themselves,
        and it would never be measured)."""
        # The training's own CPU: tracing a measurement is no training.
        elapsed = max(self.elapsed() - self.waived_cpu, 0.0)
        return max(self.overhead * elapsed - self.spent,
                   MIN_SHARE * self.overhead * elapsed - self.heavy_spent)

    def charge(self, seconds, heavy=False):
        """Charges `seconds` of the callback; `heavy`: measuring or drawing."""
        self.spent += seconds
        if heavy:
            self.heavy_spent += seconds

    def waive(self, seconds, cpu_seconds=0.0):
        """Takes back a one-off cost of a measurement (tracing), charged or
        to be charged (the spent figures may dip below zero until the
        charge comes in); its `cpu_seconds` of the process's CPU are taken
        out of the time in `fit` as well."""
        self.spent -= seconds
        self.heavy_spent -= seconds
        self.waived += seconds
        self.waived_cpu += cpu_seconds

    def measured(self, seconds, traced, cpu_seconds=0.0):
        """Records a measurement's cost (`seconds` as charged, `cpu_seconds`
        of the process's CPU); a traced one's is waived."""
        if traced:
            self.waive(seconds, cpu_seconds)
        elif self.measure_seconds is None:
            self.measure_seconds = seconds
        else:
            # A moving average: one slow measurement (a busy machine) does
            # not stop the next ones for long.
            self.measure_seconds = 0.7 * self.measure_seconds + 0.3 * seconds

    def drew(self, seconds):
        self.draw_seconds = seconds
        self.drawn_at = self.wall_clock()

    def since_drawing(self):
        """Wall-clock seconds since the last drawing (infinite if none)."""
        return float("inf") if self.drawn_at is None else self.wall_clock() - self.drawn_at

    def draw_estimate(self):
        return DEFAULT_DRAW_SECONDS if self.draw_seconds is None else self.draw_seconds

    def can_measure(self, reserve_drawing=True):
        """Whether one more measurement fits, keeping room for a drawing."""
        cost = self.measure_seconds or 0.0
        reserve = self.draw_estimate() if reserve_drawing else 0.0
        return cost + reserve < self.allowance()

    def can_draw(self):
        return self.draw_estimate() <= self.allowance()


class MeasurementSchedule:
    """Which training steps get a measurement.

    Args:
        every: None (default schedule) or a positive int: measure at step 0
            and at every multiple of `every`, nothing else.

    With `every=None`, `due` returns a reason for:

    - `"start"`: step 0, before the first update (always);
    - `"mid-epoch"`: the step halfway through an epoch of known length,
      and `"early"`: steps 1, 2, 4, 8, 16, ... (log-spaced: training
      changes fastest at its start), when the budget allows one more, even
      if it takes the room kept for drawing;
    - `"budget"`: any other step, when the budget allows one more and keeps
      room for drawing the plots;

    and `epoch_end` `"epoch-end"` for the last step of an epoch when the
    budget allows one more (`due` leaves the last step of an epoch of known
    length to it: measured after the epoch's loss is in, the verdicts that
    need the loss trend see the measurement and the trend together). So a cheap measurement comes at least twice an
    epoch and at the log-spaced steps, an expensive one as often as
    training pays for it.
    """

    def __init__(self, every=None):
        self.every = every

    def due(self, step, previous, batch, steps_per_epoch, budget, reserve_drawing=True):
        """Why `step` needs a measurement, or None.

        Args:
            step: Training step just finished, counted over the whole run
                (0: before the first update).
            previous: The step checked before this one (-1 at the start);
                with `steps_per_execution > 1` Keras reports every few steps,
                and a scheduled step passed over in between still counts.
            batch: Index of that step's batch in its epoch, from 0.
            steps_per_epoch: Number of steps in the epoch, or None if not
                known.
            budget: The run's `Budget`.
            reserve_drawing: Keep room in the budget for one drawing.
        """
        if self.every is not None:
            return "every" if step // self.every > previous // self.every or step == 0 else None
        if step == 0:
            return "start"
        if steps_per_epoch and batch + 1 >= steps_per_epoch:
            return None  # `epoch_end` measures it, after the epoch's loss is in
        if budget.can_measure(False):
            if steps_per_epoch and steps_per_epoch >= 3:
                middle = (steps_per_epoch + 1) // 2  # batches done at mid-epoch
                done = batch + 1
                if done >= middle > done - (step - previous):
                    return "mid-epoch"
            if _power_of_two_in(previous + 1, step):
                return "early"
        if budget.can_measure(reserve_drawing):
            return "budget"
        return None

    def epoch_end(self, step, last_measured_step, budget):
        """Why the end of an epoch at `step` needs a measurement, or None."""
        if self.every is not None or step == last_measured_step:
            return None
        return "epoch-end" if budget.can_measure(False) else None


def _power_of_two_in(low, high):
    """Whether some power of two lies in [low, high] (integers, low >= 1)."""
    if high < max(low, 1):
        return False
    return 1 << (high.bit_length() - 1) >= max(low, 1)


class OwnTime:
    """GradWatch's own time and the time in `fit`, for the run's summary.

    Wall clock and CPU time from train begin to train end for `fit` (the
    process's CPU, all threads), and inside the callback's hooks (outermost
    calls only) for GradWatch. A hook's CPU time is the process's when it
    did heavy work (`heavy()`: a measurement or a drawing, which run on
    TensorFlow's or matplotlib's threads too), else its own thread's: the
    other threads' CPU during a light hook (reading the logs, writing a
    record) is TensorFlow's pool winding down after the step, or a
    `tf.data` pipeline, which run without GradWatch too (measured: a
    learning-rate read costs 33 µs alone, 200 µs of process CPU after a
    step). Unlike `Budget`, which waives one-off tracing, it counts every
    second: it says what GradWatch cost the run. Not counted: the global
    norm each training step computes for `grad_norm` (inside the compiled
    step, not separable) and plots drawn when the process exits (after
    every `fit`).

    Args:
        clock: Function returning wall-clock seconds.
        cpu_clock: Function returning the process's CPU seconds.
        thread_clock: Function returning the calling thread's CPU seconds.
    """

    FIELDS = ("seconds", "cpu_seconds", "fit_seconds", "fit_cpu_seconds", "one_off_seconds",
              "one_off_cpu_seconds")

    def __init__(self, clock=time.perf_counter, cpu_clock=time.process_time,
                 thread_clock=time.thread_time):
        self.clock = clock
        self.cpu_clock = cpu_clock
        self.thread_clock = thread_clock
        self._done = dict.fromkeys(self.FIELDS, 0.0)  # finished fits and blocks
        self._fit_start = None  # (wall, cpu) of the running fit
        self._entered = None  # (wall, cpu, thread cpu) of the open callback block
        self._heavy = False  # the open block measured or drew
        self.heavy_block = False  # ... the last block left
        self.block_wall = 0.0  # its wall-clock seconds

    def resume(self, earlier):
        """Takes the times of the run's earlier `fit` calls (a summary's
        `own_time`) as the totals so far: they hold this object's own
        finished fits too when it resumes a folder another writer continued."""
        for field in self.FIELDS:
            value = (earlier or {}).get(field)
            if isinstance(value, (int, float)) and value >= 0:
                self._done[field] = float(value)

    def start_fit(self):
        self._fit_start = (self.clock(), self.cpu_clock())

    def end_fit(self):
        if self._fit_start is not None:
            wall, cpu = self._since(self._fit_start)
            self._done["fit_seconds"] += wall
            self._done["fit_cpu_seconds"] += cpu
            self._fit_start = None

    def enter(self):
        """Starts a block inside the callback; False if one is open."""
        if self._entered is not None:
            return False
        self._entered = (self.clock(), self.cpu_clock(), self.thread_clock())
        self._heavy = False
        return True

    def heavy(self):
        """Marks the open block as doing heavy work: its process CPU counts."""
        self._heavy = True

    def leave(self):
        """Ends the open block; returns its CPU seconds (as counted).
        `heavy` then says whether it measured or drew."""
        wall, cpu = self._block(self._entered)
        self._entered = None
        self.heavy_block = self._heavy
        self.block_wall = wall
        self._done["seconds"] += wall
        self._done["cpu_seconds"] += cpu
        return cpu

    def one_off(self, seconds, cpu_seconds=0.0):
        """Notes the wall-clock and CPU seconds of a one-off cost (tracing a
        measurement), already counted in the block, so it can be told apart."""
        self._done["one_off_seconds"] += seconds
        self._done["one_off_cpu_seconds"] += cpu_seconds

    def totals(self):
        """The `own_time` of the summary: `seconds` and `cpu_seconds` inside
        GradWatch, `fit_seconds` and `fit_cpu_seconds` in `fit`, and
        `one_off_seconds` and `one_off_cpu_seconds` (part of the former:
        tracing), so far (the running fit and open block included)."""
        out = dict(self._done)
        if self._fit_start is not None:
            wall, cpu = self._since(self._fit_start)
            out["fit_seconds"] += wall
            out["fit_cpu_seconds"] += cpu
        if self._entered is not None:
            wall, cpu = self._block(self._entered)
            out["seconds"] += wall
            out["cpu_seconds"] += cpu
        return out

    def _since(self, start):
        return self.clock() - start[0], self.cpu_clock() - start[1]

    def _block(self, start):
        """`(wall, cpu)` of a block: process CPU if heavy, else the thread's."""
        wall, cpu = self._since(start)
        return wall, cpu if self._heavy else self.thread_clock() - start[2]
