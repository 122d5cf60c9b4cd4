"""`RTSModel`: a Keras model trained by sharpness-aware steps (SPEC §1)."""

import functools
import math

import keras
import tensorflow as tf
from keras import ops

from keras_rts import directions
from keras_rts.timing_state import TimingState

# Keras' own helper for the loss tracker (the same call as in its train_step).
from keras.src.losses.loss import unscale_loss_for_distribution


def _check_finite_number(name, value, allow_none=False):
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}.")
    if not math.isfinite(value) or value < 0:
        raise ValueError(
            f"{name} must be finite and non-negative, got {value!r}."
        )


def _loss_scale(optimizer):
    """The factor by which `optimizer.scale_loss` multiplies, or `None`."""
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return optimizer.dynamic_scale
    return optimizer.loss_scale_factor


def _all_finite(tensors):
    return tf.reduce_all([tf.reduce_all(tf.math.is_finite(t)) for t in tensors])


def _apply_if_finite(optimizer, grads, variables, finite):
    """Applies `grads` unless `finite` is false, where Keras would apply.

    A `LossScaleOptimizer` already skips non-finite steps (and lowers its
    scale), so it is called as is. For any other optimizer the same pattern
    is used: under a strategy that needs `merge_call`, the conditional is
    taken in cross-replica context, because a branch that calls `merge_call`
    (as `optimizer.apply` does) cannot live in a replica-context `tf.cond`.
    """
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            # It checks the first replica's gradients only: make every
            # replica's non-finite when any replica's step is.
            grads = [tf.where(finite, g, tf.cast(float("nan"), g.dtype))
                     for g in grads]
        optimizer.apply(grads, variables)
        return

    def apply():
        optimizer.apply(grads, variables)

    if tf.__internal__.distribute.strategy_supports_no_merge_call():
        tf.cond(finite, apply, lambda: None)
        return

    def apply_replica(grads):
        optimizer.apply(grads, variables)

    def cross_replica(distribution, grads, finite):
        # Skip on every replica if the step is not finite on any.
        finite = tf.reduce_all(distribution.experimental_local_results(finite))
        tf.cond(
            finite,
            lambda: distribution.extended.call_for_each_replica(
                apply_replica, args=(grads,)
            ),
            lambda: None,
        )

    tf.distribute.get_replica_context().merge_call(
        cross_replica, args=(grads, finite)
    )


def _is_multi_worker(strategy):
    """Whether Keras reduces step outputs with a collective along axis 0.

    Keras 3 does so under a `MultiWorkerMirroredStrategy` with several
    workers (the test of its `reduce_per_replica`), which fails on scalar
    logs (keras-team/keras#20585).
    """
    return (
        isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
        and strategy.extended._in_multi_worker_mode()
    )


def _one_dimensional(logs):
    """Scalar logs as shape-[1] tensors, which the reduction along axis 0
    of `_is_multi_worker` turns back into the mean over replicas."""
    return {k: tf.reshape(v, [-1]) if v.shape.rank == 0 else v
            for k, v in ((k, tf.convert_to_tensor(v)) for k, v in logs.items())}


@keras.saving.register_keras_serializable(package="keras_rts")
class RTSModel(keras.Model):
    """Wraps a Keras model and trains it with a sharpness-aware step.

    Each training step follows SPEC §1. For `pugd` (the default):

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
    not applied), `grad_norm` (‖g‖ of the step's first pass; under several
    replicas, the mean over replicas of each one's ‖g‖ on its part of the
    batch) and
    `perturb_start_epoch` (the epoch a timing trigger switched the
    perturbation on, -1 before). What the timing triggers remember is kept
    in `timing` (a `keras_rts.timing_state.TimingState`), saved with the
    weights.

    Args:
        model: the `keras.Model` to train.
        method: one of `"sgd"`, `"ugd"`, `"sam"`, `"asam"`, `"pugd"`.
        radius: the perturbation radius `ρ` (non-negative).
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
        **kwargs: passed to `keras.Model` (e.g. `name`).

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
        model,
        method="pugd",
        radius=1.0,
        grad_scale=None,
        perturb=True,
        weight_decay=0.0,
        eta=0.01,
        perturbation="replica",
        sub_batch_size=None,
        **kwargs,
    ):
        if not isinstance(model, keras.Model):
            raise ValueError(
                "model must be a keras.Model (e.g. a Sequential or "
                f"functional model), got {type(model).__name__}."
            )
        method_spec = directions.get_method(method)
        _check_finite_number("radius", radius)
        _check_finite_number("grad_scale", grad_scale, allow_none=True)
        _check_finite_number("weight_decay", weight_decay)
        _check_finite_number("eta", eta)
        if not isinstance(perturb, bool):
            raise ValueError(f"perturb must be True or False, got {perturb!r}.")
        if perturbation not in ("replica", "global"):
            raise ValueError(
                f"perturbation must be 'replica' or 'global', got "
                f"{perturbation!r}."
            )
        if sub_batch_size is not None and (
            isinstance(sub_batch_size, bool)
            or not isinstance(sub_batch_size, int)
            or sub_batch_size < 1
        ):
            raise ValueError(
                "sub_batch_size must be a positive integer (examples per "
                f"sub-batch) or None, got {sub_batch_size!r}."
            )
        if sub_batch_size is not None and perturbation == "global":
            raise ValueError(
                "sub_batch_size forms one ε per sub-batch, which contradicts "
                "perturbation='global' (one ε for the global batch); use "
                "perturbation='replica' or sub_batch_size=None."
            )
        if grad_scale is None:
            grad_scale = method_spec.default_grad_scale

        super().__init__(**kwargs)
        self.model = model
        self.method = method
        self.weight_decay = float(weight_decay)
        self.eta = float(eta)
        self.perturbation = perturbation
        self.sub_batch_size = sub_batch_size
        self._method = method_spec
        # The constructor's values, for get_config; the current values are
        # state, saved with the weights.
        self._initial = dict(
            radius=float(radius), grad_scale=float(grad_scale), perturb=perturb
        )
        self._perturbation = method_spec.perturbation
        if method == "asam":
            self._perturbation = functools.partial(
                directions.asam_perturbation, eta=self.eta
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
        self.perturb = state("perturb", perturb, "bool")
        self.grad_evals = state("grad_evals", 0, "int64", "only_first_replica")
        self.skipped_steps = state(
            "skipped_steps", 0, "int64", "only_first_replica"
        )
        self.timing = TimingState(name="timing")
        if model.built:
            self.built = True

    def build(self, input_shape):
        # A subclassed model without its own `build` creates its variables
        # on its first call instead.
        if not self.model.built and not getattr(self.model.build,
                                                "_is_default", False):
            self.model.build(input_shape)
        self.built = True

    def call(self, inputs, training=None):
        return self.model(inputs, training=training)

    def _gradients_at(self, data, variables, values):
        """Gradients of the scaled loss with `variables` read as `values`.

        The forward pass runs in training mode inside a `StatelessScope`: no
        variable is written, so BatchNormalization statistics and the
        weights are left as they are.
        """
        grads = self._stateless_pass(data, variables, values, [], [])[2]
        return [
            ops.zeros_like(v) if g is None else tf.convert_to_tensor(g)
            for g, v in zip(grads, values)
        ]

    def _combined_direction(self, data, grads, sources, variables,
                            loss_scale):
        """`d = g* + λ·g`, with ε formed from `sources` (unscaled)."""
        if self._perturbation is None:
            return grads
        weights = [tf.convert_to_tensor(v) for v in variables]
        epsilon = self._perturbation(sources, weights, self.radius)
        perturbed_grads = self._gradients_at(
            data, variables, [w + e for w, e in zip(weights, epsilon)]
        )
        if loss_scale is not None:
            perturbed_grads = [g / loss_scale for g in perturbed_grads]
        return directions.combine(perturbed_grads, grads, self.grad_scale)

    def _method_direction(self, data, grads, variables, loss_scale):
        """The method's direction `d` (or `U`), from the unscaled `grads`."""
        direction = self._combined_direction(
            data, grads, grads, variables, loss_scale
        )
        if self._method.normalize:
            direction = directions.normalize(direction)
        return direction

    def _replica_share(self, batch, grads, variables, loss_scale, context):
        """This replica's share of the global direction (several replicas).

        Keras scales each replica's loss by 1/replicas, so the shares' sum
        is the mean over replicas. Collective reductions stay outside the
        `tf.cond` (a cross-replica reduction in a conditional branch fails
        under strategies that need `merge_call`).
        """
        sources = grads
        if self._perturbation is not None and self.perturbation == "global":
            sources = context.all_reduce(tf.distribute.ReduceOp.SUM, grads)
        return tf.cond(
            self.perturb,
            lambda: self._combined_direction(
                batch, grads, sources, variables, loss_scale
            ),
            lambda: grads,
        )

    def compile(self, optimizer="rmsprop", *args, **kwargs):
        """`keras.Model.compile`; refuses optimizers the step cannot use.

        Raises:
            ValueError: the optimizer accumulates gradients
                (`gradient_accumulation_steps`) and the method perturbs.
        """
        optimizer = keras.optimizers.get(optimizer)
        self._check_optimizer(optimizer)
        super().compile(optimizer, *args, **kwargs)

    def compile_from_config(self, config):
        # Keras does not re-compile a loaded model whose `compile` is
        # overridden unless this is overridden too; same steps as Keras'.
        config = keras.saving.deserialize_keras_object(config)
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

    def _first_pass(self, batch):
        """The ordinary Keras forward/backward pass at `w`.

        It alone updates BatchNormalization statistics. Returns `(loss,
        y_pred, grads, variables)`, with the variables that have a gradient
        (like Keras' optimizer, the others take no part) and their scaled
        gradients.
        """
        x, y, sample_weight = batch
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self.compute_loss(
                x=x, y=y, y_pred=y_pred, sample_weight=sample_weight,
                training=True,
            )
            scaled_loss = self.optimizer.scale_loss(loss)
        all_variables = self.trainable_variables
        grads = tape.gradient(scaled_loss, all_variables)
        pairs = [(g, v) for g, v in zip(grads, all_variables) if g is not None]
        return (loss, y_pred, [tf.convert_to_tensor(g) for g, _ in pairs],
                [v for _, v in pairs])

    def _stateless_pass(self, batch, variables, values, state, state_values):
        """A training-mode pass with `variables` and `state` read as values.

        Returns `(loss, y_pred, grads, new_state)`: the scaled gradients
        with respect to `values` (`None` where a variable has none) and the
        values the pass assigned to `state` (`None` where it assigned
        none). No variable is written.
        """
        x, y, sample_weight = batch
        with tf.GradientTape() as tape:
            tape.watch(values)
            with keras.StatelessScope(
                state_mapping=list(zip(variables, values))
                + list(zip(state, state_values)),
                collect_losses=True,
            ) as scope:
                y_pred = self(x, training=True)
                loss = self.compute_loss(
                    x=x, y=y, y_pred=y_pred, sample_weight=sample_weight,
                    training=True,
                )
            scaled_loss = self.optimizer.scale_loss(loss)
        grads = tape.gradient(scaled_loss, values)
        new_state = [scope.get_current_value(v) for v in state]
        new_state = [None if n is old else n
                     for n, old in zip(new_state, state_values)]
        return loss, y_pred, grads, new_state

    def _sub_batch_passes(self, batch, loss_scale):
        """Both passes per sub-batch of `sub_batch_size` examples.

        When `perturb` is on, each sub-batch forms its own ε from its own
        gradient, and `g`, `g* + λ·g`, the loss and the state updates are
        the sub-batches' means weighted by their sizes. When it is off, one
        full-batch pass. Returns `(loss, y_pred, grads, variables, share)`
        like `_first_pass` plus the unnormalised direction `share`; the
        state (BatchNormalization statistics, seeds) is assigned here,
        outside any conditional.
        """
        variables = self.trainable_variables
        weights = [tf.convert_to_tensor(v) for v in variables]
        state = self.model.non_trainable_variables
        initial = [tf.convert_to_tensor(v) for v in state]
        floating = [tf.as_dtype(v.dtype).is_floating for v in state]
        size = tf.shape(next(t for t in tf.nest.flatten(batch[0])
                             if t is not None))[0]
        # Known when the branches are traced: which variables have no
        # gradient and which state a pass assigns.
        no_grad, assigned = set(), set()

        def unscaled(grads):
            for i, g in enumerate(grads):
                if g is None:
                    no_grad.add(i)
            grads = [ops.zeros_like(w) if g is None else
                     tf.convert_to_tensor(g) for g, w in zip(grads, weights)]
            if loss_scale is not None:
                grads = [g / loss_scale for g in grads]
            return grads

        def updated(new_state, old_state):
            for i, n in enumerate(new_state):
                if n is not None:
                    assigned.add(i)
            return [o if n is None else tf.cast(n, o.dtype)
                    for n, o in zip(new_state, old_state)]

        def full_batch():
            loss, y_pred, grads, new = self._stateless_pass(
                batch, variables, weights, state, initial)
            grads = unscaled(grads)
            return loss, y_pred, grads, updated(new, initial), grads

        def by_sub_batch():
            m = self.sub_batch_size
            count = (size + m - 1) // m
            y_pred_spec = []

            def body(i, loss, grads, combined, means, current, predictions):
                start = i * m
                stop = tf.minimum(start + m, size)
                part = tf.nest.map_structure(
                    lambda t: None if t is None else t[start:stop], batch)
                fraction = tf.cast(stop - start, "float32") / tf.cast(
                    size, "float32")
                # Floating state (moving statistics) is updated from its
                # value before the step; the rest (seeds) carries on.
                before = [o if f else c
                          for o, c, f in zip(initial, current, floating)]
                part_loss, part_pred, g, new = self._stateless_pass(
                    part, variables, weights, state, before)
                g = unscaled(g)
                new = updated(new, before)
                epsilon = self._perturbation(g, weights, self.radius)
                _, _, g_star, _ = self._stateless_pass(
                    part, variables, [w + e for w, e in zip(weights, epsilon)],
                    state, new)
                part_combined = directions.combine(
                    unscaled(g_star), g, self.grad_scale)
                flat_pred = tf.nest.flatten(part_pred)
                if not y_pred_spec:
                    y_pred_spec.append(part_pred)

                def add(total, part):
                    return [t + tf.cast(fraction, p.dtype) * p
                            for t, p in zip(total, part)]

                return (
                    i + 1,
                    loss + fraction * tf.cast(part_loss, "float32"),
                    add(grads, g),
                    add(combined, part_combined),
                    [t + tf.cast(fraction, n.dtype) * n if f else t
                     for t, n, f in zip(means, new, floating)],
                    [c if f else n for c, n, f in zip(current, new, floating)],
                    [a.write(i, p) for a, p in zip(predictions, flat_pred)],
                )

            zeros = [tf.zeros_like(w) for w in weights]
            # One array per output of the model.
            dtypes = [self.compute_dtype]
            if getattr(self.model, "outputs", None):
                dtypes = [o.dtype for o in tf.nest.flatten(self.model.outputs)]
            arrays = [tf.TensorArray(d, size=count, infer_shape=False)
                      for d in dtypes]
            loop = tf.while_loop(
                lambda i, *_: i < count, body,
                (tf.constant(0), tf.constant(0.0), zeros, list(zeros),
                 [tf.zeros_like(s) if f else s
                  for s, f in zip(initial, floating)],
                 list(initial), arrays),
                parallel_iterations=1,
            )
            _, loss, grads, combined, means, current, predictions = loop
            new = [n if f else c for n, c, f in zip(means, current, floating)]
            flat = []
            for a, spec in zip(predictions, tf.nest.flatten(y_pred_spec[0])):
                flat.append(a.concat())
                flat[-1].set_shape([None] + spec.shape[1:])
            y_pred = tf.nest.pack_sequence_as(y_pred_spec[0], flat)
            return loss, y_pred, grads, new, combined

        loss, y_pred, grads, new, share = tf.cond(
            self.perturb, by_sub_batch, full_batch)
        for i, (variable, value) in enumerate(zip(state, new)):
            if i in assigned:
                variable.assign(value)
        keep = [i for i in range(len(variables)) if i not in no_grad]
        return (loss, y_pred, [grads[i] for i in keep],
                [variables[i] for i in keep], [share[i] for i in keep])

    def _normalized_shares(self, share, context):
        """Each replica's share of `d / (‖d‖ + δ)`, `d` the replicas' sum."""
        total = context.all_reduce(tf.distribute.ReduceOp.SUM, share)
        scale = tf.where(
            self.perturb,
            1.0 / (directions.global_norm(total) + directions.DELTA),
            1.0,
        )
        return [d * scale for d in share]

    def train_step(self, data):
        # Runs when the train function is traced: before any step (in case
        # the optimizer was changed after compile).
        self._check_optimizer(self.optimizer)
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        batch = (x, y, sample_weight)
        context = tf.distribute.get_replica_context()
        replicas = context.num_replicas_in_sync if context else 1

        # The arithmetic is done on the true (unscaled) gradients; the loss
        # scale is a power of two, so unscaling and rescaling are exact.
        share = None  # the direction before normalisation, if known
        if self.sub_batch_size is not None and self._perturbation is not None:
            # The passes run inside a loop: every variable must exist
            # before (a subclassed model creates its own on its first call).
            if not all(layer.built for layer in self._flatten_layers()):
                self._symbolic_build(data_batch=batch)
            if not self.optimizer.built:
                self.optimizer.build(self.trainable_variables)
            loss_scale = _loss_scale(self.optimizer)
            loss, y_pred, grads, variables, share = self._sub_batch_passes(
                batch, loss_scale)
        else:
            loss, y_pred, grads, variables = self._first_pass(batch)
            if not self.optimizer.built:
                self.optimizer.build(self.trainable_variables)
            loss_scale = _loss_scale(self.optimizer)
            if loss_scale is not None:
                grads = [g / loss_scale for g in grads]
        self._loss_tracker.update_state(
            unscale_loss_for_distribution(loss),
            sample_weight=tf.shape(
                next(i for i in tf.nest.flatten(x) if i is not None)
            )[0],
        )
        # Keras scales each replica's loss by 1/replicas: undone, so that
        # the norm is that of the replica's own gradient (their mean is
        # logged).
        grad_norm = directions.global_norm(grads) * replicas
        self.timing.record_grad_norm(grad_norm)

        direction = grads
        if self._method.name != "sgd" and replicas > 1:
            if share is None:
                share = self._replica_share(
                    batch, grads, variables, loss_scale, context)
            direction = share
            if self._method.normalize:
                direction = self._normalized_shares(share, context)
        elif self._method.name != "sgd":
            if share is None:
                direction = tf.cond(
                    self.perturb,
                    lambda: self._method_direction(
                        batch, grads, variables, loss_scale),
                    lambda: grads,
                )
            elif self._method.normalize:
                direction = tf.cond(
                    self.perturb,
                    lambda: directions.normalize(share),
                    lambda: share,
                )
            else:
                direction = share
        if self.weight_decay:
            # Each replica adds its share: the optimizer sums them.
            direction = directions.add_weight_decay(
                direction,
                [tf.convert_to_tensor(v) for v in variables],
                self.weight_decay / replicas,
            )
        if loss_scale is not None:
            direction = [d * loss_scale for d in direction]

        finite = tf.logical_and(
            tf.reduce_all(tf.math.is_finite(loss)), _all_finite(direction)
        )
        if replicas > 1:
            # One replica's non-finite step is every replica's.
            finite = tf.equal(context.all_reduce(
                tf.distribute.ReduceOp.SUM,
                tf.cast(tf.logical_not(finite), tf.float32)), 0.0)
        _apply_if_finite(self.optimizer, direction, variables, finite)

        method_on = self._method_on()
        passes = 1
        if self._perturbation is not None:
            passes += tf.cast(method_on, "int64")
        self.grad_evals.assign_add(passes)
        self.skipped_steps.assign_add(tf.cast(tf.logical_not(finite), "int64"))
        logs = self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)
        logs.update(
            radius=tf.convert_to_tensor(self.radius),
            grad_scale=tf.convert_to_tensor(self.grad_scale),
            perturb=tf.cast(method_on, "int32"),
            grad_evals=tf.convert_to_tensor(self.grad_evals),
            skipped_steps=tf.convert_to_tensor(self.skipped_steps),
            grad_norm=grad_norm,
            perturb_start_epoch=tf.convert_to_tensor(
                self.timing.perturb_start_epoch
            ),
        )
        if _is_multi_worker(self.distribute_strategy):
            logs = _one_dimensional(logs)
        return logs

    def test_step(self, data):
        logs = super().test_step(data)
        if _is_multi_worker(self.distribute_strategy):
            logs = _one_dimensional(logs)
        return logs

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # keras-team/keras#20585: under several workers, Keras reduces the
        # first distributed batch with a collective that refuses it, only
        # to read its shapes. One replica's part has the same shapes.
        strategy = getattr(self, "_distribute_strategy", None)
        if iterator is not None and _is_multi_worker(strategy):
            for _, _, it in iterator:
                data_batch = tf.nest.map_structure(
                    lambda v: strategy.experimental_local_results(v)[0]
                    if isinstance(v, tf.distribute.DistributedValues) else v,
                    next(it))
                break
            iterator = None
        return super()._maybe_symbolic_build(
            iterator=iterator, data_batch=data_batch)

    def _method_on(self):
        """Whether the method's step (not plain `sgd`) runs, as a tensor."""
        if self._method.name == "sgd":
            return tf.constant(False)
        return tf.convert_to_tensor(self.perturb)

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
            }
        )
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config["model"] = keras.saving.deserialize_keras_object(
            config["model"], custom_objects=custom_objects
        )
        return cls(**config)
