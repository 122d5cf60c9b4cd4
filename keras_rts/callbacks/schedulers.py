"""R and S: `RadiusScheduler` and `GradScaleScheduler` assign
`RTSModel.radius` and `RTSModel.grad_scale` from a schedule of the epoch or
step (docs/method.md, "RTS")."""

import inspect
import math

import keras
import numpy as np

from keras_rts.backend import assign_between_steps
from keras_rts.callbacks import checks
from keras_rts.callbacks.checks import ScheduleLike


class _VariableScheduler(keras.callbacks.Callback):
    """Assigns one of the model's variables from a schedule."""

    variable = None  # the RTSModel attribute this scheduler assigns

    def __init__(self, schedule: ScheduleLike, per_step: bool = False
                 ) -> None:
        super().__init__()
        if not callable(schedule):
            raise ValueError(
                f"schedule must be callable (a keras_rts.schedules object, a "
                f"keras.optimizers.schedules object or a function of the "
                f"{'step' if per_step else 'epoch'}), got {schedule!r}."
            )
        if not isinstance(per_step, (bool, np.bool_)):
            raise ValueError(f"per_step must be True or False, got "
                             f"{per_step!r}.")
        self.schedule = schedule
        self.per_step = bool(per_step)
        # `f(t, current_value)`, as `keras.callbacks.LearningRateScheduler`
        # accepts, or `f(t)`.
        self._takes_current = _required_positional(schedule) >= 2

    def value(self, t, current=None):
        """The schedule's value at epoch (or step) `t`, checked.

        Args:
            t: the epoch (or step).
            current: the variable's value before, for `f(t, current)`
                (read from the model if not given).
        """
        unit = "step" if self.per_step else "epoch"
        if not self._takes_current:
            value = self.schedule(t)
        else:
            value = self.schedule(
                t, self._current() if current is None else current)
        try:
            value = float(np.asarray(keras.ops.convert_to_numpy(value)))
        except (TypeError, ValueError):
            raise ValueError(
                f"The {self.variable} schedule gave {value!r} at {unit} {t}: "
                f"{self.variable} must be a number.") from None
        if not math.isfinite(value) or value < 0:
            raise ValueError(
                f"The {self.variable} schedule gave {value} at {unit} {t}: "
                f"{self.variable} must be finite and non-negative."
            )
        return value

    def _variable(self):
        return getattr(self.model, self.variable)

    def _current(self):
        sync = getattr(self.model, "jax_state_sync", None)
        if sync is not None:
            sync()
        return float(self._variable().numpy())

    def on_train_begin(self, logs=None):
        checks.check_rts_model(self, self.model)
        epochs = self.params.get("epochs") or 1
        steps = self.params.get("steps")
        if self.per_step and not steps:
            raise ValueError(
                f"{type(self).__name__}(per_step=True) needs a known number "
                "of steps per epoch: pass steps_per_epoch to fit()."
            )
        if self.per_step:
            checks.check_one_step_per_call(self, self.model)
        # Check the schedule before any step is taken (chained through
        # the values it gives, for `f(t, current)`).
        current = self._current()
        times = [e * steps for e in range(epochs)] + [epochs * steps - 1] \
            if self.per_step else range(epochs)
        for t in times:
            current = self.value(t, current)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        if not self.per_step:
            assign_between_steps(self.model, self._variable(),
                                 self.value(epoch))

    def on_train_batch_begin(self, batch, logs=None):
        if self.per_step:
            step = self._epoch * self.params["steps"] + batch
            assign_between_steps(self.model, self._variable(),
                                 self.value(step))


def _required_positional(function):
    """How many positional arguments `function` requires (1 if unknown)."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return 1
    return sum(p.default is p.empty and p.kind in (
        p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in parameters)


class RadiusScheduler(_VariableScheduler):
    """Sets `RTSModel.radius` (ρ) from a schedule of the epoch or step.

    Args:
        schedule: a `keras_rts.schedules` object, a
            `keras.optimizers.schedules` object, or any callable of the
            epoch (or step) returning a non-negative number.
        per_step: evaluate the schedule at every step (the global step
            `epoch · steps_per_epoch + batch`) instead of every epoch.

    Example:

    ```python
    model.fit(data, epochs=200, callbacks=[
        keras_rts.callbacks.RadiusScheduler(
            keras_rts.schedules.Cosine(3.0, 0.1, period=200))])
    ```
    """

    variable = "radius"


class GradScaleScheduler(_VariableScheduler):
    """Sets `RTSModel.grad_scale` (λ) from a schedule of the epoch or step.

    Args:
        schedule: as for `RadiusScheduler`.
        per_step: as for `RadiusScheduler`.
    """

    variable = "grad_scale"
