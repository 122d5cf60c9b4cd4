"""keras_rts: PUGD and its Radius-Timing-Scale enhancements for Keras 3.

`keras_rts.RTSModel` wraps any `keras.Model` and trains it with `model.fit`
using one of the sharpness-aware steps of `keras_rts.directions`.
"""

from keras_rts import callbacks, data, directions, models, schedules
from keras_rts.directions import METHODS
from keras_rts.model import RTSModel

__version__ = "0.1.0"

__all__ = [
    "METHODS",
    "RTSModel",
    "callbacks",
    "data",
    "directions",
    "models",
    "schedules",
]
