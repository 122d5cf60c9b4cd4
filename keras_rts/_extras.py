"""The optional dependencies: which extra of the install brings each.

The core (`RTSModel`, `callbacks`, `schedules`, `directions`, `models`,
`tuning.rts_config`) needs Keras, NumPy and one backend. The recipe layer
(`data`, `experiment`, `search`, `comparison`, `plots`, `benchmarks`,
`recipes/`) imports what it needs through `require`, so that a missing
package is named with the extra that installs it.
"""

import importlib

EXTRAS = {
    "tensorflow": ("tensorflow", "recipes"),
    "tensorflow_datasets": ("tensorflow-datasets", "recipes"),
    "keras_tuner": ("keras-tuner", "recipes"),
    "matplotlib": ("matplotlib", "recipes"),
}
"""Module → (its package on PyPI, the keras_rts extra that installs it)."""


def require(module, feature):
    """Imports `module` for `feature`, or raises one `ImportError` that
    names the package and the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        if error.name is not None and error.name.split(".")[0] != module:
            raise  # the module is there but one of its own imports failed
        package, extra = EXTRAS[module]
        raise ImportError(
            f"{feature} needs {package}, which is not installed: "
            f"pip install 'keras_rts[{extra}]' (or pip install {package})."
        ) from None
