"""keras_rts: PUGD and its Radius-Timing-Scale enhancements for Keras 3.

`keras_rts.RTSModel` wraps any `keras.Model` and trains it with `model.fit`
using one of the sharpness-aware methods of `keras_rts.methods`.

The core — `RTSModel`, `callbacks`, `schedules`, `methods`, `directions`,
`functional`, `files`, `models`, `tuning` — needs only Keras, NumPy and one Keras backend. The recipe layer
(`data`, `experiment`, `search`, `comparison`, `reporting`, `plots`,
`benchmarks`) is imported when first used, and names the extra to install
(`pip install 'keras_rts[recipes]'`) when a dependency is missing.
"""

import importlib
import os

try:
    import keras  # noqa: F401
except ModuleNotFoundError as error:
    # Keras' default backend is TensorFlow; without it, say what to set.
    if (error.name or "").split(".")[0] == "tensorflow" and not \
            os.environ.get("KERAS_BACKEND"):
        raise ModuleNotFoundError(
            "Keras' backend is TensorFlow (its default, as no KERAS_BACKEND "
            "is set), which is not installed: set the backend you "
            "installed before importing keras_rts, e.g. KERAS_BACKEND=jax "
            "or KERAS_BACKEND=torch (or install TensorFlow: pip install -e "
            "'.[tensorflow]').", name="tensorflow") from None
    raise

from keras_rts import (callbacks, directions, files, functional, methods,
                       models, schedules, tuning)
from keras_rts.methods import METHODS
from keras_rts.model import RTSModel

__version__ = "0.1.0"

RECIPE_LAYER = ("data", "experiment", "search", "comparison", "reporting",
                "plots", "benchmarks")
"""Submodules imported on first use (`keras_rts.data.load(...)` works)."""

__all__ = [
    "METHODS",
    "RTSModel",
    "callbacks",
    "directions",
    "files",
    "methods",
    "functional",
    "models",
    "schedules",
    "tuning",
    *RECIPE_LAYER,
]


def __getattr__(name):
    if name in RECIPE_LAYER:
        return importlib.import_module(f"keras_rts.{name}")
    raise AttributeError(f"module 'keras_rts' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(RECIPE_LAYER))
