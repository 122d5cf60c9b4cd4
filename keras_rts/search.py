"""KerasTuner search over the RTS hyperparameters, on the recipes' data.

`RTSHyperModel` builds and fits a trial of `keras_rts.tuning.rts_config`'s
space from a `keras_rts.experiment.Settings`, scores it on training images
held out of training, and gives the recipe command that reproduces it
(`trial_settings`); `make_tuner` makes the KerasTuner tuner over it,
`trials_table` and the confirmation (`confirmation_arms`,
`confirmed_choice`) report and choose.

The objective is `score`: the final validation top-1, optionally made
cost-aware — bounded (`max_cost_fraction`: trials that cost more than this
fraction of PUGD's gradient evaluations score −1) or traded
(`cost_weight`: `score = top-1 − cost_weight · cost_fraction`). Each
trial's metrics also carry `val_accuracy`, `grad_evals`, `cost_fraction`
and the `radius`, `grad_scale` and `perturb` of its last epoch.

Part of the recipe layer: needs `pip install 'keras_rts[recipes]'`.
"""

import dataclasses
import math
import warnings

import keras

from keras_rts import _extras
from keras_rts import data as data_lib
from keras_rts import experiment
from keras_rts import models as models_lib
from keras_rts.model import RTSModel
from keras_rts.tuning import SearchSpace, rts_config

keras_tuner = _extras.require("keras_tuner", "keras_rts.search")

OBJECTIVE = keras_tuner.Objective("score", direction="max")


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
    hypermodel = keras_rts.search.RTSHyperModel(settings, 5000)
    tuner = keras_tuner.BayesianOptimization(
        hypermodel, keras_rts.search.OBJECTIVE, max_trials=30,
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
        self.requested_space = space or SearchSpace()
        self.space, self.space_note = runnable_space(
            settings, self.requested_space)
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


def _round_up(value, digits=3):
    """`value` rounded up to `digits` significant digits."""
    scale = 10 ** (digits - 1 - math.floor(math.log10(value)))
    return math.ceil(value * scale) / scale


def runnable_space(settings, space):
    """The part of `space` whose every trial can run with `settings`.

    A trial is refused at the start of its `fit` if its step cannot run
    with the settings (LookSAM and Friendly-SAM keep their memory for the
    whole batch: no `sub_batch_size`) or if its learning-rate timing never
    switches on: with the recipes' cosine decay over `settings.epochs`, the
    learning rate at the start of the last epoch is the lowest fraction of
    its peak a run reaches. Such trials are found here, before the first.

    Returns:
        `(space, note)`: the space with `lr_fraction`'s low bound raised to
        the lowest fraction the run reaches (or `"lr"` left out of the
        timings if none of its range is reached) and a sentence saying so,
        or `(space, None)` when every trial can run.

    Raises:
        ValueError: naming the `--search-…` flag, if a searched step cannot
            run with the settings, or no timing can.
    """
    for name in space.base_methods:
        try:
            experiment.validate(dataclasses.replace(
                settings, method="rts", base_method=name),
                refuse_unused=False)
        except ValueError as e:
            raise ValueError(
                f"--search-base-methods: {name} cannot run with these "
                f"settings ({e}); leave it out of the search.") from None
    if "lr" not in space.timings:
        return space, None
    rates = [float(keras.ops.convert_to_numpy(
        experiment.learning_rate(settings, 1)(epoch)))
        for epoch in range(settings.epochs)]
    lowest = _round_up(rates[-1] / max(rates))
    low, high = space.lr_fraction
    if low >= lowest:
        return space, None
    why = (f"with --epochs {settings.epochs} the learning rate falls to "
           f"{lowest:g} of its peak at the start of the last epoch, no "
           f"lower: an lr timing below that would never switch on")
    if high >= lowest:
        return (dataclasses.replace(space, lr_fraction=(lowest, high)),
                f"lr_fraction searched in [{lowest:g}, {high:g}], not "
                f"[{low:g}, {high:g}]: {why}.")
    timings = tuple(t for t in space.timings if t != "lr")
    if not timings:
        raise ValueError(
            f"--search-lr-fraction: {why}, and the range [{low:g}, {high:g}] "
            f"is all below it: raise its bounds, lengthen --epochs or add "
            f"other --search-timings.")
    return (dataclasses.replace(space, timings=timings),
            f"the lr timing is left out of the search: {why}, and "
            f"--search-lr-fraction's [{low:g}, {high:g}] is all below it.")


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
        seed: the search's seed; KerasTuner's is `1 + seed % (2**32 − 1)`,
            as it takes 0 for no seed (a search that would not repeat).
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
                  project_name=project_name, overwrite=overwrite,
                  seed=1 + seed % (2**32 - 1))
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


def best_trial(tuner):
    """The completed trial of the best score, or `None` if none completed
    (KerasTuner's `get_best_trials` falls back on failed trials)."""
    completed = [t for t in tuner.oracle.get_best_trials(1)
                 if t.status == keras_tuner.engine.trial.TrialStatus.COMPLETED]
    return completed[0] if completed else None


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
