"""The recipes' command line: one flag per `Settings` field, and `main`."""

import argparse
import dataclasses
import os

from keras_rts import data as data_lib
from keras_rts.experiment.flags import FLAG_TYPES, RecipeParser, flag_errors
from keras_rts.experiment.flags import verbosity
from keras_rts.experiment.runs import StartError, check_run, run
from keras_rts.experiment.settings import (OPTIMIZER_DEFAULTS, PRESETS,
                                           Settings)


def argument_parser(description, datasets=data_lib.DATASETS, exclude=(),
                    run_flags=True):
    """The recipes' parser: one flag per `Settings` field, and run flags.

    Args:
        description: the recipe's description.
        datasets: the datasets this recipe offers.
        exclude: `Settings` fields that are not flags of this script.
        run_flags: offer `--output-dir`, `--resume` and `--tensorboard`.
    """
    parser = RecipeParser(
        description=description, allow_abbrev=False,  # --method ≠ --methods
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="paper",
                        help="scale of the run; explicit flags override it "
                        "(default: paper)")
    if run_flags:
        parser.add_argument(
            "--output-dir", default=None,
            help="the run's folder (default: runs/<dataset>_<model>_"
            "<method>_seed<seed>)")
        parser.add_argument("--resume", action="store_true",
                            help="continue the unfinished run in "
                            "--output-dir")
        parser.add_argument("--tensorboard", action="store_true",
                            help="also log to TensorBoard in <output-dir>/"
                            "tensorboard")
    parser.add_argument("--verbose", default="auto", type=verbosity,
                        help="Keras fit verbosity: auto, 0, 1 or 2 (default: "
                        "auto; one line per epoch when the output is not a "
                        "terminal)")
    for field in dataclasses.fields(Settings):
        if field.name in exclude:
            continue
        flag = "--" + field.name.replace("_", "-")
        meta = dict(field.metadata)
        help_text = meta.pop("help")
        if field.name == "dataset":
            meta["choices"] = datasets
            default = datasets[0]
        else:
            default = None  # filled from the preset, then the field default
        if field.type is bool or field.default is False:
            parser.add_argument(flag, action="store_true", help=help_text)
            continue
        kind = FLAG_TYPES.get(field.name, str)
        shown = _default_text(field)
        if shown is not None:
            help_text += f" (default: {shown})"
        parser.add_argument(flag, type=kind, default=default, help=help_text,
                            metavar=field.name.split("_")[-1].upper()
                            if "choices" not in meta else None, **meta)
    return parser


def _default_text(field):
    """The default a flag's help shows, or `None` if the help says it."""
    if "default" in field.metadata["help"]:
        return None
    presets = {name: "all" if p[field.name] is None else p[field.name]
               for name, p in PRESETS.items() if field.name in p}
    if len(set(presets.values())) == 1:
        return str(next(iter(presets.values())))
    if presets:
        return ", ".join(f"{v} with --preset {k}" for k, v in presets.items())
    if field.default is None:
        return None
    return str(field.default)


def settings_from_args(args):
    """`Settings` from parsed flags: explicit flags, then the optimizer's
    defaults (`OPTIMIZER_DEFAULTS`), then the preset, then the fields'."""
    preset = {**PRESETS[args.preset], **OPTIMIZER_DEFAULTS.get(
        getattr(args, "optimizer", None), {})}
    values = {}
    for field in dataclasses.fields(Settings):
        value = getattr(args, field.name, None)
        if value is None:
            value = preset.get(field.name, field.default)
        values[field.name] = tuple(value) if isinstance(value, list) else value
    return Settings(**values)


def settings_to_flags(settings):
    """The recipe flags that give `settings` (with `--preset paper`)."""
    flags = ["--preset", "paper"]
    for field in dataclasses.fields(Settings):
        value = getattr(settings, field.name)
        default = PRESETS["paper"].get(field.name, field.default)
        if value == default or value is None:
            continue
        flag = "--" + field.name.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag)
        elif isinstance(value, (tuple, list)):
            flags += [flag] + [repr(float(v)) for v in value]
        else:  # float() first: repr(np.float64(x)) is "np.float64(x)"
            flags += [flag, repr(float(value)) if isinstance(value, float)
                      else str(value)]
    return flags


def main(argv=None, description=None, datasets=data_lib.DATASETS):
    """Parses the flags and runs: what a recipe script calls.

    Every bad flag value, the data and the output folder are checked
    before anything is written; an error is one line naming the flag
    (exit status 2).
    """
    parser = argument_parser(description, datasets)
    args = parser.parse_args(argv)
    with flag_errors(parser):
        settings = settings_from_args(args)
        output_dir = args.output_dir or os.path.join(
            "runs", f"{settings.dataset}_{settings.model}_"
            f"{settings.method}_seed{settings.seed}")
        check_run(settings, output_dir, resume=args.resume)
    try:
        summary = run(settings, output_dir=output_dir, resume=args.resume,
                      verbose=args.verbose, tensorboard=args.tensorboard)
    except (data_lib.DataError, StartError) as e:  # before anything is written
        parser.error(str(e))
    print(f"{settings.method} on {settings.dataset}: final "
          f"{summary['evaluated_on']} top-1 "
          f"{summary['final_test_top1']:.4f}, best "
          f"{summary['best_test_top1']:.4f}, {summary['grad_evals']} "
          f"gradient evaluations, {summary['wall_time_seconds']:.0f} s; "
          f"artefacts in {output_dir}")
    return summary
