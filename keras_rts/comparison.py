"""Methods compared over seeds: the runs, their aggregate, table and figure.

`compare(settings, methods, seeds, output_dir)` trains every method × seed
with one recipe configuration (`keras_rts.experiment.Settings`), each run in
`output_dir/runs/<method>_seed<seed>/`. A finished run is reused, an
unfinished one resumed, so the comparison can be stopped and continued.
Then it writes, from the runs' own `summary.json` and `history.csv`:

- `results.json`: every run's summary and each method's aggregate;
- `results.md`: the table (mean ± std over seeds of final and best test
  top-1, gradient evaluations, wall and CPU time, each cost relative to SGD
  and to PUGD);
- `comparison.png`: mean test accuracy against epoch and against gradient
  evaluations, one curve per method, ± one std shaded.
"""

import dataclasses
import json
import os

import numpy as np

from keras_rts import experiment, plots

COSTS = ("grad_evals", "wall_time_seconds", "cpu_time_seconds")


def run_dir(output_dir, method, seed):
    return os.path.join(output_dir, "runs", f"{method}_seed{seed}")


def compare(settings, methods, seeds, output_dir, verbose=2, command=None):
    """Trains (or reuses) every run, then writes the results.

    Args:
        settings: the configuration shared by all runs (its `method` and
            `seed` are replaced run by run).
        methods: method names of `keras_rts.experiment.METHODS`.
        seeds: integer seeds.
        output_dir: the comparison's folder.
        verbose: Keras `fit` verbosity of each run.
        command: the command line that made the comparison, recorded
            beside the table.

    Returns:
        The results (also written to `results.json`).
    """
    runs = [(m, s) for s in seeds for m in methods]  # seed-major: balanced
    for method, seed in runs:  # check every run's settings before any work
        experiment.validate(dataclasses.replace(settings, method=method,
                                                seed=seed))
    for method, seed in runs:
        folder = run_dir(output_dir, method, seed)
        if os.path.exists(os.path.join(folder, "summary.json")):
            continue
        experiment.run(
            dataclasses.replace(settings, method=method, seed=seed),
            output_dir=folder,
            resume=os.path.exists(os.path.join(folder, "settings.json")),
            verbose=verbose)
    return write_results(output_dir, methods, seeds, command)


def load_runs(output_dir, methods, seeds):
    """`{method: [summary, …]}` from the runs' `summary.json` files."""
    runs = {}
    for method in methods:
        runs[method] = []
        for seed in seeds:
            with open(os.path.join(run_dir(output_dir, method, seed),
                                   "summary.json")) as f:
                runs[method].append(json.load(f))
    return runs


def _mean_std(values):
    values = np.asarray(values, dtype=np.float64)
    return {"mean": float(values.mean()), "std": float(values.std(ddof=0)),
            "values": values.tolist()}


def aggregate(runs):
    """Each method's mean ± std over seeds, and its costs relative to others.

    Args:
        runs: `{method: [summary, …]}`.

    Returns:
        `{method: {metric: {"mean", "std", "values"}, "relative_cost":
        {"sgd": {cost: ratio}, "pugd": {…}}}}`; ratios are of means, and
        only against methods that were run.
    """
    result = {}
    for method, summaries in runs.items():
        result[method] = {
            key: _mean_std([s[key] for s in summaries])
            for key in ("final_test_top1", "best_test_top1") + COSTS
        }
    for method in result:
        result[method]["relative_cost"] = {
            base: {cost: result[method][cost]["mean"]
                   / result[base][cost]["mean"] for cost in COSTS}
            for base in ("sgd", "pugd") if base in result
        }
    return result


def table(aggregates):
    """The markdown table of `aggregate`'s numbers."""
    bases = [b for b in ("sgd", "pugd") if b in aggregates]
    header = ["method", "final top-1 (%)", "best top-1 (%)",
              "gradient evaluations", "wall time (s)", "CPU time (s)"]
    header += [f"evals ÷ {b}" for b in bases]
    header += [f"CPU time ÷ {b}" for b in bases]
    lines = ["| " + " | ".join(header) + " |",
             "|" + "---|" * len(header)]
    for method, a in aggregates.items():
        cells = [
            method,
            f"{100 * a['final_test_top1']['mean']:.2f} ± "
            f"{100 * a['final_test_top1']['std']:.2f}",
            f"{100 * a['best_test_top1']['mean']:.2f} ± "
            f"{100 * a['best_test_top1']['std']:.2f}",
            f"{a['grad_evals']['mean']:.0f}",
            f"{a['wall_time_seconds']['mean']:.0f}",
            f"{a['cpu_time_seconds']['mean']:.0f}",
        ]
        cells += [f"{a['relative_cost'][b]['grad_evals']:.2f}" for b in bases]
        cells += [f"{a['relative_cost'][b]['cpu_time_seconds']:.2f}"
                  for b in bases]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _curves(output_dir, methods, seeds):
    curves = {}
    for method in methods:
        histories = [experiment.read_history(os.path.join(
            run_dir(output_dir, method, seed), "history.csv"))
            for seed in seeds]
        length = min(len(h) for h in histories)
        accuracy = np.array([[float(r["val_accuracy"]) for r in h[:length]]
                             for h in histories])
        evals = np.array([[float(r["grad_evals"]) for r in h[:length]]
                          for h in histories]).mean(0)
        curves[method] = (list(range(1, length + 1)), evals.tolist(),
                          accuracy.mean(0).tolist(),
                          accuracy.std(0).tolist() if len(seeds) > 1
                          else None)
    return curves


def _machine():
    import platform

    return {"processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count()}


def write_results(output_dir, methods, seeds, command=None):
    """Writes `results.json`, `results.md` and `comparison.png` from the runs."""
    runs = load_runs(output_dir, methods, seeds)
    aggregates = aggregate(runs)
    first = runs[methods[0]][0]["settings"]
    shared = {k: v for k, v in first.items() if k not in ("method", "seed")}
    results = {"methods": list(methods), "seeds": list(seeds),
               "settings": shared, "command": command, "machine": _machine(),
               "versions": runs[methods[0]][0]["versions"],
               "aggregates": aggregates, "runs": runs}
    with open(os.path.join(output_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    evaluated = runs[methods[0]][0].get("evaluated_on", "test")
    with open(os.path.join(output_dir, "results.md"), "w") as f:
        f.write(
            f"{shared['dataset']}, {shared['model']}, "
            f"{shared['train_examples'] or 'all'} training images, "
            f"{shared['epochs']} epochs, batch {shared['batch_size']}, "
            f"seeds {', '.join(map(str, seeds))}; top-1 on the {evaluated} "
            "set; mean ± std over seeds.\n\n" + table(aggregates) + "\n\n"
            f"Command: `{command}`  \nMachine: {results['machine']}, "
            f"{results['versions']}\n")
    plots.plot_comparison(
        _curves(output_dir, methods, seeds),
        os.path.join(output_dir, "comparison.png"),
        title=f"{shared['dataset']}, {shared['model']}, "
        f"{shared['train_examples'] or 'all'} training images, "
        f"{shared['epochs']} epochs, {len(seeds)} seed(s)")
    return results
