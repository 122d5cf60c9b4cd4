"""The recipes' flags: their value parsers, and errors that name them.

Every recipe error is one line, `<script>: error: --flag: what is wrong`
(exit status 2), printed before anything is written: `RecipeParser` for
argparse's own errors, `flag_errors` for the checks that follow parsing,
and `flag_error` for a `ValueError` that names its flag. Nothing here
imports TensorFlow.
"""

import argparse
import contextlib
import math
import re


def flag_error(flag, message):
    """A `ValueError` whose message names the flag: `--flag: message`."""
    return ValueError(f"--{flag.replace('_', '-')}: {message}")


class RecipeParser(argparse.ArgumentParser):
    """An `argparse` parser whose errors are one line: `<script>: error: …`.

    argparse prints the usage before its errors, and says `argument
    --flag:`; a recipe says `--flag:` and nothing else, exit status 2.
    """

    def error(self, message):
        message = re.sub(r"^argument ([-\w]+)(/[-\w]+)*: ", r"\1: ", message)
        message = re.sub(r"^unrecognized arguments: (\S+).*",
                         r"\1: not a flag of this script (see --help)",
                         message)
        self.exit(2, f"{self.prog}: error: {message}\n")


@contextlib.contextmanager
def flag_errors(parser):
    """Turns a `ValueError` raised inside into the parser's one-line error."""
    try:
        yield
    except ValueError as e:
        parser.error(str(e))


def true_or_false(text):
    """`true` or `false` (a setting whose default depends on the method)."""
    if text not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"expected true or false, got "
                                         f"{text!r}")
    return text == "true"


def _number(kind, minimum=None, maximum=None, low_open=False,
            high_open=False):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not {'an integer' if kind is int else 'a number'}"
            ) from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be finite, got {text}")
        too_low = minimum is not None and (
            value <= minimum if low_open else value < minimum)
        too_high = maximum is not None and (
            value >= maximum if high_open else value > maximum)
        if too_low or too_high:
            bounds = (f"{'(' if low_open else '['}{minimum}, "
                      f"{maximum}{')' if high_open else ']'}"
                      if maximum is not None else
                      f"{'>' if low_open else '≥'} {minimum}")
            raise argparse.ArgumentTypeError(
                f"must be {'in ' if maximum is not None else ''}{bounds}, "
                f"got {text}")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in errors
    return parse


positive_int = _number(int, minimum=1)


non_negative_int = _number(int, minimum=0)


non_negative_float = _number(float, minimum=0)
positive_float = _number(float, minimum=0, low_open=True)


def verbosity(text):
    """Keras `fit` verbosity from a flag: `auto`, 0, 1 or 2."""
    if text == "auto":
        return text
    if text not in ("0", "1", "2"):
        raise argparse.ArgumentTypeError(
            f"must be auto, 0, 1 or 2, got {text!r}")
    return int(text)


FLAG_TYPES = {
    "epochs": positive_int, "batch_size": positive_int,
    "seed": _number(int, minimum=0, maximum=2**32 - 1),
    "lr": positive_float, "warmup_epochs": non_negative_int,
    "momentum": _number(float, minimum=0, maximum=1, high_open=True),
    "weight_decay": non_negative_float,
    "train_examples": positive_int, "test_examples": positive_int,
    "validation_examples": non_negative_int, "image_size": positive_int,
    "cutout": non_negative_int, "label_noise": _number(
        float, minimum=0, maximum=1, high_open=True),
    "radius": non_negative_float, "grad_scale": non_negative_float,
    "start_fraction": _number(float, minimum=0, maximum=1, high_open=True),
    "start_epoch": non_negative_int, "end_epoch": positive_int,
    "lr_fraction": _number(float, minimum=0, maximum=1, low_open=True,
                           high_open=True),
    "perturb_every": positive_int, "variance_t0": non_negative_int,
    "variance_gamma": _number(float, minimum=0, low_open=True),
    "variance_k": _number(int, minimum=2), "gap_xi": positive_int,
    "gap_mu": _number(float, minimum=0, low_open=True), "gap_t": positive_int,
    "sub_batch_size": positive_int,
    "alpha": non_negative_float,
    "gamma": _number(float, minimum=0, maximum=1, low_open=True,
                     high_open=True),
    "sigma": non_negative_float,
    "decay": _number(float, minimum=0, maximum=1, high_open=True),
    "every": positive_int, "decouple": true_or_false,
    "perturb_probability": _number(float, minimum=0, maximum=1,
                                   low_open=True),
}
"""The flags' parsers: bounds a value can be checked against on its own."""
