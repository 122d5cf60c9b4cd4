"""Across Keras backends: a `.keras` file saved on one loads on the
others with the same predictions, the recipe runs on each, and JAX's
`keras.distribution.DataParallel` on 2 host devices gives the one-device
step (global ε) or the per-device one (`sub_batch_size` = the per-device
batch). Each foreign backend runs
in a subprocess: a backend is chosen once per process."""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from tests import reference
from tests.test_model import _data, _fit, _rts

BACKENDS = ("tensorflow", "jax", "torch")


def _others():
    """The other backends, each skipped where it is not installed (the
    core-only environment has JAX alone)."""
    return [pytest.param(other, marks=pytest.mark.skipif(
        importlib.util.find_spec(other) is None,
        reason=f"{other} is not installed"))
        for other in BACKENDS if other != keras.backend.backend()]


def _python(code, backend, *args, **env):
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True, text=True,
        env={**os.environ, "KERAS_BACKEND": backend,
             "TF_CPP_MIN_LOG_LEVEL": "2", **env})
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("other", _others())
def test_keras_file_loads_on_the_other_backends(tmp_path, other):
    x, y = _data()
    model = _rts("pugd", radius=0.4)
    _fit(model, x, y, epochs=2)
    path = str(tmp_path / "model.keras")
    model.save(path)
    np.save(tmp_path / "x.npy", x)
    loaded = _python('''
        import json, sys
        import keras, numpy as np
        import keras_rts
        model = keras.saving.load_model(sys.argv[1])
        x = np.load(sys.argv[2])
        print(json.dumps({
            "backend": keras.backend.backend(), "method": model.method,
            "radius": float(model.radius.numpy()),
            "grad_evals": int(model.grad_evals.numpy()),
            "predictions": model.predict(x, verbose=0).tolist()}))
    ''', other, path, str(tmp_path / "x.npy"))
    assert loaded["backend"] == other and loaded["method"] == "pugd"
    assert loaded["radius"] == pytest.approx(0.4)
    assert loaded["grad_evals"] == int(model.grad_evals.numpy())
    np.testing.assert_allclose(loaded["predictions"],
                               model.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-6)


DATA_PARALLEL = '''
    import json, sys
    import jax, keras, numpy as np
    import keras_rts

    config = json.loads(sys.argv[1])
    assert len(jax.devices()) == 2
    if config["devices"] == 2:
        keras.distribution.set_distribution(
            keras.distribution.DataParallel(devices=jax.devices()))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 5)).astype("float32")
    y = rng.integers(0, 3, 64)
    keras.utils.set_random_seed(1)
    net = keras.Sequential([keras.Input((5,)), keras.layers.Dense(8),
                            keras.layers.ReLU(), keras.layers.Dense(3)])
    model = keras_rts.RTSModel(net, method=config.get("method", "pugd"),
                               radius=0.5,
                               sub_batch_size=config.get("sub_batch_size"))
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(True))
    initial = [np.asarray(v.numpy()).tolist()
               for v in model.trainable_variables]
    history = model.fit(x, y, batch_size=16, epochs=1, shuffle=False,
                        verbose=0)
    print(json.dumps({
        "x": x.tolist(), "y": y.tolist(), "initial": initial,
        "weights": [np.asarray(v.numpy()).tolist()
                    for v in model.trainable_variables],
        "grad_norm": history.history["grad_norm"],
        "grad_evals": history.history["grad_evals"]}))
'''


def _data_parallel(**config):
    return _python(DATA_PARALLEL, "jax", json.dumps(config),
                   XLA_FLAGS="--xla_force_host_platform_device_count=2")


def _close(got, want):
    for a, b in zip(got, want):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4,
                                   atol=1e-5)


@pytest.mark.parametrize("method, passes", [("pugd", 2), ("msam", 1)])
def test_jax_data_parallel_equals_one_device(method, passes):
    one = _data_parallel(devices=1, method=method)
    two = _data_parallel(devices=2, method=method)
    _close(two["weights"], one["weights"])
    assert two["grad_norm"] == pytest.approx(one["grad_norm"], rel=1e-5)
    assert two["grad_evals"] == one["grad_evals"] == [4 * passes]


def test_jax_per_device_epsilon_is_a_sub_batch_per_device():
    run = _data_parallel(devices=2, sub_batch_size=8)
    params = [np.asarray(w, np.float64) for w in run["initial"]]
    velocity = [np.zeros_like(p) for p in params]
    x, y = np.asarray(run["x"], np.float64), np.asarray(run["y"])
    for i in range(0, len(x), 16):
        params, velocity = reference.replica_step(
            params, velocity, x[i:i + 16], y[i:i + 16], "pugd",
            replicas=2, radius=0.5)
    _close(run["weights"], params)


@pytest.mark.slow
@pytest.mark.parametrize("other", _others())
def test_cifar_recipe_runs_on_the_other_backends(tfds_dir, tmp_path, other):
    run_dir = str(tmp_path / "run")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run(
        [sys.executable, os.path.join(root, "recipes", "cifar.py"),
         "--preset", "cpu", "--method", "rts", "--epochs", "2",
         "--train-examples", "256", "--batch-size", "64", "--data-dir",
         tfds_dir, "--test-examples", "500", "--output-dir", run_dir,
         "--verbose", "0"],
        capture_output=True, text=True, cwd=root,
        env={**os.environ, "KERAS_BACKEND": other,
             "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr[-3000:]
    with open(os.path.join(run_dir, "summary.json")) as f:
        summary = json.load(f)
    # RTS's default timing: SGD in epoch 0, PUGD in epoch 1.
    assert summary["perturb_start_epoch"] == 1
    assert summary["grad_evals"] == 4 + 2 * 4
    assert 0.0 < summary["final_test_top1"] <= 1.0
