"""Train a method of keras_rts on CIFAR-10 or CIFAR-100.

    python recipes/cifar.py --method rts                  # the paper setup
    python recipes/cifar.py --method rts --preset cpu     # minutes on a CPU

Offline: point --data-dir (or TFDS_DATA_DIR) at a folder in which
tensorflow-datasets has prepared the dataset. Every flag is a field of
keras_rts.experiment.Settings; --preset fills the ones not given.
"""

import _startup

_startup.quiet_start()

from keras_rts import experiment  # noqa: E402 (after the quiet start)

if __name__ == "__main__":
    experiment.main(description=__doc__, datasets=("cifar10", "cifar100"))
