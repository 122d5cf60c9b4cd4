"""Cost benchmarks, measured as ratios within one process.

    python recipes/benchmark.py step-cost --output docs/benchmarks
    python recipes/benchmark.py model-cost --output docs/benchmarks
    python recipes/benchmark.py pipeline --data-dir DIR --output docs/benchmarks
    python recipes/benchmark.py run-cost --output docs/benchmarks
    python recipes/benchmark.py run-cost --results docs/results/NAME
    python recipes/benchmark.py device --output docs/benchmarks

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

`device` is the check for a machine with an accelerator (a GPU), which
needs Keras and JAX (or TensorFlow) but not TensorFlow's data stack: it
runs the NumPy-reference step tests there (float32, full-precision
matrix products), then times the steps of `step-cost` for the small
ResNet and ResNet-18 at batch 128 and 512, in float32 and
`mixed_bfloat16`, on synthetic data already on the device, each step
waited for, with images a second; all within `--budget-seconds` (points
left are listed as skipped). It writes `device_<backend>_<gpu|cpu>.md` and
`.json`.

`model-cost` times a plain Keras training step of each recipe network
with its recipes' optimizer (the small ResNet with SGD, the ViT with
AdamW, and two larger ViTs), interleaved, relative to the small ResNet's:
how a run of the same length compares (the ViT is sized by it).

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
import re
import subprocess
import sys
import time

import _startup

_startup.quiet_start(required=False)  # `device` runs without TensorFlow

import keras  # noqa: E402

from keras_rts import benchmarks, files, reporting  # noqa: E402


def _command(name, args, skip=()):
    flags = " ".join(f"--{k.replace('_', '-')} {v}"
                     for k, v in sorted(vars(args).items())
                     if k not in ("command", "output", "run", *skip)
                     and v is not None and v is not False)
    return f"python recipes/benchmark.py {name} {flags}".rstrip()


def _footer(command, machine):
    return ["", f"Command: `{command}`",
            f"Machine: {reporting.describe_machine(machine)}"]


def step_cost(args):
    result = benchmarks.step_cost(args.model, args.batch_size, args.steps,
                                  args.rounds, args.jit_compile)
    result["command"] = _command("step-cost", args, skip=("jit_compile",)) + (
        " --jit-compile" if args.jit_compile else "")
    median = result["median_step_seconds"]
    table = "\n".join([
        f"Step cost of `{args.model}` on Keras' {keras.backend.backend()} "
        f"backend, batch {args.batch_size}, "
        f"{'XLA' if args.jit_compile else 'compiled'} mode; median of "
        f"{args.rounds}×{args.steps} steps each.",
        "",
        reporting.markdown_table(
            ["step", "relative to", "ratio", "floor",
             "overhead beyond floor"],
            [[r["step"], r["relative_to"], f"{r['ratio']:.3f}",
              f"{r['floor']:.1f}", f"{100 * r['overhead']:+.1f}%"]
             for r in result["ratios"]]),
        "",
        "Median seconds per step: " + ", ".join(
            f"{k} {v * 1000:.1f} ms" for k, v in median.items()) + ".",
    ] + _footer(result["command"], result["machine"]))
    # TensorFlow's file keeps its name; other backends are named.
    backend = keras.backend.backend()
    _write(args.output,
           f"step_cost_{args.model}{'_xla' if args.jit_compile else ''}"
           f"{'' if backend == 'tensorflow' else '_' + backend}",
           result, table)


def model_cost(args):
    result = benchmarks.model_cost(args.batch_size, args.steps, args.rounds)
    result["command"] = _command("model-cost", args)
    table = "\n".join([
        f"A plain Keras training step of each recipe network on Keras' "
        f"{keras.backend.backend()} backend, batch {args.batch_size}, with "
        f"its recipes' optimizer; median of {args.rounds}×{args.steps} "
        "steps each, relative to the small ResNet's (a run of the same "
        "length costs the same ratio).",
        "",
        reporting.markdown_table(
            ["network", "optimizer", "parameters", "ms per step",
             "÷ small_resnet"],
            [[name, benchmarks.MODEL_COSTS[name][1],
              f"{result['parameters'][name]:,}", f"{seconds * 1000:.1f}",
              f"{result['ratios'][name]:.2f}"]
             for name, seconds in result["median_step_seconds"].items()]),
    ] + _footer(result["command"], result["machine"]))
    backend = keras.backend.backend()
    _write(args.output, "model_cost"
           + ("" if backend == "tensorflow" else "_" + backend), result, table)


def pipeline(args):
    from keras_rts import experiment

    settings = experiment.settings_from_args(
        experiment.argument_parser("").parse_args(
            ["--preset", "cpu", "--dataset", args.dataset]
            + (["--data-dir", args.data_dir] if args.data_dir else [])))
    s = settings
    result = benchmarks.pipeline_rate(s, args.steps)
    result["command"] = (f"python recipes/benchmark.py pipeline --dataset "
                         f"{args.dataset} --steps {args.steps}"
                         + (" --data-dir DIR" if args.data_dir else ""))
    result["preset"] = dataclasses.asdict(s)
    data_rate = result["pipeline_images_per_second"]
    rates = result["training_images_per_second"]
    table = "\n".join([
        f"Input pipeline against training, CPU preset ({s.model}, "
        f"{s.dataset}, batch {s.batch_size}, {s.train_examples} images).",
        "",
        reporting.markdown_table(
            ["", "images/s", "pipeline ÷ training"],
            [["input pipeline (warm cache, augmentation on)",
              f"{data_rate:.0f}", ""]]
            + [[f"training step, {m}", f"{r:.0f}", f"{data_rate / r:.1f}"]
               for m, r in rates.items()]),
    ] + _footer(result["command"], result["machine"]))
    _write(args.output, f"pipeline_{args.dataset}", result, table)


def run_cost(args):
    if args.results:
        rows = benchmarks.run_cost_of_results(files.read_json(
            os.path.join(args.results, "results.json"),
            "run the comparison again to write it (its runs are reused)"))
        table = "\n".join([reporting.markdown_table(
            ["run", "switch epoch k of n", "predicted ÷ sgd", "evals ÷ sgd",
             "CPU time ÷ sgd", "wall time ÷ sgd", "evals ÷ pugd",
             "CPU time ÷ pugd"],
            [[f"{r['method']} seed {r['seed']}", f"{r['k']} of {r['n']}"]
             + [f"{r[key]:.3f}" for key in (
                 "predicted", "evals_vs_sgd", "cpu_vs_sgd", "wall_vs_sgd",
                 "evals_vs_pugd", "cpu_vs_pugd")] for r in rows]),
            "", f"From `{args.results}/results.json`; command: `python "
            f"recipes/benchmark.py run-cost --results {args.results}`."])
        return _write(args.output, "run_cost", {"rows": rows}, table)
    result = benchmarks.run_cost(args.epochs, args.switch_epoch,
                                 args.examples, args.rounds, args.model)
    n, k = args.epochs, args.switch_epoch
    result["command"] = (
        f"python recipes/benchmark.py run-cost --epochs {n} --switch-epoch "
        f"{k} --examples {args.examples} --rounds {args.rounds} --model "
        f"{args.model}")
    table = "\n".join([
        f"Whole training runs (evaluation excluded) of `{args.model}`, "
        f"{args.examples} images, batch 128, {n} epochs, `t`/`rts` switching "
        f"to PUGD at epoch {k}; median of {args.rounds} interleaved runs "
        "each, in one process.",
        "",
        reporting.markdown_table(
            ["run", "predicted ÷ sgd", "evals ÷ sgd", "CPU ÷ sgd",
             "wall ÷ sgd", "predicted ÷ pugd", "CPU ÷ pugd", "wall ÷ pugd"],
            [[r["method"]] + [f"{r[key]:.3f}" for key in (
                "predicted_vs_sgd", "evals_vs_sgd", "cpu_vs_sgd",
                "wall_vs_sgd", "predicted_vs_pugd", "cpu_vs_pugd",
                "wall_vs_pugd")] for r in result["rows"]]),
    ] + _footer(result["command"], result["machine"]))
    _write(args.output, f"run_cost_{args.model}", result, table)


DEVICE_TESTS = ("tests/test_model.py::test_steps_match_numpy_reference",
                "tests/test_step.py", "tests/test_sub_batch.py",
                "tests/test_phase.py", "tests/test_directions.py")
"""The step's NumPy-reference tests, run on the device by `device`."""


def _device_tests(tests):
    """Runs `tests` with pytest here, on the device Keras sees, with
    float32 matrix products in full precision (not TF32)."""
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               *tests]
    env = dict(os.environ, JAX_DEFAULT_MATMUL_PRECISION="highest",
               NVIDIA_TF32_OVERRIDE="0")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run(command, cwd=root, env=env, capture_output=True,
                          text=True)
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    summary = next((line.strip("= ") for line in reversed(lines)
                    if re.search(r"\d+ (passed|failed|error)", line)),
                   lines[-1] if lines else done.stderr.strip()[-300:])
    return {"tests": list(tests), "returncode": done.returncode,
            "summary": summary,
            "failures": [line for line in lines
                         if line.startswith(("FAILED", "ERROR"))]}


def device(args):
    start = time.perf_counter()
    tests = None
    if args.tests:
        tests = _device_tests(args.tests)
        print(f"Reference tests on the device: {tests['summary']}",
              flush=True)
    budget = args.budget_seconds - (time.perf_counter() - start)
    result = benchmarks.device_step_cost(
        args.policies, args.models, args.batch_sizes, args.image_size,
        args.steps, args.rounds, budget_seconds=max(budget, 0))
    result["tests"] = tests
    result["seconds"] = time.perf_counter() - start
    result["command"] = " ".join(
        ["python recipes/benchmark.py device"]
        + [f"--{k.replace('_', '-')} " + (
            " ".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v))
           for k, v in sorted(vars(args).items())
           if k not in ("command", "output", "run") and v not in (None, [])])
    devices = result["machine"]["devices"]
    kind = "gpu" if devices else "cpu"
    names = list(benchmarks.DEVICE_STEPS)
    ratio_names = [f"{a} ÷ {b}" for a, b, _ in benchmarks.DEVICE_RATIOS]
    points = result["points"]
    table = "\n".join([
        f"Step cost on {', '.join(devices) or 'the CPU'}, Keras' "
        f"{keras.backend.backend()} backend, "
        + ("eager (Keras' default on PyTorch); "
           if keras.backend.backend() == "torch" else
           "each phase compiled (XLA); ") +
        f"synthetic {args.image_size}×{args.image_size} images on the "
        f"device; median of {args.rounds} rounds of {args.steps} steps, "
        "each fit waited for.",
        "",
        "Reference tests on the device: " + (
            tests["summary"] if tests else "not run") + ".",
        "",
        reporting.markdown_table(
            ["policy", "network", "batch", *ratio_names],
            [[p["policy"], p["model"], p["batch_size"]]
             + [f"{r['ratio']:.3f}" for r in p["ratios"]] for p in points]),
        "",
        "Floors: two passes for pugd and sam (2.0), one for sgd and a "
        "perturb-off step (1.0 of plain Keras), the same passes on "
        "sub-batches of 32 (1.0 of pugd).",
        "",
        "Images a second:",
        "",
        reporting.markdown_table(
            ["policy", "network", "batch", *names],
            [[p["policy"], p["model"], p["batch_size"]]
             + [f"{p['images_per_second'][n]:.0f}" for n in names]
             for p in points]),
    ] + ([
        "", "Not measured (over the time budget): " + "; ".join(
            f"{s['policy']} {s['model']} batch {s['batch_size']}"
            for s in result["skipped"]) + "."] if result["skipped"] else [])
      + [f"", f"Whole command: {result['seconds']:.0f} s."]
      + _footer(result["command"], result["machine"]))
    _write(args.output, f"device_{keras.backend.backend()}_{kind}", result,
           table)
    if tests and tests["returncode"] != 0:
        sys.exit(1)


def _write(folder, stem, result, table):
    print(table)
    if not folder:
        return
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, stem + ".json"), "w") as f:
        json.dump(result, f, indent=2)
    with open(os.path.join(folder, stem + ".md"), "w") as f:
        f.write(table + "\n")


def main(argv=None):
    from keras_rts.experiment import RecipeParser, flag_errors, positive_int

    parser = RecipeParser(description=__doc__,
                          formatter_class=argparse.RawDescriptionHelpFormatter,
                          allow_abbrev=False)
    commands = parser.add_subparsers(dest="command", required=True)
    models = ["small_resnet", "resnet18"]
    cost = commands.add_parser("step-cost", help="time one step per method")
    cost.add_argument("--model", default="small_resnet", choices=models)
    cost.add_argument("--batch-size", type=positive_int, default=128)
    cost.add_argument("--steps", type=positive_int, default=10,
                      help="steps timed per method and round (default: 10)")
    cost.add_argument("--rounds", type=positive_int, default=5)
    cost.add_argument("--jit-compile", action="store_true")
    cost.add_argument("--output", default=None,
                      help="folder for the JSON and markdown results")
    cost.set_defaults(run=step_cost)
    networks = commands.add_parser(
        "model-cost", help="the recipe networks' step against the small "
        "ResNet's")
    networks.add_argument("--batch-size", type=positive_int, default=128)
    networks.add_argument("--steps", type=positive_int, default=10)
    networks.add_argument("--rounds", type=positive_int, default=5)
    networks.add_argument("--output", default=None)
    networks.set_defaults(run=model_cost)
    feed = commands.add_parser("pipeline",
                               help="input pipeline against training")
    feed.add_argument("--dataset", default="cifar10",
                      choices=["cifar10", "cifar100", "tiny_imagenet"])
    feed.add_argument("--data-dir", default=None)
    feed.add_argument("--steps", type=positive_int, default=20)
    feed.add_argument("--output", default=None)
    feed.set_defaults(run=pipeline)
    whole = commands.add_parser("run-cost",
                                help="whole-run cost against prediction")
    whole.add_argument("--results", default=None,
                       help="a recipes/compare.py output folder to read; "
                       "without it, time short runs of sgd, pugd, t, rts")
    whole.add_argument("--epochs", type=positive_int, default=8)
    whole.add_argument("--switch-epoch", type=positive_int, default=4)
    whole.add_argument("--examples", type=positive_int, default=1280)
    whole.add_argument("--rounds", type=positive_int, default=3)
    whole.add_argument("--model", default="small_resnet", choices=models)
    whole.add_argument("--output", default=None)
    whole.set_defaults(run=run_cost)
    check = commands.add_parser(
        "device", help="reference tests and step cost on an accelerator")
    check.add_argument("--policies", nargs="+", choices=[
        "float32", "mixed_bfloat16", "mixed_float16"],
        default=list(benchmarks.DEVICE_GRID["policies"]))
    check.add_argument("--models", nargs="+", choices=models,
                       default=list(benchmarks.DEVICE_GRID["models"]))
    check.add_argument("--batch-sizes", nargs="+", type=positive_int,
                       default=list(benchmarks.DEVICE_GRID["batch_sizes"]))
    check.add_argument("--image-size", type=positive_int, default=32)
    check.add_argument("--steps", type=positive_int, default=20,
                       help="steps timed per step kind and round")
    check.add_argument("--rounds", type=positive_int, default=3)
    check.add_argument("--budget-seconds", type=positive_int, default=420,
                       help="the whole command's time, tests included; "
                       "points left when it is spent are listed as skipped "
                       "(default: 420)")
    check.add_argument("--tests", nargs="*", default=list(DEVICE_TESTS),
                       help="reference tests to run on the device first "
                       "(none: --tests with no argument)")
    check.add_argument("--output", default=None)
    check.set_defaults(run=device)
    args = parser.parse_args(argv)
    if args.command == "run-cost" and not args.results and not (
            0 < args.switch_epoch < args.epochs):
        parser.error(f"--switch-epoch: must be below --epochs={args.epochs}, "
                     f"got {args.switch_epoch}")
    with flag_errors(parser):
        _check_output(args.output)  # before any measuring
        if getattr(args, "results", None):
            files.read_json(os.path.join(args.results, "results.json"),
                            "run the comparison again to write it (its "
                            "runs are reused)")
        args.run(args)


def _check_output(folder):
    """`--output` is a folder this process can write into (or create)."""
    if folder is None:
        return
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise ValueError(f"--output: {folder} is a file, not a folder")
    existing = os.path.abspath(folder)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"--output: cannot write into {existing}")


if __name__ == "__main__":
    main()
