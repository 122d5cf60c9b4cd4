"""`.keras` files written by keras_rts 0.1.0 (tests/data/release_0_1_0,
made by its `make.py` before the step moved into its own module) load on
every backend with the same predictions and state: the network, the
method's memory, LookSAM's place in its cycle and the counters."""

import json
import os

import keras
import numpy as np
import pytest

import keras_rts  # noqa: F401  (registers RTSModel)

HERE = os.path.join(os.path.dirname(__file__), "data", "release_0_1_0")


@pytest.mark.parametrize("method", ["pugd", "fsam", "looksam"])
def test_a_file_of_the_last_release_loads_with_its_state(method):
    model = keras.saving.load_model(os.path.join(HERE, f"{method}.keras"))
    assert model.method == method
    probe = np.load(os.path.join(HERE, "probe.npy"))
    np.testing.assert_allclose(
        model.predict(probe, verbose=0),
        np.load(os.path.join(HERE, f"{method}_predictions.npy")),
        rtol=1e-5, atol=1e-6)
    with open(os.path.join(HERE, f"{method}_state.json")) as f:
        saved = json.load(f)
    state = [v for v in model.non_trainable_variables
             if "timing" not in v.path]
    # (The memory's names hold the network's layer numbers, which differ
    # from process to process: compared by position.)
    assert len(state) == len(saved)
    for variable, (name, value) in zip(state, saved):
        np.testing.assert_allclose(np.asarray(variable.numpy()), value,
                                   rtol=1e-6, atol=0, err_msg=name)
    if method in ("fsam", "looksam"):  # the memory is not all zeros
        assert any(np.any(np.asarray(v.numpy()) != 0)
                   for v in model.memory.tensors)
    # It trains on.
    x = np.random.default_rng(1).normal(size=(32, 6)).astype("float32")
    y = np.arange(32) % 3
    before = model.grad_evals.numpy()
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert model.grad_evals.numpy() > before
