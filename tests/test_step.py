"""What a step commits, on every backend: nothing when it is skipped, one
`grad_norm`, norms that do not overflow, and a clear refusal of a backend
that is not supported."""

import numpy as np
import keras
import pytest

import keras_rts
from keras_rts import directions
from tests import reference
from tests.test_model import BATCH, METHODS, _data, _fit, _moving, _rts


def _everything(model):
    """Every variable of the model and its optimizer, by path."""
    values = {v.path: np.array(v.numpy()) for v in model.variables}
    values.update({"optimizer/" + v.path: np.array(v.numpy())
                   for v in model.optimizer.variables})
    return values


@pytest.mark.parametrize("method, sub_batch_size", [
    (m, None) for m in METHODS] + [("pugd", 4), ("sam", 6)])
def test_a_skipped_step_commits_nothing_but_the_count(method,
                                                      sub_batch_size):
    x, y = _data(n=2 * BATCH)
    model = _rts(method, sub_batch_size=sub_batch_size)
    _fit(model, x[:BATCH], y[:BATCH])  # momentum and statistics move
    before = _everything(model)
    x_bad = x[BATCH:].copy()
    x_bad[3, 2] = np.nan
    history = _fit(model, x_bad, y[BATCH:])
    after = _everything(model)
    assert history.history["skipped_steps"] == [1]
    assert after.pop("rts_model/skipped_steps") == 1
    before.pop("rts_model/skipped_steps")
    changed = [path for path in before
               if not np.array_equal(before[path], after[path],
                                     equal_nan=True)]
    # Only the metrics' running sums (Keras reports the batch's NaN loss).
    assert all("metric" in p or "loss" in p or "accuracy" in p
               for p in changed), changed
    assert any("moving_mean" in p for p in before)
    # One bad batch does not poison evaluation on clean data.
    loss, accuracy = model.evaluate(x, y, batch_size=BATCH, verbose=0)
    assert np.isfinite(loss)
    assert np.all(np.isfinite(_moving(model.model)))


def test_grad_norm_is_the_norm_of_the_batch_gradient():
    x, y = _data(n=BATCH)
    model = _rts("pugd")
    params = [v.numpy() for v in model.trainable_variables]
    history = _fit(model, x, y)
    _, grads, _ = reference.forward_backward(
        [np.asarray(p, np.float64) for p in params],
        np.asarray(x, np.float64), y)
    assert history.history["grad_norm"][0] == pytest.approx(
        reference.norm(grads), rel=1e-5)
    # And it is what the variance trigger records.
    assert model.timing.last_grad_norms(1)[0] == pytest.approx(
        reference.norm(grads), rel=1e-5)


@pytest.mark.parametrize("scale", [1e-30, 1.0, 1e20, 1e36])
def test_global_norm_does_not_overflow_or_underflow(scale):
    rng = np.random.default_rng(0)
    tensors = [rng.normal(size=s) for s in [(3, 4), (5,)]]
    expected = reference.norm(tensors) * scale
    got = float(directions.global_norm(
        [(t * scale).astype("float32") for t in tensors]))
    assert got == pytest.approx(expected, rel=1e-5)
    normalized = directions.normalize(
        [(t * scale).astype("float32") for t in tensors])
    assert reference.norm([np.asarray(t, np.float64) for t in normalized]) \
        == pytest.approx(expected / (expected + reference.DELTA), rel=1e-5)


def test_non_finite_gradients_give_a_non_finite_norm():
    bad = [np.array([1.0, np.inf], "float32"), np.ones(3, "float32")]
    assert not np.isfinite(float(directions.global_norm(bad)))


@pytest.mark.parametrize("method", ["ugd", "pugd"])
def test_huge_finite_gradients_take_a_unit_step(method):
    # |g| ~ 1e20: its square overflows float32, its norm must not.
    keras.utils.set_random_seed(0)
    net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(
        2, use_bias=False, kernel_initializer="ones")])
    model = keras_rts.RTSModel(net, method=method)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mae")
    x = np.full((8, 4), 1e20, "float32")
    w0 = net.layers[0].kernel.numpy()
    history = model.fit(x, np.zeros((8, 2), "float32"), batch_size=8,
                        verbose=0)
    step = net.layers[0].kernel.numpy() - w0
    assert history.history["skipped_steps"] == [0]
    assert np.linalg.norm(step) == pytest.approx(0.1, rel=1e-4)


def test_an_unsupported_backend_is_refused_when_the_model_is_built(
        monkeypatch):
    monkeypatch.setattr(keras_rts.backend, "BACKEND", "openvino")
    net = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="'openvino' Keras backend; "
                       "supported: tensorflow, jax, torch"):
        keras_rts.RTSModel(net)


def test_a_distribution_is_refused_where_keras_cannot_distribute(
        monkeypatch):
    monkeypatch.setattr(keras_rts.backend, "BACKEND", "torch")
    monkeypatch.setattr(keras.distribution, "distribution", lambda: object())
    net = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="distributes only on the JAX "
                       "backend, not on 'torch'"):
        keras_rts.RTSModel(net)
