"""KerasTuner searches over the RTS controls, on small real data."""

import math
import os
import subprocess
import sys

import pytest

from keras_rts import experiment, tuning

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EPOCHS, BATCH, TRAIN = 2, 64, 128
STEPS = TRAIN // BATCH


def _settings(tfds_dir):
    return experiment.Settings(
        dataset="cifar10", model="small_resnet", epochs=EPOCHS,
        batch_size=BATCH, train_examples=TRAIN, data_dir=tfds_dir)


def _radius(shape, hi, lo, epoch):
    p = epoch / EPOCHS
    if shape == "cosine":
        return lo + 0.5 * (hi - lo) * (1 + math.cos(math.pi * p))
    if shape == "quarter_cosine":
        return lo + (hi - lo) * math.cos(math.pi / 2 * p)
    return hi + (lo - hi) * p  # linear


def _check_trials_reached_the_model(tuner):
    trials = [t for t in tuner.oracle.trials.values()
              if t.status == "COMPLETED"]
    assert len(trials) >= 3
    for trial in trials:
        hp = trial.hyperparameters.values
        metric = trial.metrics.get_last_value
        epochs_run = hp.get("tuner/epochs", EPOCHS)
        last = epochs_run - 1
        start = math.floor(hp["start_fraction"] * EPOCHS)
        assert metric("radius") == pytest.approx(_radius(
            hp["radius_shape"], hp["radius_max"], hp["radius_min"], last),
            rel=1e-5)
        assert metric("grad_scale") == pytest.approx(
            hp["grad_scale_start"] + (hp["grad_scale_end"]
                                      - hp["grad_scale_start"]) * last
            / EPOCHS, rel=1e-5, abs=1e-6)
        assert metric("perturb") == float(last >= start)
        assert metric("grad_evals") == STEPS * sum(
            2 if e >= start else 1 for e in range(epochs_run))
        assert metric("score") == metric("val_accuracy")
    return trials


@pytest.mark.parametrize("kind", [
    "random",
    pytest.param("bayesian", marks=pytest.mark.slow),
    pytest.param("hyperband", marks=pytest.mark.slow),
])
def test_search_runs_and_every_trial_reaches_the_model(kind, tfds_dir,
                                                       tmp_path):
    hypermodel = tuning.RTSHyperModel(_settings(tfds_dir), 256)
    tuner = tuning.make_tuner(kind, hypermodel, str(tmp_path), max_trials=3,
                              hyperband_factor=2)
    # Every hyperparameter is known before the first trial.
    assert set(tuner.oracle.hyperparameters.values) >= {
        "radius_max", "radius_min", "radius_shape", "start_fraction",
        "grad_scale_start", "grad_scale_end"}
    tuner.search()
    trials = _check_trials_reached_the_model(tuner)
    if kind == "hyperband":  # some trials continued earlier ones
        assert any(t.hyperparameters.values.get("tuner/initial_epoch", 0) > 0
                   for t in trials)


@pytest.mark.slow
def test_cost_bound_scores_expensive_trials_minus_one(tfds_dir, tmp_path):
    hypermodel = tuning.RTSHyperModel(
        _settings(tfds_dir), 256, max_cost_fraction=0.8,
        space=tuning.SearchSpace(start_fraction=(0.0, 0.9)))
    tuner = tuning.make_tuner("random", hypermodel, str(tmp_path),
                              max_trials=4, seed=3)
    tuner.search()
    fractions = []
    for trial in tuner.oracle.trials.values():
        metric = trial.metrics.get_last_value
        fraction = metric("cost_fraction")
        fractions.append(fraction)
        start = math.floor(trial.hyperparameters.values["start_fraction"]
                           * EPOCHS)
        assert fraction == pytest.approx((start + 2 * (EPOCHS - start))
                                         / (2 * EPOCHS))
        expected = -1.0 if fraction > 0.8 else metric("val_accuracy")
        assert metric("score") == expected
    assert min(fractions) <= 0.8 < max(fractions)  # both cases were seen


@pytest.mark.parametrize("space, match", [
    (dict(radius_max=(5.0, 1.0)), "radius_max: the minimum"),
    (dict(radius_min=(0.0, 0.5)), "log scale"),
    (dict(radius_min=(0.5, 2.0)), "could draw a minimum above"),
    (dict(start_fraction=(-0.1, 0.5)), "start_fraction"),
    (dict(start_fraction=(0.2, 1.0)), "start_fraction"),
    (dict(lr=(0.0, 0.1)), "log scale"),
    (dict(grad_scale_end=(float("nan"), 1.0)), "grad_scale_end"),
    (dict(radius_shapes=("spiral",)), "radius_shapes"),
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


@pytest.mark.slow
def test_tune_recipe_best_command_reproduces_its_objective(tfds_dir,
                                                           tmp_path):
    out = str(tmp_path / "search")
    result = _tune(tfds_dir, out, "--tuner", "random", "--max-trials", "3")
    assert result.returncode == 0, result.stderr[-3000:]
    with open(os.path.join(out, "trials.csv")) as f:
        header = f.readline().strip().split(",")
        rows = [line.strip().split(",") for line in f]
    assert len(rows) == 3
    assert {"radius_max", "start_fraction", "score",
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
    import json
    with open(os.path.join(run_dir, "summary.json")) as f:
        summary = json.load(f)
    assert summary["evaluated_on"] == "validation"
    assert summary["final_test_top1"] == pytest.approx(best_score, abs=1e-6)

    # Re-running continues the search; other settings need --overwrite.
    more = _tune(tfds_dir, out, "--tuner", "random", "--max-trials", "4")
    assert more.returncode == 0, more.stderr[-3000:]
    with open(os.path.join(out, "trials.csv")) as f:
        assert len(f.readlines()) == 1 + 4
    changed = _tune(tfds_dir, out, "--tuner", "random", "--max-trials", "4",
                    "--lr", "0.05")
    assert changed.returncode != 0 and "--overwrite" in changed.stderr
    bad = _tune(tfds_dir, str(tmp_path / "bad"), "--search-radius-min",
                "0.5", "2.0")
    assert bad.returncode != 0 and "could draw a minimum" in bad.stderr
    assert not os.path.exists(tmp_path / "bad" / "tuner")
