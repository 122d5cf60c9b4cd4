"""RTSModel under MultiWorkerMirroredStrategy: 2 worker processes on
127.0.0.1 ports (TF_CONFIG), each with one CPU replica."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests import reference

BATCH = 16
RECIPES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "recipes")
WORKER = textwrap.dedent('''
    import json, sys
    import tensorflow as tf
    config = json.loads(sys.argv[1])
    strategy = (tf.distribute.MultiWorkerMirroredStrategy()
                if config["workers"] > 1 else None)
    import keras, numpy as np, keras_rts

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 5)).astype("float32")
    y = rng.integers(0, 3, 64)
    if config.get("nan"):
        x[16 + 12, 1] = np.nan  # second batch, second worker's half

    def build():
        keras.utils.set_random_seed(1)
        net = keras.Sequential([keras.Input((5,)), keras.layers.Dense(8),
                                keras.layers.ReLU(), keras.layers.Dense(3)])
        model = keras_rts.RTSModel(
            net, method=config["method"], radius=0.5,
            perturbation=config.get("perturbation", "replica"))
        model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                      loss=keras.losses.SparseCategoricalCrossentropy(True),
                      metrics=["accuracy"])
        return model

    def dataset():
        return tf.data.Dataset.from_tensor_slices((x, y)).batch(16)

    if strategy is None:
        model = build()
    else:
        with strategy.scope():
            model = build()
    initial = [v.numpy().tolist() for v in model.trainable_variables]
    train = dataset()
    if config.get("distributed_dataset"):
        train = strategy.experimental_distribute_dataset(train)
    history = model.fit(train, epochs=2, verbose=0,
                        validation_data=None if config.get("nan")
                        else dataset())
    print("RESULT " + json.dumps({
        "x": x.tolist(), "y": y.tolist(), "initial": initial,
        "weights": [v.numpy().tolist() for v in model.trainable_variables],
        "history": history.history,
    }))
''')


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _result(stdout):
    line = [l for l in stdout.splitlines() if l.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def _launch(workers, argv):
    """Starts `workers` processes of `python argv…` as one TF_CONFIG
    cluster on 127.0.0.1 and returns their stdouts."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(workers)]}
    processes = [
        subprocess.Popen(
            [sys.executable] + argv,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**env, "TF_CONFIG": json.dumps(
                {"cluster": cluster,
                 "task": {"type": "worker", "index": i}})})
        for i in range(workers)]
    outputs = []
    try:
        for p in processes:
            stdout, stderr = p.communicate(timeout=600)
            assert p.returncode == 0, stderr[-3000:]
            outputs.append(stdout)
    finally:
        for p in processes:
            p.kill()
    return outputs


def _run(workers, **config):
    config = dict(config, workers=workers)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("TF_CONFIG", None)
    if workers == 1:
        done = subprocess.run([sys.executable, "-c", WORKER,
                               json.dumps(config)],
                              capture_output=True, text=True, env=env,
                              timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        return [_result(done.stdout)]
    return [_result(out) for out in _launch(
        workers, ["-c", WORKER, json.dumps(config)])]


def _close(got, want, rtol=1e-4, atol=1e-5):
    for a, b in zip(got, want):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol,
                                   atol=atol)


@pytest.mark.parametrize("method", ["pugd", pytest.param(
    "sam", marks=pytest.mark.slow)])
def test_two_workers_with_global_perturbation_equal_one_process(method):
    one = _run(1, method=method)[0]
    first, second = _run(2, method=method, perturbation="global",
                         distributed_dataset=True)
    np.testing.assert_equal(first["weights"], second["weights"])
    _close(first["weights"], one["weights"])
    for key in ("loss", "val_loss", "val_accuracy", "grad_evals"):
        np.testing.assert_allclose(first["history"][key],
                                   one["history"][key], rtol=1e-5)
    assert first["history"]["grad_evals"] == [8, 16]


def test_two_workers_with_replica_perturbation_match_numpy_reference():
    # Each worker perturbs with its own half of every batch (m-sharpness).
    first, second = _run(2, method="pugd")
    np.testing.assert_equal(first["weights"], second["weights"])
    params = [np.asarray(w, np.float64) for w in first["initial"]]
    velocity = [np.zeros_like(p) for p in params]
    x = np.asarray(first["x"], np.float64)
    y = np.asarray(first["y"])
    for _ in range(2):
        for i in range(0, len(x), BATCH):
            params, velocity = reference.replica_step(
                params, velocity, x[i:i + BATCH], y[i:i + BATCH], "pugd",
                replicas=2, radius=0.5)
    _close(first["weights"], params)


def test_a_non_finite_step_on_one_worker_is_skipped_on_both():
    first, second = _run(2, method="pugd", nan=True)
    np.testing.assert_equal(first["weights"], second["weights"])
    assert first["history"]["skipped_steps"] == [1, 2]
    assert all(np.isfinite(np.asarray(w)).all() for w in first["weights"])


@pytest.mark.slow
def test_recipe_trains_with_two_workers(tfds_dir, tmp_path):
    run_dir = tmp_path / "run"
    _launch(2, [os.path.join(RECIPES, "cifar.py"), "--preset", "cpu", "--method", "pugd",
                "--strategy", "multiworker", "--epochs", "1",
                "--train-examples", "256", "--batch-size", "64",
                "--test-examples", "500", "--data-dir", tfds_dir,
                "--output-dir", str(run_dir), "--verbose", "0"])
    # The chief writes the run; the other worker its own copy beside it.
    with open(run_dir / "summary.json") as f:
        chief = json.load(f)
    with open(run_dir / "worker1" / "summary.json") as f:
        other = json.load(f)
    assert chief["replicas"] == 2
    assert chief["settings"]["strategy"] == "multiworker"
    assert chief["grad_evals"] == 2 * 4
    assert chief["final_test_top1"] == other["final_test_top1"]
