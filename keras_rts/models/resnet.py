"""CIFAR-style ResNets (He et al., 2016) as Keras 3 functional models.

The CIFAR variant starts with one 3×3 convolution (no 7×7 stem, no max
pooling) and uses basic blocks; `resnet18` is the network of the SAM and
PUGD CIFAR recipes. Convolutions use He-normal initialisation and no bias
(a BatchNormalization follows each). BatchNormalization uses PyTorch's
defaults (momentum 0.9 in Keras' convention, epsilon 1e-5), as the
published recipes do; Keras' 0.99 lags far behind on short runs.
"""

import keras
from keras import layers


def _batch_norm(name):
    return layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=name)


def _conv(filters, strides, name):
    return layers.Conv2D(
        filters, 3, strides=strides, padding="same", use_bias=False,
        kernel_initializer="he_normal", name=name,
    )


def _basic_block(x, filters, strides, name):
    shortcut = x
    y = _conv(filters, strides, f"{name}_conv1")(x)
    y = _batch_norm(f"{name}_bn1")(y)
    y = layers.ReLU(name=f"{name}_relu1")(y)
    y = _conv(filters, 1, f"{name}_conv2")(y)
    y = _batch_norm(f"{name}_bn2")(y)
    if strides != 1 or x.shape[-1] != filters:
        shortcut = layers.Conv2D(
            filters, 1, strides=strides, use_bias=False,
            kernel_initializer="he_normal", name=f"{name}_shortcut_conv",
        )(x)
        shortcut = _batch_norm(f"{name}_shortcut_bn")(
            shortcut
        )
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return layers.ReLU(name=f"{name}_relu2")(y)


def resnet(blocks, widths, num_classes=10, input_shape=(32, 32, 3),
           name="resnet"):
    """Builds a CIFAR-style ResNet of basic blocks.

    Args:
        blocks: number of basic blocks in each stage, e.g. `(2, 2, 2, 2)`.
        widths: number of filters in each stage; every stage after the
            first halves the resolution.
        num_classes: number of output logits.
        input_shape: `(height, width, channels)` of the images.
        name: the model's name.

    Returns:
        A `keras.Model` from images to logits (no softmax).
    """
    if len(blocks) != len(widths) or not blocks:
        raise ValueError(
            f"blocks and widths must be non-empty and of the same length, "
            f"got blocks={blocks!r} and widths={widths!r}."
        )
    inputs = keras.Input(input_shape, name="images")
    x = _conv(widths[0], 1, "stem_conv")(inputs)
    x = _batch_norm("stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    for stage, (count, filters) in enumerate(zip(blocks, widths)):
        for block in range(count):
            strides = 2 if stage > 0 and block == 0 else 1
            x = _basic_block(
                x, filters, strides, f"stage{stage + 1}_block{block + 1}"
            )
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    # float32 logits, so that mixed precision keeps the loss in float32.
    outputs = layers.Dense(num_classes, dtype="float32", name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def resnet18(num_classes=10, input_shape=(32, 32, 3)):
    """ResNet-18, CIFAR variant: 4 stages of 2 basic blocks, 64–512 wide."""
    return resnet((2, 2, 2, 2), (64, 128, 256, 512), num_classes,
                  input_shape, name="resnet18")


def small_resnet(num_classes=10, input_shape=(32, 32, 3), width=16):
    """A ResNet-8 (3 stages of 1 basic block) that trains in minutes on a CPU.

    Args:
        num_classes: number of output logits.
        input_shape: `(height, width, channels)` of the images.
        width: filters in the first stage; the next stages double it.
    """
    return resnet((1, 1, 1), (width, 2 * width, 4 * width), num_classes,
                  input_shape, name="small_resnet")
