"""`RTSModel`'s step on PyTorch: the first pass is autograd on the
variables themselves (as in Keras' own torch trainer, no `.grad`
accumulated), the second on the perturbed values mapped into a
`keras.StatelessScope` (no variable written); one step function per
phase; the optimizer updates the weights in place through Keras' own
torch path, and where the step is not finite the weights, optimizer state
and model state keep their values from before it (`torch.where`: no read
of the device)."""

import keras
import torch
from keras import ops

from keras_rts import step as step_lib


class Trainer:
    """The PyTorch half of `RTSModel` (see `keras_rts.model`)."""

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        batch = (x, y, sample_weight)
        self._build_before_step(batch)
        optimizer = self.optimizer
        trainable = self.trainable_variables
        state = self.non_trainable_variables
        weights = [v.value for v in trainable]
        # The step's first pass runs on the variables themselves, as in
        # Keras' own torch trainer (a StatelessScope costs more per read
        # than the step's arithmetic); its state updates (BatchNormalization
        # statistics) land in the variables, so their values before the
        # step are kept for a step that is not finite.
        method_on = self._method_on(self._perturbing)
        direct = self._direct_pass = not (method_on and (
            self.sub_batch_size or not self._method.first_pass_at_w))
        with torch.no_grad():
            state_values = [v.value.clone() if direct else v.value
                            for v in state]
        scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
        with torch.no_grad():
            step = self._step(
                self._pass, batch, weights, state_values, self._perturbing,
                loss_scale=optimizer.dynamic_scale.value if scaled else None)
        with torch.no_grad():
            # The optimizer updates the variables in place, as in Keras'
            # own torch trainer; where the step is not finite they take
            # back their values from before it (a select: no device
            # read). A LossScaleOptimizer skips such steps itself.
            kept = [] if scaled else [*trainable, *optimizer.variables]
            before = [v.value.clone() for v in kept]
            learning_rate = optimizer.learning_rate
            optimizer.apply(step.direction, trainable)
            if step.apart is not None:  # after the optimizer, at its rate
                for variable, new in zip(trainable, step_lib.apart_applied(
                        [v.value for v in trainable], step.apart,
                        learning_rate, step.finite)):
                    if new is not variable.value:
                        variable.value.copy_(new)
            for variable, value in zip(kept, before):
                torch.where(step.finite, variable.value, value,
                            out=variable.value)
            changed = [(v.value, new) for v, old, new
                       in zip(state, state_values, step.state)
                       if new is not old]
            if changed:  # in place, fused, as Keras' torch optimizers write
                torch._foreach_copy_(*map(list, zip(*changed)))
        self._loss_tracker.update_state(
            step.loss, sample_weight=next(
                i for i in keras.tree.flatten(x) if i is not None).shape[0])
        if not direct:
            # (A first pass on the variables updated them itself.)
            self._track_output_losses(y, step.y_pred, sample_weight)
        metrics = self.compute_metrics(x, y, step.y_pred, sample_weight)
        return self._logs(metrics, step, method_on, step.state)

    def _pass(self, batch, weights, state):
        """A training-mode forward/backward pass at `weights` and `state`.

        Returns `(loss, y_pred, grads, new_state)`: the gradients of the
        scaled loss (`None` where a variable has none) and the state the
        pass assigned. No variable is written (`keras.StatelessScope`),
        but by the step's first pass, which `train_step` runs on the
        variables themselves (`_pass_on_the_variables`).
        """
        if self._direct_pass:  # the step's first pass (see `train_step`)
            self._direct_pass = False
            return self._pass_on_the_variables(batch, weights)
        leaves = [w.detach().requires_grad_(True) for w in weights]
        mapping = (list(zip(self.trainable_variables, leaves))
                   + list(zip(self.non_trainable_variables, state)))
        with keras.StatelessScope(state_mapping=mapping,
                                  collect_losses=True) as scope:
            loss, y_pred, grads = self._loss_and_grads(batch, leaves)
        new_state = []
        for variable, old in zip(self.non_trainable_variables, state):
            new = scope.get_current_value(variable)
            new_state.append(old if new is None else
                             ops.cast(new, old.dtype).detach())
        return loss, y_pred, grads, new_state

    def _pass_on_the_variables(self, batch, weights):
        """`_pass` at the variables' own values (`weights`, their tensors),
        reading them directly: their state updates are written into them
        (the caller keeps the values from before)."""
        loss, y_pred, grads = self._loss_and_grads(batch, weights)
        return (loss, y_pred, grads,
                [v.value for v in self.non_trainable_variables])

    def _loss_and_grads(self, batch, weights):
        """The training-mode loss and predictions on `batch`, and the
        gradients of the scaled loss with respect to `weights` (the tensors
        the model reads), all detached."""
        x, y, sample_weight = batch
        with torch.enable_grad():
            y_pred = self(x, training=True)
            loss = self.compute_loss(
                x=x, y=y, y_pred=y_pred, sample_weight=sample_weight,
                training=True)
            scaled_loss = self.optimizer.scale_loss(loss)
        grads = torch.autograd.grad(scaled_loss, weights, allow_unused=True)
        return (loss.detach(), keras.tree.map_structure(
            lambda t: t.detach(), y_pred), list(grads))

    def make_train_function(self, force=False):
        """One step function per phase (perturbing or not), chosen on the
        host before each step from the host's copy of `perturb`
        (`keras_rts.phase`); with `jit_compile=True` each is
        `torch.compile`d, as in Keras' own torch trainer."""
        if self.train_function is not None and not force:
            return self.train_function
        if self.steps_per_execution > 1:
            raise ValueError(
                "`steps_per_execution` must be 1 with the PyTorch backend. "
                f"Received: steps_per_execution={self.steps_per_execution}")
        functions = {}

        def phase_function(perturbing):
            if perturbing not in functions:
                def step(data):
                    self._perturbing = perturbing
                    return self.train_step(data[0])

                if self._should_torch_compile():
                    step = torch.compile(step)
                functions[perturbing] = step
            return functions[perturbing]

        def train_function(data):
            return phase_function(self._next_phase())(data)

        self.train_function = train_function
        return train_function

    def _sub_batch_loop(self, batch, size, body, carry):
        """`body(part, fraction, carry) -> (carry, y_pred)` over the
        sub-batches of `size` examples, eagerly. Returns the final carry
        and the parts' predictions, concatenated."""
        total = next(t for t in keras.tree.flatten(batch[0])
                     if t is not None).shape[0]
        predictions = []
        for start in range(0, total, size):
            stop = min(start + size, total)
            part = tuple(keras.tree.map_structure(
                lambda t: t[start:stop], b) if b is not None else None
                for b in batch)
            carry, y_pred = body(part, (stop - start) / total, carry)
            predictions.append(y_pred)
        return carry, keras.tree.map_structure(
            lambda *parts: ops.concatenate(parts, axis=0), *predictions)


def global_norm(tensors):
    """`keras_rts.directions.global_norm` in PyTorch's fused multi-tensor
    kernels (`torch._foreach_*`, as `torch.optim` uses): eagerly, the
    per-tensor `keras.ops` calls cost far more than the arithmetic. Always
    divided by the largest magnitude before squaring (so overflow-safe
    without a conditional, which would read the device); NaN or infinity
    anywhere gives a non-finite norm, all zeros 0."""
    tensors = [t if t.dtype == torch.float32 else t.float() for t in tensors]
    if torch.compiler.is_compiling():
        # Under `torch.compile` (jit_compile=True) the compiler fuses the
        # per-tensor ops itself (and inductor refuses `_foreach_max`).
        largest = torch.stack([t.abs().max() for t in tensors]).max()
    else:
        largest = torch.stack(
            torch._foreach_max(torch._foreach_abs(tensors))).max()
    divisor = torch.where(largest > 0, largest, torch.ones_like(largest))
    if torch.compiler.is_compiling():
        norms = [torch.linalg.vector_norm(t / divisor) for t in tensors]
    else:
        norms = torch._foreach_norm(torch._foreach_div(tensors, divisor))
    return divisor * torch.linalg.vector_norm(torch.stack(norms))


def value_and_grad(fn, weights, state):
    """`fn(weights, state) -> (loss, aux, new_state)` and the gradients of
    its loss with respect to `weights` (`keras_rts.functional`), all
    detached."""
    leaves = [torch.as_tensor(w).detach().requires_grad_(True)
              for w in weights]
    with torch.enable_grad():
        loss, aux, new_state = fn(leaves, state)
    grads = torch.autograd.grad(loss, leaves, allow_unused=True)

    def detached(tree):
        return keras.tree.map_structure(
            lambda t: t.detach() if isinstance(t, torch.Tensor) else t, tree)

    return loss.detach(), detached(aux), detached(new_state), list(grads)
