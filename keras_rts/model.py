"""`RTSModel`: a Keras model trained by sharpness-aware steps (docs/method.md).

This module holds the method, written once for every backend in
`keras.ops`: the two passes of one (sub-)batch, the global direction and
what a step commits. How gradients are taken, how state is committed and
how replicas combine is the backend's (`keras_rts.backend`).
"""

import collections
import inspect
import math
import numbers
import warnings

import keras
import numpy as np
from keras import ops

from keras_rts import backend, directions, files, progbar
from keras_rts.backend import saving
from keras_rts.phase import PhaseVariable
from keras_rts.timing_state import TimingState

_FIT_SIGNATURE = inspect.signature(keras.Model.fit)


def _check_finite_number(name, value, allow_none=False):
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number, got {value!r}.")
    if not math.isfinite(value) or value < 0:
        raise ValueError(
            f"{name} must be finite and non-negative, got {value!r}."
        )


Passes = collections.namedtuple(
    "Passes", "loss y_pred grads direction state")
"""One (sub-)batch's passes: the loss and predictions of the first pass,
its gradients `g` (`None` for variables without one), the direction
`d = g* + λ·g` (`g` itself when the step does not perturb) and the state
(BatchNormalization statistics, seeds) after the first pass."""

Step = collections.namedtuple(
    "Step", "loss y_pred direction state finite grad_norm")
"""A whole step, before anything is committed: the direction to apply
(`None` for variables without a gradient; under a loss scale, scaled by it
and NaN everywhere when the step is skipped), the new values of the model's non-trainable variables,
whether the step is applied, and `‖g‖` of the global batch."""


@keras.saving.register_keras_serializable(package="keras_rts")
class RTSModel(backend.Trainer, keras.Model):
    """Wraps a Keras model and trains it with a sharpness-aware step.

    Each training step is the method of docs/method.md. For `pugd` (the default):

    1. `g = ∇f(w)`, a forward/backward pass in training mode;
    2. `ε = ρ · a / (‖a‖ + δ)`, `a = |w| ⊙ g`;
    3. `g* = ∇f(w + ε)`, a second pass on the same batch;
    4. `d = g* + λ · g`;
    5. `U = d / (‖d‖ + δ)`, which the compiled optimizer applies to `w`.

    Norms are global over all trainable tensors. The second pass runs
    statelessly (`keras.StatelessScope`): the weights never hold `w + ε`,
    and BatchNormalization statistics move only in the first pass. When
    `perturb` is false, or `method="sgd"`, the step is one plain pass that
    applies the raw gradient, exactly as `keras.Model` would.

    `radius`, `grad_scale` and `perturb` are variables of the model, so
    callbacks can assign them between steps without retracing. The logs
    carry them, with `grad_evals` (forward/backward passes so far),
    `skipped_steps` (steps whose loss or direction was not finite and were
    not applied), `grad_norm` (‖g‖ of the step's first pass: the gradient of
    the global batch, summed over replicas when there are several) and
    `perturb_start_epoch` (the epoch a timing trigger switched the
    perturbation on, -1 before). What the timing triggers remember is kept
    in `timing` (a `keras_rts.timing_state.TimingState`), saved with the
    weights.

    Args:
        model: the `keras.Model` to train.
        method: one of `"sgd"`, `"ugd"`, `"sam"`, `"asam"`, `"pugd"`,
            `"gsam"`, `"wsam"`, `"fsam"`, `"looksam"`.
        radius: the perturbation radius `ρ` (non-negative); `None` means
            the method's default (0.05 for `sam` and its variants, 0.5 for
            `asam`, 1 for `pugd`; `keras_rts.METHODS`).
        grad_scale: the gradient scale `λ` in `d = g* + λ · g`; `None` means
            the method's default (1 for `pugd`, 0 for `sam` and `asam`).
        perturb: whether the method's step is on; when false each step is a
            one-pass `sgd` step.
        weight_decay: coupled L2 weight decay, `d ← d + weight_decay · w`
            after normalisation and before the optimizer (momentum), as in
            PyTorch's `SGD(weight_decay=...)` and the published recipes.
            Keras optimizers' own `weight_decay` is decoupled instead.
        eta: ASAM's offset `η` in `T = |w| + η` (used by `"asam"` only).
        perturbation: under a `tf.distribute` strategy with several
            replicas, `"replica"` forms each replica's ε from its own
            gradient (m-sharpness, as the SAM paper recommends) and
            `"global"` from the all-reduced gradient. Either way the
            direction `d` and its norm are global (the mean over replicas),
            and the optimizer sums each replica's share exactly once.
        sub_batch_size: `m`, or `None` (the default) for one ε per
            (replica) batch. With `m`, a perturbing step splits each
            replica's batch into sub-batches of `m` examples (the last may
            be smaller), forms each sub-batch's own ε from its own gradient
            and averages the sub-batches' `g* + λ·g`, weighted by their
            sizes (m-sharpness). Both passes then run per sub-batch, so
            the cost is still two passes; BatchNormalization sees
            sub-batch statistics and its moving statistics take the mean
            of the sub-batches' updates. Steps that do not perturb are
            ordinary full-batch steps. Not with `perturbation="global"`.
        alpha: GSAM's weight of `g⊥` (0.4) or LookSAM's weight of the
            stored `g_v` (0.7); `None` for the method's default.
        gamma: WSAM's `γ` in (0, 1) (0.9): its λ becomes `(1−2γ)/γ` and
            its direction is scaled by `γ/(1−γ)`.
        sigma: Friendly-SAM's `σ` (1): ε is formed from `g − σ·m`.
        decay: the decay of Friendly-SAM's gradient average `m` (0.9).
        every: LookSAM's `k` (5): its two-pass step on every k-th step of
            the method's phase, one pass reusing `g_v` between.
        exclude_from_perturbation: names (or parts of paths) of trainable
            variables ε leaves at 0, e.g. `["bias", "gamma", "beta"]`;
            the norms that form ε are over the others only.
        **kwargs: passed to `keras.Model` (e.g. `name`).

    `model.summary()` counts this bookkeeping among the non-trainable
    parameters (ρ, λ, `perturb`, the two counters and the timing state,
    whose ring buffer of recent gradient norms holds 1,024: 1,036 values;
    for `fsam` and `looksam` also their memory, one value per weight);
    `model.model.summary()` shows the network alone.

    The SAM variants (`gsam`, `wsam`, `fsam`, `looksam`) are described in
    docs/method.md, "The SAM family"; what `fsam` and `looksam` keep
    between steps is `memory` (a layer of non-trainable variables, saved
    and restored with the weights).

    Example:

    ```python
    net = keras.Sequential([keras.Input((32, 32, 3)),
                            keras.layers.Conv2D(16, 3, activation="relu"),
                            keras.layers.GlobalAveragePooling2D(),
                            keras.layers.Dense(10)])
    model = keras_rts.RTSModel(net, method="pugd", radius=1.0)
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(
                      from_logits=True),
                  metrics=["accuracy"])
    model.fit(images, labels, epochs=2)
    ```
    """

    def __init__(
        self,
        model: keras.Model,
        method: str = "pugd",
        radius: float | None = None,
        grad_scale: float | None = None,
        perturb: bool = True,
        weight_decay: float = 0.0,
        eta: float = 0.01,
        perturbation: str = "replica",
        sub_batch_size: int | None = None,
        alpha: float | None = None,
        gamma: float | None = None,
        sigma: float | None = None,
        decay: float | None = None,
        every: int | None = None,
        exclude_from_perturbation: list[str] | None = None,
        **kwargs,
    ) -> None:
        if not isinstance(model, keras.Model):
            raise ValueError(
                "model must be a keras.Model (e.g. a Sequential or "
                f"functional model), got {type(model).__name__}."
            )
        backend.check_supported()
        _check_finite_number("eta", eta)
        method_spec = directions.get_method(
            method, eta=eta if method == "asam" else None, alpha=alpha,
            gamma=gamma, sigma=sigma, decay=decay, every=every)
        if radius is None:
            radius = method_spec.default_radius
        _check_finite_number("radius", radius)
        if method == "wsam" and grad_scale is not None:
            # WSAM's λ = (1−2γ)/γ is negative for γ > 1/2.
            _check_finite_number("|grad_scale|", abs(grad_scale))
        else:
            _check_finite_number("grad_scale", grad_scale, allow_none=True)
        _check_finite_number("weight_decay", weight_decay)
        if exclude_from_perturbation is not None and (
                isinstance(exclude_from_perturbation, str)
                or not all(isinstance(n, str) and n
                           for n in exclude_from_perturbation)):
            raise ValueError(
                "exclude_from_perturbation must be a list of variable names "
                "or parts of their paths (e.g. ['bias', 'gamma', 'beta']), "
                f"got {exclude_from_perturbation!r}.")
        if not isinstance(perturb, (bool, np.bool_)):
            raise ValueError(f"perturb must be True or False, got {perturb!r}.")
        perturb = bool(perturb)
        if perturbation not in ("replica", "global"):
            raise ValueError(
                f"perturbation must be 'replica' or 'global', got "
                f"{perturbation!r}."
            )
        if sub_batch_size is not None and (
            isinstance(sub_batch_size, bool)
            or not isinstance(sub_batch_size, numbers.Integral)
            or sub_batch_size < 1
        ):
            raise ValueError(
                "sub_batch_size must be a positive integer (examples per "
                f"sub-batch) or None, got {sub_batch_size!r}."
            )
        if sub_batch_size is not None and method_spec.epsilon is None:
            raise ValueError(
                f"sub_batch_size forms one ε per sub-batch, but "
                f"method={method!r} does not perturb (one pass); use "
                "sub_batch_size=None.")
        if sub_batch_size is not None and method_spec.memory:
            raise ValueError(
                f"sub_batch_size forms one ε per sub-batch, but "
                f"method={method!r} keeps one {method_spec.memory} between "
                "steps for the whole batch; use sub_batch_size=None.")
        if sub_batch_size is not None and perturbation == "global":
            raise ValueError(
                "sub_batch_size forms one ε per sub-batch, which contradicts "
                "perturbation='global' (one ε for the global batch); use "
                "perturbation='replica' or sub_batch_size=None."
            )
        if sub_batch_size is not None:
            sub_batch_size = int(sub_batch_size)
        if grad_scale is None:
            grad_scale = method_spec.default_grad_scale

        super().__init__(**kwargs)
        self.model = model
        self.method = method
        self.weight_decay = float(weight_decay)
        self.eta = float(eta)
        self.perturbation = perturbation
        self.sub_batch_size = sub_batch_size
        self.options = dict(alpha=alpha, gamma=gamma, sigma=sigma,
                            decay=decay, every=every)
        self.exclude_from_perturbation = (
            None if exclude_from_perturbation is None
            else list(exclude_from_perturbation))
        self._method = method_spec
        # The constructor's values, for get_config; the current values are
        # state, saved with the weights.
        self._initial = dict(
            radius=float(radius), grad_scale=float(grad_scale), perturb=perturb
        )

        def state(name, value, dtype, aggregation="none"):
            return self.add_weight(
                name=name,
                shape=(),
                initializer=keras.initializers.Constant(value),
                dtype=dtype,
                trainable=False,
                aggregation=aggregation,
            )

        self.radius = state("radius", float(radius), "float32")
        self.grad_scale = state("grad_scale", float(grad_scale), "float32")
        with keras.name_scope(self.name, caller=self):
            self.perturb = PhaseVariable(perturb, name="perturb")
        self.grad_evals = state("grad_evals", 0, backend.INT,
                                "only_first_replica")
        self.skipped_steps = state(
            "skipped_steps", 0, backend.INT, "only_first_replica"
        )
        self.timing = TimingState(name="timing")
        self._host_variables = [self.perturb]
        if method_spec.every:
            # LookSAM's place in its cycle of k steps, counted on the host.
            with keras.name_scope(self.name, caller=self):
                self.method_steps = PhaseVariable(0, name="method_steps",
                                                  dtype=backend.INT)
            self._host_variables.append(self.method_steps)
        self.memory = None
        self._state_index = {}
        self._perturbed_mask = None
        self._perturbing = True  # the phase a TensorFlow trace is for
        self._epoch_steps = [0, 0]  # steps, and those that ran the method
        if model.built:
            self._build_memory()
            self.built = True

    def build(self, input_shape):
        # A subclassed model without its own `build` creates its variables
        # on its first call instead.
        if not self.model.built and not getattr(self.model.build,
                                                "_is_default", False):
            self.model.build(input_shape)
        if self.model.built:
            self._build_memory()
        self.built = True

    def _build_memory(self):
        """The method's memory (`directions.Method.memory`): one
        non-trainable variable per trainable one, zeros at first, saved,
        restored and committed with the step like the rest of the state."""
        if self._method.memory is None or self.memory is not None:
            return
        self.memory = MethodMemory(self.model.trainable_variables,
                                   name=self._method.memory)

    def call(self, inputs, training=None):
        return self.model(inputs, training=training)

    def export(self, filepath, format="tf_saved_model", **kwargs):
        """Exports the trained network, `self.model`, for inference.

        The wrapper only changes training: at inference it is the network
        itself. Arguments as `keras.Model.export`. To save the network
        alone for Keras, `model.model.save("net.keras")`.
        """
        return self.model.export(filepath, format=format, **kwargs)

    # The method (docs/method.md), stateless and backend-neutral.

    def _method_on(self, perturbing):
        """Whether a step of this phase runs the method (not plain sgd)."""
        return perturbing and self._method.name != "sgd"

    def _next_phase(self):
        """The phase of the next step, from the host's copy of `perturb`
        (`keras_rts.phase`): never a read of the device. `False` (a plain
        step), `True` (the method's step), or for LookSAM `REUSE` (its
        one-pass step) on all but every k-th step of its phase. Counted
        on the host for the epoch's share of steps that ran the method
        (`_PhaseShare`)."""
        on = self._method_on(self.perturb.host_value)
        self._epoch_steps[0] += 1
        self._epoch_steps[1] += bool(on)
        if not (on and self._method.every):
            return on
        position = self.method_steps.host_value
        self.method_steps.assign(position + 1)
        return True if position % self._method.every == 0 else REUSE

    def _perturbed(self, count):
        """Which of the `count` trainable variables ε perturbs: all but
        those whose path contains a name of `exclude_from_perturbation`
        (found once, not at every step)."""
        if (self._perturbed_mask is None
                or len(self._perturbed_mask) != count):
            names = self.exclude_from_perturbation or ()
            self._perturbed_mask = [not any(n in v.path for n in names)
                                    for v in self.trainable_variables]
            if names and not any(self._perturbed_mask):
                raise ValueError(
                    f"exclude_from_perturbation={list(names)} leaves no "
                    "trainable variable to perturb.")
        return self._perturbed_mask

    def _passes(self, pass_fn, batch, weights, state, settings, perturbing,
                sources=None, loss_scale=None):
        """This (sub-)batch's passes: `g`, and `g*` at `w + ε` if perturbing.

        `pass_fn(batch, weights, state) -> (loss, y_pred, grads,
        new_state)` is the backend's forward/backward pass at the given
        values, writing no variable. `sources(g)` gives the gradients ε is
        formed from (the replicas' sum for `perturbation="global"`). The
        method's memory is read from `state` and its update returned in
        the new state.
        """
        method_on = self._method_on(perturbing)
        memory = self._memory_values(state)
        passes, new_memory = method_passes(
            self._method, pass_fn, batch, weights, state, *settings,
            phase=perturbing if method_on else False, memory=memory,
            perturbed=(self._perturbed(len(weights))
                       if method_on and self._method.epsilon else None),
            sources=sources, loss_scale=loss_scale)
        if new_memory is memory:
            return passes
        return passes._replace(state=self._with_memory(passes.state,
                                                       new_memory))

    def _memory_values(self, state):
        if self.memory is None:
            return None
        read = self._state_reader(state)
        return [read(v) for v in self.memory.tensors]

    def _with_memory(self, state, memory):
        if self.memory is None:
            return state
        state = list(state)
        for variable, value in zip(self.memory.tensors, memory):
            index = self._state_index[id(variable)]
            state[index] = ops.cast(value, state[index].dtype)
        return state

    def _sub_batch_passes(self, pass_fn, batch, weights, state, settings):
        """`_passes` per sub-batch of `sub_batch_size` examples, averaged.

        `g`, `d`, the loss and the floating state (moving statistics) are
        the sub-batches' means weighted by their sizes, each sub-batch's
        statistics moving from their value before the step; other state
        (seeds) carries from one sub-batch to the next.
        """
        floating = ["float" in keras.backend.standardize_dtype(s.dtype)
                    for s in state]
        has_grad = []  # known once the body is traced

        def body(part, fraction, carry):
            loss, grads, direction, means, current = carry
            before = [s if f else c
                      for s, c, f in zip(state, current, floating)]
            p = self._passes(pass_fn, part, weights, before, settings, True)
            has_grad[:] = [g is not None for g in p.grads]

            def add(total, new):
                return [t if n is None else t + ops.cast(fraction, n.dtype)
                        * n for t, n in zip(total, new)]

            carry = (loss + fraction * ops.cast(p.loss, "float32"),
                     add(grads, p.grads), add(direction, p.direction),
                     [t + ops.cast(fraction, n.dtype) * n if f else t
                      for t, n, f in zip(means, p.state, floating)],
                     [c if f else n
                      for c, n, f in zip(current, p.state, floating)])
            return carry, p.y_pred

        zeros = [ops.zeros_like(w) for w in weights]
        initial = (ops.zeros((), "float32"), zeros, list(zeros),
                   [ops.zeros_like(s) if f else s
                    for s, f in zip(state, floating)], list(state))
        carry, y_pred = self._sub_batch_loop(
            batch, self.sub_batch_size, body, initial)
        loss, grads, direction, means, current = carry
        new_state = [m if f else c
                     for m, c, f in zip(means, current, floating)]
        grads = [g if h else None for g, h in zip(grads, has_grad)]
        return Passes(loss, y_pred, grads, _none_where(direction, grads),
                      new_state)

    def _step(self, pass_fn, batch, weights, state, perturbing,
              loss_scale=None, sum_over_replicas=None):
        """One training step, computed without writing any variable.

        This replica's passes, then the global direction: summed over
        replicas (each replica's gradient is its share of the mean), then
        normalised, then coupled weight decay; then whether it is finite,
        and the state to commit — unchanged except `skipped_steps` when it
        is not.

        Args:
            pass_fn: the backend's pass (see `_passes`).
            batch: `(x, y, sample_weight)`.
            weights: values of `trainable_variables`.
            state: values of `non_trainable_variables`.
            perturbing: the phase, a Python bool.
            loss_scale: the optimizer's loss scale (mixed precision) or
                `None`; gradients are unscaled by it, the direction
                rescaled by it.
            sum_over_replicas: `f(list) -> list` summing over replicas, or
                `None` on one device.

        Returns:
            A `Step`.
        """
        read = self._state_reader(state)
        settings = (read(self.radius), read(self.grad_scale))
        method_on = self._method_on(perturbing)
        if self.sub_batch_size and method_on:
            passes = self._sub_batch_passes(
                pass_fn, batch, weights, state, settings)
        else:
            sources = None
            if self.perturbation == "global" and sum_over_replicas:
                sources = sum_over_replicas
            if self._method.memory and sum_over_replicas is not None:
                raise ValueError(
                    f"method={self.method!r} keeps one "
                    f"{self._method.memory} between steps, which several "
                    "replicas of a tf.distribute strategy would each write: "
                    "train it on one device, or on several with "
                    "keras.distribution under JAX.")
            passes = self._passes(pass_fn, batch, weights, state, settings,
                                  perturbing, sources, loss_scale)
        grads, direction = passes.grads, passes.direction
        one_pass = direction is grads  # d = g: no second pass was made
        failed = ops.cast(ops.logical_not(ops.all(ops.isfinite(
            passes.loss))), "float32")
        if sum_over_replicas is not None:
            grads, direction, failed = _sum_together(
                sum_over_replicas, grads, direction, failed)
        if loss_scale is not None:
            grads = [None if g is None else g / loss_scale for g in grads]
            direction = [None if d is None else d / loss_scale
                         for d in direction]
        direction, grad_norm, finite = finished_direction(
            self._method, method_on, one_pass, failed, grads, direction,
            weights, self.weight_decay)
        if loss_scale is not None:
            # A step that is not applied carries NaN to the loss-scale
            # optimizer, which skips it and lowers its scale, as in Keras.
            direction = [None if d is None else ops.where(
                finite, d * loss_scale, ops.full_like(d, float("nan")))
                for d in direction]
        passes_made = (2 if method_on and self._method.epsilon
                       and perturbing != REUSE else 1)
        new_state = self._committed_state(
            state, passes.state, passes_made, grad_norm, finite)
        return Step(passes.loss, passes.y_pred, direction, new_state, finite,
                    grad_norm)

    def _committed_state(self, state, new_state, passes_made, grad_norm,
                         finite):
        """The non-trainable values after the step: the passes' state, the
        gradient evaluations and the recorded `‖g‖` if `finite`, else the
        old values; `skipped_steps` counts the step if not."""
        # Only the variables written here are mapped: a scope's mapping is
        # checked value by value, each step on PyTorch's eager path.
        written = [self.grad_evals, *self.timing.variables]
        mapping = [(v, new_state[self._state_index[id(v)]]) for v in written]
        with keras.StatelessScope(state_mapping=mapping) as scope:
            self.grad_evals.assign_add(passes_made)
            self.timing.record_grad_norm(grad_norm)
        updated = []
        for variable, old, new in zip(self.non_trainable_variables, state,
                                      new_state):
            current = scope.get_current_value(variable)
            new = new if current is None else current
            updated.append(old if new is old else ops.where(finite, new, old))
        skipped = ops.cast(ops.logical_not(finite), backend.INT)
        index = self._state_index[id(self.skipped_steps)]
        updated[index] = updated[index] + skipped
        # The phase is set between steps (keras_rts.phase): carried as is.
        for variable in self._host_variables:
            index = self._state_index[id(variable)]
            updated[index] = state[index]
        return updated

    def _state_reader(self, state):
        """`read(variable)`: a variable's value in `state`."""
        if len(self._state_index) != len(self.non_trainable_variables):
            self._state_index = {id(v): i for i, v in
                                 enumerate(self.non_trainable_variables)}
        return lambda variable: state[self._state_index[id(variable)]]

    def _logs(self, metrics, step, perturbing, state):
        """The step's logs: the metrics and the method's own values.

        `perturbing`: whether the step ran the method (bool or tensor).
        """
        read = self._state_reader(state)
        logs = dict(metrics)
        logs.update(
            radius=read(self.radius),
            grad_scale=read(self.grad_scale),
            perturb=ops.cast(perturbing, "int32"),
            grad_evals=read(self.grad_evals),
            skipped_steps=read(self.skipped_steps),
            grad_norm=step.grad_norm,
            perturb_start_epoch=read(self.timing.perturb_start_epoch),
        )
        return logs

    # Keras plumbing.

    def compile(self, optimizer="rmsprop", *args, **kwargs):
        """`keras.Model.compile`; refuses optimizers the step cannot use.

        The direction goes through the optimizer as a gradient would
        (through Adam's moments under `AdamW`). An optimizer's own
        `weight_decay` (decoupled: `AdamW`'s, Keras' `SGD(weight_decay=)`)
        and this model's coupled `weight_decay` would both decay the
        weights: a warning says so, naming both.

        Raises:
            ValueError: the optimizer accumulates gradients
                (`gradient_accumulation_steps`) and the method perturbs.
        """
        optimizer = keras.optimizers.get(optimizer)
        self._check_optimizer(optimizer)
        inner = getattr(optimizer, "inner_optimizer", optimizer)
        if self.weight_decay and getattr(inner, "weight_decay", None):
            warnings.warn(
                f"RTSModel(weight_decay={self.weight_decay:g}) adds coupled "
                f"L2 decay to the direction and {type(inner).__name__}("
                f"weight_decay={inner.weight_decay:g}) decays the weights "
                "itself: both apply. Set one of them to 0 unless both are "
                "meant.", stacklevel=2)
        super().compile(optimizer, *args, **kwargs)

    def fit(self, *args, **kwargs):
        """`keras.Model.fit`; our callbacks check the call before any step.

        A callback with a `check_fit(arguments)` method (the generalization
        gap trigger needs validation data every epoch) sees `fit`'s
        arguments by name, with their defaults, and raises a `ValueError`
        before the first step if they cannot work. The progress bar is
        `keras_rts.progbar.ProgbarLogger` (counters once per epoch) unless
        a `ProgbarLogger` is given.

        Integer labels given as arrays (`y`, and `validation_data`'s) are
        checked against the network's outputs when the loss is a sparse
        categorical cross-entropy: one outside `[0, classes)` raises a
        `ValueError` before the first step (TensorFlow would fail
        mid-epoch; JAX computes a wrong loss without an error). Labels in
        a `tf.data.Dataset` or a generator are not read ahead: check them
        where they are made.
        """
        arguments = _FIT_SIGNATURE.bind(self, *args, **kwargs)
        arguments.apply_defaults()
        validation = arguments.arguments.get("validation_data")
        for name, labels in (("y", arguments.arguments.get("y")),
                             ("validation_data", validation[1]
                              if isinstance(validation, (tuple, list))
                              and len(validation) > 1 else None)):
            self._check_labels(name, labels)
        callbacks = list(arguments.arguments.get("callbacks") or ())
        for callback in callbacks:
            check = getattr(callback, "check_fit", None)
            if check is not None:
                check(arguments.arguments)
        callbacks = [_PhaseShare()] + callbacks
        if arguments.arguments["verbose"] != 0 and not any(
                isinstance(c, keras.callbacks.ProgbarLogger)
                for c in callbacks):
            callbacks.append(progbar.ProgbarLogger())
        arguments.arguments["callbacks"] = callbacks
        return super().fit(*arguments.args[1:], **arguments.kwargs)

    def _track_output_losses(self, y, y_pred, sample_weight):
        """Each output's loss for the logs (`<output>_loss`), as Keras logs
        it: its compiled loss updates one tracker per output while it
        computes the loss, which our passes do statelessly (the updates
        are not kept). Recorded here from the first pass's predictions —
        the loss functions again, no pass; nothing for one output."""
        compile_loss = getattr(self, "_compile_loss", None)
        if compile_loss is not None and compile_loss.metrics:
            compile_loss(y, y_pred, sample_weight)

    def _check_labels(self, name, labels):
        """Sparse labels in an array must index the network's outputs."""
        loss = getattr(self, "loss", None)
        sparse = (isinstance(loss, keras.losses.SparseCategoricalCrossentropy)
                  or loss in ("sparse_categorical_crossentropy",
                              keras.losses.sparse_categorical_crossentropy))
        if not sparse or labels is None or isinstance(labels, (dict, str)):
            return
        try:
            classes = self.model.output_shape[-1]
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
                f"fit: the labels of {name} must lie in [0, {classes}) for "
                f"the network's {classes} outputs and the sparse "
                f"categorical cross-entropy; they hold {int(values[bad][0])} "
                f"({int(bad.sum())} of {values.size} outside): check the "
                "labels, or the network's last layer.")

    def set_weights(self, weights):
        """`keras.Model.set_weights`, but `grad_evals` and `skipped_steps`
        keep their values: they count the work done, which restoring
        earlier weights (`EarlyStopping(restore_best_weights=True)`) does
        not undo. Files (`load_weights`, `.keras`, `BackupAndRestore`)
        restore them with the rest, as a resumed run needs."""
        counters = (self.grad_evals, self.skipped_steps)
        done = [np.asarray(keras.ops.convert_to_numpy(c.value))
                for c in counters]
        super().set_weights(weights)
        for counter, value in zip(counters, done):
            counter.assign(value)

    def load_weights(self, filepath, skip_mismatch=False, **kwargs):
        """`keras.Model.load_weights`, a damaged file named first in one
        error (`keras_rts.files.check_saved_model`); another method's
        weights keep this model's ρ and λ (`load_own_variables`)."""
        files.check_saved_model(filepath)
        return super().load_weights(filepath, skip_mismatch=skip_mismatch,
                                    **kwargs)

    def save_own_variables(self, store):
        """Keras' own, and the method's name beside ρ and λ, so that
        loading into a model of another method can say so."""
        super().save_own_variables(store)
        store["method"] = np.frombuffer(self.method.encode(), np.uint8)

    def load_own_variables(self, store):
        """Keras' own, for files with or without the method's name. Weights
        of another method's model (an SGD run continued with PUGD, say)
        load but for ρ and λ, which are that method's units: this model
        keeps its own and warns, naming both."""
        own = self._trainable_variables + self._non_trainable_variables
        if len([k for k in store.keys() if k != "method"]) != len(own):
            self._check_load_own_variables(store)  # Keras' error
        saved = ("method" in store and bytes(np.asarray(
            store["method"], np.uint8)).decode())
        kept = ((self.radius, self.grad_scale)
                if saved and saved != self.method else ())
        if kept:
            position = {id(v): str(i) for i, v in enumerate(own)}
            theirs = [float(np.asarray(store[position[id(v)]])) for v in kept]
            mine = [float(v.numpy()) for v in kept]
            warnings.warn(
                f"These weights are of an RTSModel with method={saved!r} "
                f"(radius={theirs[0]:g}, grad_scale={theirs[1]:g}); this "
                f"model's method is {self.method!r}: the network's weights, "
                "the counters and the timing are loaded, radius and "
                f"grad_scale stay this model's ({mine[0]:g}, {mine[1]:g}).",
                stacklevel=2)
        for i, variable in enumerate(own):
            if not any(variable is k for k in kept):
                variable.assign(store[str(i)])

    def compile_from_config(self, config):
        # Keras does not re-compile a loaded model whose `compile` is
        # overridden unless this is overridden too; same steps as Keras'.
        config = keras.saving.deserialize_keras_object(
            saving.backend_neutral(config))
        self.compile(**config)
        if getattr(self, "optimizer", None) is not None and self.built:
            self.optimizer.build(self.trainable_variables)

    def _check_optimizer(self, optimizer):
        if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            optimizer = optimizer.inner_optimizer
        if (getattr(optimizer, "gradient_accumulation_steps", None)
                and self.method != "sgd"):
            raise ValueError(
                "gradient_accumulation_steps="
                f"{optimizer.gradient_accumulation_steps} is not supported "
                f"with method={self.method!r}: the optimizer would average "
                "the directions of several batches (for pugd, several unit "
                "vectors), which is not the method's step on their union. "
                "Use a larger batch or several replicas; for one ε per part "
                "of a batch, RTSModel(sub_batch_size=m). method='sgd' "
                "accepts it."
            )

    def _build_before_step(self, batch):
        """Every variable exists before the step reads them all (a
        subclassed model creates its own on its first call)."""
        self._check_optimizer(self.optimizer)
        if not all(layer.built for layer in self._flatten_layers()):
            self._symbolic_build(data_batch=batch)
        self._build_memory()
        if not self.optimizer.built:
            self.optimizer.build(self.trainable_variables)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "model": keras.saving.serialize_keras_object(self.model),
                "method": self.method,
                "radius": self._initial["radius"],
                "grad_scale": self._initial["grad_scale"],
                "perturb": self._initial["perturb"],
                "weight_decay": self.weight_decay,
                "eta": self.eta,
                "perturbation": self.perturbation,
                "sub_batch_size": self.sub_batch_size,
                **{k: v for k, v in self.options.items() if v is not None},
            }
        )
        if self.exclude_from_perturbation is not None:
            config["exclude_from_perturbation"] = \
                self.exclude_from_perturbation
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config["model"] = keras.saving.deserialize_keras_object(
            config["model"], custom_objects=custom_objects
        )
        return cls(**config)


class _PhaseShare(keras.callbacks.Callback):
    """Makes the epoch logs' `perturb` the share of the epoch's steps that
    ran the method (1 or 0 unless the phase switches within the epoch, as
    in interval mode or random switching), counted on the host. First among
    `fit`'s callbacks, so `History`, `CSVLogger` and the rest see it."""

    def on_epoch_begin(self, epoch, logs=None):
        self.model._epoch_steps = [0, 0]

    def on_epoch_end(self, epoch, logs=None):
        steps, on = self.model._epoch_steps
        if logs is not None and "perturb" in logs and steps:
            logs["perturb"] = on / steps


REUSE = "reuse"
"""LookSAM's one-pass phase (`RTSModel._next_phase`)."""


def method_passes(method, pass_fn, batch, weights, state, radius, grad_scale,
                  phase=True, memory=None, perturbed=None, sources=None,
                  loss_scale=None):
    """One (sub-)batch's passes of `method`: `g`, and `g*` at `w + ε` if it
    perturbs — the core `RTSModel`'s step and `keras_rts.functional` share.

    Args:
        method: a `keras_rts.directions.Method`.
        pass_fn: `pass_fn(batch, weights, state) -> (loss, y_pred, grads,
            new_state)`, a forward/backward pass at the given values that
            writes no variable.
        batch: passed to `pass_fn`.
        weights: the trainable values `w`.
        state: the other values, passed to `pass_fn`.
        radius: `ρ`.
        grad_scale: `λ`.
        phase: `False` (one plain pass: `d = g`), `True` (the method's
            step) or `REUSE` (LookSAM's one-pass step on its stored `g_v`).
        memory: the method's memory (`Method.memory`): one tensor per
            weight, or `None` for methods without.
        perturbed: which weights ε perturbs (booleans), or `None` for all.
        sources: `f(g)`, the gradients ε is formed from (default `g`).
        loss_scale: the loss scale the gradients carry, or `None`.

    Returns:
        `(Passes, memory)`: the passes (`direction` is `d = g* + λ·g`, or
        the method's own, not yet normalised; `g` itself after one plain
        pass) and the method's memory after them (`memory` itself if
        unchanged).
    """
    loss, y_pred, grads, new_state = pass_fn(batch, weights, state)
    if not (phase and method.name != "sgd" and method.epsilon):
        return Passes(loss, y_pred, grads, grads, new_state), memory
    g = _zeros_for_none(grads, weights)
    if phase == REUSE:  # LookSAM between its two-pass steps
        direction = directions.combine(method.reuse(g, memory), g,
                                       grad_scale)
        return (Passes(loss, y_pred, grads, _none_where(direction, grads),
                       new_state), memory)
    mask = [True] * len(weights) if perturbed is None else perturbed
    source = [s for s, m in zip(g if sources is None else sources(g),
                                mask) if m]
    chosen = [w for w, m in zip(weights, mask) if m]
    if method.memory == "average":
        if loss_scale is not None:  # the average is of true gradients
            source = [s / ops.cast(loss_scale, s.dtype) for s in source]
        epsilon, average = method.epsilon(
            source, chosen, radius, [a for a, m in zip(memory, mask) if m])
        memory = _fill(average, mask, memory)
    else:
        epsilon = method.epsilon(source, chosen, radius)
    at = _fill([w + e for w, e in zip(chosen, epsilon)], mask, weights)
    # Its state updates are dropped: statistics move in the first pass.
    _, _, perturbed_grads, _ = pass_fn(batch, at, new_state)
    g_star = _zeros_for_none(perturbed_grads, weights)
    direction = (method.direction or directions.combine)(
        g_star, g, grad_scale)
    if method.memory == "orthogonal":
        memory = directions.looksam_orthogonal(g_star, g)
    return (Passes(loss, y_pred, grads, _none_where(direction, grads),
                   new_state), memory)


def finished_direction(method, method_on, one_pass, failed, grads, direction,
                       weights, weight_decay):
    """The direction of a step whose passes are summed over replicas (and
    unscaled): normalised if the method normalises, coupled weight decay
    added, with `‖g‖` and whether the step is finite — the core
    `RTSModel`'s step and `keras_rts.functional` share.

    Args:
        method: a `keras_rts.directions.Method`.
        method_on: whether the step ran the method (not a plain step).
        one_pass: whether `direction` is `g` itself (no second pass).
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


class MethodMemory(keras.layers.Layer):
    """What a method keeps between steps (LookSAM's `g_v`, Friendly-SAM's
    average): one non-trainable variable per trainable variable of the
    network, zeros at first, in `tensors`. A layer of the `RTSModel`, so
    saved, loaded and restored by `BackupAndRestore` with the weights."""

    def __init__(self, like, **kwargs):
        super().__init__(**kwargs)
        self.tensors = [
            self.add_weight(name=v.path.replace("/", "_"), shape=v.shape,
                            initializer="zeros", dtype=v.dtype,
                            trainable=False)
            for v in like]
        self.built = True


def _fill(chosen, mask, rest):
    """`chosen` where `mask` is true, `rest` elsewhere (one list)."""
    it = iter(chosen)
    return [next(it) if m else r for m, r in zip(mask, rest)]


def _zeros_for_none(grads, weights):
    return [ops.zeros_like(w) if g is None else g
            for g, w in zip(grads, weights)]


def _none_where(tensors, like):
    """`tensors` with `None` where `like` has `None`."""
    return [None if o is None else t for t, o in zip(tensors, like)]


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
