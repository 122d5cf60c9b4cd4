"""T: the triggers that switch `RTSModel.perturb` on — plain one-pass
`sgd` steps before, the method's step after (docs/method.md, "RTS"). What
they remember lives in the model (`RTSModel.timing`), so a run resumed with
`keras.callbacks.BackupAndRestore` continues exactly where it stopped."""

import math
import numbers
import warnings

import keras
import numpy as np

from keras_rts.backend import assign_between_steps
from keras_rts.callbacks import checks
from keras_rts.callbacks.checks import ScheduleLike
from keras_rts.timing_state import GRAD_NORM_CAPACITY


class _Trigger(keras.callbacks.Callback):
    """Switches the perturbation on; remembers when in `model.timing`.

    A trigger decides the phase per epoch (`_phase_on`); within the phase
    the method's step runs on every step, or with `perturb_every=k` on every
    k-th step only (global steps `t` with `t mod k = 0`), plain one-pass
    steps between — as Composer's SAM `interval` — or with
    `perturb_probability=p` on each step with probability `p` (random
    switching). The step is switched by assigning `RTSModel.perturb`
    between steps: each phase's train function is traced once.

    The random draws are made on the host, each from the seed and the
    global step `t` alone (`numpy.random.default_rng((seed, t))`): no
    device read, the same draws in every run with that seed, and a run
    resumed at an epoch (`BackupAndRestore`) draws what it would have.
    """

    epochs = None  # the run's length, if given at construction

    def __init__(self, perturb_every: int = 1,
                 perturb_probability: float | ScheduleLike | None = None,
                 seed: int = 0) -> None:
        super().__init__()
        self.perturb_every = checks.check_int("perturb_every", perturb_every,
                                        minimum=1)
        if perturb_probability is not None:
            if perturb_every != 1:
                raise ValueError(
                    "Give perturb_every (every k-th step) or "
                    "perturb_probability (each step at random), not both; "
                    f"got perturb_every={perturb_every}, "
                    f"perturb_probability={perturb_probability!r}.")
            if not callable(perturb_probability):
                checks.check_probability(perturb_probability)
        self.perturb_probability = perturb_probability
        self.seed = checks.check_int("seed", seed)

    @property
    def _per_step(self):
        return self.perturb_every > 1 or self.perturb_probability is not None

    def _draws_on(self, step):
        """Whether the method's step runs at global step `step`."""
        if self.perturb_probability is None:
            return step % self.perturb_every == 0
        p = self.perturb_probability
        if callable(p):
            p = checks.scheduled_probability(p, step)
        return np.random.default_rng((self.seed, step)).random() < p

    def on_train_begin(self, logs=None):
        checks.check_rts_model(self, self.model)
        fit_epochs = self.params.get("epochs")
        if self.epochs is not None and fit_epochs is not None:
            if fit_epochs > self.epochs:
                raise ValueError(
                    f"fit(epochs={fit_epochs}) trains beyond the run's "
                    f"epochs={self.epochs} given to {type(self).__name__} "
                    "(or rts()): give them the same number.")
            if fit_epochs < self.epochs:
                warnings.warn(
                    f"fit(epochs={fit_epochs}) ends before the run's "
                    f"epochs={self.epochs} given to {type(self).__name__} "
                    "(or rts()): the schedules and the timing follow the "
                    "longer run. Expected when one run spans several fit "
                    "calls; otherwise give both the same number.",
                    stacklevel=2)
        self._check_epochs(self.epochs or fit_epochs)
        if self._per_step:
            which = (f"perturb_every={self.perturb_every}"
                     if self.perturb_probability is None else
                     f"perturb_probability={self.perturb_probability!r}")
            if not self.params.get("steps"):
                raise ValueError(
                    f"{type(self).__name__}({which}) needs a known number of "
                    "steps per epoch: pass steps_per_epoch to fit().")
            if not self.model._method.perturbs:
                raise ValueError(
                    f"{type(self).__name__}({which}) switches between the "
                    "method's step and plain ones, but method="
                    f"{self.model.method!r} never perturbs: every step is "
                    "plain already.")
            checks.check_one_step_per_call(self, self.model)
            if callable(self.perturb_probability):  # before the first step
                first_epoch = getattr(self.model, "_initial_epoch", None) or 0
                checks.scheduled_probability(
                    self.perturb_probability,
                    first_epoch * self.params["steps"])

    def _check_epochs(self, epochs):
        pass

    def _set_epochs(self, epochs):
        """Takes the run's length, if given, and checks against it now."""
        if epochs is not None:
            self.epochs = checks.check_int("epochs", epochs, minimum=1)
            self._check_epochs(self.epochs)

    @property
    def perturb_start_epoch(self):
        """The epoch from which the perturbation is on, or `None`."""
        epoch = int(self.model.timing.perturb_start_epoch.numpy())
        return None if epoch < 0 else epoch

    def _phase_on(self, epoch):
        """Whether epoch `epoch` is in the perturbing phase."""
        start = self.perturb_start_epoch
        return start is not None and epoch >= start

    def _switch_on_from(self, epoch):
        self.model.timing.perturb_start_epoch.assign(epoch)

    def _stored_threshold(self):
        """`model.timing.threshold`, or `None` while it is not set."""
        value = float(self.model.timing.threshold.numpy())
        return None if math.isnan(value) else value

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._on = self._phase_on(epoch)
        if not self._per_step:
            assign_between_steps(self.model, self.model.perturb, self._on)

    def on_train_batch_begin(self, batch, logs=None):
        if self._per_step:
            step = self._epoch * self.params["steps"] + batch
            assign_between_steps(self.model, self.model.perturb,
                                 self._on and self._draws_on(step))


class PerturbationWindow(_Trigger):
    """Fixed timing: the perturbation is on from a start epoch (to an end).

    Args:
        start_epoch: first epoch (0-based) of the method's steps.
        start_fraction: or the start as a fraction of the epochs of `fit`:
            `start_epoch = floor(start_fraction · epochs)`.
        end_epoch: optional first epoch after the window (back to `sgd`).
        epochs: the number of epochs of the run: the bounds are checked at
            construction, and `start_fraction` is a fraction of it. Without
            it, the `epochs` of `fit` are used (checked when training
            begins). Give it when one run spans several `fit` calls (as a
            Hyperband trial continued from an earlier one).
        perturb_every: within the window, the method's step on every
            `perturb_every`-th step only (global steps `t` with
            `t mod perturb_every = 0`), plain steps between.
        perturb_probability: or, within the window, the method's step on
            each step with this probability (random switching): a number
            in [0, 1] or a schedule of the global step giving one (a
            `keras.optimizers.schedules` object, say). Costs
            `1 + p` passes a step on average.
        seed: the seed of the random switch's draws.

    Example:

    ```python
    # SGD for epochs 0–99, PUGD for 100–199.
    keras_rts.callbacks.PerturbationWindow(start_epoch=100)
    # Interval SAM: the method's step on every 4th step of the whole run.
    keras_rts.callbacks.PerturbationWindow(start_epoch=0, perturb_every=4)
    # Random switching: SAM's step on each step with probability 0.2.
    keras_rts.callbacks.PerturbationWindow(start_epoch=0,
                                           perturb_probability=0.2, seed=1)
    ```
    """

    def __init__(self, start_epoch: int | None = None,
                 start_fraction: float | None = None,
                 end_epoch: int | None = None, epochs: int | None = None,
                 perturb_every: int = 1,
                 perturb_probability: float | ScheduleLike | None = None,
                 seed: int = 0) -> None:
        super().__init__(perturb_every, perturb_probability, seed)
        if (start_epoch is None) == (start_fraction is None):
            raise ValueError(
                "Give exactly one of start_epoch and start_fraction, got "
                f"start_epoch={start_epoch!r}, "
                f"start_fraction={start_fraction!r}."
            )
        if start_epoch is not None:
            checks.check_int("start_epoch", start_epoch)
        if start_fraction is not None and not (
            isinstance(start_fraction, numbers.Real)
            and not isinstance(start_fraction, bool)
            and 0 <= start_fraction < 1
        ):
            raise ValueError(
                f"start_fraction must be in [0, 1), got {start_fraction!r}."
            )
        if end_epoch is not None:
            checks.check_int("end_epoch", end_epoch, minimum=1)
        self.start_epoch = start_epoch
        self.start_fraction = start_fraction
        self.end_epoch = end_epoch
        self._set_epochs(epochs)

    def start(self, epochs):
        """The start epoch for a run of `epochs` epochs."""
        if self.start_epoch is not None:
            return self.start_epoch
        return int(math.floor(self.start_fraction * epochs))

    def _check_epochs(self, epochs):
        if epochs is None:
            return
        start = self.start(epochs)
        if not 0 <= start < epochs:
            raise ValueError(
                f"start_epoch={start} is outside [0, epochs={epochs}): the "
                "perturbation would never switch on."
            )
        if self.end_epoch is not None and not start < self.end_epoch <= epochs:
            raise ValueError(
                f"end_epoch={self.end_epoch} must be in (start_epoch={start}, "
                f"epochs={epochs}]."
            )

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self._start = self.start(self.epochs or self.params["epochs"])

    def _phase_on(self, epoch):
        if epoch >= self._start and self.perturb_start_epoch is None:
            self._switch_on_from(self._start)
        end = self.end_epoch
        return self._start <= epoch and (end is None or epoch < end)


class LearningRateTrigger(PerturbationWindow):
    """Late-phase timing tied to the learning-rate schedule.

    The perturbation is on from the first epoch that begins with the
    learning rate at or below `lr_fraction` of its peak over the run (the
    largest learning rate at the start of an epoch) after that peak, to the
    end (a warm-up's low start does not count). Late-phase
    SAM is reported to match full SAM at a fraction of its cost (Zhou et al.,
    ICLR 2025); tying the start to the schedule keeps it late whatever the
    run's length or warm-up. The start is computed from the optimizer's
    `keras.optimizers.schedules.LearningRateSchedule` when training begins,
    so a run that would never switch is refused before its first step.

    Args:
        lr_fraction: the fraction of the peak learning rate, in (0, 1).
        epochs: the number of epochs of the run, as for
            `PerturbationWindow` (default: the `epochs` of `fit`).
        perturb_every: as for `PerturbationWindow`.

    Example:

    ```python
    # PUGD once the cosine-decayed learning rate is below 10 % of its peak
    # (the last 20 % of the run).
    keras_rts.callbacks.LearningRateTrigger(lr_fraction=0.1)
    ```
    """

    def __init__(self, lr_fraction: float, epochs: int | None = None,
                 perturb_every: int = 1,
                 perturb_probability: float | ScheduleLike | None = None,
                 seed: int = 0) -> None:
        if isinstance(lr_fraction, bool) or not isinstance(
                lr_fraction, numbers.Real) or not 0 < lr_fraction < 1:
            raise ValueError(
                f"lr_fraction must be a number in (0, 1), got "
                f"{lr_fraction!r}.")
        # No window bounds to check.
        _Trigger.__init__(self, perturb_every, perturb_probability, seed)
        self.lr_fraction = float(lr_fraction)
        self.start_epoch = self.start_fraction = self.end_epoch = None
        self._set_epochs(epochs)

    def start(self, epochs):
        return self.lr_start_epoch(self.model, epochs, self.params["steps"])

    def _check_epochs(self, epochs):
        pass  # checked in `lr_start_epoch`, which needs the optimizer

    def lr_start_epoch(self, model, epochs, steps):
        """The first epoch whose learning rate is ≤ `lr_fraction` × peak."""
        optimizer = getattr(model.optimizer, "inner_optimizer",
                            model.optimizer)  # under a LossScaleOptimizer
        schedule = getattr(optimizer, "_learning_rate", None)
        if not isinstance(schedule,
                          keras.optimizers.schedules.LearningRateSchedule) or (
                              not steps):
            raise ValueError(
                "LearningRateTrigger needs a learning-rate schedule (a "
                "keras.optimizers.schedules.LearningRateSchedule given to "
                "the optimizer) and steps_per_epoch in fit(): with a "
                "constant learning rate the perturbation would never "
                "switch on.")
        return lr_start_epoch(schedule, epochs, steps, self.lr_fraction)


def lr_start_epoch(schedule, epochs, steps, lr_fraction):
    """The first epoch from the peak on that begins with the learning rate
    ≤ `lr_fraction` of its peak (the largest at the start of an epoch):
    the epochs of a warm-up, which start low too, are before the peak.

    Args:
        schedule: a learning-rate schedule of the step.
        epochs: the run's epochs.
        steps: steps per epoch.
        lr_fraction: the fraction of the peak.

    Raises:
        ValueError: if no epoch begins that low (naming `lr_fraction`).
    """
    rates = [float(keras.ops.convert_to_numpy(schedule(e * steps)))
             for e in range(epochs)]
    peak = max(rates)
    for epoch in range(rates.index(peak), epochs):
        if rates[epoch] <= lr_fraction * peak:
            return epoch
    raise ValueError(
        f"lr_fraction={lr_fraction}: the learning rate stays above this "
        f"fraction of its peak ({peak:g}) at the start of every one of the "
        f"{epochs} epochs: the perturbation would never switch on.")


class GradNormVarianceTrigger(_Trigger):
    """Adaptive timing on the variance of the per-step gradient norm.

    The train step records ‖g‖ at every step. At the end of epoch `t0` the
    threshold is `gamma · var(all norms so far)`; at the end of every later
    epoch, once the variance of the last `k` norms is below the threshold,
    the perturbation switches on from the next epoch. Variances are
    population variances.

    Args:
        t0: the epoch (0-based) at whose end the threshold is taken.
        gamma: factor of the threshold.
        k: how many recent steps the compared variance covers (at most
            `keras_rts.timing_state.GRAD_NORM_CAPACITY`).
        perturb_every: as for `PerturbationWindow`.
        epochs: as for `PerturbationWindow`: the run's length, checked now.
    """

    def __init__(self, t0: int = 5, gamma: float = 0.5, k: int = 100,
                 perturb_every: int = 1, epochs: int | None = None) -> None:
        super().__init__(perturb_every)
        self.t0 = checks.check_int("t0", t0)
        self.gamma = checks.check_positive("gamma", gamma)
        self.k = checks.check_int("k", k, minimum=2)
        if self.k > GRAD_NORM_CAPACITY:
            raise ValueError(
                f"k must be at most {GRAD_NORM_CAPACITY} (the gradient norms "
                f"kept), got {k}."
            )
        self._set_epochs(epochs)

    def _check_epochs(self, epochs):
        if epochs is not None and self.t0 >= epochs - 1:
            raise ValueError(
                f"t0={self.t0} leaves no epoch to switch in a run of "
                f"epochs={epochs}: t0 must be below {epochs - 1}."
            )

    @property
    def threshold(self):
        """The threshold, once taken at epoch `t0`, else `None`."""
        return self._stored_threshold()

    def on_epoch_end(self, epoch, logs=None):
        if self.perturb_start_epoch is not None:
            return
        timing = self.model.timing
        if epoch == self.t0:
            timing.threshold.assign(
                self.gamma * timing.grad_norm_variance()
            )
        elif epoch > self.t0 and self.threshold is not None:
            recent = timing.last_grad_norms(self.k)
            if len(recent) == self.k and np.var(recent) < self.threshold:
                self._switch_on_from(epoch + 1)


class GeneralizationGapTrigger(_Trigger):
    """Adaptive timing on the generalization gap |val_loss − loss|.

    Over the first `xi` epochs the gaps are averaged, and `base = mean · mu`.
    Afterwards, at the end of every `t`-th epoch, once the current gap
    exceeds `base` the perturbation switches on from the next epoch. Needs
    `validation_data` in `fit`.

    Args:
        xi: number of epochs whose gaps make the base.
        mu: factor of the base.
        t: check every `t` epochs after the first `xi`.
        perturb_every: as for `PerturbationWindow`.
        epochs: as for `PerturbationWindow`: the run's length, checked now.

    With `keras_rts.RTSModel.fit`, a call without validation data, or with
    `validation_freq` other than 1, is refused before the first step.
    """

    def __init__(self, xi: int = 5, mu: float = 2.0, t: int = 1,
                 perturb_every: int = 1, epochs: int | None = None) -> None:
        super().__init__(perturb_every)
        self.xi = checks.check_int("xi", xi, minimum=1)
        self.mu = checks.check_positive("mu", mu)
        self.t = checks.check_int("t", t, minimum=1)
        self._set_epochs(epochs)

    def _check_epochs(self, epochs):
        if epochs is not None and self.xi >= epochs:
            raise ValueError(
                f"xi={self.xi} leaves no epoch to switch in a run of "
                f"epochs={epochs}: xi must be below {epochs}."
            )

    def check_fit(self, arguments):
        """Refuses a `fit` without validation every epoch (before any step)."""
        if arguments.get("validation_data") is None and not arguments.get(
                "validation_split"):
            raise ValueError(
                "GeneralizationGapTrigger needs the validation loss every "
                "epoch: pass validation_data (or validation_split) to fit().")
        if arguments.get("validation_freq", 1) != 1:
            raise ValueError(
                "GeneralizationGapTrigger needs the validation loss every "
                f"epoch, but fit(validation_freq="
                f"{arguments['validation_freq']!r}) skips epochs: use "
                "validation_freq=1.")

    @property
    def base(self):
        """The base gap, once the first `xi` epochs are averaged."""
        return self._stored_threshold()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if "val_loss" not in logs or "loss" not in logs:
            raise ValueError(
                "GeneralizationGapTrigger needs val_loss in the logs: pass "
                "validation_data to fit()."
            )
        if self.perturb_start_epoch is not None:
            return
        timing = self.model.timing
        gap = abs(float(logs["val_loss"]) - float(logs["loss"]))
        if epoch < self.xi:
            timing.gap_sum.assign_add(gap)
            timing.gap_count.assign_add(1)
            if epoch == self.xi - 1:
                mean = float(timing.gap_sum.numpy()) / int(
                    timing.gap_count.numpy()
                )
                timing.threshold.assign(mean * self.mu)
        elif (epoch - self.xi + 1) % self.t == 0 and gap > self.base:
            self._switch_on_from(epoch + 1)
