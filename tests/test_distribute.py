"""RTSModel under tf.distribute on 2 logical CPU devices (in subprocesses,
since logical devices must be configured before TensorFlow starts)."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests import reference

BATCH, STEPS = 16, 4
SCRIPT = textwrap.dedent('''
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras, numpy as np, keras_rts

    # Every collective a step makes, counted as it is traced.
    all_reduces = []
    all_reduce = tf.distribute.ReplicaContext.all_reduce
    def counting(self, *args, **kwargs):
        all_reduces.append(1)
        return all_reduce(self, *args, **kwargs)
    tf.distribute.ReplicaContext.all_reduce = counting

    config = json.loads(sys.argv[1])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 5)).astype("float32")
    y = rng.integers(0, 3, 64)
    if config.get("nan"):
        x[16 + 12, 1] = np.nan  # second batch, second replica's half

    def build():
        keras.utils.set_random_seed(1)
        net = keras.Sequential([keras.Input((5,)), keras.layers.Dense(8),
                                keras.layers.ReLU(), keras.layers.Dense(3)])
        model = net
        if config["method"] != "keras":
            model = keras_rts.RTSModel(
                net, method=config["method"], radius=config.get("radius", 1.0),
                perturb=config.get("perturb", True),
                perturbation=config.get("perturbation", "replica"),
                sub_batch_size=config.get("sub_batch_size"))
        model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                      loss=keras.losses.SparseCategoricalCrossentropy(True))
        return model

    if config["mirrored"]:
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        assert strategy.num_replicas_in_sync == 2
        with strategy.scope():
            model = build()
    else:
        model = build()
    initial = [v.numpy().tolist() for v in model.trainable_variables]
    history = model.fit(x, y, batch_size=16, epochs=1, shuffle=False,
                        verbose=0)
    if config.get("save"):
        model.save(config["save"])
    print(json.dumps({
        "x": x.tolist(), "y": y.tolist(), "initial": initial,
        "weights": [v.numpy().tolist() for v in model.trainable_variables],
        "predictions": model.predict(x, verbose=0).tolist(),
        "skipped_steps": history.history.get("skipped_steps"),
        "grad_evals": history.history.get("grad_evals"),
        "grad_norm": history.history.get("grad_norm"),
        "all_reduces": len(all_reduces),
    }))
''')


def _run(**config):
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(config)],
        capture_output=True, text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _close(got, want, rtol=1e-4, atol=1e-5):
    for a, b in zip(got, want):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol,
                                   atol=atol)


@pytest.mark.parametrize("method", [
    pytest.param("sgd", marks=pytest.mark.slow),
    pytest.param("ugd", marks=pytest.mark.slow),
    pytest.param("sam", marks=pytest.mark.slow), "pugd"])
def test_global_perturbation_equals_one_device(method):
    one = _run(method=method, mirrored=False, radius=0.5)
    two = _run(method=method, mirrored=True, radius=0.5,
               perturbation="global")
    _close(two["weights"], one["weights"])
    assert two["grad_evals"] == one["grad_evals"]


@pytest.mark.parametrize("method", [
    pytest.param("sam", marks=pytest.mark.slow),
    pytest.param("asam", marks=pytest.mark.slow), "pugd"])
def test_replica_perturbation_matches_per_half_numpy_reference(method):
    run = _run(method=method, mirrored=True, radius=0.5)
    params = [np.asarray(w, np.float64) for w in run["initial"]]
    velocity = [np.zeros_like(p) for p in params]
    x, y = np.asarray(run["x"], np.float64), np.asarray(run["y"])
    for i in range(0, len(x), BATCH):
        params, velocity = reference.replica_step(
            params, velocity, x[i:i + BATCH], y[i:i + BATCH], method,
            replicas=2, radius=0.5)
    _close(run["weights"], params)
    # And it is not the one-device step: each half formed its own ε.
    one = _run(method=method, mirrored=False, radius=0.5)
    assert not np.allclose(np.concatenate([np.ravel(w) for w in one[
        "weights"]]), np.concatenate([np.ravel(w) for w in run["weights"]]),
        rtol=1e-6, atol=1e-7)


def test_grad_norm_is_the_global_batch_gradient_norm_on_any_replicas():
    one = _run(method="pugd", mirrored=False, radius=0.5)
    two = _run(method="pugd", mirrored=True, radius=0.5,
               perturbation="global")
    assert two["grad_norm"] == pytest.approx(one["grad_norm"], rel=1e-5)


@pytest.fixture(scope="module")
def plain_keras_all_reduces():
    return _run(method="keras", mirrored=True)["all_reduces"]


@pytest.mark.parametrize("method, perturbation", [
    ("sgd", "replica"), ("pugd", "replica"), ("pugd", "global")] + [
    pytest.param(m, p, marks=pytest.mark.slow)
    for m in ("ugd", "sam") for p in ("replica", "global")])
def test_a_step_that_does_not_perturb_makes_the_collectives_of_plain_keras(
        method, perturbation, plain_keras_all_reduces):
    run = _run(method=method, mirrored=True, perturb=False,
               perturbation=perturbation)
    assert plain_keras_all_reduces > 0
    assert run["all_reduces"] == plain_keras_all_reduces


def test_a_perturbing_step_makes_one_collective_or_two_for_global_epsilon(
        plain_keras_all_reduces):
    # A replica's own ε: the sums of g and d in one collective. The global
    # ε needs the summed gradient first: two.
    assert _run(method="pugd", mirrored=True)["all_reduces"] == \
        plain_keras_all_reduces
    assert _run(method="pugd", mirrored=True, perturbation="global")[
        "all_reduces"] == 2 * plain_keras_all_reduces


def test_sub_batches_in_each_replica_match_numpy_reference():
    # Batch 16 on 2 replicas, sub-batches of 4: four ε per step, each from
    # its own quarter of the batch; the direction is the four parts' mean.
    run = _run(method="pugd", mirrored=True, radius=0.5, sub_batch_size=4)
    params = [np.asarray(w, np.float64) for w in run["initial"]]
    velocity = [np.zeros_like(p) for p in params]
    x, y = np.asarray(run["x"], np.float64), np.asarray(run["y"])
    for i in range(0, len(x), BATCH):
        params, velocity = reference.replica_step(
            params, velocity, x[i:i + BATCH], y[i:i + BATCH], "pugd",
            replicas=4, radius=0.5)
    _close(run["weights"], params)
    assert run["grad_evals"] == [2 * len(x) // BATCH]


def test_non_finite_replica_skips_the_step_on_every_replica():
    result = _run(method="pugd", mirrored=True, nan=True)
    assert result["skipped_steps"] == [1]
    assert all(np.all(np.isfinite(w)) for w in result["weights"])


def test_saved_distributed_model_loads_on_one_device(tmp_path):
    import keras

    import keras_rts  # noqa: F401  (registers RTSModel for loading)

    path = str(tmp_path / "mirrored.keras")
    run = _run(method="pugd", mirrored=True, save=path)
    loaded = keras.saving.load_model(path)
    assert loaded.method == "pugd" and loaded.perturbation == "replica"
    np.testing.assert_allclose(
        loaded.predict(np.asarray(run["x"], np.float32), verbose=0),
        run["predictions"], rtol=1e-5, atol=1e-6)


def test_bad_perturbation_argument():
    import keras

    import keras_rts

    net = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="perturbation must be"):
        keras_rts.RTSModel(net, perturbation="local")


def test_gradient_accumulation_is_refused_at_compile():
    import keras

    import keras_rts

    net = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model = keras_rts.RTSModel(net, method="pugd")
    with pytest.raises(ValueError, match="gradient_accumulation_steps=4"):
        model.compile(optimizer=keras.optimizers.SGD(
            0.1, gradient_accumulation_steps=4), loss="mse")
    assert not model.compiled
    # method="sgd" is a plain Keras step: accumulation is Keras' own.
    sgd = keras_rts.RTSModel(net, method="sgd")
    sgd.compile(optimizer=keras.optimizers.SGD(
        0.1, gradient_accumulation_steps=2), loss="mse")
    sgd.fit(np.ones((8, 3)), np.ones((8, 2)), batch_size=4, verbose=0)


def test_loaded_model_is_compiled_again(tmp_path):
    import keras

    import keras_rts

    net = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model = keras_rts.RTSModel(net, method="pugd")
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                  loss="mse", metrics=["mae"])
    model.fit(np.ones((8, 3)), np.ones((8, 2)), verbose=0)
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    assert loaded.compiled
    assert loaded.optimizer.momentum == 0.9
    loaded.fit(np.ones((8, 3)), np.ones((8, 2)), verbose=0)


RECIPE = textwrap.dedent('''
    import sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from keras_rts import experiment
    experiment.main(sys.argv[1:], datasets=("cifar10",))
''')


def test_recipe_trains_under_mirrored_strategy(tfds_dir, tmp_path):
    run_dir = str(tmp_path / "run")
    result = subprocess.run(
        [sys.executable, "-c", RECIPE, "--preset", "cpu", "--method", "pugd",
         "--strategy", "mirrored", "--perturbation", "global", "--epochs",
         "1", "--train-examples", "256", "--batch-size", "64",
         "--test-examples", "500", "--data-dir", tfds_dir, "--output-dir",
         run_dir, "--verbose", "0"],
        capture_output=True, text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr[-3000:]
    with open(os.path.join(run_dir, "summary.json")) as f:
        summary = json.load(f)
    assert summary["replicas"] == 2
    assert summary["settings"]["strategy"] == "mirrored"
    assert summary["grad_evals"] == 2 * 4


def test_multiworker_recipe_without_tf_config_is_refused(tmp_path,
                                                         monkeypatch):
    from keras_rts import experiment

    monkeypatch.delenv("TF_CONFIG", raising=False)
    settings = experiment.Settings(strategy="multiworker", epochs=2)
    with pytest.raises(ValueError, match="--strategy: .*TF_CONFIG"):
        experiment.run(settings, output_dir=str(tmp_path / "run"))
    assert not os.path.exists(tmp_path / "run")
