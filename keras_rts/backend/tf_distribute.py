"""`tf.distribute` glue for `RTSModel`'s TensorFlow step, apart from the
method. Each upstream workaround is named by the issue it works around."""

import keras
import tensorflow as tf


def sum_over_replicas():
    """`f(tensors) -> tensors` summing over replicas (one collective), or
    `None` outside a strategy with several replicas."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return None
    return lambda tensors: context.all_reduce(
        tf.distribute.ReduceOp.SUM, tensors)


def loss_scale(optimizer):
    """The factor by which `optimizer.scale_loss` multiplies, or `None`."""
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return optimizer.dynamic_scale
    return optimizer.loss_scale_factor


def _already_summed(optimizer):
    """Keras' TensorFlow optimizer sums the gradients it is given over
    replicas (`_all_reduce_sum_gradients`). The step gives it the global
    direction, already summed in the step's one collective: summing again
    would cost a second collective and multiply it by the replicas. So the
    optimizer of an `RTSModel` takes its gradients as they are (set on the
    instance, once; replicas trace concurrently, so it is never undone)."""
    for o in (optimizer, getattr(optimizer, "inner_optimizer", None)):
        if o is not None and hasattr(o, "_all_reduce_sum_gradients"):
            vars(o).setdefault("_all_reduce_sum_gradients", _as_given)


def _as_given(grads_and_vars):
    return grads_and_vars


def apply_if_finite(optimizer, grads, variables, finite):
    """Applies the global direction `grads` unless `finite` is false.

    Every replica holds the same `grads` and `finite`. A
    `LossScaleOptimizer` skips non-finite steps itself (and lowers its
    scale): it is called as is. For other optimizers the conditional is
    taken where Keras allows it: under strategies that need `merge_call`,
    in cross-replica context, because a branch that calls `merge_call` (as
    `optimizer.apply` does) cannot live in a replica-context `tf.cond`
    ("merge_call called while defining a new graph").
    """
    _already_summed(optimizer)
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        optimizer.apply(grads, variables)
        return

    def apply():
        optimizer.apply(grads, variables)

    context = tf.distribute.get_replica_context()
    if (context is None or not tf.distribute.has_strategy()
            or tf.__internal__.distribute.strategy_supports_no_merge_call()):
        tf.cond(finite, apply, lambda: None)
        return

    def apply_replica(grads):
        optimizer.apply(grads, variables)

    def cross_replica(distribution, grads, finite):
        finite = tf.reduce_all(
            distribution.experimental_local_results(finite))
        tf.cond(
            finite,
            lambda: distribution.extended.call_for_each_replica(
                apply_replica, args=(grads,)),
            lambda: None,
        )

    context.merge_call(cross_replica, args=(grads, finite))


def is_multi_worker(strategy):
    """Whether Keras reduces step outputs with a collective along axis 0.

    Keras 3 does so under a `MultiWorkerMirroredStrategy` with several
    workers (the test of its `reduce_per_replica`), which fails on scalar
    logs (keras-team/keras#20585).
    """
    return (
        isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
        and strategy.extended._in_multi_worker_mode()
    )


def logs_for(strategy, logs):
    """keras-team/keras#20585: under several workers, scalar logs as
    shape-[1] tensors, which Keras' reduction along axis 0 turns back into
    the mean over replicas. Other strategies: the logs as they are."""
    if not is_multi_worker(strategy):
        return logs
    return {k: tf.reshape(v, [-1]) if v.shape.rank == 0 else v
            for k, v in ((k, tf.convert_to_tensor(v)) for k, v in logs.items())}


def one_replica_batch(strategy, iterator):
    """keras-team/keras#20585: under several workers, Keras reduces the
    first distributed batch with a collective that refuses it, only to
    read its shapes. Returns one replica's part (same shapes), or `None`
    when Keras' own way works."""
    if iterator is None or not is_multi_worker(strategy):
        return None
    for _, _, it in iterator:
        return tf.nest.map_structure(
            lambda v: strategy.experimental_local_results(v)[0]
            if isinstance(v, tf.distribute.DistributedValues) else v,
            next(it))
