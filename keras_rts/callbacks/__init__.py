"""Keras callbacks for the RTS controls, R, T and S (docs/method.md,
"RTS"; docs/rts.md).

- `RadiusScheduler` and `GradScaleScheduler` assign `RTSModel.radius` and
  `RTSModel.grad_scale` from a schedule, per epoch or per step (R and S).
- `PerturbationWindow`, `GradNormVarianceTrigger` and
  `GeneralizationGapTrigger` switch `RTSModel.perturb` on: plain one-pass
  `sgd` steps before, the method's step after (T).
- `rts(...)` returns the list for the combined method.
- `RecomputeBatchNorm` re-estimates BatchNormalization's statistics at the
  trained weights when `fit` ends (for `msam`, whose one pass gathers them
  at perturbed weights).
- `ProgbarLogger` is Keras' progress bar with the counters (`grad_evals`,
  `perturb`, …) shown once per epoch; `RTSModel.fit` uses it.

The callbacks only assign variables of the model between steps, so each
phase's train function (perturbing or not) is traced once, whatever they
do. What the triggers remember lives in the model (`RTSModel.timing`), so a run resumed with
`keras.callbacks.BackupAndRestore` continues exactly where it stopped.

Each concern has its module: `keras_rts.callbacks.schedulers` (R and S),
`keras_rts.callbacks.timing` (T) and `keras_rts.callbacks.rts`; every public
name is importable from `keras_rts.callbacks` itself.
"""

from keras_rts.callbacks.batchnorm import (RecomputeBatchNorm,
                                           recompute_batchnorm)
from keras_rts.callbacks.rts import rts
from keras_rts.callbacks.schedulers import GradScaleScheduler, RadiusScheduler
from keras_rts.callbacks.timing import (GeneralizationGapTrigger,
                                        GradNormVarianceTrigger,
                                        LearningRateTrigger,
                                        PerturbationWindow, lr_start_epoch)
# (`_check_int`: the recipes' check of an epoch count, as the callbacks'.)
from keras_rts.callbacks.checks import check_int as _check_int  # noqa: F401
from keras_rts.progbar import ProgbarLogger

__all__ = ["GeneralizationGapTrigger", "GradNormVarianceTrigger",
           "GradScaleScheduler", "LearningRateTrigger", "PerturbationWindow",
           "ProgbarLogger", "RadiusScheduler", "RecomputeBatchNorm",
           "lr_start_epoch", "recompute_batchnorm", "rts"]
