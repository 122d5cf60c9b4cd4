"""Each shape against its formula, written out here independently."""

import math

import keras
import numpy as np
import pytest

from keras_rts import schedules


def cosine(t, hi, lo, T):
    return lo + 0.5 * (hi - lo) * (1 + math.cos(math.pi * t / T))


@pytest.mark.parametrize("t, expected", [
    (0, 3.0), (25, cosine(25, 3.0, 0.1, 100)), (50, 1.55),
    (99, cosine(99, 3.0, 0.1, 100)), (100, 0.1), (250, 0.1),
])
def test_cosine_without_restarts(t, expected):
    assert schedules.Cosine(3.0, 0.1, period=100)(t) == pytest.approx(expected)


def test_cosine_warm_restarts_follow_sgdr():
    # T_0 = 10, T_mult = 2: periods [0, 10), [10, 30), [30, 70), [70, 150).
    s = schedules.Cosine(2.0, 0.0, period=10, restarts=True,
                         period_multiplier=2)
    starts, lengths = [0, 10, 30, 70], [10, 20, 40, 80]
    for start, length in zip(starts, lengths):
        assert s(start) == pytest.approx(2.0)  # restarts at the top
        assert s(start + length / 2) == pytest.approx(1.0)
        for frac in (0.1, 0.7, 0.999):
            t = start + frac * length
            assert s(t) == pytest.approx(cosine(t - start, 2.0, 0.0, length))
    assert s(9.999) < 1e-6 and s(29.999) < 1e-6  # just before a restart
    constant_period = schedules.Cosine(1.0, 0.5, period=4, restarts=True)
    assert [constant_period(t) for t in (0, 4, 8, 2, 6)] == pytest.approx(
        [1.0, 1.0, 1.0, 0.75, 0.75])


@pytest.mark.parametrize("t", [0, 10, 37, 50, 80, 100, 140])
def test_quarter_shapes(t):
    hi, lo, T = 3.0, 0.1, 100
    p = min(t / T, 1.0)
    assert schedules.QuarterCosine(hi, lo, T)(t) == pytest.approx(
        lo + (hi - lo) * math.cos(math.pi / 2 * p))
    assert schedules.QuarterSine(hi, lo, T)(t) == pytest.approx(
        lo + (hi - lo) * math.sin(math.pi / 2 * p))


def test_constant_linear_step():
    assert schedules.Constant(0.7)(123) == 0.7
    lin = schedules.Linear(1.0, 0.0, duration=4)
    assert [lin(t) for t in range(6)] == pytest.approx(
        [1.0, 0.75, 0.5, 0.25, 0.0, 0.0])
    up = schedules.Linear(0.5, 1.5, duration=10)
    assert up(5) == pytest.approx(1.0)
    step = schedules.Step([1.0, 0.5, 0.1], boundaries=[3, 6])
    assert [step(t) for t in range(8)] == [1.0] * 3 + [0.5] * 3 + [0.1] * 2


def test_get_builds_each_shape_with_its_direction():
    assert isinstance(schedules.get("cosine", 3.0, 0.1, 10), schedules.Cosine)
    assert schedules.get("cosine", 3.0, 0.1, 10)(10) == pytest.approx(0.1)
    assert schedules.get("quarter_cosine", 3.0, 0.1, 10)(0) == 3.0
    assert schedules.get("quarter_sine", 0.1, 3.0, 10)(0) == pytest.approx(0.1)
    assert schedules.get("quarter_sine", 0.1, 3.0, 10)(10) == pytest.approx(3)
    assert schedules.get("linear", 0.5, 1.0, 10)(5) == pytest.approx(0.75)
    assert schedules.get("constant", 1.0, 1.0, 10)(3) == 1.0


@pytest.mark.parametrize("args, match", [
    (("spiral", 1.0, 0.1, 10), "shape='spiral'"),
    (("cosine", 0.1, 3.0, 10), "decreases"),
    (("quarter_cosine", 0.1, 3.0, 10), "decreases"),
    (("quarter_sine", 3.0, 0.1, 10), "increases"),
    (("constant", 1.0, 0.5, 10), "first == last"),
    (("linear", -1.0, 0.5, 10), "first"),
    (("linear", 1.0, float("nan"), 10), "last"),
    (("linear", 1.0, 0.5, 0), "duration"),
])
def test_get_rejects_bad_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        schedules.get(*args)


@pytest.mark.parametrize("make, match", [
    (lambda: schedules.Cosine(0.1, 3.0, 10), "minimum"),
    (lambda: schedules.QuarterSine(0.1, 3.0, 10), "minimum"),
    (lambda: schedules.Cosine(3.0, 0.1, 10, True, 0.5), "period_multiplier"),
    (lambda: schedules.Cosine(3.0, 0.1, -5), "period"),
    (lambda: schedules.Constant(float("inf")), "value"),
    (lambda: schedules.Step([1.0, 0.5], boundaries=[3, 4]), "one more"),
    (lambda: schedules.Step([1.0, 0.5, 0.2], boundaries=[4, 3]), "increasing"),
    (lambda: schedules.Step([1.0, 0.5, 0.2], boundaries=[4, float("nan")]),
     "finite"),
    (lambda: schedules.Step([1.0, 0.5], boundaries=[float("inf")]), "finite"),
    (lambda: schedules.Step([1.0, 0.5], boundaries=["3"]), "boundaries"),
    (lambda: schedules.Step([1.0, 0.5, 0.2], boundaries=[3, 3]),
     "increasing"),
])
def test_constructors_reject_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("schedule", [
    schedules.Constant(0.3),
    schedules.Linear(0.0, 1.0, 7),
    schedules.Step([1.0, 0.5], [4]),
    schedules.Cosine(3.0, 0.1, 10, restarts=True, period_multiplier=2),
    schedules.QuarterCosine(3.0, 0.1, 9),
    schedules.QuarterSine(3.0, 0.1, 9),
])
def test_schedules_serialize_with_keras(schedule):
    config = keras.saving.serialize_keras_object(schedule)
    clone = keras.saving.deserialize_keras_object(config)
    assert type(clone) is type(schedule)
    ts = np.linspace(0, 30, 61)
    assert [clone(t) for t in ts] == [schedule(t) for t in ts]
