"""The checks of a run's settings before any work: flags a run would
ignore (`unused_flags`), what differs from a saved run
(`settings_differences`), and `validate`; every error names its flag."""

import dataclasses
import math
import os

import keras

from keras_rts import data as data_lib
from keras_rts import methods
from keras_rts.callbacks import lr_start_epoch
from keras_rts.experiment.build import (METHOD_OPTIONS, learning_rate,
                                        method_plan)
from keras_rts.experiment.flags import flag_error
from keras_rts.experiment.settings import (LOCATION_FIELDS, METHODS,
                                           OPTIMIZERS, Settings)


def settings_differences(saved, wanted):
    """The fields in which two `Settings` describe different runs.

    ρ and λ are compared as the runs use them (`Settings.resolved`); the
    data's location (`LOCATION_FIELDS`) is ignored.

    Returns:
        The sorted names of the differing fields.
    """
    a = dataclasses.asdict(saved.resolved())
    b = dataclasses.asdict(wanted.resolved())
    # A setting neither run uses (LookSAM's α for an SGD run) changes
    # nothing it computes.
    saved_uses, wanted_uses = _applies(saved), _applies(wanted)
    ignored = {k for k in saved_uses
               if not saved_uses[k] and not wanted_uses[k]}
    return sorted(k for k in a if k not in LOCATION_FIELDS and a[k] != b[k]
                  and k not in ignored)


def unused_flags(settings):
    """The flags set away from their default that this run would ignore.

    ρ and λ for a method that never perturbs, a shape for a method without
    that schedule, a timing's parameters without that timing, the test
    subset when evaluating on held-out images, and so on: set by a user
    who expects them to act, they would be silently wrong.

    Returns:
        The sorted field names.
    """
    fields = Settings.__dataclass_fields__
    return sorted(name for name, used in _applies(settings).items()
                  if not used and getattr(settings, name) != fields[name].default)


def _applies(settings):
    """`{field: whether this run uses it}` for the fields a run may not use."""
    s = settings
    m = s.recipe_method
    perturbs = s.step not in ("sgd", "ugd")
    timed = m.takes("t")
    return {
        "radius": perturbs, "grad_scale": perturbs,
        "sub_batch_size": perturbs, "perturbation": perturbs,
        "perturb_probability": perturbs and (not timed or s.timing in (
            "fixed", "lr")),
        "exclude_from_perturbation": perturbs,
        **{name: name in methods.option_names(s.step)
           for name in METHOD_OPTIONS},
        "radius_shape": m.takes("r"), "grad_scale_shape": m.takes("s"),
        "timing": timed,
        "start_fraction": timed and s.timing == "fixed",
        "start_epoch": timed and s.timing == "fixed",
        "end_epoch": timed and s.timing == "fixed",
        "lr_fraction": timed and s.timing == "lr",
        "variance_t0": timed and s.timing == "variance",
        "variance_gamma": timed and s.timing == "variance",
        "variance_k": timed and s.timing == "variance",
        "gap_xi": timed and s.timing == "gap",
        "gap_mu": timed and s.timing == "gap",
        "gap_t": timed and s.timing == "gap",
        "test_examples": not s.validation_examples,
        "momentum": s.optimizer is None,
    }


def _taking(control):
    return [m.name for m in METHODS.values() if m.takes(control)]


def _listed(names):
    return " and ".join(filter(None, [", ".join(names[:-1]), names[-1]]))


def _why_unused(s, name):
    if name in ("radius", "grad_scale", "sub_batch_size", "perturbation",
                "exclude_from_perturbation") or (
                    name == "perturb_probability" and s.step in ("sgd",
                                                                 "ugd")):
        return f"method {s.method} never perturbs"
    if name == "perturb_probability":
        return (f"the {s.timing} timing decides per epoch; random switching "
                "works with the fixed and lr timings")
    if name in METHOD_OPTIONS:
        users = sorted(m for m in methods.OPTIONS
                       if name in methods.option_names(m) and m != "asam")
        return f"it is a setting of {_listed(users)}, not of {s.step}"
    if name == "test_examples":
        return "--validation-examples evaluates on held-out training images"
    if name == "momentum":
        return f"--optimizer {s.optimizer} has no momentum flag"
    if name == "timing" or not s.recipe_method.takes("t"):
        return (f"method {s.method} has no timing "
                f"({_listed(_taking('t'))} do)")
    if name in ("radius_shape", "grad_scale_shape"):
        return f"method {s.method} does not schedule it"
    return f"it is not a parameter of --timing {s.timing}"


def validate(settings, refuse_unused=True):
    """Checks the settings before any work; raises `ValueError` naming a flag.

    Args:
        settings: the `Settings`.
        refuse_unused: refuse flags this run would ignore (`unused_flags`);
            a comparison, whose flags serve several methods, checks them
            across its methods instead.
    """
    s = settings
    for name in ("dataset", "method", "model", "radius_shape",
                 "grad_scale_shape", "timing", "strategy", "perturbation",
                 "base_method"):
        choices = Settings.__dataclass_fields__[name].metadata["choices"]
        if getattr(s, name) not in choices and not (
                name == "base_method" and s.base_method is None):
            raise flag_error(name, f"{getattr(s, name)!r} is not one of "
                             f"{list(choices)}")
    if s.base_method is not None and s.recipe_method.step is not None:
        controlled = [m.name for m in METHODS.values() if m.step is None]
        raise flag_error("base_method", f"method {s.method} is its own step; "
                         f"only {_listed(controlled)} take a base method")
    if not 0 <= s.label_noise < 1:
        raise flag_error("label_noise",
                         f"must be in [0, 1), got {s.label_noise}")
    if not 0 < s.lr_fraction < 1:
        raise flag_error("lr_fraction",
                         f"must be in (0, 1), got {s.lr_fraction}")
    if s.perturb_every != 1 and s.step in ("sgd", "ugd"):
        raise flag_error("perturb_every", f"method {s.method} never perturbs")
    if s.perturb_probability is not None and s.perturb_every != 1:
        raise flag_error("perturb_probability", "give it or --perturb-every, "
                         "not both")
    if s.sub_batch_size is not None and s.step in ("fsam", "looksam"):
        raise flag_error("sub_batch_size", f"{s.step} keeps its memory for "
                         "the whole batch: no sub-batches")
    for name in ("epochs", "batch_size", "variance_k", "gap_xi", "gap_t",
                 "perturb_every"):
        if getattr(s, name) < 1:
            raise flag_error(name, f"must be ≥ 1, got {getattr(s, name)}")
    if s.sub_batch_size is not None:
        if s.sub_batch_size < 1:
            raise flag_error("sub_batch_size",
                             f"must be ≥ 1, got {s.sub_batch_size}")
        if s.batch_size % s.sub_batch_size:
            raise flag_error("sub_batch_size", f"{s.sub_batch_size} does not "
                             f"divide the batch of {s.batch_size}")
        if s.perturbation == "global":
            raise flag_error("sub_batch_size", "one ε per sub-batch "
                             "contradicts --perturbation global")
    if s.validation_examples < 0:
        raise flag_error("validation_examples", "must be ≥ 0")
    if not (math.isfinite(s.lr) and s.lr > 0):
        raise flag_error("lr", f"must be finite and > 0, got {s.lr}")
    if s.optimizer not in (None, *OPTIMIZERS):
        raise flag_error("optimizer", f"{s.optimizer!r} is not one of "
                         f"{list(OPTIMIZERS)}")
    if s.warmup_epochs is not None and not 0 <= s.warmup_epochs < s.epochs:
        raise flag_error("warmup_epochs", f"must be in [0, --epochs "
                         f"{s.epochs}), got {s.warmup_epochs}")
    if not 0 <= s.momentum < 1:
        raise flag_error("momentum", f"must be in [0, 1), got {s.momentum}")
    if not (math.isfinite(s.weight_decay) and s.weight_decay >= 0):
        raise flag_error("weight_decay",
                         f"must be finite and ≥ 0, got {s.weight_decay}")
    if s.train_examples is not None and s.train_examples < s.batch_size:
        raise flag_error("train_examples", f"{s.train_examples} is fewer "
                         f"than one batch of {s.batch_size}")
    scheduled = {"radius": "r", "grad_scale": "s"}
    pairs = {"radius": s.method_radius(), "grad_scale": s.method_grad_scale()}
    for name, values in pairs.items():
        wanted = 2 if s.recipe_method.takes(scheduled[name]) else 1
        if len(values) != wanted:
            raise flag_error(name, f"method {s.method} takes "
                             f"{'first and last values' if wanted == 2 else 'one value'}"
                             f", got {list(values)}")
        for value in values:
            if value is not None and not (math.isfinite(value)
                                          and value >= 0):
                raise flag_error(name, f"must be finite and ≥ 0, got {value}")
    if s.start_epoch is not None and s.start_fraction is not None:
        raise flag_error("start_fraction", "give --start-epoch or "
                         "--start-fraction, not both")
    if refuse_unused:
        for name in unused_flags(s):
            raise flag_error(name, f"{_why_unused(s, name)}: this run would "
                             "ignore it")
    method_plan(s)  # builds the callbacks: checks shapes, orders, epochs
    if s.recipe_method.takes("t") and s.timing == "lr":
        # The recipes' cosine decay falls the same per epoch whatever the
        # steps per epoch: one step an epoch stands for them all.
        try:
            lr_start_epoch(learning_rate(s, 1), s.epochs, 1, s.lr_fraction)
        except ValueError as e:
            raise flag_error("lr_fraction", str(e)) from None
    if s.strategy != "none" and keras.backend.backend() != "tensorflow":
        raise flag_error(
            "strategy", f"{s.strategy} is a tf.distribute strategy, for "
            "KERAS_BACKEND=tensorflow; under jax distribute with "
            "keras.distribution.DataParallel, under torch Keras offers no "
            "distribution (docs/distributed.md)")
    if s.strategy == "multiworker" and not os.environ.get("TF_CONFIG"):
        raise flag_error(
            "strategy", "multiworker reads the cluster from the TF_CONFIG "
            "environment variable, which is not set (see "
            "docs/distributed.md)")
    if s.image_size is not None:
        if s.dataset != "tiny_imagenet":
            raise flag_error("image_size", "only tiny_imagenet is resized")
        try:
            data_lib.tiny_imagenet.check_image_size(s.image_size)
        except ValueError as e:
            raise flag_error("image_size", str(e)) from None
    side = s.image_size or (data_lib.tiny_imagenet.IMAGE_SIZE
                            if s.dataset == "tiny_imagenet" else 32)
    if s.cutout >= side:
        raise flag_error("cutout", f"must be below the image side {side}: a "
                         f"{s.cutout}×{s.cutout} square hides most or all "
                         "of the image (DeVries & Taylor use 16 on 32×32 "
                         "CIFAR-10)")
    if s.dataset == "tiny_imagenet" and not s.data_dir:
        raise flag_error("data_dir", "tiny_imagenet needs its folder")
