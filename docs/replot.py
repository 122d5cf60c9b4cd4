"""Redraws every committed figure of runs and comparisons from the
committed tables they were drawn from (history.csv, <name>.json), with
today's plotting code: after a change to the figures (the epochs are
numbered from 0, as in the files, since this script first ran), the
committed ones follow it. Trains nothing, reads no dataset.

    python docs/replot.py            # from the repository's root
"""

import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from keras_rts import comparison, experiment, plots  # noqa: E402


def main():
    redrawn = 0
    for folder, _, names in os.walk(os.path.join(ROOT, "docs")):
        if "history.csv" in names and "settings.json" in names and (
                "curves.png" in names):
            settings = experiment.load_settings(folder)
            plots.plot_run(
                experiment.read_history(os.path.join(folder, "history.csv")),
                os.path.join(folder, "curves.png"),
                title=f"{settings.method} on {settings.dataset} "
                f"({settings.model}), seed {settings.seed}")
            redrawn += 1
        for name in names:
            stem, ext = os.path.splitext(name)
            figure = "comparison.png" if stem == "results" else stem + ".png"
            if ext != ".json" or figure not in names:
                continue
            with open(os.path.join(folder, name)) as f:
                results = json.load(f)
            if not {"methods", "seeds", "settings"} <= set(results):
                continue
            plots.plot_comparison(
                comparison._curves(folder, results["methods"],
                                   results["seeds"]),
                os.path.join(folder, figure),
                title=f"{comparison.describe(results['settings'])}, "
                f"{len(results['seeds'])} seed(s)")
            redrawn += 1
    print(f"{redrawn} figures redrawn")


if __name__ == "__main__":
    main()
