"""KerasTuner search over the RTS hyperparameters.

`RTSHyperModel` is a `keras_tuner.HyperModel` whose space covers the RTS
controls — the radius maximum and minimum (log scale), the radius shape, the
start of the perturbation (a fraction of the epochs), the gradient-scale
start and end, and optionally the learning rate. Every hyperparameter is
declared in `declare_hyperparameters`, so the tuner knows them all before
the first trial; the callback hyperparameters are applied in `fit`, beside
the tuner's own callbacks.

The objective is `score`: the final validation top-1, optionally made
cost-aware — bounded (`max_cost_fraction`: trials that cost more than this
fraction of PUGD's gradient evaluations score −1) or traded
(`cost_weight`: `score = top-1 − cost_weight · cost_fraction`). Each
trial's metrics also carry `val_accuracy`, `grad_evals`, `cost_fraction`
and the `radius`, `grad_scale` and `perturb` of its last epoch.

Works with `RandomSearch`, `BayesianOptimization` and `Hyperband`: the
schedules are keyed on the absolute epoch over `settings.epochs`, so a
Hyperband trial resumed from an earlier one continues them exactly.
"""

import dataclasses
import math
from typing import Optional, Tuple

import keras
import keras_tuner

from keras_rts import data as data_lib
from keras_rts import experiment
from keras_rts import models as models_lib
from keras_rts import schedules
from keras_rts.model import RTSModel

OBJECTIVE = keras_tuner.Objective("score", direction="max")


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """Bounds of the RTS search; the defaults are our recommendation.

    Attributes:
        radius_max: `(low, high)` of ρ_max, sampled on a log scale.
        radius_min: `(low, high)` of ρ_min, log scale; its high bound must
            not exceed `radius_max`'s low bound, so that ρ_min ≤ ρ_max.
        radius_shapes: shapes to choose from (`keras_rts.schedules.SHAPES`
            except `constant`).
        start_fraction: `(low, high)` of the perturbation's start, as a
            fraction of the epochs, within [0, 1).
        grad_scale_start: `(low, high)` of λ at the first epoch.
        grad_scale_end: `(low, high)` of λ at the last.
        lr: `(low, high)` of the learning rate (log scale), or `None` to
            keep the settings' learning rate.
    """

    radius_max: Tuple[float, float] = (1.0, 5.0)
    radius_min: Tuple[float, float] = (0.01, 1.0)
    radius_shapes: Tuple[str, ...] = ("cosine", "quarter_cosine", "linear")
    start_fraction: Tuple[float, float] = (0.0, 0.8)
    grad_scale_start: Tuple[float, float] = (0.5, 1.5)
    grad_scale_end: Tuple[float, float] = (0.0, 1.0)
    lr: Optional[Tuple[float, float]] = None

    def __post_init__(self):
        def bounds(name, low_limit=None, log=False):
            pair = getattr(self, name)
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2
                    and all(isinstance(v, (int, float)) and math.isfinite(v)
                            for v in pair)):
                raise ValueError(
                    f"{name} must be a (low, high) pair of numbers, got "
                    f"{pair!r}.")
            low, high = pair
            if low > high:
                raise ValueError(
                    f"{name}: the minimum ({low}) is above the maximum "
                    f"({high}).")
            if log and low <= 0:
                raise ValueError(
                    f"{name} is searched on a log scale: its bounds must be "
                    f"positive, got {pair!r}.")
            if low_limit is not None and low < low_limit:
                raise ValueError(f"{name} must be ≥ {low_limit}, got {pair!r}.")

        bounds("radius_max", log=True)
        bounds("radius_min", log=True)
        bounds("start_fraction")
        bounds("grad_scale_start", low_limit=0)
        bounds("grad_scale_end", low_limit=0)
        if self.lr is not None:
            bounds("lr", log=True)
        low, high = self.start_fraction
        if not (0 <= low and high < 1):
            raise ValueError(
                f"start_fraction must lie in [0, 1), got {self.start_fraction!r}.")
        if self.radius_min[1] > self.radius_max[0]:
            raise ValueError(
                f"radius_min's maximum ({self.radius_min[1]}) is above "
                f"radius_max's minimum ({self.radius_max[0]}): a trial could "
                "draw a minimum above the maximum.")
        shapes = [s for s in schedules.SHAPES if s != "constant"]
        if not self.radius_shapes or any(
                s not in shapes for s in self.radius_shapes):
            raise ValueError(
                f"radius_shapes must be a non-empty subset of {shapes}, got "
                f"{self.radius_shapes!r}.")


class RTSHyperModel(keras_tuner.HyperModel):
    """Builds and fits PUGD with RTS controls drawn from a `SearchSpace`.

    The data, the network and the other settings come from a
    `keras_rts.experiment.Settings`; the model is validated on the
    `validation_examples` training images held out of training.

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
    tuner = keras_tuner.RandomSearch(hypermodel, keras_rts.tuning.OBJECTIVE,
                                     max_trials=20, directory="tuning")
    tuner.search()
    ```
    """

    def __init__(self, settings, validation_examples, space=None,
                 max_cost_fraction=None, cost_weight=0.0, verbose=0):
        super().__init__(name="rts")
        settings = dataclasses.replace(settings, method="rts")
        experiment.validate(settings)
        if validation_examples < settings.batch_size:
            raise ValueError(
                f"validation_examples must be at least one batch "
                f"({settings.batch_size}), got {validation_examples!r}.")
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
        space = self.space
        hp.Float("radius_max", *space.radius_max, sampling="log")
        hp.Float("radius_min", *space.radius_min, sampling="log")
        hp.Choice("radius_shape", list(space.radius_shapes))
        hp.Float("start_fraction", *space.start_fraction)
        hp.Float("grad_scale_start", *space.grad_scale_start)
        hp.Float("grad_scale_end", *space.grad_scale_end)
        if space.lr is not None:
            hp.Float("lr", *space.lr, sampling="log")

    def trial_settings(self, hp):
        """The `Settings` that reproduce a trial with the training recipe."""
        values = hp.values
        return dataclasses.replace(
            self.settings,
            method="rts",
            radius=(values["radius_max"], values["radius_min"]),
            radius_shape=values["radius_shape"],
            start_fraction=None,
            start_epoch=self._start_epoch(values["start_fraction"]),
            grad_scale=(values["grad_scale_start"],
                        values["grad_scale_end"]),
            lr=values.get("lr", self.settings.lr),
            validation_examples=self.validation_examples,
        )

    def _start_epoch(self, fraction):
        return int(math.floor(fraction * self.settings.epochs))

    def _steps(self):
        return experiment.steps_per_epoch(
            dataclasses.replace(self.settings,
                                validation_examples=self.validation_examples))

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
        history = model.fit(
            train, epochs=epochs, initial_epoch=initial_epoch,
            steps_per_epoch=self._steps(), validation_data=validation,
            callbacks=list(callbacks or []) + method_callbacks,
            verbose=self.verbose, shuffle=False)
        logs = {k: v[-1] for k, v in history.history.items()}
        grad_evals = int(model.grad_evals.numpy())
        cost_fraction = grad_evals / (2 * self._steps() * epochs)
        score = logs["val_accuracy"] - self.cost_weight * cost_fraction
        if (self.max_cost_fraction is not None
                and cost_fraction > self.max_cost_fraction):
            score = -1.0
        return {
            "score": float(score),
            "val_accuracy": float(logs["val_accuracy"]),
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
               max_trials=10, overwrite=False, seed=0, hyperband_factor=3):
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
    """
    if kind not in TUNERS:
        raise ValueError(
            f"Unknown tuner={kind!r}: expected one of {sorted(TUNERS)}.")
    common = dict(objective=OBJECTIVE, directory=directory,
                  project_name=project_name, overwrite=overwrite, seed=seed)
    if kind == "hyperband":
        return keras_tuner.Hyperband(
            hypermodel, max_epochs=hypermodel.settings.epochs,
            factor=hyperband_factor,
            **common)
    return TUNERS[kind](hypermodel, max_trials=max_trials, **common)


def trials_table(tuner):
    """Every trial's hyperparameters and metrics, best first.

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
    return sorted(rows, key=lambda r: -math.inf if r["score"] is None
                  else r["score"], reverse=True)


def recipe_command(settings):
    """The training-recipe command line that reproduces `settings`."""
    script = ("recipes/tiny_imagenet.py" if settings.dataset == "tiny_imagenet"
              else "recipes/cifar.py")
    return f"python {script} " + " ".join(experiment.settings_to_flags(
        settings))
