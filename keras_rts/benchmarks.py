"""Cost measurements, as ratios within one process; and the one clock.

- `Clock`: the Keras callback every timing uses — each step's wall time,
  the whole fit's wall and CPU time, and the cumulative `wall_time` and
  `cpu_time` in the epoch logs (what a run's history records).
- `step_cost`: one training step of each method against an `sgd` step
  and a plain `keras.Model` step, on one fixed batch (the input pipeline
  costs nothing).
- `device_step_cost`: the same on an accelerator, over dtype policies,
  networks and batch sizes, each step waited for (steps run
  asynchronously there), with images a second.
- `pipeline_rate`: images a second of a recipe's training pipeline (warm
  cache) against training's.
- `run_cost`: whole short runs of `sgd`, `pugd`, `t` and `rts`,
  interleaved, against the prediction `k/n·1 + (1 − k/n)·2`.
- `run_cost_of_results`: the same ratios read off a finished comparison.

Each returns a JSON-able dict; `recipes/benchmark.py` writes them, with
their tables (`keras_rts.reporting.markdown_table`).
"""

import platform
import statistics
import time

import keras
import numpy as np

from keras_rts import models as models_lib
from keras_rts import reporting
from keras_rts.model import RTSModel


class Clock(keras.callbacks.Callback):
    """Wall and CPU time of a fit: per step, in total, and in the epoch logs.

    `cpu_time` is the CPU seconds of this process (all its threads), which
    other processes on the machine hardly disturb; `wall_time` is elapsed
    seconds. In the epoch logs both are cumulative and include
    `wall_offset`/`cpu_offset` (earlier sessions of a resumed run).

    Attributes:
        step_seconds: the wall time of every training step.
        wall, cpu: the fit's wall and CPU seconds, once training ends.

    Args:
        wall_offset: wall seconds spent by earlier sessions of the run.
        cpu_offset: CPU seconds spent by earlier sessions of the run.
        log: add `wall_time` and `cpu_time` to the epoch logs.
    """

    def __init__(self, wall_offset=0.0, cpu_offset=0.0, log=True):
        super().__init__()
        self.wall_offset = wall_offset
        self.cpu_offset = cpu_offset
        self.log = log
        self.step_seconds = []

    def on_train_begin(self, logs=None):
        self._wall = time.perf_counter()
        self._cpu = time.process_time()

    def on_train_batch_begin(self, batch, logs=None):
        self._step = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.step_seconds.append(time.perf_counter() - self._step)

    def on_epoch_end(self, epoch, logs=None):
        if self.log and logs is not None:
            logs["wall_time"] = (self.wall_offset + time.perf_counter()
                                 - self._wall)
            logs["cpu_time"] = self.cpu_offset + time.process_time() - self._cpu

    def on_train_end(self, logs=None):
        self.wall = time.perf_counter() - self._wall
        self.cpu = time.process_time() - self._cpu


def machine():
    """Where the numbers were measured: processor, cores, accelerators and
    the libraries (the Keras backend's among them)."""
    return {**reporting.machine(), "python": platform.python_version(),
            **reporting.backend_versions(),
            "keras_backend": keras.backend.backend(),
            "devices": reporting.devices()}


def fixed_batches(batch, on_device=False):
    """The same batch for every step, so that the input pipeline costs
    nothing: a `tf.data` dataset on TensorFlow, a generator elsewhere (no
    TensorFlow needed), of tensors already on the device if `on_device`
    (then no step copies its batch from the host)."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.data.Dataset.from_tensors(batch).repeat()
    if on_device:
        batch = tuple(keras.ops.convert_to_tensor(part) for part in batch)

    def repeat():
        while True:
            yield batch

    return repeat()


# --- one step -------------------------------------------------------------

STEPS = {
    "keras": None,
    "sgd": ("sgd", True),
    "pugd_perturb_off": ("pugd", False),
    "ugd": ("ugd", True),
    "sam": ("sam", True),
    "asam": ("asam", True),
    "pugd": ("pugd", True),
    "pugd_sub_batch_32": ("pugd", True, 32),
    "msam": ("msam", True),
}
"""The steps timed: `(method, perturb[, sub_batch_size])`; `None` is a
plain `keras.Model`."""

RATIOS = [
    # (numerator, denominator, floor)
    ("pugd", "sgd", 2.0),
    ("sam", "sgd", 2.0),
    ("asam", "sgd", 2.0),
    ("ugd", "sgd", 1.0),
    ("sgd", "keras", 1.0),
    ("pugd_perturb_off", "keras", 1.0),
    # One pass a step, at w + ε from the momentum: SGD's cost.
    ("msam", "keras", 1.0),
    # Same passes on four sub-batches of 32: what smaller batches cost.
    ("pugd_sub_batch_32", "pugd", 1.0),
]
"""The ratios reported, each with the floor the method must pay."""


def _step_model(name, model, jit_compile, shape=(32, 32, 3)):
    keras.utils.set_random_seed(0)
    net = models_lib.get(model, 10, shape)
    spec = STEPS[name]
    built = net if spec is None else RTSModel(
        net, method=spec[0], perturb=spec[1],
        sub_batch_size=spec[2] if len(spec) > 2 else None)
    built.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        # "auto": graph mode on TensorFlow (CPU), compiled on JAX.
        jit_compile=True if jit_compile else "auto",
    )
    return built


def step_cost(model="small_resnet", batch_size=128, steps=10, rounds=5,
              jit_compile=False):
    """Median step time of each of `STEPS`, and the `RATIOS` between them.

    Every model is traced and warmed up first; then `rounds` rounds time
    `steps` steps of each, the order rotated so that none always runs
    first or last.

    Returns:
        `{"median_step_seconds": {name: s}, "ratios": [{"step",
        "relative_to", "ratio", "floor", "overhead"}], "machine"}`.
    """
    data = fixed_batches(_random_batch(batch_size))
    built = {name: _step_model(name, model, jit_compile) for name in STEPS}
    median = _median_steps(built, data, steps, rounds)
    return {"machine": machine(), "median_step_seconds": median,
            "ratios": _ratios(median, RATIOS)}


def _random_batch(batch_size, image_size=32):
    """Random images and 10-class labels, the same for a seed-0 size."""
    rng = np.random.default_rng(0)
    shape = (batch_size, image_size, image_size, 3)
    return (rng.normal(size=shape).astype("float32"),
            rng.integers(0, 10, size=batch_size).astype("int32"))


def _median_steps(built, data, steps, rounds):
    """`{name: median step seconds}` of compiled models: each warmed up,
    then `rounds` rounds of `steps` steps, the order rotated each round so
    that none always runs first or last."""
    for each in built.values():
        each.fit(data, steps_per_epoch=3, epochs=1, verbose=0, shuffle=False)
    times = {name: [] for name in built}
    names = list(built)
    for round_ in range(rounds):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            clock = Clock(log=False)
            built[name].fit(data, steps_per_epoch=steps, epochs=1, verbose=0,
                            shuffle=False, callbacks=[clock])
            times[name].extend(clock.step_seconds)
    return {name: statistics.median(t) for name, t in times.items()}


MODEL_COSTS = {
    "small_resnet": (lambda: models_lib.small_resnet(10, (32, 32, 3)), "sgd"),
    "vit": (lambda: models_lib.vit(10), "adamw"),
    "vit_4_heads": (lambda: models_lib.vit(10, heads=4), "adamw"),
    "vit_depth_6": (lambda: models_lib.vit(10, depth=6), "adamw"),
}
"""The networks `model_cost` times, each with the optimizer its recipes
train it with: the small ResNet with SGD, the ViT (its default, and with
4 heads of 32 or 6 blocks) with AdamW."""


def model_cost(batch_size=128, steps=10, rounds=5):
    """Median plain Keras training step of each of `MODEL_COSTS`, relative
    to the small ResNet's: what a run of the same length costs on each.

    Timed as `step_cost` times methods (`_median_steps`).

    Returns:
        `{"median_step_seconds": {name: s}, "ratios": {name: ÷ small_resnet},
        "parameters": {name: n}, "machine"}`.
    """
    data = fixed_batches(_random_batch(batch_size))
    built = {}
    for name, (build, optimizer) in MODEL_COSTS.items():
        keras.utils.set_random_seed(0)
        built[name] = build()
        # The recipes' optimizers (keras_rts.experiment.compile_model, not
        # called: it needs TensorFlow's data stack, this does not).
        built[name].compile(
            optimizer=keras.optimizers.SGD(0.01, momentum=0.9)
            if optimizer == "sgd" else keras.optimizers.AdamW(1e-3, 0.05),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    median = _median_steps(built, data, steps, rounds)
    names = list(built)
    return {"machine": machine(), "median_step_seconds": median,
            "ratios": {n: median[n] / median["small_resnet"] for n in names},
            "parameters": {n: built[n].count_params() for n in names}}


def _ratios(median, ratios):
    return [{"step": a, "relative_to": b, "ratio": median[a] / median[b],
             "floor": floor, "overhead": median[a] / median[b] / floor - 1}
            for a, b, floor in ratios]


# --- the step on an accelerator ------------------------------------------

DEVICE_STEPS = {name: STEPS[name] for name in (
    "keras", "sgd", "pugd_perturb_off", "sam", "pugd", "pugd_sub_batch_32",
    "msam")}
"""The steps `device_step_cost` times (of `STEPS`)."""

DEVICE_RATIOS = [r for r in RATIOS
                 if r[0] in DEVICE_STEPS and r[1] in DEVICE_STEPS]

DEVICE_GRID = dict(policies=("float32", "mixed_bfloat16"),
                   models=("small_resnet", "resnet18"),
                   batch_sizes=(128, 512))
"""What the GPU check measures, in this order (most wanted first)."""


def _timed_fit(model, data, steps):
    """Seconds a step over `fit` of `steps` steps, waiting for the last
    one: an accelerator runs steps asynchronously, so the time between
    callbacks is the host's, not the step's."""
    start = time.perf_counter()
    model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0,
              shuffle=False)
    keras.ops.convert_to_numpy(model.trainable_variables[0])
    return (time.perf_counter() - start) / steps


def _device_point(model, batch_size, image_size, steps, rounds):
    """One model, batch size and (current) dtype policy: every
    `DEVICE_STEPS` step built, each phase compiled and warmed up, then
    `rounds` interleaved rounds of `steps` steps each."""
    shape = (image_size, image_size, 3)
    data = fixed_batches(_random_batch(batch_size, image_size),
                         on_device=True)
    # XLA on TensorFlow and JAX; PyTorch eager, as Keras' default there
    # (torch.compile of every phase would not fit the time).
    jit_compile = keras.backend.backend() != "torch"
    built = {name: _step_model(name, model, jit_compile, shape)
             for name in DEVICE_STEPS}
    for each in built.values():
        _timed_fit(each, data, 2)  # compiles
    times = {name: [] for name in built}
    names = list(built)
    for round_ in range(rounds):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(_timed_fit(built[name], data, steps))
    median = {name: statistics.median(t) for name, t in times.items()}
    return {
        "model": model, "batch_size": batch_size,
        "policy": keras.config.dtype_policy().name,
        "median_step_seconds": median,
        "images_per_second": {n: batch_size / t for n, t in median.items()},
        "ratios": _ratios(median, DEVICE_RATIOS),
    }


def device_step_cost(policies=DEVICE_GRID["policies"],
                     models=DEVICE_GRID["models"],
                     batch_sizes=DEVICE_GRID["batch_sizes"], image_size=32,
                     steps=20, rounds=3, budget_seconds=None):
    """The step cost of `DEVICE_STEPS` on the device Keras trains on, over
    a grid of dtype policies × networks × batch sizes, synthetic data
    already on the device (no input pipeline, no download).

    Points run in the grid's order; once `budget_seconds` have passed, the
    rest are listed as skipped rather than measured (the first point is
    always measured).

    Returns:
        `{"points": [see `_device_point`], "skipped": [{"policy", "model",
        "batch_size"}], "seconds", "machine"}`.
    """
    start = time.perf_counter()
    points, skipped = [], []
    for policy in policies:
        for model in models:
            for batch_size in batch_sizes:
                where = dict(policy=policy, model=model,
                             batch_size=batch_size)
                if (points and budget_seconds is not None
                        and time.perf_counter() - start > budget_seconds):
                    skipped.append(where)
                    continue
                keras.config.set_dtype_policy(policy)
                try:
                    points.append(_device_point(model, batch_size,
                                                image_size, steps, rounds))
                finally:
                    keras.config.set_dtype_policy("float32")
                    keras.utils.clear_session()
    return {"points": points, "skipped": skipped,
            "seconds": time.perf_counter() - start, "machine": machine()}


# --- the input pipeline ---------------------------------------------------

def pipeline_rate(settings, steps=20):
    """Images a second of the training pipeline (warm cache) and training.

    Args:
        settings: a recipe's `keras_rts.experiment.Settings`.
        steps: training steps timed per method.

    Returns:
        `{"pipeline_images_per_second", "training_images_per_second":
        {method: rate}, "ratio_pipeline_to_training", "machine"}`.
    """
    from keras_rts import data as data_lib

    s = settings
    per_epoch = s.train_examples // s.batch_size
    train = data_lib.load(s.dataset, "train", data_dir=s.data_dir,
                          batch_size=s.batch_size,
                          train_examples=s.train_examples, epochs=3)
    iterator = iter(train)
    for _ in range(per_epoch):  # epoch 0 fills the cache
        next(iterator)
    start = time.perf_counter()
    for _ in range(2 * per_epoch):
        next(iterator)
    data_rate = 2 * per_epoch * s.batch_size / (time.perf_counter() - start)

    num_classes, input_shape = data_lib.shape(s.dataset, s.data_dir)
    fixed = fixed_batches(next(iter(train)))
    rates = {}
    for method in ("sgd", "pugd"):
        keras.utils.set_random_seed(0)
        model = RTSModel(models_lib.get(s.model, num_classes, input_shape),
                         method=method)
        model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                      loss=keras.losses.SparseCategoricalCrossentropy(True))
        model.fit(fixed, steps_per_epoch=3, verbose=0, shuffle=False)
        clock = Clock(log=False)
        model.fit(fixed, steps_per_epoch=steps, verbose=0, shuffle=False,
                  callbacks=[clock])
        rates[method] = s.batch_size / statistics.median(clock.step_seconds)
    return {
        "machine": machine(),
        "pipeline_images_per_second": data_rate,
        "training_images_per_second": rates,
        "ratio_pipeline_to_training": {
            m: data_rate / r for m, r in rates.items()},
    }


# --- whole runs -----------------------------------------------------------

def predicted_cost(switch_epoch, epochs):
    """Passes of a run switching from SGD to PUGD at `switch_epoch`, ÷ SGD's."""
    k, n = switch_epoch, epochs
    return k / n + 2 * (1 - k / n)


def run_cost(epochs=8, switch_epoch=4, examples=1280, rounds=3,
             model="small_resnet"):
    """Whole short runs of sgd, pugd, t and rts, in one process, interleaved.

    Each model is built and traced once (a warm-up epoch), then timed on
    whole runs (evaluation excluded); the callbacks set ρ, λ and the switch
    epoch by epoch.

    Returns:
        `{"rows": [{"method", "predicted_vs_sgd", "evals_vs_sgd",
        "cpu_vs_sgd", "wall_vs_sgd", "predicted_vs_pugd", "cpu_vs_pugd",
        "wall_vs_pugd"}], "cpu_seconds", "wall_seconds", "grad_evals",
        "machine"}`.
    """
    from keras_rts import experiment

    n, k = epochs, switch_epoch
    if not 0 < k < n:
        raise ValueError(f"--switch-epoch: must be in (0, --epochs={n}), "
                         f"got {k}")
    images, labels = _random_batch(examples)
    methods = ("sgd", "pugd", "t", "rts")

    def build(method):
        settings = experiment.Settings(method=method, epochs=n,
                                       start_epoch=k, model=model)
        kwargs, callbacks = experiment.method_plan(settings)
        keras.utils.set_random_seed(0)
        built = RTSModel(models_lib.get(model, 10, (32, 32, 3)), **kwargs)
        experiment.compile_model(built, settings, examples // 128)
        return built, callbacks

    def fit(method, fit_epochs):
        built, callbacks = models[method]
        clock = Clock(log=False)
        before = int(built.grad_evals.numpy())
        built.fit(images, labels, batch_size=128, epochs=fit_epochs,
                  shuffle=False, verbose=0, callbacks=callbacks + [clock])
        return clock, int(built.grad_evals.numpy()) - before

    models = {m: build(m) for m in methods}
    for method in methods:
        fit(method, 1)
    cpu = {m: [] for m in methods}
    wall = {m: [] for m in methods}
    evals = {}
    for round_ in range(rounds):
        shift = round_ % len(methods)
        for method in methods[shift:] + methods[:shift]:
            clock, evals[method] = fit(method, n)
            cpu[method].append(clock.cpu)
            wall[method].append(clock.wall)
    median_cpu = {m: statistics.median(t) for m, t in cpu.items()}
    median_wall = {m: statistics.median(t) for m, t in wall.items()}
    predicted = {"sgd": 1.0, "pugd": 2.0, "t": predicted_cost(k, n),
                 "rts": predicted_cost(k, n)}
    rows = [{"method": m, "predicted_vs_sgd": predicted[m],
             "evals_vs_sgd": evals[m] / evals["sgd"],
             "cpu_vs_sgd": median_cpu[m] / median_cpu["sgd"],
             "wall_vs_sgd": median_wall[m] / median_wall["sgd"],
             "predicted_vs_pugd": predicted[m] / 2.0,
             "cpu_vs_pugd": median_cpu[m] / median_cpu["pugd"],
             "wall_vs_pugd": median_wall[m] / median_wall["pugd"]}
            for m in methods]
    return {"machine": machine(), "rows": rows, "cpu_seconds": cpu,
            "wall_seconds": wall, "grad_evals": evals}


def run_cost_of_results(results):
    """The timed runs (`t`, `rts`, …) of a comparison against the prediction.

    Args:
        results: a comparison's `results.json`, loaded.

    Returns:
        One row per timed run: `method`, `seed`, `k`, `n`, `predicted`,
        and its gradient evaluations, CPU and wall time ÷ the mean of SGD's
        and PUGD's runs.

    Raises:
        ValueError: without the sgd and pugd runs, or without a run that
            switches (nothing to compare with the prediction).
    """
    runs = results["runs"]
    missing = [m for m in ("sgd", "pugd") if m not in runs]
    if missing:
        raise ValueError(f"run-cost needs the sgd and pugd runs; missing "
                         f"{missing}")

    def mean(method, key):
        return statistics.mean(s[key] for s in runs[method])

    rows = []
    for method in runs:
        for summary in runs[method]:
            k, n = summary["perturb_start_epoch"], summary["epochs"]
            if method in ("sgd", "pugd") or k is None:
                continue
            rows.append({
                "method": method, "seed": summary["seed"], "k": k, "n": n,
                "predicted": predicted_cost(k, n),
                "evals_vs_sgd": summary["grad_evals"] / mean("sgd",
                                                             "grad_evals"),
                "cpu_vs_sgd": summary["cpu_time_seconds"]
                / mean("sgd", "cpu_time_seconds"),
                "wall_vs_sgd": summary["wall_time_seconds"]
                / mean("sgd", "wall_time_seconds"),
                "evals_vs_pugd": summary["grad_evals"] / mean("pugd",
                                                              "grad_evals"),
                "cpu_vs_pugd": summary["cpu_time_seconds"]
                / mean("pugd", "cpu_time_seconds"),
            })
    if not rows:
        raise ValueError(
            f"run-cost compares runs that switch the perturbation on (t, "
            f"rts, …) with the prediction; the comparison holds "
            f"{sorted(runs)}, none of which switches")
    return rows
