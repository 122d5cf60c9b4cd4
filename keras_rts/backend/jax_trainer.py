"""`RTSModel`'s step on JAX: the passes as `jax.value_and_grad` of Keras'
own stateless `compute_loss_and_updates`, one compiled step per phase, the
new state returned.

Under `keras.distribution.DataParallel` the step is one global
computation (GSPMD): `g` is the global batch's gradient, so ε is the
global one; a per-device ε is `sub_batch_size` = the per-device batch.
"""

import contextlib

import jax
import keras
from keras import ops

from keras_rts import step as step_lib


class Trainer:
    """The JAX half of `RTSModel` (see `keras_rts.model`)."""

    def train_step(self, state, data):
        trainable, non_trainable, optimizer_values, metrics_values = state
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        batch = (x, y, sample_weight)
        optimizer = self.optimizer
        scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
        loss_scale = None
        if scaled:
            loss_scale = optimizer_values[_index(optimizer.variables,
                                                 optimizer.dynamic_scale)]

        def pass_fn(batch, weights, state):
            (_, (loss, y_pred, new_state, _)), grads = jax.value_and_grad(
                self.compute_loss_and_updates, has_aux=True)(
                    weights, state, metrics_values, *batch, training=True,
                    optimizer_variables=optimizer_values)
            return loss, y_pred, grads, new_state

        step = self._step(pass_fn, batch, trainable, non_trainable,
                          self._perturbing, loss_scale=loss_scale,
                          optimizer_values=optimizer_values)
        new_trainable, new_optimizer = optimizer.stateless_apply(
            optimizer_values, step.direction, trainable)
        if step.apart is not None:  # after the optimizer, at its rate
            mapping = list(zip(optimizer.variables, optimizer_values))
            with keras.StatelessScope(state_mapping=mapping):
                learning_rate = ops.convert_to_tensor(
                    optimizer.learning_rate)
            new_trainable = step_lib.apart_applied(
                new_trainable, step.apart, learning_rate, step.finite)
        if not scaled:  # a LossScaleOptimizer skips non-finite steps itself
            new_trainable = _where(step.finite, new_trainable, trainable)
            new_optimizer = _where(step.finite, new_optimizer,
                                   optimizer_values)
        metrics_values = self._output_losses_tracked(
            metrics_values, y, step.y_pred, sample_weight)
        metrics, metrics_values = self._update_metrics_variables(
            metrics_values, step.loss, x, y, step.y_pred, sample_weight)
        logs = self._logs(metrics, step, self._method_on(self._perturbing),
                          step.state)
        return logs, (new_trainable, step.state, new_optimizer,
                      metrics_values)

    def _output_losses_tracked(self, metrics_values, y, y_pred,
                               sample_weight):
        """`metrics_values` with each output's loss recorded
        (`_track_output_losses`), statelessly."""
        if not getattr(self._compile_loss, "metrics", None):
            return metrics_values  # one output: Keras logs no loss of its
        mapping = list(zip(self.metrics_variables, metrics_values))
        with keras.StatelessScope(state_mapping=mapping) as scope:
            self._track_output_losses(y, y_pred, sample_weight)
        return [value if (new := scope.get_current_value(v)) is None else new
                for v, value in zip(self.metrics_variables, metrics_values)]

    def make_train_function(self, force=False):
        """One compiled step per phase (perturbing or not), each traced on
        first use and kept, chosen on the host before the step from the
        host's copy of `perturb` (`keras_rts.phase`). (A
        `jax.lax.cond` between the phases inside one compiled step ran
        20× slower on XLA's CPU backend, even in the one-pass phase.)"""
        if self.train_function is not None and not force:
            return
        functions = {}
        shardings = None  # read now: during `fit` the variables are purged
        if keras.distribution.distribution() is not None:
            shardings = (None, self._get_state_sharding_spec())

        def compiled(perturbing):
            # As Keras' own `make_train_function`, one closure per phase.
            def step(state, data):
                self._perturbing = perturbing  # read when traced
                return self.train_step(state, data)

            if not self.run_eagerly and self.jit_compile:
                step = jax.jit(step, donate_argnums=0,
                               out_shardings=shardings)
            return self._make_function(step)

        def train_function(state, iterator):
            perturbing = self._next_phase()
            if perturbing not in functions:
                functions[perturbing] = compiled(perturbing)
            return functions[perturbing](state, iterator)

        self.train_function = train_function

    def jax_state_sync(self):
        """Keras' write-back of the step state into the variables, leaving
        `perturb` (and LookSAM's `method_steps`) as the host holds it: a
        step never changes it, and an assignment between steps
        (`perturb.assign`, which also sets the host's copy) reaches the
        variable, not the state `fit` carries."""
        with contextlib.ExitStack() as stack:
            for variable in self._host_variables:
                stack.enter_context(variable.device_values_follow_host())
            super().jax_state_sync()

    def _sub_batch_loop(self, batch, size, body, carry):
        """`body(part, fraction, carry) -> (carry, y_pred)` over the
        sub-batches of `size` examples; the batch size is static under
        `jax.jit`, so the loop is unrolled. Returns the final carry and the
        parts' predictions, concatenated."""
        total = jax.tree_util.tree_leaves(batch[0])[0].shape[0]
        predictions = []
        for start in range(0, total, size):
            stop = min(start + size, total)
            part = jax.tree_util.tree_map(lambda t: t[start:stop], batch)
            carry, y_pred = body(part, (stop - start) / total, carry)
            predictions.append(y_pred)
        return carry, jax.tree_util.tree_map(
            lambda *parts: ops.concatenate(parts, axis=0), *predictions)


def _index(variables, variable):
    return next(i for i, v in enumerate(variables) if v is variable)


def _where(condition, new, old):
    return [ops.where(condition, n, o) for n, o in zip(new, old)]


def value_and_grad(fn, weights, state):
    """`fn(weights, state) -> (loss, aux, new_state)` and the gradients of
    its loss with respect to `weights` (`keras_rts.functional`)."""
    def loss_of(weights):
        loss, aux, new_state = fn(weights, state)
        return loss, (aux, new_state)

    (loss, (aux, new_state)), grads = jax.value_and_grad(
        loss_of, has_aux=True)(list(weights))
    return loss, aux, new_state, grads
