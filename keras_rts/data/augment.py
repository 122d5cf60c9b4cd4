"""Seeded image augmentation for `tf.data` pipelines.

Every random choice is a stateless op keyed by a per-example seed, so a
pipeline built with the same seed yields the same images, epoch by epoch.
"""

import tensorflow as tf


def normalize(image, mean, std):
    """Scales a uint8 image to [0, 1] and standardises each channel."""
    image = tf.cast(image, tf.float32) / 255.0
    return (image - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


def pad_crop_flip(image, seed, padding=4):
    """Random crop after zero padding, then a random horizontal flip.

    Args:
        image: a `(height, width, channels)` float image.
        seed: a shape `(2,)` integer tensor, the example's seed.
        padding: pixels of zero padding on each side before cropping.

    Returns:
        The augmented image, of the input's shape.
    """
    seeds = tf.random.experimental.stateless_split(seed, num=2)
    shape = tf.shape(image)
    padded = tf.pad(image, [[padding, padding], [padding, padding], [0, 0]])
    image = tf.image.stateless_random_crop(padded, shape, seed=seeds[0])
    return tf.image.stateless_random_flip_left_right(image, seed=seeds[1])


def cutout(image, seed, size):
    """Zeroes a `size`×`size` square centred on a random pixel.

    As DeVries & Taylor (2017): the centre is uniform over the image, and
    the square (rows and columns `centre − size//2 … centre − size//2 +
    size − 1`) is clipped at the borders, so near an edge less is hidden.
    """
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    u = tf.random.stateless_uniform((2,), seed)
    centre = tf.cast(u * tf.cast(tf.stack([height, width]), tf.float32),
                     tf.int32)
    start = centre - size // 2
    rows = tf.range(height)[:, None]
    cols = tf.range(width)[None, :]
    inside = ((rows >= start[0]) & (rows < start[0] + size)
              & (cols >= start[1]) & (cols < start[1] + size))
    return image * tf.cast(~inside, image.dtype)[:, :, None]
