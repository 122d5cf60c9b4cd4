"""The step of `RTSModel`, as functions of values (docs/method.md).

Written once for every backend in `keras.ops`: a method's passes on one
(sub-)batch (`method_passes`, running the method's rule of
`keras_rts.methods`), the sub-batches (`sub_batch_passes`), the global
direction (`global_direction`) and what a step commits (`committed_state`).
Nothing here writes a variable; `train_step` composes them for a model, and
the backend's trainer (`keras_rts.backend`) takes gradients, applies the
direction and commits the state. `keras_rts.functional` runs the same
`method_passes` and `finished_direction`.
"""

import collections

import keras
from keras import ops

from keras_rts import backend, directions, methods

Passes = collections.namedtuple(
    "Passes", "loss y_pred grads direction state count apart",
    defaults=(None,))
"""One (sub-)batch's passes: the loss and predictions of the first pass,
its gradients `g` (`None` for variables without one), the direction (`g`
itself, the same list, when the direction is `g`), the state
(BatchNormalization statistics, seeds) after the first pass, the number of
passes made, and the part applied apart from the optimizer (`None` but for
decoupled WSAM)."""

Step = collections.namedtuple(
    "Step", "loss y_pred direction state finite grad_norm apart",
    defaults=(None,))
"""A whole step, before anything is committed: the direction to apply
(`None` for variables without a gradient; under a loss scale, scaled by it
and NaN everywhere when the step is skipped), the new values of the model's
non-trainable variables, whether the step is applied, `‖g‖` of the global
batch, and the part applied apart from the optimizer, unscaled (`None` for
the methods without; `apart_applied`)."""


class Context:
    """What a method's rule sees of one (sub-)batch
    (`keras_rts.methods.Method.rules`).

    Attributes:
        weights: the trainable values `w`.
        radius: `ρ`.
        grad_scale: `λ`.
        memory: what the method kept (one tensor per weight), or `None`.
        momentum: the optimizer's first moment, in the gradient's direction
            (for methods that read it), or `None`.
    """

    def __init__(self, pass_fn, batch, weights, state, radius, grad_scale,
                 memory=None, momentum=None, perturbed=None, sources=None,
                 loss_scale=None):
        self.weights = weights
        self.radius = radius
        self.grad_scale = grad_scale
        self.memory = memory
        self.momentum = momentum
        self.first = None  # (loss, y_pred, grads, filled grads, new state)
        self.count = 0
        self._pass_fn = pass_fn
        self._batch = batch
        self._state = state
        self._mask = [True] * len(weights) if perturbed is None else perturbed
        self._sources = sources
        self._loss_scale = loss_scale

    def grad_at(self, at=None):
        """A forward/backward pass at `at` (default `w`): its gradients,
        zeros where a variable has none. The first pass's loss,
        predictions and state are the step's; later passes start from that
        state and their own updates are dropped (statistics move once)."""
        state = self._state if self.first is None else self.first[4]
        loss, y_pred, grads, new_state = self._pass_fn(
            self._batch, self.weights if at is None else at, state)
        self.count += 1
        filled = [ops.zeros_like(w) if g is None else g
                  for g, w in zip(grads, self.weights)]
        if self.first is None:
            self.first = (loss, y_pred, grads, filled, new_state)
        return filled

    def to_perturb(self, tensors):
        """The entries of the variables ε perturbs
        (`exclude_from_perturbation` leaves the others out)."""
        return [t for t, m in zip(tensors, self._mask) if m]

    def source(self, grads):
        """The gradients ε is formed from, of the perturbed variables:
        summed over replicas for `perturbation="global"`."""
        if self._sources is not None:
            grads = self._sources(grads)
        return self.to_perturb(grads)

    def unscaled(self, tensors):
        """Gradients in true units (divided by the loss scale, if any)."""
        if self._loss_scale is None:
            return tensors
        return [t / ops.cast(self._loss_scale, t.dtype) for t in tensors]

    def fill(self, chosen, rest):
        """`chosen` for the perturbed variables, `rest` for the others."""
        it = iter(chosen)
        return [next(it) if m else r for m, r in zip(self._mask, rest)]

    def shifted(self, epsilon):
        """The weights `w + ε`, ε given for the perturbed variables."""
        return self.fill(
            [w + e for w, e in zip(self.to_perturb(self.weights), epsilon)],
            self.weights)


def method_passes(method, pass_fn, batch, weights, state, radius, grad_scale,
                  phase=True, memory=None, momentum=None, perturbed=None,
                  sources=None, loss_scale=None):
    """One (sub-)batch's passes of `method`'s rule for `phase`.

    Args:
        method: a `keras_rts.methods.Method`.
        pass_fn: `pass_fn(batch, weights, state) -> (loss, y_pred, grads,
            new_state)`, a forward/backward pass at the given values that
            writes no variable.
        batch: passed to `pass_fn`.
        weights: the trainable values `w`.
        state: the other values, passed to `pass_fn`.
        radius: `ρ`.
        grad_scale: `λ`.
        phase: `False` (one plain pass: `d = g`), `True` (the method's
            step) or the name of another of its rules (LookSAM's `"reuse"`).
        memory: what the method keeps (`Method.memory`), or `None`.
        momentum: the optimizer's first moment (`Method.momentum`).
        perturbed: which weights ε perturbs (booleans), or `None` for all.
        sources: `f(g)`, the gradients ε is formed from (default `g`).
        loss_scale: the loss scale the gradients carry, or `None`.

    Returns:
        `(Passes, memory)`: the passes (`direction` not yet normalised) and
        what the method keeps after them (`memory` itself if unchanged).
    """
    rule = method.rule(phase) if phase else methods.plain
    p = Context(pass_fn, batch, weights, state, radius, grad_scale,
                memory, momentum, perturbed, sources, loss_scale)
    direction, memory, *apart = rule(p)
    loss, y_pred, grads, filled, new_state = p.first
    if direction is filled:  # the first pass's gradient is the direction
        direction = grads
    else:
        direction = [None if g is None else t
                     for t, g in zip(direction, grads)]
    apart = ([None if g is None else t for t, g in zip(apart[0], grads)]
             if apart else None)
    return (Passes(loss, y_pred, grads, direction, new_state, p.count, apart),
            memory)


def sub_batch_passes(passes_fn, sub_batch_loop, size, batch, weights, state):
    """`passes_fn(part, state) -> Passes` per sub-batch of `size` examples,
    averaged.

    `g`, `d`, the loss and the floating state (moving statistics) are the
    sub-batches' means weighted by their sizes, each sub-batch's statistics
    moving from their value before the step; other state (seeds) carries
    from one sub-batch to the next. `sub_batch_loop` is the backend's loop
    (`Trainer._sub_batch_loop`).
    """
    floating = ["float" in keras.backend.standardize_dtype(s.dtype)
                for s in state]
    traced = {}  # which variables have a gradient, and the passes made

    def body(part, fraction, carry):
        loss, grads, direction, means, current = carry
        before = [s if f else c for s, c, f in zip(state, current, floating)]
        p = passes_fn(part, before)
        traced.update(has_grad=[g is not None for g in p.grads],
                      count=p.count)

        def add(total, new):
            return [t if n is None else t + ops.cast(fraction, n.dtype) * n
                    for t, n in zip(total, new)]

        carry = (loss + fraction * ops.cast(p.loss, "float32"),
                 add(grads, p.grads), add(direction, p.direction),
                 [t + ops.cast(fraction, n.dtype) * n if f else t
                  for t, n, f in zip(means, p.state, floating)],
                 [c if f else n for c, n, f in zip(current, p.state, floating)])
        return carry, p.y_pred

    zeros = [ops.zeros_like(w) for w in weights]
    initial = (ops.zeros((), "float32"), zeros, list(zeros),
               [ops.zeros_like(s) if f else s for s, f in zip(state, floating)],
               list(state))
    carry, y_pred = sub_batch_loop(batch, size, body, initial)
    loss, grads, direction, means, current = carry
    new_state = [m if f else c for m, c, f in zip(means, current, floating)]
    grads = [g if h else None for g, h in zip(grads, traced["has_grad"])]
    direction = [None if g is None else t for t, g in zip(direction, grads)]
    return Passes(loss, y_pred, grads, direction, new_state, traced["count"])


def finished_direction(method, method_on, one_pass, failed, grads, direction,
                       weights, weight_decay):
    """The direction of a step whose passes are summed over replicas (and
    unscaled): normalised if the method normalises, coupled weight decay
    added, with `‖g‖` and whether the step is finite.

    Args:
        method: a `keras_rts.methods.Method`.
        method_on: whether the step ran the method (not a plain step).
        one_pass: whether `direction` is `g` itself.
        failed: non-zero if the loss was not finite.
        grads: `g` (`None` for weights without a gradient).
        direction: `d` (`None` likewise).
        weights: the trainable values.
        weight_decay: coupled L2 weight decay.

    Returns:
        `(direction, grad_norm, finite)`.
    """
    present = [d is not None for d in direction]
    direction = [d for d in direction if d is not None]
    grad_norm = directions.global_norm([g for g in grads if g is not None])
    # The norms already formed say whether the direction is finite
    # (a finite list has a finite norm): no extra pass over it.
    finite = ops.logical_and(failed == 0, ops.isfinite(grad_norm))
    if method_on and method.normalize:
        norm = grad_norm if one_pass else directions.global_norm(direction)
        finite = ops.logical_and(finite, ops.isfinite(norm))
        direction = directions.normalize(direction, norm)
    elif not one_pass:
        finite = ops.logical_and(finite, _all_finite(direction))
    if weight_decay:
        direction = directions.add_weight_decay(
            direction, [w for w, p in zip(weights, present) if p],
            weight_decay)
    it = iter(direction)
    return [next(it) if p else None for p in present], grad_norm, finite


def global_direction(method, method_on, passes, weights, weight_decay,
                     loss_scale=None, sum_over_replicas=None):
    """The step's direction from this replica's passes: summed over
    replicas (each replica's gradient is its share of the mean), unscaled,
    then `finished_direction`; under a loss scale, rescaled, and NaN
    everywhere where the step is not applied (the loss-scale optimizer then
    skips it and lowers its scale, as in Keras).

    Returns:
        `(direction, grad_norm, finite, apart)`: `apart`, the part applied
        apart from the optimizer, unscaled (`None` for most methods).
    """
    grads, direction, apart = passes.grads, passes.direction, passes.apart
    one_pass = direction is grads  # d = g
    failed = ops.cast(ops.logical_not(ops.all(ops.isfinite(passes.loss))),
                      "float32")
    if sum_over_replicas is not None:
        grads, direction, failed = _sum_together(
            sum_over_replicas, grads, direction, failed)
    if loss_scale is not None:
        grads = [None if g is None else g / loss_scale for g in grads]
        direction = [None if d is None else d / loss_scale
                     for d in direction]
        if apart is not None:
            apart = [None if a is None else a / loss_scale for a in apart]
    direction, grad_norm, finite = finished_direction(
        method, method_on, one_pass, failed, grads, direction, weights,
        weight_decay)
    if apart is not None:
        finite = ops.logical_and(
            finite, _all_finite([a for a in apart if a is not None]))
    if loss_scale is not None:
        direction = [None if d is None else ops.where(
            finite, d * loss_scale, ops.full_like(d, float("nan")))
            for d in direction]
    return direction, grad_norm, finite, apart


def apart_applied(weights, apart, learning_rate, finite):
    """The weights after the part applied apart from the optimizer (after
    its update): `w − lr·apart` where the step is finite, `w` elsewhere
    and for variables without such a part (then `w` itself)."""
    return [w if a is None else ops.where(
        finite, w - ops.cast(learning_rate, w.dtype) * a, w)
        for w, a in zip(weights, apart)]


def train_step(model, pass_fn, batch, weights, state, phase, loss_scale=None,
               sum_over_replicas=None, optimizer_values=None):
    """One training step of `model` (an `RTSModel`), computed without
    writing any variable: this replica's passes, the global direction, and
    the state to commit — unchanged but `skipped_steps` when the step is
    not finite.

    Args:
        model: the `RTSModel` (its method, settings and variables' layout).
        pass_fn: the backend's pass (see `method_passes`).
        batch: `(x, y, sample_weight)`.
        weights: values of `trainable_variables`.
        state: values of `non_trainable_variables`.
        phase: `False`, `True` or the name of another rule of the method.
        loss_scale: the optimizer's loss scale (mixed precision) or `None`.
        sum_over_replicas: `f(list) -> list` summing over replicas, or
            `None` on one device.
        optimizer_values: the values of `optimizer.variables` where the
            step holds them (JAX), else `None` (the variables are read).

    Returns:
        A `Step`.
    """
    method = model._method
    read = state_reader(model, state)
    method_on = bool(phase) and not method.plain
    phase = phase if method_on else False
    kept = model.memory.tensors if model.memory is not None else None

    def passes_fn(part, state, sources=None):
        memory = None if kept is None else [read(v) for v in kept]
        passes, new_memory = method_passes(
            method, pass_fn, part, weights, state, read(model.radius),
            read(model.grad_scale), phase=phase, memory=memory,
            momentum=(momentum_values(model.optimizer, optimizer_values)
                      if method_on and method.momentum else None),
            perturbed=(model._perturbed(len(weights))
                       if method_on and method.perturbs else None),
            sources=sources, loss_scale=loss_scale)
        if new_memory is memory:
            return passes
        new_state = list(passes.state)
        for variable, value in zip(kept, new_memory):
            index = model._state_index[id(variable)]
            new_state[index] = ops.cast(value, new_state[index].dtype)
        return passes._replace(state=new_state)

    if model.sub_batch_size and method_on:
        passes = sub_batch_passes(passes_fn, model._sub_batch_loop,
                                  model.sub_batch_size, batch, weights, state)
    else:
        if sum_over_replicas is not None and method.apart:
            raise ValueError(
                f"method={method.name!r} applies its sharpness term apart "
                "from the optimizer, which several replicas of a "
                "tf.distribute strategy would each apply: use "
                "decouple=False, one device, or keras.distribution under "
                "JAX.")
        if method.memory and sum_over_replicas is not None:
            raise ValueError(
                f"method={method.name!r} keeps one {method.memory} between "
                "steps, which several replicas of a tf.distribute strategy "
                "would each write: train it on one device, or on several "
                "with keras.distribution under JAX.")
        global_source = model.perturbation == "global" and sum_over_replicas
        passes = passes_fn(batch, state,
                           sum_over_replicas if global_source else None)
    direction, grad_norm, finite, apart = global_direction(
        method, method_on, passes, weights, model.weight_decay, loss_scale,
        sum_over_replicas)
    new_state = committed_state(model, state, passes.state, passes.count,
                                grad_norm, finite)
    return Step(passes.loss, passes.y_pred, direction, new_state, finite,
                grad_norm, apart)


def committed_state(model, state, new_state, passes_made, grad_norm, finite):
    """The non-trainable values after the step: the passes' state, the
    gradient evaluations and the recorded `‖g‖` if `finite`, else the
    old values; `skipped_steps` counts the step if not."""
    read_index = model._state_index
    # Only the variables written here are mapped: a scope's mapping is
    # checked value by value, each step on PyTorch's eager path.
    written = [model.grad_evals, *model.timing.variables]
    mapping = [(v, new_state[read_index[id(v)]]) for v in written]
    with keras.StatelessScope(state_mapping=mapping) as scope:
        model.grad_evals.assign_add(passes_made)
        model.timing.record_grad_norm(grad_norm)
    updated = []
    for variable, old, new in zip(model.non_trainable_variables, state,
                                  new_state):
        current = scope.get_current_value(variable)
        new = new if current is None else current
        updated.append(old if new is old else ops.where(finite, new, old))
    skipped = ops.cast(ops.logical_not(finite), backend.INT)
    index = read_index[id(model.skipped_steps)]
    updated[index] = updated[index] + skipped
    # The phase is set between steps (keras_rts.phase): carried as is.
    for variable in model._host_variables:
        index = read_index[id(variable)]
        updated[index] = state[index]
    return updated


def state_reader(model, state):
    """`read(variable)`: a non-trainable variable's value in `state`."""
    if len(model._state_index) != len(model.non_trainable_variables):
        model._state_index = {id(v): i for i, v in
                              enumerate(model.non_trainable_variables)}
    return lambda variable: state[model._state_index[id(variable)]]


def logs(model, metrics, step, perturbing, state):
    """The step's logs: the metrics and the method's own values.

    `perturbing`: whether the step ran the method (bool or tensor).
    """
    read = state_reader(model, state)
    logs = dict(metrics)
    logs.update(
        radius=read(model.radius),
        grad_scale=read(model.grad_scale),
        perturb=ops.cast(perturbing, "int32"),
        grad_evals=read(model.grad_evals),
        skipped_steps=read(model.skipped_steps),
        grad_norm=step.grad_norm,
        perturb_start_epoch=read(model.timing.perturb_start_epoch),
    )
    return logs


def momentum_variables(optimizer, method="msam"):
    """The optimizer's first moment, one variable per trainable variable,
    and the sign that turns it into the gradient's direction `v`: Keras'
    `SGD(momentum=μ)` keeps `m ← μ·m − lr·g` (so `v = −m/lr`), `Adam` and
    `AdamW` their first moment `m ← β₁·m + (1 − β₁)·g`.

    Raises:
        ValueError: the optimizer keeps no first moment.
    """
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    if isinstance(inner, keras.optimizers.SGD) and inner.momentum:
        return getattr(inner, "momentums", None), -1.0
    if isinstance(inner, keras.optimizers.Adam):  # AdamW too
        return getattr(inner, "_momentums", None), 1.0
    raise ValueError(
        f"method={method!r} perturbs along the optimizer's momentum, which "
        f"{type(inner).__name__}"
        f"{'(momentum=0)' if isinstance(inner, keras.optimizers.SGD) else ''}"
        " does not keep: use keras.optimizers.SGD(momentum=0.9), Adam or "
        "AdamW.")


def momentum_values(optimizer, optimizer_values=None):
    """The optimizer's first moment as `v`, in the gradient's direction
    (`momentum_variables`), read from `optimizer_values` (the values of
    `optimizer.variables`) when given, else from the variables."""
    variables, sign = momentum_variables(optimizer)  # (checked at compile)
    if optimizer_values is None:
        values = [v.value for v in variables]
    else:
        position = {id(v): i for i, v in enumerate(optimizer.variables)}
        values = [optimizer_values[position[id(v)]] for v in variables]
    return values if sign > 0 else [-v for v in values]


def _all_finite(tensors):
    return ops.all(ops.stack([ops.all(ops.isfinite(t)) for t in tensors]))


def _sum_together(sum_over_replicas, grads, direction, failed):
    """Sums `g`, `d` (when it is not `g` itself) and the failure count
    over replicas, in one collective."""
    same = direction is grads
    parts = [g for g in grads if g is not None] + [failed]
    if not same:
        parts += [d for d in direction if d is not None]
    total = iter(sum_over_replicas(parts))
    grads = [None if g is None else next(total) for g in grads]
    failed = next(total)
    if same:
        return grads, grads, failed
    return grads, [None if d is None else next(total) for d in direction], \
        failed
