"""The phase of each step is chosen on the host: no device read per step,
and every way `perturb` is set (a callback, a user's `assign`, loading
weights, `BackupAndRestore`) reaches the next step."""

import keras
import numpy as np
import pytest

import keras_rts
from tests.device_reads import count_device_reads
from tests.test_model import BATCH, _compile, _data, _fit, _net, _rts

STEPS = 24

# Keras' PyTorch trainer converts every log value to a Python number after
# every step (`pythonify_logs`), for a plain model too: there the RTSModel's
# own logs are read with Keras' own. What is counted there is every other
# read.
OUTSIDE_LOGS = keras.backend.backend() == "torch"


def _reads_over_fit(model, x, y, callbacks=()):
    """Device reads of `fit` over `STEPS` steps (after a warm-up fit that
    traces every phase the callbacks use)."""
    fit = dict(batch_size=BATCH, epochs=1, shuffle=False, verbose=0,
               callbacks=list(callbacks))
    model.fit(x, y, **fit)
    with count_device_reads(outside_logs=OUTSIDE_LOGS) as reads:
        model.fit(x, y, **fit)
    return reads


def _plain_reads():
    x, y = _data(n=STEPS * BATCH)
    return _reads_over_fit(_compile(_net()), x, y)


@pytest.mark.parametrize("method", ["sgd", "pugd", "sam"])
@pytest.mark.parametrize("perturb", [True, False])
def test_no_more_device_reads_than_a_plain_keras_model(method, perturb):
    x, y = _data(n=STEPS * BATCH)
    plain = _plain_reads()
    model = _rts(method, perturb=perturb)
    reads = _reads_over_fit(model, x, y)
    assert len(reads) <= len(plain), (reads, plain)
    passes = 2 if perturb and method != "sgd" else 1
    assert int(model.grad_evals.numpy()) == 2 * STEPS * passes


def test_per_step_switching_reads_nothing_per_step():
    """Interval mode switches `perturb` before every step; the trigger
    reads its record once an epoch, never per step."""
    x, y = _data(n=STEPS * BATCH)
    plain = _plain_reads()
    model = _rts("pugd")
    window = keras_rts.callbacks.PerturbationWindow(start_epoch=0,
                                                    perturb_every=3)
    reads = _reads_over_fit(model, x, y, [window])
    assert len(reads) <= len(plain) + 2, (reads, plain)  # one per epoch
    # Steps 0, 3, 6, … of each fit perturbed: 8 of 24, twice.
    assert int(model.grad_evals.numpy()) == 2 * (STEPS + 8)


def test_a_users_assign_reaches_the_next_step():
    x, y = _data()

    class Off(keras.callbacks.Callback):
        """Switches the method off after the first step, with a plain
        `assign` (no helper)."""

        def on_train_batch_end(self, batch, logs=None):
            if batch == 0:
                self.model.perturb.assign(False)

    model = _rts("pugd")
    history = model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False,
                        verbose=0, callbacks=[Off()])
    assert history.history["grad_evals"] == [2 + 1 + 1]
    assert model.perturb.host_value is False
    assert not bool(model.perturb.numpy())  # the variable agrees
    model.perturb.assign(np.bool_(True))
    assert _fit(model, x, y).history["grad_evals"] == [4 + 6]
    model.perturb.assign(keras.ops.convert_to_tensor(False))  # one read
    assert _fit(model, x, y).history["grad_evals"] == [10 + 3]


def test_loaded_weights_and_files_set_the_phase(tmp_path):
    x, y = _data()
    source = _rts("pugd")
    source.perturb.assign(False)
    source.save_weights(str(tmp_path / "w.weights.h5"))
    source.save(str(tmp_path / "m.keras"))
    other = _rts("pugd")
    assert other.perturb.host_value is True
    other.load_weights(str(tmp_path / "w.weights.h5"))
    assert other.perturb.host_value is False
    assert _fit(other, x, y).history["grad_evals"] == [3]
    loaded = keras.saving.load_model(str(tmp_path / "m.keras"))
    assert loaded.perturb.host_value is False
    assert _fit(loaded, x, y).history["grad_evals"] == [3]


def test_backup_and_restore_resumes_the_phase(tmp_path):
    """A run interrupted after the switch resumes perturbing, although
    the model it resumes into was built with perturb=False."""
    x, y = _data()
    backup = str(tmp_path / "backup")

    class Stop(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise RuntimeError("interrupted")

    def run(callbacks):
        model = _rts("pugd", perturb=False)
        window = keras_rts.callbacks.PerturbationWindow(start_epoch=1,
                                                        epochs=3)
        history = model.fit(
            x, y, batch_size=BATCH, epochs=3, shuffle=False, verbose=0,
            callbacks=[keras.callbacks.BackupAndRestore(backup), window,
                       *callbacks])
        return model, history

    with pytest.raises(RuntimeError, match="interrupted"):
        run([Stop()])
    model, history = run([])
    # Epoch 2 only, perturbing: 3 steps of two passes after 3 + 6.
    assert history.history["grad_evals"] == [15]
    assert model.perturb.host_value is True


@pytest.mark.skipif(keras.backend.backend() == "torch",
                    reason="PyTorch runs the step eagerly: nothing traced")
def test_perturb_cannot_be_assigned_inside_a_traced_step():
    model = _rts("pugd")
    with pytest.raises(ValueError, match="between steps"):
        if keras.backend.backend() == "jax":
            import jax

            jax.jit(lambda v: model.perturb.assign(v))(True)
        else:
            import tensorflow as tf

            tf.function(lambda: model.perturb.assign(
                tf.constant(True)))()
