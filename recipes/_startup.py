"""What every recipe script does first: import TensorFlow quietly.

TensorFlow's native libraries log through absl before `absl::InitializeLog`
is called, and those lines ignore `TF_CPP_MIN_LOG_LEVEL`
(abseil/abseil-cpp#1718, abseil/abseil-cpp#1957,
tensorflow/tensorflow#102212): every start printed "WARNING: All log
messages before absl::InitializeLog() is called are written to STDERR" and
notes on oneDNN and CUDA (and "failed call to cuInit" on a machine without
a GPU when devices are first listed) before the recipe's own first line —
and before a one-line flag error. The recipes import TensorFlow and list
its devices with the process's native stderr (file descriptor 2) pointed at
/dev/null (`quiet_start`); an import error is still printed, once stderr is
back, and `--verbose` runs print the devices Keras trains on.
"""

import contextlib
import os
import sys


@contextlib.contextmanager
def quiet_native_stderr():
    """Points file descriptor 2 at /dev/null inside, restores it after."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def quiet_start(required=True):
    """Imports Keras (its backend), then TensorFlow, and finds TensorFlow's
    devices, native stderr silenced.

    Without TensorFlow installed: a recipe that needs it (`required`)
    stops with one line naming the extra to install; one that does not
    (`benchmark.py device`) goes on without it.
    """
    try:
        with quiet_native_stderr():
            # Keras first, so that its backend is imported before
            # TensorFlow: under KERAS_BACKEND=torch, PyTorch's Triton loaded
            # after TensorFlow crashed the process (a segfault in
            # triton/knobs.py; TensorFlow 2.21, torch 2.11, measured here).
            import keras  # noqa: F401
            import tensorflow as tf

            tf.config.list_physical_devices()
    except ModuleNotFoundError as error:
        if error.name != "tensorflow":
            raise
        if required:
            print(f"{os.path.basename(sys.argv[0])}: error: this recipe "
                  "reads its data with tf.data, on any Keras backend, and "
                  "TensorFlow is not installed: pip install "
                  "'keras_rts[recipes]'", file=sys.stderr)
            sys.exit(2)
