"""Counting device-to-host reads: every way a tensor's value reaches the
host (`bool(t)`, `float(t)`, `np.asarray(t)`, `t.numpy()`, `.item()`,
`jax.device_get`, ...), on the active backend, outermost entry only."""

import contextlib
import functools

import keras

_ENTRY_POINTS = {
    "jax": ("jax._src.array", "ArrayImpl",
            ("_value", "__array__", "item", "tolist", "__bool__",
             "__float__", "__int__", "__index__", "__complex__")),
    "tensorflow": ("tensorflow.python.framework.ops", "_EagerTensorBase",
                   ("_numpy", "numpy", "__array__", "__bool__", "__float__",
                    "__int__", "__index__", "item", "tolist")),
    "torch": ("torch", "Tensor",
              ("item", "tolist", "numpy", "__array__", "__bool__",
               "__float__", "__int__", "__index__", "cpu")),
}


@contextlib.contextmanager
def count_device_reads(outside_logs=False):
    """Yields a list whose length is the number of reads made inside.

    `outside_logs`: leave out the reads of Keras' own conversion of the
    logs to Python numbers (`pythonify_logs`), which Keras' PyTorch
    trainer makes for every log value after every step.
    """
    module_name, class_name, names = _ENTRY_POINTS[keras.backend.backend()]
    module = __import__(module_name, fromlist=[class_name])
    cls = getattr(module, class_name)
    reads, depth = [], [0]
    saved = {}
    if outside_logs:
        from keras.src.utils import python_utils

        convert = python_utils.pythonify_logs

        def pythonify_logs(logs):
            depth[0] += 1
            try:
                return convert(logs)
            finally:
                depth[0] -= 1

        python_utils.pythonify_logs = pythonify_logs

    def counted(function):
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            if depth[0] == 0:
                reads.append(function.__name__)
            depth[0] += 1
            try:
                return function(*args, **kwargs)
            finally:
                depth[0] -= 1
        return wrapper

    for name in names:
        original = cls.__dict__.get(name)
        inherited = original is None
        if inherited:  # defined by a (C) base class: shadowed, then removed
            original = getattr(cls, name, None)
            if original is None:
                continue
        saved[name] = None if inherited else original
        if isinstance(original, property):
            setattr(cls, name, property(counted(original.fget)))
        else:
            setattr(cls, name, counted(original))
    try:
        yield reads
    finally:
        if outside_logs:
            python_utils.pythonify_logs = convert
        for name, original in saved.items():
            if original is None:
                delattr(cls, name)
            else:
                setattr(cls, name, original)
