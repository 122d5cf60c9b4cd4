"""Keras' progress bar, with the run's counters shown once per epoch, as
whole numbers, and epochs numbered from 0 as everywhere else."""

import keras
from keras.src.utils import io_utils

COUNTERS = ("grad_evals", "skipped_steps", "perturb", "perturb_start_epoch")
"""Logs that count or flag rather than measure: shown at the epoch's end."""


class _Count(float):
    """A log value that Keras' bar prints as a whole number (`39`, not
    `39.0000`; `-1`, not `-1.0000e+00`), or to two places if it is a share
    (the epoch's `perturb` in interval mode)."""

    def __truediv__(self, other):  # the bar divides by its count, 1
        return _Count(float(self) / other)

    def __format__(self, spec):
        value = float(self)
        return str(int(value)) if value.is_integer() else f"{value:.2f}"


class ProgbarLogger(keras.callbacks.ProgbarLogger):
    """`keras.callbacks.ProgbarLogger` that keeps the counters for the end.

    Keras' bar prints every value as a float with four decimals and
    averages it over the epoch's steps: `grad_evals: 2691.0000` growing
    step by step, `perturb_start_epoch: -1.0000e+00`. This bar shows the
    loss, the metrics, ρ, λ and ‖g‖ while the epoch runs, and the counters
    (`COUNTERS`) with the epoch's line, as whole numbers; the logs
    themselves (`History`, `CSVLogger`, TensorBoard) are untouched.
    `RTSModel.fit` uses it unless a `ProgbarLogger` is among the callbacks.

    Epochs are numbered from 0, as in the logs, `history.csv`,
    `summary.json`, the figures and the callbacks' arguments
    (`start_epoch=1` is the epoch this bar heads `Epoch 1 (2/3)`); Keras'
    own bar heads it `Epoch 2/3`.
    """

    def on_epoch_begin(self, epoch, logs=None):
        self._reset_progbar()
        self._maybe_init_progbar()
        if self.verbose and self.epochs > 1:
            io_utils.print_msg(f"Epoch {epoch} ({epoch + 1}/{self.epochs})")

    def _update_progbar(self, batch, logs=None):
        super()._update_progbar(batch, {
            k: v for k, v in (logs or {}).items() if k not in COUNTERS})

    def _finalize_progbar(self, logs):
        super()._finalize_progbar({
            k: _Count(float(v)) if k in COUNTERS else v
            for k, v in (logs or {}).items()})
