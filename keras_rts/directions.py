"""The arithmetic of sharpness-aware steps, as small pure functions.

Every function takes and returns lists of tensors, one per trainable
variable, and treats the list as one long vector: norms are global L2 norms
over all tensors together (docs/method.md), and every division by a norm is guarded
by `DELTA`. Nothing here reads or writes a variable, so each piece can be
tested alone against NumPy; `keras_rts.RTSModel` composes them.

The methods, in one frame (`g` the gradient at `w`, `g*` the gradient at
`w + ε`):

| method | perturbation ε                 | direction d   | normalise d |
|--------|--------------------------------|---------------|-------------|
| sgd    | none                           | g             | no          |
| ugd    | none                           | g             | yes         |
| sam    | ρ·g/(‖g‖+δ)                    | g* + λ·g, λ=0 | no          |
| asam   | ρ·T²g/(‖Tg‖+δ), T = |w| + η    | g* + λ·g, λ=0 | no          |
| pugd   | ρ·|w|g/(‖|w|g‖+δ)              | g* + λ·g, λ=1 | yes         |
| gsam   | SAM's                          | g* + λ·g − α·g⊥ | no        |
| wsam   | SAM's                          | γ/(1−γ)·(g* + λ·g), λ=(1−2γ)/γ | no |
| fsam   | ρ·u/(‖u‖+δ), u = g − σ·m       | g* + λ·g, λ=0 | no          |
| looksam | SAM's, every k-th step only   | g* + λ·g; between: g + α·‖g‖/‖g_v‖·g_v + λ·g | no |

`g⊥` is the part of `g` orthogonal to `g*` (GSAM); `m` an average of past
gradients (Friendly-SAM); `g_v` the part of `g*` orthogonal to `g`, kept
from the last two-pass step (LookSAM). What a method keeps between steps
(`m`, `g_v`) is its `memory`: model state, committed with the step.
"""

import dataclasses
import functools
import math
from typing import Callable, Optional

from keras import ops

from keras_rts import backend

DELTA = 1e-12
"""Guard added to every norm before dividing by it."""


def _tensors(values):
    """The backend's tensors (arrays given as NumPy stay usable on every
    backend; tensors pass through)."""
    return [ops.convert_to_tensor(v) for v in values]


def global_norm(tensors):
    """Returns the L2 norm of a list of tensors taken together as one vector.

    Overflow-safe: where the plain sum of squares overflows (a float32
    entry above about 1e19) or underflows, the tensors are divided by their
    largest magnitude before squaring, so a finite list, however large or
    small its entries, has a finite norm. The rescaling runs only then (a
    conditional), so the usual case costs one pass. On PyTorch, where the
    conditional would read the device, the backend's fused kernels always
    rescale (`keras_rts.backend.GLOBAL_NORM`). A list holding an
    infinity or a NaN has a non-finite norm.

    Args:
        tensors: list of tensors of any shapes.

    Returns:
        A scalar float32 tensor.
    """
    if backend.GLOBAL_NORM is not None:
        return backend.GLOBAL_NORM(_tensors(tensors))
    tensors = [ops.cast(t, "float32") for t in _tensors(tensors)]
    squares = sum(ops.sum(ops.square(t)) for t in tensors)

    def rescaled():
        largest = ops.max(ops.stack([ops.max(ops.abs(t)) for t in tensors]))
        # All zeros: divide by one instead (the norm is 0).
        divisor = ops.where(largest > 0, largest, ops.ones_like(largest))
        return divisor * ops.sqrt(
            sum(ops.sum(ops.square(t / divisor)) for t in tensors))

    usable = ops.logical_and(ops.isfinite(squares), squares > 1e-30)
    return ops.cond(usable, lambda: ops.sqrt(squares), rescaled)


def normalize(tensors, norm=None):
    """Scales a list of tensors to unit global norm: `t / (‖t‖ + δ)`.

    A list that is all zeros stays all zeros (never NaN).

    Args:
        tensors: list of tensors.
        norm: their `global_norm`, if already known.

    Returns:
        The list of scaled tensors.
    """
    tensors = _tensors(tensors)
    if norm is None:
        norm = global_norm(tensors)
    scale = 1.0 / (norm + DELTA)
    return [t * ops.cast(scale, t.dtype) for t in tensors]


def scaled_to_radius(tensors, radius):
    """Returns `radius · t / (‖t‖ + δ)` for a list of tensors."""
    return [t * ops.cast(radius, t.dtype) for t in normalize(tensors)]


def sam_perturbation(grads, weights, radius):
    """SAM's perturbation `ε = ρ · g / (‖g‖ + δ)` (Foret et al., 2021).

    Args:
        grads: list of gradients `g` at the weights.
        weights: list of weight tensors `w` (unused; the uniform signature
            lets the methods be swapped).
        radius: the radius `ρ`, a scalar.

    Returns:
        The list of perturbations `ε`.
    """
    del weights
    return scaled_to_radius(grads, radius)


def asam_perturbation(grads, weights, radius, eta=0.01):
    """ASAM's perturbation `ε = ρ · T²g / (‖Tg‖ + δ)`, `T = |w| + η`.

    (Kwon et al., 2021.)

    Args:
        grads: list of gradients `g` at the weights.
        weights: list of weight tensors `w`.
        radius: the radius `ρ`, a scalar.
        eta: the offset `η` that keeps zero weights perturbable.

    Returns:
        The list of perturbations `ε`.
    """
    scales = [ops.abs(w) + eta for w in _tensors(weights)]
    scaled = [t * g for t, g in zip(scales, _tensors(grads))]
    factor = radius / (global_norm(scaled) + DELTA)
    return [t * s * ops.cast(factor, s.dtype) for t, s in zip(scales, scaled)]


def pugd_perturbation(grads, weights, radius):
    """PUGD's perturbation `ε = ρ · a / (‖a‖ + δ)`, `a = |w| ⊙ g`.

    (Tseng et al., IJCNN 2022.)

    Args:
        grads: list of gradients `g` at the weights.
        weights: list of weight tensors `w`.
        radius: the radius `ρ`, a scalar.

    Returns:
        The list of perturbations `ε`.
    """
    return scaled_to_radius(
        [ops.abs(w) * g for w, g in zip(_tensors(weights), _tensors(grads))],
        radius
    )


def combine(perturbed_grads, grads, grad_scale):
    """Returns the direction `d = g* + λ · g`.

    Args:
        perturbed_grads: list of gradients `g*` at the perturbed weights.
        grads: list of gradients `g` at the weights.
        grad_scale: the gradient scale `λ`, a scalar.

    Returns:
        The list of direction tensors `d`.
    """
    return [
        gp + ops.cast(grad_scale, g.dtype) * g
        for gp, g in zip(_tensors(perturbed_grads), _tensors(grads))
    ]


def add_weight_decay(direction, weights, weight_decay):
    """Coupled L2 weight decay: returns `d + wd · w`."""
    return [d + weight_decay * w
            for d, w in zip(_tensors(direction), _tensors(weights))]


def dot(a, b):
    """The inner product of two lists of tensors taken as one vector each
    (float32)."""
    return sum(ops.sum(ops.cast(x, "float32") * ops.cast(y, "float32"))
               for x, y in zip(_tensors(a), _tensors(b)))


def _scaled(tensors, factor):
    return [t * ops.cast(factor, t.dtype) for t in _tensors(tensors)]


def gsam_direction(perturbed_grads, grads, grad_scale, alpha):
    """GSAM's direction `d = g* + λ·g − α·g⊥` (Zhuang et al., ICLR 2022).

    `g⊥ = g − (⟨g, g*⟩ / (‖g*‖² + δ)) · g*` is the part of `g` orthogonal
    to `g*`: descending `g*` lowers the perturbed loss, ascending `g⊥`
    lowers the surrogate gap without changing it to first order.

    Args:
        perturbed_grads: `g*`, the gradients at `w + ε`.
        grads: `g`, the gradients at `w`.
        grad_scale: `λ` (0 in the paper).
        alpha: `α`, the weight of the orthogonal part.
    """
    g_star, g = _tensors(perturbed_grads), _tensors(grads)
    along = dot(g, g_star) / (ops.square(global_norm(g_star)) + DELTA)
    orthogonal = [a - b for a, b in zip(g, _scaled(g_star, along))]
    return [d - o for d, o in zip(combine(g_star, g, grad_scale),
                                  _scaled(orthogonal, alpha))]


def wsam_scale(gamma):
    """WSAM's weight `γ/(1−γ)` of the sharpness term (Yue et al., KDD
    2023): its direction is `γ/(1−γ)·(g* + λ·g)`."""
    return gamma / (1.0 - gamma)


def wsam_grad_scale(gamma):
    """WSAM's `λ = (1−2γ)/γ`: with it, `γ/(1−γ)·(g* + λ·g)` is the gradient
    of `f(w) + γ/(1−γ)·(f(w + ε) − f(w))`, the weighted sharpness."""
    return (1.0 - 2.0 * gamma) / gamma


def looksam_orthogonal(perturbed_grads, grads):
    """LookSAM's `g_v = g* − (⟨g, g*⟩ / (‖g‖² + δ)) · g`, the part of `g*`
    orthogonal to `g` (Liu et al., CVPR 2022): what the two-pass step
    stores for the steps between."""
    g_star, g = _tensors(perturbed_grads), _tensors(grads)
    along = dot(g, g_star) / (ops.square(global_norm(g)) + DELTA)
    return [a - b for a, b in zip(g_star, _scaled(g, along))]


def looksam_reuse(grads, orthogonal, alpha):
    """LookSAM's stand-in for `g*` on the one-pass steps:
    `g + α · ‖g‖ / (‖g_v‖ + δ) · g_v`, with the stored `g_v`."""
    g = _tensors(grads)
    factor = alpha * global_norm(g) / (global_norm(orthogonal) + DELTA)
    return [a + b for a, b in zip(g, _scaled(orthogonal, factor))]


def fsam_perturbation(grads, radius, average, sigma, decay):
    """Friendly-SAM's perturbation and its new gradient average (Li et al.,
    CVPR 2024).

    `ε = ρ · u / (‖u‖ + δ)`, `u = g − σ·m`: the batch gradient less `σ`
    times the average `m` of past gradients (its full-gradient part), and
    then `m ← decay·m + (1 − decay)·g`. An average of zeros is no average
    yet: the first step perturbs along `g` and starts `m` at `g`, as the
    authors' code does.

    Returns:
        `(ε, new_average)`.
    """
    g, m = _tensors(grads), _tensors(average)
    started = global_norm(m) > 0
    u = [a - b for a, b in zip(g, _scaled(m, sigma))]
    new_average = [ops.where(started, decay * a + (1.0 - decay) * b, b)
                   for a, b in zip(m, g)]
    return scaled_to_radius(u, radius), new_average


@dataclasses.dataclass(frozen=True)
class Method:
    """What distinguishes one method's step from another's.

    Attributes:
        name: the method's name.
        epsilon: `f(grads, weights, radius) -> ε`, or `None` for the
            one-pass methods; for a method with an `"average"` memory,
            `f(grads, weights, radius, average) -> (ε, new_average)`.
        default_radius: the `ρ` used when the user gives none.
        default_grad_scale: the `λ` used when the user gives none.
        normalize: whether the direction is scaled to unit norm.
        direction: `f(perturbed_grads, grads, grad_scale) -> d`; `None`
            is `combine` (`d = g* + λ·g`).
        memory: what the method keeps between steps, one tensor per
            trainable variable: `None`, `"average"` (Friendly-SAM's `m`)
            or `"orthogonal"` (LookSAM's `g_v`).
        every: LookSAM's `k`: the two-pass step on every `k`-th step of the
            method's phase, `reuse` on the others; `None` for the rest.
        reuse: `f(grads, orthogonal) -> g*`'s stand-in on LookSAM's
            one-pass steps.
        options: the method's own settings, `(name, value)` pairs, as bound
            (for its config and logs).
    """

    name: str
    epsilon: Optional[Callable]
    default_radius: float
    default_grad_scale: float
    normalize: bool
    direction: Optional[Callable] = None
    memory: Optional[str] = None
    every: Optional[int] = None
    reuse: Optional[Callable] = None
    options: tuple = ()

    @property
    def passes(self):
        """Forward/backward passes of a step that perturbs: 1 or 2 (for
        LookSAM, 1 + 1/k on average)."""
        if self.epsilon is None:
            return 1
        return 1 + 1 / self.every if self.every else 2


OPTIONS = {
    "asam": {"eta": 0.01},
    "gsam": {"alpha": 0.4},
    "wsam": {"gamma": 0.9},
    "fsam": {"sigma": 1.0, "decay": 0.9},
    "looksam": {"alpha": 0.7, "every": 5},
}
"""Each method's own settings and their published defaults
(docs/method.md): ASAM's `η`; GSAM's `α` (pytorch_optimizer's default);
WSAM's `γ` (the same); Friendly-SAM's `σ` and the average's decay (the
paper's `λ`, 0.9); LookSAM's `α` and `k` (the paper's 0.7 and 5)."""


def _fsam_epsilon(grads, weights, radius, average, sigma, decay):
    del weights
    return fsam_perturbation(grads, radius, average, sigma, decay)


def _wsam_direction(perturbed_grads, grads, grad_scale, gamma):
    return _scaled(combine(perturbed_grads, grads, grad_scale),
                   wsam_scale(gamma))


def _method(name, **options):
    """The row of `name` with its options bound (defaults from `OPTIONS`)."""
    bound = dict(OPTIONS.get(name, {}), **options)
    if name == "sgd":
        return Method("sgd", None, 0.0, 0.0, normalize=False)
    if name == "ugd":
        return Method("ugd", None, 0.0, 0.0, normalize=True)
    if name == "sam":
        return Method("sam", sam_perturbation, 0.05, 0.0, normalize=False)
    if name == "asam":
        return Method("asam", functools.partial(asam_perturbation,
                                                eta=bound["eta"]),
                      0.5, 0.0, normalize=False,
                      options=tuple(bound.items()))
    if name == "pugd":
        return Method("pugd", pugd_perturbation, 1.0, 1.0, normalize=True)
    if name == "gsam":
        return Method("gsam", sam_perturbation, 0.05, 0.0, normalize=False,
                      direction=functools.partial(gsam_direction,
                                                  alpha=bound["alpha"]),
                      options=tuple(bound.items()))
    if name == "wsam":
        return Method("wsam", sam_perturbation, 0.05,
                      wsam_grad_scale(bound["gamma"]), normalize=False,
                      direction=functools.partial(_wsam_direction,
                                                  gamma=bound["gamma"]),
                      options=tuple(bound.items()))
    if name == "fsam":
        return Method("fsam", functools.partial(
            _fsam_epsilon, sigma=bound["sigma"], decay=bound["decay"]),
            0.05, 0.0, normalize=False, memory="average",
            options=tuple(bound.items()))
    if name == "looksam":
        return Method("looksam", sam_perturbation, 0.05, 0.0,
                      normalize=False, memory="orthogonal",
                      every=bound["every"],
                      reuse=functools.partial(looksam_reuse,
                                              alpha=bound["alpha"]),
                      options=tuple(bound.items()))
    raise KeyError(name)


METHODS = {name: _method(name) for name in (
    "sgd", "ugd", "sam", "asam", "pugd", "gsam", "wsam", "fsam", "looksam")}
"""The methods by name, with their published default ρ, λ and options
(SAM's ρ 0.05 and ASAM's 0.5 from their papers' CIFAR setups, PUGD's 1;
the SAM variants perturb as SAM does, with its ρ; docs/method.md)."""


def _check_option(name, value):
    if name == "every":
        if (isinstance(value, bool) or not isinstance(value, int)
                or value < 1):
            raise ValueError(
                f"every must be a positive integer (LookSAM's k: the "
                f"two-pass step on every k-th step), got {value!r}.")
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}.")
    if name == "gamma" and not 0 < value < 1:
        raise ValueError(
            f"gamma must be in (0, 1) (WSAM's weight of the sharpness, "
            f"γ/(1−γ)), got {value!r}.")
    if name == "decay" and not 0 <= value < 1:
        raise ValueError(
            f"decay must be in [0, 1) (the decay of Friendly-SAM's "
            f"gradient average), got {value!r}.")
    if name in ("alpha", "sigma", "eta") and value < 0:
        raise ValueError(f"{name} must be non-negative, got {value!r}.")


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
            f"Unknown method={name!r}: expected one of {sorted(METHODS)}."
        )
    given = {k: v for k, v in options.items() if v is not None}
    for option, value in given.items():
        if option not in OPTIONS.get(name, {}):
            users = sorted(m for m, o in OPTIONS.items() if option in o)
            raise ValueError(
                f"{option}={value!r} is a setting of "
                f"{' and '.join(users) or 'no method'}, not of "
                f"method={name!r}.")
        _check_option(option, value)
    return _method(name, **given)
