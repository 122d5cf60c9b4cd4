"""recipes/benchmark.py: what it measures and writes (never its timings)."""

import importlib.util
import json
import os
import subprocess
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


def test_the_device_check_runs_without_tensorflow(tmp_path):
    """`benchmark.py device` as on a GPU machine without TensorFlow (here
    on the CPU, tiny): the reference tests run first, then the grid until
    its budget, written as JSON and markdown."""
    pytest.importorskip("jax")
    from tests.test_core import BLOCK

    out = tmp_path / "out"
    code = BLOCK + (
        "import runpy\n"
        "sys.path.insert(0, 'recipes')\n"
        "sys.argv = ['recipes/benchmark.py', 'device', '--models',"
        " 'small_resnet', '--policies', 'float32', '--batch-sizes', '8',"
        " '4', '--image-size', '8', '--steps', '2', '--rounds', '1',"
        " '--budget-seconds', '1', '--tests',"
        " 'tests/test_directions.py::test_global_norm_is_one_norm_over_all_tensors',"
        f" '--output', {str(out)!r}]\n"
        "runpy.run_path('recipes/benchmark.py', run_name='__main__')\n"
        "assert 'tensorflow' not in sys.modules\n")
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True,
        text=True, timeout=900, env=dict(os.environ, KERAS_BACKEND="jax"))
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((out / "device_jax_cpu.json").read_text())
    assert result["tests"]["returncode"] == 0
    assert result["tests"]["summary"].startswith("1 passed")
    # The budget was spent by the tests: the first point only, the rest
    # named as skipped.
    [point] = result["points"]
    assert (point["policy"], point["model"], point["batch_size"]) == (
        "float32", "small_resnet", 8)
    assert result["skipped"] == [
        {"policy": "float32", "model": "small_resnet", "batch_size": 4}]
    median = point["median_step_seconds"]
    assert set(median) == {"keras", "sgd", "pugd_perturb_off", "sam",
                           "pugd", "pugd_sub_batch_32", "msam"}
    for ratio in point["ratios"]:
        assert ratio["ratio"] == pytest.approx(
            median[ratio["step"]] / median[ratio["relative_to"]])
    assert point["images_per_second"]["pugd"] == pytest.approx(
        8 / median["pugd"])
    assert result["machine"]["keras_backend"] == "jax"
    assert "tensorflow" not in result["machine"]
    table = (out / "device_jax_cpu.md").read_text()
    assert "Reference tests on the device: 1 passed" in table
    assert "Not measured (over the time budget): float32 small_resnet " \
        "batch 4." in table


def test_run_cost_of_a_comparison_without_a_switch_is_refused(tmp_path,
                                                              capsys):
    runs = {"sgd": [_summary("sgd", 0, 100, 10.0)],
            "pugd": [_summary("pugd", 0, 200, 19.0, start=0)]}
    folder = tmp_path / "cmp"
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps({"runs": runs}))
    with pytest.raises(SystemExit) as exit_:
        _benchmark().main(["run-cost", "--results", str(folder), "--output",
                           str(tmp_path / "out")])
    assert exit_.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "none of which switches" in line
    assert not (tmp_path / "out").exists()


def test_model_cost_writes_each_network_against_the_small_resnet(tmp_path):
    _benchmark().main(["model-cost", "--batch-size", "4", "--steps", "1",
                       "--rounds", "1", "--output", str(tmp_path)])
    import keras

    backend = keras.backend.backend()  # TensorFlow's file is not named
    stem = "model_cost" + ("" if backend == "tensorflow" else "_" + backend)
    with open(tmp_path / f"{stem}.json") as f:
        result = json.load(f)
    median = result["median_step_seconds"]
    assert list(median) == ["small_resnet", "vit", "vit_4_heads",
                            "vit_depth_6"]
    assert result["ratios"]["small_resnet"] == 1.0
    assert result["ratios"]["vit"] == pytest.approx(
        median["vit"] / median["small_resnet"])
    # 4 heads of 32 or 2 of 64: the same weights; 6 blocks: more.
    params = result["parameters"]
    assert params["vit"] == params["vit_4_heads"] == 280_970
    assert params["vit_depth_6"] > params["vit"]
    table = (tmp_path / f"{stem}.md").read_text()
    assert "| vit | adamw | 280,970 |" in table
    assert "Command: `python recipes/benchmark.py model-cost" in table
