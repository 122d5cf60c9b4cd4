"""The RTS search space, for KerasTuner.

`rts_config(hp, epochs, space)` declares the RTS hyperparameters on any
KerasTuner `HyperParameters` and returns an `RTSConfig`, which gives the
`RTSModel` arguments (`model_kwargs()`) and the callbacks (`callbacks()`)
of the trial: use it inside your own `HyperModel`, with your own network
and data (docs/tuning.md). This module needs only Keras (`hp` is the
tuner's); `keras_rts.search` builds the recipes' search on it
(`RTSHyperModel`, the tuners, the tables).

The space (`SearchSpace`) covers the step the controls drive (`pugd`,
`sam`), ρ (its first value in units of the step's own default ρ, the ratio
of last to first, and the shape, constant included), λ (the step's own
constant λ — PUGD's 1, SAM's 0 — or a linear schedule), and the timing: a
fixed start (a fraction of the epochs), a late phase tied to the learning
rate (`LearningRateTrigger`), or an interval (the method's step on every
k-th step). The default ranges keep every trial within 1.25× SGD's
gradient evaluations (0.625 of PUGD's) under a cosine-decayed learning
rate.

"""

import dataclasses
import math
from typing import Optional, Tuple

from keras_rts import callbacks as rts_callbacks
from keras_rts import methods
from keras_rts import schedules

BASE_METHODS = tuple(name for name, method in methods.METHODS.items()
                     if method.from_batch and name != "wsam")
"""The steps the search can drive: the methods that perturb, but WSAM,
whose own λ = (1−2γ)/γ is negative, outside the λ the search schedules
(WSAM is SAM with that λ and a scaled direction: search `sam`)."""

TIMINGS = ("fixed", "lr", "interval")
"""The timings searched: a fixed start, the learning rate, an interval."""

GRAD_SCALE_SCHEDULES = ("method", "linear")
"""λ searched: the step's own constant λ, or a linear schedule."""


def _pair(name, pair, low_limit=None, high_limit=None, log=False,
          integer=False):
    kind = int if integer else (int, float)
    if not (isinstance(pair, (tuple, list)) and len(pair) == 2
            and all(isinstance(v, kind) and not isinstance(v, bool)
                    and math.isfinite(v) for v in pair)):
        raise ValueError(
            f"{name} must be a (low, high) pair of "
            f"{'integers' if integer else 'numbers'}, got {pair!r}.")
    low, high = pair
    if low > high:
        raise ValueError(
            f"{name}: the minimum ({low}) is above the maximum ({high}).")
    if log and low <= 0:
        raise ValueError(
            f"{name} is searched on a log scale: its bounds must be "
            f"positive, got {pair!r}.")
    if low_limit is not None and low < low_limit:
        raise ValueError(f"{name} must be ≥ {low_limit}, got {pair!r}.")
    if high_limit is not None and high > high_limit:
        raise ValueError(f"{name} must be ≤ {high_limit}, got {pair!r}.")


def _choices(name, values, allowed):
    if (isinstance(values, str) or not values
            or any(v not in allowed for v in values)):
        raise ValueError(
            f"{name} must be a non-empty subset of {list(allowed)}, got "
            f"{values!r}.")


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """Bounds of the RTS search; the defaults are our recommendation.

    Attributes:
        base_methods: the steps the controls may drive.
        radius_scale: `(low, high)` of ρ's first value, in units of the
            step's own default ρ (`methods.Method.default_radius`:
            PUGD 1, SAM 0.05), log scale.
        radius_decay: `(low, high)` of ρ's last value ÷ its first, log
            scale (≤ 1: ρ shrinks or stays).
        radius_shapes: shapes of ρ (`keras_rts.schedules.SHAPES`;
            `constant` keeps the first value).
        grad_scale_schedules: `"method"` (the step's own constant λ) and/or
            `"linear"` (λ from `grad_scale_first` to `grad_scale_last`).
        grad_scale_first: `(low, high)` of λ at the first epoch.
        grad_scale_last: `(low, high)` of λ at the last.
        timings: `"fixed"` (perturb from `start_fraction` of the epochs),
            `"lr"` (once the learning rate is at or below `lr_fraction` of
            its peak) and/or `"interval"` (the method's step on every
            `perturb_every`-th step of the whole run).
        start_fraction: `(low, high)` of the fixed start, within [0, 1).
        lr_fraction: `(low, high)` of the learning-rate fraction, in
            (0, 1), log scale.
        perturb_every: `(low, high)` of the interval, integers ≥ 1.
        lr: `(low, high)` of the learning rate (log scale), or `None` to
            keep the settings' learning rate.

    The default timing ranges perturb at most a quarter of the steps under
    a cosine-decayed learning rate: at most 1.25× SGD's gradient
    evaluations.
    """

    base_methods: Tuple[str, ...] = ("pugd", "sam")
    radius_scale: Tuple[float, float] = (0.2, 5.0)
    radius_decay: Tuple[float, float] = (0.01, 1.0)
    radius_shapes: Tuple[str, ...] = ("constant", "cosine", "linear")
    grad_scale_schedules: Tuple[str, ...] = GRAD_SCALE_SCHEDULES
    grad_scale_first: Tuple[float, float] = (0.0, 1.5)
    grad_scale_last: Tuple[float, float] = (0.0, 1.5)
    timings: Tuple[str, ...] = TIMINGS
    start_fraction: Tuple[float, float] = (0.75, 0.95)
    lr_fraction: Tuple[float, float] = (0.005, 0.146)
    perturb_every: Tuple[int, int] = (4, 12)
    lr: Optional[Tuple[float, float]] = None

    def __post_init__(self):
        _choices("base_methods", self.base_methods, BASE_METHODS)
        _pair("radius_scale", self.radius_scale, log=True)
        _pair("radius_decay", self.radius_decay, log=True, high_limit=1)
        _choices("radius_shapes", self.radius_shapes, schedules.SHAPES)
        _choices("grad_scale_schedules", self.grad_scale_schedules,
                 GRAD_SCALE_SCHEDULES)
        _pair("grad_scale_first", self.grad_scale_first, low_limit=0)
        _pair("grad_scale_last", self.grad_scale_last, low_limit=0)
        _choices("timings", self.timings, TIMINGS)
        _pair("start_fraction", self.start_fraction, low_limit=0)
        if not self.start_fraction[1] < 1:
            raise ValueError(f"start_fraction must lie in [0, 1), got "
                             f"{self.start_fraction!r}.")
        _pair("lr_fraction", self.lr_fraction, log=True)
        if not self.lr_fraction[1] < 1:
            raise ValueError(f"lr_fraction must lie in (0, 1), got "
                             f"{self.lr_fraction!r}.")
        _pair("perturb_every", self.perturb_every, low_limit=1,
              integer=True)
        if self.lr is not None:
            _pair("lr", self.lr, log=True)


@dataclasses.dataclass(frozen=True)
class RTSConfig:
    """One trial's RTS hyperparameters, as `RTSModel` arguments and callbacks.

    Attributes:
        epochs: the run's length, over which the schedules run.
        base_method: the `RTSModel` method.
        radius: `(first, last)` ρ.
        radius_shape: shape of ρ.
        grad_scale: `(first, last)` λ.
        grad_scale_shape: shape of λ.
        timing: `"fixed"`, `"lr"` or `"interval"`.
        start_fraction: the fixed timing's start.
        lr_fraction: the lr timing's fraction.
        perturb_every: the interval (1 unless `timing="interval"`).
        lr: the learning rate, or `None` if not searched.
    """

    epochs: int
    base_method: str
    radius: Tuple[float, float]
    radius_shape: str
    grad_scale: Tuple[float, float]
    grad_scale_shape: str
    timing: str
    start_fraction: Optional[float] = None
    lr_fraction: Optional[float] = None
    perturb_every: int = 1
    lr: Optional[float] = None

    def model_kwargs(self) -> dict:
        """The `RTSModel` arguments (besides the network)."""
        return dict(method=self.base_method, radius=self.radius[0],
                    grad_scale=self.grad_scale[0])

    def callbacks(self) -> list:
        """The trial's callbacks (`keras_rts.callbacks.rts`)."""
        timing = {"fixed": dict(start_fraction=self.start_fraction),
                  "lr": dict(lr_fraction=self.lr_fraction),
                  "interval": dict(start_epoch=0,
                                   perturb_every=self.perturb_every),
                  }[self.timing]
        return rts_callbacks.rts(
            self.epochs, radius=self.radius, radius_shape=self.radius_shape,
            grad_scale=self.grad_scale,
            grad_scale_shape=self.grad_scale_shape, **timing)


def rts_config(hp, epochs: int, space: Optional[SearchSpace] = None
               ) -> RTSConfig:
    """Declares the RTS hyperparameters on `hp` and returns their values.

    Call it in your `HyperModel`'s `build` (for `model_kwargs()`) and `fit`
    (for `callbacks()`): KerasTuner gives the same values in both. Every
    hyperparameter of the space is declared at each call, so the tuner
    knows them all after the first.

    Args:
        hp: a `keras_tuner.HyperParameters`.
        epochs: the run's length (the epochs of `fit`).
        space: the `SearchSpace` (default: ours).

    Returns:
        An `RTSConfig`.

    Example:

    ```python
    class MyHyperModel(keras_tuner.HyperModel):
        def build(self, hp):
            config = keras_rts.tuning.rts_config(hp, epochs=30)
            model = keras_rts.RTSModel(make_network(), **config.model_kwargs())
            model.compile(optimizer=keras.optimizers.SGD(
                keras.optimizers.schedules.CosineDecay(0.1, 30 * steps)),
                loss="sparse_categorical_crossentropy",
                metrics=["accuracy"])
            return model

        def fit(self, hp, model, *args, callbacks=(), **kwargs):
            config = keras_rts.tuning.rts_config(hp, epochs=30)
            return model.fit(*args, callbacks=[*callbacks,
                                               *config.callbacks()],
                             **kwargs)
    ```
    """
    space = space or SearchSpace()
    epochs = rts_callbacks._check_int("epochs", epochs, minimum=1)
    base = hp.Choice("base_method", list(space.base_methods))
    scale = hp.Float("radius_scale", *space.radius_scale, sampling="log")
    decay = hp.Float("radius_decay", *space.radius_decay, sampling="log")
    radius_shape = hp.Choice("radius_shape", list(space.radius_shapes))
    lam = hp.Choice("grad_scale_schedule", list(space.grad_scale_schedules))
    lam_first = hp.Float("grad_scale_first", *space.grad_scale_first)
    lam_last = hp.Float("grad_scale_last", *space.grad_scale_last)
    timing = hp.Choice("timing", list(space.timings))
    start_fraction = hp.Float("start_fraction", *space.start_fraction)
    lr_fraction = hp.Float("lr_fraction", *space.lr_fraction,
                           sampling="log")
    every = hp.Int("perturb_every", *space.perturb_every)
    lr = (hp.Float("lr", *space.lr, sampling="log")
          if space.lr is not None else None)

    first = scale * methods.METHODS[base].default_radius
    radius = ((first, first) if radius_shape == "constant"
              else (first, first * decay))
    if lam == "method":
        own = methods.METHODS[base].default_grad_scale
        grad_scale, grad_scale_shape = (own, own), "constant"
    else:
        grad_scale, grad_scale_shape = (lam_first, lam_last), "linear"
    return RTSConfig(
        epochs=epochs, base_method=base, radius=radius,
        radius_shape=radius_shape, grad_scale=grad_scale,
        grad_scale_shape=grad_scale_shape, timing=timing,
        start_fraction=start_fraction if timing == "fixed" else None,
        lr_fraction=lr_fraction if timing == "lr" else None,
        perturb_every=every if timing == "interval" else 1, lr=lr)


def searched(epochs: int) -> RTSConfig:
    """The configuration the KerasTuner search chose on held-out CIFAR-10
    training images (docs/tuning.md; the recipes' `rts_searched`), for a
    run of `epochs` epochs: SAM's step from 0.813 of the run, ρ constant at
    3.972 × SAM's 0.05, λ linear from 0.03374 to 0.4884 — 1.2× SGD's
    gradient evaluations. How it does on test sets, and where it does not
    pay: docs/guide.md.

    Example:

    ```python
    config = keras_rts.tuning.searched(epochs=60)
    model = keras_rts.RTSModel(net, **config.model_kwargs())
    model.compile(...)
    model.fit(..., epochs=60, callbacks=config.callbacks())
    ```
    """
    radius = 3.972 * methods.METHODS["sam"].default_radius
    return RTSConfig(
        epochs=rts_callbacks._check_int("epochs", epochs, minimum=1),
        base_method="sam", radius=(radius, radius), radius_shape="constant",
        grad_scale=(0.03374, 0.4884), grad_scale_shape="linear",
        timing="fixed", start_fraction=0.813)
