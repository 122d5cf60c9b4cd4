"""What every recipe shares: a run from its settings, and its artefacts.

- `settings`: `Settings` (one field per recipe flag), the recipe methods
  (`METHODS`), presets, and `validate`;
- `build`: the model's method and callbacks (`method_plan`), the data
  (`datasets`, `check_data`), the optimizer (`compile_model`);
- `run`: `run` and `check_run`, and the artefacts a run writes;
- `flags` and `cli`: the command line — flag parsers, one-line errors,
  `argument_parser` and `main`.

Everything is importable from `keras_rts.experiment` itself.
"""

from keras_rts.experiment.build import (TRIGGER_FLAGS, check_data,
                                        compile_model, datasets,
                                        learning_rate, make_strategy,
                                        method_plan, steps_per_epoch)
from keras_rts.experiment.cli import (argument_parser, main,
                                      settings_from_args, settings_to_flags)
from keras_rts.experiment.flags import (FLAG_TYPES, RecipeParser, flag_error,
                                        flag_errors, non_negative_float,
                                        non_negative_int, positive_float,
                                        positive_int,
                                        verbosity)
from keras_rts.experiment.run import check_run, read_history, run, versions
from keras_rts.experiment.settings import (BASE_METHODS, LOCATION_FIELDS,
                                           METHODS, PRESETS, STRATEGIES,
                                           TIMINGS, RecipeMethod, Settings,
                                           load_settings,
                                           settings_differences,
                                           unused_flags, validate)

__all__ = [
    "BASE_METHODS", "FLAG_TYPES", "LOCATION_FIELDS", "METHODS", "PRESETS",
    "STRATEGIES", "TIMINGS", "TRIGGER_FLAGS", "RecipeMethod", "RecipeParser",
    "Settings", "argument_parser", "check_data", "check_run",
    "compile_model", "datasets", "flag_error", "flag_errors",
    "learning_rate", "load_settings", "main", "make_strategy",
    "method_plan", "non_negative_float", "non_negative_int",
    "positive_float", "positive_int",
    "read_history", "run", "settings_differences", "settings_from_args",
    "settings_to_flags", "steps_per_epoch", "unused_flags", "validate",
    "verbosity",
    "versions",
]
