"""`RTSModel.perturb`: the phase of the next step, known on the host.

Each step is one of two compiled steps (perturbing or not), and the host
picks which before it queues the step. Reading the `perturb` variable back
from the device for that would make the host wait for the previous step
to finish on every step — on a GPU a large share of a step for small and
medium networks (docs/method.md, "Phases"). So `perturb` is a
`PhaseVariable`: a boolean Keras variable (saved, loaded and checkpointed
like any other) whose value the host also holds, in `host_value`. Every
assignment goes through `PhaseVariable.assign`, which updates both: the
callbacks between steps, `load_weights`, `BackupAndRestore` and a user's
own `model.perturb.assign(...)`. The trainers read `host_value` only.
"""

import contextlib

import keras
import numpy as np
from keras.src.backend.common.stateless_scope import in_stateless_scope


class PhaseVariable(keras.Variable):
    """A scalar model variable (boolean, or an integer count) whose value
    the host also keeps.

    `host_value` is the variable's value as a Python bool or int, kept by
    `assign` without reading the device: a Python or NumPy value (what
    callbacks and weight files give) is taken as it is; a tensor is read
    once, at that assignment. Assigning inside a traced step is refused:
    the phase is chosen between steps.
    """

    def __init__(self, value, name, dtype="bool"):
        self._cast = bool if dtype == "bool" else int
        super().__init__(
            initializer=keras.initializers.Constant(self._cast(value)),
            shape=(), dtype=dtype, trainable=False, name=name)
        self.host_value = self._cast(value)
        self._from_device = False  # see `device_values_follow_host`

    def assign(self, value):
        if in_stateless_scope() or self._from_device:
            # A step's own bookkeeping or the JAX trainer writing back
            # its state: the host value is already the truth.
            return super().assign(value)
        host = self._cast(_host_value(value, self.path))
        result = super().assign(value)
        self.host_value = host
        return result

    @contextlib.contextmanager
    def device_values_follow_host(self):
        """Within: assignments carry device values that must not change
        (nor be read for) `host_value`; after: the variable holds
        `host_value` again. For a trainer writing its step state back."""
        self._from_device = True
        try:
            yield
        finally:
            self._from_device = False
        super().assign(np.asarray(self.host_value, self.dtype))


def _host_value(value, path):
    if isinstance(value, (bool, np.bool_, int, np.integer, np.ndarray)):
        return value
    try:
        return np.asarray(keras.ops.convert_to_numpy(value))
    except Exception as error:  # a symbolic tensor or a tracer
        raise ValueError(
            f"{path} chooses which compiled step runs next, on the host: "
            "assign it between steps (from a callback) with a Python bool, "
            f"not inside a traced function; got {value!r}.") from error
