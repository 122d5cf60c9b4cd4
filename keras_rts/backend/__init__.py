"""What differs per Keras backend: taking gradients, committing state and
combining replicas. The method itself is in `keras_rts.model`.

`Trainer` is the mixin of `RTSModel` for the backend Keras runs on
(TensorFlow, JAX or PyTorch). Other backends are refused when an `RTSModel` is
built (`check_supported`), never inside `fit`.
"""

import keras

BACKEND = keras.backend.backend()
SUPPORTED = ("tensorflow", "jax", "torch")


def _x64():
    """Whether the backend has 64-bit types (JAX only with x64 enabled)."""
    if BACKEND != "jax":
        return True
    import jax

    return bool(jax.config.jax_enable_x64)


INT = "int64" if _x64() else "int32"
"""The dtype of the step's counters: 64-bit where the backend has it (JAX
without x64 would truncate it, with a warning); exact to 2^31 otherwise."""
FLOAT = "float64" if _x64() else "float32"
"""The dtype of the timing triggers' running sums."""

GLOBAL_NORM = None
"""The backend's own fused `directions.global_norm`, where it has one."""

if BACKEND == "tensorflow":
    from keras_rts.backend.tf_trainer import Trainer, value_and_grad
elif BACKEND == "jax":
    from keras_rts.backend.jax_trainer import Trainer, value_and_grad
elif BACKEND == "torch":
    from keras_rts.backend.torch_trainer import Trainer, value_and_grad
    from keras_rts.backend.torch_trainer import global_norm as GLOBAL_NORM
else:

    class Trainer:
        """Placeholder: `check_supported` refuses this backend."""

    def value_and_grad(fn, weights, state):
        check_supported()


def check_supported():
    """Raises a `ValueError` naming the backend unless it is supported, or
    if a `keras.distribution` is set where Keras cannot distribute."""
    if BACKEND == "torch" and keras.distribution.distribution() is not None:
        raise ValueError(
            "keras.distribution is set, but Keras distributes only on the "
            "JAX backend, not on 'torch': unset it "
            "(keras.distribution.set_distribution(None)), or train with "
            "KERAS_BACKEND=jax. See docs/distributed.md.")
    if BACKEND not in SUPPORTED:
        raise ValueError(
            f"keras_rts.RTSModel does not support the {BACKEND!r} Keras "
            f"backend; supported: {', '.join(SUPPORTED)}. Choose one with "
            "KERAS_BACKEND=tensorflow, jax or torch before importing keras.")


def assign_between_steps(model, variable, value):
    """Assigns a model variable from a callback so that the next step sees
    it. Under JAX, `fit` keeps the state outside the variables during an
    epoch: it is written back first, and the next step reads it again.
    `perturb` is chosen on the host (`keras_rts.phase`): its assignment
    needs no write-back."""
    sync = getattr(model, "jax_state_sync", None)
    if sync is not None and variable is not getattr(model, "perturb", None):
        sync()
    variable.assign(value)
