"""Writes the `.keras` files of keras_rts 0.1.0 (commit ba96ac9) that
tests/test_saved_release.py loads: small trained `RTSModel`s of the
methods whose state differs (a memory, LookSAM's cycle), with their
predictions and state beside them. Kept as written; rerun only to make
the files of a new release:
`python tests/data/release_0_1_0/make.py` with keras_rts 0.1.0."""

import json
import os
import sys

import keras
import numpy as np

import keras_rts

def main():
    here = os.path.dirname(os.path.abspath(__file__))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 6)).astype("float32")
    y = rng.integers(0, 3, size=64)
    probe = rng.normal(size=(8, 6)).astype("float32")
    for method in ("pugd", "fsam", "looksam"):
        keras.utils.set_random_seed(0)
        net = keras.Sequential([keras.Input((6,)),
                                keras.layers.Dense(8, activation="relu"),
                                keras.layers.BatchNormalization(),
                                keras.layers.Dense(3)])
        model = keras_rts.RTSModel(net, method=method)
        model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                      loss=keras.losses.SparseCategoricalCrossentropy(True))
        model.fit(x, y, batch_size=16, epochs=2, verbose=0)
        model.save(os.path.join(here, f"{method}.keras"))
        # In order (the paths' layer numbers differ from process to process).
        state = [[v.name, np.asarray(v.numpy()).tolist()]
                 for v in model.non_trainable_variables
                 if "timing" not in v.path]
        np.save(os.path.join(here, f"{method}_predictions.npy"),
                np.asarray(model.predict(probe, verbose=0)))
        with open(os.path.join(here, f"{method}_state.json"), "w") as f:
            json.dump(state, f)
    np.save(os.path.join(here, "probe.npy"), probe)
    print(keras.__version__, keras.backend.backend(), sys.version)


if __name__ == "__main__":  # never on import (pytest's doctest collection)
    main()
