"""The arithmetic of sharpness-aware steps, as small pure functions.

Every function takes and returns lists of tensors, one per trainable
variable, and treats the list as one long vector: norms are global L2 norms
over all tensors together (SPEC §1), and every division by a norm is guarded
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
"""

import dataclasses
import functools
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


@dataclasses.dataclass(frozen=True)
class Method:
    """What distinguishes one method's step from another's.

    Attributes:
        name: the method's name.
        epsilon: `f(grads, weights, radius) -> ε`, or `None` for the
            one-pass methods.
        default_radius: the `ρ` used when the user gives none.
        default_grad_scale: the `λ` used when the user gives none.
        normalize: whether the direction is scaled to unit norm.
    """

    name: str
    epsilon: Optional[Callable]
    default_radius: float
    default_grad_scale: float
    normalize: bool

    @property
    def passes(self):
        """Forward/backward passes of a step that perturbs: 1 or 2."""
        return 1 if self.epsilon is None else 2


METHODS = {
    "sgd": Method("sgd", None, 0.0, 0.0, normalize=False),
    "ugd": Method("ugd", None, 0.0, 0.0, normalize=True),
    "sam": Method("sam", sam_perturbation, 0.05, 0.0, normalize=False),
    "asam": Method("asam", asam_perturbation, 0.5, 0.0, normalize=False),
    "pugd": Method("pugd", pugd_perturbation, 1.0, 1.0, normalize=True),
}
"""The methods of SPEC §1 by name, with their published default ρ and λ
(SAM's ρ 0.05 and ASAM's 0.5 from their papers' CIFAR setups, PUGD's 1)."""


def get_method(name, eta=0.01):
    """Returns the `Method` called `name`, or raises a `ValueError`.

    Args:
        name: one of `METHODS`.
        eta: ASAM's offset `η`, bound into its `epsilon`.
    """
    if not isinstance(name, str) or name not in METHODS:
        raise ValueError(
            f"Unknown method={name!r}: expected one of {sorted(METHODS)}."
        )
    method = METHODS[name]
    if name == "asam":
        method = dataclasses.replace(
            method, epsilon=functools.partial(asam_perturbation, eta=eta))
    return method
