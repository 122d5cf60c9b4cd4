"""Building a run from its settings: the model's method and callbacks,
the data, the optimizer and the distribution strategy."""

import contextlib
import re

import keras

from keras_rts import _extras
from keras_rts import callbacks as rts_callbacks
from keras_rts import data as data_lib
from keras_rts import schedules
from keras_rts.experiment.flags import flag_error

tf = _extras.require("tensorflow", "keras_rts.experiment")


METHOD_OPTIONS = ("alpha", "gamma", "sigma", "decay", "every", "decouple")
"""The SAM variants' own settings (`keras_rts.methods.OPTIONS`), each a
flag and an `RTSModel` argument of the same name."""


def _within_phase(s):
    """Interval mode or random switching, as the trigger's arguments."""
    if s.perturb_probability is not None:
        return dict(perturb_probability=s.perturb_probability, seed=s.seed)
    return dict(perturb_every=s.perturb_every)


def _trigger(s):
    every = dict(perturb_every=s.perturb_every, epochs=s.epochs)
    if s.timing == "variance":
        return rts_callbacks.GradNormVarianceTrigger(
            t0=s.variance_t0, gamma=s.variance_gamma, k=s.variance_k, **every)
    if s.timing == "gap":
        return rts_callbacks.GeneralizationGapTrigger(
            xi=s.gap_xi, mu=s.gap_mu, t=s.gap_t, **every)
    every = dict(_within_phase(s), epochs=s.epochs)
    if s.timing == "lr":
        return rts_callbacks.LearningRateTrigger(s.lr_fraction, **every)
    return rts_callbacks.PerturbationWindow(
        s.start_epoch, s.method_start_fraction(), s.end_epoch, **every)


TRIGGER_FLAGS = {
    "start_epoch": "start_epoch", "start_fraction": "start_fraction",
    "end_epoch": "end_epoch", "lr_fraction": "lr_fraction",
    "perturb_every": "perturb_every", "t0": "variance_t0",
    "gamma": "variance_gamma", "k": "variance_k", "xi": "gap_xi",
    "mu": "gap_mu", "t": "gap_t",
    "perturb_probability": "perturb_probability"}
"""The flag of each argument of the timing callbacks."""


@contextlib.contextmanager
def _naming(flag, arguments=None):
    """Re-raises a callback's `ValueError` naming the flag it came from."""
    try:
        yield
    except ValueError as e:
        message = str(e)
        if message.startswith("--"):
            raise
        first = re.match(r"\w+", message)
        name = (arguments or {}).get(first.group(0) if first else "", flag)
        raise flag_error(name, message) from None


def method_plan(s):
    """The `RTSModel` arguments and the callbacks of the settings' method.

    Returns:
        `(model_kwargs, callbacks)`.

    Raises:
        ValueError: naming the flag whose value a callback refuses.
    """
    s = s.resolved()
    radius, grad_scale = s.method_radius(), s.method_grad_scale()
    method = s.recipe_method
    kwargs = dict(method=s.step, radius=radius[0], grad_scale=grad_scale[0],
                  # AdamW's weight decay is its own (decoupled).
                  weight_decay=0.0 if s.optimizer else s.weight_decay,
                  perturbation=s.perturbation,
                  sub_batch_size=s.sub_batch_size,
                  exclude_from_perturbation=(
                      None if s.exclude_from_perturbation is None
                      else list(s.exclude_from_perturbation)),
                  **{name: getattr(s, name) for name in METHOD_OPTIONS
                     if getattr(s, name) is not None})
    callbacks = []
    if method.takes("r"):
        with _naming("radius"):
            callbacks.append(rts_callbacks.RadiusScheduler(
                schedules.get(s.radius_shape, *radius, duration=s.epochs)))
    if method.takes("s"):
        with _naming("grad_scale"):
            callbacks.append(rts_callbacks.GradScaleScheduler(
                schedules.get(s.grad_scale_shape, *grad_scale,
                              duration=s.epochs)))
    with _naming("timing", TRIGGER_FLAGS):
        if method.takes("t"):
            callbacks.append(_trigger(s))
        elif s.perturb_every != 1 or s.perturb_probability is not None:
            # Interval mode or random switching over the whole run.
            callbacks.append(rts_callbacks.PerturbationWindow(
                start_epoch=0, epochs=s.epochs, **_within_phase(s)))
    return kwargs, callbacks


def learning_rate(settings, steps):
    """The recipes' learning rate: cosine decay from `lr` to 0 over the
    run, after `warmup_epochs` of linear warm-up from 0 if set."""
    warmup = settings.warmup_epochs or 0
    if not warmup:
        return keras.optimizers.schedules.CosineDecay(
            settings.lr, settings.epochs * steps)
    return keras.optimizers.schedules.CosineDecay(
        0.0, (settings.epochs - warmup) * steps, warmup_target=settings.lr,
        warmup_steps=warmup * steps)


def compile_model(model, settings, steps):
    """Compiles as every recipe does: SGD with momentum (or AdamW with its
    decoupled weight decay), the learning rate cosine-decayed."""
    s = settings
    if s.optimizer == "adamw":
        optimizer = keras.optimizers.AdamW(learning_rate(s, steps),
                                           weight_decay=s.weight_decay)
    else:
        optimizer = keras.optimizers.SGD(learning_rate(s, steps),
                                         momentum=s.momentum)
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        # Without the flag, Keras' own "auto": compiled under JAX (its
        # uncompiled step runs op by op), graph mode on a CPU TensorFlow.
        jit_compile=True if s.jit_compile else "auto",
    )


def steps_per_epoch(settings):
    """Training steps per epoch (the last partial batch is dropped)."""
    s = settings
    if s.train_examples is not None:
        count = s.train_examples
    else:
        count = data_lib.train_size(s.dataset, s.data_dir)
        count -= s.validation_examples
    return count // s.batch_size


def datasets(settings, initial_epoch=0):
    """The run's training data (epochs `initial_epoch` on) and evaluation data.

    The evaluation data is the test set, or the held-out validation images
    when `settings.validation_examples` is set.
    """
    s = settings
    common = dict(data_dir=s.data_dir, validation_examples=s.validation_examples)
    if s.image_size is not None:
        common["image_size"] = s.image_size
    train = data_lib.load(
        s.dataset, "train", batch_size=s.batch_size,
        train_examples=s.train_examples, cutout=s.cutout, seed=s.seed,
        epochs=s.epochs, initial_epoch=initial_epoch,
        label_noise=s.label_noise, **common)
    if s.validation_examples:
        evaluation = data_lib.load(s.dataset, "validation", batch_size=500,
                                   **common)
    else:
        evaluation = data_lib.load(
            s.dataset, "test", batch_size=500, test_examples=s.test_examples,
            **{k: v for k, v in common.items() if k != "validation_examples"})
    return train, evaluation


def check_data(settings):
    """Checks that the data is there and the sizes fit it; reads no image.

    With `data_dir`, the dataset must be prepared there (nothing is
    downloaded or written); the example counts must fit the dataset.
    """
    s = settings
    try:
        sizes = data_lib.check(s.dataset, s.data_dir)
    except ValueError as e:
        raise flag_error("data_dir", str(e)) from None
    if sizes is None:
        return  # TFDS' default folder: tfds.load prepares it
    train, test = sizes
    if not s.validation_examples < train:
        raise flag_error("validation_examples", f"{s.validation_examples} leaves "
                     f"no training image of the {train}")
    available = train - s.validation_examples
    if s.train_examples is not None and s.train_examples > available:
        raise flag_error("train_examples", f"{s.train_examples} is more than the "
                     f"{available} training images "
                     f"{'left after validation' if s.validation_examples else 'there are'}")
    if (s.train_examples or available) < s.batch_size:
        raise flag_error("batch_size", f"{s.batch_size} is more than the "
                     f"{s.train_examples or available} training images")
    if s.test_examples is not None and s.test_examples > test:
        raise flag_error("test_examples", f"{s.test_examples} is more than the "
                     f"{test} test images")


def make_strategy(name):
    """The `tf.distribute` strategy of a recipe's `--strategy`."""
    if name == "mirrored":
        # Every local GPU; without one, every logical CPU device.
        devices = (tf.config.list_logical_devices("GPU")
                   or tf.config.list_logical_devices("CPU"))
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def worker_index(strategy):
    """This worker's index under a multi-worker strategy, else `None`."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return None
    return strategy.cluster_resolver.task_id or 0


def shard_by_data(dataset):
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA)
    return dataset.with_options(options)
