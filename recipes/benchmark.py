"""Cost benchmarks, measured as ratios within one process.

    python recipes/benchmark.py step-cost --output docs/benchmarks
    python recipes/benchmark.py pipeline --data-dir DIR --output docs/benchmarks
    python recipes/benchmark.py run-cost --output docs/benchmarks
    python recipes/benchmark.py run-cost --results docs/results/NAME

`pipeline` measures the training input pipeline of the CPU preset (images
a second, from its second epoch on, once the cache is warm) against the
training throughput of the same preset, as a ratio: above 1, the model never
waits on data.

`run-cost` without `--results` times whole short runs of `sgd`, `pugd`,
`t` and `rts` (switching at `--switch-epoch` k of `--epochs` n) in one
process, interleaved, each model traced once beforehand and evaluation
excluded, and sets the measured CPU and wall time against the prediction
`k/n·1 + (1 − k/n)·2` (relative to SGD; half of it relative to PUGD).

`run-cost --results` reads a finished comparison (recipes/compare.py) and sets the
measured cost of each timed run (`t`, `rts`) relative to SGD and PUGD — in
gradient evaluations, CPU and wall time — against the prediction
`k/n·1 + (1 − k/n)·2` for a switch at epoch `k` of `n`.

`step-cost` times training steps of the same network for a plain
`keras.Model` and for `RTSModel` with each method, on one fixed batch (so
that the input pipeline costs nothing), and reports each step's median time
relative to an `sgd` step. The floors are what the methods must pay: two
forward/backward passes for `sam`, `asam` and `pugd` (ratio 2.0), one for
`sgd`, `ugd` and a `perturb=False` step (ratio 1.0 to plain Keras).
"""

import argparse
import dataclasses
import json
import os
import platform
import statistics
import time

import _startup

_startup.quiet_start()

import keras
import numpy as np
import tensorflow as tf

import keras_rts
from keras_rts import reporting

# name: (method, perturb[, sub_batch_size]); None is a plain keras.Model.
STEPS = {
    "keras": None,
    "sgd": ("sgd", True),
    "pugd_perturb_off": ("pugd", False),
    "ugd": ("ugd", True),
    "sam": ("sam", True),
    "asam": ("asam", True),
    "pugd": ("pugd", True),
    "pugd_sub_batch_32": ("pugd", True, 32),
}
RATIOS = [
    # (numerator, denominator, floor)
    ("pugd", "sgd", 2.0),
    ("sam", "sgd", 2.0),
    ("asam", "sgd", 2.0),
    ("ugd", "sgd", 1.0),
    ("sgd", "keras", 1.0),
    ("pugd_perturb_off", "keras", 1.0),
    # Same passes on four sub-batches of 32: what smaller batches cost.
    ("pugd_sub_batch_32", "pugd", 1.0),
]


class StepTimer(keras.callbacks.Callback):
    """Records the wall time of every training step."""

    def __init__(self):
        super().__init__()
        self.times = []

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter() - self._start)


def _build(name, args):
    keras.utils.set_random_seed(0)
    net = getattr(keras_rts.models, args.model)(
        num_classes=10, input_shape=(32, 32, 3))
    spec = STEPS[name]
    model = net if spec is None else keras_rts.RTSModel(
        net, method=spec[0], perturb=spec[1],
        sub_batch_size=spec[2] if len(spec) > 2 else None)
    model.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        # "auto": graph mode on TensorFlow (CPU), compiled on JAX.
        jit_compile=True if args.jit_compile else "auto",
    )
    return model


def step_cost(args):
    rng = np.random.default_rng(0)
    batch = (rng.normal(size=(args.batch_size, 32, 32, 3)).astype("float32"),
             rng.integers(0, 10, size=args.batch_size).astype("int32"))
    data = tf.data.Dataset.from_tensors(batch).repeat()
    models = {name: _build(name, args) for name in STEPS}
    for model in models.values():  # trace and warm up
        model.fit(data, steps_per_epoch=3, epochs=1, verbose=0,
                  shuffle=False)
    times = {name: [] for name in STEPS}
    names = list(STEPS)
    for round_ in range(args.rounds):
        # Rotate the order so that no step always runs first or last.
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            timer = StepTimer()
            models[name].fit(data, steps_per_epoch=args.steps, epochs=1,
                             verbose=0, shuffle=False, callbacks=[timer])
            times[name].extend(timer.times)
    median = {name: statistics.median(t) for name, t in times.items()}
    result = {
        "command": "python recipes/benchmark.py step-cost " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in sorted(vars(args).items())
            if k not in ("command", "output", "jit_compile", "run")
        ) + (" --jit-compile" if args.jit_compile else ""),
        "machine": _machine(),
        "median_step_seconds": median,
        "ratios": [
            {"step": a, "relative_to": b, "ratio": median[a] / median[b],
             "floor": floor, "overhead": median[a] / median[b] / floor - 1}
            for a, b, floor in RATIOS
        ],
    }
    lines = [
        f"Step cost of `{args.model}` on Keras' {keras.backend.backend()} "
        f"backend, batch {args.batch_size}, "
        f"{'XLA' if args.jit_compile else 'compiled'} mode; median of "
        f"{args.rounds}×{args.steps} steps each.",
        "",
        "| step | relative to | ratio | floor | overhead beyond floor |",
        "|---|---|---|---|---|",
    ] + [
        f"| {r['step']} | {r['relative_to']} | {r['ratio']:.3f} | "
        f"{r['floor']:.1f} | {100 * r['overhead']:+.1f}% |"
        for r in result["ratios"]
    ] + [
        "",
        "Median seconds per step: " + ", ".join(
            f"{k} {v * 1000:.1f} ms" for k, v in median.items()) + ".",
        "",
        f"Command: `{result['command']}`",
        f"Machine: {reporting.describe_machine(result['machine'])}",
    ]
    table = "\n".join(lines)
    print(table)
    # TensorFlow's file keeps its name; other backends are named.
    backend = keras.backend.backend()
    _write(args.output,
           f"step_cost_{args.model}{'_xla' if args.jit_compile else ''}"
           f"{'' if backend == 'tensorflow' else '_' + backend}",
           result, table)


def _machine():
    return {**reporting.machine(), "python": platform.python_version(),
            "tensorflow": tf.__version__, "keras": keras.__version__,
            "keras_backend": keras.backend.backend()}


def pipeline(args):
    from keras_rts import data, experiment

    settings = experiment.settings_from_args(
        experiment.argument_parser("").parse_args(
            ["--preset", "cpu", "--dataset", args.dataset]
            + (["--data-dir", args.data_dir] if args.data_dir else [])))
    s = settings
    steps = s.train_examples // s.batch_size
    train = data.load(s.dataset, "train", data_dir=s.data_dir,
                      batch_size=s.batch_size,
                      train_examples=s.train_examples, epochs=3)
    iterator = iter(train)
    for _ in range(steps):  # epoch 0 fills the cache
        next(iterator)
    start = time.perf_counter()
    for _ in range(2 * steps):
        next(iterator)
    data_rate = 2 * steps * s.batch_size / (time.perf_counter() - start)

    num_classes, input_shape = data.shape(s.dataset, s.data_dir)
    batch = next(iter(train))
    fixed = tf.data.Dataset.from_tensors(batch).repeat()
    rates = {}
    for method in ("sgd", "pugd"):
        keras.utils.set_random_seed(0)
        model = keras_rts.RTSModel(
            keras_rts.models.get(s.model, num_classes, input_shape),
            method=method)
        model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                      loss=keras.losses.SparseCategoricalCrossentropy(True))
        model.fit(fixed, steps_per_epoch=3, verbose=0, shuffle=False)
        timer = StepTimer()
        model.fit(fixed, steps_per_epoch=args.steps, verbose=0,
                  shuffle=False, callbacks=[timer])
        rates[method] = s.batch_size / statistics.median(timer.times)
    result = {
        "command": f"python recipes/benchmark.py pipeline --dataset "
                   f"{args.dataset} --steps {args.steps}"
                   + (" --data-dir DIR" if args.data_dir else ""),
        "machine": _machine(),
        "preset": dataclasses.asdict(s),
        "pipeline_images_per_second": data_rate,
        "training_images_per_second": rates,
        "ratio_pipeline_to_training": {
            m: data_rate / r for m, r in rates.items()},
    }
    table = "\n".join([
        f"Input pipeline against training, CPU preset ({s.model}, "
        f"{s.dataset}, batch {s.batch_size}, {s.train_examples} images).",
        "",
        "| | images/s | pipeline ÷ training |",
        "|---|---|---|",
        f"| input pipeline (warm cache, augmentation on) | {data_rate:.0f} |"
        " |",
    ] + [f"| training step, {m} | {r:.0f} | {data_rate / r:.1f} |"
         for m, r in rates.items()] + [
        "",
        f"Command: `{result['command']}`",
        f"Machine: {reporting.describe_machine(result['machine'])}",
    ])
    print(table)
    _write(args.output, f"pipeline_{args.dataset}", result, table)


def run_cost(args):
    if not args.results:
        return measure_run_cost(args)
    with open(os.path.join(args.results, "results.json")) as f:
        results = json.load(f)
    runs = results["runs"]
    missing = [m for m in ("sgd", "pugd") if m not in runs]
    if missing:
        raise SystemExit(f"run-cost needs the sgd and pugd runs; missing "
                         f"{missing} in {args.results}")

    def mean(method, key):
        return statistics.mean(s[key] for s in runs[method])

    lines = [
        "| run | switch epoch k of n | predicted ÷ sgd | evals ÷ sgd | "
        "CPU time ÷ sgd | wall time ÷ sgd | evals ÷ pugd | CPU time ÷ pugd |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rows = []
    for method in runs:
        for summary in runs[method]:
            k, n = summary["perturb_start_epoch"], summary["epochs"]
            if method in ("sgd", "pugd") or k is None:
                continue
            row = {
                "method": method, "seed": summary["seed"], "k": k, "n": n,
                "predicted": k / n + 2 * (1 - k / n),
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
            }
            rows.append(row)
            lines.append(
                f"| {method} seed {row['seed']} | {k} of {n} | "
                f"{row['predicted']:.3f} | {row['evals_vs_sgd']:.3f} | "
                f"{row['cpu_vs_sgd']:.3f} | {row['wall_vs_sgd']:.3f} | "
                f"{row['evals_vs_pugd']:.3f} | {row['cpu_vs_pugd']:.3f} |")
    table = "\n".join(lines + ["", f"From `{args.results}/results.json`; "
                                "command: `python recipes/benchmark.py "
                                f"run-cost --results {args.results}`."])
    print(table)
    _write(args.output, "run_cost", {"rows": rows}, table)


class TrainingClock(keras.callbacks.Callback):
    """CPU and wall seconds of training, evaluation excluded."""

    def on_train_begin(self, logs=None):
        self.cpu, self.wall = time.process_time(), time.perf_counter()

    def on_train_end(self, logs=None):
        self.cpu = time.process_time() - self.cpu
        self.wall = time.perf_counter() - self.wall


def measure_run_cost(args):
    """Whole short runs of sgd, pugd and t/rts in one process, interleaved."""
    from keras_rts import experiment

    n, k = args.epochs, args.switch_epoch
    if not 0 < k < n:
        raise SystemExit("--switch-epoch must be between 0 and --epochs")
    rng = np.random.default_rng(0)
    images = rng.normal(size=(args.examples, 32, 32, 3)).astype("float32")
    labels = rng.integers(0, 10, size=args.examples).astype("int32")
    methods = ("sgd", "pugd", "t", "rts")

    def build(method):
        settings = experiment.Settings(method=method, epochs=n,
                                       start_epoch=k, model=args.model)
        kwargs, callbacks = experiment.method_plan(settings)
        keras.utils.set_random_seed(0)
        model = keras_rts.RTSModel(
            keras_rts.models.get(args.model, 10, (32, 32, 3)), **kwargs)
        experiment.compile_model(model, settings, args.examples // 128)
        return model, callbacks

    def fit(method, epochs):
        model, callbacks = models[method]
        clock = TrainingClock()
        before = int(model.grad_evals.numpy())
        model.fit(images, labels, batch_size=128, epochs=epochs,
                  shuffle=False, verbose=0, callbacks=callbacks + [clock])
        return clock, int(model.grad_evals.numpy()) - before

    # Each model is built and traced once (a warm-up run), then timed on
    # whole runs: the callbacks set ρ, λ and the switch epoch by epoch.
    models = {m: build(m) for m in methods}
    for method in methods:
        fit(method, 1)
    cpu = {m: [] for m in methods}
    wall = {m: [] for m in methods}
    evals = {}
    for round_ in range(args.rounds):
        shift = round_ % len(methods)
        for method in methods[shift:] + methods[:shift]:
            clock, evals[method] = fit(method, n)
            cpu[method].append(clock.cpu)
            wall[method].append(clock.wall)
    median_cpu = {m: statistics.median(t) for m, t in cpu.items()}
    median_wall = {m: statistics.median(t) for m, t in wall.items()}
    predicted = {"sgd": 1.0, "pugd": 2.0, "t": k / n + 2 * (1 - k / n),
                 "rts": k / n + 2 * (1 - k / n)}
    rows = [{"method": m, "predicted_vs_sgd": predicted[m],
             "evals_vs_sgd": evals[m] / evals["sgd"],
             "cpu_vs_sgd": median_cpu[m] / median_cpu["sgd"],
             "wall_vs_sgd": median_wall[m] / median_wall["sgd"],
             "predicted_vs_pugd": predicted[m] / 2.0,
             "cpu_vs_pugd": median_cpu[m] / median_cpu["pugd"],
             "wall_vs_pugd": median_wall[m] / median_wall["pugd"]}
            for m in methods]
    command = (f"python recipes/benchmark.py run-cost --epochs {n} "
               f"--switch-epoch {k} --examples {args.examples} --rounds "
               f"{args.rounds} --model {args.model}")
    lines = [
        f"Whole training runs (evaluation excluded) of `{args.model}`, "
        f"{args.examples} images, batch 128, {n} epochs, `t`/`rts` switching "
        f"to PUGD at epoch {k}; median of {args.rounds} interleaved runs "
        "each, in one process.",
        "",
        "| run | predicted ÷ sgd | evals ÷ sgd | CPU ÷ sgd | wall ÷ sgd | "
        "predicted ÷ pugd | CPU ÷ pugd | wall ÷ pugd |",
        "|---|---|---|---|---|---|---|---|",
    ] + [
        f"| {r['method']} | {r['predicted_vs_sgd']:.3f} | "
        f"{r['evals_vs_sgd']:.3f} | {r['cpu_vs_sgd']:.3f} | "
        f"{r['wall_vs_sgd']:.3f} | {r['predicted_vs_pugd']:.3f} | "
        f"{r['cpu_vs_pugd']:.3f} | {r['wall_vs_pugd']:.3f} |" for r in rows
    ] + ["", f"Command: `{command}`",
         f"Machine: {reporting.describe_machine(_machine())}"]
    table = "\n".join(lines)
    print(table)
    _write(args.output, f"run_cost_{args.model}",
           {"command": command, "machine": _machine(), "rows": rows,
            "cpu_seconds": cpu, "wall_seconds": wall, "grad_evals": evals},
           table)


def _write(folder, stem, result, table):
    if not folder:
        return
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, stem + ".json"), "w") as f:
        json.dump(result, f, indent=2)
    with open(os.path.join(folder, stem + ".md"), "w") as f:
        f.write(table + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    cost = commands.add_parser("step-cost", help="time one step per method")
    cost.add_argument("--model", default="small_resnet",
                      choices=["small_resnet", "resnet18"])
    cost.add_argument("--batch-size", type=int, default=128)
    cost.add_argument("--steps", type=int, default=10,
                      help="steps timed per method and round")
    cost.add_argument("--rounds", type=int, default=5)
    cost.add_argument("--jit-compile", action="store_true")
    cost.add_argument("--output", default=None,
                      help="folder for the JSON and markdown results")
    cost.set_defaults(run=step_cost)
    feed = commands.add_parser("pipeline",
                               help="input pipeline against training")
    feed.add_argument("--dataset", default="cifar10",
                      choices=["cifar10", "cifar100", "tiny_imagenet"])
    feed.add_argument("--data-dir", default=None)
    feed.add_argument("--steps", type=int, default=20)
    feed.add_argument("--output", default=None)
    feed.set_defaults(run=pipeline)
    whole = commands.add_parser("run-cost",
                                help="whole-run cost against prediction")
    whole.add_argument("--results", default=None,
                       help="a recipes/compare.py output folder to read; "
                       "without it, time short runs of sgd, pugd, t, rts")
    whole.add_argument("--epochs", type=int, default=8)
    whole.add_argument("--switch-epoch", type=int, default=4)
    whole.add_argument("--examples", type=int, default=1280)
    whole.add_argument("--rounds", type=int, default=3)
    whole.add_argument("--model", default="small_resnet",
                       choices=["small_resnet", "resnet18"])
    whole.add_argument("--output", default=None)
    whole.set_defaults(run=run_cost)
    args = parser.parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    main()
