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
}


@contextlib.contextmanager
def count_device_reads():
    """Yields a list whose length is the number of reads made inside."""
    module_name, class_name, names = _ENTRY_POINTS[keras.backend.backend()]
    module = __import__(module_name, fromlist=[class_name])
    cls = getattr(module, class_name)
    reads, depth = [], [0]
    saved = {}

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
        if original is None:
            continue
        saved[name] = original
        if isinstance(original, property):
            setattr(cls, name, property(counted(original.fget)))
        else:
            setattr(cls, name, counted(original))
    try:
        yield reads
    finally:
        for name, original in saved.items():
            setattr(cls, name, original)
