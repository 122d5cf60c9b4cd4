"""Input pipelines of the recipes, importable for users' own scripts."""

from keras_rts.data.cifar import cifar

__all__ = ["cifar"]
