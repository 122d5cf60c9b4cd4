"""BatchNormalization statistics recomputed at the weights themselves.

A method whose one pass is at perturbed weights (`msam`: at
`w − ρ·v/(‖v‖ + δ)`) gathers its moving statistics there, not at `w`, the
network that is evaluated and saved. `recompute_batchnorm` re-estimates
them at `w` with forward passes in training mode (no gradient, no weight
changed), as Momentum-SAM's authors do with one forward-only epoch after
training; `RecomputeBatchNorm` does it when `fit` ends (docs/method.md,
"Momentum-SAM").
"""

import keras
import numpy as np


def _batchnorm_layers(model):
    network = getattr(model, "model", model)  # an RTSModel's network
    return [layer for layer in network._flatten_layers()
            if isinstance(layer, keras.layers.BatchNormalization)]


def _inputs(batch):
    if isinstance(batch, (tuple, list)):
        batch = batch[0]
    return keras.tree.map_structure(np.asarray, batch)


def recompute_batchnorm(model, data, steps=None, batch_size=128):
    """Replaces the moving statistics of every BatchNormalization layer of
    `model` by their mean over batches of `data` at the current weights.

    Each batch is one forward pass in training mode; layer `i`'s moving
    mean and variance become the plain average of the batches' means and
    variances (each layer's momentum set to `(n−1)/n` for the `n`-th batch,
    then restored), so the result does not depend on the statistics
    gathered before.

    Args:
        model: a `keras.Model` or `keras_rts.RTSModel`.
        data: an iterable of batches (a `tf.data.Dataset`, a generator, a
            list), each the inputs or `(inputs, labels[, weights])`; or an
            array of inputs, split into batches of `batch_size`.
        steps: how many batches to use (`None`: all of `data`, which must
            then end).
        batch_size: the batch size when `data` is an array.

    Returns:
        The number of batches used.

    Raises:
        ValueError: `steps` is not a positive integer, or `data` gave no
            batch.
    """
    if steps is not None and (isinstance(steps, bool) or not isinstance(
            steps, (int, np.integer)) or steps < 1):
        raise ValueError(
            f"steps must be a positive integer or None, got {steps!r}.")
    layers = _batchnorm_layers(model)
    if not layers:
        return 0
    if isinstance(data, np.ndarray):
        data = [data[i:i + batch_size]
                for i in range(0, len(data), batch_size)]
    network = getattr(model, "model", model)
    momenta = [layer.momentum for layer in layers]
    count = 0
    try:
        for batch in data:
            if steps is not None and count >= steps:
                break
            count += 1
            for layer in layers:
                layer.momentum = (count - 1) / count
            network(_inputs(batch), training=True)
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
    if not count:
        raise ValueError("recompute_batchnorm: data gave no batch.")
    return count


class RecomputeBatchNorm(keras.callbacks.Callback):
    """When `fit` ends, `recompute_batchnorm(model, data, steps)`: the
    moving statistics re-estimated at the trained weights. For `msam`,
    whose one pass gathers them at perturbed weights.

    Args:
        data: as for `recompute_batchnorm` (the training data, without
            augmentation a model is not evaluated with).
        steps: batches to use (`None`: all of `data`).
        batch_size: as for `recompute_batchnorm`.

    Example:

    ```python
    model.fit(x, y, epochs=10, callbacks=[
        keras_rts.callbacks.RecomputeBatchNorm(x, batch_size=128)])
    ```
    """

    def __init__(self, data, steps=None, batch_size=128):
        super().__init__()
        if steps is not None and (isinstance(steps, bool) or not isinstance(
                steps, (int, np.integer)) or steps < 1):
            raise ValueError(
                f"steps must be a positive integer or None, got {steps!r}.")
        self.data, self.steps, self.batch_size = data, steps, batch_size

    def on_train_end(self, logs=None):
        sync = getattr(self.model, "jax_state_sync", None)
        if sync is not None:
            sync()  # (JAX: the state of the last step into the variables)
        recompute_batchnorm(self.model, self.data, self.steps,
                            self.batch_size)
