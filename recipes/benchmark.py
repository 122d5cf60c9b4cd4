"""Cost benchmarks, measured as ratios within one process.

    python recipes/benchmark.py step-cost --output docs/benchmarks

`step-cost` times training steps of the same network for a plain
`keras.Model` and for `RTSModel` with each method, on one fixed batch (so
that the input pipeline costs nothing), and reports each step's median time
relative to an `sgd` step. The floors are what the methods must pay: two
forward/backward passes for `sam`, `asam` and `pugd` (ratio 2.0), one for
`sgd`, `ugd` and a `perturb=False` step (ratio 1.0 to plain Keras).
"""

import argparse
import json
import os
import platform
import statistics
import time

import keras
import numpy as np
import tensorflow as tf

import keras_rts

# name: (method, perturb); None is a plain keras.Model.
STEPS = {
    "keras": None,
    "sgd": ("sgd", True),
    "pugd_perturb_off": ("pugd", False),
    "ugd": ("ugd", True),
    "sam": ("sam", True),
    "asam": ("asam", True),
    "pugd": ("pugd", True),
}
RATIOS = [
    # (numerator, denominator, floor)
    ("pugd", "sgd", 2.0),
    ("sam", "sgd", 2.0),
    ("asam", "sgd", 2.0),
    ("ugd", "sgd", 1.0),
    ("sgd", "keras", 1.0),
    ("pugd_perturb_off", "keras", 1.0),
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
        net, method=spec[0], perturb=spec[1])
    model.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=args.jit_compile,
    )
    return model


def step_cost(args):
    rng = np.random.default_rng(0)
    batch = (rng.normal(size=(args.batch_size, 32, 32, 3)).astype("float32"),
             rng.integers(0, 10, size=args.batch_size).astype("int32"))
    data = tf.data.Dataset.from_tensors(batch).repeat()
    models = {name: _build(name, args) for name in STEPS}
    for model in models.values():  # trace and warm up
        model.fit(data, steps_per_epoch=3, epochs=1, verbose=0)
    times = {name: [] for name in STEPS}
    names = list(STEPS)
    for round_ in range(args.rounds):
        # Rotate the order so that no step always runs first or last.
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            timer = StepTimer()
            models[name].fit(data, steps_per_epoch=args.steps, epochs=1,
                             verbose=0, callbacks=[timer])
            times[name].extend(timer.times)
    median = {name: statistics.median(t) for name, t in times.items()}
    result = {
        "command": "python recipes/benchmark.py step-cost " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in sorted(vars(args).items())
            if k not in ("command", "output", "jit_compile", "run")
        ) + (" --jit-compile" if args.jit_compile else ""),
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
        },
        "median_step_seconds": median,
        "ratios": [
            {"step": a, "relative_to": b, "ratio": median[a] / median[b],
             "floor": floor, "overhead": median[a] / median[b] / floor - 1}
            for a, b, floor in RATIOS
        ],
    }
    lines = [
        f"Step cost of `{args.model}`, batch {args.batch_size}, "
        f"{'XLA' if args.jit_compile else 'graph'} mode; median of "
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
        f"Machine: {result['machine']}",
    ]
    table = "\n".join(lines)
    print(table)
    if args.output:
        os.makedirs(args.output, exist_ok=True)
        stem = os.path.join(
            args.output,
            f"step_cost_{args.model}{'_xla' if args.jit_compile else ''}")
        with open(stem + ".json", "w") as f:
            json.dump(result, f, indent=2)
        with open(stem + ".md", "w") as f:
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
    args = parser.parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    main()
