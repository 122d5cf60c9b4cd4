"""The core needs Keras, NumPy and one backend: with TensorFlow, TFDS,
KerasTuner and matplotlib made unimportable, `RTSModel`, the callbacks,
the schedules, the models and `tuning.rts_config` train under JAX, and the
recipe layer names the extra to install."""

import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

HEAVY = ("tensorflow", "tensorflow_datasets", "keras_tuner", "matplotlib",
         "tensorboard")

BLOCK = f"""
import importlib.abc, sys

class Absent(importlib.abc.MetaPathFinder):
    # As on a machine without them: importing one raises.
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {HEAVY!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}",
                                      name=name)

sys.meta_path.insert(0, Absent())
HEAVY = {HEAVY!r}
"""


def _run(code, *args):
    pytest.importorskip("jax")
    env = dict(os.environ, KERAS_BACKEND="jax")
    return subprocess.run(
        [sys.executable, "-c", BLOCK + textwrap.dedent(code), *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_the_core_trains_without_tensorflow():
    result = _run("""
        import numpy as np, keras, keras_rts
        from keras_rts import tuning

        class HP:  # the part of keras_tuner.HyperParameters rts_config uses
            def Choice(self, name, values): return values[-1]
            def Float(self, name, low, high, sampling=None): return low
            def Int(self, name, low, high): return low

        config = tuning.rts_config(HP(), epochs=2)
        x = np.random.default_rng(0).normal(size=(64, 8, 8, 3))
        y = np.arange(64) % 10
        net = keras_rts.models.small_resnet(num_classes=10,
                                            input_shape=(8, 8, 3))
        model = keras_rts.RTSModel(net, **config.model_kwargs())
        model.compile(optimizer=keras.optimizers.SGD(0.01),
                      loss=keras.losses.SparseCategoricalCrossentropy(True))
        history = model.fit(x.astype("float32"), y, batch_size=16,
                            epochs=2, verbose=0,
                            callbacks=config.callbacks())
        assert np.isfinite(history.history["loss"]).all()
        for name in ("data", "search", "plots", "comparison",
                     "experiment.runs"):
            try:
                __import__("keras_rts." + name)
            except ImportError as error:
                print(name, "->", error)
            else:
                raise AssertionError(name + " imported")
        heavy = [m for m in sys.modules if m.split(".")[0] in HEAVY]
        assert not heavy, heavy
        print("trained", config.base_method, history.history["grad_evals"])
    """)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[-1].startswith("trained "), result.stdout
    # Each recipe module says which extra to install.
    errors = [line for line in lines if " -> " in line]
    assert len(errors) == 5, lines
    assert all("pip install 'keras_rts[recipes]'" in line
               for line in errors), errors


def test_a_recipe_without_tensorflow_says_what_to_install():
    result = _run("""
        import runpy
        sys.argv = ["recipes/cifar.py", "--preset", "cpu"]
        sys.path.insert(0, "recipes")
        runpy.run_path("recipes/cifar.py", run_name="__main__")
    """)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "cifar.py: error: this recipe reads its data with tf.data, on any "
        "Keras backend, and TensorFlow is not installed: pip install "
        "'keras_rts[recipes]'"]


def test_without_tensorflow_or_a_backend_set_the_error_says_what_to_set(
        tmp_path):
    """A JAX-only machine, no KERAS_BACKEND and no Keras config: the error
    names the variable to set (Keras' own says only that TensorFlow is
    missing)."""
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    env["KERAS_HOME"] = str(tmp_path)  # no keras.json choosing a backend
    result = subprocess.run(
        [sys.executable, "-c", BLOCK + "import keras_rts"], cwd=ROOT,
        env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert "set the backend you installed" in last, last
    assert "KERAS_BACKEND=jax" in last
