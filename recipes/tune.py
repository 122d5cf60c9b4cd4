"""Search the RTS hyperparameters with KerasTuner.

    python recipes/tune.py --dataset cifar10 --preset cpu --tuner bayesian \\
        --max-trials 20 --output-dir tuning/cifar10 --data-dir DIR

Takes the training recipes' flags (the network, data and schedule length)
and searches ρ_max, ρ_min, the radius shape, the start of the perturbation,
λ's start and end, and optionally the learning rate, validating on
--validation-examples training images held out of training. Writes the
tuner's project (<output-dir>/tuner), trials.csv and trials.md, and
best_command.txt: the training-recipe command that reproduces the best
trial. Re-running continues the search; --overwrite starts over.
"""

import csv
import dataclasses
import json
import os

from keras_rts import data, experiment, tuning


def main(argv=None):
    parser = experiment.argument_parser(__doc__)
    parser.add_argument("--tuner", choices=sorted(tuning.TUNERS),
                        default="bayesian")
    parser.add_argument("--max-trials", type=int, default=20)
    parser.add_argument("--hyperband-factor", type=int, default=3)
    parser.add_argument("--overwrite", action="store_true",
                        help="delete the search in --output-dir and start over")
    parser.add_argument("--max-cost-fraction", type=float, default=None,
                        help="score −1 for trials costing more than this "
                        "fraction of PUGD's gradient evaluations")
    parser.add_argument("--cost-weight", type=float, default=0.0,
                        help="score = top-1 − cost_weight · cost fraction")
    space_fields = {f.name: f for f in dataclasses.fields(tuning.SearchSpace)}
    for name in space_fields:
        parser.add_argument(
            "--search-" + name.replace("_", "-"), nargs="+", default=None,
            type=str if name == "radius_shapes" else float,
            help=f"search bounds of {name} (default "
            f"{getattr(tuning.SearchSpace(), name)})")
    args = parser.parse_args(argv)
    if not args.output_dir:
        parser.error("--output-dir is required")
    settings = experiment.settings_from_args(args)
    if not settings.validation_examples:
        total = data.train_size(settings.dataset, settings.data_dir)
        settings = dataclasses.replace(
            settings, validation_examples=max(settings.batch_size,
                                              total // 10))
    space = tuning.SearchSpace(**{
        name: tuple(getattr(args, "search_" + name))
        for name in space_fields if getattr(args, "search_" + name)})
    hypermodel = tuning.RTSHyperModel(
        settings, settings.validation_examples, space,
        max_cost_fraction=args.max_cost_fraction,
        cost_weight=args.cost_weight,
        verbose=args.verbose if args.verbose == "auto" else int(args.verbose))

    search = {"settings": dataclasses.asdict(settings),
              "space": dataclasses.asdict(space), "tuner": args.tuner,
              "hyperband_factor": args.hyperband_factor,
              "max_cost_fraction": args.max_cost_fraction,
              "cost_weight": args.cost_weight}
    search = json.loads(json.dumps(search))  # tuples as lists
    search_path = os.path.join(args.output_dir, "search.json")
    if os.path.exists(search_path) and not args.overwrite:
        with open(search_path) as f:
            saved = json.load(f)
        # Settings newer than the search count as their defaults.
        saved["settings"] = {**json.loads(json.dumps(dataclasses.asdict(
            experiment.Settings()))), **saved.get("settings", {})}
        saved.setdefault("hyperband_factor", args.hyperband_factor)
        if saved != search:
            parser.error(
                f"{args.output_dir} holds a search with other settings: "
                "pass --overwrite to start over, or choose another "
                "--output-dir.")
    os.makedirs(args.output_dir, exist_ok=True)
    with open(search_path, "w") as f:
        json.dump(search, f, indent=2)

    tuner = tuning.make_tuner(
        args.tuner, hypermodel, args.output_dir, project_name="tuner",
        max_trials=args.max_trials, overwrite=args.overwrite,
        seed=settings.seed, hyperband_factor=args.hyperband_factor)
    tuner.search()

    rows = tuning.trials_table(tuner)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with open(os.path.join(args.output_dir, "trials.csv"), "w",
              newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    with open(os.path.join(args.output_dir, "trials.md"), "w") as f:
        f.write("| " + " | ".join(columns) + " |\n")
        f.write("|" + "---|" * len(columns) + "\n")
        for row in rows:
            f.write("| " + " | ".join(
                f"{v:.4g}" if isinstance(v, float) else str(v)
                for v in (row.get(c, "") for c in columns)) + " |\n")
    best = tuner.oracle.get_best_trials(1)[0]
    command = tuning.recipe_command(
        hypermodel.trial_settings(best.hyperparameters))
    with open(os.path.join(args.output_dir, "best_command.txt"), "w") as f:
        f.write(command + "\n")
    print(f"best trial {best.trial_id}: score {best.score:.4f}\n{command}")


if __name__ == "__main__":
    main()
