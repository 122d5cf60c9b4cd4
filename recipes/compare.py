"""Compare methods over seeds with one recipe configuration.

    python recipes/compare.py --methods sgd sam pugd r t s rts --seeds 0 1 2 \\
        --output-dir docs/results/cifar10_small_resnet_5k_60 \\
        --preset cpu --epochs 60 --data-dir ../shared/datasets/tensorflow_datasets

Every other flag is a recipe flag (`recipes/cifar.py --help`), shared by all
runs. Finished runs are reused and unfinished ones resumed, so stopping and
rerunning the same command continues the comparison. It writes
results.json, results.md and comparison.png into --output-dir.
"""

import shlex
import sys

import _startup

_startup.quiet_start()

from keras_rts import comparison, experiment
def main(argv=None):
    parser = experiment.argument_parser(__doc__)
    parser.add_argument("--methods", nargs="+", required=True,
                        choices=experiment.METHODS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    args = parser.parse_args(argv)
    if not args.output_dir:
        parser.error("--output-dir is required")
    if args.resume:
        parser.error("--resume is implied: unfinished runs are resumed")
    verbose = args.verbose if args.verbose == "auto" else int(args.verbose)
    results = comparison.compare(
        experiment.settings_from_args(args), args.methods, args.seeds,
        args.output_dir, verbose=verbose,
        command="python recipes/compare.py " + shlex.join(
            sys.argv[1:] if argv is None else argv))
    print(comparison.table(results["aggregates"]))


if __name__ == "__main__":
    main()
