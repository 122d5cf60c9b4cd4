"""The comparison of methods: its command end to end, and the committed
results recomputed from the runs' own files (no hand-edited numbers)."""

import dataclasses
import glob
import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from keras_rts import comparison, reporting

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMPARISONS = [os.path.join(ROOT, "docs", "results", "*"),
               # a search's confirmation, the held-out choices' folders
               os.path.join(ROOT, "docs", "tuning", "*", "*")]


def _is_comparison(path):
    """A table that compare.py wrote (results, frontier, ...: its
    `--results-name`), not a benchmark's or a tuner's JSON beside it."""
    with open(path) as f:
        return {"methods", "seeds", "aggregates", "runs"} <= set(json.load(f))


COMMITTED = sorted(p for folder in COMPARISONS for p in glob.glob(
    os.path.join(folder, "*.json")) if _is_comparison(p))
COMMITTED_RUNS = sorted(p for folder in COMPARISONS for p in glob.glob(
    os.path.join(folder, "runs", "*", "history.csv")))


def _tables(markdown):
    """Every markdown table of a text, as lists of `{header: cell}` rows."""
    tables, lines = [], []
    for line in markdown.splitlines() + [""]:
        if line.startswith("|"):
            lines.append(line)
            continue
        if lines:
            header = [c.strip() for c in lines[0].strip("|").split("|")]
            tables.append([dict(zip(header, (c.strip() for c in
                                             l.strip("|").split("|"))))
                           for l in lines[2:]])
            lines = []
    return tables


def _plus_minus(cell):
    """`54.80 ± 1.03` → (54.8, 1.03); a single seed's `53.96` → (53.96, 0)."""
    if "±" not in cell:
        return float(cell), 0.0
    mean, std = (float(v) for v in cell.split("±"))
    return mean, std


def _interval_cell(cell):
    """`+1.20 [-0.30, +2.70]` → (1.2, -0.3, 2.7)."""
    mean, rest = cell.split("[")
    low, high = rest.rstrip("]").split(",")
    return float(mean), float(low), float(high)


def _t_quantile_by_integration(confidence, df):
    """Student t's two-sided quantile, by integrating its density (NumPy)."""
    import math
    x = np.linspace(0.0, 200.0, 2_000_001)
    density = (math.gamma((df + 1) / 2) / (math.sqrt(df * math.pi)
                                            * math.gamma(df / 2))
               * (1 + x ** 2 / df) ** (-(df + 1) / 2))
    cdf = 2 * np.concatenate([[0.0], np.cumsum(
        (density[1:] + density[:-1]) / 2 * np.diff(x))])
    return float(np.interp(confidence, cdf, x))


def _interval(paired):
    n = len(paired)
    half = (_t_quantile_by_integration(0.95, n - 1)
            * np.std(paired, ddof=1) / np.sqrt(n))
    return np.mean(paired) - half, np.mean(paired) + half


def _check_results(folder, name="results"):
    """Recomputes <name>.json from the runs, and <name>.md from the JSON."""
    with open(os.path.join(folder, name + ".json")) as f:
        results = json.load(f)
    methods, seeds = results["methods"], results["seeds"]
    summaries = {}
    for method in methods:
        summaries[method] = []
        for seed in seeds:
            path = os.path.join(folder, "runs", f"{method}_seed{seed}",
                                "summary.json")
            with open(path) as f:
                summaries[method].append(json.load(f))
        assert summaries[method] == results["runs"][method]
    # The baselines a table is paired against (`--baselines`; SGD and PUGD
    # by default, where run; none in a table of one method): the same for
    # every method, each one of the methods.
    baselines = sorted(results["aggregates"][methods[0]]["difference"])
    assert set(baselines) <= set(methods)
    for method in methods:
        assert sorted(results["aggregates"][method]["difference"]) == \
            baselines
        assert sorted(results["aggregates"][method]["relative_cost"]) == \
            baselines
    for method in methods:
        got = results["aggregates"][method]
        for key in ("final_test_top1", "best_test_top1", "grad_evals",
                    "wall_time_seconds", "cpu_time_seconds"):
            values = np.array([s[key] for s in summaries[method]], float)
            assert got[key]["mean"] == pytest.approx(values.mean(), rel=1e-12)
            assert got[key]["std"] == pytest.approx(values.std(), abs=1e-12)
        for base in baselines:
            for cost in ("grad_evals", "cpu_time_seconds"):
                ratio = (np.mean([s[cost] for s in summaries[method]])
                         / np.mean([s[cost] for s in summaries[base]]))
                assert got["relative_cost"][base][cost] == pytest.approx(
                    ratio, rel=1e-12)
        for base in baselines:
            for key in ("final_test_top1", "best_test_top1"):
                paired = [s[key] - b[key] for s, b in
                          zip(summaries[method], summaries[base])]
                d = got["difference"][base][key]
                assert d["mean"] == pytest.approx(np.mean(paired), abs=1e-12)
                if len(paired) > 1:
                    assert d["std"] == pytest.approx(np.std(paired, ddof=1),
                                                     abs=1e-12)
                    low, high = _interval(paired)
                    assert d["low"] == pytest.approx(low, abs=1e-6)
                    assert d["high"] == pytest.approx(high, abs=1e-6)
    with open(os.path.join(folder, name + ".md")) as f:
        accuracy, cost, *recomputed = _tables(f.read())
    as_trained = [m for m in methods if all(
        "final_test_top1_batchnorm_as_trained" in s for s in summaries[m])]
    assert len(recomputed) == (1 if as_trained else 0)
    for row in (recomputed[0] if recomputed else []):
        values = [s["final_test_top1_batchnorm_as_trained"]
                  for s in summaries[row["method"]]]
        after = [s["final_test_top1"] for s in summaries[row["method"]]]
        mean, _ = _plus_minus(row["final top-1, statistics as trained (%)"])
        assert mean == pytest.approx(100 * np.mean(values), abs=0.006)
        for base in baselines:
            if base == row["method"]:
                continue
            paired = [v - s["final_test_top1"]
                      for v, s in zip(values, summaries[base])]
            cell = row[f"Δ as trained vs {base} (pp)"]
            got = _interval_cell(cell)[0] if "[" in cell else float(cell)
            assert got == pytest.approx(100 * np.mean(paired), abs=0.006)
        gain = row["Δ of the recomputation (pp)"]
        gain = _interval_cell(gain)[0] if "[" in gain else float(gain)
        assert gain == pytest.approx(
            100 * np.mean(np.subtract(after, values)), abs=0.006)
    assert [r["method"] for r in accuracy] == methods
    assert [r["method"] for r in cost] == methods
    for row in accuracy:
        a = results["aggregates"][row["method"]]
        mean, std = _plus_minus(row["final top-1 (%)"])
        assert mean == pytest.approx(100 * a["final_test_top1"]["mean"],
                                     abs=0.006)
        assert std == pytest.approx(100 * a["final_test_top1"]["std"],
                                    abs=0.006)
        mean, _ = _plus_minus(row["best top-1 (%)"])
        assert mean == pytest.approx(100 * a["best_test_top1"]["mean"],
                                     abs=0.006)
        for base in baselines:
            if base == row["method"]:
                continue
            d = a["difference"][base]["final_test_top1"]
            cell = row[f"Δ final vs {base} (pp)"]
            if d["low"] is None:
                assert float(cell) == pytest.approx(100 * d["mean"], abs=0.006)
                word = "no difference shown vs"
            else:
                mean, low, high = _interval_cell(cell)
                assert mean == pytest.approx(100 * d["mean"], abs=0.006)
                assert low == pytest.approx(100 * d["low"], abs=0.006)
                assert high == pytest.approx(100 * d["high"], abs=0.006)
                word = ("above" if d["low"] > 0 else "below" if d["high"] < 0
                        else "no difference shown vs")
            assert f"{word} {base}" in row["final top-1 verdict"]
    for row in cost:
        a = results["aggregates"][row["method"]]
        assert float(row["gradient evaluations"]) == pytest.approx(
            a["grad_evals"]["mean"], abs=0.5)
        assert float(row["CPU time (s)"]) == pytest.approx(
            a["cpu_time_seconds"]["mean"], abs=0.5)
        for base in baselines:
            for column, key in (("evals", "grad_evals"),
                                ("CPU time", "cpu_time_seconds"),
                                ("wall time", "wall_time_seconds")):
                assert float(row[f"{column} ÷ {base}"]) == pytest.approx(
                    a["relative_cost"][base][key], abs=0.006)
    figure = "comparison.png" if name == "results" else name + ".png"
    with open(os.path.join(folder, figure), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    return results


@pytest.mark.slow
def test_compare_command_end_to_end(tfds_dir, tmp_path):
    out = str(tmp_path / "cmp")
    command = [sys.executable, os.path.join(ROOT, "recipes", "compare.py"),
               "--methods", "sgd", "pugd", "--seeds", "0", "1",
               "--output-dir", out, "--preset", "cpu", "--epochs", "1",
               "--train-examples", "256", "--batch-size", "64",
               "--test-examples", "1000", "--data-dir", tfds_dir,
               "--verbose", "0"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(command, capture_output=True, text=True,
                            cwd=ROOT, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    results = _check_results(out)
    assert results["aggregates"]["pugd"]["relative_cost"]["sgd"][
        "grad_evals"] == 2.0
    assert results["settings"]["epochs"] == 1
    # Finished runs are reused: a second call trains nothing.
    stamp = os.path.getmtime(os.path.join(out, "runs", "sgd_seed0",
                                          "summary.json"))
    again = subprocess.run(command, capture_output=True, text=True, cwd=ROOT,
                           env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Epoch" not in again.stdout
    assert os.path.getmtime(os.path.join(
        out, "runs", "sgd_seed0", "summary.json")) == stamp


@pytest.mark.skipif(not COMMITTED, reason="no committed results yet")
@pytest.mark.parametrize("path", COMMITTED,
                         ids=[os.path.relpath(p, os.path.join(
                             ROOT, "docs")) for p in COMMITTED])
def test_committed_results_are_recomputed_from_their_runs(path):
    _check_results(os.path.dirname(path),
                   os.path.splitext(os.path.basename(path))[0])


def test_aggregate_against_hand_computed_numbers():
    runs = {
        "sgd": [{"final_test_top1": 0.5, "best_test_top1": 0.6,
                 "grad_evals": 100, "wall_time_seconds": 10.0,
                 "cpu_time_seconds": 20.0}] * 2,
        "pugd": [{"final_test_top1": 0.6, "best_test_top1": 0.7,
                  "grad_evals": 200, "wall_time_seconds": 19.0,
                  "cpu_time_seconds": 38.0},
                 {"final_test_top1": 0.7, "best_test_top1": 0.7,
                  "grad_evals": 200, "wall_time_seconds": 21.0,
                  "cpu_time_seconds": 42.0}],
    }
    a = comparison.aggregate(runs)
    assert a["pugd"]["final_test_top1"]["mean"] == pytest.approx(0.65)
    assert a["pugd"]["final_test_top1"]["std"] == pytest.approx(0.05)
    assert a["pugd"]["relative_cost"]["sgd"]["grad_evals"] == 2.0
    assert a["pugd"]["relative_cost"]["sgd"]["cpu_time_seconds"] == 2.0
    assert a["sgd"]["relative_cost"]["pugd"]["wall_time_seconds"] == 0.5
    # Paired by seed: pugd − sgd is +10 and +20 points: mean 15, sample
    # std 7.07, t(0.975, 1) = 12.706: 15 ± 63.5, which includes zero.
    d = a["pugd"]["difference"]["sgd"]["final_test_top1"]
    assert (d["mean"], d["std"]) == (pytest.approx(0.15),
                                     pytest.approx(0.1 / np.sqrt(2)))
    assert d["high"] - d["mean"] == pytest.approx(12.7062 * 0.05, rel=1e-4)
    accuracy, cost = _tables(comparison.table(a))
    assert accuracy[1]["final top-1 (%)"] == "65.00 ± 5.00"
    assert accuracy[1]["Δ final vs sgd (pp)"] == "+15.00 [-48.53, +78.53]"
    assert accuracy[1]["final top-1 verdict"] == "no difference shown vs sgd"
    assert accuracy[0]["final top-1 verdict"] == "no difference shown vs pugd"
    assert accuracy[0]["Δ final vs sgd (pp)"] == "—"
    assert cost[0]["evals ÷ pugd"] == "0.50"
    assert cost[1]["wall time ÷ sgd"] == "2.00"


def test_a_single_seed_has_no_spread_and_no_interval():
    """One run per method (a held-out choice, say): its top-1 alone, not
    "± 0.00", and its difference to SGD without an interval."""
    cost = dict(grad_evals=100, wall_time_seconds=1.0, cpu_time_seconds=1.0)
    runs = {"sgd": [dict(cost, final_test_top1=0.5396, best_test_top1=0.55)],
            "looksam": [dict(cost, final_test_top1=0.5, best_test_top1=0.51)]}
    accuracy, _ = _tables(comparison.table(comparison.aggregate(runs)))
    assert accuracy[0]["final top-1 (%)"] == "53.96"
    assert accuracy[1]["Δ final vs sgd (pp)"] == "-3.96"
    assert accuracy[1]["final top-1 verdict"] == "no difference shown vs sgd"
    assert comparison._how_read("SGD's", 1) == (
        "one run per method, so no spread and no interval: Δ is the "
        "difference to SGD's run, in percentage points.")
    assert comparison._how_read("", 1) == "one run per method, so no spread."


def test_verdict_only_when_the_interval_excludes_zero():
    summary = dict(grad_evals=1, wall_time_seconds=1.0, cpu_time_seconds=1.0)

    def verdict(differences):
        runs = {"sgd": [dict(summary, final_test_top1=0.5,
                             best_test_top1=0.5) for _ in differences],
                "rts": [dict(summary, final_test_top1=0.5 + d,
                             best_test_top1=0.5 + d) for d in differences]}
        accuracy, _ = _tables(comparison.table(comparison.aggregate(runs)))
        return accuracy[1]["final top-1 verdict"]

    # Five seeds, all +1 ± 0.1 points: the interval excludes zero.
    assert verdict([0.010, 0.011, 0.009, 0.010, 0.012]) == "above sgd"
    assert verdict([-0.010, -0.011, -0.009, -0.010, -0.012]) == "below sgd"
    # Mean +0.6, within one std of the old rule's "above", but the 95 %
    # interval [−0.55, +1.75] includes zero.
    assert verdict([0.02, -0.005, 0.01, 0.0, 0.005]) == \
        "no difference shown vs sgd"
    assert verdict([0.02]) == "no difference shown vs sgd"  # one seed


@pytest.mark.parametrize("df", [1, 2, 3, 4, 9, 30])
def test_t_quantile_against_integrating_the_density(df):
    assert reporting.t_quantile(0.95, df) == pytest.approx(
        _t_quantile_by_integration(0.95, df), rel=1e-5)
    assert reporting.t_quantile(0.8, df) == pytest.approx(
        _t_quantile_by_integration(0.8, df), rel=1e-5)


def test_t_quantile_table_values():
    # Student's table, two-sided 95 %.
    for df, t in [(1, 12.706), (2, 4.303), (4, 2.776), (10, 2.228)]:
        assert reporting.t_quantile(0.95, df) == pytest.approx(t, abs=1e-3)


@pytest.mark.skipif(not COMMITTED_RUNS, reason="no committed runs yet")
@pytest.mark.parametrize("path", COMMITTED_RUNS, ids=[
    "/".join(p.split(os.sep)[-4:-1:2]) for p in COMMITTED_RUNS])
def test_committed_runs_follow_what_their_settings_give_today(path):
    """ρ and λ of every committed epoch are what the run's settings give:
    a run whose settings no longer say what it trained with fails here."""
    from keras_rts import callbacks, experiment

    settings = experiment.load_settings(os.path.dirname(path))
    kwargs, plan = experiment.method_plan(settings)
    schedulers = {type(c): c for c in plan}
    for row in experiment.read_history(path):
        epoch = int(row["epoch"])
        for name, kind in (("radius", callbacks.RadiusScheduler),
                           ("grad_scale", callbacks.GradScaleScheduler)):
            want = (schedulers[kind].value(epoch) if kind in schedulers
                    else kwargs[name])
            if name == "grad_scale" and want is None:
                continue  # the method's own λ, checked by the model tests
            assert float(row[name]) == pytest.approx(want, rel=1e-6,
                                                     abs=1e-7), (name, epoch)


@pytest.mark.skipif(not COMMITTED_RUNS, reason="no committed runs yet")
@pytest.mark.parametrize("path", COMMITTED_RUNS, ids=[
    "/".join(p.split(os.sep)[-4:-1:2]) for p in COMMITTED_RUNS])
def test_committed_runs_spell_out_what_they_ran_with(path):
    """Every field of a committed run's settings.json holds the value the
    run used, none left to a default (`None` for ρ, its start, its base
    step): a later change of default cannot change what a documented run
    means, and reusing it for a command that now trains something else is
    refused (issue 13, item 6)."""
    from keras_rts import experiment

    folder = os.path.dirname(path)
    with open(os.path.join(folder, "settings.json")) as f:
        saved = json.load(f)
    fields = {f.name: f.default for f in dataclasses.fields(
        experiment.Settings)}
    # Fields newer than a run take their defaults when it is read: only
    # settings that are off by default (the SAM variants' own) may be absent.
    assert set(saved) <= set(fields)
    assert all(fields[name] is None for name in set(fields) - set(saved)), \
        sorted(set(fields) - set(saved))
    settings = experiment.load_settings(folder)
    assert settings == settings.resolved()
    method = settings.recipe_method
    if method.step is None:  # r, t, s, rts, rts_searched
        assert saved["base_method"] in experiment.BASE_METHODS
    if settings.step not in ("sgd", "ugd"):
        assert saved["radius"] is not None
    if (method.takes("t") and saved["timing"] == "fixed"
            and saved["start_epoch"] is None):
        assert 0 < saved["start_fraction"] < 1


def test_runs_made_with_other_settings_are_refused_before_any_work(
        tmp_path):
    from keras_rts import experiment

    settings = experiment.Settings(model="small_resnet", epochs=3,
                                   train_examples=256, batch_size=64)
    out = tmp_path / "cmp"
    old = out / "runs" / "pugd_seed1"
    old.mkdir(parents=True)
    (old / "settings.json").write_text(json.dumps(dataclasses.asdict(
        dataclasses.replace(settings, method="pugd", seed=1, epochs=5))))
    (old / "summary.json").write_text("{}")
    with pytest.raises(ValueError, match=r"pugd_seed1 \(epochs\).*nothing "
                                         r"was changed"):
        comparison.compare(settings, ["sgd", "pugd"], [0, 1], str(out))
    assert sorted(os.listdir(out / "runs")) == ["pugd_seed1"]
    assert sorted(os.listdir(old)) == ["settings.json", "summary.json"]


def test_the_results_page_quotes_its_tables_from_the_committed_files():
    """Every table row of docs/results/README.md is a row of a table that a
    command wrote (a results.md or run_cost.md under docs/results or
    docs/benchmarks): no number of the page is typed by hand."""
    page = os.path.join(ROOT, "docs", "results", "README.md")
    written = set()
    for pattern in (("docs", "results", "*", "*.md"),
                    ("docs", "benchmarks", "*.md")):
        for path in glob.glob(os.path.join(ROOT, *pattern)):
            with open(path) as f:
                written.update(line.strip() for line in f
                               if line.startswith("|"))
    with open(page) as f:
        rows = [line.strip() for line in f if line.startswith("|")]
    assert [r for r in rows if r not in written] == []


def test_a_tables_description_says_when_the_labels_are_noisy():
    settings = dict(dataset="cifar10", model="small_resnet",
                    train_examples=5000, epochs=60, label_noise=0.0)
    assert comparison.describe(settings) == (
        "cifar10, small_resnet, 5000 training images, 60 epochs")
    assert comparison.describe(dict(settings, label_noise=0.4)) == (
        "cifar10, small_resnet, 5000 training images (40 % of their labels "
        "noisy), 60 epochs")
    del settings["label_noise"]  # runs older than the flag
    assert "noisy" not in comparison.describe(
        dict(settings, train_examples=None))


GUIDE_SETTINGS = {"0.05", "0.4", "1.25", "1.5"}
"""Numbers docs/guide.md states as settings or predictions (SAM's ρ, the
label-noise fraction, the cost of a quarter or half of the steps
perturbing), not measurements."""

SEARCH_SETTINGS = {"0.1", "0.625", "0.05", "0.64"}
"""Numbers of docs/tuning.md's CIFAR-10 search that are its settings (lr,
the cost bound, SAM's ρ) or the standard error of a 5,000-image score
(checked below)."""

PAGES = {
    "guide.md": (None, GUIDE_SETTINGS),
    "tuning.md": ("## The search on CIFAR-10", SEARCH_SETTINGS)}
"""The pages whose measured numbers are read from committed tables: the
part from a heading to the next (`None`: all), and the numbers that are
settings."""


def _decimals(text):
    return re.findall(r"\d+\.\d+", text)


@pytest.mark.parametrize("page", sorted(PAGES))
def test_every_measured_number_of_a_page_is_read_from_a_committed_table(
        page):
    """Each is a rounding of a number in a committed table (results,
    run costs, benchmarks, search trials and confirmations): regenerate a
    table, and a stale page fails."""
    tables = []
    for folder in ("results", "benchmarks", "tuning"):
        for path in glob.glob(os.path.join(ROOT, "docs", folder, "**", "*.md"),
                              recursive=True):
            if not path.endswith("README.md"):
                with open(path) as f:
                    tables += [float(x) for x in _decimals(f.read())]
    tables = np.array(tables)
    heading, settings = PAGES[page]
    with open(os.path.join(ROOT, "docs", page)) as f:
        text = f.read()
    if heading is not None:  # the section, to the next heading
        text = text[text.index(heading):]
        text = re.split(r"\n## ", text)[0]
    for number in sorted(set(_decimals(text)) - settings):
        places = len(number.split(".")[1])
        found = bool(np.any(np.abs(np.round(tables, places) - float(number))
                            < 0.5 * 10.0 ** -(places + 3)))
        assert found, f"{number} in docs/{page} is in no committed table"
    # A 5,000-image score of about 71 %: its standard error in points.
    assert round(100 * math.sqrt(0.71 * 0.29 / 5000), 2) == 0.64


def test_the_differences_can_be_paired_against_other_methods():
    from keras_rts import comparison
    folder = os.path.join(ROOT, "docs", "results",
                          "cifar10_small_resnet_5k_60_noise40")
    runs = comparison.load_runs(folder, ["sgd", "sam", "pugd"], [0, 1, 2])
    a = comparison.aggregate(runs, bases=("sgd", "sam"))
    assert list(a["pugd"]["difference"]) == ["sgd", "sam"]
    pugd = np.array([r["final_test_top1"] for r in runs["pugd"]])
    sam = np.array([r["final_test_top1"] for r in runs["sam"]])
    assert a["pugd"]["difference"]["sam"]["final_test_top1"]["mean"] == \
        pytest.approx(np.mean(pugd - sam))
    header = comparison.table(a).split("\n")[0]
    assert "Δ final vs sam (pp)" in header and "vs pugd" not in header


def test_a_methods_own_option_goes_to_the_methods_that_take_it(tfds_dir,
                                                               tmp_path):
    """`--methods sgd sam looksam --alpha 0.1` (docs/results/reproduce.sh)
    runs SGD and SAM as they are and LookSAM with α 0.1, before any run
    exists; an option no listed method takes is still refused."""
    from keras_rts import experiment

    settings = experiment.Settings(model="small_resnet", epochs=3,
                                   train_examples=256, batch_size=64,
                                   alpha=0.1, data_dir=tfds_dir)
    arms = comparison.check(settings, ["sgd", "sam", "looksam"], [0],
                            str(tmp_path / "cmp"))
    assert [arms[m].alpha for m in ("sgd", "sam", "looksam")] == [
        None, None, 0.1]
    assert not os.path.exists(tmp_path / "cmp")
    with pytest.raises(ValueError, match="--alpha: none of the methods"):
        comparison.check(settings, ["sgd", "sam"], [0], str(tmp_path))
