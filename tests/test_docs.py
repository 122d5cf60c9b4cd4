"""Every code block of README.md and docs/*.md runs: Python blocks each in
a process of their own (on the backend they are written for), shell
commands as written with the data made small, install lines against the
extras the package declares, the layout against the repository.

A block that needs names defined elsewhere on its page (`net`, `train`,
`model`) gets them from a preamble below, small; `epochs=200` and the
like are shortened by the substitutions beside it — nothing else of the
block changes. A new block with none of these must run as it stands."""

import inspect
import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
import tomllib

import pytest

from tests.test_multiworker import _free_ports

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = ["README.md"] + sorted(
    os.path.join("docs", name) for name in os.listdir(os.path.join(ROOT,
                                                                   "docs"))
    if name.endswith(".md"))
LANGUAGES = ("python", "bash", "text")


def _blocks():
    found = []
    for page in PAGES:
        with open(os.path.join(ROOT, page)) as f:
            text = f.read()
        for match in re.finditer(r"^```(\S*)\n(.*?)^```\s*$", text,
                                 re.S | re.M):
            line = text[:match.start()].count("\n") + 1
            found.append((page, line, match.group(1), match.group(2)))
    return found


BLOCKS = _blocks()


def _of(language):
    return [pytest.param(page, code, id=f"{page}:{line}")
            for page, line, lang, code in BLOCKS if lang == language]


def test_every_block_says_whether_it_is_code():
    unnamed = [f"{page}:{line} ({lang or 'no language'})"
               for page, line, lang, _ in BLOCKS if lang not in LANGUAGES]
    assert not unnamed, f"blocks must be python, bash or text: {unnamed}"
    assert len(_of("python")) >= 13 and len(_of("bash")) >= 6


# --- Python ---------------------------------------------------------------

SMALL = textwrap.dedent("""
    import keras
    import numpy as np
    import tensorflow as tf
    import keras_rts

    _rng = np.random.default_rng(0)


    def _images(n):
        return (_rng.random((n, 32, 32, 3), dtype="float32"),
                _rng.integers(0, 10, n))


    train = tf.data.Dataset.from_tensor_slices(_images(64)).batch(32)
    test = tf.data.Dataset.from_tensor_slices(_images(32)).batch(32)


    def make_network():
        return keras.Sequential([
            keras.Input((32, 32, 3)), keras.layers.Conv2D(4, 3),
            keras.layers.BatchNormalization(), keras.layers.ReLU(),
            keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10)])


    net = make_network()
    held_out = test
    epochs = 60
""")
"""Small stand-ins for the names a page's blocks take as given."""

TRAINED = SMALL + textwrap.dedent("""
    model = keras_rts.RTSModel(net, method="pugd")
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(True))
    model.fit(train, epochs=1, verbose=0)
""")

EPOCHS_200 = [("epochs=200", "epochs=2")]

CONTEXTS = [
    # (page, a line of the block, preamble, substitutions, environment,
    #  slow)
    ("README.md", 'keras_rts.data.load("cifar10", "train")', "",
     [('"train")', '"train", train_examples=256)'),
      ('"test"))', '"test", test_examples=256))'),
      ("epochs=200", "epochs=1")], {"TFDS_DATA_DIR": "{tfds}"}, True),
    ("README.md", "tf.lite.TFLiteConverter", TRAINED, [], {}, False),
    ("README.md", "start_epoch=100", TRAINED,
     [("epochs=200", "epochs=4"), ("start_epoch=100", "start_epoch=2")],
     {}, False),
    ("docs/distributed.md", "tf.distribute.MirroredStrategy()", SMALL,
     EPOCHS_200, {}, True),
    ("docs/distributed.md", "MultiWorkerMirroredStrategy()", SMALL,
     EPOCHS_200, {}, False),
    ("docs/distributed.md", "DataParallel", "import jax\n" + SMALL,
     EPOCHS_200, {"KERAS_BACKEND": "jax"}, False),
    ("docs/rts.md", "callbacks.rts(epochs=200)", SMALL, EPOCHS_200, {},
     False),
    ("docs/rts.md", "3.972 * 0.05", SMALL, [], {}, False),
    ("docs/tuning.md", "class MyHyperModel", SMALL,
     [("max_trials=30", "max_trials=2")], {}, False),
    ("docs/functional.md", "def train_step(self, state, data)", "", [],
     {"KERAS_BACKEND": "jax"}, False),
]


def _context(page, code):
    matches = [c for c in CONTEXTS if c[0] == page and c[1] in code]
    assert len(matches) <= 1, matches
    return matches[0] if matches else (page, "", "", [], {}, False)


def _python_params():
    params = []
    for param in _of("python"):
        page, code = param.values
        slow = _context(page, code)[5]
        params.append(pytest.param(page, code, id=param.id,
                                   marks=[pytest.mark.slow] if slow else []))
    return params


def _environment(extra, tmp_path, shared=None):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
           "KERAS_BACKEND": "tensorflow",
           "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    for name, value in extra.items():
        if "{tfds}" in value:
            value = value.format(tfds=os.path.join(shared,
                                                   "tensorflow_datasets"))
        env[name] = value
    return env


@pytest.mark.parametrize("page, code", _python_params())
def test_the_python_block_runs(page, code, tmp_path, request):
    _, _, preamble, substitutions, env, _ = _context(page, code)
    for old, new in substitutions:
        assert old in code, (old, page)
        code = code.replace(old, new)
    shared = None
    if any("{tfds}" in v for v in env.values()):
        shared = request.getfixturevalue("shared_datasets")
    script = tmp_path / "block.py"
    script.write_text(preamble + "\n" + code)
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path,
                            capture_output=True, text=True,
                            env=_environment(env, tmp_path, shared))
    assert result.returncode == 0, result.stderr[-3000:]


# --- shell ----------------------------------------------------------------

with open(os.path.join(ROOT, "pyproject.toml"), "rb") as _f:
    EXTRAS = set(tomllib.load(_f)["project"]["optional-dependencies"])

SMALL_FLAGS = {
    "cifar.py": ["--epochs", "1", "--train-examples", "128",
                 "--test-examples", "100", "--batch-size", "64"],
    "compare.py": ["--epochs", "1", "--train-examples", "128",
                   "--validation-examples", "128", "--batch-size", "64"],
    "tune.py": ["--epochs", "2", "--max-trials", "1", "--initial-points",
                "1", "--train-examples", "256", "--validation-examples",
                "128", "--batch-size", "64", "--confirm-top", "1"],
}
"""What makes a recipe's run small; the flags after override the block's."""


def _commands(code):
    """The block's commands: continuation lines joined, comments dropped,
    `&&` chains split."""
    code = code.replace("\\\n", " ")
    commands = []
    for line in code.splitlines():
        line = re.sub(r"(^|\s)#.*$", "", line).strip()
        commands += [c.strip() for c in line.split("&&") if c.strip()]
    return commands


def _check_install(command):
    for extras in re.findall(r"\.\[([^\]]+)\]", command):
        for extra in extras.split(","):
            assert extra in EXTRAS, f"{command}: no extra {extra!r}"


def _run_recipe(command, tmp_path, shared):
    words = shlex.split(command)
    env = {}
    while "=" in words[0]:
        name, value = words.pop(0).split("=", 1)
        env[name] = value
    assert words[0] == "python", command
    script = os.path.basename(words[1])
    flags = [w.replace("/data/tensorflow_datasets",
                       os.path.join(shared, "tensorflow_datasets"))
             for w in words[2:]]
    out = tmp_path / script.replace(".py", "")
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, words[1]), *flags,
         *SMALL_FLAGS[script], "--output-dir", str(out), "--verbose", "0"],
        cwd=ROOT, capture_output=True, text=True,
        env=_environment(env, tmp_path))
    assert result.returncode == 0, (command, result.stderr[-3000:])
    return out


def _shell_params():
    params = []
    for param in _of("bash"):
        page, code = param.values
        slow = ("KERAS_BACKEND=jax" in code or "tune.py" in code
                or "TF_CONFIG" in code)
        params.append(pytest.param(page, code, id=param.id,
                                   marks=[pytest.mark.slow] if slow else []))
    return params


@pytest.mark.parametrize("page, code", _shell_params())
def test_the_shell_block_runs(page, code, tmp_path, request):
    if "TF_CONFIG" in code:
        return _run_two_workers(code, tmp_path,
                                request.getfixturevalue("shared_datasets"))
    for command in _commands(code):
        if command.startswith(("python3 -m venv", ". .venv/bin/activate")):
            continue  # the environment these tests run in
        if command.startswith("pip install"):
            _check_install(command)
        elif command == "python -m pytest":  # this suite: CI runs it so
            with open(os.path.join(ROOT, ".ci", "run")) as f:
                assert code.strip() in f.read()
        else:
            out = _run_recipe(command, tmp_path,
                              request.getfixturevalue("shared_datasets"))
            assert os.listdir(out)


def _run_two_workers(code, tmp_path, shared):
    """The multi-worker command on two local processes: the block's
    TF_CONFIG with its hosts made 127.0.0.1 ports, index 0 and 1."""
    config = json.loads(re.search(r"TF_CONFIG='(.*?)'", code, re.S).group(1))
    command = next(c for c in _commands(code)
                   if c.startswith("python recipes/"))
    ports = _free_ports(len(config["cluster"]["worker"]))
    config["cluster"]["worker"] = [f"127.0.0.1:{p}" for p in ports]
    workers = []
    for index in range(len(ports)):
        config["task"]["index"] = index
        words = shlex.split(command)
        flags = [w.replace("/data/tensorflow_datasets",
                           os.path.join(shared, "tensorflow_datasets"))
                 for w in words[2:]]
        env = _environment({}, tmp_path)
        env["TF_CONFIG"] = json.dumps(config)
        workers.append(subprocess.Popen(
            [sys.executable, os.path.join(ROOT, words[1]), *flags,
             *SMALL_FLAGS["cifar.py"], "--output-dir", str(tmp_path / "run"),
             "--verbose", "0"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True))
    for worker in workers:
        _, err = worker.communicate(timeout=900)
        assert worker.returncode == 0, err[-3000:]
    assert os.path.exists(tmp_path / "run" / "summary.json")


# --- the layout -----------------------------------------------------------

def test_the_layout_names_what_the_repository_holds():
    (layout,) = [code for page, _, lang, code in BLOCKS
                 if page == "README.md" and lang == "text"
                 and "keras_rts/model.py" in code]
    paths = re.findall(r"^((?:keras_rts|recipes|docs|tests)/\S*)", layout,
                       re.M)
    assert len(paths) >= 20
    for path in paths:
        assert os.path.exists(os.path.join(ROOT, path)), path
    for name in os.listdir(os.path.join(ROOT, "keras_rts")):
        if name.endswith(".py") and not name.startswith("_"):
            assert f"keras_rts/{name}" in layout, f"{name} not in the layout"


# --- the links --------------------------------------------------------------

def _anchors(path):
    """The anchors GitHub gives a page's headings: lower case, punctuation
    dropped, spaces to hyphens, a repeated heading numbered."""
    anchors, code = set(), False
    with open(path) as f:
        for line in f:
            code ^= line.startswith("```")
            heading = re.match(r"#+ (.*)", line)
            if heading and not code:
                anchor = re.sub(r"[^\w\- ]", "", heading.group(1).strip()
                                .lower()).replace(" ", "-")
                numbered, n = anchor, 0
                while numbered in anchors:
                    n += 1
                    numbered = f"{anchor}-{n}"
                anchors.add(numbered)
    return anchors


LINKED_PAGES = ["README.md"] + sorted(
    os.path.relpath(os.path.join(folder, name), ROOT)
    for folder, _, names in os.walk(os.path.join(ROOT, "docs"))
    if os.sep + "runs" not in folder for name in names if name.endswith(".md"))


@pytest.mark.parametrize("page", LINKED_PAGES)
def test_every_relative_link_of_a_page_leads_somewhere(page):
    """A file the page links to exists, and so does the heading a link's
    `#anchor` names: a renamed heading or a removed table fails here."""
    with open(os.path.join(ROOT, page)) as f:
        text = re.sub(r"^```.*?^```", "", f.read(), flags=re.S | re.M)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        path, _, anchor = target.partition("#")
        full = (os.path.normpath(os.path.join(ROOT, os.path.dirname(page),
                                              path)) if path
                else os.path.join(ROOT, page))
        if not os.path.exists(full):
            broken.append(f"{target} (no such file)")
        elif anchor and full.endswith(".md") and anchor not in _anchors(full):
            broken.append(f"{target} (no such heading)")
    assert broken == []


def _readme_method_table():
    """The README's method table: `{method: {column: text}}`."""
    with open(os.path.join(ROOT, "README.md")) as f:
        lines = f.read().splitlines()
    start = next(i for i, line in enumerate(lines)
                 if line.startswith("| method | perturbation ε |"))
    header = [c.strip() for c in lines[start].strip("|").split(" | ")]
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("| `"):
            break
        cells = [c.strip() for c in line[1:-1].split(" | ")]
        rows[cells[0].strip("`")] = dict(zip(header, cells))
    return rows


def test_the_readme_method_table_is_the_code():
    """Every method, its passes, default ρ and λ and its own options with
    their defaults, as `keras_rts.METHODS` and `keras_rts.methods.OPTIONS`
    hold them."""
    import keras_rts
    from keras_rts import methods

    rows = _readme_method_table()
    assert sorted(rows) == sorted(keras_rts.METHODS)
    for name, method in keras_rts.METHODS.items():
        row = rows[name]
        assert float(row["ρ"]) == method.default_radius, name
        if method.takes_grad_scale:
            assert float(row["λ"]) == method.default_grad_scale, name
        else:
            assert row["λ"] == "none", name
        passes = "1 + 1/k" if method.cycle else f"{method.passes:g}"
        assert row["passes"] == passes, name
        assert row["normalised"] == ("yes" if method.normalize else "no")
        options = [f"`{o.name}={o.default!r}`"
                   for o in methods.OPTIONS.get(name, ())]
        assert row["own options"] == ", ".join(options), name


def test_the_readme_signature_is_the_constructors():
    import keras_rts

    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    block = text[text.index("RTSModel(model, method="):]
    block = " ".join(block[:block.index(")\n```")].split())
    parameters = inspect.signature(keras_rts.RTSModel.__init__).parameters
    wanted = ", ".join(
        "**" + n if p.kind == p.VAR_KEYWORD else
        n if p.default is p.empty else f"{n}={p.default!r}".replace("'", '"')
        for n, p in parameters.items() if n != "self")
    assert block == f"RTSModel({wanted}"
