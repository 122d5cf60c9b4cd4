"""Running a run, and its artefacts.

`run(settings, output_dir=...)` trains one run and writes into its folder:

- `settings.json`: the settings, with ρ and λ spelt out
  (`Settings.resolved`), so that the run keeps its meaning when a default
  changes — written once the data and the model are built, so a run that
  cannot start leaves nothing behind;
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

import csv
import dataclasses
import json
import os
import platform
import sys

import keras
import numpy as np

from keras_rts import _extras
from keras_rts import data as data_lib
from keras_rts import models as models_lib
from keras_rts import files, methods, plots, reporting
from keras_rts.benchmarks import Clock
from keras_rts.callbacks.batchnorm import recompute_batchnorm
from keras_rts.experiment.build import (check_data, compile_model, datasets,
                                        make_strategy, method_plan,
                                        shard_by_data, steps_per_epoch,
                                        worker_index)
from keras_rts.experiment.flags import flag_error
from keras_rts.experiment.settings import Settings, load_settings
from keras_rts.experiment.validation import settings_differences, validate
from keras_rts.model import RTSModel

tf = _extras.require("tensorflow", "keras_rts.experiment")


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
    metadata = files.read_json(
        path, f"delete the folder {backup_dir} to resume from the start of "
        "the run instead (its history.csv is kept), or start again in a new "
        "folder")
    if not isinstance(metadata.get("epoch"), int):
        raise ValueError(f"{path} is damaged (no epoch): delete the folder "
                         f"{backup_dir} to resume from the start of the run")
    weights = os.path.join(backup_dir, "latest.weights.h5")
    if os.path.exists(weights):
        import h5py  # Keras' own dependency, for its weight files

        try:
            with h5py.File(weights, "r") as f:
                f.visit(lambda name: None)
        except OSError as e:
            raise ValueError(
                f"{weights} is damaged ({e}): delete the folder {backup_dir} "
                "to resume from the start of the run instead (its "
                "history.csv is kept), or start again in a new folder") \
                from None
    return metadata["epoch"]


class StartError(ValueError):
    """A run refused before anything is written, for a reason only the
    built network can tell (`--exclude-from-perturbation` names that match
    none of its variables, say): one line on the command line."""


def _as_flag(message):
    """`exclude_from_perturbation: …` as `--exclude-from-perturbation: …`."""
    name = message.split(":")[0]
    if name.isidentifier() and name in Settings.__dataclass_fields__:
        return "--" + name.replace("_", "-") + message[len(name):]
    return message


def versions():
    import tensorflow_datasets as tfds

    import keras_rts

    return {"keras_rts": keras_rts.__version__, **reporting.backend_versions(),
            "tensorflow": tf.__version__, "tensorflow_datasets":
            tfds.__version__, "python": platform.python_version()}


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
        "keras_backend": keras.backend.backend(),
        "versions": versions(),
    }


def check_run(settings, output_dir, resume=False):
    """Checks a run before any work: settings, data and output folder.

    Raises:
        ValueError: naming the flag — bad settings, data that is not
            where `data_dir` says, a folder that holds a finished run, an
            unfinished run without `resume`, or one whose settings differ.
    """
    validate(settings)
    check_data(settings)
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise flag_error("output_dir", f"{output_dir} is a file, not a "
                         "folder.")
    existing = os.path.abspath(output_dir)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise flag_error("output_dir", f"cannot write into {existing}.")
    if os.path.exists(os.path.join(output_dir, "summary.json")):
        raise flag_error("output_dir", f"{output_dir} already holds a finished "
                     "run (summary.json); choose another folder — nothing "
                     "was overwritten.")
    started = os.path.exists(os.path.join(output_dir, "settings.json"))
    if resume and not started:
        raise flag_error("resume", f"{output_dir} holds no run to resume (no "
                         "settings.json): check the folder's name, or drop "
                         "--resume to start a new run there.")
    if started and not resume:
        raise flag_error("output_dir", f"{output_dir} holds an unfinished run: "
                     "pass --resume to continue it, or choose another "
                     "folder.")
    if started:
        changed = settings_differences(load_settings(output_dir), settings)
        if changed:
            raise flag_error("resume", f"cannot resume {output_dir}: its "
                         f"settings differ in {changed}.")


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
    worker = worker_index(strategy)
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
        train, evaluation = (shard_by_data(d) for d in (train, evaluation))
    try:
        with strategy.scope():
            model = RTSModel(models_lib.get(s.model, num_classes,
                                            input_shape), **model_kwargs)
            compile_model(model, s, steps_per_epoch(s))
    except ValueError as e:  # what only the network can tell, as a flag's
        raise StartError(_as_flag(str(e))) from None

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
            Clock(wall_offset, cpu_offset),
            keras.callbacks.CSVLogger(paths["history.csv"], append=True),
            keras.callbacks.BackupAndRestore(paths["backup"]),
        ] + ([keras.callbacks.TensorBoard(
            os.path.join(output_dir, "tensorboard"))] if tensorboard else [])
        + list(callbacks),
    )
    rows = read_history(paths["history.csv"])
    _, final = model.evaluate(evaluation, verbose=0)
    as_trained = None
    if not methods.METHODS[s.step].first_pass_at_w and recompute_batchnorm(
            model, train, steps=steps_per_epoch(s)):
        # The one pass gathered BatchNormalization's statistics at w + ε:
        # recomputed at w over one epoch of training batches, as the
        # authors of Momentum-SAM do (docs/method.md); both numbers kept.
        as_trained = float(final)
        _, final = model.evaluate(evaluation, verbose=0)
    summary = _summary(s, rows, float(final), int(model.grad_evals.numpy()))
    if as_trained is not None:
        summary["final_test_top1_batchnorm_as_trained"] = as_trained
    summary["replicas"] = strategy.num_replicas_in_sync
    plots.plot_run(rows, paths["curves.png"],
                   title=f"{s.method} on {s.dataset} ({s.model}), seed "
                   f"{s.seed}")
    with open(paths["summary.json"], "w") as f:
        json.dump(summary, f, indent=2)
    return summary
