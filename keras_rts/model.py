"""`RTSModel`: a Keras model trained by sharpness-aware steps (docs/method.md).

This module is the Keras face of the step: construction, config, saving,
compile and fit. The methods are definitions in `keras_rts.methods`; the
step, written once for every backend in `keras.ops`, is
`keras_rts.step`; how gradients are taken, how state is committed and how
replicas combine is the backend's (`keras_rts.backend`).
"""

import inspect
import warnings

import keras
import numpy as np

from keras_rts import backend, checks, files, progbar
from keras_rts import step as step_lib
from keras_rts.backend import saving
from keras_rts.phase import PhaseVariable
from keras_rts.timing_state import TimingState

_FIT_SIGNATURE = inspect.signature(keras.Model.fit)


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
            `"gsam"`, `"wsam"`, `"fsam"`, `"looksam"`, `"msam"`
            (`keras_rts.METHODS`; each defined in `keras_rts.methods`).
        radius: the perturbation radius `ρ` (non-negative); `None` means
            the method's default (0.05 for `sam` and its variants, 0.5 for
            `asam`, 1 for `pugd`, 0.3 for `msam`; `keras_rts.METHODS`).
        grad_scale: the gradient scale `λ` in `d = g* + λ · g`; `None` means
            the method's default (1 for `pugd`, 0 for `sam` and `asam`;
            `msam` makes no pass at `w` and takes none).
        perturb: whether the method's step is on; when false each step is a
            one-pass `sgd` step.
        weight_decay: coupled L2 weight decay, `d ← d + weight_decay · w`
            after normalisation and before the optimizer (momentum), as in
            PyTorch's `SGD(weight_decay=...)` and the published recipes.
            Keras optimizers' own `weight_decay` is decoupled instead.
        eta: ASAM's offset `η` in `T = |w| + η` (0.01); another method's
            model refuses it.
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
        gamma: WSAM's `γ` in (0, 1) (0.9): its sharpness term is weighted
            by `γ/(1−γ)`.
        decouple: WSAM's form: `True` (the default, the authors'): the
            optimizer applies `g` and, after it, `w ← w − lr·γ/(1−γ)·(g* −
            g)` apart from its momentum; `False`: the optimizer applies
            `γ/(1−γ)·(g* + λ·g)` with `λ = (1−2γ)/γ`.
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

    `msam` (Momentum-SAM) makes one pass a step, at `w − ρ·v/(‖v‖ + δ)`
    with `v` the optimizer's momentum (Keras' `SGD(momentum=μ)`, `Adam`
    or `AdamW`; others are refused at `compile`); the variables always
    hold `w`. docs/method.md, "Momentum-SAM".

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
        eta: float | None = None,
        perturbation: str = "replica",
        sub_batch_size: int | None = None,
        alpha: float | None = None,
        gamma: float | None = None,
        sigma: float | None = None,
        decay: float | None = None,
        every: int | None = None,
        decouple: bool | None = None,
        exclude_from_perturbation: list[str] | None = None,
        **kwargs,
    ) -> None:
        backend.check_supported()
        method_spec, radius, grad_scale, perturb, sub_batch_size = \
            checks.model_arguments(
                model, method, radius, grad_scale, perturb, weight_decay,
                eta, perturbation, sub_batch_size,
                dict(alpha=alpha, gamma=gamma, sigma=sigma, decay=decay,
                     every=every, decouple=decouple),
                exclude_from_perturbation)

        super().__init__(**kwargs)
        self.model = model
        self.method = method
        self.weight_decay = float(weight_decay)
        self.eta = dict(method_spec.options).get("eta")
        self.perturbation = perturbation
        self.sub_batch_size = sub_batch_size
        self.options = dict(alpha=alpha, gamma=gamma, sigma=sigma,
                            decay=decay, every=every, decouple=decouple)
        self.exclude_from_perturbation = (
            None if exclude_from_perturbation is None
            else list(exclude_from_perturbation))
        self._method = method_spec
        # The constructor's values, for get_config; the current values are
        # state, saved with the weights.
        self._initial = dict(radius=radius, grad_scale=grad_scale,
                             perturb=perturb)

        def state(name, value, dtype, aggregation="none"):
            return self.add_weight(
                name=name,
                shape=(),
                initializer=keras.initializers.Constant(value),
                dtype=dtype,
                trainable=False,
                aggregation=aggregation,
            )

        self.radius = state("radius", radius, "float32")
        self.grad_scale = state("grad_scale", grad_scale, "float32")
        with keras.name_scope(self.name, caller=self):
            self.perturb = PhaseVariable(perturb, name="perturb")
        self.grad_evals = state("grad_evals", 0, backend.INT,
                                "only_first_replica")
        self.skipped_steps = state(
            "skipped_steps", 0, backend.INT, "only_first_replica"
        )
        self.timing = TimingState(name="timing")
        self._host_variables = [self.perturb]
        if method_spec.cycle:
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
        """The method's memory (`keras_rts.methods.Method.memory`): one
        non-trainable variable per trainable one, zeros at first, saved,
        restored and committed with the step like the rest of the state."""
        if self.exclude_from_perturbation:  # names checked once built
            self._perturbed(len(self.trainable_variables))
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

    # The phase and the step (keras_rts.step).

    def _method_on(self, perturbing):
        """Whether a step of this phase runs the method (not plain sgd)."""
        return bool(perturbing) and not self._method.plain

    def _next_phase(self):
        """The phase of the next step, from the host's copy of `perturb`
        (`keras_rts.phase`): never a read of the device. `False` (a plain
        step), `True` (the method's step), or for LookSAM `"reuse"` (its
        one-pass step) on all but every k-th step of its phase
        (`keras_rts.methods.Method.phase`). Counted
        on the host for the epoch's share of steps that ran the method
        (`_PhaseShare`)."""
        on = self._method_on(self.perturb.host_value)
        self._epoch_steps[0] += 1
        self._epoch_steps[1] += bool(on)
        if not (on and self._method.cycle):
            return on
        position = self.method_steps.host_value
        self.method_steps.assign(position + 1)
        return self._method.phase(position)

    def _perturbed(self, count):
        """Which of the `count` trainable variables ε perturbs
        (`checks.perturbed_mask`; found once, not at every step)."""
        if (self._perturbed_mask is None
                or len(self._perturbed_mask) != count):
            self._perturbed_mask = checks.perturbed_mask(
                self.trainable_variables, self.exclude_from_perturbation)
        return self._perturbed_mask

    def _step(self, pass_fn, batch, weights, state, perturbing,
              loss_scale=None, sum_over_replicas=None,
              optimizer_values=None):
        """One training step, computed without writing any variable
        (`keras_rts.step.train_step`)."""
        return step_lib.train_step(
            self, pass_fn, batch, weights, state, perturbing, loss_scale,
            sum_over_replicas, optimizer_values)

    def _logs(self, metrics, step, perturbing, state):
        """The step's logs (`keras_rts.step.logs`)."""
        return step_lib.logs(self, metrics, step, perturbing, state)

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
            checks.labels(self, name, labels)
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
                and not self._method.plain):
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
        if self._method.momentum:  # refused unless it keeps a momentum
            step_lib.momentum_variables(optimizer, self.method)

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
                "perturbation": self.perturbation,
                "sub_batch_size": self.sub_batch_size,
                **{k: v for k, v in self.options.items() if v is not None},
                **({"eta": self.eta} if self.eta is not None else {}),
            }
        )
        if self.exclude_from_perturbation is not None:
            config["exclude_from_perturbation"] = \
                self.exclude_from_perturbation
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        if config.get("method") != "asam" and config.get("eta") == 0.01:
            # Files of keras_rts 0.1.0 hold the default eta of every method.
            del config["eta"]
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
