"""Sub-batch perturbation (`RTSModel(sub_batch_size=m)`, m-sharpness)."""

import keras
import numpy as np
import pytest

import keras_rts
from tests import reference
from tests.test_model import (BATCH, _compile, _data, _fit, _moving, _net,
                              _rts, _trainable, fit_both)


@pytest.mark.parametrize("method, sub_batch_size", [
    ("pugd", 4),   # four equal sub-batches of the batch of 16
    ("pugd", 6),   # 6, 6, 4: sizes weight the mean
    pytest.param("sam", 4, marks=pytest.mark.slow),
    pytest.param("asam", 6, marks=pytest.mark.slow),
])
def test_sub_batches_match_numpy_reference(method, sub_batch_size):
    # Dense → BatchNormalization → ReLU → Dense: each sub-batch has its own
    # batch statistics, and the moving statistics move by their mean.
    model = _rts(method, radius=0.5, sub_batch_size=sub_batch_size)
    x, y = _data()
    ref = reference.ReferenceTrainer(
        _trainable(model), _moving(model.model), method, radius=0.5,
        sub_batch_size=sub_batch_size)
    history = fit_both(model, ref, x, y, epochs=2)
    # Still two passes a step.
    assert history.history["grad_evals"][-1] == ref.grad_evals == 2 * 6


def test_sub_batches_differ_from_one_perturbation():
    x, y = _data()
    whole = _rts("pugd", radius=0.5)
    split = _rts("pugd", radius=0.5, sub_batch_size=4)
    _fit(whole, x, y)
    _fit(split, x, y)
    assert not np.allclose(np.concatenate([w.ravel() for w in _trainable(
        whole)]), np.concatenate([w.ravel() for w in _trainable(split)]),
        rtol=1e-5, atol=1e-6)


def test_one_sub_batch_is_the_ordinary_step():
    x, y = _data()
    whole = _rts("pugd", radius=0.5)
    one = _rts("pugd", radius=0.5, sub_batch_size=BATCH)
    _fit(whole, x, y)
    _fit(one, x, y)
    for got, want in zip(_trainable(one), _trainable(whole)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    for got, want in zip(_moving(one.model), _moving(whole.model)):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_steps_that_do_not_perturb_use_the_full_batch():
    x, y = _data()
    plain = _compile(_net())
    split = _rts("pugd", sub_batch_size=4, perturb=False)
    _fit(plain, x, y)
    history = _fit(split, x, y)
    for got, want in zip(_trainable(split), _trainable(plain)):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    for got, want in zip(_moving(split.model), _moving(plain)):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    assert history.history["grad_evals"][-1] == 3


def test_dropout_masks_differ_between_sub_batches():
    # The seed state carries from one sub-batch to the next (and on to the
    # next step), rather than being averaged like the moving statistics.
    keras.utils.set_random_seed(4)
    net = keras.Sequential([keras.Input((5,)), keras.layers.Dense(8),
                            keras.layers.Dropout(0.5), keras.layers.Dense(3)])
    model = _compile(keras_rts.RTSModel(net, sub_batch_size=4))
    seeds = [v for v in net.non_trainable_variables]
    before = [v.numpy().copy() for v in seeds]
    x, y = _data(16)
    _fit(model, x, y)
    after = [v.numpy() for v in seeds]
    if keras.backend.backend() != "torch":
        # (Keras' torch Dropout leaves its seed state where it is, for a
        # plain keras.Model too.)
        assert any(not np.array_equal(a, b) for a, b in zip(after, before))
    assert all(np.isfinite(w).all() for w in _trainable(model))


def test_sub_batch_size_is_saved_in_the_config(tmp_path):
    x, y = _data()
    model = _rts("pugd", sub_batch_size=6)
    _fit(model, x, y)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.sub_batch_size == 6
    np.testing.assert_allclose(loaded.predict(x, verbose=0),
                               model.predict(x, verbose=0), rtol=1e-6)


@pytest.mark.parametrize("kwargs, message", [
    (dict(sub_batch_size=0), "sub_batch_size"),
    (dict(sub_batch_size=2.5), "sub_batch_size"),
    (dict(sub_batch_size=True), "sub_batch_size"),
    (dict(sub_batch_size=4, perturbation="global"), "global"),
])
def test_bad_sub_batch_size_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        keras_rts.RTSModel(_net(), **kwargs)


def test_jit_compile_gives_the_same_sub_batch_step():
    x, y = _data()
    eager = _rts("pugd", radius=0.5, sub_batch_size=6)
    xla = _rts("pugd", radius=0.5, sub_batch_size=6, jit_compile=True)
    _fit(eager, x, y)
    _fit(xla, x, y)
    for got, want in zip(_trainable(xla), _trainable(eager)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_mixed_float16_sub_batch_update_matches_float32():
    from tests.test_model import _conv_net, _images

    x, y = _images(16)
    updates = {}
    for policy in ("float32", "mixed_float16"):
        keras.config.set_dtype_policy(policy)
        try:
            model = _compile(keras_rts.RTSModel(_conv_net(), radius=0.5,
                                                sub_batch_size=6),
                             momentum=0.0)
            before = _trainable(model)
            history = model.fit(x, y, batch_size=16, epochs=1, verbose=0)
            updates[policy] = [a - b for a, b in
                               zip(_trainable(model), before)]
        finally:
            keras.config.set_dtype_policy("float32")
        assert history.history["skipped_steps"] == [0]
    error = reference.norm([a - b for a, b in zip(updates["mixed_float16"],
                                                  updates["float32"])])
    assert error < 2e-2 * reference.norm(updates["float32"])


class _Subclassed(keras.Model):
    """Creates its variables on its first call (no `build`)."""

    def __init__(self):
        super().__init__()
        self.hidden = keras.layers.Dense(8, activation="relu")
        self.logits = keras.layers.Dense(3)

    def call(self, x, training=None):
        return self.logits(self.hidden(x))


@pytest.mark.parametrize("sub_batch_size, parts", [(None, 1), (4, 4)])
def test_subclassed_model_built_on_first_call(sub_batch_size, parts,
                                              recwarn):
    keras.utils.set_random_seed(2)
    model = _compile(keras_rts.RTSModel(_Subclassed(), radius=0.5,
                                        sub_batch_size=sub_batch_size))
    x, y = _data()
    history = _fit(model, x, y)
    assert not [w for w in recwarn if "build()" in str(w.message)]
    # The same steps from the weights it started with, in NumPy.
    keras.utils.set_random_seed(2)
    again = _Subclassed()
    again(x[:1])
    params = [v.numpy().astype(np.float64) for v in again.trainable_variables]
    velocity = [np.zeros_like(p) for p in params]
    for i in range(0, len(x), BATCH):
        params, velocity = reference.replica_step(
            params, velocity, x[i:i + BATCH].astype(np.float64),
            y[i:i + BATCH], "pugd", replicas=parts, radius=0.5)
    for got, want in zip(_trainable(model), params):
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5)
    assert history.history["grad_evals"] == [6]
