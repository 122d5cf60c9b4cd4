"""The methods, each one definition: its passes, how they combine, what it
keeps between steps, its options and their published defaults.

A method is a `Method`: a name, its default ρ and λ, whether its direction
is normalised, and its `rules` — for each kind of step it takes, a function
of a `keras_rts.step.Context` that makes the step's passes (`p.grad_at()` at
`w`, `p.grad_at(p.shifted(ε))` at `w + ε`) and returns the direction, not yet
normalised, and what the method keeps after the step. The step
(`keras_rts.step`) runs whichever rule the phase asks for; it names no method.
Adding a method is adding a definition here (and its tests and docs).

The arithmetic the rules use is in `keras_rts.directions`; the methods'
sources and defaults in docs/method.md.
"""

import dataclasses
import math
import numbers
from typing import Callable, Mapping, Optional

import numpy as np

from keras_rts import directions as d


@dataclasses.dataclass(frozen=True)
class Option:
    """One setting of a method: its name, its default and where the default
    comes from, and what values it takes (`check(value)` returns an error
    message, or `None` if the value is accepted)."""

    name: str
    default: object
    source: str
    check: Callable[[object], Optional[str]]


@dataclasses.dataclass(frozen=True)
class Method:
    """What distinguishes one method's step from another's.

    Attributes:
        name: the method's name.
        rules: the kinds of step the method takes, by name: `"step"`, its
            own, and any other (LookSAM's `"reuse"`). Each is
            `rule(p) -> (direction, memory)`, `p` a `keras_rts.step.Context`.
        default_radius: the `ρ` used when the user gives none.
        default_grad_scale: the `λ` used when the user gives none.
        normalize: whether the direction is scaled to unit norm.
        memory: the name of what the method keeps between steps, one tensor
            per trainable variable (Friendly-SAM's `"average"`, LookSAM's
            `"orthogonal"`), or `None`.
        momentum: whether the rule reads the optimizer's first moment
            (`p.momentum`; Momentum-SAM).
        from_batch: whether ε is formed from this batch's gradient (so a
            batch can be split into sub-batches, each with its own ε).
        cycle: `k`: the rule `"step"` on every `k`-th step of the method's
            phase and `"reuse"` on the others (LookSAM), or `None`.
        epsilon: `f(grads, weights, radius) -> ε`, the perturbation formed
            from this batch's gradient, where the method has one.
        takes_grad_scale: whether the direction has a `λ·g` to weigh (not
            for `msam`, which makes no pass at `w`, nor decoupled WSAM).
        apart: whether the rule returns a part applied apart from the
            optimizer (decoupled WSAM).
        options: the method's own settings as bound, `(name, value)` pairs.

    A rule returns `(direction, memory)`, or `(direction, memory, apart)`
    for a method with a part applied apart from the optimizer (decoupled
    WSAM): after the optimizer's update, `w ← w − lr·apart`.
    """

    name: str
    rules: Mapping[str, Callable]
    default_radius: float
    default_grad_scale: float
    normalize: bool = False
    memory: Optional[str] = None
    momentum: bool = False
    from_batch: bool = False
    cycle: Optional[int] = None
    epsilon: Optional[Callable] = None
    takes_grad_scale: bool = True
    apart: bool = False
    options: tuple = ()

    @property
    def plain(self):
        """Whether every step is one plain pass that applies `g` (`sgd`)."""
        return self.rules["step"] is plain and not self.normalize

    @property
    def perturbs(self):
        """Whether the method's step evaluates a gradient at `w + ε`."""
        return self.from_batch or self.momentum

    @property
    def first_pass_at_w(self):
        """Whether the step's first pass is at the weights themselves."""
        return not self.momentum

    @property
    def passes(self):
        """Forward/backward passes of a step of the method's phase, on
        average: 1 or 2 (for LookSAM, 1 + 1/k)."""
        if not self.from_batch:
            return 1
        return 1 + 1 / self.cycle if self.cycle else 2

    def phase(self, position):
        """The rule of the `position`-th step (from 0) of the method's
        phase: `True` (its own) or the name of another rule."""
        if self.cycle and position % self.cycle:
            return "reuse"
        return True

    def rule(self, phase):
        """The rule of a phase: `True` is the method's own step."""
        return self.rules["step" if phase is True else phase]


# The option checks: each returns an error message, or `None`.

def _number(value):
    if (isinstance(value, (bool, str)) or not isinstance(value, numbers.Real)
            or not math.isfinite(value)):
        return "must be a finite number"
    return None


def _non_negative(value):
    return _number(value) or (
        "must be non-negative" if value < 0 else None)


def _open_unit(value):
    return _number(value) or (
        "must be in (0, 1)" if not 0 < value < 1 else None)


def _decay(value):
    return _number(value) or (
        "must be in [0, 1)" if not 0 <= value < 1 else None)


def _boolean(value):
    if not isinstance(value, (bool, np.bool_)):
        return "must be True or False"
    return None


def _positive_integer(value):
    if (isinstance(value, bool) or not isinstance(value, numbers.Integral)
            or value < 1):
        return "must be a positive integer"
    return None


_DEFINITIONS = {}
OPTIONS = {}
"""Each method's own settings (`Option`s, with their published defaults
and sources; docs/method.md), by method."""


def _defines(name, *options):
    """Registers `definition(**options) -> Method` as method `name`."""
    def register(definition):
        _DEFINITIONS[name] = definition
        if options:
            OPTIONS[name] = options
        return definition
    return register


# The rules. `p` is the step's `keras_rts.step.Context`: `p.grad_at(at)` is a
# forward/backward pass (at `w` without `at`), `p.source(g)` the gradient ε
# is formed from (of the perturbed variables only), `p.shifted(ε)` the
# weights `w + ε`; `p.radius`, `p.grad_scale`, `p.memory` (what the method
# kept) and `p.momentum` (the optimizer's) the rest. A rule returns the
# direction, not yet normalised, and what the method keeps after the step.

def plain(p):
    """One pass at `w`; the direction is `g`."""
    return p.grad_at(), p.memory


def _two_passes(p, epsilon):
    """`g` at `w`, then `g*` at `w + ε`, ε formed from `g`."""
    g = p.grad_at()
    perturbation = epsilon(p.source(g), p.to_perturb(p.weights), p.radius)
    return g, p.grad_at(p.shifted(perturbation))


def _sharpness_aware(epsilon):
    """`d = g* + λ·g`, `g*` at `w + ε(g)` (SAM, ASAM, PUGD)."""
    def rule(p):
        g, g_star = _two_passes(p, epsilon)
        return d.combine(g_star, g, p.grad_scale), p.memory
    return rule


@_defines("sgd")
def _sgd():
    return Method("sgd", {"step": plain}, 0.0, 0.0)


@_defines("ugd")
def _ugd():
    return Method("ugd", {"step": plain}, 0.0, 0.0, normalize=True)


@_defines("sam")
def _sam():
    """Foret et al., ICLR 2021."""
    return Method("sam", {"step": _sharpness_aware(d.sam_perturbation)},
                  0.05, 0.0, from_batch=True, epsilon=d.sam_perturbation)


@_defines("asam", Option("eta", 0.01, "Kwon et al. 2021, CIFAR setup",
                         _non_negative))
def _asam(eta):
    """Kwon et al., ICML 2021."""
    def epsilon(grads, weights, radius):
        return d.asam_perturbation(grads, weights, radius, eta=eta)
    return Method("asam", {"step": _sharpness_aware(epsilon)}, 0.5, 0.0,
                  from_batch=True, epsilon=epsilon)


@_defines("pugd")
def _pugd():
    """Tseng et al., IJCNN 2022."""
    return Method("pugd", {"step": _sharpness_aware(d.pugd_perturbation)},
                  1.0, 1.0, normalize=True, from_batch=True,
                  epsilon=d.pugd_perturbation)


@_defines("gsam", Option("alpha", 0.4, "pytorch_optimizer's GSAM default",
                         _non_negative))
def _gsam(alpha):
    """Zhuang et al., ICLR 2022: descend `g*`, ascend `g⊥`."""
    def rule(p):
        g, g_star = _two_passes(p, d.sam_perturbation)
        return d.gsam_direction(g_star, g, p.grad_scale, alpha), p.memory
    return Method("gsam", {"step": rule}, 0.05, 0.0, from_batch=True,
                  epsilon=d.sam_perturbation)


@_defines("wsam", Option("gamma", 0.9, "pytorch_optimizer's WSAM default "
                         "(the authors' code: 0.88)", _open_unit),
          Option("decouple", True, "Yue et al. 2023; the authors' code "
                 "(atorch's WeightedSAM) and pytorch_optimizer",
                 _boolean))
def _wsam(gamma, decouple):
    """Yue et al., KDD 2023: `f(w) + γ/(1−γ)·(f(w + ε) − f(w))`, its
    sharpness term weighted by `α = γ/(1−γ)`. Decoupled (the paper's
    default): the optimizer applies `g`, and `w ← w − lr·α·(g* − g)` after
    it, apart from its momentum. Coupled: the optimizer applies the whole
    gradient, `α·(g* + λ·g)` with `λ = (1−2γ)/γ`."""
    weight = d.wsam_scale(gamma)

    def coupled(p):
        g, g_star = _two_passes(p, d.sam_perturbation)
        return d.scaled(d.combine(g_star, g, p.grad_scale), weight), p.memory

    def decoupled(p):
        g, g_star = _two_passes(p, d.sam_perturbation)
        sharpness = [a - b for a, b in zip(g_star, g)]
        return g, p.memory, d.scaled(sharpness, weight)

    if decouple:
        return Method("wsam", {"step": decoupled}, 0.05, 0.0,
                      from_batch=True, epsilon=d.sam_perturbation,
                      takes_grad_scale=False, apart=True)
    return Method("wsam", {"step": coupled}, 0.05, d.wsam_grad_scale(gamma),
                  from_batch=True, epsilon=d.sam_perturbation)


@_defines("fsam", Option("sigma", 1.0, "Li et al. 2024, σ", _non_negative),
          Option("decay", 0.9, "Li et al. 2024, the average's λ", _decay))
def _fsam(sigma, decay):
    """Li et al., CVPR 2024: ε from the batch gradient less its
    full-gradient part, kept as an average `m`."""
    def rule(p):
        g = p.grad_at()
        # The average is of true gradients (unscaled under a loss scale).
        epsilon, average = d.fsam_perturbation(
            p.unscaled(p.source(g)), p.radius, p.to_perturb(p.memory),
            sigma, decay)
        g_star = p.grad_at(p.shifted(epsilon))
        return (d.combine(g_star, g, p.grad_scale),
                p.fill(average, p.memory))
    return Method("fsam", {"step": rule}, 0.05, 0.0, memory="average",
                  from_batch=True)


@_defines("looksam", Option("alpha", 0.7, "Liu et al. 2022, α",
                            _non_negative),
          Option("every", 5, "Liu et al. 2022, k", _positive_integer))
def _looksam(alpha, every):
    """Liu et al., CVPR 2022: SAM's step on every k-th step, keeping `g_v`,
    the part of `g*` orthogonal to `g`; one pass reusing it between."""
    def step(p):
        g, g_star = _two_passes(p, d.sam_perturbation)
        return (d.combine(g_star, g, p.grad_scale),
                d.looksam_orthogonal(g_star, g))

    def reuse(p):
        g = p.grad_at()
        return (d.combine(d.looksam_reuse(g, p.memory, alpha), g,
                          p.grad_scale), p.memory)
    return Method("looksam", {"step": step, "reuse": reuse}, 0.05, 0.0,
                  memory="orthogonal", from_batch=True, cycle=every,
                  epsilon=d.sam_perturbation)


@_defines("msam")
def _msam():
    """Becker, Altrock and Risse 2024 (Momentum-SAM): one pass at
    `w − ρ·v/(‖v‖ + δ)`, `v` the optimizer's momentum; its gradient is the
    direction. The first step (`v = 0`) is a plain one."""
    def rule(p):
        ahead = d.scaled_to_radius(p.to_perturb(p.momentum), -p.radius)
        return p.grad_at(p.shifted(ahead)), p.memory
    return Method("msam", {"step": rule}, 0.3, 0.0, momentum=True,
                  takes_grad_scale=False)


_MEANING = {
    "eta": "ASAM's offset η in T = |w| + η",
    "alpha": "the weight of GSAM's g⊥ or of LookSAM's stored g_v",
    "gamma": "WSAM's weight of the sharpness, γ/(1−γ)",
    "sigma": "Friendly-SAM's σ in u = g − σ·m",
    "decay": "the decay of Friendly-SAM's gradient average",
    "every": "LookSAM's k: the two-pass step on every k-th step",
    "decouple": "whether WSAM applies its sharpness term apart from the "
                "optimizer",
}


def _bound(name, given):
    """The definition of `name` with its options bound (defaults first)."""
    options = {o.name: o.default for o in OPTIONS.get(name, ())}
    options.update(given)
    method = _DEFINITIONS[name](**options)
    return dataclasses.replace(method, options=tuple(options.items()))


METHODS = {name: _bound(name, {}) for name in _DEFINITIONS}
"""The methods by name, with their published default ρ, λ and options
(SAM's ρ 0.05 and ASAM's 0.5 from their papers' CIFAR setups, PUGD's 1,
Momentum-SAM's class default 0.3; the SAM variants perturb as SAM does, with
its ρ; docs/method.md)."""


def option_names(method):
    """The names of `method`'s own settings."""
    return tuple(o.name for o in OPTIONS.get(method, ()))


def option_error(method, option, value):
    """The message refusing `option=value` for `method`, or `None`."""
    own = {o.name: o for o in OPTIONS.get(method, ())}
    if option not in own:
        users = sorted(m for m, opts in OPTIONS.items()
                       if any(o.name == option for o in opts))
        return (f"{option}={value!r} is a setting of "
                f"{' and '.join(users) or 'no method'}, not of "
                f"method={method!r}.")
    problem = own[option].check(value)
    if problem:
        return (f"{option} {problem} ({_MEANING[option]}), got "
                f"{value!r}.")
    return None


def get_method(name, **options):
    """Returns the `Method` called `name`, or raises a `ValueError`.

    Args:
        name: one of `METHODS`.
        **options: the method's own settings (`OPTIONS`): `eta` for asam,
            `alpha` for gsam and looksam, `gamma` for wsam, `sigma` and
            `decay` for fsam, `every` for looksam. `None` means the
            default; a setting another method uses is refused.
    """
    if not isinstance(name, str) or name not in METHODS:
        raise ValueError(
            f"Unknown method={name!r}: expected one of {sorted(METHODS)}.")
    given = {k: v for k, v in options.items() if v is not None}
    for option, value in given.items():
        message = option_error(name, option, value)
        if message:
            raise ValueError(message)
    return _bound(name, {k: _plain(v) for k, v in given.items()})


def _plain(value):
    """A Python bool, int or float for a NumPy scalar too."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    return int(value) if isinstance(value, numbers.Integral) else float(value)
