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

| msam   | −ρ·v/(‖v‖+δ), v the momentum  | g at w + ε (one pass) | no |

`g⊥` is the part of `g` orthogonal to `g*` (GSAM); `m` an average of past
gradients (Friendly-SAM); `g_v` the part of `g*` orthogonal to `g`, kept
from the last two-pass step (LookSAM). What a method keeps between steps
(`m`, `g_v`) is its `memory`: model state, committed with the step. Each
method is one definition in `keras_rts.methods`, made of these pieces.
"""

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
    weighted = [t * g for t, g in zip(scales, _tensors(grads))]
    factor = radius / (global_norm(weighted) + DELTA)
    return [t * s * ops.cast(factor, s.dtype)
            for t, s in zip(scales, weighted)]


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


def scaled(tensors, factor):
    """Returns `factor · t` for a list of tensors."""
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
    orthogonal = [a - b for a, b in zip(g, scaled(g_star, along))]
    return [d - o for d, o in zip(combine(g_star, g, grad_scale),
                                  scaled(orthogonal, alpha))]


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
    return [a - b for a, b in zip(g_star, scaled(g, along))]


def looksam_reuse(grads, orthogonal, alpha):
    """LookSAM's stand-in for `g*` on the one-pass steps:
    `g + α · ‖g‖ / (‖g_v‖ + δ) · g_v`, with the stored `g_v`."""
    g = _tensors(grads)
    factor = alpha * global_norm(g) / (global_norm(orthogonal) + DELTA)
    return [a + b for a, b in zip(g, scaled(orthogonal, factor))]


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
    u = [a - b for a, b in zip(g, scaled(m, sigma))]
    new_average = [ops.where(started, decay * a + (1.0 - decay) * b, b)
                   for a, b in zip(m, g)]
    return scaled_to_radius(u, radius), new_average


def __getattr__(name):
    # The methods' definitions moved to `keras_rts.methods`; these names
    # stay readable here for code written against keras_rts 0.1.0.
    if name in ("Method", "METHODS", "get_method"):
        from keras_rts import methods
        return getattr(methods, name)
    raise AttributeError(
        f"module 'keras_rts.directions' has no attribute {name!r}")
