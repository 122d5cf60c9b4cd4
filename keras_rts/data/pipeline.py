"""The `tf.data` steps every image dataset shares."""

import numbers

import tensorflow as tf

from keras_rts.data import augment as augment_lib

_EPOCH_STRIDE = 1 << 32  # keeps (epoch, example) seeds distinct
_NOISE_STREAMS = (-1, -2)  # label-noise keys, apart from the epochs' (≥ 0)


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or (
            minimum is not None and value < minimum):
        bound = "an integer" if minimum is None else f"an integer ≥ {minimum}"
        raise ValueError(f"{name} must be {bound}, got {value!r}.")


def check_label_noise(label_noise, split):
    """Raises a `ValueError` unless `label_noise` fits the `split`."""
    if not (isinstance(label_noise, (int, float)) and 0 <= label_noise < 1):
        raise ValueError(
            f"label_noise must be in [0, 1), got {label_noise!r}.")
    if label_noise and split != "train":
        raise ValueError(
            f"label_noise applies to the training split only, not "
            f"split={split!r}: evaluation labels stay clean.")


def symmetric_label_noise(labels, fraction, num_classes, seed):
    """Replaces a fraction of the labels by another class, drawn uniformly.

    Exactly `floor(fraction · n + 1/2)` of the `n` labels change: which
    ones, and to which of the other `num_classes − 1` classes (each equally
    likely), is fixed by `seed` alone.

    Args:
        labels: int32 tensor of shape `(n,)`.
        fraction: the fraction of labels replaced, in [0, 1).
        num_classes: the number of classes (≥ 2).
        seed: an integer.

    Returns:
        The noisy labels, int32 of shape `(n,)`.
    """
    n = labels.shape[0]
    count = int(fraction * n + 0.5)
    if count == 0:
        return labels
    pick, shift = (tf.constant([seed, stream], tf.int64)
                   for stream in _NOISE_STREAMS)
    chosen = tf.argsort(tf.random.stateless_uniform([n], seed=pick))[:count]
    offsets = tf.random.stateless_uniform(
        [count], seed=shift, minval=1, maxval=num_classes, dtype=tf.int32)
    replaced = (tf.gather(labels, chosen) + offsets) % num_classes
    return tf.tensor_scatter_nd_update(labels, chosen[:, None], replaced)


def image_pipeline(dataset, *, mean, std, batch_size, training, seed=0,
                   cutout=0, cache=True, epochs=None, initial_epoch=0,
                   size=None, label_noise=0.0, num_classes=None):
    """Caches, shuffles, normalises, augments, batches and prefetches.

    Training data is random in two ways, both keyed by `(seed, epoch)`: the
    order of the examples and their augmentation. With `epochs` given, the
    dataset holds the epochs `initial_epoch … epochs − 1` one after the
    other (pass `steps_per_epoch` to `fit`), so a run resumed at epoch `k`
    sees exactly the batches the uninterrupted run saw from epoch `k` on.
    Without it, the dataset is one epoch, new each time it is iterated.

    Args:
        dataset: a `tf.data.Dataset` of `(uint8 image, label)` pairs.
        mean: per-channel mean of the training images, in [0, 1].
        std: per-channel standard deviation, in [0, 1].
        batch_size: examples per batch.
        training: if true, shuffle, augment (4-pixel pad and crop,
            horizontal flip, optional cutout) and drop the last partial
            batch.
        seed: seed of the shuffle and of the augmentation.
        cutout: side of the cutout square; 0 disables cutout.
        cache: keep the (uint8) images in memory after the first read.
        epochs: for training, the number of epochs of the run.
        initial_epoch: the first epoch the dataset holds.
        size: number of examples (needed for training).
        label_noise: for training, replace this fraction of the labels
            (`symmetric_label_noise`, keyed by `seed`).
        num_classes: the number of classes (needed for `label_noise`).

    Returns:
        A batched `tf.data.Dataset` of `(float32 image, int32 label)`.
    """
    _check_int("batch_size", batch_size, 1)
    _check_int("seed", seed, None)
    known = [d for d in dataset.element_spec[0].shape[:2] if d is not None]
    side = min(known) if known else None
    _check_int("cutout", cutout, 0)
    if cutout and side is not None and cutout >= side:
        raise ValueError(
            f"cutout must be below the image side {side}: a {cutout}×{cutout} "
            "square hides most or all of the image.")
    if epochs is not None:
        _check_int("epochs", epochs, 1)
        _check_int("initial_epoch", initial_epoch, 0)
        if initial_epoch >= epochs:
            raise ValueError(
                f"initial_epoch={initial_epoch} must be below "
                f"epochs={epochs}.")
    autotune = tf.data.AUTOTUNE
    dataset = dataset.map(
        lambda image, label: (image, tf.cast(label, tf.int32)),
        num_parallel_calls=autotune,
    )

    def normalize(image, label):
        return augment_lib.normalize(image, mean, std), label

    if not training:
        if cache:
            dataset = dataset.cache()
        dataset = dataset.map(normalize, num_parallel_calls=autotune)
        dataset = dataset.batch(batch_size)
        if size:  # a known length: Keras' progress bar shows N/N
            dataset = dataset.apply(tf.data.experimental.assert_cardinality(
                -(-size // batch_size)))
        return dataset.prefetch(autotune)

    # The whole split as one element: each epoch is a stateless permutation
    # of it, keyed by (seed, epoch) alone (no global-seed state involved).
    if not size:
        raise ValueError("Training pipelines need size, the example count.")
    everything = dataset.batch(size)
    if label_noise:
        everything = everything.map(lambda images, labels: (
            images, symmetric_label_noise(tf.ensure_shape(labels, [size]),
                                          label_noise, num_classes, seed)))
    if cache:
        everything = everything.cache()

    def one_epoch(epoch):
        epoch = tf.cast(epoch, tf.int64)
        key = tf.stack([tf.constant(seed, tf.int64), epoch])

        def permute(images, labels):
            order = tf.argsort(tf.random.stateless_uniform(
                tf.shape(labels), seed=key))
            return tf.gather(images, order), tf.gather(labels, order)

        def augment(index, example):
            image, label = normalize(*example)
            crop_seed, cutout_seed = tf.unstack(
                tf.random.experimental.stateless_split(
                    tf.stack([tf.constant(seed, tf.int64),
                              epoch * _EPOCH_STRIDE + index]),
                    num=2,
                )
            )
            image = augment_lib.pad_crop_flip(image, crop_seed)
            if cutout:
                image = augment_lib.cutout(image, cutout_seed, cutout)
            return image, label

        return (
            everything.map(permute).unbatch().enumerate()
            .map(augment, num_parallel_calls=autotune)
            .batch(batch_size, drop_remainder=True)
        )

    if epochs is None:
        # A new epoch key each time the dataset is iterated.
        keys = tf.data.Dataset.random(
            seed=seed, rerandomize_each_iteration=True
        ).take(1)
    else:
        keys = tf.data.Dataset.range(initial_epoch, epochs)
    batches = (size // batch_size) * (1 if epochs is None
                                      else epochs - initial_epoch)
    # flat_map hides the length from Keras: it is known, so say it.
    return keys.flat_map(one_epoch).apply(
        tf.data.experimental.assert_cardinality(batches)).prefetch(autotune)
