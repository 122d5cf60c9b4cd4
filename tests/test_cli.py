"""Every bad flag of a recipe: one line naming the flag, exit status 2,
nothing written — and the corrected command then runs in the same folder."""

import importlib
import os
import subprocess
import sys

import numpy as np
import pytest

from keras_rts import experiment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = os.path.join(ROOT, "recipes")


def _script(name):
    if RECIPES not in sys.path:
        sys.path.insert(0, RECIPES)
    return importlib.import_module(name)


def _cifar(argv):
    return experiment.main(argv, datasets=("cifar10", "cifar100"))


def _tiny(argv):
    return experiment.main(argv, datasets=("tiny_imagenet",))


def _refused(main, argv, flag, capsys, prog):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"{prog}: error: {flag}: "), err[0]
    return err[0]


# (flags, the flag named). {data} is the real TFDS folder.
BAD_CIFAR = [
    (["--verbose", "abc"], "--verbose"),
    (["--seed", "-1"], "--seed"),
    (["--seed", "1.5"], "--seed"),
    (["--epochs", "0"], "--epochs"),
    (["--batch-size", "many"], "--batch-size"),
    (["--lr", "nan"], "--lr"),
    (["--lr", "0"], "--lr"),
    (["--momentum", "1.5"], "--momentum"),
    (["--weight-decay", "-1e-4"], "--weight-decay"),
    (["--cutout", "100"], "--cutout"),
    (["--cutout", "-2"], "--cutout"),
    (["--label-noise", "1"], "--label-noise"),
    (["--method", "sgd", "--base-method", "sam"], "--base-method"),
    (["--method", "rts", "--base-method", "sgd"], "--base-method"),
    (["--method", "sgd", "--perturb-every", "4"], "--perturb-every"),
    (["--method", "sam", "--perturb-every", "0"], "--perturb-every"),
    (["--method", "rts", "--radius", "1"], "--radius"),
    (["--method", "pugd", "--radius", "-1"], "--radius"),
    (["--method", "t", "--timing", "lr", "--lr-fraction", "0.001",
      "--epochs", "10"], "--lr-fraction"),
    (["--method", "t", "--start-epoch", "12", "--epochs", "10"],
     "--start-epoch"),
    (["--method", "t", "--start-epoch", "2", "--start-fraction", "0.5"],
     "--start-fraction"),
    (["--method", "t", "--start-epoch", "6", "--end-epoch", "4"],
     "--end-epoch"),
    (["--method", "t", "--timing", "gap", "--gap-xi", "100"], "--gap-xi"),
    (["--method", "rts", "--timing", "variance", "--variance-t0", "70",
      "--epochs", "60"], "--variance-t0"),
    (["--method", "t", "--timing", "variance", "--variance-k", "1"],
     "--variance-k"),
    (["--sub-batch-size", "0"], "--sub-batch-size"),
    (["--image-size", "32"], "--image-size"),
    (["--dataset", "tiny_imagenet"], "--dataset"),
    (["--data-dir", "{missing}"], "--data-dir"),
    (["--data-dir", "{empty}"], "--data-dir"),
    (["--data-dir", "{data}", "--train-examples", "60000"],
     "--train-examples"),
    (["--data-dir", "{data}", "--validation-examples", "50000"],
     "--validation-examples"),
    (["--data-dir", "{data}", "--test-examples", "20000"],
     "--test-examples"),
    (["--data-dir", "{data}", "--batch-size", "6000"], "--train-examples"),
    (["--no-such-flag", "3"], "--no-such-flag"),
    (["--output-dir", "{file}"], "--output-dir"),
    (["--output-dir", "{file}/run"], "--output-dir"),
    (["--data-dir", "{file}"], "--data-dir"),
    # Flags this run would ignore: silently wrong, so refused.
    (["--method", "pugd", "--timing", "variance"], "--timing"),
    (["--method", "sgd", "--radius", "0.1"], "--radius"),
    (["--method", "ugd", "--sub-batch-size", "32"], "--sub-batch-size"),
    (["--method", "rts", "--variance-k", "50"], "--variance-k"),
    (["--method", "t", "--timing", "lr", "--start-epoch", "3"],
     "--start-epoch"),
    (["--method", "sam", "--radius-shape", "linear"], "--radius-shape"),
    (["--method", "r", "--grad-scale-shape", "cosine"], "--grad-scale-shape"),
    (["--validation-examples", "1000", "--test-examples", "100"],
     "--test-examples"),
    (["--sub-batch-size", "48"], "--sub-batch-size"),
    # What only the built network can tell, before anything is written.
    (["--method", "sam", "--exclude-from-perturbation", "kernel", "bias",
      "gamma", "beta"], "--exclude-from-perturbation"),
    (["--method", "sam", "--exclude-from-perturbation", "bais"],
     "--exclude-from-perturbation"),
    (["--method", "msam", "--optimizer", "adamw", "--radius", "0.5",
      "--grad-scale", "0.5"], "--grad-scale"),
    (["--method", "sam", "--decouple", "false"], "--decouple"),
]


@pytest.mark.parametrize("flags, flag", BAD_CIFAR,
                         ids=[" ".join(f) for f, _ in BAD_CIFAR])
def test_cifar_recipe_refuses_bad_flags_in_one_line(flags, flag, tfds_dir,
                                                    tmp_path, capsys):
    paths = {"data": tfds_dir, "missing": str(tmp_path / "missing"),
             "empty": str(tmp_path / "empty"),
             "file": str(tmp_path / "notes.txt")}
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("a user's file")
    out = tmp_path / "run"
    # The real data by default (a later --data-dir wins): a flag that were
    # not refused would train, not wait on a download.
    argv = ["--preset", "cpu", "--data-dir", tfds_dir, "--output-dir",
            str(out)] + [f.format(**paths) for f in flags]
    _refused(_cifar, argv, flag, capsys, os.path.basename(sys.argv[0]))
    assert not out.exists()
    assert not (tmp_path / "missing").exists()
    assert list((tmp_path / "empty").iterdir()) == []
    assert (tmp_path / "notes.txt").read_text() == "a user's file"


@pytest.mark.parametrize("flags, flag", [
    (["--data-dir", "{missing}"], "--data-dir"),
    (["--image-size", "65"], "--image-size"),
    (["--data-dir", "{tiny}", "--train-examples", "5000"],
     "--train-examples"),
    (["--data-dir", "{tiny}", "--image-size", "32", "--cutout", "40"],
     "--cutout"),
])
def test_tiny_imagenet_recipe_refuses_bad_flags_in_one_line(
        flags, flag, tiny_dir, tmp_path, capsys):
    paths = {"tiny": tiny_dir, "missing": str(tmp_path / "missing")}
    out = tmp_path / "run"
    argv = ["--preset", "cpu", "--output-dir", str(out)] + [
        f.format(**paths) for f in flags]
    _refused(_tiny, argv, flag, capsys, os.path.basename(sys.argv[0]))
    assert not out.exists() and not (tmp_path / "missing").exists()


@pytest.mark.parametrize("flags, flag", [
    (["--methods", "sgd", "sgd"], "--methods"),
    (["--methods", "sgd", "--seeds", "0", "0"], "--seeds"),
    (["--methods", "sgd", "--seeds", "-1"], "--seeds"),
    (["--methods", "rts", "--radius", "1"], "--radius"),
    (["--methods", "sgd", "--method", "sam"], "--method"),
    (["--methods", "sgd", "--resume"], "--resume"),
    (["--methods", "sgd", "sam", "--timing", "variance"], "--timing"),
])
def test_compare_refuses_bad_flags_in_one_line(flags, flag, tfds_dir,
                                               tmp_path, capsys):
    compare = _script("compare")
    out = tmp_path / "comparison"
    argv = ["--preset", "cpu", "--data-dir", tfds_dir, "--output-dir",
            str(out)] + flags
    _refused(compare.main, argv, flag, capsys, os.path.basename(sys.argv[0]))
    assert not out.exists()


@pytest.mark.parametrize("flags, flag", [
    (["--max-trials", "0"], "--max-trials"),
    (["--search-radius-decay", "0.5", "2.0"], "--search-radius-decay"),
    (["--search-timings", "weekly"], "--search-timings"),
    (["--search-perturb-every", "2.5", "3"], "--search-perturb-every"),
    (["--epochs", "abc"], "--epochs"),
    (["--method", "sam"], "--method"),
    (["--train-examples", "60000"], "--train-examples"),
    (["--max-cost-fraction", "-1"], "--max-cost-fraction"),
    (["--cost-weight", "nan"], "--cost-weight"),
    (["--confirm-top", "2"], "--confirm-top"),
    (["--confirm-seeds", "0", "1"], "--confirm-seeds"),  # the search's
    (["--confirm-seeds", "1", "1"], "--confirm-seeds"),
    (["--confirm-seeds", "-1"], "--confirm-seeds"),
    (["--confirm-seeds", "1", "--confirm-top", "0"], "--confirm-top"),
])
def test_tune_refuses_bad_flags_in_one_line(flags, flag, tfds_dir, tmp_path,
                                            capsys):
    tune = _script("tune")
    out = tmp_path / "search"
    argv = ["--preset", "cpu", "--data-dir", tfds_dir, "--output-dir",
            str(out)] + flags
    _refused(tune.main, argv, flag, capsys, os.path.basename(sys.argv[0]))
    assert not out.exists()


def test_the_script_prints_only_its_error_line(tmp_path):
    """Run as a user would: no TensorFlow start-up lines, no traceback."""
    result = subprocess.run(
        [sys.executable, os.path.join(RECIPES, "cifar.py"), "--preset",
         "cpu", "--momentum", "1.5", "--output-dir", str(tmp_path / "run")],
        capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "cifar.py: error: --momentum: must be in [0, 1), got 1.5"]
    assert result.stdout == ""


@pytest.mark.parametrize("damage", ["truncated", "garbage_body"])
def test_a_failed_start_leaves_nothing_that_blocks_the_corrected_command(
        damage, tiny_dir, tmp_path, capsys):
    """A damaged image is found while the data is built, after the flags are
    checked — one whose markers are intact but whose data is garbage is
    decoded there too, not first met mid-epoch: one line, exit 2, the run's
    folder not made, and the same command runs once the data is repaired."""
    import shutil
    root = tmp_path / "tiny"
    shutil.copytree(tiny_dir, root)
    first = (root / "val" / "val_annotations.txt").read_text().split()[0]
    image = root / "val" / "images" / first  # a test image the run reads
    content = image.read_bytes()
    if damage == "truncated":
        image.write_bytes(content[:100])
        why = "is not a whole JPEG"
    else:  # SOI and EOI intact, what lies between random
        body = np.random.default_rng(0).integers(
            0, 255, len(content) - 4, dtype=np.uint8).tobytes()
        image.write_bytes(b"\xff\xd8" + body + b"\xff\xd9")
        why = "does not decode as a JPEG"
    out = tmp_path / "run"
    argv = ["--preset", "cpu", "--epochs", "1", "--train-examples", "128",
            "--batch-size", "64", "--image-size", "32", "--test-examples",
            "100", "--method", "sgd", "--data-dir", str(root),
            "--output-dir", str(out), "--verbose", "0"]
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        _tiny(argv)
    assert exit_.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()[-1:]
    assert f"error: Tiny ImageNet: {image} {why}" in line, line
    assert not out.exists()
    image.write_bytes(content)
    summary = _tiny(argv)
    assert summary["epochs"] == 1
    assert sorted(os.listdir(out)) == ["curves.png", "history.csv",
                                       "settings.json", "summary.json"]


def test_help_shows_each_default_once(capsys):
    parser = experiment.argument_parser("the recipe")
    help_text = parser.format_help()
    assert "(default: 0.9)" in help_text  # momentum
    assert "default: None" not in help_text
    for line in help_text.split("\n  --"):
        assert line.count("default") <= 1, line


def test_settings_to_flags_gives_back_the_settings_from_numpy_values():
    """A tuner's values are NumPy scalars; the command must read as flags
    (repr(np.float64(x)) is "np.float64(x)", which no flag parses)."""
    import dataclasses

    import numpy as np

    settings = experiment.Settings(
        dataset="cifar10", method="rts", base_method="sam", epochs=60,
        train_examples=5000, validation_examples=5000,
        radius=(np.float64(0.123456789), np.float64(0.0123)),
        radius_shape="linear", start_fraction=np.float64(0.7690027506839409),
        perturb_every=np.int64(5), seed=np.int64(3))
    flags = experiment.settings_to_flags(settings)
    assert not any("np." in flag for flag in flags), flags
    args = experiment.argument_parser("", run_flags=False).parse_args(flags)
    back = experiment.settings_from_args(args)
    for field in dataclasses.fields(experiment.Settings):
        assert getattr(back, field.name) == getattr(settings, field.name), (
            field.name)


def test_a_search_resumes_wherever_the_data_lives_and_names_what_changed():
    import dataclasses
    import json

    tune = _script("tune")
    settings = experiment.Settings(dataset="cifar10", method="rts",
                                   data_dir="../shared/datasets/tfds")
    saved = json.loads(json.dumps({
        "settings": dataclasses.asdict(settings), "tuner": "bayesian",
        "initial_points": 10, "space": {"timings": ["fixed", "lr"]}}))
    del saved["settings"]["label_noise"]  # a search older than the flag

    def search(**changes):
        tuner = changes.pop("tuner", "bayesian")
        timings = changes.pop("timings", ["fixed", "lr"])
        return json.loads(json.dumps({
            "settings": dataclasses.asdict(
                dataclasses.replace(settings, **changes)),
            "tuner": tuner, "initial_points": 10,
            "space": {"timings": timings}}))

    assert tune.search_differences(saved, search()) == []
    assert tune.search_differences(
        saved, search(data_dir="/work/shared/datasets/tfds")) == []
    assert tune.search_differences(saved, search(lr=0.05, epochs=3)) == [
        "--epochs", "--lr"]
    assert tune.search_differences(saved, search(tuner="random")) == [
        "--tuner"]
    assert tune.search_differences(saved, search(timings=["lr"])) == [
        "--search-timings"]
    assert tune.search_differences(saved, search(label_noise=0.2)) == [
        "--label-noise"]


@pytest.mark.parametrize("script, flags", [
    ("compare.py", ["--methods", "sgd", "--seeds", "0", "--test-examples",
                    "2"]),
    ("tune.py", ["--max-trials", "1", "--validation-examples", "2"]),
])
def test_a_damaged_image_stops_a_comparison_or_search_in_one_line(
        script, flags, tiny_dir, tmp_path):
    from tests.test_data import _copy_tree
    root = tmp_path / "tiny"
    kept = _copy_tree(tiny_dir, str(root), per_class=4)
    folder = root / "train" / kept[0] / "images"
    image = folder / sorted(os.listdir(folder))[0]
    image.write_bytes(b"\xff\xd8" + bytes(range(256)) * 4 + b"\xff\xd9")
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "recipes", script), *flags,
         "--dataset", "tiny_imagenet", "--data-dir", str(root),
         "--epochs", "1", "--batch-size", "2",
         "--output-dir", str(out), "--verbose", "0"],
        capture_output=True, text=True, cwd=ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert f"error: Tiny ImageNet: {image} does not decode" in last, last
    assert "Traceback" not in result.stderr
    assert not (out / "runs").exists() and not (out / "tuner").exists()
