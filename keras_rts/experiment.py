"""What every recipe shares: a training run from its settings, and its artefacts.

A run is described by `Settings` (one field per command-line flag, the same
names) and carried out by `run`, which writes into its output folder:

- `settings.json`: the settings, written first, with ρ and λ spelt out
  (`Settings.resolved`), so that the run keeps its meaning when a default
  changes;
- `history.csv`: one row per epoch (Keras' `CSVLogger`), with train and
  test loss and top-1, `radius`, `grad_scale`, `perturb`, `grad_evals`,
  `perturb_start_epoch` and the cumulative `wall_time` and `cpu_time`;
- `summary.json`: method, settings, seed, final and best test top-1, wall
  time, gradient evaluations, the epoch the perturbation switched on, and
  library versions — written last, so its presence marks a finished run;
- `curves.png`: accuracy and loss against epoch and gradient evaluations,
  ρ and λ against epoch;
- `backup/`: Keras' `BackupAndRestore` state while the run is unfinished.

A finished run is never overwritten; an unfinished one is continued only
with `resume=True`, and then ends exactly as an uninterrupted run would.
"""

import argparse
import contextlib
import csv
import dataclasses
import json
import math
import os
import platform
import re
import sys
import time
from typing import Optional, Tuple

import keras
import numpy as np
import tensorflow as tf

from keras_rts import callbacks as rts_callbacks
from keras_rts import data as data_lib
from keras_rts import directions
from keras_rts import models as models_lib
from keras_rts import plots
from keras_rts import schedules
from keras_rts.model import RTSModel

@dataclasses.dataclass(frozen=True)
class RecipeMethod:
    """A recipe method: an `RTSModel` step and the RTS controls it adds.

    Attributes:
        name: the `--method` value.
        step: the `RTSModel` method, or `None` for the controlled methods,
            whose step is `--base-method` (default `pugd`).
        controls: the RTS controls: `"r"` (ρ scheduled), `"t"` (timing),
            `"s"` (λ scheduled), or several.
        radius: the default ρ in units of the step's own default ρ
            (`keras_rts.directions.Method.default_radius`): one value, or
            first and last for `r`.
        grad_scale: the default λ (first and last for `s`), or `None`
            for the step's own λ.
    """

    name: str
    step: Optional[str]
    controls: str
    radius: Tuple[float, ...] = (1.0,)
    grad_scale: Optional[Tuple[float, ...]] = None

    def takes(self, control):
        return control in self.controls


METHODS = {m.name: m for m in (
    RecipeMethod("sgd", "sgd", ""),
    RecipeMethod("ugd", "ugd", ""),
    RecipeMethod("sam", "sam", ""),
    RecipeMethod("asam", "asam", ""),
    RecipeMethod("pugd", "pugd", ""),
    RecipeMethod("r", None, "r", radius=(1.0, 0.1)),
    RecipeMethod("t", None, "t"),
    RecipeMethod("s", None, "s", grad_scale=(1.0, 0.5)),
    RecipeMethod("rts", None, "rts", radius=(3.0, 0.1),
                 grad_scale=(1.0, 0.5)),
)}
"""The recipes' methods: the steps of SPEC §1, and the R, T, S and RTS
controls over a base step. Default ρ (in units of the step's own: SAM's
CIFAR value 0.05 (Foret et al.), ASAM's 0.5 (Kwon et al.), PUGD's 1): `r` a
cosine from 1 down to 0.1, `rts` the cosine from 3 to 0.1, which has come
down to 1.55 when `rts` switches to PUGD halfway (`r` perturbs from the
first epoch, and from 3 it trained 4 points below PUGD on CIFAR-10; from 1
it trains above, docs/results/README.md). Default λ for `s` and `rts`: from
PUGD's 1 down to 0.5 over the run, as `keras_rts.callbacks.rts`."""

BASE_METHODS = ("pugd", "sam", "asam")
"""The steps the controls can drive (`--base-method`)."""

TIMINGS = ("fixed", "lr", "variance", "gap")
STRATEGIES = ("none", "mirrored", "multiworker")


PRESETS = {
    "paper": dict(model="resnet18", epochs=200, batch_size=128, lr=0.1,
                  train_examples=None),
    "cpu": dict(model="small_resnet", epochs=10, batch_size=128, lr=0.1,
                train_examples=5000),
}
"""`paper`: the published CIFAR setup. `cpu`: minutes on 2 CPU cores."""


def _field(default, help, **kwargs):
    return dataclasses.field(default=default, metadata={"help": help, **kwargs})


@dataclasses.dataclass
class Settings:
    """Everything that defines a run; each field is a recipe flag."""

    dataset: str = _field("cifar10", "dataset", choices=data_lib.DATASETS)
    method: str = _field("pugd", "training method", choices=tuple(METHODS))
    base_method: Optional[str] = _field(
        None, "the step that r, t, s and rts control (default: pugd)",
        choices=BASE_METHODS)
    model: str = _field("resnet18", "network", choices=models_lib.MODELS)
    epochs: int = _field(200, "epochs of the run")
    batch_size: int = _field(128, "examples per batch")
    lr: float = _field(0.1, "peak learning rate (cosine decay to 0)")
    momentum: float = _field(0.9, "SGD momentum")
    weight_decay: float = _field(
        5e-4, "coupled L2 weight decay, as in the published recipes")
    seed: int = _field(0, "seed of initialisation, order and augmentation")
    train_examples: Optional[int] = _field(
        None, "train on this many training images (a subset)")
    test_examples: Optional[int] = _field(
        None, "test on the first this many test images (default: all)")
    validation_examples: int = _field(
        0, "hold out this many training images and evaluate on them "
        "instead of the test set (as the tuner does)")
    data_dir: Optional[str] = _field(
        None, "prepared TFDS folder (CIFAR; default TFDS_DATA_DIR) or the "
        "Tiny ImageNet folder")
    image_size: Optional[int] = _field(
        None, "tiny_imagenet: resize the 64×64 images to this side (area "
        "averaging), e.g. 32; default the originals")
    cutout: int = _field(0, "side of the cutout square (0: none)")
    label_noise: float = _field(
        0.0, "replace this fraction of the training labels by another "
        "class, drawn uniformly (symmetric noise, fixed by the seed; test "
        "and validation labels stay clean)")
    radius: Optional[Tuple[float, ...]] = _field(
        None, "ρ: one value, or first and last for methods r and rts "
        "(default by method: sam 0.05, asam 0.5, pugd/t/s 1, r 1 0.1, "
        "rts 3 0.1, the last four times the base method's ρ)",
        nargs="+")
    radius_shape: str = _field("cosine", "shape of ρ for r and rts",
                               choices=schedules.SHAPES)
    grad_scale: Optional[Tuple[float, ...]] = _field(
        None, "λ: one value, or first and last for methods s and rts "
        "(default: the method's λ; s/rts 1 0.5)", nargs="+")
    grad_scale_shape: str = _field("linear", "shape of λ for s and rts",
                                   choices=schedules.SHAPES)
    timing: str = _field(
        "fixed", "trigger of the perturbation for t and rts: a fixed "
        "start, the learning rate (lr), the gradient-norm variance, the "
        "generalization gap", choices=TIMINGS)
    lr_fraction: float = _field(
        0.5, "lr timing: perturb once the learning rate is at or below this "
        "fraction of its peak (under cosine decay, 0.5 is the second half)")
    perturb_every: int = _field(
        1, "take the method's step on every k-th step of the perturbing "
        "phase only, plain steps between (interval mode)")
    start_fraction: Optional[float] = _field(
        None, "fixed timing: start as a fraction of the epochs (default: "
        "0.5 without --start-epoch)")
    start_epoch: Optional[int] = _field(None, "fixed timing: start epoch")
    end_epoch: Optional[int] = _field(None, "fixed timing: end epoch")
    variance_t0: int = _field(5, "variance timing: epoch of the threshold")
    variance_gamma: float = _field(0.5, "variance timing: threshold factor")
    variance_k: int = _field(100, "variance timing: steps compared")
    gap_xi: int = _field(5, "gap timing: epochs averaged for the base")
    gap_mu: float = _field(2.0, "gap timing: base factor")
    gap_t: int = _field(1, "gap timing: check every this many epochs")
    jit_compile: bool = _field(
        False, "compile the step with XLA (without it, Keras' 'auto': XLA "
        "under JAX and on TensorFlow with a GPU)")
    strategy: str = _field(
        "none", "tf.distribute strategy: mirrored uses every local GPU "
        "(batch-size is the global batch); multiworker reads TF_CONFIG",
        choices=STRATEGIES)
    perturbation: str = _field(
        "replica", "with several replicas: ε from each replica's gradient "
        "(replica) or from the all-reduced one (global)",
        choices=("replica", "global"))
    sub_batch_size: Optional[int] = _field(
        None, "m: form ε per sub-batch of m examples of each replica's "
        "batch and average (m-sharpness); default one ε per batch")

    @property
    def recipe_method(self):
        return METHODS[self.method]

    @property
    def step(self):
        """The `RTSModel` method of the run (the base method for r/t/s/rts)."""
        return self.recipe_method.step or self.base_method or "pugd"

    def method_radius(self):
        if self.radius:
            return tuple(self.radius)
        unit = directions.METHODS[self.step].default_radius
        return tuple(unit * r for r in self.recipe_method.radius)

    def method_grad_scale(self):
        if self.grad_scale:
            return tuple(self.grad_scale)
        return self.recipe_method.grad_scale or (None,)  # the step's own λ

    def resolved(self):
        """These settings with the method's defaults filled in.

        Returns:
            A copy whose `radius` (and, for `s`/`rts`, `grad_scale`, and
            for the controlled methods `base_method`) are the values the
            run uses, so that a saved run does not change meaning when a
            default does. λ stays `None` for the other methods: their λ is
            the method's own (SPEC §1).
        """
        grad_scale = self.method_grad_scale()
        return dataclasses.replace(
            self, radius=self.method_radius(),
            grad_scale=None if grad_scale == (None,) else grad_scale,
            base_method=None if self.recipe_method.step else self.step)


LOCATION_FIELDS = ("data_dir",)
"""Where a run reads its data from: not part of what the run computes."""


def load_settings(folder):
    """The `Settings` of the run in `folder`, from its `settings.json`.

    Fields newer than the run take their defaults. Runs saved before ρ and
    λ were spelt out hold `None` there, which `Settings.resolved` reads as
    today's defaults.
    """
    with open(os.path.join(folder, "settings.json")) as f:
        saved = json.load(f)
    return Settings(**{k: tuple(v) if isinstance(v, list) else v
                       for k, v in saved.items()})


def settings_differences(saved, wanted):
    """The fields in which two `Settings` describe different runs.

    ρ and λ are compared as the runs use them (`Settings.resolved`); the
    data's location (`LOCATION_FIELDS`) is ignored.

    Returns:
        The sorted names of the differing fields.
    """
    a = dataclasses.asdict(saved.resolved())
    b = dataclasses.asdict(wanted.resolved())
    return sorted(k for k in a if k not in LOCATION_FIELDS and a[k] != b[k])


def _error(flag, message):
    return ValueError(f"--{flag.replace('_', '-')}: {message}")


def validate(settings):
    """Checks the settings before any work; raises `ValueError` naming a flag."""
    s = settings
    for name in ("dataset", "method", "model", "radius_shape",
                 "grad_scale_shape", "timing", "strategy", "perturbation",
                 "base_method"):
        choices = Settings.__dataclass_fields__[name].metadata["choices"]
        if getattr(s, name) not in choices and not (
                name == "base_method" and s.base_method is None):
            raise _error(name, f"{getattr(s, name)!r} is not one of "
                         f"{list(choices)}")
    if s.base_method is not None and s.recipe_method.step is not None:
        raise _error("base_method", f"method {s.method} is its own step; "
                     "only r, t, s and rts take a base method")
    if not 0 <= s.label_noise < 1:
        raise _error("label_noise", f"must be in [0, 1), got {s.label_noise}")
    if not 0 < s.lr_fraction < 1:
        raise _error("lr_fraction", f"must be in (0, 1), got {s.lr_fraction}")
    if s.perturb_every != 1 and s.step in ("sgd", "ugd"):
        raise _error("perturb_every", f"method {s.method} never perturbs")
    for name in ("epochs", "batch_size", "variance_k", "gap_xi", "gap_t",
                 "perturb_every"):
        if getattr(s, name) < 1:
            raise _error(name, f"must be ≥ 1, got {getattr(s, name)}")
    if s.sub_batch_size is not None:
        if s.sub_batch_size < 1:
            raise _error("sub_batch_size", f"must be ≥ 1, got {s.sub_batch_size}")
        if s.perturbation == "global":
            raise _error("sub_batch_size", "one ε per sub-batch contradicts "
                         "--perturbation global")
    if s.validation_examples < 0:
        raise _error("validation_examples", "must be ≥ 0")
    for name in ("lr", "momentum", "weight_decay"):
        value = getattr(s, name)
        if not math.isfinite(value) or value < 0:
            raise _error(name, f"must be finite and ≥ 0, got {value}")
    if s.train_examples is not None and s.train_examples < s.batch_size:
        raise _error("train_examples", f"{s.train_examples} is fewer than "
                     f"one batch of {s.batch_size}")
    scheduled = {"radius": "r", "grad_scale": "s"}
    pairs = {"radius": s.method_radius(), "grad_scale": s.method_grad_scale()}
    for name, values in pairs.items():
        wanted = 2 if s.recipe_method.takes(scheduled[name]) else 1
        if len(values) != wanted:
            raise _error(name, f"method {s.method} takes "
                         f"{'first and last values' if wanted == 2 else 'one value'}"
                         f", got {list(values)}")
        for value in values:
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise _error(name, f"must be finite and ≥ 0, got {value}")
    method_plan(s)  # builds the callbacks: checks shapes, orders, epochs
    if s.recipe_method.takes("t") and s.timing == "lr":
        # The recipes' cosine decay falls the same per epoch whatever the
        # steps per epoch: one step an epoch stands for them all.
        try:
            rts_callbacks.lr_start_epoch(learning_rate(s, 1), s.epochs, 1,
                                         s.lr_fraction)
        except ValueError as e:
            raise _error("lr_fraction", str(e)) from None
    if s.strategy == "multiworker" and not os.environ.get("TF_CONFIG"):
        raise _error(
            "strategy", "multiworker reads the cluster from the TF_CONFIG "
            "environment variable, which is not set (see "
            "docs/distributed.md)")
    if s.image_size is not None:
        if s.dataset != "tiny_imagenet":
            raise _error("image_size", "only tiny_imagenet is resized")
        try:
            data_lib.tiny_imagenet.check_image_size(s.image_size)
        except ValueError as e:
            raise _error("image_size", str(e)) from None
    side = s.image_size or (data_lib.tiny_imagenet.IMAGE_SIZE
                            if s.dataset == "tiny_imagenet" else 32)
    if s.cutout >= side:
        raise _error("cutout", f"must be below the image side {side}: a "
                     f"{s.cutout}×{s.cutout} square hides most or all of "
                     "the image (DeVries & Taylor use 16 on 32×32 CIFAR-10)")
    if s.dataset == "tiny_imagenet" and not s.data_dir:
        raise _error("data_dir", "tiny_imagenet needs its folder")


def _trigger(s):
    every = dict(perturb_every=s.perturb_every)
    if s.timing == "variance":
        return rts_callbacks.GradNormVarianceTrigger(
            t0=s.variance_t0, gamma=s.variance_gamma, k=s.variance_k, **every)
    if s.timing == "gap":
        return rts_callbacks.GeneralizationGapTrigger(
            xi=s.gap_xi, mu=s.gap_mu, t=s.gap_t, **every)
    if s.timing == "lr":
        return rts_callbacks.LearningRateTrigger(s.lr_fraction,
                                                 epochs=s.epochs, **every)
    start_fraction = s.start_fraction
    if s.start_epoch is None and start_fraction is None:
        start_fraction = 0.5
    return rts_callbacks.PerturbationWindow(
        s.start_epoch, start_fraction, s.end_epoch, epochs=s.epochs, **every)


TRIGGER_FLAGS = {
    "start_epoch": "start_epoch", "start_fraction": "start_fraction",
    "end_epoch": "end_epoch", "lr_fraction": "lr_fraction",
    "perturb_every": "perturb_every", "t0": "variance_t0",
    "gamma": "variance_gamma", "k": "variance_k", "xi": "gap_xi",
    "mu": "gap_mu", "t": "gap_t"}
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
        raise _error(name, message) from None


def method_plan(s):
    """The `RTSModel` arguments and the callbacks of the settings' method.

    Returns:
        `(model_kwargs, callbacks)`.

    Raises:
        ValueError: naming the flag whose value a callback refuses.
    """
    radius, grad_scale = s.method_radius(), s.method_grad_scale()
    method = s.recipe_method
    kwargs = dict(method=s.step, radius=radius[0], grad_scale=grad_scale[0],
                  weight_decay=s.weight_decay, perturbation=s.perturbation,
                  sub_batch_size=s.sub_batch_size)
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
        elif s.perturb_every != 1:  # interval mode over the whole run
            callbacks.append(rts_callbacks.PerturbationWindow(
                start_epoch=0, epochs=s.epochs,
                perturb_every=s.perturb_every))
    return kwargs, callbacks


class WallClock(keras.callbacks.Callback):
    """Adds the run's cumulative `wall_time` and `cpu_time` to the epoch logs.

    `cpu_time` is the CPU seconds of this process (all its threads), which
    other processes on the machine hardly disturb; `wall_time` is elapsed
    seconds. Both include earlier sessions of a resumed run.

    Args:
        wall_offset: wall seconds spent by earlier sessions of the run.
        cpu_offset: CPU seconds spent by earlier sessions of the run.
    """

    def __init__(self, wall_offset=0.0, cpu_offset=0.0):
        super().__init__()
        self.wall_offset = wall_offset
        self.cpu_offset = cpu_offset

    def on_train_begin(self, logs=None):
        self._wall = time.perf_counter()
        self._cpu = time.process_time()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["wall_time"] = (self.wall_offset + time.perf_counter()
                                 - self._wall)
            logs["cpu_time"] = self.cpu_offset + time.process_time() - self._cpu


def read_history(path):
    """The rows of a run's `history.csv`, as dicts of strings."""
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _write_history(path, rows):
    with open(path, "w", newline="") as f:
        if rows:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


def _backup_epoch(backup_dir):
    """The epoch `BackupAndRestore` resumes from (0 without a backup)."""
    path = os.path.join(backup_dir, "training_metadata.json")
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        return int(json.load(f)["epoch"])


def versions():
    import tensorflow_datasets as tfds

    import keras_rts

    return {"keras_rts": keras_rts.__version__, "keras": keras.__version__,
            "tensorflow": tf.__version__, "tensorflow_datasets":
            tfds.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


def _summary(settings, rows, final, grad_evals):
    has_second_pass = settings.step not in ("sgd", "ugd")
    started = [int(float(r["epoch"])) for r in rows
               if float(r["perturb"]) > 0]
    accuracies = [float(r["val_accuracy"]) for r in rows]
    return {
        "method": settings.method,
        "dataset": settings.dataset,
        "evaluated_on": ("validation" if settings.validation_examples
                         else "test"),
        "seed": settings.seed,
        "settings": dataclasses.asdict(settings.resolved()),
        "final_test_top1": final,
        "best_test_top1": max(accuracies),
        "best_epoch": int(np.argmax(accuracies)),
        "wall_time_seconds": float(rows[-1]["wall_time"]),
        "cpu_time_seconds": float(rows[-1]["cpu_time"]),
        "grad_evals": grad_evals,
        "perturb_start_epoch": (min(started) if started and has_second_pass
                                else None),
        "epochs": len(rows),
        "versions": versions(),
    }


def run(settings, *, output_dir, resume=False, verbose="auto", callbacks=(),
        tensorboard=False):
    """Trains one run and writes its artefacts into `output_dir`.

    Args:
        settings: the run's `Settings`.
        output_dir: the run's folder.
        resume: continue an unfinished run in `output_dir` from its last
            finished epoch.
        verbose: Keras' `fit` verbosity; `"auto"`: a progress bar on a
            terminal, one line per epoch when the output is a file or pipe.
        callbacks: more Keras callbacks for `fit`, run after the run's own.
        tensorboard: also log to TensorBoard, in `output_dir/tensorboard`.

    Returns:
        The summary (also written to `summary.json`).

    Raises:
        ValueError: bad settings, a folder that holds a finished run, an
            unfinished run without `resume`, or settings that differ from
            those of the run being resumed.
    """
    check_run(settings, output_dir, resume)
    if verbose == "auto":  # a bar on a terminal, one line per epoch in a log
        verbose = 1 if sys.stdout.isatty() else 2
    # Before any other TensorFlow work: a multi-worker strategy must be
    # created first. Workers other than the chief write into their own
    # folder, so that nothing is written twice.
    strategy = make_strategy(settings.strategy)
    worker = _worker_index(strategy)
    if worker:
        output_dir = os.path.join(output_dir, f"worker{worker}")
        check_run(settings, output_dir, resume)
    paths = {name: os.path.join(output_dir, name) for name in (
        "settings.json", "history.csv", "summary.json", "curves.png",
        "backup")}
    initial_epoch = _backup_epoch(paths["backup"]) if resume else 0
    rows = [r for r in read_history(paths["history.csv"])
            if int(r["epoch"]) < initial_epoch]
    wall_offset = float(rows[-1]["wall_time"]) if rows else 0.0
    cpu_offset = float(rows[-1]["cpu_time"]) if rows else 0.0

    # The data and the model first: a run that cannot start writes nothing.
    s = settings
    keras.utils.set_random_seed(s.seed)
    train, evaluation = datasets(s, initial_epoch)
    num_classes, input_shape = data_lib.shape(s.dataset, s.data_dir,
                                              s.image_size)
    model_kwargs, method_callbacks = method_plan(s)
    if worker is not None:
        # Every worker reads the same batches and keeps its part of each:
        # the global batch is the one-process batch.
        train, evaluation = (_shard_by_data(d) for d in (train, evaluation))
    with strategy.scope():
        model = RTSModel(models_lib.get(s.model, num_classes, input_shape),
                         **model_kwargs)
        compile_model(model, s, steps_per_epoch(s))

    os.makedirs(output_dir, exist_ok=True)
    with open(paths["settings.json"], "w") as f:
        json.dump(dataclasses.asdict(settings.resolved()), f, indent=2)
    _write_history(paths["history.csv"], rows)
    model.fit(
        train, epochs=s.epochs, steps_per_epoch=steps_per_epoch(s),
        validation_data=evaluation,
        verbose=verbose, shuffle=False,  # the dataset shuffles itself
        # The epoch's CSV row is written before its backup: a run stopped
        # between the two has one row too many, which resuming drops.
        callbacks=method_callbacks + [
            WallClock(wall_offset, cpu_offset),
            keras.callbacks.CSVLogger(paths["history.csv"], append=True),
            keras.callbacks.BackupAndRestore(paths["backup"]),
        ] + ([keras.callbacks.TensorBoard(
            os.path.join(output_dir, "tensorboard"))] if tensorboard else [])
        + list(callbacks),
    )
    rows = read_history(paths["history.csv"])
    _, final = model.evaluate(evaluation, verbose=0)
    summary = _summary(s, rows, float(final), int(model.grad_evals.numpy()))
    summary["replicas"] = strategy.num_replicas_in_sync
    plots.plot_run(rows, paths["curves.png"],
                   title=f"{s.method} on {s.dataset} ({s.model}), seed "
                   f"{s.seed}")
    with open(paths["summary.json"], "w") as f:
        json.dump(summary, f, indent=2)
    return summary


def check_run(settings, output_dir, resume=False):
    """Checks a run before any work: settings, data and output folder.

    Raises:
        ValueError: naming the flag — bad settings, data that is not
            where `data_dir` says, a folder that holds a finished run, an
            unfinished run without `resume`, or one whose settings differ.
    """
    validate(settings)
    check_data(settings)
    if os.path.exists(os.path.join(output_dir, "summary.json")):
        raise _error("output_dir", f"{output_dir} already holds a finished "
                     "run (summary.json); choose another folder — nothing "
                     "was overwritten.")
    started = os.path.exists(os.path.join(output_dir, "settings.json"))
    if started and not resume:
        raise _error("output_dir", f"{output_dir} holds an unfinished run: "
                     "pass --resume to continue it, or choose another "
                     "folder.")
    if started:
        changed = settings_differences(load_settings(output_dir), settings)
        if changed:
            raise _error("resume", f"cannot resume {output_dir}: its "
                         f"settings differ in {changed}.")


def check_data(settings):
    """Checks that the data is there and the sizes fit it; reads no image.

    With `data_dir`, the dataset must be prepared there (nothing is
    downloaded or written); the example counts must fit the dataset.
    """
    s = settings
    try:
        sizes = data_lib.check(s.dataset, s.data_dir)
    except ValueError as e:
        raise _error("data_dir", str(e)) from None
    if sizes is None:
        return  # TFDS' default folder: tfds.load prepares it
    train, test = sizes
    if not s.validation_examples < train:
        raise _error("validation_examples", f"{s.validation_examples} leaves "
                     f"no training image of the {train}")
    available = train - s.validation_examples
    if s.train_examples is not None and s.train_examples > available:
        raise _error("train_examples", f"{s.train_examples} is more than the "
                     f"{available} training images "
                     f"{'left after validation' if s.validation_examples else 'there are'}")
    if (s.train_examples or available) < s.batch_size:
        raise _error("batch_size", f"{s.batch_size} is more than the "
                     f"{s.train_examples or available} training images")
    if s.test_examples is not None and s.test_examples > test:
        raise _error("test_examples", f"{s.test_examples} is more than the "
                     f"{test} test images")


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


def _worker_index(strategy):
    """This worker's index under a multi-worker strategy, else `None`."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return None
    return strategy.cluster_resolver.task_id or 0


def _shard_by_data(dataset):
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA)
    return dataset.with_options(options)


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


def learning_rate(settings, steps):
    """The recipes' learning rate: cosine decay from `lr` to 0 over the run."""
    return keras.optimizers.schedules.CosineDecay(
        settings.lr, settings.epochs * steps)


def compile_model(model, settings, steps):
    """Compiles as every recipe does: SGD with momentum, cosine-decayed lr."""
    s = settings
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate(s, steps),
                                       momentum=s.momentum),
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


# --- command line ---------------------------------------------------------

class RecipeParser(argparse.ArgumentParser):
    """An `argparse` parser whose errors are one line: `<script>: error: …`.

    argparse prints the usage before its errors, and says `argument
    --flag:`; a recipe says `--flag:` and nothing else, exit status 2.
    """

    def error(self, message):
        message = re.sub(r"^argument ([-\w]+)(/[-\w]+)*: ", r"\1: ", message)
        message = re.sub(r"^unrecognized arguments: (\S+).*",
                         r"\1: not a flag of this script (see --help)",
                         message)
        self.exit(2, f"{self.prog}: error: {message}\n")


@contextlib.contextmanager
def flag_errors(parser):
    """Turns a `ValueError` raised inside into the parser's one-line error."""
    try:
        yield
    except ValueError as e:
        parser.error(str(e))


def _number(kind, minimum=None, maximum=None, low_open=False,
            high_open=False):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not {'an integer' if kind is int else 'a number'}"
            ) from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be finite, got {text}")
        too_low = minimum is not None and (
            value <= minimum if low_open else value < minimum)
        too_high = maximum is not None and (
            value >= maximum if high_open else value > maximum)
        if too_low or too_high:
            bounds = (f"{'(' if low_open else '['}{minimum}, "
                      f"{maximum}{')' if high_open else ']'}"
                      if maximum is not None else
                      f"{'>' if low_open else '≥'} {minimum}")
            raise argparse.ArgumentTypeError(
                f"must be {'in ' if maximum is not None else ''}{bounds}, "
                f"got {text}")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in errors
    return parse


positive_int = _number(int, minimum=1)
non_negative_int = _number(int, minimum=0)
non_negative_float = _number(float, minimum=0)


def verbosity(text):
    """Keras `fit` verbosity from a flag: `auto`, 0, 1 or 2."""
    if text == "auto":
        return text
    if text not in ("0", "1", "2"):
        raise argparse.ArgumentTypeError(
            f"must be auto, 0, 1 or 2, got {text!r}")
    return int(text)


FLAG_TYPES = {
    "epochs": positive_int, "batch_size": positive_int,
    "seed": _number(int, minimum=0, maximum=2**32 - 1),
    "lr": _number(float, minimum=0, low_open=True),
    "momentum": _number(float, minimum=0, maximum=1, high_open=True),
    "weight_decay": non_negative_float,
    "train_examples": positive_int, "test_examples": positive_int,
    "validation_examples": non_negative_int, "image_size": positive_int,
    "cutout": non_negative_int, "label_noise": _number(
        float, minimum=0, maximum=1, high_open=True),
    "radius": non_negative_float, "grad_scale": non_negative_float,
    "start_fraction": _number(float, minimum=0, maximum=1, high_open=True),
    "start_epoch": non_negative_int, "end_epoch": positive_int,
    "lr_fraction": _number(float, minimum=0, maximum=1, low_open=True,
                           high_open=True),
    "perturb_every": positive_int, "variance_t0": non_negative_int,
    "variance_gamma": _number(float, minimum=0, low_open=True),
    "variance_k": _number(int, minimum=2), "gap_xi": positive_int,
    "gap_mu": _number(float, minimum=0, low_open=True), "gap_t": positive_int,
    "sub_batch_size": positive_int,
}
"""The flags' parsers: bounds a value can be checked against on its own."""


def argument_parser(description, datasets=data_lib.DATASETS, exclude=(),
                    run_flags=True):
    """The recipes' parser: one flag per `Settings` field, and run flags.

    Args:
        description: the recipe's description.
        datasets: the datasets this recipe offers.
        exclude: `Settings` fields that are not flags of this script.
        run_flags: offer `--output-dir`, `--resume` and `--tensorboard`.
    """
    parser = RecipeParser(
        description=description, allow_abbrev=False,  # --method ≠ --methods
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="paper",
                        help="scale of the run; explicit flags override it "
                        "(default: paper)")
    if run_flags:
        parser.add_argument(
            "--output-dir", default=None,
            help="the run's folder (default: runs/<dataset>_<model>_"
            "<method>_seed<seed>)")
        parser.add_argument("--resume", action="store_true",
                            help="continue the unfinished run in "
                            "--output-dir")
        parser.add_argument("--tensorboard", action="store_true",
                            help="also log to TensorBoard in <output-dir>/"
                            "tensorboard")
    parser.add_argument("--verbose", default="auto", type=verbosity,
                        help="Keras fit verbosity: auto, 0, 1 or 2 (default: "
                        "auto; one line per epoch when the output is not a "
                        "terminal)")
    for field in dataclasses.fields(Settings):
        if field.name in exclude:
            continue
        flag = "--" + field.name.replace("_", "-")
        meta = dict(field.metadata)
        help_text = meta.pop("help")
        if field.name == "dataset":
            meta["choices"] = datasets
            default = datasets[0]
        else:
            default = None  # filled from the preset, then the field default
        if field.type is bool or field.default is False:
            parser.add_argument(flag, action="store_true", help=help_text)
            continue
        kind = FLAG_TYPES.get(field.name, str)
        shown = _default_text(field)
        if shown is not None:
            help_text += f" (default: {shown})"
        parser.add_argument(flag, type=kind, default=default, help=help_text,
                            metavar=field.name.split("_")[-1].upper()
                            if "choices" not in meta else None, **meta)
    return parser


def _default_text(field):
    """The default a flag's help shows, or `None` if the help says it."""
    if "default" in field.metadata["help"]:
        return None
    presets = {name: "all" if p[field.name] is None else p[field.name]
               for name, p in PRESETS.items() if field.name in p}
    if len(set(presets.values())) == 1:
        return str(next(iter(presets.values())))
    if presets:
        return ", ".join(f"{v} with --preset {k}" for k, v in presets.items())
    if field.default is None:
        return None
    return str(field.default)


def settings_from_args(args):
    """`Settings` from parsed flags: explicit flags, then preset, then defaults."""
    preset = PRESETS[args.preset]
    values = {}
    for field in dataclasses.fields(Settings):
        value = getattr(args, field.name, None)
        if value is None:
            value = preset.get(field.name, field.default)
        values[field.name] = tuple(value) if isinstance(value, list) else value
    return Settings(**values)


def settings_to_flags(settings):
    """The recipe flags that give `settings` (with `--preset paper`)."""
    flags = ["--preset", "paper"]
    for field in dataclasses.fields(Settings):
        value = getattr(settings, field.name)
        default = PRESETS["paper"].get(field.name, field.default)
        if value == default or value is None:
            continue
        flag = "--" + field.name.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag)
        elif isinstance(value, (tuple, list)):
            flags += [flag] + [repr(float(v)) for v in value]
        else:
            flags += [flag, repr(value) if isinstance(value, float)
                      else str(value)]
    return flags


def main(argv=None, description=None, datasets=data_lib.DATASETS):
    """Parses the flags and runs: what a recipe script calls.

    Every bad flag value, the data and the output folder are checked
    before anything is written; an error is one line naming the flag
    (exit status 2).
    """
    parser = argument_parser(description, datasets)
    args = parser.parse_args(argv)
    with flag_errors(parser):
        settings = settings_from_args(args)
        output_dir = args.output_dir or os.path.join(
            "runs", f"{settings.dataset}_{settings.model}_"
            f"{settings.method}_seed{settings.seed}")
        check_run(settings, output_dir, resume=args.resume)
    summary = run(settings, output_dir=output_dir, resume=args.resume,
                  verbose=args.verbose, tensorboard=args.tensorboard)
    print(f"{settings.method} on {settings.dataset}: final "
          f"{summary['evaluated_on']} top-1 "
          f"{summary['final_test_top1']:.4f}, best "
          f"{summary['best_test_top1']:.4f}, {summary['grad_evals']} "
          f"gradient evaluations, {summary['wall_time_seconds']:.0f} s; "
          f"artefacts in {output_dir}")
    return summary
