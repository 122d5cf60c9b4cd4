"""Compare methods over seeds with one recipe configuration.

Example:

    python recipes/compare.py --methods sgd sam pugd r t s rts \\
        --seeds 0 1 2 --output-dir docs/results/cifar10_small_resnet_5k_60 \\
        --preset cpu --epochs 60 \\
        --data-dir ../shared/datasets/tensorflow_datasets

Every other flag is a recipe flag (`recipes/cifar.py --help`), shared by all
runs. Finished runs are reused and unfinished ones resumed, so stopping and
rerunning the same command continues the comparison. It writes
results.json, results.md and comparison.png into --output-dir.
"""

import shlex
import sys

import _startup

_startup.quiet_start()

from keras_rts import comparison, data, experiment  # noqa: E402


def main(argv=None):
    parser = experiment.argument_parser(__doc__, exclude=("method", "seed"),
                                        run_flags=False)
    parser.add_argument("--output-dir", required=True,
                        help="the comparison's folder (runs in runs/)")
    parser.add_argument("--methods", nargs="+", required=True,
                        choices=tuple(experiment.METHODS),
                        metavar="METHOD", help="methods to compare: "
                        + ", ".join(experiment.METHODS))
    parser.add_argument("--results-name", default="results",
                        help="stem of the results files, to keep another "
                        "table over the same runs (default: results)")
    parser.add_argument("--seeds", nargs="+", default=[0, 1, 2],
                        type=experiment.FLAG_TYPES["seed"], metavar="SEED",
                        help="seeds of every method (default: 0 1 2)")
    parser.add_argument("--baselines", nargs="+", default=None,
                        choices=tuple(experiment.METHODS), metavar="METHOD",
                        help="methods the differences are paired against "
                        "(default: " + " and ".join(comparison.BASES)
                        + ", those compared)")
    args = parser.parse_args(argv)
    settings = experiment.settings_from_args(args)
    with experiment.flag_errors(parser):
        comparison.check(settings, args.methods, args.seeds, args.output_dir)
        missing = sorted(set(args.baselines or ()) - set(args.methods))
        if missing:
            raise ValueError(f"--baselines: {missing} not among --methods: "
                             "a difference needs both runs.")
    try:
        results = comparison.compare(
            settings, args.methods, args.seeds, args.output_dir,
            verbose=args.verbose, name=args.results_name,
            bases=args.baselines,
            command="python recipes/compare.py " + shlex.join(
                sys.argv[1:] if argv is None else argv))
    except data.DataError as e:  # the finished runs stay; the next resumes
        parser.error(str(e))
    print(comparison.table(results["aggregates"]))


if __name__ == "__main__":
    main()
