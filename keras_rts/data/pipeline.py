"""The `tf.data` steps every image dataset shares."""

import tensorflow as tf

from keras_rts.data import augment as augment_lib


def image_pipeline(dataset, *, mean, std, batch_size, training, seed=0,
                   cutout=0, cache=True):
    """Normalises, caches, shuffles, augments, batches and prefetches.

    Args:
        dataset: a `tf.data.Dataset` of `(uint8 image, label)` pairs.
        mean: per-channel mean of the training images, in [0, 1].
        std: per-channel standard deviation, in [0, 1].
        batch_size: examples per batch.
        training: if true, shuffle each epoch, augment (4-pixel pad and
            crop, horizontal flip, optional cutout) and drop the last
            partial batch.
        seed: seed of the shuffle and of the augmentation.
        cutout: side of the cutout square; 0 disables cutout.
        cache: cache the normalised images in memory.

    Returns:
        A batched `tf.data.Dataset` of `(float32 image, int32 label)`.
    """
    autotune = tf.data.AUTOTUNE
    dataset = dataset.map(
        lambda image, label: (
            augment_lib.normalize(image, mean, std),
            tf.cast(label, tf.int32),
        ),
        num_parallel_calls=autotune,
    )
    if cache:
        dataset = dataset.cache()
    if training:
        dataset = dataset.shuffle(
            10_000, seed=seed, reshuffle_each_iteration=True
        )
        seeds = tf.data.Dataset.random(
            seed=seed, rerandomize_each_iteration=True
        ).batch(2)
        dataset = tf.data.Dataset.zip((dataset, seeds))

        def augment(example, example_seed):
            image, label = example
            crop_seed, cutout_seed = tf.unstack(
                tf.random.experimental.stateless_split(example_seed, num=2)
            )
            image = augment_lib.pad_crop_flip(image, crop_seed)
            if cutout:
                image = augment_lib.cutout(image, cutout_seed, cutout)
            return image, label

        dataset = dataset.map(augment, num_parallel_calls=autotune)
    dataset = dataset.batch(batch_size, drop_remainder=training)
    return dataset.prefetch(autotune)
