"""A small Vision Transformer for 32×32 images, trained from scratch.

Dosovitskiy et al. (ICLR 2021): the image cut into patches, each embedded
linearly, learned positions added, pre-norm Transformer blocks
(multi-head self-attention, then a GELU MLP, each behind a
LayerNormalization and added back), a last LayerNormalization, and a
linear head on the patches' mean — global average pooling in place of a
class token, as in Beyer et al.'s plain ViT baselines (2022), which
trains as well on small data. Built from Keras layers alone; no weights
are downloaded.
"""

import keras
from keras import layers


@keras.saving.register_keras_serializable(package="keras_rts")
class PositionEmbedding(layers.Layer):
    """Adds learned position embeddings to a sequence of patch embeddings
    `(batch, patches, width)`, initialised as in the ViT paper (truncated
    normal, standard deviation 0.02)."""

    def build(self, input_shape):
        _, patches, width = input_shape
        self.positions = self.add_weight(
            name="positions", shape=(1, patches, width),
            initializer=keras.initializers.TruncatedNormal(stddev=0.02))

    def call(self, patches):
        return patches + keras.ops.cast(self.positions, patches.dtype)


def vit(num_classes=10, input_shape=(32, 32, 3), patch_size=4, width=128,
        depth=2, heads=2, mlp_width=256, dropout=0.0, name="vit"):
    """A ViT: patches of `patch_size`², `depth` pre-norm blocks of `width`.

    The defaults (64 patches of 4×4, width 128, 2 blocks of 2 heads of
    width 64 — the head width of ViT-Ti, -S and -B — MLP 256: 281 k
    parameters) are about the smallest ViT of the usual shape: its AdamW
    step costs 1.40 × the small ResNet's SGD step on 2 CPU cores (4 heads
    of 32: 1.46 ×, 6 blocks: 4.18 ×; docs/benchmarks/model_cost.md, from
    `recipes/benchmark.py model-cost`). `depth=6` (811 k) is as deep as
    ViTs for CIFAR usually are.

    Args:
        num_classes: number of output logits.
        input_shape: `(height, width, channels)`, sides divisible by
            `patch_size`.
        patch_size: side of the square patches (4: 64 patches of a 32×32
            image).
        width: the embedding width (divisible by `heads`).
        depth: the number of Transformer blocks.
        heads: attention heads per block.
        mlp_width: the hidden width of each block's MLP.
        dropout: dropout after attention and in the MLP (0: none).
        name: the model's name.

    Returns:
        A `keras.Model` from images to logits.
    """
    height, side = input_shape[0], input_shape[1]
    for what, value in (("patch_size", patch_size), ("width", width),
                        ("depth", depth), ("heads", heads),
                        ("mlp_width", mlp_width)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{what} must be a positive integer, got "
                             f"{value!r}.")
    if height % patch_size or side % patch_size:
        raise ValueError(f"the image sides {height}×{side} must be "
                         f"multiples of patch_size={patch_size}.")
    if width % heads:
        raise ValueError(f"width={width} must be a multiple of "
                         f"heads={heads}.")
    inputs = keras.Input(input_shape)
    x = layers.Conv2D(width, patch_size, strides=patch_size,
                      name="patch_embedding")(inputs)
    x = layers.Reshape(((height // patch_size) * (side // patch_size),
                        width))(x)
    x = PositionEmbedding(name="positions")(x)
    for block in range(depth):
        prefix = f"block{block}"
        y = layers.LayerNormalization(epsilon=1e-6,
                                      name=f"{prefix}_norm1")(x)
        y = layers.MultiHeadAttention(heads, width // heads,
                                      dropout=dropout,
                                      name=f"{prefix}_attention")(y, y)
        x = layers.Add(name=f"{prefix}_add1")([x, y])
        y = layers.LayerNormalization(epsilon=1e-6,
                                      name=f"{prefix}_norm2")(x)
        y = layers.Dense(mlp_width, activation="gelu",
                         name=f"{prefix}_mlp1")(y)
        if dropout:
            y = layers.Dropout(dropout)(y)
        y = layers.Dense(width, name=f"{prefix}_mlp2")(y)
        x = layers.Add(name=f"{prefix}_add2")([x, y])
    x = layers.LayerNormalization(epsilon=1e-6, name="norm")(x)
    x = layers.GlobalAveragePooling1D(name="pool")(x)
    outputs = layers.Dense(num_classes, name="head")(x)
    return keras.Model(inputs, outputs, name=name)
