"""The callbacks' checks of their arguments and of the model they are
given: each raises a `ValueError` naming the argument, before any step."""

import math
import numbers
from typing import Callable

import keras

from keras_rts.model import RTSModel


def check_rts_model(callback, model):
    if not isinstance(model, RTSModel):
        raise ValueError(
            f"{type(callback).__name__} must be used on a keras_rts.RTSModel,"
            f" got a {type(model).__name__}: wrap the network first, "
            "keras_rts.RTSModel(network, method=...)."
        )


def check_one_step_per_call(callback, model):
    """Per-step callbacks see every step only with `steps_per_execution=1`."""
    steps = getattr(model, "steps_per_execution", 1)
    if steps != 1:
        raise ValueError(
            f"{type(callback).__name__} acts between steps, but compile("
            f"steps_per_execution={steps}) runs {steps} steps per call "
            "without callbacks between them: compile with "
            "steps_per_execution=1, or use per-epoch schedules and "
            "perturb_every=1.")


def check_int(name, value, minimum=0):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or (
        value < minimum
    ):
        raise ValueError(
            f"{name} must be an integer ≥ {minimum}, got {value!r}."
        )
    return int(value)


def check_probability(value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
            0 <= value <= 1):
        raise ValueError(
            f"perturb_probability must be a number in [0, 1] (or a schedule "
            f"of the step giving one), got {value!r}.")
    return float(value)


def scheduled_probability(schedule, step):
    """A `perturb_probability` schedule's value at global step `step`,
    checked: a number in [0, 1], else a `ValueError` naming the step and
    what it returned."""
    try:
        value = schedule(step)
        value = value if value is None else float(
            keras.ops.convert_to_numpy(value))
    except (TypeError, ValueError) as e:
        raise ValueError(
            f"perturb_probability's schedule {schedule!r} fails at step "
            f"{step}: {e}") from None
    if value is None or not 0 <= value <= 1:
        raise ValueError(
            f"perturb_probability's schedule {schedule!r} returned {value!r} "
            f"at step {step}: it must return a number in [0, 1].")
    return value


def check_positive(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
        math.isfinite(value) and value > 0
    ):
        raise ValueError(f"{name} must be a positive number, got {value!r}.")
    return float(value)


ScheduleLike = Callable[..., float]
"""A schedule: `f(t)` or `f(t, current)` of the epoch (or step) `t`, as
`keras_rts.schedules` and `keras.optimizers.schedules` objects are."""
