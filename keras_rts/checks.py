"""The checks of what a user gives the core, in one place: `RTSModel`'s
arguments and `fit`'s labels. Each raises a `ValueError` naming the
argument, before any work.
"""

import math
import numbers

import keras
import numpy as np

from keras_rts import methods


def finite_number(name, value, allow_none=False):
    """A finite, non-negative real number (NumPy scalars too)."""
    if value is None and allow_none:
        return
    if isinstance(value, (bool, np.bool_)) or not isinstance(
            value, numbers.Real):
        raise ValueError(f"{name} must be a number, got {value!r}.")
    if not math.isfinite(value) or value < 0:
        raise ValueError(
            f"{name} must be finite and non-negative, got {value!r}.")


def settings(spec, radius, grad_scale):
    """`ρ` and `λ` for `spec` (a `keras_rts.methods.Method`), checked, the
    method's defaults where `None`."""
    radius = spec.default_radius if radius is None else radius
    finite_number("radius", radius)
    if spec.default_grad_scale < 0 and grad_scale is not None:
        # A method whose own λ is negative (coupled WSAM's (1−2γ)/γ).
        finite_number("|grad_scale|", abs(grad_scale))
    else:
        finite_number("grad_scale", grad_scale, allow_none=True)
    if not spec.takes_grad_scale and grad_scale:
        why = ("makes no pass at w" if spec.momentum
               else "applies g, and its sharpness term apart (decouple=True)")
        raise ValueError(
            f"grad_scale: method={spec.name!r} {why}, so it has no λ to "
            f"weigh g with; leave it None (got {grad_scale!r}).")
    grad_scale = spec.default_grad_scale if grad_scale is None else grad_scale
    return float(radius), float(grad_scale)


def model_arguments(model, method, radius, grad_scale, perturb, weight_decay,
                    eta, perturbation, sub_batch_size, options,
                    exclude_from_perturbation):
    """`RTSModel`'s arguments (see its docstring), checked.

    Returns:
        `(method, radius, grad_scale, perturb, sub_batch_size)`: the
        `keras_rts.methods.Method` with its options bound, and the others
        with the method's defaults filled in.
    """
    if not isinstance(model, keras.Model):
        raise ValueError(
            "model must be a keras.Model (e.g. a Sequential or functional "
            f"model), got {type(model).__name__}.")
    spec = methods.get_method(method, eta=eta, **options)
    radius, grad_scale = settings(spec, radius, grad_scale)
    finite_number("weight_decay", weight_decay)
    if exclude_from_perturbation is not None and (
            isinstance(exclude_from_perturbation, str)
            or not all(isinstance(n, str) and n
                       for n in exclude_from_perturbation)):
        raise ValueError(
            "exclude_from_perturbation must be a list of variable names or "
            "parts of their paths (e.g. ['bias', 'gamma', 'beta']), got "
            f"{exclude_from_perturbation!r}.")
    if not isinstance(perturb, (bool, np.bool_)):
        raise ValueError(f"perturb must be True or False, got {perturb!r}.")
    if perturbation not in ("replica", "global"):
        raise ValueError(
            f"perturbation must be 'replica' or 'global', got "
            f"{perturbation!r}.")
    _sub_batches(spec, sub_batch_size, perturbation)
    return (spec, radius, grad_scale, bool(perturb),
            None if sub_batch_size is None else int(sub_batch_size))


def _sub_batches(method, size, perturbation):
    if size is None:
        return
    if (isinstance(size, (bool, np.bool_))
            or not isinstance(size, numbers.Integral) or size < 1):
        raise ValueError(
            "sub_batch_size must be a positive integer (examples per "
            f"sub-batch) or None, got {size!r}.")
    why = None
    if method.momentum:
        why = ("forms ε from the optimizer's momentum, the same for the "
               "whole batch")
    elif not method.from_batch:
        why = "does not perturb (one pass)"
    elif method.memory:
        why = f"keeps one {method.memory} between steps for the whole batch"
    elif method.apart:
        why = ("applies its sharpness term apart from the optimizer for the "
               "whole batch (decouple=False takes sub-batches)")
    if why:
        raise ValueError(
            f"sub_batch_size forms one ε per sub-batch, but "
            f"method={method.name!r} {why}; use sub_batch_size=None.")
    if perturbation == "global":
        raise ValueError(
            "sub_batch_size forms one ε per sub-batch, which contradicts "
            "perturbation='global' (one ε for the global batch); use "
            "perturbation='replica' or sub_batch_size=None.")


def labels(model, name, labels):
    """Sparse labels given as an array must index the network's outputs
    (`RTSModel.fit`)."""
    loss = getattr(model, "loss", None)
    sparse = (isinstance(loss, keras.losses.SparseCategoricalCrossentropy)
              or loss in ("sparse_categorical_crossentropy",
                          keras.losses.sparse_categorical_crossentropy))
    if not sparse or labels is None or isinstance(labels, (dict, str)):
        return
    try:
        classes = model.model.output_shape[-1]
    except (AttributeError, ValueError, TypeError, IndexError):
        return  # a subclassed network: not known before it runs
    if not isinstance(classes, int) or classes < 2:
        return
    labels = np.asarray(labels) if isinstance(labels, (list, tuple)) \
        else labels
    if not (isinstance(labels, np.ndarray)
            and np.issubdtype(labels.dtype, np.integer)):
        return
    ignored = getattr(loss, "ignore_class", None)
    values = labels if ignored is None else labels[labels != ignored]
    bad = (values < 0) | (values >= classes)
    if bad.any():
        raise ValueError(
            f"fit: the labels of {name} must lie in [0, {classes}) for the "
            f"network's {classes} outputs and the sparse categorical "
            f"cross-entropy; they hold {int(values[bad][0])} "
            f"({int(bad.sum())} of {values.size} outside): check the "
            "labels, or the network's last layer.")


def perturbed_mask(variables, names):
    """Which of the trainable `variables` ε perturbs: all but those whose
    path contains one of `names` (`exclude_from_perturbation`).

    Raises:
        ValueError: a name matches no variable (named, with an example of
            the paths), or every variable is excluded.
    """
    names = list(names or ())
    unmatched = [n for n in names if not any(n in v.path for v in variables)]
    if unmatched and variables:
        raise ValueError(
            f"exclude_from_perturbation: {unmatched} match no trainable "
            f"variable's path (the paths look like {variables[0].path!r}, "
            f"{variables[-1].path!r}): check the names.")
    mask = [not any(n in v.path for n in names) for v in variables]
    if names and not any(mask):
        raise ValueError(
            f"exclude_from_perturbation: {names} leaves no trainable "
            "variable to perturb.")
    return mask


def direction_arguments(spec, weights, radius, grad_scale, weight_decay,
                        perturb, memory, momentum, perturbed):
    """`keras_rts.functional.direction`'s arguments, checked as
    `RTSModel`'s are, with the same messages.

    Returns:
        `(radius, grad_scale)`, the method's defaults where `None`.
    """
    radius, grad_scale = settings(spec, radius, grad_scale)
    finite_number("weight_decay", weight_decay)
    others = [name for name in spec.rules if name != "step"]
    if not (perturb is True or perturb is False or perturb in others):
        choices = ", ".join(["True", "False"] + [repr(n) for n in others])
        raise ValueError(f"perturb must be one of {choices} for "
                         f"method={spec.name!r}, got {perturb!r}.")
    if perturb in others and memory is None:
        raise ValueError(
            f"perturb={perturb!r} reuses what a step of method="
            f"{spec.name!r} keeps: pass the memory of the last call "
            "(Direction.memory), not None.")
    for name, tensors, wanted in (("memory", memory, spec.memory),
                                  ("momentum", momentum, spec.momentum)):
        if tensors is None:
            continue
        if not wanted:
            raise ValueError(f"method={spec.name!r} takes no {name}; pass "
                             f"{name}=None.")
        _like_weights(name, tensors, weights)
    if perturbed is not None:
        if len(perturbed) != len(weights):
            raise ValueError(f"perturbed has {len(perturbed)} entries for "
                             f"{len(weights)} weights.")
        if spec.perturbs and not any(perturbed):
            raise ValueError("perturbed leaves no weight to perturb: set at "
                             "least one entry True.")
    return radius, grad_scale


def _like_weights(name, tensors, weights):
    tensors = list(tensors)
    if len(tensors) != len(weights):
        raise ValueError(f"{name} has {len(tensors)} tensors for "
                         f"{len(weights)} weights: one per weight.")
    for i, (t, w) in enumerate(zip(tensors, weights)):
        if tuple(t.shape) != tuple(w.shape):
            raise ValueError(f"{name}[{i}] has shape {tuple(t.shape)}, its "
                             f"weight {tuple(w.shape)}.")


def loss_fn_result(result):
    """What `functional.direction`'s `loss_fn` returned: `(loss, aux,
    new_state)`, or a `ValueError` naming it."""
    if not (isinstance(result, (tuple, list)) and len(result) == 3):
        got = (f"a {type(result).__name__} of {len(result)}"
               if isinstance(result, (tuple, list))
               else type(result).__name__)
        raise ValueError(f"loss_fn must return (loss, aux, new_state), got "
                         f"{got}.")
    return result
