"""Networks used by the recipes, importable for users' own scripts."""

from keras_rts.models.resnet import resnet, resnet18, small_resnet
from keras_rts.models.vit import PositionEmbedding, vit
from keras_rts.models.wide_resnet import wide_resnet

MODELS = ("small_resnet", "resnet18", "wrn28_10", "vit")


def get(name, num_classes, input_shape):
    """Builds a recipe network by name.

    Args:
        name: one of `MODELS`.
        num_classes: number of output logits.
        input_shape: `(height, width, channels)` of the images.

    Returns:
        A `keras.Model` from images to logits.
    """
    if name == "small_resnet":
        return small_resnet(num_classes, input_shape)
    if name == "resnet18":
        return resnet18(num_classes, input_shape)
    if name == "wrn28_10":
        return wide_resnet(28, 10, num_classes, input_shape)
    if name == "vit":
        return vit(num_classes, input_shape)
    raise ValueError(f"Unknown model name={name!r}: expected one of {MODELS}.")


__all__ = ["MODELS", "PositionEmbedding", "get", "resnet", "resnet18",
           "small_resnet", "vit", "wide_resnet"]
