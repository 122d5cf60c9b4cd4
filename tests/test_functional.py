"""`keras_rts.functional.direction`: the method for a `train_step` of one's
own — in a loop of one's own and in a model that overrides `train_step`,
against the NumPy reference, on every backend."""

import keras
import numpy as np
import pytest

import keras_rts
from tests import reference
from tests.test_model import BATCH, _data, _moving, _net, _trainable

METHODS = list(keras_rts.METHODS)
OWN = {"gsam": dict(alpha=0.2),
       "wsam": dict(gamma=0.7), "fsam": dict(sigma=0.5, decay=0.6),
       "looksam": dict(alpha=0.4, every=2)}
CROSS_ENTROPY = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _values(variables):
    return [v.value for v in variables]


@pytest.mark.parametrize("method", METHODS)
def test_a_loop_of_ones_own_matches_the_numpy_reference(method):
    """Six steps of SGD with momentum on the method's direction, the
    method's memory carried from call to call, LookSAM's cycle taken by
    the loop, Momentum-SAM fed the optimizer's momentum; moving statistics
    from the first pass only."""
    options = OWN.get(method, {})
    radius = None if method in ("sgd", "ugd") else 0.1
    net = _net()
    optimizer = keras.optimizers.SGD(0.1, momentum=0.9)
    optimizer.build(net.trainable_variables)
    ref = reference.ReferenceTrainer(
        _trainable(net), _moving(net), method, radius=radius,
        coupled_weight_decay=1e-3, **options)
    x, y = _data()
    memory = None
    for step in range(6):
        xb, yb = x[step % 3 * BATCH:][:BATCH], y[step % 3 * BATCH:][:BATCH]

        def loss_fn(weights, state):
            y_pred, state = net.stateless_call(weights, state, xb,
                                               training=True)
            return CROSS_ENTROPY(yb, y_pred), y_pred, state

        perturb = True
        if method == "looksam" and step % options["every"]:
            perturb = "reuse"
        # Momentum-SAM's v: Keras' SGD keeps −lr·v.
        momentum = ([-m.value for m in optimizer.momentums]
                    if method == "msam" else None)
        d = keras_rts.functional.direction(
            loss_fn, net.trainable_variables,
            _values(net.non_trainable_variables), method=method,
            radius=radius, perturb=perturb, memory=memory, momentum=momentum,
            weight_decay=1e-3, **options)
        assert bool(keras.ops.convert_to_numpy(d.finite))
        memory = d.memory
        optimizer.apply(d.direction, net.trainable_variables)
        if d.apart is not None:  # decoupled WSAM: after the optimizer
            for variable, apart in zip(net.trainable_variables, d.apart):
                variable.assign(variable - 0.1 * apart)
        for variable, value in zip(net.non_trainable_variables, d.state):
            variable.assign(value)
        ref.step(xb, yb)
    for got, want in zip(_trainable(net), ref.params):
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5)
    for got, want in zip(_moving(net), [ref.moving_mean, ref.moving_var]):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


if keras.backend.backend() == "jax":
    class SharpnessAware(keras.Model):
        """A model with its own (stateless, as JAX asks) `train_step`."""

        method = "sam"

        def train_step(self, state, data):
            trainable, non_trainable, optimizer_values, metrics_values = state
            x, y = data

            def loss_fn(weights, model_state):
                y_pred, model_state = self.stateless_call(
                    weights, model_state, x, training=True)
                return CROSS_ENTROPY(y, y_pred), y_pred, model_state

            d = keras_rts.functional.direction(
                loss_fn, trainable, non_trainable, method=self.method,
                radius=0.1)
            trainable, optimizer_values = self.optimizer.stateless_apply(
                optimizer_values, d.direction, trainable)
            return {"loss": d.loss}, (trainable, d.state, optimizer_values,
                                      metrics_values)
else:
    class SharpnessAware(keras.Model):
        """A model with its own `train_step` (TensorFlow, PyTorch)."""

        method = "sam"

        def train_step(self, data):
            x, y = data

            def loss_fn(weights, state):
                y_pred, state = self.stateless_call(weights, state, x,
                                                    training=True)
                return CROSS_ENTROPY(y, y_pred), y_pred, state

            d = keras_rts.functional.direction(
                loss_fn, self.trainable_variables,
                _values(self.non_trainable_variables), method=self.method,
                radius=0.1)
            self.optimizer.apply(d.direction, self.trainable_variables)
            for variable, value in zip(self.non_trainable_variables,
                                       d.state):
                variable.assign(value)
            return {"loss": d.loss}


@pytest.mark.parametrize("method", ["sam", "pugd"])
def test_a_model_with_its_own_train_step_matches_the_numpy_reference(
        method):
    net = _net()
    model = SharpnessAware(net.inputs, net.outputs)
    model.method = method
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
    ref = reference.ReferenceTrainer(_trainable(net), _moving(net), method,
                                     radius=0.1)
    x, y = _data()
    history = model.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False,
                        verbose=0)
    for _ in range(2):
        for i in range(0, len(x), BATCH):
            ref.step(x[i:i + BATCH], y[i:i + BATCH])
    for got, want in zip(_trainable(net), ref.params):
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5)
    for got, want in zip(_moving(net), [ref.moving_mean, ref.moving_var]):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert np.isfinite(history.history["loss"]).all()


def test_bad_arguments_are_refused_naming_them():
    net = _net()

    def loss_fn(weights, state):
        raise AssertionError("not called")

    weights = net.trainable_variables
    direction = keras_rts.functional.direction
    with pytest.raises(ValueError, match="perturb must be one of True, "
                       "False, 'reuse' for method='looksam'"):
        direction(loss_fn, weights, method="looksam", perturb=2)
    with pytest.raises(ValueError, match="perturb must be one of True, "
                       "False for method='sam', got 'reuse'"):
        direction(loss_fn, weights, method="sam", perturb="reuse")
    with pytest.raises(ValueError, match="perturbed has 1 entries for 6"):
        direction(loss_fn, weights, perturbed=[True])
    with pytest.raises(ValueError, match="perturbed leaves no weight"):
        direction(loss_fn, weights, perturbed=[False] * 6)
    with pytest.raises(ValueError, match="alpha"):
        direction(loss_fn, weights, method="sam", alpha=0.3)
    # The same checks and messages as RTSModel's.
    for bad in (-1.0, float("nan"), float("inf"), "big"):
        for name in ("radius", "grad_scale", "weight_decay"):
            with pytest.raises(ValueError, match=name):
                direction(loss_fn, weights, method="sam", **{name: bad})
            with pytest.raises(ValueError, match=name):
                keras_rts.RTSModel(net, method="sam", **{name: bad})
    zeros = [np.zeros(v.shape, "float32") for v in weights]
    with pytest.raises(ValueError, match="memory has 5 tensors for 6"):
        direction(loss_fn, weights, method="fsam", memory=zeros[:5])
    with pytest.raises(ValueError, match=r"memory\[0\] has shape \(8,\)"):
        direction(loss_fn, weights, method="fsam",
                  memory=[np.zeros(8, "float32")] + zeros[1:])
    with pytest.raises(ValueError, match="method='sam' takes no memory"):
        direction(loss_fn, weights, method="sam", memory=zeros)
    with pytest.raises(ValueError, match="reuses what a step of "
                       "method='looksam' keeps"):
        direction(loss_fn, weights, method="looksam", perturb="reuse")
    with pytest.raises(ValueError, match="momentum has 5 tensors"):
        direction(loss_fn, weights, method="msam", momentum=zeros[:5])


def test_a_loss_fn_that_returns_the_wrong_thing_is_named():
    net = _net()
    x, y = _data()

    def loss_fn(weights, state):
        y_pred, state = net.stateless_call(weights, state, x, training=True)
        return CROSS_ENTROPY(y, y_pred)  # the loss alone

    with pytest.raises(ValueError, match=r"loss_fn must return \(loss, aux, "
                       r"new_state\), got"):
        keras_rts.functional.direction(
            loss_fn, net.trainable_variables,
            [v.value for v in net.non_trainable_variables], method="sam")
