"""The recipes end to end on real data, and the run's promises."""

import csv
import dataclasses
import json
import math
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_rts
from keras_rts import callbacks, directions, experiment, methods

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUMMARY_KEYS = {"method", "dataset", "seed", "settings", "final_test_top1",
                "best_test_top1", "best_epoch", "wall_time_seconds", "cpu_time_seconds",
                "grad_evals", "perturb_start_epoch", "epochs", "versions"}


def _recipe(script, *flags):
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "recipes", script), *flags],
        capture_output=True, text=True, cwd=ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _rows(run_dir):
    with open(os.path.join(run_dir, "history.csv")) as f:
        return list(csv.DictReader(f))


def _check_artefacts(run_dir, method, epochs):
    rows = _rows(run_dir)
    assert [int(r["epoch"]) for r in rows] == list(range(epochs))
    for key in ("accuracy", "loss", "val_accuracy", "val_loss", "radius",
                "grad_scale", "perturb", "grad_evals", "wall_time", "cpu_time",
                "perturb_start_epoch"):
        assert key in rows[0]
    with open(os.path.join(run_dir, "summary.json")) as f:
        summary = json.load(f)
    assert SUMMARY_KEYS <= set(summary)
    assert summary["method"] == method
    # The backend trained on, and every library version that matters.
    assert summary["keras_backend"] == keras.backend.backend()
    assert {"keras", "numpy", keras.backend.backend(), "tensorflow",
            "tensorflow_datasets", "keras_rts", "python"} <= set(
                summary["versions"])
    assert summary["grad_evals"] == int(float(rows[-1]["grad_evals"]))
    assert summary["best_test_top1"] == max(float(r["val_accuracy"])
                                            for r in rows)
    assert 0.0 <= summary["final_test_top1"] <= 1.0
    with open(os.path.join(run_dir, "curves.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    return rows, summary


def test_cifar_recipe_end_to_end(tfds_dir, tmp_path):
    run_dir = str(tmp_path / "run")
    result = _recipe("cifar.py", "--preset", "cpu", "--method", "rts",
                     "--epochs", "2", "--train-examples", "256",
                     "--batch-size", "64", "--data-dir", tfds_dir,
                     "--test-examples", "2000",
                     "--output-dir", run_dir, "--verbose", "2")
    assert "final test top-1" in result.stdout
    rows, summary = _check_artefacts(run_dir, "rts", 2)
    # RTS defaults: SGD in epoch 0, PUGD in epoch 1; ρ and λ from their
    # first values.
    assert [float(r["perturb"]) for r in rows] == [0.0, 1.0]
    assert summary["perturb_start_epoch"] == 1
    assert summary["grad_evals"] == 4 + 2 * 4
    assert float(rows[0]["radius"]) == RECIPE_RADIUS["rts"][0]
    assert summary["settings"]["model"] == "small_resnet"  # the cpu preset
    assert tuple(summary["settings"]["radius"]) == (
        RECIPE_RADIUS["rts"])
    assert not os.path.exists(os.path.join(run_dir, "backup"))


def test_label_noise_and_interval_sam_through_the_recipe(tfds_dir,
                                                          tmp_path):
    """--label-noise and --perturb-every end to end: the run records them,
    and interval SAM costs S·n + ceil(S·n / k) gradient evaluations (the
    flipped labels themselves: tests/test_data.py)."""
    run_dir = str(tmp_path / "run")
    _recipe("cifar.py", "--preset", "cpu", "--method", "sam",
            "--perturb-every", "3", "--label-noise", "0.2", "--epochs", "2",
            "--train-examples", "320", "--batch-size", "64",
            "--test-examples", "500", "--data-dir", tfds_dir,
            "--output-dir", run_dir, "--verbose", "2")
    rows, summary = _check_artefacts(run_dir, "sam", 2)
    assert summary["settings"]["label_noise"] == 0.2
    assert summary["settings"]["perturb_every"] == 3
    steps = 2 * (320 // 64)
    assert summary["grad_evals"] == steps + math.ceil(steps / 3)


def test_tiny_imagenet_recipe_end_to_end(tiny_dir, tmp_path):
    run_dir = str(tmp_path / "run")
    _recipe("tiny_imagenet.py", "--preset", "cpu", "--method", "sam",
            "--epochs", "1", "--train-examples", "256", "--batch-size", "64",
            "--data-dir", tiny_dir, "--output-dir", run_dir, "--verbose", "0")
    _, summary = _check_artefacts(run_dir, "sam", 1)
    assert summary["dataset"] == "tiny_imagenet"
    assert summary["grad_evals"] == 2 * 4


@pytest.mark.slow
def test_tiny_imagenet_recipe_at_32_pixels(tiny_dir, tmp_path):
    run_dir = str(tmp_path / "run")
    _recipe("tiny_imagenet.py", "--preset", "cpu", "--method", "rts",
            "--epochs", "2", "--train-examples", "256", "--batch-size", "64",
            "--image-size", "32", "--data-dir", tiny_dir, "--output-dir",
            run_dir, "--verbose", "0")
    _, summary = _check_artefacts(run_dir, "rts", 2)
    assert summary["settings"]["image_size"] == 32
    assert summary["grad_evals"] == 4 + 2 * 4  # SGD epoch, then PUGD


def _settings(tfds_dir, **changes):
    return dataclasses.replace(
        experiment.Settings(dataset="cifar10", method="t", model="small_resnet",
                            epochs=3, batch_size=64, train_examples=256,
                            test_examples=1000,
                            start_epoch=1, data_dir=tfds_dir), **changes)


class Interrupt(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            raise KeyboardInterrupt


def test_resume_after_an_interruption_equals_an_uninterrupted_run(
        tfds_dir, tmp_path):
    settings = _settings(tfds_dir)
    whole = experiment.run(settings, output_dir=str(tmp_path / "whole"),
                           verbose=0)
    run_dir = str(tmp_path / "interrupted")
    with pytest.raises(KeyboardInterrupt):
        experiment.run(settings, output_dir=run_dir, verbose=0,
                       callbacks=[Interrupt()])
    assert len(_rows(run_dir)) == 1
    with pytest.raises(ValueError, match="pass --resume"):
        experiment.run(settings, output_dir=run_dir, verbose=0)
    with pytest.raises(ValueError, match=r"differ in \['lr'\]"):
        experiment.run(dataclasses.replace(settings, lr=0.05),
                       output_dir=run_dir, resume=True, verbose=0)
    keras.utils.clear_session()
    resumed = experiment.run(settings, output_dir=run_dir, resume=True,
                             verbose=0)

    def strip(rows):
        return [{k: v for k, v in r.items()
                 if k not in ("wall_time", "cpu_time")} for r in rows]

    assert strip(_rows(run_dir)) == strip(_rows(str(tmp_path / "whole")))
    for key in ("final_test_top1", "best_test_top1", "grad_evals",
                "perturb_start_epoch"):
        assert resumed[key] == whole[key]
    assert resumed["wall_time_seconds"] > float(_rows(run_dir)[0]["wall_time"])
    # A finished run is never overwritten.
    with open(os.path.join(run_dir, "summary.json")) as f:
        before = f.read()
    for resume in (False, True):
        with pytest.raises(ValueError, match="already holds a finished run"):
            experiment.run(settings, output_dir=run_dir, resume=resume)
    with open(os.path.join(run_dir, "summary.json")) as f:
        assert f.read() == before


@pytest.mark.parametrize("changes, flag", [
    (dict(method="pugd", radius=(3.0, 0.1)), "--radius"),
    (dict(method="rts", radius=(1.0,)), "--radius"),
    (dict(method="s", grad_scale=(1.0,)), "--grad-scale"),
    (dict(method="sam", radius=(-0.05,)), "--radius"),
    (dict(train_examples=10), "--train-examples"),
    (dict(epochs=0), "--epochs"),
    (dict(lr=float("nan")), "--lr"),
    (dict(method="adam"), "--method"),
    (dict(dataset="tiny_imagenet", data_dir=None), "--data-dir"),
    (dict(start_epoch=3), "start_epoch=3 is outside"),
    (dict(method="rts", radius=(0.1, 3.0)), "decreases"),
    (dict(sub_batch_size=0), "--sub-batch-size"),
    (dict(image_size=32), "--image-size"),  # CIFAR is not resized
    (dict(sub_batch_size=32, perturbation="global"), "--sub-batch-size"),
])
def test_bad_settings_fail_before_any_work(tmp_path, changes, flag):
    settings = _settings(None, **changes)
    with pytest.raises(ValueError, match=flag):
        experiment.run(settings, output_dir=str(tmp_path / "run"))
    assert not os.path.exists(tmp_path / "run")


def test_flags_presets_and_overrides():
    parser = experiment.argument_parser("test", datasets=("cifar10",
                                                          "cifar100"))
    args = parser.parse_args(["--preset", "cpu", "--epochs", "7",
                              "--radius", "2.0", "0.5", "--method", "r"])
    s = experiment.settings_from_args(args)
    assert (s.model, s.epochs, s.train_examples, s.lr) == (
        "small_resnet", 7, 5000, 0.1)
    assert s.radius == (2.0, 0.5) and s.dataset == "cifar10"
    assert s.sub_batch_size is None
    s = experiment.settings_from_args(parser.parse_args(
        ["--sub-batch-size", "32"]))
    assert s.sub_batch_size == 32
    assert experiment.method_plan(s)[0]["sub_batch_size"] == 32
    paper = experiment.settings_from_args(parser.parse_args([]))
    assert (paper.model, paper.epochs, paper.batch_size, paper.lr,
            paper.momentum, paper.weight_decay, paper.train_examples) == (
        "resnet18", 200, 128, 0.1, 0.9, 5e-4, None)
    with pytest.raises(SystemExit):
        parser.parse_args(["--dataset", "tiny_imagenet"])


RECIPE_RADIUS = {  # docs/method.md, and the recipes' r and rts (docs/results)
    "sgd": (0.0,), "ugd": (0.0,), "sam": (0.05,), "asam": (0.5,),
    "pugd": (1.0,), "t": (1.0,), "s": (1.0,), "r": (1.0, 0.1),
    "rts": (3.0, 0.1)}


@pytest.mark.parametrize("method, base, radius", [
    ("r", "sam", (0.05, 0.005)), ("rts", "sam", (0.15, 0.005)),
    ("t", "asam", (0.5,)), ("rts", "pugd", (3.0, 0.1))])
def test_controls_scale_their_radius_with_the_base_method(method, base,
                                                          radius):
    s = experiment.Settings(method=method, base_method=base, epochs=10)
    assert s.resolved().radius == pytest.approx(radius)
    kwargs, _ = experiment.method_plan(s)
    assert (kwargs["method"], kwargs["radius"]) == (base, pytest.approx(
        radius[0]))


@pytest.mark.parametrize("method, base, kinds", [
    ("sgd", "sgd", []), ("sam", "sam", []), ("pugd", "pugd", []),
    ("r", "pugd", [callbacks.RadiusScheduler]),
    ("t", "pugd", [callbacks.PerturbationWindow]),
    ("s", "pugd", [callbacks.GradScaleScheduler]),
    ("rts", "pugd", [callbacks.RadiusScheduler, callbacks.GradScaleScheduler,
                     callbacks.PerturbationWindow]),
])
def test_method_plans(method, base, kinds):
    s = experiment.Settings(method=method, epochs=10)
    kwargs, plan = experiment.method_plan(s)
    assert kwargs["method"] == base
    assert [type(c) for c in plan] == kinds
    assert kwargs["radius"] == pytest.approx(RECIPE_RADIUS[method][0])
    variance = experiment.method_plan(dataclasses.replace(
        s, method="t", timing="variance"))[1]
    assert isinstance(variance[0], callbacks.GradNormVarianceTrigger)


def test_saved_settings_spell_out_the_method_defaults(tmp_path):
    """A run's settings.json records the ρ and λ it trains with, so a later
    change of default neither changes what the run means nor lets it be
    resumed or reused as a run of the new default."""
    s = experiment.Settings(method="rts", epochs=10)
    resolved = s.resolved()
    assert resolved.radius == RECIPE_RADIUS["rts"]
    assert resolved.grad_scale == (1.0, 0.5)
    assert resolved.base_method == "pugd"
    assert resolved.start_fraction == 0.5  # the switch at half the run
    assert experiment.Settings(method="pugd").resolved().grad_scale is None
    for other in (dict(method="rts", start_epoch=3), dict(method="sam"),
                  dict(method="rts", timing="lr")):
        assert experiment.Settings(**other).resolved().start_fraction is None
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "settings.json").write_text(
        json.dumps(dataclasses.asdict(resolved)))
    loaded = experiment.load_settings(str(folder))
    assert loaded.radius == resolved.radius
    assert experiment.settings_differences(loaded, s) == []
    # The data's location is not part of the run; ρ is.
    assert experiment.settings_differences(
        loaded, dataclasses.replace(s, data_dir="/elsewhere")) == []
    assert experiment.settings_differences(
        loaded, dataclasses.replace(s, radius=(2.0, 0.1))) == ["radius"]
    # A run saved before ρ was spelt out means today's default.
    (folder / "settings.json").write_text(json.dumps(dataclasses.asdict(s)))
    assert experiment.settings_differences(
        experiment.load_settings(str(folder)), resolved) == []


def test_a_setting_neither_run_uses_does_not_make_them_differ():
    """An SGD run is the same run whatever LookSAM's α, the test subset of
    a held-out run, or SGD's momentum under AdamW: a comparison with
    `--alpha` reuses the SGD runs it already has. Settings either run uses
    still differ."""
    sgd = experiment.Settings(method="sgd", epochs=10)
    assert experiment.settings_differences(
        sgd, dataclasses.replace(sgd, alpha=0.1)) == []
    assert experiment.settings_differences(
        dataclasses.replace(sgd, validation_examples=500),
        dataclasses.replace(sgd, validation_examples=500,
                            test_examples=100)) == []
    adamw = dataclasses.replace(sgd, optimizer="adamw")
    assert experiment.settings_differences(
        adamw, dataclasses.replace(adamw, momentum=0.5)) == []
    assert experiment.settings_differences(
        sgd, dataclasses.replace(sgd, momentum=0.5)) == ["momentum"]
    looksam = dataclasses.replace(sgd, method="looksam")
    assert experiment.settings_differences(
        looksam, dataclasses.replace(looksam, alpha=0.1)) == ["alpha"]
    assert experiment.settings_differences(
        sgd, dataclasses.replace(looksam, alpha=0.1)) == [
        "alpha", "method", "radius"]


CONFIRMATION = os.path.join(ROOT, "docs", "tuning", "cifar10_small_resnet_5k_60",
                            "confirmation")


def _epoch_by_epoch(settings):
    """What a run does in each epoch, from its plan: the step, and per epoch
    whether it perturbs, ρ and λ (the step's own λ spelt out)."""
    kwargs, plan = experiment.method_plan(settings)
    epochs = settings.epochs
    own = methods.METHODS[kwargs["method"]].default_grad_scale
    radius = [kwargs["radius"]] * epochs
    grad_scale = [own if kwargs["grad_scale"] is None
                  else kwargs["grad_scale"]] * epochs
    perturbs = [True] * epochs
    for c in plan:
        if isinstance(c, callbacks.RadiusScheduler):
            radius = [c.value(e) for e in range(epochs)]
        elif isinstance(c, callbacks.GradScaleScheduler):
            grad_scale = [c.value(e) for e in range(epochs)]
        else:
            assert type(c) is callbacks.PerturbationWindow
            assert c.end_epoch is None and c.perturb_every == 1
            perturbs = [e >= c.start(epochs) for e in range(epochs)]
    return kwargs["method"], perturbs, radius, grad_scale


def test_rts_searched_is_the_trial_the_confirmation_chose():
    """The recipes' `rts_searched` trains as the searched trial with the best
    mean over the confirmation's new seeds (docs/tuning.md)."""
    with open(os.path.join(CONFIRMATION, "results.json")) as f:
        confirmation = json.load(f)
    means = {arm: a["final_test_top1"]["mean"]
             for arm, a in confirmation["aggregates"].items()
             if arm.startswith("trial_")}
    chosen = max(means, key=means.get)
    trial = experiment.load_settings(
        os.path.join(CONFIRMATION, "runs", f"{chosen}_seed1"))
    searched = dataclasses.replace(
        trial, method="rts_searched", radius=None, grad_scale=None,
        base_method=None, start_fraction=None, radius_shape="cosine",
        grad_scale_shape="linear")
    want = _epoch_by_epoch(trial)
    got = _epoch_by_epoch(searched)
    assert got[:2] == want[:2]  # the step, and the epochs it perturbs in
    for values, wanted in zip(got[2:], want[2:]):  # ρ and λ, to 4 digits
        assert values == pytest.approx(wanted, rel=1e-3)


def test_rts_searched_in_python_is_as_docs_rts_md_writes_it():
    s = experiment.Settings(method="rts_searched", epochs=60)
    step, perturbs, radius, grad_scale = _epoch_by_epoch(s)
    r, g, trigger = callbacks.rts(60, radius=(3.972 * 0.05,) * 2,
                                  radius_shape="constant", start_fraction=0.813,
                                  grad_scale=(0.03374, 0.4884))
    assert step == "sam"
    assert perturbs == [e >= trigger.start(60) for e in range(60)]
    assert radius == pytest.approx([r.value(e) for e in range(60)])
    assert grad_scale == pytest.approx([g.value(e) for e in range(60)])


def test_the_lr_timing_under_adamw_starts_after_the_warm_up():
    """With AdamW's 5 warm-up epochs the rate starts at 0: the lr timing
    still starts late, where the cosine has fallen below the fraction."""
    s = experiment.Settings(method="t", base_method="sam", timing="lr",
                            lr_fraction=0.5, optimizer="adamw", lr=1e-3,
                            warmup_epochs=5, epochs=60)
    experiment.validate(s)
    # NumPy: cosine over the 55 epochs after the warm-up; ≤ half the
    # peak from the first epoch past the cosine's midpoint, 5 + 27.5.
    after = np.arange(60) - 5
    rates = np.where(after < 0, (after + 5) / 5,
                     0.5 * (1 + np.cos(np.pi * np.clip(after / 55, 0, 1))))
    want = int(np.argmax((rates <= 0.5) & (after >= 0)))
    assert want == 33
    assert callbacks.lr_start_epoch(experiment.learning_rate(s, 1), 60, 1,
                                    0.5) == want


def test_sam_vit_is_sam_with_the_radius_vits_are_trained_with():
    step, perturbs, radius, grad_scale = _epoch_by_epoch(
        experiment.Settings(method="sam_vit", epochs=10))
    assert (step, perturbs, grad_scale) == ("sam", [True] * 10, [0.0] * 10)
    assert radius == pytest.approx([0.2] * 10)


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_a_tf_distribute_strategy_is_refused_on_other_backends(
        monkeypatch, backend):
    monkeypatch.setattr(keras.backend, "backend", lambda: backend)
    with pytest.raises(ValueError, match="--strategy: mirrored is a "
                       "tf.distribute strategy, for KERAS_BACKEND=tensorflow"):
        experiment.validate(experiment.Settings(strategy="mirrored"))


@pytest.mark.parametrize("flags, kwargs, window", [
    (dict(method="looksam", every=4, alpha=0.5),
     dict(method="looksam", every=4, alpha=0.5), None),
    (dict(method="gsam", alpha=0.1), dict(method="gsam", alpha=0.1), None),
    (dict(method="wsam", gamma=0.8), dict(method="wsam", gamma=0.8), None),
    (dict(method="fsam", sigma=0.5, decay=0.6),
     dict(method="fsam", sigma=0.5, decay=0.6), None),
    (dict(method="sam", perturb_probability=0.2), dict(method="sam"), 0.2),
    (dict(method="sam_random"), dict(method="sam"), 0.2),
    (dict(method="t", base_method="looksam", perturb_probability=0.5,
          exclude_from_perturbation=("bias",)),
     dict(method="looksam", exclude_from_perturbation=["bias"]), 0.5),
])
def test_the_sam_family_and_random_switching_in_the_recipes(flags, kwargs,
                                                           window):
    s = experiment.Settings(epochs=10, **flags)
    experiment.validate(s)
    got, plan = experiment.method_plan(s)
    assert {k: got[k] for k in kwargs} == kwargs
    keras_rts.RTSModel(keras.Sequential([keras.Input((3,)),
                                         keras.layers.Dense(2)]), **got)
    switches = [c for c in plan if isinstance(c, callbacks.PerturbationWindow)]
    if window is None:
        assert not switches
    else:
        assert switches[0].perturb_probability == window
        assert switches[0].seed == s.seed


@pytest.mark.parametrize("flags, message", [
    (dict(method="sam", alpha=0.3), "--alpha: .*gsam and looksam, not of sam"),
    (dict(method="pugd", every=3), "--every: .*looksam, not of pugd"),
    (dict(method="sgd", perturb_probability=0.3),
     "--perturb-probability: method sgd never perturbs"),
    (dict(method="sam", perturb_probability=0.3, perturb_every=2),
     "--perturb-probability: give it or --perturb-every, not both"),
    (dict(method="t", timing="variance", perturb_probability=0.3),
     "--perturb-probability: the variance timing decides per epoch"),
    (dict(method="looksam", sub_batch_size=32),
     "--sub-batch-size: looksam keeps its memory"),
])
def test_sam_family_flags_that_cannot_act_are_refused(flags, message):
    with pytest.raises(ValueError, match=message):
        experiment.validate(experiment.Settings(epochs=10, **flags))


def test_interval_sam_is_a_recipe_method_of_its_own():
    s = experiment.Settings(method="sam_interval", epochs=10)
    kwargs, plan = experiment.method_plan(s)
    assert kwargs["method"] == "sam"
    assert [(type(c), c.perturb_every) for c in plan] == [
        (callbacks.PerturbationWindow, 5)]
    # The settings a run saves spell the interval out; a flag overrides it.
    assert s.resolved().perturb_every == 5
    assert experiment.Settings(method="sam_random").resolved() \
        .perturb_probability == 0.2
    other = experiment.Settings(method="sam_interval", perturb_every=3)
    assert experiment.method_plan(other)[1][0].perturb_every == 3


def test_resume_of_a_folder_without_a_run_says_there_is_nothing(tfds_dir,
                                                                tmp_path):
    missing = str(tmp_path / "typo")
    with pytest.raises(ValueError, match="--resume: .*typo holds no run to "
                       "resume"):
        experiment.check_run(_settings(tfds_dir), missing, resume=True)
    assert not os.path.exists(missing)


# --- damaged files: named in one line, before any work --------------------

def test_a_damaged_settings_file_is_named_on_resume(tfds_dir, tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "settings.json").write_text('{"dataset": "cifar10", "meth')
    with pytest.raises(ValueError) as error:
        experiment.check_run(_settings(tfds_dir), str(folder), resume=True)
    message = str(error.value)
    assert f"{folder}/settings.json is damaged (not complete JSON" in message
    assert "\n" not in message
    (folder / "settings.json").write_text('{"dataset": "cifar10", "colour": 1}')
    with pytest.raises(ValueError, match="does not know .*colour"):
        experiment.check_run(_settings(tfds_dir), str(folder), resume=True)


def test_a_damaged_backup_is_named_with_what_to_do(tmp_path):
    from keras_rts.experiment import runs
    backup = tmp_path / "backup"
    backup.mkdir()
    (backup / "training_metadata.json").write_text('{"epo')
    with pytest.raises(ValueError, match="training_metadata.json is damaged"
                       ".*delete the folder"):
        runs._backup_epoch(str(backup))


def test_a_damaged_summary_is_named_by_the_comparison(tmp_path):
    from keras_rts import comparison
    folder = comparison.run_dir(str(tmp_path), "sgd", 0)
    os.makedirs(folder)
    with open(os.path.join(folder, "summary.json"), "w") as f:
        f.write("[1, 2")
    with pytest.raises(ValueError, match="summary.json is damaged.*delete "
                       "the run's folder"):
        comparison.load_runs(str(tmp_path), ["sgd"], [0])


@pytest.mark.parametrize("setup, flags, message", [
    ("results", ["run-cost", "--results", "{dir}"],
     "results.json is damaged (not complete JSON"),
    ("nothing", ["run-cost", "--results", "{dir}/typo"],
     "results.json does not exist"),
    ("file", ["step-cost", "--output", "{dir}/taken"], "is a file, not a "
                                                        "folder"),
])
def test_the_benchmark_checks_its_files_before_measuring(setup, flags,
                                                         message, tmp_path):
    (tmp_path / "results.json").write_text('{"methods": ')
    (tmp_path / "taken").write_text("mine")
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "recipes", "benchmark.py"),
         *[f.format(dir=tmp_path) for f in flags]],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines()
             if "error:" in line]
    assert len(lines) == 1 and message in lines[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert (tmp_path / "taken").read_text() == "mine"


def test_a_truncated_backup_of_the_weights_is_named(tmp_path):
    from keras_rts.experiment import runs
    backup = tmp_path / "backup"
    backup.mkdir()
    (backup / "training_metadata.json").write_text('{"epoch": 3}')
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.save_weights(str(backup / "latest.weights.h5"))
    assert runs._backup_epoch(str(backup)) == 3
    data = (backup / "latest.weights.h5").read_bytes()
    (backup / "latest.weights.h5").write_bytes(data[:len(data) // 2])
    with pytest.raises(ValueError, match="latest.weights.h5 is damaged"):
        runs._backup_epoch(str(backup))


def test_interval_mode_reports_the_first_perturbed_epoch_and_its_shares(
        tfds_dir, tmp_path):
    """Step 0 runs the method in interval mode: the run perturbed from
    epoch 0, and each epoch's `perturb` is its share of such steps."""
    s = experiment.Settings(
        dataset="cifar10", model="small_resnet", method="sam",
        perturb_every=3, epochs=2, train_examples=256, batch_size=64,
        test_examples=100, data_dir=tfds_dir)
    summary = experiment.run(s, output_dir=str(tmp_path / "run"), verbose=0)
    rows = _rows(str(tmp_path / "run"))
    # 4 steps an epoch: steps 0 and 3, then 6, take two passes.
    assert [float(r["perturb"]) for r in rows] == [0.5, 0.25]
    assert summary["perturb_start_epoch"] == 0
    assert summary["grad_evals"] == 8 + 3


def test_the_adamw_recipe_decays_decoupled_and_warms_up(tfds_dir, tmp_path):
    """--optimizer adamw: AdamW with its own defaults (an explicit flag
    wins), its weight decay decoupled (RTSModel's coupled one is 0), a
    linear warm-up into the cosine decay; momentum is not one of its
    flags."""
    from keras_rts.experiment import cli
    parser = experiment.argument_parser("")
    s = cli.settings_from_args(parser.parse_args(
        ["--preset", "cpu", "--optimizer", "adamw", "--model", "vit"]))
    assert (s.optimizer, s.lr, s.weight_decay, s.warmup_epochs) == (
        "adamw", 1e-3, 0.05, 5)
    s = cli.settings_from_args(parser.parse_args(
        ["--optimizer", "adamw", "--lr", "3e-4", "--epochs", "10"]))
    assert (s.lr, s.weight_decay) == (3e-4, 0.05)
    assert cli.settings_from_args(parser.parse_args(
        ["--optimizer", "sgd"])).optimizer is None  # the default, as saved
    kwargs, _ = experiment.method_plan(s)
    assert kwargs["weight_decay"] == 0.0
    schedule = experiment.learning_rate(s, 4)
    rates = [float(keras.ops.convert_to_numpy(schedule(t)))
             for t in (0, 10, 20, 30, 40)]
    # Linear to 3e-4 over 5 epochs of 4 steps, then cosine over 5 epochs.
    assert rates == pytest.approx([0.0, 1.5e-4, 3e-4,
                                   1.5e-4 * (1 + math.cos(math.pi / 2)),
                                   0.0], abs=1e-9)
    with pytest.raises(ValueError, match="--momentum: --optimizer adamw "
                       "has no momentum flag"):
        experiment.validate(dataclasses.replace(s, momentum=0.5))
    with pytest.raises(ValueError, match="--warmup-epochs: must be in "
                       r"\[0, --epochs 10\)"):
        experiment.validate(dataclasses.replace(s, warmup_epochs=10))
    run = dataclasses.replace(
        s, dataset="cifar10", model="vit", method="sam", epochs=2,
        warmup_epochs=1, train_examples=128, batch_size=64,
        test_examples=100, data_dir=tfds_dir)
    summary = experiment.run(run, output_dir=str(tmp_path / "run"),
                             verbose=0)
    assert summary["settings"]["optimizer"] == "adamw"
    assert summary["grad_evals"] == 2 * 2 * 2


def test_an_msam_run_recomputes_batchnorm_at_w_and_keeps_both_scores(
        tfds_dir, tmp_path):
    """msam's one pass gathers BatchNormalization's statistics at
    `w + ε`: the recipe recomputes them at `w` after training and reports
    the score before too; one pass a step."""
    settings = _settings(tfds_dir, method="msam", start_epoch=None,
                         epochs=2)
    summary = experiment.run(settings, output_dir=str(tmp_path / "run"),
                             verbose=0)
    assert summary["grad_evals"] == 2 * 4
    assert 0 <= summary["final_test_top1_batchnorm_as_trained"] <= 1
    assert list(summary["settings"]["radius"]) == pytest.approx([1.0])
