"""`RTSModel`'s step on TensorFlow: `tf.GradientTape` passes, one train
function per phase, state committed by assignment."""

import keras
import tensorflow as tf
from keras.src.losses.loss import unscale_loss_for_distribution

from keras_rts import step as step_lib
from keras_rts.backend import tf_distribute


class Trainer:
    """The TensorFlow half of `RTSModel` (see `keras_rts.model`)."""

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        batch = (x, y, sample_weight)
        self._build_before_step(batch)
        trainable = self.trainable_variables
        state = self.non_trainable_variables
        state_values = [tf.convert_to_tensor(v) for v in state]
        step = self._step(
            self._pass, batch, [tf.convert_to_tensor(v) for v in trainable],
            state_values, self._perturbing,
            loss_scale=tf_distribute.loss_scale(self.optimizer),
            sum_over_replicas=tf_distribute.sum_over_replicas())
        applied = [(d, v) for d, v in zip(step.direction, trainable)
                   if d is not None]
        learning_rate = tf.identity(self.optimizer.learning_rate)
        tf_distribute.apply_if_finite(
            self.optimizer, [d for d, _ in applied], [v for _, v in applied],
            step.finite)
        if step.apart is not None:  # after the optimizer, at its rate
            for variable, new in zip(trainable, step_lib.apart_applied(
                    [v.value for v in trainable], step.apart, learning_rate,
                    step.finite)):
                if new is not variable.value:
                    variable.assign(new)
        for variable, old, new in zip(state, state_values, step.state):
            if new is not old:
                variable.assign(new)
        self._loss_tracker.update_state(
            unscale_loss_for_distribution(step.loss),
            sample_weight=tf.shape(tf.nest.flatten(x)[0])[0])
        self._track_output_losses(y, step.y_pred, sample_weight)
        metrics = self.compute_metrics(x, y, step.y_pred, sample_weight)
        logs = self._logs(metrics, step, self._method_on(self._perturbing),
                          step.state)
        return tf_distribute.logs_for(self.distribute_strategy, logs)

    def _pass(self, batch, weights, state):
        """A training-mode forward/backward pass at `weights` and `state`.

        Returns `(loss, y_pred, grads, new_state)`: the gradients of the
        scaled loss (`None` where a variable has none) and the state the
        pass assigned. No variable is written (`keras.StatelessScope`).
        """
        x, y, sample_weight = batch
        mapping = (list(zip(self.trainable_variables, weights))
                   + list(zip(self.non_trainable_variables, state)))
        with tf.GradientTape() as tape:
            tape.watch(weights)
            with keras.StatelessScope(state_mapping=mapping,
                                      collect_losses=True) as scope:
                y_pred = self(x, training=True)
                loss = self.compute_loss(
                    x=x, y=y, y_pred=y_pred, sample_weight=sample_weight,
                    training=True)
            scaled_loss = self.optimizer.scale_loss(loss)
        grads = tape.gradient(scaled_loss, weights)
        new_state = []
        for variable, old in zip(self.non_trainable_variables, state):
            new = scope.get_current_value(variable)
            new_state.append(old if new is None else tf.cast(new, old.dtype))
        return loss, y_pred, grads, new_state

    def make_train_function(self, force=False):
        """One train function per phase (perturbing or not), each traced
        on first use and kept, chosen on the host before each step:
        assigning `perturb` between steps never retraces, and a phase that
        does not perturb is a plain step with no perturbation arithmetic
        and no extra collective."""
        if self.train_function is not None and not force:
            return self.train_function
        functions = {}

        def phase_function(perturbing):
            if perturbing not in functions:
                def step(data):
                    self._perturbing = perturbing
                    return self.train_step(data)

                functions[perturbing] = self._make_function(step)
            return functions[perturbing]

        def train_function(iterator):
            return phase_function(self._next_phase())(iterator)

        self.train_function = train_function
        return train_function

    def _sub_batch_loop(self, batch, size, body, carry):
        """`body(part, fraction, carry) -> (carry, y_pred)` over the
        sub-batches of `size` examples, in a `tf.while_loop` (the batch
        size is known only when the step runs). Returns the final carry and
        the parts' predictions, concatenated."""
        total = tf.shape(tf.nest.flatten(batch[0])[0])[0]
        count = (total + size - 1) // size
        structure = []
        dtypes = [self.compute_dtype]
        if getattr(self.model, "outputs", None):
            dtypes = [o.dtype for o in tf.nest.flatten(self.model.outputs)]

        def loop_body(i, carry, arrays):
            start = i * size
            stop = tf.minimum(start + size, total)
            part = tf.nest.map_structure(
                lambda t: None if t is None else t[start:stop], batch)
            fraction = tf.cast(stop - start, "float32") / tf.cast(
                total, "float32")
            carry, y_pred = body(part, fraction, carry)
            structure[:] = [y_pred]
            return i + 1, carry, [a.write(i, p) for a, p in
                                  zip(arrays, tf.nest.flatten(y_pred))]

        arrays = [tf.TensorArray(d, size=count, infer_shape=False)
                  for d in dtypes]
        _, carry, arrays = tf.while_loop(
            lambda i, *_: i < count, loop_body,
            (tf.constant(0), carry, arrays), parallel_iterations=1)
        flat = []
        for array, spec in zip(arrays, tf.nest.flatten(structure[0])):
            flat.append(array.concat())
            flat[-1].set_shape([None] + spec.shape[1:])
        return carry, tf.nest.pack_sequence_as(structure[0], flat)

    def test_step(self, data):
        return tf_distribute.logs_for(self.distribute_strategy,
                                      super().test_step(data))

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        part = tf_distribute.one_replica_batch(
            getattr(self, "_distribute_strategy", None), iterator)
        if part is not None:
            iterator, data_batch = None, part
        return super()._maybe_symbolic_build(
            iterator=iterator, data_batch=data_batch)


def value_and_grad(fn, weights, state):
    """`fn(weights, state) -> (loss, aux, new_state)` and the gradients of
    its loss with respect to `weights` (`keras_rts.functional`)."""
    weights = [tf.convert_to_tensor(w) for w in weights]
    with tf.GradientTape() as tape:
        tape.watch(weights)
        loss, aux, new_state = fn(weights, state)
    return loss, aux, new_state, tape.gradient(loss, weights)
