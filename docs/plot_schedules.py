"""Draws the radius shapes of `keras_rts.schedules` for docs/rts.md.

    python docs/plot_schedules.py   # writes docs/figures/radius_shapes.png
"""

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from keras_rts import schedules  # noqa: E402

EPOCHS = 200
SHAPES = {
    "constant (ρ = 1, PUGD)": schedules.Constant(1.0),
    "cosine 3 → 0.1 (RTS default)": schedules.Cosine(3.0, 0.1, EPOCHS),
    "cosine, warm restarts (T_0 = 25, T_mult = 2)": schedules.Cosine(
        3.0, 0.1, 25, restarts=True, period_multiplier=2),
    "linear 3 → 0.1": schedules.Linear(3.0, 0.1, EPOCHS),
    "step 3 / 1 / 0.1 at 60, 120": schedules.Step([3.0, 1.0, 0.1], [60, 120]),
    "quarter cosine 3 → 0.1 (decreasing)": schedules.QuarterCosine(
        3.0, 0.1, EPOCHS),
    "quarter sine 0.1 → 3 (increasing)": schedules.QuarterSine(
        3.0, 0.1, EPOCHS),
}


def main(path=os.path.join(os.path.dirname(__file__), "figures",
                           "radius_shapes.png")):
    fig, ax = plt.subplots(figsize=(11, 4.5))
    epochs = range(EPOCHS)
    for label, schedule in SHAPES.items():
        ax.plot(epochs, [schedule(e) for e in epochs], label=label)
    ax.axvspan(0, EPOCHS // 2, color="0.9", zorder=0)
    ax.text(EPOCHS / 4, 3.15, "SGD phase of the RTS default\n(ρ unused)",
            ha="center", fontsize=8)
    ax.set(xlabel="epoch", ylabel="radius ρ", ylim=(0, 3.5),
           title="Radius shapes of keras_rts.schedules over 200 epochs")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
