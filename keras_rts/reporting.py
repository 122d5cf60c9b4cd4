"""What every report shares: tables, confidence intervals, the machine.

- `write_table` writes one markdown table (and optionally the same rows as
  CSV): the one table writer of the recipes, the comparison and the
  benchmarks.
- `paired_interval` gives the mean of paired differences (by seed) with a
  Student-t confidence interval, and `verdict` reads it: "above"/"below"
  only when the interval excludes zero, "no difference shown" otherwise.
- `machine` and `describe_machine` say where numbers were measured.
"""

import csv
import math
import os
import platform

import numpy as np


def _cell(value):
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def markdown_table(columns, rows):
    """A markdown table of `rows` (dicts by column, or sequences of cells)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = ([row.get(c) for c in columns] if isinstance(row, dict)
                 else list(row))
        lines.append("| " + " | ".join(_cell(v) for v in cells) + " |")
    return "\n".join(lines)


def write_table(path, columns, rows, csv_path=None):
    """Writes `rows` as a markdown table to `path`, and as CSV to `csv_path`.

    Args:
        path: the markdown file.
        columns: the column names.
        rows: dicts by column name (missing cells empty).
        csv_path: optionally, a CSV file of the same rows.
    """
    with open(path, "w") as f:
        f.write(markdown_table(columns, rows) + "\n")
    if csv_path:
        with open(csv_path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(columns),
                                    extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)


# --- confidence intervals -------------------------------------------------

def t_cdf_two_sided(t, df):
    """P(|T| ≤ t) for Student's t with `df` (a positive integer) degrees.

    The closed forms for integer degrees of freedom (Abramowitz & Stegun
    26.7.3–4), exact to rounding.
    """
    if df < 1 or int(df) != df:
        raise ValueError(f"df must be a positive integer, got {df!r}.")
    theta = math.atan(abs(t) / math.sqrt(df))
    c2 = math.cos(theta) ** 2
    if df % 2:  # odd
        total, term = 0.0, math.cos(theta)
        for k in range(1, (int(df) - 1) // 2 + 1):
            total += term
            term *= c2 * (2 * k) / (2 * k + 1)
        return 2 / math.pi * (theta + math.sin(theta) * total)
    total, term = 0.0, 1.0
    for k in range(1, int(df) // 2 + 1):
        total += term
        term *= c2 * (2 * k - 1) / (2 * k)
    return math.sin(theta) * total


def t_quantile(confidence, df):
    """The t with P(|T| ≤ t) = `confidence` for `df` degrees of freedom."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}.")
    low, high = 0.0, 1.0
    while t_cdf_two_sided(high, df) < confidence:
        high *= 2
    for _ in range(200):
        middle = (low + high) / 2
        if t_cdf_two_sided(middle, df) < confidence:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def paired_interval(values, baseline, confidence=0.95):
    """The mean paired difference `values − baseline` and its t interval.

    Args:
        values: one method's results, by seed.
        baseline: the other method's, the same seeds in the same order.
        confidence: the interval's coverage.

    Returns:
        A dict: `mean`, `std` (of the differences, n − 1), `n`, `low`,
        `high` (`None` with fewer than two pairs) and `differences`.
    """
    d = np.subtract(np.asarray(values, np.float64),
                    np.asarray(baseline, np.float64))
    if d.ndim != 1 or len(d) == 0:
        raise ValueError("values and baseline must be non-empty and paired.")
    n = len(d)
    mean = float(d.mean())
    if n < 2:
        return {"mean": mean, "std": None, "n": n, "low": None,
                "high": None, "differences": d.tolist()}
    std = float(d.std(ddof=1))
    half = t_quantile(confidence, n - 1) * std / math.sqrt(n)
    return {"mean": mean, "std": std, "n": n, "low": mean - half,
            "high": mean + half, "differences": d.tolist()}


def verdict(interval, baseline):
    """`above <baseline>` / `below <baseline>` when the interval excludes 0."""
    if interval["low"] is not None and interval["low"] > 0:
        return f"above {baseline}"
    if interval["high"] is not None and interval["high"] < 0:
        return f"below {baseline}"
    return f"no difference shown vs {baseline}"


# --- the machine ----------------------------------------------------------

def machine():
    """The processor and the number of CPU cores of this machine."""
    return {"processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count()}


def backend_versions():
    """The versions of Keras, NumPy and the installed backends that matter
    to a number: the active one always, the others if already imported."""
    import sys

    import keras

    versions = {"keras": keras.__version__, "numpy": np.__version__}
    active = keras.backend.backend()
    for name in ("tensorflow", "jax", "torch"):
        module = sys.modules.get(name)
        if module is None and name == active:
            module = __import__(name)
        if module is not None and hasattr(module, "__version__"):
            versions[name] = module.__version__
    return versions


def devices():
    """The accelerators the active Keras backend trains on (empty on a
    CPU-only machine): their kinds, e.g. `["NVIDIA H200"]`."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return [d.device_kind for d in jax.devices() if d.platform != "cpu"]
    if backend == "torch":
        import torch

        return [torch.cuda.get_device_name(i)
                for i in range(torch.cuda.device_count())]
    if backend == "tensorflow":
        import tensorflow as tf

        return [tf.config.experimental.get_device_details(d).get(
            "device_name", d.name) for d in tf.config.list_physical_devices()
            if d.device_type != "CPU"]
    return []


def describe_machine(*parts):
    """One line for the dictionaries of `machine` and library versions.

    Example:

    >>> describe_machine({"processor": "x86_64", "cpus": 2}, {"keras": "3"})
    'x86_64, 2 CPU cores; keras 3'
    """
    machine = {}
    for part in parts:
        machine.update(part)
    head = ", ".join(filter(None, [
        machine.pop("processor", None),
        f"{machine.pop('cpus')} CPU cores" if "cpus" in machine else None,
        *(machine.pop("devices", None) or ())]))
    rest = ", ".join(f"{k} {v}" for k, v in machine.items())
    return "; ".join(filter(None, [head, rest]))
