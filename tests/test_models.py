"""Every recipe network builds for every dataset shape and trains a step."""

import keras
import numpy as np
import pytest

import keras_rts
from keras_rts import models

SHAPES = [((32, 32, 3), 10), ((32, 32, 3), 100), ((64, 64, 3), 200)]


@pytest.mark.parametrize("name, input_shape, classes", [
    ("small_resnet", *shape) for shape in SHAPES] + [
    pytest.param(name, *shape, marks=pytest.mark.slow)
    for name in ("resnet18", "wrn28_10") for shape in SHAPES])
def test_model_builds_and_trains_one_step(name, input_shape, classes):
    net = models.get(name, classes, input_shape)
    assert net.input_shape == (None, *input_shape)
    assert net.output_shape == (None, classes)
    model = keras_rts.RTSModel(net, method="pugd")
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(True))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, *input_shape)).astype("float32")
    y = rng.integers(0, classes, size=4)
    before = [v.numpy() for v in model.trainable_variables]
    logs = model.train_on_batch(x, y, return_dict=True)
    assert np.isfinite(logs["loss"]) and logs["grad_evals"] == 2
    after = [v.numpy() for v in model.trainable_variables]
    assert all(np.all(np.isfinite(w)) for w in after)
    assert all(not np.array_equal(a, b) for a, b in zip(after, before))


def test_parameter_counts_match_the_published_networks():
    # ResNet-18 (CIFAR): 11.17 M trainable; WRN-28-10: 36.48 M.
    def trainable(net):
        return sum(int(np.prod(v.shape)) for v in net.trainable_variables)

    assert trainable(models.resnet18(10)) == 11_173_962
    assert trainable(models.wide_resnet(28, 10, 10)) == 36_479_194


def test_convolutions_use_he_initialisation_and_no_bias():
    net = models.small_resnet(10)
    convs = [l for l in net.layers if isinstance(l, keras.layers.Conv2D)]
    assert convs and all(not c.use_bias for c in convs)
    assert all(isinstance(c.kernel_initializer, keras.initializers.HeNormal)
               for c in convs)


@pytest.mark.parametrize("call, match", [
    (lambda: models.get("vgg16", 10, (32, 32, 3)), "name='vgg16'"),
    (lambda: models.wide_resnet(depth=27), "depth"),
    (lambda: models.resnet((2, 2), (16,)), "same length"),
])
def test_bad_model_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()
