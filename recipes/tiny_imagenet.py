"""Train a method of keras_rts on Tiny ImageNet (its standard folder layout).

    python recipes/tiny_imagenet.py --data-dir path/to/tiny-imagenet-200 \\
        --method rts --preset cpu

The test set is the labelled val/ folder. Every flag is a field of
keras_rts.experiment.Settings; --preset fills the ones not given.
"""

import _startup

_startup.quiet_start()

from keras_rts import experiment  # noqa: E402 (after the quiet start)

if __name__ == "__main__":
    experiment.main(description=__doc__, datasets=("tiny_imagenet",))
