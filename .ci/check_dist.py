"""Checks the built wheel and sdist hold what a user and the tests need."""

import glob
import sys
import tarfile
import zipfile

folder = sys.argv[1]
[wheel] = glob.glob(f"{folder}/keras_rts-*.whl")
[sdist] = glob.glob(f"{folder}/keras_rts-*.tar.gz")
in_wheel = set(zipfile.ZipFile(wheel).namelist())
with tarfile.open(sdist) as tar:
    in_sdist = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
wanted_wheel = ["keras_rts/py.typed", "keras_rts/model.py", "keras_rts/phase.py",
                "keras_rts/methods.py", "keras_rts/step.py",
                "keras_rts/callbacks/timing.py",
                "keras_rts/backend/jax_trainer.py", "keras_rts/data/cifar.py"]
wanted_sdist = ["LICENSE", "README.md", "pyproject.toml", "keras_rts/py.typed",
                "tests/conftest.py", "tests/reference.py", "tests/test_model.py",
                "tests/data/release_0_1_0/looksam.keras",
                "recipes/cifar.py", "recipes/_startup.py", "docs/method.md",
                "docs/benchmarks/step_cost_small_resnet.json", ".ci/run"]
missing = ([f"wheel: {n}" for n in wanted_wheel if n not in in_wheel]
           + [f"sdist: {n}" for n in wanted_sdist if n not in in_sdist])
licence = [n for n in in_wheel if n.endswith("licenses/LICENSE")]
if not licence:
    missing.append("wheel: the LICENSE in its .dist-info")
if missing:
    sys.exit("missing from the distributions: " + ", ".join(missing))
print(f"{wheel}: {len(in_wheel)} files; {sdist}: {len(in_sdist)} files; "
      "both complete")
