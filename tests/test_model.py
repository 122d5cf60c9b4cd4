"""RTSModel's step against the NumPy reference, and its Keras behaviour."""

import numpy as np
import keras
import pytest

import keras_rts
from tests import reference

METHODS = ["sgd", "ugd", "sam", "asam", "pugd"]
BATCH = 16


def _data(n=48, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5)).astype("float32")
    y = rng.integers(0, 3, size=n).astype("int32")
    return x, y


def _net(seed=1, bias=True):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((5,)),
        keras.layers.Dense(8, use_bias=bias),
        keras.layers.BatchNormalization(),
        keras.layers.ReLU(),
        keras.layers.Dense(3),
    ])


def _compile(model, lr=0.1, momentum=0.9, weight_decay=None, **kwargs):
    model.compile(
        optimizer=keras.optimizers.SGD(lr, momentum=momentum,
                                       weight_decay=weight_decay),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        **kwargs,
    )
    return model


def _rts(method="pugd", bias=True, **kwargs):
    compile_kwargs = {k: kwargs.pop(k) for k in
                      ("lr", "momentum", "weight_decay", "jit_compile")
                      if k in kwargs}
    net = _net(bias=bias)
    return _compile(keras_rts.RTSModel(net, method=method, **kwargs),
                    **compile_kwargs)


def _fit(model, x, y, epochs=1):
    return model.fit(x, y, batch_size=BATCH, epochs=epochs, shuffle=False,
                     verbose=0)


def _trainable(model):
    return [v.numpy() for v in model.trainable_variables]


def _moving(net):
    bn = net.layers[1]
    return [bn.moving_mean.numpy(), bn.moving_variance.numpy()]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("variant", [
    dict(),
    dict(radius=0.3, grad_scale=0.5, coupled=5e-4),
    dict(radius=2.0, weight_decay=5e-4, perturb=False),
])
def test_steps_match_numpy_reference(method, variant):
    variant = dict(variant)
    check_against_reference(method, variant.pop("coupled", 0.0),
                            variant.pop("weight_decay", None), **variant)


def check_against_reference(method, coupled=0.0, weight_decay=None,
                            **settings):
    """Two epochs of `method` against the NumPy reference, with coupled
    and decoupled weight decay; the passes counted alike."""
    model = _rts(method, weight_decay=weight_decay, **settings)
    model.weight_decay = coupled  # coupled decay: set before tracing.
    x, y = _data()
    ref = reference.ReferenceTrainer(
        _trainable(model), _moving(model.model), method,
        coupled_weight_decay=coupled, weight_decay=weight_decay or 0.0,
        **settings)
    history = fit_both(model, ref, x, y, epochs=2)
    assert history.history["grad_evals"][-1] == ref.grad_evals


def fit_both(model, ref, x, y, epochs):
    """Trains `model` and the NumPy `ref` alike; checks they agree."""
    history = _fit(model, x, y, epochs=epochs)
    for _ in range(epochs):
        for i in range(0, len(x), BATCH):
            ref.step(x[i:i + BATCH], y[i:i + BATCH])
    for got, want in zip(_trainable(model), ref.params):
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5)
    for got, want in zip(_moving(model.model),
                         [ref.moving_mean, ref.moving_var]):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    return history


@pytest.fixture(params=["grappler_off", "grappler_on"])
def graph_rewrites(request):
    """Runs a test with TensorFlow's graph rewrites off, then on.

    RTSModel applies the optimizer inside a `tf.cond` (so that non-finite
    steps can be skipped), and Grappler fuses arithmetic differently inside
    a conditional than outside it. With the rewrites off the two steps are
    the same arithmetic and must agree bit for bit; with them on, only to
    the last bit of float32. Under JAX, XLA fuses the step as a whole
    (with the selection that skips non-finite steps): the last bit too.
    """
    if keras.backend.backend() != "tensorflow":
        if request.param == "grappler_off":
            pytest.skip("TensorFlow's graph rewrites only")
        yield False
        return
    import tensorflow as tf

    off = request.param == "grappler_off"
    tf.config.optimizer.set_experimental_options(
        {"disable_meta_optimizer": off})
    yield off
    tf.config.optimizer.set_experimental_options(
        {"disable_meta_optimizer": False})


def _assert_same_weights(got, want, exact):
    for a, b in zip(got, want):
        if exact:
            np.testing.assert_array_equal(a, b)
        else:
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)


SLOW = pytest.mark.slow


def _some_slow(values, fast):
    """All `values`, those not in `fast` marked slow (CI runs them all)."""
    return [v if v in fast else pytest.param(v, marks=SLOW) for v in values]


@pytest.mark.parametrize("method", _some_slow(METHODS, ("sgd", "pugd")))
def test_perturb_false_is_exactly_a_plain_keras_step(method, graph_rewrites):
    # A bias before BatchNormalization has a gradient of pure round-off,
    # so the exact comparison leaves it out, as BN networks usually do.
    x, y = _data()
    plain = _compile(_net(bias=False))
    _fit(plain, x, y, epochs=2)
    model = _rts(method, perturb=False, bias=False)
    history = _fit(model, x, y, epochs=2)
    _assert_same_weights(_trainable(model), _trainable(plain), graph_rewrites)
    _assert_same_weights(_moving(model.model), _moving(plain), graph_rewrites)
    assert history.history["perturb"] == [0, 0]
    assert history.history["grad_evals"] == [3, 6]


def test_sgd_method_is_a_plain_keras_step_even_when_perturb_is_set(
        graph_rewrites):
    x, y = _data()
    plain = _compile(_net(bias=False), weight_decay=5e-4)
    _fit(plain, x, y, epochs=2)
    model = _rts("sgd", perturb=True, weight_decay=5e-4, bias=False)
    _fit(model, x, y, epochs=2)
    _assert_same_weights(_trainable(model), _trainable(plain), graph_rewrites)


@pytest.mark.parametrize("method", ["sam", "pugd"])
def test_perturbed_direction_differs_from_the_plain_gradient(method):
    x, y = _data(n=BATCH)
    # With radius 0 the second pass sees w itself, so sam applies g.
    unperturbed = _rts(method, radius=0.0, momentum=0.0)
    perturbed = _rts(method, radius=0.5, momentum=0.0)
    w0 = _trainable(perturbed)
    _fit(unperturbed, x, y)
    _fit(perturbed, x, y)
    step = [a - b for a, b in zip(_trainable(perturbed), w0)]
    plain_step = [a - b for a, b in zip(_trainable(unperturbed), w0)]
    diff = reference.norm([a - b for a, b in zip(step, plain_step)])
    assert diff > 1e-3 * reference.norm(plain_step)


@pytest.mark.parametrize("method", ["sam", "asam", "pugd"])
def test_batchnorm_statistics_come_from_the_unperturbed_pass_only(method):
    x, y = _data(n=BATCH)
    plain = _compile(_net())
    _fit(plain, x, y)
    model = _rts(method, radius=3.0)
    _fit(model, x, y)
    np.testing.assert_array_equal(_moving(model.model), _moving(plain))


@pytest.mark.parametrize("method", _some_slow(METHODS, ("ugd", "pugd")))
def test_zero_gradient_leaves_finite_weights(method):
    keras.utils.set_random_seed(0)
    net = keras.Sequential([keras.Input((4,)),
                            keras.layers.Dense(2, kernel_initializer="zeros")])
    model = keras_rts.RTSModel(net, method=method)
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                  loss="mse")
    x = np.ones((8, 4), "float32")
    history = model.fit(x, np.zeros((8, 2), "float32"), batch_size=4,
                        epochs=2, verbose=0)
    for w in _trainable(model):
        assert np.all(np.isfinite(w))
        np.testing.assert_array_equal(w, 0.0)  # g = 0, so U = 0.
    assert history.history["skipped_steps"] == [0, 0]


@pytest.mark.parametrize("method, bad", [
    (m, np.nan) if m in ("sgd", "pugd") else pytest.param(m, np.nan,
                                                          marks=SLOW)
    for m in METHODS] + [("pugd", np.inf), pytest.param("sgd", np.inf,
                                                        marks=SLOW)])
def test_non_finite_batch_is_skipped_and_counted(method, bad):
    x, y = _data(n=2 * BATCH)
    model = _rts(method)
    _fit(model, x[:BATCH], y[:BATCH])  # momentum is now non-zero.
    before = _trainable(model)
    iterations = int(model.optimizer.iterations.numpy())
    x_bad = x[BATCH:].copy()
    x_bad[3, 2] = bad
    history = _fit(model, x_bad, y[BATCH:])
    for got, want in zip(_trainable(model), before):
        np.testing.assert_array_equal(got, want)
    assert history.history["skipped_steps"] == [1]
    assert int(model.optimizer.iterations.numpy()) == iterations
    # Training goes on afterwards.
    _fit(model, x[BATCH:], y[BATCH:])
    assert all(np.all(np.isfinite(w)) for w in _trainable(model))
    assert any(np.any(a != b) for a, b in zip(_trainable(model), before))


def test_logs_carry_rts_state_in_history():
    x, y = _data()
    model = _rts("pugd", radius=0.7, grad_scale=0.25)
    history = _fit(model, x, y, epochs=2)
    h = history.history
    assert h["radius"] == pytest.approx([0.7, 0.7])
    assert h["grad_scale"] == [0.25, 0.25]
    assert h["perturb"] == [1, 1]
    assert h["grad_evals"] == [6, 12]  # 3 steps an epoch, 2 passes a step.
    model.perturb.assign(False)
    h = _fit(model, x, y).history
    assert h["perturb"] == [0] and h["grad_evals"] == [15]


def test_switching_phase_traces_once_per_phase_never_per_switch():
    traces = []

    class Counting(keras_rts.RTSModel):
        def train_step(self, *args):
            traces.append(1)
            return super().train_step(*args)

    x, y = _data()
    model = _compile(Counting(_net(), method="pugd"))
    _fit(model, x, y)
    model.perturb.assign(False)
    _fit(model, x, y)
    n = len(traces)  # each phase traced (once per input signature)

    class Alternate(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            keras_rts.backend.assign_between_steps(
                self.model, self.model.perturb, batch % 2 == 0)

    for radius, scale, perturb in [(0.5, 2.0, True), (0.1, 0.0, False)] * 2:
        model.radius.assign(radius)
        model.grad_scale.assign(scale)
        model.perturb.assign(perturb)
        _fit(model, x, y)
    evals = int(model.grad_evals.numpy())
    history = model.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False,
                        verbose=0, callbacks=[Alternate()])
    if keras.backend.backend() != "torch":  # eager there: nothing traced
        assert len(traces) == n
    # Steps 0, 2 perturb (2 passes), step 1 does not (1): 5 an epoch.
    assert history.history["grad_evals"] == [evals + 5, evals + 10]


def _conv_net(seed=3):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((8, 8, 3)),
        keras.layers.Conv2D(8, 3, padding="same"),
        keras.layers.BatchNormalization(),
        keras.layers.ReLU(),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(4),
        keras.layers.Activation("linear", dtype="float32"),
    ])


def _images(n=32, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, 8, 8, 3)).astype("float32"),
            rng.integers(0, 4, size=n).astype("int32"))


@pytest.mark.parametrize("policy, tolerance", [
    ("mixed_float16", 2e-2), ("mixed_bfloat16", 5e-2)])
@pytest.mark.parametrize("method", _some_slow(["sam", "pugd"], ("pugd",)))
def test_mixed_precision_trains_and_first_update_matches_float32(
        method, policy, tolerance):
    x, y = _images()

    def first_update(policy):
        keras.config.set_dtype_policy(policy)
        net = _conv_net()
        model = _compile(keras_rts.RTSModel(net, method=method), momentum=0.0)
        if policy == "mixed_float16":
            assert isinstance(model.optimizer,
                              keras.optimizers.LossScaleOptimizer)
        w0 = _trainable(model)
        model.fit(x[:BATCH], y[:BATCH], batch_size=BATCH, verbose=0)
        delta = [a - b for a, b in zip(_trainable(model), w0)]
        history = model.fit(x, y, batch_size=8, epochs=3, verbose=0)
        return model, delta, history

    model16, delta16, history16 = first_update(policy)
    _, delta32, _ = first_update("float32")
    error = reference.norm([a - b for a, b in zip(delta16, delta32)])
    assert error < tolerance * reference.norm(delta32)
    assert all(np.all(np.isfinite(w)) for w in _trainable(model16))
    assert np.all(np.isfinite(history16.history["loss"]))
    assert history16.history["skipped_steps"][-1] == 0


def test_mixed_float16_overflow_is_skipped_and_lowers_the_loss_scale():
    keras.config.set_dtype_policy("mixed_float16")
    model = _compile(keras_rts.RTSModel(_conv_net(), method="pugd"))
    x, y = _images(n=BATCH)
    model.fit(x, y, batch_size=BATCH, verbose=0)  # builds the optimizer.
    before = _trainable(model)
    scale = float(model.optimizer.dynamic_scale.numpy())
    x_bad = x.copy()
    x_bad[0, 0, 0, 0] = 1e5  # Overflows float16 in the first convolution.
    history = model.fit(x_bad, y, batch_size=BATCH, verbose=0)
    for got, want in zip(_trainable(model), before):
        np.testing.assert_array_equal(got, want)
    assert float(model.optimizer.dynamic_scale.numpy()) == scale / 2
    assert history.history["skipped_steps"] == [1]


@pytest.mark.parametrize("method", _some_slow(["sam", "pugd"], ("pugd",)))
def test_jit_compile_gives_the_same_step(method):
    x, y = _data()
    eager_graph = _rts(method)
    xla = _rts(method, jit_compile=True)
    assert xla.jit_compile
    _fit(eager_graph, x, y, epochs=2)
    history = _fit(xla, x, y, epochs=2)
    for got, want in zip(_trainable(xla), _trainable(eager_graph)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert history.history["grad_evals"] == [6, 12]


def test_keras_file_round_trip_then_continue_equals_uninterrupted(tmp_path):
    x, y = _data()
    uninterrupted = _rts("pugd", radius=0.4, weight_decay=5e-4)
    _fit(uninterrupted, x, y, epochs=4)

    model = _rts("pugd", radius=0.4, weight_decay=5e-4)
    _fit(model, x, y, epochs=2)
    model.radius.assign(0.4)  # state, saved with the weights.
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, keras_rts.RTSModel)
    assert loaded.method == "pugd"
    assert int(loaded.grad_evals.numpy()) == 12
    assert loaded.get_config()["radius"] == 0.4
    history = _fit(loaded, x, y, epochs=2)
    for got, want in zip(_trainable(loaded), _trainable(uninterrupted)):
        np.testing.assert_array_equal(got, want)
    assert history.history["grad_evals"] == [18, 24]
    np.testing.assert_array_equal(loaded.predict(x, verbose=0),
                                  uninterrupted.predict(x, verbose=0))


def test_saved_state_variables_round_trip(tmp_path):
    model = _rts("sam", radius=0.05)
    model.radius.assign(0.2)
    model.grad_scale.assign(0.3)
    model.perturb.assign(False)
    model.weight_decay = 1e-4
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert float(loaded.radius.numpy()) == pytest.approx(0.2)
    assert float(loaded.grad_scale.numpy()) == pytest.approx(0.3)
    assert not bool(loaded.perturb.numpy())
    assert loaded.method == "sam"
    # Weights-only checkpoints carry the same state.
    path = str(tmp_path / "m.weights.h5")
    model.save_weights(path)
    other = _rts("sam")
    other.load_weights(path)
    assert float(other.radius.numpy()) == pytest.approx(0.2)
    assert not bool(other.perturb.numpy())
    for a, b in zip(_trainable(other), _trainable(model)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kwargs, name", [
    (dict(radius=-1.0), "radius"),
    (dict(radius=float("nan")), "radius"),
    (dict(radius=float("inf")), "radius"),
    (dict(radius="big"), "radius"),
    (dict(method="adam"), "method"),
    (dict(grad_scale=-0.5), "grad_scale"),
    (dict(grad_scale=float("nan")), "grad_scale"),
    (dict(weight_decay=-1e-4), "weight_decay"),
    (dict(perturb="yes"), "perturb"),
])
def test_bad_arguments_raise_value_error_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=name):
        keras_rts.RTSModel(_net(), **kwargs)


def test_numpy_scalars_are_numbers():
    model = keras_rts.RTSModel(
        _net(), method="sam", radius=np.float32(0.1),
        grad_scale=np.float64(0.5), weight_decay=np.float32(5e-4),
        perturb=np.bool_(True))
    assert float(model.radius.numpy()) == pytest.approx(0.1)
    assert model.get_config()["perturb"] is True
    assert keras_rts.RTSModel(_net(), sub_batch_size=np.int64(4)
                              ).get_config()["sub_batch_size"] == 4
    cosine = keras_rts.schedules.Cosine(np.float32(3.0), np.float64(0.1),
                                        period=np.int64(10))
    assert float(cosine(0)) == pytest.approx(3.0)


@pytest.mark.parametrize("kwargs, name", [
    (dict(method=["pugd"]), "method"),
    (dict(method="sgd", sub_batch_size=4), "sub_batch_size"),
    (dict(method="ugd", sub_batch_size=4), "sub_batch_size"),
    (dict(perturbation=["global"]), "perturbation"),
    (dict(sub_batch_size=0), "sub_batch_size"),
    (dict(sub_batch_size=2.5), "sub_batch_size"),
    (dict(method="asam", eta=-0.1), "eta"),
    (dict(method="gsam", eta=0.1), "eta=0.1 is a setting of asam, not of "
                                   "method='gsam'"),
])
def test_more_bad_arguments_raise_value_errors_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=name):
        keras_rts.RTSModel(_net(), **kwargs)


@pytest.mark.parametrize("not_a_model", [keras.layers.Dense(3), "resnet",
                                         lambda x: x])
def test_wrapping_something_that_is_not_a_keras_model_fails(not_a_model):
    with pytest.raises(ValueError, match="model must be a keras.Model"):
        keras_rts.RTSModel(not_a_model)


def test_export_serves_the_trained_network(tmp_path):
    if keras.backend.backend() != "tensorflow":
        pytest.skip("SavedModel export is checked on TensorFlow")
    import tensorflow as tf

    x, y = _data()
    model = _rts("pugd")
    _fit(model, x, y)
    model.export(str(tmp_path / "served"))
    served = tf.saved_model.load(str(tmp_path / "served"))
    np.testing.assert_allclose(served.serve(x).numpy(),
                               model.predict(x, verbose=0), rtol=1e-5,
                               atol=1e-6)
