"""Shapes for the radius ρ and the gradient scale λ over training (docs/method.md, "RTS").

Each schedule is a small serializable object: called with a time `t` (an
epoch, or a step: the callback decides which) it returns a Python float.
`duration`/`period` is in the same unit as `t`. Keras' own
`keras.optimizers.schedules.*` objects and plain callables of `t` are
accepted wherever `keras_rts.callbacks` takes a schedule; `get` turns a
name and its bounds into one of these.

| name             | value at t (T the duration)                                 |
|------------------|-------------------------------------------------------------|
| `constant`       | v                                                           |
| `linear`         | start + (end − start) · min(t/T, 1)                         |
| `step`           | values[i] for boundaries[i−1] ≤ t < boundaries[i]          |
| `cosine`         | min + ½(max − min)(1 + cos(π t/T)), SGDR restarts optional |
| `quarter_cosine` | min + (max − min) · cos(π/2 · t/T)   (decreasing)          |
| `quarter_sine`   | min + (max − min) · sin(π/2 · t/T)   (increasing)          |
"""

import math
import numbers
from typing import Sequence

import keras


def _check_value(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number, got {value!r}.")
    if not math.isfinite(value) or value < 0:
        raise ValueError(
            f"{name} must be finite and non-negative, got {value!r}."
        )
    return float(value)


def _check_positive(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
        math.isfinite(value) and value > 0
    ):
        raise ValueError(f"{name} must be a positive number, got {value!r}.")
    return value


def _check_order(minimum, maximum):
    if minimum > maximum:
        raise ValueError(
            f"minimum ({minimum}) must not be above maximum ({maximum})."
        )


def _progress(t, duration):
    """`t / duration`, clipped to [0, 1]."""
    return min(max(float(t) / duration, 0.0), 1.0)


class Schedule:
    """Base class: a value as a function of time, with `get_config`."""

    def __call__(self, t: float) -> float:
        raise NotImplementedError

    def get_config(self) -> dict:
        raise NotImplementedError

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


@keras.saving.register_keras_serializable(package="keras_rts")
class Constant(Schedule):
    """The same value at every time.

    Args:
        value: the value (finite, non-negative).

    Example:

    >>> Constant(0.05)(17)
    0.05
    """

    def __init__(self, value: float) -> None:
        self.value = _check_value("value", value)

    def __call__(self, t):
        return self.value

    def get_config(self):
        return {"value": self.value}


@keras.saving.register_keras_serializable(package="keras_rts")
class Linear(Schedule):
    """From `start` to `end` in a straight line over `duration`, then `end`.

    Args:
        start: the value at t = 0.
        end: the value from t = duration on.
        duration: the time the ramp takes.

    Example:

    >>> Linear(0.0, 1.0, duration=10)(5)
    0.5
    """

    def __init__(self, start: float, end: float, duration: float) -> None:
        self.start = _check_value("start", start)
        self.end = _check_value("end", end)
        self.duration = _check_positive("duration", duration)

    def __call__(self, t):
        return self.start + (self.end - self.start) * _progress(
            t, self.duration
        )

    def get_config(self):
        return {"start": self.start, "end": self.end,
                "duration": self.duration}


@keras.saving.register_keras_serializable(package="keras_rts")
class Step(Schedule):
    """Piecewise constant: `values[i]` from `boundaries[i-1]` to `boundaries[i]`.

    Args:
        values: one more value than boundaries.
        boundaries: increasing times at which the value changes.

    Example:

    >>> Step([1.0, 0.5, 0.1], boundaries=[60, 120])(80)
    0.5
    """

    def __init__(self, values: Sequence[float],
                 boundaries: Sequence[float]) -> None:
        values = [_check_value("values", v) for v in values]
        boundaries = list(boundaries)
        for b in boundaries:
            if isinstance(b, bool) or not isinstance(b, numbers.Real) or (
                    not math.isfinite(b)):
                raise ValueError(
                    f"boundaries must be finite numbers, got {boundaries!r}."
                )
        if len(values) != len(boundaries) + 1:
            raise ValueError(
                f"Step needs one more value than boundaries, got "
                f"{len(values)} values and {len(boundaries)} boundaries."
            )
        if any(b >= a for a, b in zip(boundaries[1:], boundaries)):
            raise ValueError(
                f"boundaries must be increasing, got {boundaries!r}."
            )
        self.values = values
        self.boundaries = boundaries

    def __call__(self, t):
        index = sum(1 for b in self.boundaries if t >= b)
        return self.values[index]

    def get_config(self):
        return {"values": self.values, "boundaries": self.boundaries}


@keras.saving.register_keras_serializable(package="keras_rts")
class Cosine(Schedule):
    """Cosine annealing from `maximum` to `minimum`, optionally restarting.

    Without restarts: `min + ½(max − min)(1 + cos(π·t/period))`, and
    `minimum` from `t = period` on. With `restarts=True` (SGDR, Loshchilov &
    Hutter, 2017) the value jumps back to `maximum` at the end of each
    period; periods grow by `period_multiplier` (`T_0 = period`,
    `T_mult = period_multiplier`).

    Args:
        maximum: the value at the start of each period.
        minimum: the value the period anneals to.
        period: the length of the (first) period.
        restarts: whether to restart at the end of each period.
        period_multiplier: factor by which each period is longer than the
            one before (≥ 1).

    Example:

    >>> Cosine(3.0, 0.1, period=100)(50)
    1.55
    """

    def __init__(self, maximum: float, minimum: float, period: float,
                 restarts: bool = False, period_multiplier: float = 1.0
                 ) -> None:
        self.maximum = _check_value("maximum", maximum)
        self.minimum = _check_value("minimum", minimum)
        _check_order(self.minimum, self.maximum)
        self.period = _check_positive("period", period)
        self.restarts = bool(restarts)
        if not (isinstance(period_multiplier, numbers.Real)
                and math.isfinite(period_multiplier)
                and period_multiplier >= 1):
            raise ValueError(
                f"period_multiplier must be a number ≥ 1, got "
                f"{period_multiplier!r}."
            )
        self.period_multiplier = period_multiplier

    def _position(self, t):
        """(time into the current period, its length)."""
        t = max(float(t), 0.0)
        if not self.restarts:
            return min(t, self.period), self.period
        length = float(self.period)
        while t >= length:
            t -= length
            length *= self.period_multiplier
        return t, length

    def __call__(self, t):
        t_cur, length = self._position(t)
        return self.minimum + 0.5 * (self.maximum - self.minimum) * (
            1.0 + math.cos(math.pi * t_cur / length)
        )

    def get_config(self):
        return {"maximum": self.maximum, "minimum": self.minimum,
                "period": self.period, "restarts": self.restarts,
                "period_multiplier": self.period_multiplier}


@keras.saving.register_keras_serializable(package="keras_rts")
class QuarterCosine(Schedule):
    """Decreasing quarter cosine: `min + (max − min) · cos(π/2 · t/T)`.

    Args:
        maximum: the value at t = 0.
        minimum: the value from t = duration on.
        duration: T.

    Example:

    >>> QuarterCosine(3.0, 0.1, duration=100)(100)
    0.1
    """

    def __init__(self, maximum: float, minimum: float, duration: float
                 ) -> None:
        self.maximum = _check_value("maximum", maximum)
        self.minimum = _check_value("minimum", minimum)
        _check_order(self.minimum, self.maximum)
        self.duration = _check_positive("duration", duration)

    def __call__(self, t):
        progress = _progress(t, self.duration)
        if progress >= 1:  # exactly: cos(π/2) is 6e-17 in floating point
            return self.minimum
        return self.minimum + (self.maximum - self.minimum) * math.cos(
            0.5 * math.pi * progress)

    def get_config(self):
        return {"maximum": self.maximum, "minimum": self.minimum,
                "duration": self.duration}


@keras.saving.register_keras_serializable(package="keras_rts")
class QuarterSine(QuarterCosine):
    """Increasing quarter sine: `min + (max − min) · sin(π/2 · t/T)`.

    Args:
        maximum: the value from t = duration on.
        minimum: the value at t = 0.
        duration: T.

    Example:

    >>> QuarterSine(3.0, 0.1, duration=100)(0)
    0.1
    """

    def __call__(self, t):
        return self.minimum + (self.maximum - self.minimum) * math.sin(
            0.5 * math.pi * _progress(t, self.duration)
        )


SHAPES = ("constant", "linear", "cosine", "quarter_cosine", "quarter_sine")
"""The shapes `get` builds from a `(first, last)` pair."""


def get(shape: str, first: float, last: float, duration: float
        ) -> "Schedule":
    """Builds the schedule that goes from `first` to `last` over `duration`.

    Args:
        shape: one of `SHAPES`. `cosine` and `quarter_cosine` decrease
            (`first ≥ last`), `quarter_sine` increases (`first ≤ last`),
            `constant` needs `first == last`, `linear` goes either way.
        first: the value at t = 0.
        last: the value at t = duration.
        duration: the time over which the shape runs.

    Returns:
        A `Schedule`.

    Raises:
        ValueError: for an unknown shape, or bounds in the wrong order.
    """
    if shape not in SHAPES:
        raise ValueError(
            f"Unknown shape={shape!r}: expected one of {list(SHAPES)}."
        )
    first, last = _check_value("first", first), _check_value("last", last)
    if shape == "constant":
        if first != last:
            raise ValueError(
                f"shape='constant' needs first == last, got {first} and "
                f"{last}."
            )
        return Constant(first)
    if shape == "linear":
        return Linear(first, last, duration)
    if shape == "quarter_sine":
        if first > last:
            raise ValueError(
                f"shape='quarter_sine' increases: its first value ({first}) "
                f"must not be above its last ({last})."
            )
        return QuarterSine(last, first, duration)
    if first < last:
        raise ValueError(
            f"shape={shape!r} decreases: its first value ({first}) must "
            f"not be below its last ({last})."
        )
    if shape == "cosine":
        return Cosine(first, last, duration)
    return QuarterCosine(first, last, duration)
