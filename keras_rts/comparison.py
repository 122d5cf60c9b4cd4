"""Methods compared over seeds: the runs, their aggregate, table and figure.

`compare(settings, methods, seeds, output_dir)` trains every method × seed
with one recipe configuration (`keras_rts.experiment.Settings`), each run in
`output_dir/runs/<method>_seed<seed>/`; `compare_arms` does the same for
named configurations that are not one method each (a search's trials). A
finished run is reused, an unfinished one resumed, so the comparison can be
stopped and continued.
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

from keras_rts import experiment, files, plots, reporting
from keras_rts.experiment.build import METHOD_OPTIONS

COSTS = ("grad_evals", "wall_time_seconds", "cpu_time_seconds")


def run_dir(output_dir, method, seed):
    return os.path.join(output_dir, "runs", f"{method}_seed{seed}")


def compare(settings, methods, seeds, output_dir, verbose=2, command=None,
            name="results", bases=None):
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
        name: the stem of the results files (`<name>.json`, `<name>.md`,
            and the figure): another name keeps several tables over the
            same runs (e.g. more seeds of some methods).
        bases: the methods the differences are paired against (default
            `BASES`, those of them compared).

    Returns:
        The results (also written to `<name>.json`).

    Raises:
        ValueError: bad settings, or run folders made with other settings
            (they would be reused as if they were the runs asked for).
    """
    return compare_arms(check(settings, methods, seeds, output_dir), seeds,
                        output_dir, verbose, command, name, bases)


def compare_arms(arms, seeds, output_dir, verbose=2, command=None,
                 name="results", bases=None):
    """`compare` of named configurations: `{name: Settings}`.

    The arms need not share a method's defaults: e.g. a search's best
    trials beside SGD (`keras_rts.search.confirmation_arms`). An arm named
    `sgd` or `pugd` is the base of the table's differences.
    """
    for (arm, seed), wanted in check_arms(arms, seeds, output_dir).items():
        folder = run_dir(output_dir, arm, seed)
        if os.path.exists(os.path.join(folder, "summary.json")):
            continue
        experiment.run(
            wanted, output_dir=folder,
            resume=os.path.exists(os.path.join(folder, "settings.json")),
            verbose=verbose)
    return write_results(output_dir, list(arms), seeds, command, name, bases)


def check(settings, methods, seeds, output_dir):
    """Checks a comparison of methods before any work; returns its arms.

    Returns:
        `{method: Settings}` (each method with `settings`).

    Raises:
        ValueError: naming the flag — bad settings for a method, repeated
            methods or seeds, a flag none of the methods uses, data that is
            not there, or run folders made with other settings (they would
            be reused as if they were the runs asked for).
    """
    if len(set(methods)) != len(methods):
        raise ValueError(f"--methods: {list(methods)} repeats a value: a "
                         "run would count twice.")
    arms = {m: dataclasses.replace(settings, method=m) for m in methods}
    unused = set.intersection(*(set(experiment.unused_flags(wanted))
                                for wanted in arms.values()))
    if unused:
        name = sorted(unused)[0]
        raise ValueError(f"--{name.replace('_', '-')}: none of the methods "
                         f"{list(methods)} uses it: every run would ignore "
                         "it.")
    # A method's own option (--alpha, --every, ...) goes to the methods
    # that take it: `--methods sgd sam looksam --alpha 0.1`.
    for method, wanted in arms.items():
        own = [name for name in experiment.unused_flags(wanted)
               if name in METHOD_OPTIONS]
        arms[method] = dataclasses.replace(
            wanted, **{name: None for name in own})
    check_arms(arms, seeds, output_dir)
    return arms


def check_arms(arms, seeds, output_dir):
    """Checks named configurations × seeds before any work.

    Returns:
        `{(arm, seed): Settings}`, seed-major (runs of one seed together,
        so a stopped comparison is balanced across arms).

    Raises:
        ValueError: bad settings, repeated seeds, data that is not there,
            or run folders made with other settings.
    """
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds: {list(seeds)} repeats a value: a run "
                         "would count twice.")
    runs = {(arm, s): dataclasses.replace(settings, seed=s)
            for s in seeds for arm, settings in arms.items()}
    stale = []
    for (arm, seed), wanted in runs.items():
        experiment.validate(wanted, refuse_unused=False)
        folder = run_dir(output_dir, arm, seed)
        if os.path.exists(os.path.join(folder, "settings.json")):
            changed = experiment.settings_differences(
                experiment.load_settings(folder), wanted)
            if changed:
                stale.append(f"{folder} ({', '.join(changed)})")
    for settings in {s.dataset: s for s in arms.values()}.values():
        experiment.check_data(settings)
    if stale:
        raise ValueError(
            "--output-dir: these runs were made with other settings than "
            "the ones asked for, and would be reused: " + "; ".join(stale)
            + ". Choose another folder; nothing was changed.")
    return runs


def load_runs(output_dir, methods, seeds):
    """`{method: [summary, …]}` from the runs' `summary.json` files."""
    runs = {}
    for method in methods:
        runs[method] = []
        for seed in seeds:
            folder = run_dir(output_dir, method, seed)
            runs[method].append(files.read_json(
                os.path.join(folder, "summary.json"),
                f"delete the run's folder {folder} and run the comparison "
                "again (it trains that run anew)"))
    return runs


def _mean_std(values):
    values = np.asarray(values, dtype=np.float64)
    return {"mean": float(values.mean()), "std": float(values.std(ddof=0)),
            "values": values.tolist()}


ACCURACIES = ("final_test_top1", "best_test_top1")
AS_TRAINED = "final_test_top1_batchnorm_as_trained"
"""A method whose one pass is at `w + ε` (msam) is scored after its
BatchNormalization statistics are recomputed at `w`; its summaries keep
the score before too."""
COSTS_IN_TABLE = ("grad_evals", "cpu_time_seconds", "wall_time_seconds")
BASES = ("sgd", "pugd")


def aggregate(runs, bases=None):
    """Each method's mean ± std over seeds, against SGD's and PUGD's.

    Args:
        runs: `{method: [summary, …]}`, every method's summaries in the same
            seed order.
        bases: the methods to pair against, of those run (default `BASES`).

    Returns:
        `{method: {metric: {"mean", "std", "values"}, "relative_cost":
        {"sgd": {cost: ratio}, "pugd": {…}}, "difference": {"sgd":
        {accuracy: reporting.paired_interval(…)}, "pugd": {…}}}}`. Cost
        ratios are of means; accuracy differences are paired by seed (the
        same seed gives both runs the same initial weights and batches),
        with a 95 % Student-t interval. Only against methods that were
        run.
    """
    result = {}
    for method, summaries in runs.items():
        result[method] = {
            key: _mean_std([s[key] for s in summaries])
            for key in ACCURACIES + COSTS
        }
    bases = [b for b in (bases or BASES) if b in result]
    for method in result:
        result[method]["relative_cost"] = {
            base: {cost: result[method][cost]["mean"]
                   / result[base][cost]["mean"] for cost in COSTS}
            for base in bases
        }
        result[method]["difference"] = {
            base: {key: reporting.paired_interval(
                result[method][key]["values"], result[base][key]["values"])
                for key in ACCURACIES}
            for base in bases
        }
    for method, summaries in runs.items():
        if all(AS_TRAINED in s for s in summaries):
            before = _mean_std([s[AS_TRAINED] for s in summaries])
            after = result[method]["final_test_top1"]["values"]
            result[method][AS_TRAINED] = dict(before, difference={
                base: reporting.paired_interval(
                    before["values"], result[base]["final_test_top1"][
                        "values"]) for base in bases if base != method},
                recomputation=reporting.paired_interval(
                    after, before["values"]))
    return result


def _how_read(bases, seed_count):
    """How a results.md reads: its spread and its differences, if any."""
    if not bases:
        return ("mean ± std over seeds." if seed_count > 1
                else "one run per method, so no spread.")
    if seed_count < 2:
        return (f"one run per method, so no spread and no interval: Δ is "
                f"the difference to {bases} run, in percentage points.")
    return (f"mean ± std over seeds. Δ: the differences to {bases} runs of "
            "the same seed, mean [95 % interval] over seeds (Student t, "
            "paired by seed), in percentage points; the verdict says above "
            "or below only when the interval excludes zero.")


def _mean_and_std(stats):
    """`54.80 ± 1.03` in percent; a single seed's value alone (it has no
    spread)."""
    if len(stats["values"]) < 2:
        return f"{100 * stats['mean']:.2f}"
    return f"{100 * stats['mean']:.2f} ± {100 * stats['std']:.2f}"


def _points(d):
    """`+0.48 [−0.21, +1.17]`: the mean difference and its 95 % interval, pp."""
    if d["low"] is None:
        return f"{100 * d['mean']:+.2f}"
    return (f"{100 * d['mean']:+.2f} [{100 * d['low']:+.2f}, "
            f"{100 * d['high']:+.2f}]")


def table(aggregates):
    """The markdown tables of `aggregate`'s numbers: accuracy, then cost."""
    bases = _bases(aggregates)
    header = ["method", "final top-1 (%)", "best top-1 (%)"]
    header += [f"Δ final vs {b} (pp)" for b in bases]
    header += [f"Δ best vs {b} (pp)" for b in bases]
    header += ["final top-1 verdict"]
    rows = []
    for method, a in aggregates.items():
        cells = [method] + [_mean_and_std(a[key]) for key in ACCURACIES]
        for key in ACCURACIES:
            cells += ["—" if b == method else _points(
                a["difference"][b][key]) for b in bases]
        cells.append(", ".join(
            reporting.verdict(a["difference"][b]["final_test_top1"], b)
            for b in bases if b != method) or "—")
        rows.append(cells)
    accuracy = reporting.markdown_table(header, rows)

    header = ["method", "gradient evaluations"]
    header += [f"evals ÷ {b}" for b in bases]
    header += ["CPU time (s)"] + [f"CPU time ÷ {b}" for b in bases]
    header += ["wall time (s)"] + [f"wall time ÷ {b}" for b in bases]
    rows = []
    for method, a in aggregates.items():
        cells = [method]
        for key in COSTS_IN_TABLE:
            cells.append(f"{a[key]['mean']:.0f}")
            cells += [f"{a['relative_cost'][b][key]:.2f}" for b in bases]
        rows.append(cells)
    tables = accuracy + "\n\n" + reporting.markdown_table(header, rows)
    recomputed = [m for m, a in aggregates.items() if AS_TRAINED in a]
    if recomputed:
        header = ["method", "final top-1, statistics as trained (%)"]
        header += [f"Δ as trained vs {b} (pp)" for b in bases]
        header += ["Δ of the recomputation (pp)"]
        rows = []
        for method in recomputed:
            a = aggregates[method][AS_TRAINED]
            rows.append([method, _mean_and_std(a)] + [
                "—" if b == method else _points(a["difference"][b])
                for b in bases] + [_points(a["recomputation"])])
        tables += (
            "\n\nBatchNormalization's statistics recomputed at `w` after "
            "training (the one pass of " + ", ".join(recomputed) + " is at "
            "`w + ε`): its final top-1 above is after; here before, and "
            "what the recomputation changed.\n\n"
            + reporting.markdown_table(header, rows))
    return tables


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
        curves[method] = (list(range(length)), evals.tolist(),
                          accuracy.mean(0).tolist(),
                          accuracy.std(0).tolist() if len(seeds) > 1
                          else None)
    return curves


def describe(settings):
    """`cifar10, small_resnet, 5000 training images (40 % of their labels
    noisy), 60 epochs`: what a table's runs share, from settings as a dict."""
    noise = settings.get("label_noise") or 0
    return (f"{settings['dataset']}, {settings['model']}, "
            f"{settings['train_examples'] or 'all'} training images"
            + (f" ({100 * noise:g} % of their labels noisy)" if noise else "")
            + f", {settings['epochs']} epochs"
            + (f", {settings['optimizer']}" if settings.get("optimizer")
               else ""))


def _bases(aggregates):
    """The methods `aggregate` paired against, in its order."""
    return list(next(iter(aggregates.values()))["difference"])


def write_results(output_dir, methods, seeds, command=None, name="results",
                  bases=None):
    """Writes `<name>.json`, `<name>.md` and the figure from the runs.

    The figure is `comparison.png` for the default name, else
    `<name>.png`.
    """
    runs = load_runs(output_dir, methods, seeds)
    aggregates = aggregate(runs, bases)
    first = runs[methods[0]][0]["settings"]
    shared = {k: v for k, v in first.items() if k not in ("method", "seed")}
    results = {"methods": list(methods), "seeds": list(seeds),
               "settings": shared, "command": command,
               "machine": reporting.machine(),
               "versions": runs[methods[0]][0]["versions"],
               "aggregates": aggregates, "runs": runs}
    with open(os.path.join(output_dir, name + ".json"), "w") as f:
        json.dump(results, f, indent=2)
    evaluated = runs[methods[0]][0].get("evaluated_on", "test")
    bases = " and ".join(f"{b.upper()}'s" for b in _bases(aggregates))
    with open(os.path.join(output_dir, name + ".md"), "w") as f:
        f.write(
            f"{describe(shared)}, batch {shared['batch_size']}, "
            f"seed{'s' if len(seeds) > 1 else ''} "
            f"{', '.join(map(str, seeds))}; top-1 on the {evaluated} "
            f"set; {_how_read(bases, len(seeds))}\n\n"
            + table(aggregates)
            + "\n\n"
            f"Command: `{command}`  \nMachine: "
            + reporting.describe_machine(results["machine"],
                                         results["versions"]) + "\n")
    plots.plot_comparison(
        _curves(output_dir, methods, seeds),
        os.path.join(output_dir, "comparison.png" if name == "results"
                     else name + ".png"),
        title=f"{describe(shared)}, {len(seeds)} seed(s)")
    return results
