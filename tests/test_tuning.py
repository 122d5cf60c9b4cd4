"""KerasTuner searches over the RTS controls: on small real data, and with
a user's own HyperModel."""

import dataclasses
import json
import math
import os
import subprocess
import sys

import keras
import keras_tuner
import numpy as np
import pytest

import keras_rts
from keras_rts import directions, experiment, methods, search, tuning

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EPOCHS, BATCH, TRAIN = 2, 64, 128
STEPS = TRAIN // BATCH

OWN_RADIUS = {"pugd": 1.0, "sam": 0.05}  # docs/method.md
OWN_GRAD_SCALE = {"pugd": 1.0, "sam": 0.0}  # docs/method.md

SMALL_SPACE = dict(start_fraction=(0.3, 0.6), lr_fraction=(0.55, 0.9),
                   perturb_every=(2, 3))
"""Bounds under which every timing switches within 2 epochs."""


def _settings(tfds_dir):
    return experiment.Settings(
        dataset="cifar10", model="small_resnet", epochs=EPOCHS,
        batch_size=BATCH, train_examples=TRAIN, data_dir=tfds_dir)


def _schedule(shape, first, last, epoch, epochs):
    p = epoch / epochs
    if shape == "constant":
        return first
    if shape == "cosine":
        return last + 0.5 * (first - last) * (1 + math.cos(math.pi * p))
    return first + (last - first) * p  # linear


def expected(hp, epochs, steps, epochs_run=None):
    """What a trial's model must show after `epochs_run` epochs, from its
    hyperparameters alone (cosine-decayed learning rate to 0)."""
    epochs_run = epochs_run or epochs
    base = hp["base_method"]
    first = hp["radius_scale"] * OWN_RADIUS[base]
    last = first if hp["radius_shape"] == "constant" else (
        first * hp["radius_decay"])
    if hp["grad_scale_schedule"] == "method":
        lam = (OWN_GRAD_SCALE[base],) * 2
        lam_shape = "constant"
    else:
        lam, lam_shape = (hp["grad_scale_first"], hp["grad_scale_last"]), \
            "linear"
    if hp["timing"] == "fixed":
        start = math.floor(hp["start_fraction"] * epochs)
    elif hp["timing"] == "lr":
        rates = [0.5 * (1 + math.cos(math.pi * e / epochs))
                 for e in range(epochs)]
        start = next(e for e, r in enumerate(rates)
                     if r <= hp["lr_fraction"] * max(rates))
    else:
        start = 0
    every = hp["perturb_every"] if hp["timing"] == "interval" else 1
    perturbed = [e * steps + b for e in range(start, epochs_run)
                 for b in range(steps) if (e * steps + b) % every == 0]
    last_epoch = epochs_run - 1
    last_step = last_epoch * steps + steps - 1
    return {
        "radius": _schedule(hp["radius_shape"], first, last, last_epoch,
                            epochs),
        "grad_scale": _schedule(lam_shape, *lam, last_epoch, epochs),
        # The last epoch's share of steps that ran the method.
        "perturb": sum(1 for t in perturbed if t >= last_epoch * steps
                       and t <= last_step) / steps,
        "grad_evals": steps * epochs_run + len(perturbed),
    }


def _check_trials_reached_the_model(tuner):
    trials = [t for t in tuner.oracle.trials.values()
              if t.status == "COMPLETED"]
    assert len(trials) >= 3
    for trial in trials:
        hp = trial.hyperparameters.values
        metric = trial.metrics.get_last_value
        want = expected(hp, EPOCHS, STEPS, hp.get("tuner/epochs", EPOCHS))
        for name in ("radius", "grad_scale", "perturb", "grad_evals"):
            assert metric(name) == pytest.approx(want[name], rel=1e-5,
                                                 abs=1e-6), name
        assert metric("score") == metric("val_accuracy")
    return trials


@pytest.mark.parametrize("kind", [
    "random",
    pytest.param("bayesian", marks=pytest.mark.slow),
    pytest.param("hyperband", marks=pytest.mark.slow),
])
def test_search_runs_and_every_trial_reaches_the_model(kind, tfds_dir,
                                                       tmp_path):
    hypermodel = search.RTSHyperModel(
        _settings(tfds_dir), 256, tuning.SearchSpace(**SMALL_SPACE))
    tuner = search.make_tuner(kind, hypermodel, str(tmp_path), max_trials=3,
                              hyperband_factor=2, initial_points=2)
    # Every hyperparameter is known before the first trial.
    assert set(tuner.oracle.hyperparameters.values) >= {
        "base_method", "radius_scale", "radius_decay", "radius_shape",
        "grad_scale_schedule", "grad_scale_first", "grad_scale_last",
        "timing", "start_fraction", "lr_fraction", "perturb_every"}
    tuner.search()
    trials = _check_trials_reached_the_model(tuner)
    if kind == "hyperband":  # some trials continued earlier ones
        assert any(t.hyperparameters.values.get("tuner/initial_epoch", 0) > 0
                   for t in trials)


def test_a_search_over_the_vit_trains_every_trial_with_adamw(tfds_dir,
                                                            tmp_path):
    settings = dataclasses.replace(
        _settings(tfds_dir), model="vit", optimizer="adamw", lr=1e-3,
        weight_decay=0.05, warmup_epochs=1)
    hypermodel = search.RTSHyperModel(settings, 256,
                                      tuning.SearchSpace(**SMALL_SPACE))
    tuner = search.make_tuner("random", hypermodel, str(tmp_path),
                              max_trials=3)
    tuner.search()
    _check_trials_reached_the_model(tuner)
    model = hypermodel.build(tuner.oracle.get_best_trials(1)[0]
                             .hyperparameters)
    # AdamW's decoupled decay, none coupled into the direction.
    assert isinstance(model.optimizer, keras.optimizers.AdamW)
    assert model.optimizer.weight_decay == 0.05
    assert model.weight_decay == 0


# --- a user's own HyperModel ---------------------------------------------

USER_EPOCHS, USER_STEPS = 3, 4


def _user_data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8 * USER_STEPS, 6)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    return x, y


class UserHyperModel(keras_tuner.HyperModel):
    """A user's model and data, RTS's hyperparameters from `rts_config`."""

    def __init__(self, space):
        super().__init__()
        self.space = space

    def build(self, hp):
        config = tuning.rts_config(hp, epochs=USER_EPOCHS, space=self.space)
        network = keras.Sequential([keras.Input((6,)),
                                    keras.layers.Dense(8, activation="relu"),
                                    keras.layers.Dense(2)])
        model = keras_rts.RTSModel(network, **config.model_kwargs())
        model.compile(
            optimizer=keras.optimizers.SGD(
                keras.optimizers.schedules.CosineDecay(
                    0.05, USER_EPOCHS * USER_STEPS)),
            loss=keras.losses.SparseCategoricalCrossentropy(
                from_logits=True),
            metrics=["accuracy"])
        return model

    def fit(self, hp, model, *args, callbacks=(), **kwargs):
        config = tuning.rts_config(hp, epochs=USER_EPOCHS, space=self.space)
        history = model.fit(*args, callbacks=[*callbacks,
                                              *config.callbacks()], **kwargs)
        return {"val_accuracy": history.history["val_accuracy"][-1],
                **{name: float(history.history[name][-1]) for name in
                   ("radius", "grad_scale", "perturb", "grad_evals")}}


@pytest.mark.parametrize("timing", ["fixed", "lr", "interval"])
def test_rts_config_in_a_users_own_hypermodel(timing, tmp_path):
    space = tuning.SearchSpace(timings=(timing,), start_fraction=(0.3, 0.6),
                               lr_fraction=(0.3, 0.9), perturb_every=(2, 3))
    tuner = keras_tuner.RandomSearch(
        UserHyperModel(space), keras_tuner.Objective("val_accuracy", "max"),
        max_trials=3, directory=str(tmp_path), seed=1)
    x, y = _user_data()
    tuner.search(x, y, epochs=USER_EPOCHS, batch_size=8,
                 validation_data=(x, y), verbose=0)
    trials = [t for t in tuner.oracle.trials.values()
              if t.status == "COMPLETED"]
    assert len(trials) == 3
    for trial in trials:
        hp = trial.hyperparameters.values
        want = expected(hp, USER_EPOCHS, USER_STEPS)
        for name in ("radius", "grad_scale", "perturb", "grad_evals"):
            assert trial.metrics.get_last_value(name) == pytest.approx(
                want[name], rel=1e-5, abs=1e-6), name


def test_the_default_space_stays_within_a_quarter_more_than_sgd():
    """Under a cosine learning rate over 60 epochs of 39 steps, the default
    bounds of every timing perturb at most a quarter of the steps."""
    steps, epochs = 39, 60
    space = tuning.SearchSpace()
    for hp in (
        dict(timing="fixed", start_fraction=space.start_fraction[0]),
        dict(timing="lr", lr_fraction=space.lr_fraction[1]),
        dict(timing="interval", perturb_every=space.perturb_every[0]),
    ):
        hp = dict(base_method="pugd", radius_scale=1.0, radius_decay=1.0,
                  radius_shape="constant", grad_scale_schedule="method",
                  **{"start_fraction": 0.5, "lr_fraction": 0.5,
                     "perturb_every": 1, **hp})
        cost = expected(hp, epochs, steps)["grad_evals"] / (steps * epochs)
        assert 1.2 <= cost <= 1.25, hp


@pytest.mark.parametrize("space, match", [
    (dict(radius_scale=(5.0, 1.0)), "radius_scale: the minimum"),
    (dict(radius_decay=(0.0, 0.5)), "log scale"),
    (dict(radius_decay=(0.1, 2.0)), "radius_decay must be ≤ 1"),
    (dict(start_fraction=(-0.1, 0.5)), "start_fraction"),
    (dict(start_fraction=(0.2, 1.0)), "start_fraction"),
    (dict(lr_fraction=(0.1, 1.0)), "lr_fraction"),
    (dict(perturb_every=(0, 4)), "perturb_every"),
    (dict(perturb_every=(2.5, 4)), "integers"),
    (dict(lr=(0.0, 0.1)), "log scale"),
    (dict(grad_scale_last=(float("nan"), 1.0)), "grad_scale_last"),
    (dict(radius_shapes=("spiral",)), "radius_shapes"),
    (dict(base_methods=("sgd",)), "base_methods"),
    (dict(timings=()), "timings"),
    (dict(timings="fixed"), "timings"),
])
def test_bad_search_bounds_fail_before_any_trial(space, match):
    with pytest.raises(ValueError, match=match):
        tuning.SearchSpace(**space)


def _tune(tfds_dir, out, *flags):
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, "recipes", "tune.py"),
         "--dataset", "cifar10", "--preset", "cpu", "--epochs", str(EPOCHS),
         "--train-examples", str(TRAIN), "--batch-size", str(BATCH),
         "--validation-examples", "256", "--data-dir", tfds_dir,
         "--output-dir", out, "--verbose", "0", *flags],
        capture_output=True, text=True, cwd=ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})


SMALL_FLAGS = ("--search-start-fraction", "0.3", "0.6",
               "--search-lr-fraction", "0.55", "0.9",
               "--search-perturb-every", "2", "3")


@pytest.mark.slow
def test_tune_recipe_end_to_end_best_command_reproduces_its_objective(
        tfds_dir, tmp_path):
    out = str(tmp_path / "search")
    result = _tune(tfds_dir, out, "--tuner", "bayesian", "--max-trials", "3",
                   "--initial-points", "2", *SMALL_FLAGS)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(os.path.join(out, "trials.csv")) as f:
        header = f.readline().strip().split(",")
        rows = [line.strip().split(",") for line in f]
    assert len(rows) == 3
    assert {"base_method", "timing", "radius_scale", "score",
            "grad_evals"} <= set(header)
    best_score = float(rows[0][header.index("score")])
    with open(os.path.join(out, "best_command.txt")) as f:
        command = f.read().split()
    assert command[:2] == ["python", "recipes/cifar.py"]
    run_dir = str(tmp_path / "best_run")
    replay = subprocess.run(
        [sys.executable, *command[1:], "--output-dir", run_dir,
         "--verbose", "0"], capture_output=True, text=True, cwd=ROOT)
    assert replay.returncode == 0, replay.stderr[-3000:]
    with open(os.path.join(run_dir, "summary.json")) as f:
        summary = json.load(f)
    assert summary["evaluated_on"] == "validation"
    assert summary["final_test_top1"] == pytest.approx(best_score, abs=1e-6)

    # Re-running continues the search; other settings need --overwrite.
    more = _tune(tfds_dir, out, "--tuner", "bayesian", "--max-trials", "4",
                 "--initial-points", "2", *SMALL_FLAGS)
    assert more.returncode == 0, more.stderr[-3000:]
    with open(os.path.join(out, "trials.csv")) as f:
        assert len(f.readlines()) == 1 + 4
    changed = _tune(tfds_dir, out, "--tuner", "bayesian", "--max-trials", "4",
                    "--lr", "0.05", *SMALL_FLAGS)
    assert changed.returncode == 2 and "--overwrite" in changed.stderr
    assert "other --lr, --initial-points:" in changed.stderr, changed.stderr

    # The confirmation: SGD and the 2 best trials, re-run with a new seed
    # on the same validation split, each trial exactly as its command.
    confirmed = _tune(tfds_dir, out, "--tuner", "bayesian", "--max-trials",
                      "4", "--initial-points", "2", *SMALL_FLAGS,
                      "--confirm-seeds", "1", "--confirm-top", "2")
    assert confirmed.returncode == 0, confirmed.stderr[-3000:]
    with open(os.path.join(out, "trials.csv")) as f:
        header = f.readline().strip().split(",")
        scores = {"trial_" + row[header.index("trial_id")]:
                  float(row[header.index("score")])
                  for row in (line.strip().split(",") for line in f)}
    with open(os.path.join(out, "confirmation", "results.json")) as f:
        results = json.load(f)
    assert results["methods"][0] == "sgd" and len(results["methods"]) == 3
    second = sorted(scores.values())[-2]
    assert all(scores[arm] >= second for arm in results["methods"][1:])
    assert results["seeds"] == [1]
    (sgd,), (best,) = (results["runs"][name] for name in results["methods"][:2])
    assert sgd["settings"]["method"] == "sgd"
    assert sgd["evaluated_on"] == best["evaluated_on"] == "validation"
    with open(os.path.join(out, "best_command.txt")) as f:
        best_flags = f.read().split()[2:]
    parser = experiment.argument_parser("", run_flags=False)
    assert best["settings"] == json.loads(json.dumps(dataclasses.replace(
        experiment.settings_from_args(parser.parse_args(best_flags)),
        seed=1).__dict__))
    # The chosen trial's command trains as its confirmation run, seed apart.
    means = {arm: results["aggregates"][arm]["final_test_top1"]["mean"]
             for arm in results["methods"][1:]}
    chosen = max(means, key=means.get)
    with open(os.path.join(out, "confirmation", "chosen_command.txt")) as f:
        chosen_flags = f.read().split()[2:]
    assert f"chosen by the confirmation: {chosen.replace('_', ' ')}" in (
        confirmed.stdout)
    assert results["runs"][chosen][0]["settings"] == json.loads(json.dumps(
        dataclasses.replace(experiment.settings_from_args(
            parser.parse_args(chosen_flags)), seed=1).__dict__))

    # The same command again reuses every run: the same summaries.
    again = _tune(tfds_dir, out, "--tuner", "bayesian", "--max-trials", "4",
                  "--initial-points", "2", *SMALL_FLAGS,
                  "--confirm-seeds", "1", "--confirm-top", "2")
    assert again.returncode == 0, again.stderr[-3000:]
    with open(os.path.join(out, "confirmation", "results.json")) as f:
        assert json.load(f)["runs"] == results["runs"]

    # --overwrite deletes all the old search wrote, its confirmation
    # included (else chosen_command.txt would name an old trial), and
    # nothing else of the folder.
    with open(os.path.join(out, "notes.txt"), "w") as f:
        f.write("a user's")
    fresh = _tune(tfds_dir, out, "--overwrite", "--tuner", "random",
                  "--max-trials", "1", *SMALL_FLAGS)
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    assert not os.path.exists(os.path.join(out, "confirmation"))
    with open(os.path.join(out, "trials.csv")) as f:
        assert len(f.readlines()) == 1 + 1
    with open(os.path.join(out, "notes.txt")) as f:
        assert f.read() == "a user's"


def test_score_bounds_or_trades_the_cost(tfds_dir):
    bounded = search.RTSHyperModel(_settings(tfds_dir), 256,
                                   max_cost_fraction=0.625)
    assert bounded.score(0.71, 0.625) == 0.71
    assert bounded.score(0.75, 0.626) == -1.0
    traded = search.RTSHyperModel(_settings(tfds_dir), 256, cost_weight=0.1)
    assert traded.score(0.71, 0.6) == pytest.approx(0.71 - 0.06)


def test_confirmation_is_sgd_and_the_best_trials_within_the_cost_bound(
        tfds_dir):
    import types

    hypermodel = search.RTSHyperModel(_settings(tfds_dir), 256,
                                      max_cost_fraction=0.625)
    trials = []
    for trial_id, (base, score) in enumerate(
            [("pugd", 0.70), ("sam", 0.72), ("pugd", -1.0), ("sam", 0.69)]):
        hp = keras_tuner.HyperParameters()
        hypermodel.declare_hyperparameters(hp)
        hp.values["base_method"] = base
        trials.append(types.SimpleNamespace(
            trial_id=f"{trial_id:02d}", score=score, hyperparameters=hp))
    best = sorted(trials, key=lambda t: -t.score)

    arms = search.confirmation_arms(hypermodel, best)
    assert list(arms) == ["sgd", "trial_01", "trial_00", "trial_03"]
    assert arms["sgd"].method == "sgd" and arms["sgd"].base_method is None
    assert arms["trial_01"].base_method == "sam"
    for settings in arms.values():  # the search's held-out split
        assert settings.validation_examples == 256
        assert settings.epochs == EPOCHS and settings.seed == 0
    assert list(search.confirmation_arms(hypermodel, best[:1])) == [
        "sgd", "trial_01"]
    assert list(search.confirmation_arms(hypermodel, [])) == ["sgd"]


def test_trials_table_is_best_first_ties_by_trial_id():
    import types

    from keras_tuner.engine.trial import Trial

    def trial(trial_id, score):
        hp = keras_tuner.HyperParameters()
        hp.Fixed("base_method", "pugd")
        t = Trial(hp, trial_id=trial_id, status="COMPLETED")
        if score is not None:
            t.metrics.register("score", direction="max")
            t.metrics.update("score", score)
        return t

    scores = {"03": 0.70, "00": 0.71, "02": None, "01": 0.70, "04": 0.70}
    # The oracle's own order (a dict) must not decide ties: try two orders.
    for order in (list(scores), sorted(scores, reverse=True)):
        tuner = types.SimpleNamespace(oracle=types.SimpleNamespace(
            trials={i: trial(i, scores[i]) for i in order}))
        rows = search.trials_table(tuner)
        assert [r["trial_id"] for r in rows] == ["00", "01", "03", "04", "02"]
        assert rows[0]["score"] == pytest.approx(0.71)
        assert rows[-1]["score"] is None and rows[0]["base_method"] == "pugd"


def test_the_confirmation_chooses_the_best_mean_of_a_trial():
    def arm(*values):
        return {"final_test_top1": {"mean": float(np.mean(values))}}

    aggregates = {"sgd": arm(0.80, 0.80), "trial_04": arm(0.70, 0.72),
                  "trial_29": arm(0.71, 0.72), "trial_21": arm(0.69, 0.73)}
    assert search.confirmed_choice(aggregates) == "29"
    assert search.confirmed_choice({"sgd": arm(0.7)}) is None


def test_wsam_is_not_among_the_searched_base_methods():
    with pytest.raises(ValueError, match="base_methods must be a non-empty "
                       "subset of .*'looksam'"):
        tuning.SearchSpace(base_methods=("wsam",))


@pytest.mark.parametrize("base", ["gsam", "fsam", "looksam"])
def test_the_sam_family_are_base_methods_of_the_search(base):
    space = tuning.SearchSpace(base_methods=(base,), timings=("fixed",),
                               start_fraction=(0.5, 0.5))
    hp = keras_tuner.HyperParameters()
    hp.Fixed("grad_scale_schedule", "method")
    config = tuning.rts_config(hp, epochs=2, space=space)
    network = keras.Sequential([keras.Input((6,)), keras.layers.Dense(2)])
    model = keras_rts.RTSModel(network, **config.model_kwargs())
    assert model.method == base
    model.compile(optimizer="sgd", loss=keras.losses
                  .SparseCategoricalCrossentropy(from_logits=True))
    x, y = _user_data()
    history = model.fit(x, y, epochs=2, batch_size=8, verbose=0,
                        callbacks=config.callbacks())
    assert history.history["perturb"] == [0, 1]
    assert np.isfinite(history.history["loss"]).all()
    # The step's own λ (WSAM's is negative: (1−2γ)/γ).
    assert history.history["grad_scale"][-1] == pytest.approx(
        methods.METHODS[base].default_grad_scale)


def test_the_searched_configuration_is_a_python_preset_equal_to_the_recipes():
    config = tuning.searched(epochs=60)
    row = experiment.METHODS["rts_searched"]
    s = experiment.Settings(method="rts_searched", epochs=60)
    kwargs, plan = experiment.method_plan(s)
    assert config.model_kwargs() == dict(
        method=row.base_method, radius=pytest.approx(kwargs["radius"]),
        grad_scale=row.grad_scale[0])
    assert config.start_fraction == row.start_fraction
    assert config.grad_scale == row.grad_scale
    assert config.radius == pytest.approx((kwargs["radius"],) * 2)
    callbacks = config.callbacks()
    window = callbacks[-1]
    assert window.start(60) == plan[-1].start(60) == 48
    # 12 of 60 epochs perturb: 1.2× SGD's gradient evaluations.
    assert (60 + (60 - window.start(60))) / 60 == pytest.approx(1.2)


# --- trials that cannot run, failed trials, seeds -------------------------

def _cosine_floor(epochs):
    """The lowest fraction of its peak a cosine-decayed learning rate
    reaches at the start of an epoch: that of the last."""
    return 0.5 * (1 + math.cos(math.pi * (epochs - 1) / epochs))


def test_the_search_leaves_out_lr_timings_that_would_never_switch_on(
        tfds_dir):
    settings = dataclasses.replace(_settings(tfds_dir), epochs=10)
    floor = _cosine_floor(10)  # 0.02447: the default space goes to 0.005
    hypermodel = search.RTSHyperModel(settings, 256)
    low, high = hypermodel.space.lr_fraction
    assert floor <= low < floor * 1.01 and high == 0.146
    assert f"[{low:g}, 0.146], not [0.005, 0.146]" in hypermodel.space_note
    # Every trial of what is searched switches on in the run; the lowest
    # fraction of the requested range would not.
    for fraction, switches in ((low, True), (0.005, False)):
        window = keras_rts.callbacks.LearningRateTrigger(fraction)
        schedule = experiment.learning_rate(settings, 1)
        if switches:
            assert window.lr_start_epoch(_compiled(schedule), 10, 1) == 9
        else:
            with pytest.raises(ValueError, match="never switch on"):
                window.lr_start_epoch(_compiled(schedule), 10, 1)
    # A range all below the floor: left out beside other timings ...
    space = tuning.SearchSpace(lr_fraction=(0.005, 0.01))
    hypermodel = search.RTSHyperModel(settings, 256, space)
    assert hypermodel.space.timings == ("fixed", "interval")
    assert "lr timing is left out" in hypermodel.space_note
    # ... and refused, naming the flag, when it is the only one.
    with pytest.raises(ValueError, match="--search-lr-fraction: with "
                       "--epochs 10 the learning rate falls to 0.0245"):
        search.RTSHyperModel(settings, 256, dataclasses.replace(
            space, timings=("lr",)))
    # A space every trial of which runs is searched as given.
    fine = search.RTSHyperModel(settings, 256, tuning.SearchSpace(
        lr_fraction=(0.05, 0.1)))
    assert fine.space == fine.requested_space and fine.space_note is None


def _compiled(schedule):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(schedule), loss="mse")
    return model


def test_the_search_refuses_a_step_that_cannot_run_with_the_settings(
        tfds_dir):
    settings = dataclasses.replace(_settings(tfds_dir), sub_batch_size=32)
    with pytest.raises(ValueError, match="--search-base-methods: looksam "
                       "cannot run with these settings"):
        search.RTSHyperModel(settings, 256, tuning.SearchSpace(
            base_methods=("sam", "looksam")))


def test_a_failed_trial_is_never_the_best():
    oracle = keras_tuner.oracles.RandomSearchOracle(
        objective=search.OBJECTIVE, max_trials=2)
    status = keras_tuner.engine.trial.TrialStatus
    failed = keras_tuner.engine.trial.Trial(
        keras_tuner.HyperParameters(), trial_id="0", status=status.FAILED)
    oracle.trials = {"0": failed}
    tuner = type("Tuner", (), {"oracle": oracle})()
    assert oracle.get_best_trials(1) == [failed]  # KerasTuner's fallback
    assert search.best_trial(tuner) is None
    done = keras_tuner.engine.trial.Trial(
        keras_tuner.HyperParameters(), trial_id="1", status=status.COMPLETED)
    done.score = 0.5
    oracle.trials["1"] = done
    assert search.best_trial(tuner) is done


@pytest.mark.parametrize("kind", ["random", "bayesian"])
@pytest.mark.parametrize("seed", [0, 7])
def test_a_search_with_the_same_seed_draws_the_same_trials(
        kind, seed, tfds_dir, tmp_path):
    """KerasTuner takes a seed of 0 for none: --seed 0 must repeat too."""
    hypermodel = search.RTSHyperModel(_settings(tfds_dir), 256,
                                      tuning.SearchSpace(**SMALL_SPACE))
    drawn = []
    for folder in ("a", "b"):
        tuner = search.make_tuner(kind, hypermodel, str(tmp_path / folder),
                                  seed=seed)
        drawn.append([tuner.oracle.create_trial(f"t{i}").hyperparameters
                      .values for i in range(3)])
    assert drawn[0] == drawn[1]
    other = search.make_tuner(kind, hypermodel, str(tmp_path / "c"),
                              seed=seed + 1)
    assert other.oracle.create_trial("t0").hyperparameters.values != (
        drawn[0][0])


def test_tune_refuses_a_space_that_cannot_run_before_any_trial(
        tfds_dir, tmp_path):
    out = tmp_path / "search"
    result = _tune(tfds_dir, str(out), "--search-timings", "lr",
                   "--search-lr-fraction", "0.1", "0.2")
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith(
        "tune.py: error: --search-lr-fraction: with --epochs 2 the learning "
        "rate falls to 0.5 of its peak"), result.stderr
    assert "Traceback" not in result.stderr and not out.exists()


def test_tune_names_a_damaged_search_file_in_one_line(tfds_dir, tmp_path):
    out = tmp_path / "search"
    out.mkdir()
    (out / "search.json").write_text('{"settings": {"dataset": "cif')
    result = _tune(tfds_dir, str(out))
    assert result.returncode == 2
    line = result.stderr.strip().splitlines()[-1]
    assert "search.json is damaged" in line and "--overwrite" in line, line
    assert "Traceback" not in result.stderr
    assert (out / "search.json").read_text() == (
        '{"settings": {"dataset": "cif')  # nothing a user has is touched
