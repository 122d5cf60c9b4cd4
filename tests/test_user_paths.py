"""Paths a user takes beyond the method itself: what the logs, the
console and the history say, and what restoring weights keeps."""

import csv

import keras
import numpy as np
import pytest

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


# --- a model of several outputs ------------------------------------------

def _two_outputs(seed=3):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((5,))
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    return keras.Model(inputs, {"a": keras.layers.Dense(1, name="a")(hidden),
                                "b": keras.layers.Dense(3, name="b")(hidden)})


def _two_losses(model):
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss={
        "a": "mse",
        "b": keras.losses.SparseCategoricalCrossentropy(from_logits=True)})
    return model


def _two_targets(n=4 * BATCH):
    x, y = _data(n=n)
    return x, {"a": x[:, :1] * 2.0, "b": y}


@pytest.mark.parametrize("method, sub_batch_size", [
    ("sgd", None), ("sam", None), ("sam", BATCH // 2)])
def test_each_outputs_training_loss_is_logged_as_keras_logs_it(
        method, sub_batch_size):
    x, y = _two_targets()
    model = _two_losses(keras_rts.RTSModel(
        _two_outputs(), method=method, sub_batch_size=sub_batch_size))
    history = model.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False,
                        verbose=0).history
    # Each output's loss is the mean over the epoch's steps of its loss at
    # the step's first pass (the weights before the step): the model's
    # losses, summed, are the logged loss.
    for epoch in range(2):
        assert history["a_loss"][epoch] > 0 and history["b_loss"][epoch] > 0
        assert history["a_loss"][epoch] + history["b_loss"][epoch] == (
            pytest.approx(history["loss"][epoch], rel=1e-5))
    if method == "sgd":  # the plain step: Keras' own numbers
        plain = _two_losses(_two_outputs())
        expected = plain.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False,
                             verbose=0).history
        for name in ("a_loss", "b_loss", "loss"):
            np.testing.assert_allclose(history[name], expected[name],
                                       rtol=1e-5)


# --- files ----------------------------------------------------------------

def _trained(method, **kwargs):
    x, y = _data()
    model = _rts(method, **kwargs)
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    return model


def test_weights_of_another_method_keep_this_models_radius_and_scale(
        tmp_path):
    path = str(tmp_path / "sam.weights.h5")
    sam = _trained("sam")
    sam.radius.assign(0.2)
    sam.save_weights(path)
    pugd = _rts("pugd")
    with pytest.warns(UserWarning, match=r"method='sam' \(radius=0\.2, "
                      r"grad_scale=0\); this model's method is 'pugd'.*stay "
                      r"this model's \(1, 1\)"):
        pugd.load_weights(path)
    assert float(pugd.radius.numpy()) == 1.0
    assert float(pugd.grad_scale.numpy()) == 1.0
    assert int(pugd.grad_evals.numpy()) == int(sam.grad_evals.numpy())
    for mine, theirs in zip(pugd.model.get_weights(), sam.model.get_weights()):
        np.testing.assert_array_equal(mine, theirs)
    # The same method takes the file's ρ, as a resumed run must.
    again = _rts("sam")
    again.load_weights(path)
    assert float(again.radius.numpy()) == pytest.approx(0.2)


def test_a_damaged_saved_model_is_named_in_one_error(tmp_path):
    model = _trained("sam")
    for name in ("run.keras", "run.weights.h5"):
        path = tmp_path / name
        (model.save if name.endswith(".keras") else model.save_weights)(
            str(path))
        content = path.read_bytes()
        keras_rts.files.check_saved_model(str(path))  # whole: no error
        path.write_bytes(content[:len(content) // 2])
        with pytest.raises(ValueError, match=f"{path} is damaged"):
            _rts("sam").load_weights(str(path))
    path = tmp_path / "flipped.keras"
    model.save(str(path))
    content = bytearray(path.read_bytes())
    start = content.index(b'{"module"')  # inside config.json, stored
    content[start + 20:start + 30] = b"x" * 10
    path.write_bytes(bytes(content))
    with pytest.raises(ValueError, match="its config.json does not read "
                       "back"):
        keras_rts.files.check_saved_model(str(path))


# --- labels ---------------------------------------------------------------

def test_labels_outside_the_classes_are_refused_before_any_step():
    x, y = _data()
    model = _rts("sam")
    bad = y.copy()
    bad[5] = 3  # three outputs
    with pytest.raises(ValueError, match=r"labels of y must lie in \[0, 3\).*"
                       r"they hold 3 \(1 of 48 outside\)"):
        model.fit(x, bad, batch_size=BATCH, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="labels of validation_data"):
        model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0,
                  validation_data=(x, -bad))
    assert int(model.grad_evals.numpy()) == 0  # no step ran
    # A class the loss ignores is not a class.
    ignoring = keras_rts.RTSModel(_rts("sam").model, method="sam")
    ignoring.compile(optimizer="sgd", loss=keras.losses
                     .SparseCategoricalCrossentropy(from_logits=True,
                                                    ignore_class=-1))
    bad[5] = -1
    ignoring.fit(x, bad, batch_size=BATCH, epochs=1, verbose=0)


# --- epochs ---------------------------------------------------------------

def test_the_console_numbers_epochs_from_0_as_the_logs_do(capsys):
    x, y = _data()
    model = _rts("sam")
    window = keras_rts.callbacks.PerturbationWindow(start_epoch=1)
    model.fit(x, y, batch_size=BATCH, epochs=3, verbose=2,
              callbacks=[window])
    out = capsys.readouterr().out
    heads = [line for line in out.splitlines() if line.startswith("Epoch")]
    assert heads == ["Epoch 0 (1/3)", "Epoch 1 (2/3)", "Epoch 2 (3/3)"]
    # The epoch the window's start_epoch=1 names is the one headed 1.
    lines = out.split("Epoch 1 (2/3)")[1].splitlines()
    assert "perturb_start_epoch: 1" in lines[1], lines
