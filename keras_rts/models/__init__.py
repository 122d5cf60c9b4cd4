"""Networks used by the recipes, importable for users' own scripts."""

from keras_rts.models.resnet import resnet, resnet18, small_resnet

__all__ = ["resnet", "resnet18", "small_resnet"]
