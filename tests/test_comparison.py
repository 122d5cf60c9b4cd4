"""The comparison of methods: its command end to end, and the committed
results recomputed from the runs' own files (no hand-edited numbers)."""

import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from keras_rts import comparison

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMITTED = sorted(glob.glob(os.path.join(ROOT, "docs", "results", "*",
                                          "results.json")))


def _table_rows(markdown):
    lines = [l for l in markdown.splitlines() if l.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(header, (c.strip() for c in l.strip("|").split("|"))))
            for l in lines[2:]]


def _check_results(folder):
    """Recomputes results.json from the runs, and results.md from the JSON."""
    with open(os.path.join(folder, "results.json")) as f:
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
    for method in methods:
        got = results["aggregates"][method]
        for key in ("final_test_top1", "best_test_top1", "grad_evals",
                    "wall_time_seconds", "cpu_time_seconds"):
            values = np.array([s[key] for s in summaries[method]], float)
            assert got[key]["mean"] == pytest.approx(values.mean(), rel=1e-12)
            assert got[key]["std"] == pytest.approx(values.std(), abs=1e-12)
        for base in ("sgd", "pugd"):
            if base not in methods:
                continue
            for cost in ("grad_evals", "cpu_time_seconds"):
                ratio = (np.mean([s[cost] for s in summaries[method]])
                         / np.mean([s[cost] for s in summaries[base]]))
                assert got["relative_cost"][base][cost] == pytest.approx(
                    ratio, rel=1e-12)
    with open(os.path.join(folder, "results.md")) as f:
        rows = _table_rows(f.read())
    assert [r["method"] for r in rows] == methods
    for row in rows:
        a = results["aggregates"][row["method"]]
        mean, std = (float(v) for v in row["final top-1 (%)"].split("±"))
        assert mean == pytest.approx(100 * a["final_test_top1"]["mean"],
                                     abs=0.006)
        assert std == pytest.approx(100 * a["final_test_top1"]["std"],
                                    abs=0.006)
        mean, _ = (float(v) for v in row["best top-1 (%)"].split("±"))
        assert mean == pytest.approx(100 * a["best_test_top1"]["mean"],
                                     abs=0.006)
        assert float(row["gradient evaluations"]) == pytest.approx(
            a["grad_evals"]["mean"], abs=0.5)
        if "evals ÷ sgd" in row:
            assert float(row["evals ÷ sgd"]) == pytest.approx(
                a["relative_cost"]["sgd"]["grad_evals"], abs=0.006)
    with open(os.path.join(folder, "comparison.png"), "rb") as f:
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
                         ids=[os.path.basename(os.path.dirname(p))
                              for p in COMMITTED])
def test_committed_results_are_recomputed_from_their_runs(path):
    _check_results(os.path.dirname(path))


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
    rows = _table_rows(comparison.table(a))
    assert rows[1]["final top-1 (%)"] == "65.00 ± 5.00"
    assert rows[0]["evals ÷ pugd"] == "0.50"
