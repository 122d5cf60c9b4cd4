"""`RTSModel` under AdamW: the method's direction goes through Adam's
moments as a gradient would, against a NumPy reference of the method and
of Keras' AdamW (decoupled weight decay, then the bias-corrected Adam
step), written from their definitions; the two weight decays are never
combined without a word."""

import keras
import numpy as np
import pytest

import keras_rts
from tests import reference
from tests.test_model import BATCH, _data, _moving, _net, _trainable

LR, DECAY, BETA_1, BETA_2, EPSILON = 1e-2, 0.05, 0.9, 0.999, 1e-4
# ε above the float32 noise of the first bias's gradient, which the
# BatchNormalization after it cancels (0 exactly in float64): Adam would
# scale that noise up to a step of lr.


class ReferenceAdamW:
    """Keras' AdamW: `w ← w − lr·wd·w`, then Adam's bias-corrected step."""

    def __init__(self, params):
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]
        self.t = 0

    def apply(self, params, direction):
        self.t += 1
        alpha = LR * np.sqrt(1 - BETA_2**self.t) / (1 - BETA_1**self.t)
        out = []
        for i, (w, d) in enumerate(zip(params, direction)):
            w = w - w * DECAY * LR
            self.m[i] = self.m[i] + (d - self.m[i]) * (1 - BETA_1)
            self.v[i] = self.v[i] + (d * d - self.v[i]) * (1 - BETA_2)
            out.append(w - alpha * self.m[i] / (np.sqrt(self.v[i]) + EPSILON))
        return out


@pytest.mark.parametrize("method", ["pugd", "sam"])
def test_the_direction_goes_through_adams_moments(method):
    net = _net()
    model = keras_rts.RTSModel(net, method=method, radius=0.1)
    model.compile(optimizer=keras.optimizers.AdamW(
        LR, weight_decay=DECAY, beta_1=BETA_1, beta_2=BETA_2,
        epsilon=EPSILON), loss=keras.losses.SparseCategoricalCrossentropy(
            from_logits=True))
    ref = reference.ReferenceTrainer(_trainable(net), _moving(net), method,
                                     radius=0.1)
    adamw = ReferenceAdamW(ref.params)
    x, y = _data()
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    for i in range(0, len(x), BATCH):  # three steps
        direction = ref.direction(x[i:i + BATCH], y[i:i + BATCH])
        ref.params = adamw.apply(ref.params, direction)
    for got, want in zip(_trainable(net), ref.params):
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5)
    for got, want in zip(_moving(net), [ref.moving_mean, ref.moving_var]):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_coupled_and_decoupled_weight_decay_are_not_combined_silently():
    model = keras_rts.RTSModel(_net(), method="sam", weight_decay=5e-4)
    with pytest.warns(UserWarning, match=r"RTSModel\(weight_decay=0\.0005\)"
                      r".*AdamW\(weight_decay=0\.05\).*both apply"):
        model.compile(optimizer=keras.optimizers.AdamW(weight_decay=0.05),
                      loss="mse")
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one decay alone: no warning
        keras_rts.RTSModel(_net(), method="sam").compile(
            optimizer=keras.optimizers.AdamW(weight_decay=0.05), loss="mse")
        keras_rts.RTSModel(_net(), method="sam", weight_decay=5e-4).compile(
            optimizer=keras.optimizers.SGD(0.1), loss="mse")
