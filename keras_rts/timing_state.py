"""`TimingState`: what the timing triggers remember, kept in the model.

The triggers of `keras_rts.callbacks` decide when the perturbation switches
on. Everything they need to remember lives here, as variables of the
`RTSModel`, so that it is saved with the weights: a run resumed by
`keras.callbacks.BackupAndRestore` (or from a `.keras` file) continues its
timing exactly, whether or not a trigger had already fired.

The per-step gradient norms are recorded inside the train step (in the
graph, no host synchronisation): their running count, sum and sum of
squares, and the most recent `GRAD_NORM_CAPACITY` of them in a ring buffer.
"""

import keras
import numpy as np
from keras import ops

from keras_rts.backend import FLOAT, INT

GRAD_NORM_CAPACITY = 1024
"""How many of the most recent gradient norms are kept."""


@keras.saving.register_keras_serializable(package="keras_rts")
class TimingState(keras.layers.Layer):
    """Variables of the timing triggers, saved with the model.

    Attributes:
        perturb_start_epoch: the epoch from which the perturbation is on,
            -1 until a trigger has switched it on.
        threshold: the threshold an adaptive trigger compares against, NaN
            until set.
        gap_sum: sum of generalization gaps seen so far (gap trigger).
        gap_count: number of gaps summed.
        grad_norm_count: number of finite gradient norms recorded.
        grad_norm_sum: their sum (`keras_rts.backend.FLOAT`, 64-bit where
            the backend has it).
        grad_norm_sum_squares: the sum of their squares (same dtype).
        recent_grad_norms: ring buffer of the most recent norms; entry `i`
            holds the norm recorded when the count was `i` modulo the
            capacity.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)

        def state(name, value, dtype, shape=()):
            return self.add_weight(
                name=name, shape=shape,
                initializer=keras.initializers.Constant(value), dtype=dtype,
                trainable=False, aggregation="only_first_replica",
            )

        self.perturb_start_epoch = state("perturb_start_epoch", -1, INT)
        self.threshold = state("threshold", float("nan"), "float32")
        self.gap_sum = state("gap_sum", 0.0, FLOAT)
        self.gap_count = state("gap_count", 0, INT)
        self.grad_norm_count = state("grad_norm_count", 0, INT)
        self.grad_norm_sum = state("grad_norm_sum", 0.0, FLOAT)
        self.grad_norm_sum_squares = state(
            "grad_norm_sum_squares", 0.0, FLOAT
        )
        self.recent_grad_norms = state(
            "recent_grad_norms", 0.0, "float32", shape=(GRAD_NORM_CAPACITY,)
        )
        self.built = True

    def record_grad_norm(self, norm):
        """Records one step's gradient norm (in graph, any backend).

        Non-finite norms are not recorded. The step calls this statelessly
        and commits the result only with the rest of its state.

        Args:
            norm: scalar float32 tensor.
        """
        finite = ops.isfinite(norm)
        value = ops.where(finite, norm, 0.0)
        wide = ops.cast(value, FLOAT)
        index = ops.mod(self.grad_norm_count.value,
                        GRAD_NORM_CAPACITY)
        self.recent_grad_norms.assign(ops.where(
            ops.logical_and(finite, ops.arange(GRAD_NORM_CAPACITY, dtype=index.dtype) == index),
            value, self.recent_grad_norms.value))
        self.grad_norm_count.assign_add(ops.cast(finite, INT))
        self.grad_norm_sum.assign_add(wide)
        self.grad_norm_sum_squares.assign_add(wide * wide)

    def grad_norm_variance(self):
        """Variance of all recorded norms (read on the host), or NaN."""
        count = int(self.grad_norm_count.numpy())
        if count == 0:
            return float("nan")
        mean = float(self.grad_norm_sum.numpy()) / count
        return max(float(self.grad_norm_sum_squares.numpy()) / count
                   - mean * mean, 0.0)

    def last_grad_norms(self, k):
        """The `k` most recent norms, oldest first (read on the host).

        Args:
            k: how many, at most `GRAD_NORM_CAPACITY`.

        Returns:
            A NumPy array of `min(k, recorded)` norms.
        """
        count = int(self.grad_norm_count.numpy())
        k = min(k, count, GRAD_NORM_CAPACITY)
        indices = np.arange(count - k, count) % GRAD_NORM_CAPACITY
        return self.recent_grad_norms.numpy()[indices]
