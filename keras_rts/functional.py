"""The method as a function, for a `train_step` of your own.

`direction(loss_fn, weights, state, method=...)` computes one batch's
direction of any method of docs/method.md from a stateless loss function
of the weights: the first pass `g`, the perturbation, the second pass `g*`
and the combination, normalised where the method normalises, with the
same code `RTSModel`'s step runs (`keras_rts.step.method_passes` and
`global_direction`). Give the direction to your optimizer as you would
a gradient. For GANs, models that already override `train_step`, or loops
of your own — where a wrapper model does not fit. docs/functional.md has
examples on each backend.
"""

import collections

import keras
from keras import ops

from keras_rts import backend, checks, methods
from keras_rts.step import global_direction, method_passes

Direction = collections.namedtuple(
    "Direction", "direction loss aux state memory grad_norm finite apart")
Direction.__doc__ = """One batch's direction, and what its first pass gave.

Attributes:
    direction: one tensor per weight (`None` where the loss has no
        gradient): what the optimizer applies, as it would a gradient
        (`optimizer.apply(d.direction, variables)`).
    loss: the loss at the weights as given (the first pass).
    aux: what `loss_fn` returned beside the loss at the weights as given
        (the predictions, say).
    state: the state the first pass returned (BatchNormalization's moving
        statistics); the pass at `w + ε` moves none.
    memory: Friendly-SAM's gradient average or LookSAM's stored `g_v`
        after this batch, to pass to the next call (`None` for methods
        without).
    grad_norm: `‖g‖`, global over the weights.
    finite: whether the loss and the direction are finite: apply the
        direction only if so (`RTSModel` skips such a step).
    apart: for decoupled WSAM, the sharpness term to apply apart from the
        optimizer, after it: `w ← w − lr·apart`; `None` for the others.
"""


def direction(loss_fn, weights, state=(), *, method="pugd", radius=None,
              grad_scale=None, perturb=True, memory=None, momentum=None,
              weight_decay=0.0, perturbed=None, **options):
    """The direction of `method` for one batch.

    Args:
        loss_fn: `loss_fn(weights, state) -> (loss, aux, new_state)`: the
            training loss of the batch at `weights` (a list of tensors) and
            `state`, writing no variable — for a Keras model,
            `model.stateless_call(weights, state, x, training=True)` and a
            loss of its predictions. It is called once, or twice when the
            method perturbs (at `w`, then at `w + ε`).
        weights: the trainable values `w` (tensors, or the variables,
            whose values are read).
        state: passed to `loss_fn` (e.g. the non-trainable values).
        method: a name of `keras_rts.METHODS`.
        radius: `ρ`; `None`: the method's default (docs/method.md).
        grad_scale: `λ` in `d = g* + λ·g`; `None`: the method's default.
        perturb: `True` (the method's step), `False` (one plain pass,
            `d = g`) or `"reuse"` (LookSAM's one-pass step on its stored
            `g_v`: take it on all but every k-th step).
        memory: for `fsam` and `looksam`, the `memory` of the last call
            (`None` at the first: zeros).
        momentum: for `msam`, `v`: your optimizer's first moment, one tensor
            per weight, in the gradient's direction (Adam's `m`; PyTorch's
            SGD momentum buffer; for Keras' `SGD`, whose momentum holds
            `−lr·v`, its negation). `None`: zeros (a plain step).
        weight_decay: coupled L2 weight decay added to the direction after
            normalisation (`RTSModel`'s `weight_decay`).
        perturbed: which weights ε perturbs (booleans), or `None` for all
            (`RTSModel`'s `exclude_from_perturbation`).
        **options: the method's own (`eta`, `alpha`, `gamma`, `sigma`,
            `decay`, `every`; docs/method.md).

    Returns:
        A `Direction`.

    Example (TensorFlow or PyTorch; JAX in docs/functional.md):

    ```python
    cross_entropy = keras.losses.SparseCategoricalCrossentropy(True)

    class MyModel(keras.Model):
        def train_step(self, data):
            x, y = data
            def loss_fn(weights, state):
                y_pred, state = self.stateless_call(weights, state, x,
                                                    training=True)
                return cross_entropy(y, y_pred), y_pred, state
            d = keras_rts.functional.direction(
                loss_fn, self.trainable_variables,
                [v.value for v in self.non_trainable_variables],
                method="sam")
            self.optimizer.apply(d.direction, self.trainable_variables)
            for variable, value in zip(self.non_trainable_variables,
                                       d.state):
                variable.assign(value)
            return {"loss": d.loss}
    ```
    """
    backend.check_supported()
    spec = methods.get_method(method, **options)
    weights = [w.value if isinstance(w, keras.Variable) else w
               for w in weights]
    radius, grad_scale = checks.direction_arguments(
        spec, weights, radius, grad_scale, weight_decay, perturb, memory,
        momentum, perturbed)
    if spec.memory and memory is None:
        memory = [ops.zeros_like(w) for w in weights]
    if spec.momentum and momentum is None:
        momentum = [ops.zeros_like(w) for w in weights]

    def checked_loss_fn(weights, state):
        return checks.loss_fn_result(loss_fn(weights, state))

    def pass_fn(batch, weights, state):
        loss, aux, new_state, grads = backend.value_and_grad(
            checked_loss_fn, weights, state)
        return loss, aux, list(grads), new_state

    passes, memory = method_passes(
        spec, pass_fn, None, weights, state, radius, grad_scale,
        phase=perturb, memory=memory, momentum=momentum, perturbed=perturbed)
    method_on = bool(perturb) and not spec.plain
    d, grad_norm, finite, apart = global_direction(
        spec, method_on, passes, weights, weight_decay)
    return Direction(d, passes.loss, passes.y_pred, passes.state, memory,
                     grad_norm, finite, apart)
