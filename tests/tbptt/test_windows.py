"""The window schedule of truncated BPTT, in integers (no model)."""

import itertools

import pytest
import tensorflow as tf

from keras_gradwatch.tbptt._windows import AUTO_UNROLL_STEPS
from keras_gradwatch.tbptt._windows import MAX_WINDOW_GROUPS
from keras_gradwatch.tbptt._windows import WindowSchedule
from keras_gradwatch.tbptt._windows import WindowVariables


@pytest.mark.parametrize("window, backprop, length", itertools.product((1, 3, 5), (0, 2, 7), (1, 9, 15)))
def test_windows_tile_the_sequence_and_spans_reach_back(window, backprop, length):
    schedule = WindowSchedule(window, window + backprop)
    count = schedule.count(length)
    assert count == -(-length // window)
    steps = []
    for i in range(count):
        begin, end = schedule.bounds(i, length)
        assert 0 < end - begin <= window
        steps += range(begin, end)
        start = schedule.span_start(begin)
        assert start == max(0, begin - backprop)
    assert steps == list(range(length))  # every step once, in order


def test_tensor_arguments_give_the_same_answers():
    schedule = WindowSchedule(4, 6)
    for i in range(3):
        begin, end = schedule.bounds(tf.constant(i), tf.constant(10))
        assert (int(begin), int(end)) == schedule.bounds(i, 10)
        assert int(schedule.span_start(begin)) == schedule.span_start(int(begin))
    assert int(schedule.count(tf.constant(10))) == 3


@pytest.mark.parametrize("window, backprop", [(4, 4), (4, 6), (3, 7)])
def test_tensor_sizes_give_the_same_answers(window, backprop):
    static = WindowSchedule(window, backprop)
    sizes = WindowVariables()
    sizes.set(static, tf.distribute.get_strategy())
    dynamic = sizes.schedule(static)
    assert dynamic.reruns == static.reruns == (backprop > window)
    assert dynamic.key == ("any", backprop > window) and static.key == window
    assert int(dynamic.count(10)) == static.count(10)
    for i in range(static.count(10)):
        begin, end = dynamic.bounds(i, 10)
        assert (int(begin), int(end)) == static.bounds(i, 10)
        assert int(dynamic.span_start(begin)) == static.span_start(int(begin))
    assert dynamic.span_start(0) == 0  # a Python 0: no loop to trace before it
    assert dynamic.groups(10, 0, 3) == [(0, 3, None)]
    # New sizes are read from the same variables.
    sizes.set(WindowSchedule(2, 5), tf.distribute.get_strategy())
    assert int(dynamic.window) == window  # a tensor read before
    assert (int(sizes.schedule(static).window), int(sizes.schedule(static).backprop)) == (2, 5)


def test_groups_hold_windows_of_one_span_shape():
    schedule = WindowSchedule(window=4, backprop=6)
    # Spans: [0,4) (len 4, offset 0), [2,8) (6, 2), [6,10) (4, 2).
    assert schedule.groups(10, 0, 3) == [(0, 1, (4, 0)), (1, 2, (6, 2)), (2, 3, (4, 2))]
    # Equal windows and spans: one run.
    assert WindowSchedule(5, 5).groups(20, 0, 4) == [(0, 4, (5, 0))]
    # Many-to-one: only the last window.
    assert WindowSchedule(5, 5).groups(23, 4, 5) == [(4, 5, (3, 0))]


def test_groups_stay_symbolic_when_they_cannot_be_unrolled():
    whole = [(0, 3, None)]
    assert WindowSchedule(4, 6, unroll=False).groups(10, 0, 3) == whole
    assert WindowSchedule(4, 6).groups(tf.constant(10), 0, 3) == whole  # dynamic length
    long = AUTO_UNROLL_STEPS + 1
    assert WindowSchedule(long, long).groups(2 * long, 0, 2) == [(0, 2, None)]
    assert WindowSchedule(long, long, unroll=True).groups(2 * long, 0, 2) == [(0, 2, (long, 0))]
    # A short window with a long backprop: a span shape per window.
    many = WindowSchedule(1, MAX_WINDOW_GROUPS + 2)
    assert many.groups(10, 0, 10) == [(0, 10, None)]
