"""Tests of `keras_gradwatch.watch._schedule`: when to measure, what it may cost."""

import pytest

from keras_gradwatch.watch._schedule import Budget
from keras_gradwatch.watch._schedule import MeasurementSchedule
from keras_gradwatch.watch._schedule import OwnTime


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def run_schedule(schedule, budget, epochs, steps_per_epoch, every_call=1, known=True,
                 step_seconds=0.0, measure_seconds=0.0):
    """Drives the schedule as the callback does, each step taking
    `step_seconds` of the budget's clock and each measurement charging
    `measure_seconds`; returns [(step, reason)]."""
    def measure(step, reason):
        measured.append((step, reason))
        if measure_seconds:
            budget.measured(measure_seconds, traced=False)
            budget.charge(measure_seconds, heavy=True)

    measured, step, last = [], 0, 0
    budget.start_fit()
    measure(0, schedule.due(0, -1, -1, None, budget))
    for _ in range(epochs):
        batch = -1
        while batch + 1 < steps_per_epoch:
            advance = min(every_call, steps_per_epoch - 1 - batch)
            previous, step, batch = step, step + advance, batch + advance
            budget.clock.now += step_seconds * advance
            reason = schedule.due(
                step, previous, batch, steps_per_epoch if known else None, budget
            )
            if reason:
                measure(step, reason)
                last = step
        reason = schedule.epoch_end(step, last, budget)
        if reason:
            measure(step, reason)
            last = step
    return measured


def test_without_budget_only_the_start_is_measured():
    budget = Budget(0.03, clock=Clock())  # no time in fit: nothing to spend
    measured = run_schedule(MeasurementSchedule(), budget, epochs=2, steps_per_epoch=20)
    assert measured == [(0, "start")]


@pytest.mark.parametrize("epochs", [1, 3, 10])
def test_a_cheap_measurement_comes_twice_an_epoch_and_early(epochs):
    # A measurement at 10 % of a step: 3 % of 500 steps pays for 150.
    budget = Budget(0.03, clock=Clock())
    measured = run_schedule(MeasurementSchedule(), budget, epochs, steps_per_epoch=500,
                            step_seconds=0.1, measure_seconds=0.01)
    steps = {s for s, _ in measured}
    for epoch in range(epochs):  # halfway and at the end (by any reason)
        assert {500 * epoch + 250, 500 * epoch + 500} <= steps
    # Step 4 has not yet paid for the start's measurement (0.012 s of 0.01 + 0.01).
    assert [s for s, r in measured if r == "early"][:4] == [8, 16, 32, 64]
    assert budget.spent <= 0.03 * budget.elapsed()


def test_an_expensive_measurement_waits_until_training_paid_for_it():
    # A measurement costing 15 steps, 3 %: one every 500 steps, no floor
    # (it used to be measured twice an epoch of 100 steps: 30 %).
    budget = Budget(0.03, clock=Clock(), wall_clock=Clock())
    budget.drew(0.0)  # room for drawing is not what limits here
    measured = run_schedule(MeasurementSchedule(), budget, 20, steps_per_epoch=100,
                            step_seconds=0.1, measure_seconds=1.5)
    steps = [s for s, _ in measured]
    # The start's cost is repaid first (1,000 steps), then one every 500.
    assert steps == [0, 1001, 1501]
    assert budget.spent <= 0.03 * budget.elapsed() + 1e-9


def test_early_steps_come_first_in_the_budget():
    clock = Clock()
    budget = Budget(0.03, clock=clock)
    budget.start_fit()
    budget.measured(0.001, traced=False)
    schedule = MeasurementSchedule()
    clock.now = 1.0  # 0.03 s allowed: not enough to keep 1 s for drawing
    assert schedule.due(5, 4, 4, 100, budget) is None
    assert schedule.due(8, 7, 7, 100, budget) == "early"
    budget.measured(0.25, traced=False)  # measurements turn out expensive
    budget.measured(0.25, traced=False)
    assert schedule.due(16, 15, 15, 100, budget) is None
    clock.now = 20.0  # 0.6 s allowed
    assert schedule.due(32, 31, 31, 100, budget) == "early"


def test_steps_passed_over_still_count():
    # steps_per_execution=3: Keras reports steps 3, 6, 9, ...
    budget = Budget(0.5, clock=Clock())
    budget.start_fit()
    budget.clock.now = 1.0  # room for measurements, not for a drawing too
    budget.end_fit()
    measured = run_schedule(MeasurementSchedule(), budget, 1, steps_per_epoch=21, every_call=3)
    assert measured == [
        (0, "start"), (3, "early"), (6, "early"), (9, "early"), (12, "mid-epoch"),
        (18, "early"), (21, "epoch-end"),
    ]


def test_unknown_epoch_length_still_measures_at_epoch_end():
    budget = Budget(0.03, clock=Clock())
    measured = run_schedule(MeasurementSchedule(), budget, 2, steps_per_epoch=12, known=False,
                            step_seconds=0.1, measure_seconds=0.03)
    # At step 12, 3 % of training has not yet paid for the start's
    # measurement and one more (0.036 s < 0.06 s); at step 24 it has.
    assert measured == [(0, "start"), (24, "epoch-end")]


def test_every_n_steps_is_strict():
    budget = Budget(10.0, clock=Clock())
    measured = run_schedule(MeasurementSchedule(every=5), budget, 2, steps_per_epoch=12)
    assert measured == [(0, "every"), (5, "every"), (10, "every"), (15, "every"), (20, "every")]
    # Passed over with steps_per_execution=4: 4, 8 (crosses 5), 12 (crosses 10).
    measured = run_schedule(MeasurementSchedule(every=5), budget, 1, 12, every_call=4)
    assert measured == [(0, "every"), (8, "every"), (12, "every")]


def test_budget_allows_measurements_beyond_the_schedule():
    clock = Clock()
    budget = Budget(0.1, clock=clock)
    budget.start_fit()
    schedule = MeasurementSchedule()
    assert schedule.due(3, 2, 2, 100, budget) is None  # no time spent in fit yet
    clock.now = 20.0  # 20 s in fit: 2 s allowed
    budget.measured(0.05, traced=False)
    assert schedule.due(3, 2, 2, 100, budget) == "budget"
    budget.charge(0.96)  # a drawing is reserved (1 s until one is timed)
    assert schedule.due(3, 2, 2, 100, budget) is None
    assert schedule.due(3, 2, 2, 100, budget, reserve_drawing=False) == "budget"


def test_tracing_is_waived_not_charged():
    clock = Clock()
    budget = Budget(0.03, clock=clock)
    budget.start_fit()
    # The callback charges its whole time, including the first measurement
    # (tracing, 2 s) and waives the traced one.
    budget.measured(2.0, traced=True)
    budget.charge(2.0 + 0.01)
    assert budget.spent == pytest.approx(0.01)
    assert budget.waived == pytest.approx(2.0)
    assert budget.measure_seconds is None  # a traced cost says nothing of later ones
    budget.measured(0.02, traced=False)
    budget.measured(0.04, traced=False)
    assert budget.measure_seconds == pytest.approx(0.7 * 0.02 + 0.3 * 0.04)


def test_elapsed_counts_time_in_fit_only():
    clock = Clock()
    budget = Budget(0.03, clock=clock)
    budget.start_fit()
    clock.now = 10.0
    budget.end_fit()
    clock.now = 500.0  # the script does other things between fits
    budget.start_fit()
    clock.now = 505.0
    assert budget.elapsed() == pytest.approx(15.0)
    assert budget.allowance() == pytest.approx(0.45)


def test_a_traced_measurement_is_no_training_time():
    # 10 s of CPU in fit, 2 of them tracing a measurement (waived): the
    # allowance is 3 % of the 8 s of training, as the own-time share counts.
    clock = Clock()
    budget = Budget(0.03, clock=clock)
    budget.start_fit()
    clock.now = 10.0
    budget.measured(2.5, traced=True, cpu_seconds=2.0)  # 2.5 s of wall: waited
    budget.charge(2.5, heavy=True)
    assert budget.waived == pytest.approx(2.5)
    assert budget.spent == pytest.approx(0.0)
    assert budget.allowance() == pytest.approx(0.03 * 8.0)


def test_drawing_needs_its_estimated_cost():
    clock = Clock()
    budget = Budget(0.05, clock=clock, wall_clock=clock)
    budget.start_fit()
    clock.now = 10.0  # 0.5 s allowed; a drawing is estimated at 1 s
    assert not budget.can_draw()
    budget.drew(0.3)
    assert budget.can_draw()
    assert budget.since_drawing() == 0.0
    clock.now = 70.0
    assert budget.since_drawing() == pytest.approx(60.0)


def test_a_continued_run_resumes_its_budget_from_the_summary():
    clock = Clock()
    budget = Budget(0.1, clock=clock)
    budget.resume({"fit_cpu_seconds": 100.0, "cpu_seconds": 4.0, "one_off_cpu_seconds": 1.5,
                   "seconds": 9.0, "fit_seconds": 120.0, "one_off_seconds": 2.0})
    # Tracing waived at the longer of its CPU and wall time, as in the fit.
    assert budget.elapsed() == 100.0 and budget.waived == 2.0
    assert budget.spent == budget.heavy_spent == 2.5  # charged: own CPU less the one-off
    # 0.1 x 100 s of fit, less the 2.5 s charged; then the new fit adds to it.
    assert budget.allowance() == pytest.approx(7.5)
    budget.start_fit()
    clock.now = 10.0
    assert budget.allowance() == pytest.approx(0.1 * 110.0 - 2.5)
    # A summary without the figures (an older run): the budget starts afresh.
    fresh = Budget(0.1, clock=Clock())
    fresh.resume({"fit_cpu_seconds": 100.0})
    fresh.resume(None)
    assert fresh.elapsed() == 0.0 and fresh.spent == 0.0 and fresh.waived == 0.0


def test_own_time_counts_outermost_blocks_and_fits():
    wall, cpu, thread = [0.0], [0.0], [0.0]
    own = OwnTime(clock=lambda: wall[0], cpu_clock=lambda: cpu[0],
                  thread_clock=lambda: thread[0])
    own.resume({"seconds": 1.0, "fit_seconds": 10.0, "cpu_seconds": 2.0,
                "fit_cpu_seconds": 20.0, "junk": "x"})
    own.start_fit()
    assert own.enter() and not own.enter()  # nested: counted once
    own.heavy()  # a measurement: the process's CPU counts (TensorFlow's threads)
    wall[0], cpu[0], thread[0] = 0.5, 1.5, 0.4
    # While a block is open (a summary written inside the callback) it counts.
    assert own.totals() == {"seconds": 1.5, "cpu_seconds": 3.5, "fit_seconds": 10.5,
                            "fit_cpu_seconds": 21.5, "one_off_seconds": 0.0,
                            "one_off_cpu_seconds": 0.0}
    own.one_off(0.25, 0.75)  # a traced measurement inside the block
    assert own.leave() == 1.5
    # A light block (reading the logs): its own thread's CPU, not the
    # process's (TensorFlow's pool winding down after the step).
    assert own.enter()
    wall[0], cpu[0], thread[0] = 0.6, 1.9, 0.41
    assert own.leave() == pytest.approx(0.01)
    wall[0], cpu[0] = 4.0, 6.0
    own.end_fit()
    wall[0], cpu[0] = 100.0, 100.0  # between fits: nothing is counted
    assert own.totals() == pytest.approx({
        "seconds": 1.6, "cpu_seconds": 3.51, "fit_seconds": 14.0, "fit_cpu_seconds": 26.0,
        "one_off_seconds": 0.25, "one_off_cpu_seconds": 0.75})


def test_measurements_keep_a_third_of_the_share_when_the_checks_take_it_all():
    # A tiny model: 2 ms steps whose checks cost 0.3 ms (15 %, beyond 3 %).
    clock = Clock()
    budget = Budget(0.03, clock=clock)
    budget.start_fit()
    for _ in range(1000):
        clock.now += 0.002
        budget.charge(0.0003)
    assert budget.overhead * budget.elapsed() - budget.spent < 0
    # Measurements and drawings still get 1 % of the 2 s: 0.02 s.
    assert budget.allowance() == pytest.approx(0.02)
    budget.charge(0.015, heavy=True)
    assert budget.allowance() == pytest.approx(0.005)
    budget.waive(0.015)  # it traced: given back
    assert budget.allowance() == pytest.approx(0.02)
