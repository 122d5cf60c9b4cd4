"""Search the RTS hyperparameters with KerasTuner.

Example:

    python recipes/tune.py --dataset cifar10 --preset cpu --epochs 60 \\
        --tuner bayesian --max-trials 30 --validation-examples 5000 \\
        --max-cost-fraction 0.625 --output-dir docs/tuning/cifar10_60 \\
        --data-dir ../shared/datasets/tensorflow_datasets

Takes the training recipes' data, network and schedule flags, and searches
the step the controls drive, ρ, λ and the timing (keras_rts.tuning, keras_rts.search), scoring
each trial on --validation-examples training images held out of training.
Writes the tuner's project (<output-dir>/tuner), search.json (the search's
settings), and after every trial trials.csv and trials.md (best first) and
best_command.txt: the training-recipe command that reproduces the best
trial. With --confirm-seeds, SGD and the --confirm-top best trials are then
re-run with those seeds on the same validation split (confirmation/, a
comparison's folder): a trial is chosen by its mean there, not by the score
it was picked for. Re-running the same command continues the search and
the confirmation; --overwrite starts the search over.
"""

import dataclasses
import json
import os
import shlex
import shutil
import sys

import _startup

_startup.quiet_start()

from keras_rts import comparison, data, experiment, files, search, tuning
from keras_rts.reporting import write_table
NOT_SEARCH_FLAGS = (
    "method", "base_method", "radius", "radius_shape", "grad_scale",
    "grad_scale_shape", "timing", "start_fraction", "start_epoch",
    "end_epoch", "lr_fraction", "perturb_every", "variance_t0",
    "variance_gamma", "variance_k", "gap_xi", "gap_mu", "gap_t",
    "strategy", "test_examples")
"""Settings the search chooses, or does not use (it runs on one process's
devices and never reads the test set): not flags of tune.py."""


def _space_flags(parser):
    defaults = tuning.SearchSpace()
    for field in dataclasses.fields(tuning.SearchSpace):
        value = getattr(defaults, field.name)
        if field.name == "lr":
            kind, shown = float, "the settings' --lr"
        else:
            kind = type(value[0])
            shown = " ".join(str(v) for v in value)
        parser.add_argument(
            "--search-" + field.name.replace("_", "-"), nargs="+",
            type=kind, default=None, metavar=kind.__name__.upper(),
            help=f"search: {field.name} (default: {shown})")


def write_trials(tuner, hypermodel, output_dir):
    """Writes trials.csv, trials.md and best_command.txt of the search."""
    rows = search.trials_table(tuner)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    write_table(os.path.join(output_dir, "trials.md"), columns,
                rows, csv_path=os.path.join(output_dir, "trials.csv"))
    best = search.best_trial(tuner)  # a failed trial is never the best
    if best is None:
        return None, None
    command = search.recipe_command(
        hypermodel.trial_settings(best.hyperparameters))
    with open(os.path.join(output_dir, "best_command.txt"), "w") as f:
        f.write(command + "\n")
    return best, command


SEARCH_FILES = ("search.json", "trials.csv", "trials.md", "best_command.txt",
                "tuner", "confirmation")
"""What a search writes in its --output-dir: what --overwrite deletes (and
nothing else of the folder)."""


def clear_search(output_dir):
    """Deletes what a search wrote in `output_dir` (`SEARCH_FILES`)."""
    for name in SEARCH_FILES:
        path = os.path.join(output_dir, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)


def search_differences(saved, search):
    """What a resumed search would change: the flags of the differing
    settings, space bounds (`--search-…`) and search options; where the
    data lives is not one of them."""
    # Settings newer than the saved search count as their defaults.
    saved_settings = {**json.loads(json.dumps(dataclasses.asdict(
        experiment.Settings()))), **saved.get("settings", {})}
    changed = [name for name, value in search["settings"].items()
               if name not in experiment.LOCATION_FIELDS
               and saved_settings.get(name) != value]
    changed += ["search_" + name
                for name, value in search.get("space", {}).items()
                if saved.get("space", {}).get(name) != value]
    # What is searched follows from the settings and the space.
    changed += [name for name in search
                if name not in ("settings", "space", "space_searched")
                and saved.get(name) != search[name]]
    return ["--" + name.replace("_", "-") for name in changed]


def main(argv=None):
    parser = experiment.argument_parser(__doc__, exclude=NOT_SEARCH_FLAGS,
                                        run_flags=False)
    parser.add_argument("--output-dir", required=True,
                        help="the search's folder")
    parser.add_argument("--tuner", choices=sorted(search.TUNERS),
                        default="bayesian")
    parser.add_argument("--max-trials", type=experiment.positive_int,
                        default=20, help="trials of random and Bayesian "
                        "searches (Hyperband's follow from --epochs)")
    parser.add_argument("--hyperband-factor", type=experiment.positive_int,
                        default=3, help="Hyperband's reduction factor "
                        "(default: 3)")
    parser.add_argument("--initial-points", type=experiment.positive_int,
                        default=10, help="Bayesian: random trials before the "
                        "objective is modelled (default: 10)")
    parser.add_argument("--overwrite", action="store_true",
                        help="delete the search in --output-dir and start "
                        "over")
    parser.add_argument("--max-cost-fraction",
                        type=experiment.positive_float, default=None,
                        help="score −1 for trials costing more than this "
                        "fraction of PUGD's gradient evaluations (> 0)")
    parser.add_argument("--cost-weight", type=experiment.non_negative_float,
                        default=0.0, help="score = top-1 − cost_weight · "
                        "cost fraction (default: 0)")
    parser.add_argument("--confirm-seeds", nargs="+", default=None,
                        type=experiment.FLAG_TYPES["seed"], metavar="SEED",
                        help="after the search, re-run SGD and the best "
                        "trials with these seeds (not the search's) on the "
                        "same validation split: confirmation/results.md")
    parser.add_argument("--confirm-top", type=experiment.positive_int,
                        default=None, help="with --confirm-seeds: how many "
                        "of the best trials (default: 3)")
    _space_flags(parser)
    args = parser.parse_args(argv)
    settings = experiment.settings_from_args(args)
    if args.confirm_top is not None and args.confirm_seeds is None:
        parser.error("--confirm-top: the trials are re-run only with "
                     "--confirm-seeds.")
    if args.confirm_seeds is not None and (
            settings.seed in args.confirm_seeds
            or len(set(args.confirm_seeds)) != len(args.confirm_seeds)):
        parser.error(f"--confirm-seeds: {args.confirm_seeds} must be "
                     f"distinct and other than the search's --seed "
                     f"{settings.seed}: a trial's score on its own seed is "
                     "the one the search chose it by.")
    space_args = {f.name: getattr(args, "search_" + f.name)
                  for f in dataclasses.fields(tuning.SearchSpace)}
    try:
        space = tuning.SearchSpace(**{
            name: tuple(value) for name, value in space_args.items()
            if value is not None})
    except ValueError as e:  # the message starts with the field's name
        field = str(e).split()[0].rstrip(":")
        parser.error(f"--search-{field.replace('_', '-')}: {e}")
    with experiment.flag_errors(parser):
        validation = settings.validation_examples or max(
            settings.batch_size,
            data.train_size(settings.dataset, settings.data_dir) // 10)
        experiment.check_data(dataclasses.replace(
            settings, validation_examples=validation))
        hypermodel = search.RTSHyperModel(
            settings, validation, space,
            max_cost_fraction=args.max_cost_fraction,
            cost_weight=args.cost_weight,
            verbose=args.verbose)
        if settings.dataset == "tiny_imagenet":
            # Its images decoded once now: a damaged one named here, not
            # in every trial (KerasTuner logs a failed trial and goes on).
            experiment.datasets(hypermodel.settings)
        if hypermodel.space_note:
            print(f"note: {hypermodel.space_note}")
        confirmation_dir = os.path.join(args.output_dir, "confirmation")
        if args.confirm_seeds:  # the trials' runs are checked once known
            comparison.check_arms(search.confirmation_arms(hypermodel, []),
                                  args.confirm_seeds, confirmation_dir)
    settings = hypermodel.settings

    record = {"settings": dataclasses.asdict(settings),
              "space": dataclasses.asdict(space), "tuner": args.tuner,
              "space_searched": dataclasses.asdict(hypermodel.space),
              "hyperband_factor": args.hyperband_factor,
              "initial_points": args.initial_points,
              "max_cost_fraction": args.max_cost_fraction,
              "cost_weight": args.cost_weight}
    record = json.loads(json.dumps(record))  # tuples as lists
    search_path = os.path.join(args.output_dir, "search.json")
    if args.overwrite:  # the old search's trials, tables and confirmation
        clear_search(args.output_dir)
    if os.path.exists(search_path):
        remedy = "pass --overwrite to start the search over"
        with experiment.flag_errors(parser):
            changed = search_differences(
                files.read_json(search_path, remedy), record)
            for folder, _, names in os.walk(os.path.join(args.output_dir,
                                                         "tuner")):
                for name in names:  # the tuner's state, read on resuming
                    if name.endswith(".json"):
                        files.read_json(os.path.join(folder, name), remedy,
                                        kind=None)
        if changed:
            parser.error(
                f"--output-dir: {args.output_dir} holds a search with other "
                f"{', '.join(changed)}: pass --overwrite to start over, or "
                "choose another folder.")
    else:
        os.makedirs(args.output_dir, exist_ok=True)
        with open(search_path, "w") as f:
            json.dump(record, f, indent=2)

    tuner = search.make_tuner(
        args.tuner, hypermodel, args.output_dir, project_name="tuner",
        max_trials=args.max_trials, overwrite=args.overwrite,
        seed=settings.seed, hyperband_factor=args.hyperband_factor,
        initial_points=args.initial_points,
        on_trial_end=lambda t: write_trials(t, hypermodel, args.output_dir))
    tuner.search()
    best, command = write_trials(tuner, hypermodel, args.output_dir)
    if best is None:
        sys.exit(f"error: no trial of the search completed (trials.md in "
                 f"{args.output_dir} lists them): no best command.")
    print(f"best trial {best.trial_id}: score {best.score:.4f}\n{command}")
    if args.confirm_seeds:
        results = comparison.compare_arms(
            search.confirmation_arms(hypermodel, tuner.oracle.get_best_trials(
                args.confirm_top or 3)),
            args.confirm_seeds, confirmation_dir, verbose=args.verbose,
            command="python recipes/tune.py " + shlex.join(
                sys.argv[1:] if argv is None else argv))
        print(comparison.table(results["aggregates"]))
        chosen = search.confirmed_choice(results["aggregates"])
        if chosen is not None:
            command = search.recipe_command(hypermodel.trial_settings(
                tuner.oracle.get_trial(chosen).hyperparameters))
            with open(os.path.join(confirmation_dir, "chosen_command.txt"),
                      "w") as f:
                f.write(command + "\n")
            print(f"chosen by the confirmation: trial {chosen}\n{command}")


if __name__ == "__main__":
    main()
