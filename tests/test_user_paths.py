"""Paths a user takes beyond the method itself: what the logs, the
console and the history say, and what restoring weights keeps."""

import csv

import keras
import numpy as np

import keras_rts
from tests.test_model import BATCH, _data, _rts


def test_the_history_gives_each_epochs_share_of_perturbed_steps(tmp_path):
    """Interval mode and random switching change the phase within an
    epoch: the epoch's `perturb` is the share of its steps that ran the
    method (the per-step logs keep each step's 0 or 1), in `History` and
    in a `CSVLogger` given before or after."""
    x, y = _data(n=4 * BATCH)  # 4 steps an epoch
    model = _rts("sam")
    window = keras_rts.callbacks.PerturbationWindow(start_epoch=0,
                                                    perturb_every=3)
    log = tmp_path / "history.csv"
    history = model.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False,
                        verbose=0, callbacks=[keras.callbacks.CSVLogger(
                            str(log)), window])
    # Steps 0 and 3 of epoch 0, step 6 of epoch 1.
    assert history.history["perturb"] == [0.5, 0.25]
    with open(log) as f:
        assert [float(r["perturb"]) for r in csv.DictReader(f)] == [0.5, 0.25]
    assert int(model.grad_evals.numpy()) == 8 + 3



def test_restoring_the_best_weights_keeps_the_count_of_the_work_done():
    x, y = _data()
    model = _rts("sam")
    stop = keras.callbacks.EarlyStopping(monitor="loss", patience=0,
                                         restore_best_weights=True,
                                         min_delta=10.0)  # stops at once
    history = model.fit(x, y, batch_size=BATCH, epochs=5, shuffle=False,
                        verbose=0, callbacks=[stop])
    epochs = len(history.history["loss"])
    assert epochs == 2  # the best weights (epoch 0's) are restored
    assert int(model.grad_evals.numpy()) == 2 * 3 * epochs
    weights = model.get_weights()
    model.set_weights(weights)
    assert int(model.grad_evals.numpy()) == 2 * 3 * epochs


def test_the_epoch_line_prints_the_counters_as_whole_numbers(capsys):
    x, y = _data(n=4 * BATCH)
    model = _rts("sam")
    window = keras_rts.callbacks.PerturbationWindow(start_epoch=0,
                                                    perturb_every=3)
    for verbose in (1, 2):
        model.fit(x, y, batch_size=BATCH, epochs=1, verbose=verbose,
                  callbacks=[window])
        line = capsys.readouterr().out.strip().split("\n")[-1]
        evals = 6 * verbose  # 4 steps, 2 of them two passes; then again
        assert f"grad_evals: {evals} " in line, line
        assert "skipped_steps: 0" in line and "perturb_start_epoch: 0" in line
        assert "perturb: 0.50" in line, line
        assert "e+00" not in line.split("grad_scale")[0], line


def test_the_bookkeeping_in_the_parameter_count_is_what_the_docstring_says():
    net = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)])
    model = keras_rts.RTSModel(net, method="sam")
    bookkeeping = sum(int(np.prod(v.shape))
                      for v in model.non_trainable_variables)
    assert bookkeeping == 1036
    assert "1,036 values" in keras_rts.RTSModel.__doc__
    looksam = keras_rts.RTSModel(
        keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)]),
        method="looksam")
    # Its memory (one value per weight: 5·3 + 3) and its cycle's counter.
    assert sum(int(np.prod(v.shape))
               for v in looksam.non_trainable_variables) == 1036 + 18 + 1
