"""KerasTuner search over the RTS hyperparameters.

Two levels:

- `rts_config(hp, epochs, space)` declares the RTS hyperparameters on any
  KerasTuner `HyperParameters` and returns an `RTSConfig`, which gives the
  `RTSModel` arguments (`model_kwargs()`) and the callbacks
  (`callbacks()`) of the trial: use it inside your own `HyperModel`, with
  your own network and data (docs/tuning.md).
- `RTSHyperModel` is that, for the recipes' datasets and networks: it
  builds and fits a trial from a `keras_rts.experiment.Settings`, scores it
  on training images held out of training, and gives the recipe command
  that reproduces it (`trial_settings`).

The space (`SearchSpace`) covers the step the controls drive (`pugd`,
`sam`), ρ (its first value in units of the step's own default ρ, the ratio
of last to first, and the shape, constant included), λ (the step's own
constant λ — PUGD's 1, SAM's 0 — or a linear schedule), and the timing: a
fixed start (a fraction of the epochs), a late phase tied to the learning
rate (`LearningRateTrigger`), or an interval (the method's step on every
k-th step). The default ranges keep every trial within 1.25× SGD's
gradient evaluations (0.625 of PUGD's) under a cosine-decayed learning
rate.

The objective is `score`: the final validation top-1, optionally made
cost-aware — bounded (`max_cost_fraction`: trials that cost more than this
fraction of PUGD's gradient evaluations score −1) or traded
(`cost_weight`: `score = top-1 − cost_weight · cost_fraction`). Each
trial's metrics also carry `val_accuracy`, `grad_evals`, `cost_fraction`
and the `radius`, `grad_scale` and `perturb` of its last epoch.
"""

import dataclasses
import math
import warnings
from typing import Optional, Tuple

import keras
import keras_tuner

from keras_rts import callbacks as rts_callbacks
from keras_rts import data as data_lib
from keras_rts import directions
from keras_rts import experiment
from keras_rts import models as models_lib
from keras_rts import schedules
from keras_rts.model import RTSModel

OBJECTIVE = keras_tuner.Objective("score", direction="max")

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
            step's own default ρ (`directions.Method.default_radius`:
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
        _choices("base_methods", self.base_methods, experiment.BASE_METHODS)
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

    def model_kwargs(self):
        """The `RTSModel` arguments (besides the network)."""
        return dict(method=self.base_method, radius=self.radius[0],
                    grad_scale=self.grad_scale[0])

    def callbacks(self):
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


def rts_config(hp, epochs, space=None):
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

    first = scale * directions.METHODS[base].default_radius
    radius = ((first, first) if radius_shape == "constant"
              else (first, first * decay))
    if lam == "method":
        own = directions.METHODS[base].default_grad_scale
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


class RTSHyperModel(keras_tuner.HyperModel):
    """Builds and fits RTS with controls drawn from a `SearchSpace`.

    The data, the network and the other settings come from a
    `keras_rts.experiment.Settings`; the model is validated on the
    `validation_examples` training images held out of training (never the
    test set), once, after the trial's last epoch.

    Args:
        settings: the run's settings (`method` is ignored: RTS is searched;
            `epochs` is the length of the schedules, the tuner's maximum).
        validation_examples: training images held out for validation.
        space: the `SearchSpace`.
        max_cost_fraction: if set, trials costing more than this fraction
            of PUGD's gradient evaluations score −1.
        cost_weight: weight of the cost fraction subtracted from the score.
        verbose: Keras `fit` verbosity.

    Example:

    ```python
    hypermodel = keras_rts.tuning.RTSHyperModel(settings, 5000)
    tuner = keras_tuner.BayesianOptimization(
        hypermodel, keras_rts.tuning.OBJECTIVE, max_trials=30,
        directory="tuning")
    tuner.search()
    ```
    """

    def __init__(self, settings, validation_examples, space=None,
                 max_cost_fraction=None, cost_weight=0.0, verbose=0):
        super().__init__(name="rts")
        settings = dataclasses.replace(
            settings, method="rts", base_method=None,
            validation_examples=validation_examples)
        experiment.validate(settings)
        if validation_examples < 1:
            raise ValueError(
                f"validation_examples must be at least 1, got "
                f"{validation_examples!r}.")
        if max_cost_fraction is not None and not max_cost_fraction > 0:
            raise ValueError(
                f"max_cost_fraction must be positive, got "
                f"{max_cost_fraction!r}.")
        if not (math.isfinite(cost_weight) and cost_weight >= 0):
            raise ValueError(
                f"cost_weight must be finite and ≥ 0, got {cost_weight!r}.")
        self.settings = settings
        self.validation_examples = validation_examples
        self.space = space or SearchSpace()
        self.max_cost_fraction = max_cost_fraction
        self.cost_weight = cost_weight
        self.verbose = verbose

    def declare_hyperparameters(self, hp):
        rts_config(hp, self.settings.epochs, self.space)

    def trial_settings(self, hp):
        """The `Settings` that reproduce a trial with the training recipe."""
        c = rts_config(hp, self.settings.epochs, self.space)
        timing = dict(
            fixed=dict(timing="fixed", start_fraction=c.start_fraction),
            lr=dict(timing="lr", lr_fraction=c.lr_fraction),
            interval=dict(timing="fixed", start_epoch=0,
                          perturb_every=c.perturb_every))[c.timing]
        fields = dict(start_fraction=None, start_epoch=None, end_epoch=None,
                      perturb_every=1)
        fields.update(timing)
        return dataclasses.replace(
            self.settings, method="rts", base_method=c.base_method,
            radius=c.radius, radius_shape=c.radius_shape,
            grad_scale=c.grad_scale, grad_scale_shape=c.grad_scale_shape,
            lr=c.lr or self.settings.lr, **fields)

    def score(self, val_accuracy, cost_fraction):
        """The objective: top-1, less `cost_weight · cost_fraction`; −1 for a
        trial above `max_cost_fraction` of PUGD's gradient evaluations."""
        if (self.max_cost_fraction is not None
                and cost_fraction > self.max_cost_fraction):
            return -1.0
        return val_accuracy - self.cost_weight * cost_fraction

    def _steps(self):
        return experiment.steps_per_epoch(self.settings)

    def build(self, hp):
        s = self.trial_settings(hp)
        keras.utils.set_random_seed(s.seed)  # as the recipe does
        num_classes, input_shape = data_lib.shape(s.dataset, s.data_dir,
                                                  s.image_size)
        model_kwargs, _ = experiment.method_plan(s)
        model = RTSModel(models_lib.get(s.model, num_classes, input_shape),
                         **model_kwargs)
        experiment.compile_model(model, s, self._steps())
        return model

    def fit(self, hp, model, *args, callbacks=None, epochs=None,
            initial_epoch=0, **kwargs):
        s = self.trial_settings(hp)
        epochs = epochs or s.epochs
        if epochs > s.epochs:
            raise ValueError(
                f"The tuner asks for {epochs} epochs, more than the "
                f"schedules' settings.epochs={s.epochs}.")
        train, validation = experiment.datasets(s, initial_epoch)
        _, method_callbacks = experiment.method_plan(s)
        with warnings.catch_warnings():
            # A Hyperband trial trains part of the run: expected.
            warnings.filterwarnings("ignore", message=r"fit\(epochs=")
            history = model.fit(
                train, epochs=epochs, initial_epoch=initial_epoch,
                steps_per_epoch=self._steps(),
                # The gap trigger reads the validation loss every epoch;
                # otherwise the trial is validated once, at its end.
                validation_data=validation if s.timing == "gap" else None,
                callbacks=list(callbacks or []) + method_callbacks,
                verbose=self.verbose, shuffle=False)
        logs = {k: v[-1] for k, v in history.history.items()}
        _, val_accuracy = model.evaluate(validation, verbose=0)
        grad_evals = int(model.grad_evals.numpy())
        cost_fraction = grad_evals / (2 * self._steps() * epochs)
        score = self.score(val_accuracy, cost_fraction)
        return {
            "score": float(score),
            "val_accuracy": float(val_accuracy),
            "grad_evals": float(grad_evals),
            "cost_fraction": float(cost_fraction),
            "radius": float(logs["radius"]),
            "grad_scale": float(logs["grad_scale"]),
            "perturb": float(logs["perturb"]),
        }


TUNERS = {
    "random": keras_tuner.RandomSearch,
    "bayesian": keras_tuner.BayesianOptimization,
    "hyperband": keras_tuner.Hyperband,
}


def make_tuner(kind, hypermodel, directory, project_name="rts",
               max_trials=10, overwrite=False, seed=0, hyperband_factor=3,
               initial_points=10, on_trial_end=None):
    """A KerasTuner tuner of `kind` over `hypermodel`'s space.

    Args:
        kind: `"random"`, `"bayesian"` or `"hyperband"`.
        hypermodel: an `RTSHyperModel`.
        directory: folder of the tuner's projects.
        project_name: the project's subfolder.
        max_trials: trials of random and Bayesian searches (Hyperband's
            count follows from `settings.epochs`).
        overwrite: start over, deleting the project's state.
        seed: the tuner's seed.
        hyperband_factor: Hyperband's reduction factor.
        initial_points: random trials before Bayesian optimisation models
            the objective (KerasTuner's default, 3 per hyperparameter, would
            be 33 for our space).
        on_trial_end: optionally, `f(tuner)` called after every trial
            (e.g. to write the trials so far).
    """
    if kind not in TUNERS:
        raise ValueError(
            f"Unknown tuner={kind!r}: expected one of {sorted(TUNERS)}.")
    common = dict(objective=OBJECTIVE, directory=directory,
                  project_name=project_name, overwrite=overwrite, seed=seed)
    base = tuner_class = TUNERS[kind]
    if on_trial_end is not None:
        def report(self, trial):
            base.on_trial_end(self, trial)
            on_trial_end(self)
        tuner_class = type(base.__name__, (base,), {"on_trial_end": report})
    if kind == "hyperband":
        return tuner_class(
            hypermodel, max_epochs=hypermodel.settings.epochs,
            factor=hyperband_factor, **common)
    if kind == "bayesian":
        common["num_initial_points"] = initial_points
    return tuner_class(hypermodel, max_trials=max_trials, **common)


def trials_table(tuner):
    """Every trial's hyperparameters and metrics, best first (ties by id).

    Returns:
        A list of dicts: `trial_id`, `status`, the hyperparameters, and
        `score`, `val_accuracy`, `grad_evals`, `cost_fraction`.
    """
    rows = []
    for trial in tuner.oracle.trials.values():
        row = {"trial_id": trial.trial_id, "status": trial.status}
        row.update({k: v for k, v in trial.hyperparameters.values.items()})
        for name in ("score", "val_accuracy", "grad_evals", "cost_fraction"):
            row[name] = (trial.metrics.get_last_value(name)
                         if trial.metrics.exists(name) else None)
        rows.append(row)
    return sorted(rows, key=lambda r: (
        math.inf if r["score"] is None else -r["score"], r["trial_id"]))


def confirmation_arms(hypermodel, trials):
    """SGD and a search's best trials, to be re-run with new seeds.

    A trial's validation score is one seed's, and the best of many trials
    is the luckiest as much as the best (a 5,000-image score alone has a
    standard error of about 0.6 points). Re-run with seeds the search did
    not use, on the same held-out split, beside SGD, the trials' means are
    unbiased: that is what one is chosen by.

    Args:
        hypermodel: the search's `RTSHyperModel`.
        trials: KerasTuner trials, e.g. `tuner.oracle.get_best_trials(3)`;
            those that scored −1 (over the cost bound) are left out.

    Returns:
        `{"sgd": Settings, "trial_<id>": Settings, …}` for
        `keras_rts.comparison.compare_arms`.
    """
    arms = {"sgd": dataclasses.replace(
        hypermodel.settings, method="sgd", base_method=None)}
    for trial in trials:
        if trial.score is not None and trial.score > -1:
            arms[f"trial_{trial.trial_id}"] = hypermodel.trial_settings(
                trial.hyperparameters)
    return arms


def confirmed_choice(aggregates):
    """The trial a confirmation chooses: the best mean final top-1.

    Args:
        aggregates: the confirmation's `aggregates` (the results of
            `keras_rts.comparison.compare_arms` over `confirmation_arms`).

    Returns:
        The trial's id, or `None` if no trial was confirmed.
    """
    means = {arm[len("trial_"):]: a["final_test_top1"]["mean"]
             for arm, a in aggregates.items() if arm.startswith("trial_")}
    return max(means, key=means.get) if means else None


def recipe_command(settings):
    """The training-recipe command line that reproduces `settings`."""
    script = ("recipes/tiny_imagenet.py" if settings.dataset == "tiny_imagenet"
              else "recipes/cifar.py")
    return f"python {script} " + " ".join(experiment.settings_to_flags(
        settings))
