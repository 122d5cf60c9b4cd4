"""GSAM, WSAM, Friendly-SAM and LookSAM, and perturbing a subset of the
variables: each step against the NumPy reference over several steps (with
momentum, coupled and decoupled weight decay), the methods' memory saved,
resumed and committed only by a finite step, and the passes counted."""

import numpy as np
import keras
import pytest

import keras_rts
from keras_rts import directions, methods
from tests import reference
from tests.test_model import (BATCH, _data, _fit, _moving, _net, _rts,
                              _trainable, check_against_reference,
                              fit_both)

FAMILY = ["gsam", "wsam", "fsam", "looksam"]
OWN = {"gsam": dict(alpha=0.2), "wsam": dict(gamma=0.7),
       "fsam": dict(sigma=0.5, decay=0.6), "looksam": dict(alpha=0.4,
                                                           every=2)}


@pytest.mark.parametrize("method", FAMILY)
@pytest.mark.parametrize("variant", ["defaults", "own settings"])
def test_steps_match_numpy_reference(method, variant):
    settings = {} if variant == "defaults" else dict(
        radius=0.2, **OWN[method])
    coupled = 0.0 if variant == "defaults" else 5e-4
    weight_decay = None if variant == "defaults" else 5e-4
    # Six steps: LookSAM's every k-th, and the ones between.
    check_against_reference(method, coupled, weight_decay, **settings)


def test_looksam_counts_one_pass_between_its_two_pass_steps():
    x, y = _data()  # 3 steps an epoch
    model = _rts("looksam", every=5)
    history = _fit(model, x, y, epochs=4)  # steps 0..11, full at 0, 5, 10
    assert history.history["grad_evals"] == [4, 8, 11, 15]
    assert model.method_steps.host_value == 12
    assert methods.METHODS["looksam"].passes == 1.2


def test_looksam_cycle_counts_the_steps_of_its_phase_only():
    x, y = _data()
    model = _rts("looksam", every=2)
    window = keras_rts.callbacks.PerturbationWindow(start_epoch=1)
    history = model.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False,
                        verbose=0, callbacks=[window])
    # Epoch 0 plain (3 passes); epoch 1 the cycle starts: 2 + 1 + 2.
    assert history.history["grad_evals"] == [3, 8]
    assert history.history["perturb"] == [0, 1]


def test_coupled_wsam_is_sam_with_its_grad_scale_and_a_scaled_direction():
    """Coupled WSAM with γ is SAM with λ = (1−2γ)/γ and the direction scaled by
    γ/(1−γ): with SGD, SAM at the learning rate times γ/(1−γ)."""
    gamma, lr = 0.8, 0.05
    x, y = _data()
    wsam = _rts("wsam", gamma=gamma, lr=lr, decouple=False)
    sam = _rts("sam", lr=lr * gamma / (1 - gamma))
    sam.grad_scale.assign((1 - 2 * gamma) / gamma)  # negative: not a λ
    # `RTSModel(method="sam")` accepts
    assert float(wsam.grad_scale.numpy()) == pytest.approx(-0.75)
    _fit(wsam, x, y, epochs=2)
    _fit(sam, x, y, epochs=2)
    for a, b in zip(_trainable(wsam), _trainable(sam)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("decouple", [True, False])
def test_both_forms_of_wsam_match_the_reference(decouple):
    """Decoupled (the optimizer steps on `g`, then `w ← w − lr·γ/(1−γ)·
    (g* − g)`), and coupled."""
    check_against_reference("wsam", 5e-4, None, radius=0.2, gamma=0.7,
                            decouple=decouple)


def test_decoupled_wsam_takes_the_optimizers_current_rate():
    """The part applied apart from the optimizer is scaled by the rate the
    optimizer used for the step, under a schedule too."""
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 1, 0.5)
    x, y = _data()
    model = keras_rts.RTSModel(_net(), method="wsam", radius=0.2)
    model.compile(optimizer=keras.optimizers.SGD(schedule, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(True))
    ref = reference.ReferenceTrainer(_trainable(model), _moving(model.model),
                                     "wsam", radius=0.2)
    _fit(model, x, y)
    for step, i in enumerate(range(0, len(x), BATCH)):
        ref.lr = 0.1 * 0.5 ** step
        ref.step(x[i:i + BATCH], y[i:i + BATCH])
    for got, want in zip(_trainable(model), ref.params):
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("method", ["sam", "fsam"])
def test_excluded_variables_are_not_perturbed(method):
    excluded = ["bias", "gamma", "beta"]  # SAM without norms and biases
    model = _rts(method, exclude_from_perturbation=excluded, radius=0.5)
    mask = [not any(n in v.path for n in excluded)
            for v in model.trainable_variables]
    assert mask == [True, False, False, False, True, False]
    x, y = _data()
    ref = reference.ReferenceTrainer(
        _trainable(model), _moving(model.model),
        method if method != "sam" else "looksam", radius=0.5,
        perturbed=mask, **({} if method != "sam" else dict(every=1)))
    fit_both(model, ref, x, y, epochs=2)
    assert model.get_config()["exclude_from_perturbation"] == excluded


@pytest.mark.parametrize("method", ["fsam", "looksam"])
def test_memory_resumes_exactly_from_a_file_and_a_backup(method, tmp_path):
    x, y = _data()
    uninterrupted = _rts(method)
    _fit(uninterrupted, x, y, epochs=3)

    model = _rts(method)
    _fit(model, x, y, epochs=1)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"),
                                              delete_checkpoint=False)
    loaded.fit(x, y, batch_size=BATCH, epochs=2, initial_epoch=1,
               shuffle=False, verbose=0, callbacks=[backup])
    resumed = _rts(method)  # a fresh process: everything from the backup
    history = resumed.fit(x, y, batch_size=BATCH, epochs=3, shuffle=False,
                          verbose=0, callbacks=[keras.callbacks
                                                .BackupAndRestore(
                                                    str(tmp_path / "backup"))])
    assert len(history.history["loss"]) == 1  # epoch 2 only
    for got in (loaded, resumed):
        if got is loaded:
            _fit(loaded, x, y)
        for a, b in zip(got.memory.tensors, uninterrupted.memory.tensors):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
        for a, b in zip(_trainable(got), _trainable(uninterrupted)):
            np.testing.assert_array_equal(a, b)
    assert any(np.any(v.numpy() != 0) for v in resumed.memory.tensors)
    if method == "looksam":
        assert resumed.method_steps.host_value == 9


@pytest.mark.parametrize("method", ["fsam", "looksam", "gsam"])
def test_a_skipped_step_leaves_the_memory_as_it_was(method):
    x, y = _data(n=2 * BATCH)
    model = _rts(method, every=1) if method == "looksam" else _rts(method)
    _fit(model, x[:BATCH], y[:BATCH])
    before = {v.path: v.numpy().copy() for v in model.variables}
    x_bad = x[BATCH:].copy()
    x_bad[0, 0] = np.inf
    assert _fit(model, x_bad, y[BATCH:]).history["skipped_steps"] == [1]
    changed = [v.path for v in model.variables
               if not np.array_equal(before[v.path], v.numpy(),
                                     equal_nan=True)]
    assert changed == ["rts_model/skipped_steps"] + (
        ["rts_model/method_steps"] if method == "looksam" else [])


@pytest.mark.parametrize("kwargs, message", [
    (dict(method="sam", alpha=0.1), "alpha=0.1 is a setting of gsam and "
                                    "looksam, not of method='sam'"),
    (dict(method="pugd", every=3), "every=3 is a setting of looksam"),
    (dict(method="looksam", every=0), "every must be a positive integer"),
    (dict(method="wsam", gamma=1.0), r"gamma must be in \(0, 1\)"),
    (dict(method="fsam", decay=1.0), r"decay must be in \[0, 1\)"),
    (dict(method="gsam", alpha=-1), "alpha must be non-negative"),
    (dict(method="fsam", sub_batch_size=4), "keeps one average"),
    (dict(method="wsam", sub_batch_size=4), "apart from the optimizer"),
    (dict(method="wsam", grad_scale=0.5), "no λ to weigh g with"),
    (dict(method="wsam", decouple=1), "decouple must be True or False"),
    (dict(method="sam", decouple=False), "decouple=False is a setting of "
                                         "wsam"),
    (dict(method="sam", exclude_from_perturbation="bias"),
     "exclude_from_perturbation must be a list"),
])
def test_bad_method_settings_are_refused_naming_them(kwargs, message):
    with pytest.raises(ValueError, match=message):
        keras_rts.RTSModel(_net(), **kwargs)


def test_excluding_every_variable_is_refused_at_construction():
    with pytest.raises(ValueError, match="leaves no trainable variable"):
        _rts("sam", exclude_from_perturbation=["dense", "batch"])


def test_excluded_names_that_match_nothing_are_refused_naming_them():
    with pytest.raises(ValueError, match=r"\['bais'\] match no trainable"):
        _rts("sam", exclude_from_perturbation=["bias", "bais"])


def test_numpy_scalars_are_accepted_as_method_settings():
    model = _rts("looksam", alpha=np.float32(0.3), every=np.int64(3))
    assert dict(model._method.options) == {"alpha": pytest.approx(0.3),
                                           "every": 3}
    assert isinstance(dict(model._method.options)["every"], int)
    x, y = _data()
    assert _fit(model, x, y).history["grad_evals"] == [4]  # 2 + 1 + 1


# --- random switching -------------------------------------------------------

def _switched(model, epochs, probability, seed=0, initial_epoch=0,
              callbacks=()):
    window = keras_rts.callbacks.PerturbationWindow(
        start_epoch=0, perturb_probability=probability, seed=seed)
    x, y = _data(n=4 * BATCH)
    steps = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            steps.append(model.perturb.host_value)

    model.fit(x, y, batch_size=BATCH, epochs=epochs, steps_per_epoch=4,
              initial_epoch=initial_epoch, shuffle=False, verbose=0,
              callbacks=[window, Record(), *callbacks])
    return steps


def test_random_switching_draws_per_step_from_the_seed_alone():
    p = 0.3
    first = _switched(_rts("sam"), 5, p, seed=7)
    # The draws: step t perturbs iff default_rng((seed, t)).random() < p.
    assert first == [np.random.default_rng((7, t)).random() < p
                     for t in range(20)]
    assert first == _switched(_rts("sam"), 5, p, seed=7)  # reproducible
    assert first != _switched(_rts("sam"), 5, p, seed=8)
    model = _rts("looksam", every=2)
    _switched(model, 5, p, seed=7)
    # grad_evals counts what ran: a plain pass each step, and LookSAM's
    # second pass on every other step that drew the method.
    drawn = sum(first)
    assert int(model.grad_evals.numpy()) == 20 + (drawn + 1) // 2


def test_random_switching_resumes_with_the_draws_it_would_have_made(
        tmp_path):
    whole = _switched(_rts("sam"), 4, 0.5, seed=3)
    model = _rts("sam")
    _switched(model, 2, 0.5, seed=3)
    resumed = _switched(model, 4, 0.5, seed=3, initial_epoch=2)
    assert resumed == whole[8:]


def test_a_scheduled_probability_is_evaluated_at_the_global_step():
    schedule = keras.optimizers.schedules.PolynomialDecay(
        1.0, 8, end_learning_rate=0.0)  # 1 at step 0, 0 from step 8
    steps = _switched(_rts("sam"), 4, schedule, seed=0)
    assert steps[0] and not any(steps[8:])


@pytest.mark.parametrize("kwargs, message", [
    (dict(perturb_probability=1.5), r"perturb_probability must be a number "
                                    r"in \[0, 1\]"),
    (dict(perturb_probability=0.2, perturb_every=3), "not both"),
])
def test_bad_random_switching_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        keras_rts.callbacks.PerturbationWindow(start_epoch=0, **kwargs)


def test_random_switching_reads_nothing_per_step():
    from tests.test_phase import STEPS, _plain_reads, _reads_over_fit
    x, y = _data(n=STEPS * BATCH)
    plain = _plain_reads()
    window = keras_rts.callbacks.PerturbationWindow(
        start_epoch=0, perturb_probability=0.5)
    model = _rts("sam")
    # steps_per_epoch is needed by the switch: the data is an array.
    model.fit(x, y, batch_size=BATCH, epochs=1, steps_per_epoch=STEPS,
              verbose=0, callbacks=[window])
    reads = _reads_over_fit(model, x, y, [window])
    assert len(reads) <= len(plain) + 2, (reads, plain)


def test_random_switching_on_a_method_that_never_perturbs_is_refused():
    with pytest.raises(ValueError, match="method='sgd' never perturbs"):
        _switched(_rts("sgd"), epochs=1, probability=0.5)


@pytest.mark.parametrize("schedule, message", [
    (lambda step: None, "returned None at step 0"),
    (lambda step: 1.5, "returned 1.5 at step 0"),
    (lambda step: "half", "fails at step 0"),
])
def test_a_bad_probability_schedule_is_refused_before_the_first_step(
        schedule, message):
    model = _rts("sam")
    with pytest.raises(ValueError, match=message):
        _switched(model, epochs=1, probability=schedule)
    assert int(model.grad_evals.numpy()) == 0
