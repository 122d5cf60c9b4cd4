"""Figures of training runs, drawn with matplotlib (Agg, no display)."""

from keras_rts import _extras

matplotlib = _extras.require("matplotlib", "keras_rts.plots")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _column(rows, key):
    return [float(row[key]) for row in rows]


def plot_run(rows, path, title=""):
    """Draws one run's curves into a PNG.

    Panels: top-1 accuracy and loss (train and test) against epoch and
    against gradient evaluations, and the radius ρ and gradient scale λ
    against epoch.

    Args:
        rows: per-epoch logs (dicts with `epoch`, `accuracy`, `loss`,
            `val_accuracy`, `val_loss`, `grad_evals`, `radius`,
            `grad_scale`), as read back from the run's CSV.
        path: the PNG file to write.
        title: the figure's title.
    """
    epochs = [int(float(row["epoch"])) for row in rows]  # from 0
    evals = _column(rows, "grad_evals")
    fig, axes = plt.subplots(2, 3, figsize=(14, 7.5))
    for column, (x, xlabel) in enumerate(
            [(epochs, "epoch (from 0)"), (evals, "gradient evaluations")]):
        for row, metric in enumerate(("accuracy", "loss")):
            ax = axes[row][column]
            ax.plot(x, _column(rows, metric), label="train")
            ax.plot(x, _column(rows, f"val_{metric}"), label="test")
            ax.set(xlabel=xlabel, ylabel="top-1 accuracy"
                   if metric == "accuracy" else "loss")
            ax.legend()
    for row, (key, label) in enumerate(
            [("radius", "radius ρ"), ("grad_scale", "gradient scale λ")]):
        ax = axes[row][2]
        ax.plot(epochs, _column(rows, key), color="tab:green", label=label)
        on = [e for e, r in zip(epochs, rows) if float(r["perturb"]) > 0]
        if on:
            ax.axvspan(min(on) - 0.5, max(on) + 0.5, color="0.9", zorder=0,
                       label="perturbation on")
        ax.set(xlabel="epoch (from 0)", ylabel=label)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_comparison(curves, path, title=""):
    """Test accuracy of several methods against epoch and gradient evaluations.

    Args:
        curves: `{label: (epochs, grad_evals, accuracy, spread)}` where
            `spread` (the standard deviation over seeds) may be `None`.
        path: the PNG file to write.
        title: the figure's title.
    """
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    for label, (epochs, evals, accuracy, spread) in curves.items():
        for ax, x in zip(axes, (epochs, evals)):
            line, = ax.plot(x, accuracy, label=label)
            if spread is not None:
                ax.fill_between(
                    x, [a - s for a, s in zip(accuracy, spread)],
                    [a + s for a, s in zip(accuracy, spread)],
                    color=line.get_color(), alpha=0.15)
    axes[0].set(xlabel="epoch (from 0)", ylabel="test top-1 accuracy")
    axes[1].set(xlabel="gradient evaluations", ylabel="test top-1 accuracy")
    # The first fifth of training, where every method climbs steeply, would
    # squeeze the differences that matter into a thin band.
    later = [a for _, _, accuracy, _ in curves.values()
             for a in accuracy[len(accuracy) // 5:]]
    if later:
        top = max(a for _, _, accuracy, _ in curves.values()
                  for a in accuracy)
        for ax in axes:
            ax.set_ylim(min(later) - 0.02, top + 0.01)
    axes[1].legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
