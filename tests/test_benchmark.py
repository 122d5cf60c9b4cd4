"""recipes/benchmark.py: what it measures and writes (never its timings)."""

import importlib.util
import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _benchmark():
    recipes = os.path.join(ROOT, "recipes")
    if recipes not in sys.path:  # as when the script runs
        sys.path.insert(0, recipes)
    spec = importlib.util.spec_from_file_location(
        "benchmark", os.path.join(ROOT, "recipes", "benchmark.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _summary(method, seed, evals, cpu, start=None):
    return {"method": method, "seed": seed, "grad_evals": evals,
            "cpu_time_seconds": cpu, "wall_time_seconds": cpu / 2,
            "perturb_start_epoch": start, "epochs": 60}


def test_run_cost_of_a_comparison_against_the_prediction(tmp_path):
    runs = {"sgd": [_summary("sgd", 0, 100, 10.0)],
            "pugd": [_summary("pugd", 0, 200, 19.0, start=0)],
            "rts": [_summary("rts", 0, 150, 15.0, start=30)]}
    folder = tmp_path / "cmp"
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps({"runs": runs}))
    _benchmark().main(["run-cost", "--results", str(folder), "--output",
                       str(tmp_path / "out")])
    rows = json.loads((tmp_path / "out" / "run_cost.json").read_text())[
        "rows"]
    assert [r["method"] for r in rows] == ["rts"]
    (row,) = rows
    assert row["predicted"] == pytest.approx(1.5)  # 30/60·1 + 30/60·2
    assert row["evals_vs_sgd"] == pytest.approx(1.5)
    assert row["cpu_vs_pugd"] == pytest.approx(15 / 19)
    assert "| rts seed 0 | 30 of 60 | 1.500 |" in (
        tmp_path / "out" / "run_cost.md").read_text()


def test_run_cost_refuses_a_switch_outside_the_run(capsys):
    with pytest.raises(SystemExit) as exit_:
        _benchmark().main(["run-cost", "--epochs", "4", "--switch-epoch",
                           "4"])
    assert exit_.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert ": error: --switch-epoch: must be below --epochs=4" in line


@pytest.mark.slow
def test_measured_run_cost_counts_the_predicted_passes(tmp_path):
    _benchmark().main(["run-cost", "--epochs", "2", "--switch-epoch", "1",
                       "--examples", "256", "--rounds", "1", "--output",
                       str(tmp_path)])
    result = json.loads((tmp_path / "run_cost_small_resnet.json").read_text())
    rows = {r["method"]: r for r in result["rows"]}
    assert rows["pugd"]["evals_vs_sgd"] == 2.0
    for method in ("t", "rts"):  # one epoch of SGD, one of PUGD
        assert rows[method]["predicted_vs_sgd"] == 1.5
        assert rows[method]["evals_vs_sgd"] == 1.5
    assert result["grad_evals"] == {"sgd": 4, "pugd": 8, "t": 6, "rts": 6}
    assert all(len(v) == 1 and v[0] > 0
               for v in result["cpu_seconds"].values())
