"""Keras' progress bar, with the run's counters shown once per epoch."""

import keras

COUNTERS = ("grad_evals", "skipped_steps", "perturb", "perturb_start_epoch")
"""Logs that count or flag rather than measure: shown at the epoch's end."""


class ProgbarLogger(keras.callbacks.ProgbarLogger):
    """`keras.callbacks.ProgbarLogger` that keeps the counters for the end.

    Keras' bar prints every value as a float with four decimals and
    averages it over the epoch's steps: `grad_evals: 2691.0000` growing
    step by step, `perturb_start_epoch: -1.0000e+00`. This bar shows the
    loss, the metrics, ρ, λ and ‖g‖ while the epoch runs, and the counters
    (`COUNTERS`) with the epoch's line; the logs themselves (`History`,
    `CSVLogger`, TensorBoard) are untouched. `RTSModel.fit` uses it unless
    a `ProgbarLogger` is among the callbacks.
    """

    def _update_progbar(self, batch, logs=None):
        super()._update_progbar(batch, {
            k: v for k, v in (logs or {}).items() if k not in COUNTERS})
