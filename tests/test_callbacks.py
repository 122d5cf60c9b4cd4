"""The RTS callbacks on real fits: schedules, timing, resume."""

import math

import keras
import numpy as np
import pytest

import keras_rts
from keras_rts import callbacks, schedules

BATCH = 8
STEPS = 4  # steps per epoch


def _data(n=BATCH * STEPS, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, 5)).astype("float32"),
            rng.integers(0, 3, size=n).astype("int32"))


def _net(seed=1):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((5,)),
        keras.layers.Dense(8, use_bias=False),
        keras.layers.BatchNormalization(),
        keras.layers.ReLU(),
        keras.layers.Dense(3),
    ])


def _model(method="pugd", model_class=keras_rts.RTSModel, **kwargs):
    model = model_class(_net(), method=method, **kwargs)
    model.compile(
        optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def _fit(model, epochs, callbacks_=(), initial_epoch=0, **kwargs):
    x, y = _data()
    return model.fit(x, y, batch_size=BATCH, epochs=epochs, shuffle=False,
                     verbose=0, callbacks=list(callbacks_),
                     initial_epoch=initial_epoch, **kwargs)


def _weights(model):
    return [v.numpy() for v in model.trainable_variables]


def test_radius_and_grad_scale_in_history_follow_their_schedules():
    radius = schedules.Cosine(3.0, 0.1, period=6)
    scale = schedules.Linear(0.5, 1.5, duration=6)
    history = _fit(_model(), 6, [callbacks.RadiusScheduler(radius),
                                 callbacks.GradScaleScheduler(scale)])
    expected_radius = [0.1 + 0.5 * 2.9 * (1 + math.cos(math.pi * e / 6))
                       for e in range(6)]
    assert history.history["radius"] == pytest.approx(expected_radius, 1e-6)
    assert history.history["grad_scale"] == pytest.approx(
        [0.5 + e / 6 for e in range(6)], 1e-6)


def test_keras_schedules_and_plain_callables_are_accepted():
    keras_cosine = keras.optimizers.schedules.CosineDecay(2.0, decay_steps=4)
    history = _fit(_model(), 4, [
        callbacks.RadiusScheduler(keras_cosine),
        callbacks.GradScaleScheduler(lambda epoch: 0.25 * epoch),
    ])
    assert history.history["radius"] == pytest.approx(
        [1.0 + math.cos(math.pi * e / 4) for e in range(4)], 1e-6)
    assert history.history["grad_scale"] == pytest.approx(
        [0.0, 0.25, 0.5, 0.75])


def test_schedules_of_the_epoch_and_current_value_are_accepted():
    # The signature keras.callbacks.LearningRateScheduler users write.
    history = _fit(_model(radius=1.0), 4, [
        callbacks.RadiusScheduler(lambda epoch, rho: rho * 0.5),
        callbacks.GradScaleScheduler(lambda epoch, lam=7.0: 0.1 * epoch),
    ])
    assert history.history["radius"] == pytest.approx(
        [0.5, 0.25, 0.125, 0.0625])
    assert history.history["grad_scale"] == pytest.approx(
        [0.0, 0.1, 0.2, 0.3])


@pytest.mark.parametrize("bad", ["big", None, [1.0, 2.0]])
def test_a_schedule_value_that_is_not_a_number_is_named(bad):
    with pytest.raises(ValueError, match="radius schedule gave .* at epoch "
                       "0: radius must be a number"):
        _fit(_model(), 2, [callbacks.RadiusScheduler(lambda epoch: bad)])


def test_per_step_radius_is_set_at_every_step():
    seen = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(float(logs["radius"]))

    _fit(_model(), 2, [callbacks.RadiusScheduler(lambda step: 0.1 * step,
                                                 per_step=True), Record()])
    assert seen == pytest.approx([0.1 * s for s in range(2 * STEPS)])


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -0.5])
def test_bad_schedule_value_fails_before_any_step(bad):
    model = _model()
    with pytest.raises(ValueError, match="radius schedule gave .* at epoch 2"):
        _fit(model, 4, [callbacks.RadiusScheduler(
            lambda e: bad if e == 2 else 1.0)])
    assert int(model.grad_evals.numpy()) == 0


@pytest.mark.parametrize("callback", [
    callbacks.RadiusScheduler(schedules.Constant(1.0)),
    callbacks.GradScaleScheduler(schedules.Constant(1.0)),
    callbacks.PerturbationWindow(start_epoch=1),
    callbacks.GradNormVarianceTrigger(t0=0),
    callbacks.GeneralizationGapTrigger(xi=1),
])
def test_callbacks_refuse_a_model_that_is_not_an_rts_model(callback):
    net = _net()
    net.compile(optimizer="sgd",
                loss=keras.losses.SparseCategoricalCrossentropy(True))
    with pytest.raises(ValueError, match="must be used on a keras_rts.RTSMod"):
        _fit(net, 3, [callback])


def test_fixed_switch_costs_and_sgd_phase():
    n, k = 5, 2
    window = callbacks.PerturbationWindow(start_epoch=k)
    at_switch = {}

    class Snapshot(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == k:
                at_switch["weights"] = _weights(self.model)

    history = _fit(_model("pugd"), n, [Snapshot(), window])
    h = history.history
    assert h["grad_evals"][-1] == k * STEPS + 2 * (n - k) * STEPS
    assert h["perturb"] == [0] * k + [1] * (n - k)
    assert h["perturb_start_epoch"] == [-1] * k + [k] * (n - k)
    assert window.perturb_start_epoch == k

    sgd = _model("sgd")
    _fit(sgd, k)
    for got, want in zip(at_switch["weights"], _weights(sgd)):
        np.testing.assert_array_equal(got, want)


def test_window_with_end_and_fraction():
    history = _fit(_model(), 6, [callbacks.PerturbationWindow(
        start_fraction=0.34, end_epoch=4)])
    assert history.history["perturb"] == [0, 0, 1, 1, 0, 0]
    assert history.history["grad_evals"][-1] == 6 * STEPS + 2 * STEPS


def _traces(callback_list, epochs=5):
    """How many times `train_step` is traced in a fit with the callbacks."""
    count = []

    class Counting(keras_rts.RTSModel):
        def train_step(self, *args):
            count.append(1)
            return super().train_step(*args)

    _fit(_model(model_class=Counting), epochs, callback_list)
    return len(count)


def test_switching_traces_each_phase_once():
    one_phase = _traces([])
    # Off, then on: each phase is traced once, whatever the schedules do.
    assert _traces(callbacks.rts(5, start_epoch=2)) == _traces(
        callbacks.rts(5, start_epoch=3, radius=(1.0, 0.5),
                      grad_scale=(0.0, 2.0), steps_per_epoch=STEPS))
    assert _traces(callbacks.rts(5, start_epoch=2)) <= 2 * one_phase


@pytest.mark.parametrize("make, match", [
    (lambda: callbacks.PerturbationWindow(), "exactly one"),
    (lambda: callbacks.PerturbationWindow(3, 0.5), "exactly one"),
    (lambda: callbacks.PerturbationWindow(start_epoch=-1), "start_epoch"),
    (lambda: callbacks.PerturbationWindow(start_epoch=5, epochs=5),
     r"outside \[0, epochs=5\)"),
    (lambda: callbacks.PerturbationWindow(start_fraction=1.0),
     "start_fraction"),
    (lambda: callbacks.PerturbationWindow(2, end_epoch=2, epochs=5),
     "end_epoch"),
    (lambda: callbacks.rts(10, start_epoch=10), "outside"),
    (lambda: callbacks.rts(10, radius=(0.1, 3.0)), "decreases"),
    (lambda: callbacks.rts(10, radius=(3.0, -0.1)), "radius must"),
    (lambda: callbacks.rts(10, grad_scale=(1.0, float("nan"))),
     "grad_scale must"),
    (lambda: callbacks.rts(10, radius=("3", 0.1)), "radius must"),
    (lambda: callbacks.rts(10, lr_fraction=0.1, start_epoch=2),
     "lr_fraction"),
    (lambda: callbacks.rts(10, perturb_every=0), "perturb_every"),
    (lambda: callbacks.LearningRateTrigger(1.0), "lr_fraction"),
    (lambda: callbacks.PerturbationWindow(0, perturb_every=1.5),
     "perturb_every"),
    (lambda: callbacks.rts(10, radius_shape="zigzag"), "zigzag"),
    (lambda: callbacks.rts(10, grad_scale_shape="zigzag"),
     r"grad_scale \(shape 'zigzag'\)"),
    (lambda: callbacks.rts(10, radius_shape=None), r"radius \(shape None\)"),
    (lambda: callbacks.RadiusScheduler(lambda e: 1.0, per_step="yes"),
     "per_step"),
    (lambda: callbacks.rts(10, grad_scale=1.0), "grad_scale"),
    (lambda: callbacks.rts(0), "epochs"),
    (lambda: callbacks.rts(10, timing=callbacks.GradNormVarianceTrigger(
        t0=9)), "t0=9"),
    (lambda: callbacks.rts(10, start_epoch=2,
                           timing=callbacks.GeneralizationGapTrigger()),
     "timing"),
    (lambda: callbacks.GradNormVarianceTrigger(k=5000), "k must be"),
    (lambda: callbacks.GradNormVarianceTrigger(gamma=0), "gamma"),
    (lambda: callbacks.GeneralizationGapTrigger(xi=0), "xi"),
    (lambda: callbacks.GeneralizationGapTrigger(mu=float("nan")), "mu"),
    (lambda: callbacks.RadiusScheduler(3.0), "callable"),
])
def test_bad_arguments_raise_value_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_window_start_past_the_end_of_fit_fails_before_training():
    model = _model()
    with pytest.raises(ValueError, match="outside"):
        _fit(model, 3, [callbacks.PerturbationWindow(start_epoch=3)])
    assert int(model.grad_evals.numpy()) == 0


def test_rts_returns_the_combined_method():
    radius, scale, timing = callbacks.rts(
        200, radius=(3.0, 0.1), start_epoch=100, grad_scale=(1.0, 0.5))
    assert isinstance(radius, callbacks.RadiusScheduler)
    assert radius.schedule(0) == 3.0 and radius.schedule(200) == 0.1
    assert scale.schedule(100) == pytest.approx(0.75)
    assert timing.start(200) == 100
    assert callbacks.rts(200)[2].start(200) == 100  # default: half-way


# --- adaptive triggers ----------------------------------------------------

def _norm_batches(scales):
    """Batches of a linear regression whose gradient norm is ∝ the scale.

    With zero weights and MSE, g = −(2/n)·xᵀy; y is a fixed vector times
    the batch's scale, so ‖g‖ = scale · ‖(2/n)·xᵀy₀‖.
    """
    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH, 3)).astype("float32")
    y0 = rng.normal(size=(BATCH, 1)).astype("float32")
    unit = np.linalg.norm(2.0 / BATCH * x.astype(np.float64).T @ y0)
    xs = np.stack([x] * len(scales))
    ys = np.stack([y0 * s for s in scales]).astype("float32")
    # One batch a step, continued across the epochs.
    return (batch for batch in zip(xs, ys)), unit


def _regression(method="pugd"):
    net = keras.Sequential([keras.Input((3,)), keras.layers.Dense(
        1, use_bias=False, kernel_initializer="zeros")])
    model = keras_rts.RTSModel(net, method=method)
    # lr = 0: the weights stay at zero, so each norm depends on its batch.
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    return model


@pytest.mark.parametrize("settles, expected_start", [(True, 3), (False, None)])
def test_grad_norm_variance_trigger(settles, expected_start):
    epochs = 6
    noisy = [1.0, 3.0] * 2  # variance 1 within every epoch
    scales = noisy * 2 + (([2.0] * STEPS) if settles else noisy) * (epochs - 2)
    data, unit = _norm_batches(scales)
    model = _regression()
    trigger = callbacks.GradNormVarianceTrigger(t0=1, gamma=0.5, k=STEPS)
    history = model.fit(data, epochs=epochs, steps_per_epoch=STEPS,
                        callbacks=[trigger], verbose=0)
    # Every step's ‖g‖ was recorded, in the graph.
    assert int(model.timing.grad_norm_count.numpy()) == len(scales)
    np.testing.assert_allclose(model.timing.last_grad_norms(STEPS),
                               unit * np.array(scales[-STEPS:]), rtol=1e-5)
    # Threshold: gamma times the variance of the first two epochs' norms.
    assert trigger.threshold == pytest.approx(
        0.5 * np.var(unit * np.array(scales[:2 * STEPS])), rel=1e-4)
    assert trigger.perturb_start_epoch == expected_start
    if settles:
        assert history.history["perturb"] == [0, 0, 0, 1, 1, 1]
        assert history.history["perturb_start_epoch"] == [-1] * 3 + [3] * 3
    else:
        assert history.history["perturb"] == [0] * epochs


def _feed(trigger, model, gaps):
    """Runs the trigger's epoch hooks with constructed logs."""
    trigger.set_model(model)
    trigger.set_params({"epochs": len(gaps) + 1})
    trigger.on_train_begin()
    for epoch, gap in enumerate(gaps):
        trigger.on_epoch_begin(epoch)
        trigger.on_epoch_end(epoch, {"loss": 1.0, "val_loss": 1.0 + gap})


def test_generalization_gap_trigger_fires_once_the_gap_exceeds_its_base():
    model = _regression()
    trigger = callbacks.GeneralizationGapTrigger(xi=3, mu=2.0, t=1)
    _feed(trigger, model, [0.5, 1.0, 1.5, 1.9, 2.1, 0.1])
    assert trigger.base == pytest.approx(2.0)  # mean 1.0 times mu 2
    assert trigger.perturb_start_epoch == 5  # the gap 2.1 at epoch 4
    trigger.on_epoch_begin(5)
    assert bool(model.perturb.numpy())


def test_generalization_gap_trigger_checks_every_t_epochs_only():
    model = _regression()
    trigger = callbacks.GeneralizationGapTrigger(xi=2, mu=1.0, t=2)
    # base 1.0; checks at epochs 3 and 5; the gap at epoch 2 is ignored.
    _feed(trigger, model, [1.0, 1.0, 5.0, 0.5, 0.2])
    assert trigger.perturb_start_epoch is None
    assert not bool(model.perturb.numpy())
    trigger.on_epoch_end(5, {"loss": 0.0, "val_loss": 1.5})
    assert trigger.perturb_start_epoch == 6


def test_generalization_gap_trigger_on_a_real_fit_and_without_validation():
    model = _model()
    x, y = _data()
    history = model.fit(x, y, batch_size=BATCH, epochs=3, verbose=0,
                        validation_data=_data(seed=1),
                        callbacks=[callbacks.GeneralizationGapTrigger(
                            xi=1, mu=1e-6)])
    # Epoch 0 makes the base; epoch 1's gap exceeds it; on from epoch 2.
    assert history.history["perturb"] == [0, 0, 1]
    with pytest.raises(ValueError, match="validation_data"):
        _fit(_model(), 3, [callbacks.GeneralizationGapTrigger(xi=1)])


# --- cheaper timing: interval and late phase ------------------------------

class StepEvals(keras.callbacks.Callback):
    """Gradient evaluations of every step, from the logs."""

    def __init__(self):
        super().__init__()
        self.total, self.per_step = 0, []

    def on_train_batch_end(self, batch, logs=None):
        evals = int(logs["grad_evals"])
        self.per_step.append(evals - self.total)
        self.total = evals


@pytest.mark.parametrize("every, epochs", [(1, 3), (2, 5), (3, 5), (4, 5),
                                           (7, 3)])
def test_interval_mode_perturbs_every_kth_step(every, epochs):
    """grad_evals = S·n + ceil(S·n / k): one pass per step, a second on the
    global steps t with t mod k = 0."""
    record = StepEvals()
    model = _model()
    _fit(model, epochs, [callbacks.PerturbationWindow(
        start_epoch=0, perturb_every=every), record])
    total = STEPS * epochs
    assert int(model.grad_evals.numpy()) == total + math.ceil(total / every)
    assert record.per_step == [2 if t % every == 0 else 1
                               for t in range(total)]


def test_interval_within_a_window_counts_from_the_global_step():
    record = StepEvals()
    _fit(_model(), 5, callbacks.rts(5, start_epoch=2, perturb_every=3)
         + [record])
    assert record.per_step == [
        2 if t >= 2 * STEPS and t % 3 == 0 else 1 for t in range(5 * STEPS)]


def test_interval_mode_traces_each_phase_once():
    two_phases = _traces(callbacks.rts(3, start_epoch=1), epochs=3)
    # Switched at nearly every step: still each phase's function once.
    assert _traces(callbacks.rts(3, start_epoch=0, perturb_every=2),
                   epochs=3) == two_phases


def _cosine_model(epochs, warmup=0):
    model = keras_rts.RTSModel(_net(), method="pugd")
    model.compile(
        optimizer=keras.optimizers.SGD(keras.optimizers.schedules.CosineDecay(
            0.0 if warmup else 0.05, epochs * STEPS,
            warmup_target=0.05 if warmup else None,
            warmup_steps=warmup * STEPS)),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


@pytest.mark.parametrize("fraction, warmup", [(0.5, 0), (0.1, 0), (0.6, 2),
                                              (0.9, 0)])
def test_learning_rate_trigger_starts_when_the_rate_has_fallen(fraction,
                                                               warmup):
    epochs = 8
    # NumPy: the learning rate at the start of each epoch, linear warm-up
    # to 0.05 over `warmup` epochs, then a cosine to 0 over `epochs`.
    t = np.arange(epochs) * STEPS
    decay = np.clip((t - warmup * STEPS) / (epochs * STEPS), 0, 1)
    rates = np.where(t < warmup * STEPS, 0.05 * t / max(warmup * STEPS, 1),
                     0.05 * 0.5 * (1 + np.cos(np.pi * decay)))
    # From the peak on: a warm-up's first epochs start low too.
    peak = int(np.argmax(rates))
    start = peak + int(np.argmax(rates[peak:] <= fraction * rates.max()))
    assert start > warmup
    trigger = callbacks.LearningRateTrigger(fraction)
    history = _fit(_cosine_model(epochs, warmup), epochs, [trigger])
    assert history.history["perturb"] == [float(e >= start)
                                          for e in range(epochs)]
    assert trigger.perturb_start_epoch == start


def test_learning_rate_trigger_refuses_what_never_switches():
    before = _weights(model := _model())  # a constant learning rate
    with pytest.raises(ValueError, match="learning-rate schedule"):
        _fit(model, 3, [callbacks.LearningRateTrigger(0.5)])
    with pytest.raises(ValueError, match="lr_fraction=0.001"):
        _fit(_cosine_model(4), 4, [callbacks.LearningRateTrigger(0.001)])
    for got, want in zip(_weights(model), before):
        np.testing.assert_array_equal(got, want)  # before any step


def test_rts_epochs_against_the_epochs_of_fit():
    with pytest.raises(ValueError, match="beyond the run's epochs=4"):
        _fit(_model(), 6, callbacks.rts(4))
    with pytest.warns(UserWarning, match=r"fit\(epochs=2\) ends before"):
        history = _fit(_model(), 2, callbacks.rts(4))
    assert history.history["perturb"] == [0, 0]  # as documented: warned


@pytest.mark.parametrize("fit_kwargs, match", [
    ({}, "validation_data"),
    ({"validation_data": _data(seed=1), "validation_freq": 2},
     "validation_freq"),
])
def test_gap_trigger_without_validation_every_epoch_is_refused(fit_kwargs,
                                                               match):
    model = _model()
    model.build((None, 5))
    before = _weights(model)
    with pytest.raises(ValueError, match=match):
        _fit(model, 3, [callbacks.GeneralizationGapTrigger(xi=1)],
             **fit_kwargs)
    assert int(model.grad_evals.numpy()) == 0  # before the first step
    for got, want in zip(_weights(model), before):
        np.testing.assert_array_equal(got, want)


# --- resume ---------------------------------------------------------------

class Interrupt(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError("interrupted")


class Recorder(keras.callbacks.Callback):
    KEYS = ("radius", "grad_scale", "perturb", "perturb_start_epoch")

    def __init__(self):
        super().__init__()
        self.rows = {}

    def on_epoch_end(self, epoch, logs=None):
        self.rows[epoch] = tuple(float(logs[k]) for k in self.KEYS)


def _rts_callbacks(kind, epochs):
    if kind == "fixed":
        return callbacks.rts(epochs, radius=(2.0, 0.2), start_epoch=2,
                             grad_scale=(1.0, 0.5))
    if kind == "interval":
        return callbacks.rts(epochs, radius=(2.0, 0.2), start_epoch=1,
                             grad_scale=(1.0, 0.5), perturb_every=3)
    return callbacks.rts(epochs, radius=(2.0, 0.2), grad_scale=(1.0, 0.5),
                         timing=callbacks.GradNormVarianceTrigger(
                             t0=0, gamma=1e6, k=2))


@pytest.mark.parametrize("kind, stop", [
    ("fixed", 1),     # stopped before the switch
    ("fixed", 3),     # stopped after it
    ("variance", 0),  # threshold taken, not fired
    ("variance", 2),  # fired (at the end of epoch 1)
    ("interval", 2),  # mid-way through the interval pattern
])
def test_interrupt_and_resume_equals_uninterrupted(tmp_path, kind, stop):
    epochs = 6
    reference = _model()
    ref_log = Recorder()
    _fit(reference, epochs, _rts_callbacks(kind, epochs) + [ref_log])

    model = _model()
    log = Recorder()
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    with pytest.raises(RuntimeError, match="interrupted"):
        _fit(model, epochs,
             _rts_callbacks(kind, epochs) + [log, backup, Interrupt(stop)])
    # A new process would build everything again.
    keras.utils.clear_session()
    resumed = _model()
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    resumed_log = Recorder()
    _fit(resumed, epochs,
         [backup] + _rts_callbacks(kind, epochs) + [resumed_log])
    log.rows.update(resumed_log.rows)

    assert sorted(resumed_log.rows) == list(range(stop + 1, epochs))
    assert sorted(log.rows) == list(range(epochs))
    assert [log.rows[e] for e in range(epochs)] == [
        ref_log.rows[e] for e in range(epochs)]
    for got, want in zip(_weights(resumed), _weights(reference)):
        np.testing.assert_array_equal(got, want)
    assert int(resumed.grad_evals.numpy()) == int(
        reference.grad_evals.numpy())


def test_progress_bar_shows_the_counters_once_per_epoch(capsys):
    x, y = _data()
    _model().fit(x, y, batch_size=BATCH, epochs=2, verbose=1)
    out = capsys.readouterr().out
    assert out.count("grad_evals") == 2  # the two epochs' lines
    assert out.count("radius") > 2  # measured values on every update
    history = _fit(_model(), 2)
    assert history.history["grad_evals"] == [2 * STEPS, 4 * STEPS]


@pytest.mark.parametrize("make", [
    lambda: callbacks.PerturbationWindow(start_epoch=0, perturb_every=2),
    lambda: callbacks.RadiusScheduler(lambda t: 1.0, per_step=True),
])
def test_per_step_callbacks_refuse_several_steps_per_call(make):
    model = keras_rts.RTSModel(_net(), method="pugd")
    model.compile(optimizer=keras.optimizers.SGD(0.05),
                  loss=keras.losses.SparseCategoricalCrossentropy(
                      from_logits=True), steps_per_execution=2)
    with pytest.raises(ValueError, match="steps_per_execution=2"):
        _fit(model, 2, [make()])
    assert int(model.grad_evals.numpy()) == 0
