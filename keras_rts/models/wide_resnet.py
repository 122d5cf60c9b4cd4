"""Wide residual networks (Zagoruyko & Komodakis, 2016) for CIFAR-sized images.

WRN-d-k: a 3×3 stem of 16 filters, then three groups of `(d − 4) / 6`
pre-activation basic blocks (BN → ReLU → conv) of `16k`, `32k` and `64k`
filters, the last two halving the resolution. WRN-28-10 is the network of
the SAM CIFAR recipes. BatchNormalization uses PyTorch's defaults, as the
published recipes do (see `keras_rts.models.resnet`).
"""

import keras
from keras import layers


def _batch_norm(name):
    return layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=name)


def _conv(filters, kernel, strides, name):
    return layers.Conv2D(
        filters, kernel, strides=strides, padding="same", use_bias=False,
        kernel_initializer="he_normal", name=name,
    )


def _block(x, filters, strides, dropout, name):
    preactivated = layers.ReLU(name=f"{name}_relu1")(
        _batch_norm(f"{name}_bn1")(x))
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = _conv(filters, 1, strides, f"{name}_shortcut")(preactivated)
    y = _conv(filters, 3, strides, f"{name}_conv1")(preactivated)
    y = layers.ReLU(name=f"{name}_relu2")(_batch_norm(f"{name}_bn2")(y))
    if dropout:
        y = layers.Dropout(dropout, name=f"{name}_dropout")(y)
    y = _conv(filters, 3, 1, f"{name}_conv2")(y)
    return layers.Add(name=f"{name}_add")([y, shortcut])


def wide_resnet(depth=28, width=10, num_classes=10, input_shape=(32, 32, 3),
                dropout=0.0):
    """Builds WRN-`depth`-`width`.

    Args:
        depth: total depth; `(depth − 4)` must be divisible by 6.
        width: the widening factor k.
        num_classes: number of output logits.
        input_shape: `(height, width, channels)` of the images.
        dropout: dropout rate between the convolutions of a block.

    Returns:
        A `keras.Model` from images to logits (no softmax).
    """
    if depth < 10 or (depth - 4) % 6:
        raise ValueError(
            f"depth must be 6n + 4 with n ≥ 1 (10, 16, 22, 28, …), got "
            f"{depth!r}."
        )
    if width < 1:
        raise ValueError(f"width must be ≥ 1, got {width!r}.")
    blocks = (depth - 4) // 6
    inputs = keras.Input(input_shape, name="images")
    x = _conv(16, 3, 1, "stem_conv")(inputs)
    for group, filters in enumerate((16 * width, 32 * width, 64 * width)):
        for block in range(blocks):
            strides = 2 if group > 0 and block == 0 else 1
            x = _block(x, filters, strides, dropout,
                       f"group{group + 1}_block{block + 1}")
    x = layers.ReLU(name="final_relu")(_batch_norm("final_bn")(x))
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = layers.Dense(num_classes, dtype="float32", name="logits")(x)
    return keras.Model(inputs, outputs, name=f"wrn_{depth}_{width}")
