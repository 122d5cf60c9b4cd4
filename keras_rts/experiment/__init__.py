"""What every recipe shares: a run from its settings, and its artefacts.

- `settings`: `Settings` (one field per recipe flag), the recipe methods
  (`METHODS`) and presets; `validation`: `validate` and the checks it
  makes;
- `build`: the model's method and callbacks (`method_plan`), the data
  (`datasets`, `check_data`), the optimizer (`compile_model`);
- `runs`: `run` and `check_run`, and the artefacts a run writes;
- `flags` and `cli`: the command line — flag parsers, one-line errors,
  `argument_parser` and `main`.

Everything is importable from `keras_rts.experiment` itself, each submodule
imported on first use (`flags` needs no TensorFlow).
"""

import importlib

_EXPORTS = {
    **dict.fromkeys((
        "TRIGGER_FLAGS", "check_data", "compile_model", "datasets",
        "learning_rate", "make_strategy", "method_plan", "steps_per_epoch",
    ), "build"),
    **dict.fromkeys((
        "argument_parser", "main", "settings_from_args", "settings_to_flags",
    ), "cli"),
    **dict.fromkeys((
        "FLAG_TYPES", "RecipeParser", "flag_error", "flag_errors",
        "non_negative_float", "non_negative_int", "positive_float",
        "positive_int", "verbosity",
    ), "flags"),
    **dict.fromkeys((
        "check_run", "read_history", "run", "versions",
    ), "runs"),
    **dict.fromkeys((
        "BASE_METHODS", "LOCATION_FIELDS", "METHODS", "PRESETS",
        "STRATEGIES", "TIMINGS", "RecipeMethod", "Settings", "load_settings",
    ), "settings"),
    **dict.fromkeys((
        "settings_differences", "unused_flags", "validate",
    ), "validation"),
}
"""Each name, and the submodule it comes from (imported on first use:
`flags` needs no TensorFlow, the others do)."""

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        module = importlib.import_module(
            f"keras_rts.experiment.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(
        f"module 'keras_rts.experiment' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
