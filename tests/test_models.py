"""Every recipe network builds for every dataset shape and trains a step."""

import keras
import numpy as np
import pytest

import keras_rts
from keras_rts import models

SHAPES = [((32, 32, 3), 10), ((32, 32, 3), 100), ((64, 64, 3), 200)]


@pytest.mark.parametrize("name, input_shape, classes", [
    (name, *shape) for name in ("small_resnet", "vit")
    for shape in SHAPES] + [
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


def test_the_vit_is_patches_positions_prenorm_blocks_and_a_pooled_head(
        tmp_path):
    net = models.vit(10, (32, 32, 3), patch_size=4, width=32, depth=3,
                     heads=2, mlp_width=64)
    embedding = net.get_layer("patch_embedding")
    assert embedding.kernel_size == (4, 4) and embedding.strides == (4, 4)
    assert net.get_layer("positions").positions.shape == (1, 64, 32)
    blocks = [l.name for l in net.layers if l.name.endswith("_attention")]
    assert len(blocks) == 3
    attention = net.get_layer("block0_attention")
    assert attention.num_heads == 2 and attention.key_dim == 16
    # Pre-norm: each block's attention and MLP read a normalised input.
    assert net.get_layer("block0_attention").input[0].name == (
        net.get_layer("block0_norm1").output.name)
    assert net.get_layer("block1_mlp1").input.name == (
        net.get_layer("block1_norm2").output.name)
    assert net.output_shape == (None, 10)
    # It saves and loads (the position embedding is a registered layer).
    x = np.random.default_rng(0).random((2, 32, 32, 3), dtype="float32")
    net.save(tmp_path / "vit.keras")
    again = keras.saving.load_model(tmp_path / "vit.keras")
    np.testing.assert_allclose(again.predict(x, verbose=0),
                               net.predict(x, verbose=0), rtol=1e-5,
                               atol=1e-6)


def test_the_vit_learns_under_adamw_with_each_method():
    rng = np.random.default_rng(0)
    x = rng.random((64, 16, 16, 3), dtype="float32")
    y = (x[:, :8].mean((1, 2, 3)) > x[:, 8:].mean((1, 2, 3))).astype("int32")
    for method in ("sgd", "sam", "pugd"):
        keras.utils.set_random_seed(0)
        model = keras_rts.RTSModel(models.vit(2, (16, 16, 3), width=32,
                                              heads=2, mlp_width=64),
                                   method=method)
        model.compile(optimizer=keras.optimizers.AdamW(3e-3),
                      loss=keras.losses.SparseCategoricalCrossentropy(True))
        loss = model.fit(x, y, batch_size=16, epochs=8, verbose=0,
                         shuffle=False).history["loss"]
        assert np.isfinite(loss).all() and loss[-1] < 0.9 * loss[0], (
            method, loss)


@pytest.mark.parametrize("kwargs, match", [
    (dict(patch_size=5), "multiples of patch_size=5"),
    (dict(width=30, heads=4), "width=30 must be a multiple of heads=4"),
    (dict(depth=0), "depth must be a positive integer"),
])
def test_bad_vit_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        models.vit(10, (32, 32, 3), **kwargs)
