"""Momentum-SAM (`method="msam"`, docs/method.md): one pass a step at
`w − ρ·v/(‖v‖ + δ)`, `v` the optimizer's momentum — against its authors'
SGD and AdamW rules written in NumPy, and in every setting a method of the
package has, on every backend."""

import keras
import numpy as np
import pytest

import keras_rts
from tests import reference
from tests.test_model import (BATCH, _compile, _conv_net, _data, _fit,
                              _images, _moving, _net, _rts, _trainable,
                              fit_both)

CROSS_ENTROPY = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _batches(x, y, epochs):
    return [(x[i:i + BATCH], y[i:i + BATCH])
            for _ in range(epochs) for i in range(0, len(x), BATCH)]


@pytest.mark.parametrize("radius", [0.3, 3.0])
def test_sgd_steps_match_the_authors_rule(radius):
    """Keras' SGD with momentum and a constant learning rate: the weights
    (which hold `w`, never `w̃`) and the moving statistics (gathered at
    `w̃`, the only pass) after 6 steps equal the authors' update."""
    net = _net()
    model = keras_rts.RTSModel(net, method="msam", radius=radius)
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                  loss=CROSS_ENTROPY)
    start, moving = _trainable(model), _moving(net)
    x, y = _data()
    history = _fit(model, x, y, epochs=2)
    want, (mean, var) = reference.authors_msam_sgd(
        start, moving, _batches(x, y, 2), lr=0.1, momentum=0.9, rho=radius)
    for got, w in zip(_trainable(model), want):
        np.testing.assert_allclose(got, w, rtol=2e-4, atol=2e-5)
    for got, w in zip(_moving(net), [mean, var]):
        np.testing.assert_allclose(got, w, rtol=1e-5, atol=1e-6)
    assert history.history["grad_evals"] == [3, 6]  # one pass a step


def test_adamw_steps_match_the_authors_rule():
    """Under Adam(W), `v` is Adam's first moment, as in the authors'
    AdamW variant (weight decay 0: Keras decays before the update, the
    authors after it). The first Dense layer's bias is left out, and ε is
    1e-4: the BatchNormalization after that bias cancels it, so its
    gradient is float32 noise (0 in float64), which Adam scales up to steps
    of lr, as it would the noise of the other near-zero components."""
    net = _net()
    model = keras_rts.RTSModel(net, method="msam", radius=0.5)
    model.compile(optimizer=keras.optimizers.AdamW(0.01, weight_decay=0.0,
                                                   epsilon=1e-4),
                  loss=CROSS_ENTROPY)
    start = _trainable(model)
    x, y = _data()
    _fit(model, x, y, epochs=2)
    want = reference.authors_msam_adamw(start, _batches(x, y, 2), lr=0.01,
                                        beta1=0.9, beta2=0.999, eps=1e-4,
                                        rho=0.5)
    for i, (got, w) in enumerate(zip(_trainable(model), want)):
        if i != 1:
            np.testing.assert_allclose(got, w, rtol=2e-4, atol=2e-5)


def test_the_first_step_is_a_plain_one():
    """`v = 0` before the first step: the first msam step is SGD's."""
    x, y = _data()
    msam, sgd = _rts("msam", radius=3.0), _rts("sgd")
    msam.fit(x[:BATCH], y[:BATCH], batch_size=BATCH, verbose=0)
    sgd.fit(x[:BATCH], y[:BATCH], batch_size=BATCH, verbose=0)
    for a, b in zip(_trainable(msam), _trainable(sgd)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("settings", [
    dict(radius=0.5, coupled=5e-4),
    dict(radius=2.0, weight_decay=5e-4, perturb=False),
    dict(radius=1.0, exclude=["bias"]),
])
def test_steps_match_the_numpy_reference(settings):
    """Coupled and decoupled decay, the plain phase and the exclusion of
    variables, against the reference of docs/method.md."""
    settings = dict(settings)
    coupled = settings.pop("coupled", 0.0)
    decay = settings.pop("weight_decay", None)
    exclude = settings.pop("exclude", None)
    model = _rts("msam", weight_decay=decay,
                 exclude_from_perturbation=exclude, **settings)
    model.weight_decay = coupled
    perturbed = None
    if exclude:
        perturbed = [not any(n in v.path for n in exclude)
                     for v in model.trainable_variables]
    ref = reference.ReferenceTrainer(
        _trainable(model), _moving(model.model), "msam",
        coupled_weight_decay=coupled, weight_decay=decay or 0.0,
        perturbed=perturbed, **settings)
    x, y = _data()
    history = fit_both(model, ref, x, y, epochs=2)
    assert history.history["grad_evals"][-1] == ref.grad_evals == 6


def test_an_sgd_phase_then_msam_continues_from_the_momentum():
    """Timing: plain steps first (building the momentum), then msam."""
    model = _rts("msam", radius=1.0, perturb=False)
    ref = reference.ReferenceTrainer(_trainable(model), _moving(model.model),
                                     "msam", radius=1.0, perturb=False)
    x, y = _data()
    fit_both(model, ref, x, y, epochs=1)
    model.perturb.assign(True)
    ref.perturb = True
    history = fit_both(model, ref, x, y, epochs=1)
    assert history.history["grad_evals"] == [6]


def test_a_skipped_step_leaves_the_momentum_as_it_was():
    model = _rts("msam", radius=1.0)
    x, y = _data()
    _fit(model, x, y)
    before = [np.array(v.numpy()) for v in model.optimizer.variables]
    weights = _trainable(model)
    bad = x[:BATCH].copy()
    bad[0, 0] = np.nan
    model.fit(bad, y[:BATCH], batch_size=BATCH, verbose=0)
    assert int(model.skipped_steps.numpy()) == 1
    for a, b in zip(model.optimizer.variables, before):
        if "iteration" not in a.path:
            np.testing.assert_array_equal(a.numpy(), b)
    for a, b in zip(_trainable(model), weights):
        np.testing.assert_array_equal(a, b)


def test_a_saved_model_continues_exactly(tmp_path):
    """`v` is the optimizer's, saved in the `.keras` file with it."""
    x, y = _data()
    whole = _rts("msam", radius=1.0)
    _fit(whole, x, y, epochs=2)
    half = _rts("msam", radius=1.0)
    _fit(half, x, y, epochs=1)
    half.save(tmp_path / "msam.keras")
    resumed = keras.saving.load_model(tmp_path / "msam.keras")
    _fit(resumed, x, y, epochs=1)
    for a, b in zip(_trainable(resumed), _trainable(whole)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("optimizer, message", [
    (keras.optimizers.SGD(0.1), r"SGD\(momentum=0\) does not keep"),
    (keras.optimizers.RMSprop(0.1), "RMSprop does not keep"),
])
def test_an_optimizer_without_momentum_is_refused_at_compile(optimizer,
                                                             message):
    model = keras_rts.RTSModel(_net(), method="msam")
    with pytest.raises(ValueError, match=message):
        model.compile(optimizer=optimizer, loss=CROSS_ENTROPY)


@pytest.mark.parametrize("kwargs, message", [
    (dict(sub_batch_size=8), "forms ε from the optimizer's momentum"),
    (dict(grad_scale=0.5), "no pass at w"),
])
def test_what_msam_cannot_do_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        keras_rts.RTSModel(_net(), method="msam", **kwargs)


@pytest.mark.parametrize("policy, tolerance", [
    ("mixed_float16", 2e-2), ("mixed_bfloat16", 5e-2)])
def test_mixed_precision_takes_the_float32_steps(policy, tolerance):
    """Under a loss scale too: ε from the momentum (in true units), the
    one pass's scaled gradient unscaled once."""
    x, y = _images()

    def trained(policy):
        keras.config.set_dtype_policy(policy)
        model = _compile(keras_rts.RTSModel(_conv_net(), method="msam",
                                            radius=1.0))
        w0 = _trainable(model)
        history = model.fit(x, y, batch_size=8, epochs=1, shuffle=False,
                            verbose=0)
        return [a - b for a, b in zip(_trainable(model), w0)], history

    delta16, history16 = trained(policy)
    delta32, _ = trained("float32")
    error = reference.norm([a - b for a, b in zip(delta16, delta32)])
    assert error < tolerance * reference.norm(delta32)
    assert history16.history["skipped_steps"][-1] == 0
    assert history16.history["grad_evals"] == [4]


def test_recomputed_batchnorm_statistics_are_the_mean_over_batches():
    """`recompute_batchnorm`: the moving mean and variance become the plain
    average of the batches' (biased) means and variances of the layer's
    input, at the current weights, whatever they were before."""
    model = _rts("msam", radius=1.0)
    x, y = _data()
    _fit(model, x, y)
    kernel, bias = (v.numpy() for v in model.model.layers[0].weights)
    used = keras_rts.callbacks.recompute_batchnorm(model, x, batch_size=20)
    assert used == 3  # 20, 20 and 8 examples
    z = [np.asarray(x[i:i + 20], np.float64) @ kernel + bias
         for i in range(0, len(x), 20)]
    mean, var = _moving(model.model)
    np.testing.assert_allclose(mean, np.mean([b.mean(0) for b in z], 0),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(var, np.mean([b.var(0) for b in z], 0),
                               rtol=1e-5, atol=1e-6)
    assert model.model.layers[1].momentum == 0.99  # restored
    with pytest.raises(ValueError, match="steps must be a positive"):
        keras_rts.callbacks.RecomputeBatchNorm(x, steps=0)
