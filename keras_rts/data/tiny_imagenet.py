"""Tiny ImageNet from its standard directory layout.

```
root/
  wnids.txt                      class ids, one a line (their order = labels)
  train/<wnid>/images/*.JPEG     training images, 64×64
  val/images/*.JPEG              validation images
  val/val_annotations.txt        file <TAB> wnid <TAB> box
```

The full dataset (200 classes) and any subset in the same layout load the
same way. The labels of the original `test/` folder are not public, so the
validation folder is the test set of published results.
"""

import os

import numpy as np
import tensorflow as tf

from keras_rts.data.pipeline import check_label_noise, image_pipeline

MEAN = (0.4802, 0.4481, 0.3975)
STD = (0.2302, 0.2265, 0.2262)
IMAGE_SIZE = 64
SPLITS = ("train", "val")
"""The folder's splits; `load_tiny_imagenet` also offers `"validation"`."""


def _require(path, what):
    if not os.path.exists(path):
        raise ValueError(f"Tiny ImageNet: {what} is missing: {path}")


def read_wnids(root):
    """The class ids of `root/wnids.txt`, in file order."""
    path = os.path.join(root, "wnids.txt")
    _require(root, "the dataset folder")
    _require(path, "the class list wnids.txt")
    with open(path) as f:
        wnids = [line.strip() for line in f if line.strip()]
    if not wnids:
        raise ValueError(f"Tiny ImageNet: {path} lists no classes.")
    return wnids


def list_files(root, split):
    """Image paths and labels of a split, checked against the layout.

    Args:
        root: the dataset folder.
        split: `"train"` or `"val"`.

    Returns:
        `(paths, labels)`: a list of file paths and an int32 array.

    Raises:
        ValueError: naming the path and what is missing or wrong.
    """
    if split not in SPLITS:
        raise ValueError(
            f"Unknown split={split!r} for Tiny ImageNet: expected one of "
            f"{SPLITS}."
        )
    wnids = read_wnids(root)
    label_of = {wnid: i for i, wnid in enumerate(wnids)}
    paths, labels = [], []
    if split == "train":
        for wnid in wnids:
            folder = os.path.join(root, "train", wnid, "images")
            _require(folder, f"the training folder of class {wnid}")
            files = sorted(f for f in os.listdir(folder)
                           if f.lower().endswith((".jpeg", ".jpg")))
            if not files:
                raise ValueError(
                    f"Tiny ImageNet: the training folder of class {wnid} "
                    f"holds no JPEG images: {folder}"
                )
            paths += [os.path.join(folder, f) for f in files]
            labels += [label_of[wnid]] * len(files)
    else:
        annotations = os.path.join(root, "val", "val_annotations.txt")
        _require(annotations, "the validation labels val_annotations.txt")
        images = os.path.join(root, "val", "images")
        with open(annotations) as f:
            for number, line in enumerate(f, 1):
                fields = line.rstrip("\n").split("\t")
                if len(fields) < 2:
                    raise ValueError(
                        f"Tiny ImageNet: line {number} of {annotations} is "
                        f"not 'file<TAB>wnid<TAB>…': {line!r}"
                    )
                name, wnid = fields[0], fields[1]
                if wnid not in label_of:
                    raise ValueError(
                        f"Tiny ImageNet: line {number} of {annotations} "
                        f"names class {wnid}, which is not in wnids.txt."
                    )
                path = os.path.join(images, name)
                _require(path, f"the image of line {number} of {annotations}")
                paths.append(path)
                labels.append(label_of[wnid])
        if not paths:
            raise ValueError(f"Tiny ImageNet: {annotations} is empty.")
    return paths, np.asarray(labels, np.int32)


class DataError(ValueError):
    """A dataset file that cannot be used, named with what to do: raised
    while the data is read, before training (a recipe reports it in one
    line)."""


def check_jpeg(path):
    """Raises a `DataError` naming `path` unless it starts and ends as a
    whole JPEG.

    A JPEG starts with the SOI marker (FF D8) and ends with EOI (FF D9);
    a truncated file has no EOI in its last bytes (FF is never followed by
    D9 inside the compressed data). Reads four bytes and at most the last
    512. Whether its body decodes is `decode_images`' to find.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(2)
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 512))
            tail = f.read()
    except OSError as e:
        raise DataError(f"Tiny ImageNet: cannot read {path}: "
                        f"{e.strerror}.") from None
    if head != b"\xff\xd8" or b"\xff\xd9" not in tail:
        raise DataError(
            f"Tiny ImageNet: {path} is not a whole JPEG (truncated, or "
            "another format): replace or remove it.")


def _decode(path, image_size=IMAGE_SIZE):
    image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
    image = tf.image.resize_with_crop_or_pad(image, IMAGE_SIZE, IMAGE_SIZE)
    if image_size != IMAGE_SIZE:
        # Area averaging (no aliasing), back to uint8 like the originals.
        image = tf.image.resize(image, [image_size, image_size], "area")
        image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
    return image


def decode_images(paths, image_size=IMAGE_SIZE):
    """Every image of `paths` decoded once, in parallel, as a uint8 array
    `(len(paths), image_size, image_size, 3)`: what training reads, so a
    file whose markers are intact but whose data is damaged is named here,
    before the first step, not mid-epoch.

    Raises:
        DataError: naming the first file that is not a whole JPEG or does
            not decode.
    """
    for path in paths:
        check_jpeg(path)
    images = tf.data.Dataset.from_tensor_slices(list(paths)).map(
        lambda path: _decode(path, image_size),
        num_parallel_calls=tf.data.AUTOTUNE).batch(1024)
    try:
        return np.concatenate(list(images.as_numpy_iterator()))
    except tf.errors.InvalidArgumentError:
        for path in paths:  # which one: decoded alone
            try:
                _decode(tf.constant(path), image_size)
            except tf.errors.InvalidArgumentError as e:
                raise DataError(
                    f"Tiny ImageNet: {path} does not decode as a JPEG (its "
                    f"data is damaged: {e.message.splitlines()[0]}): "
                    "replace or remove it.") from None
        raise


def check_image_size(image_size):
    """Raises a `ValueError` unless `image_size` is an int in [8, 64]."""
    if (isinstance(image_size, bool) or not isinstance(image_size, int)
            or not 8 <= image_size <= IMAGE_SIZE):
        raise ValueError(
            f"image_size must be an integer from 8 to {IMAGE_SIZE} (the "
            f"images are resized down from {IMAGE_SIZE}×{IMAGE_SIZE}), got "
            f"{image_size!r}."
        )


def load_tiny_imagenet(root, split="train", *, batch_size=128,
                       train_examples=None, validation_examples=0,
                       test_examples=None, image_size=IMAGE_SIZE,
                       augment=None, cutout=0, seed=0, cache=True,
                       epochs=None, initial_epoch=0, label_noise=0.0):
    """Loads a Tiny ImageNet split as a batched, normalised `tf.data.Dataset`.

    Args:
        root: the dataset folder (the standard layout above).
        split: `"train"`, `"val"` (the labelled validation folder, the
            test set of published results) or `"validation"` (training
            images held out of `"train"`).
        batch_size: examples per batch.
        train_examples: if set, a fixed random subset of this many training
            images (the same subset for every seed).
        validation_examples: training images held out (a fixed random
            subset, disjoint from the training images).
        test_examples: if set, only the first this many validation images.
        image_size: side of the images: 64, the originals, or smaller
            (area-averaged down, e.g. 32 for a CIFAR-sized network cost).
        augment: 4-pixel pad-and-crop and horizontal flip; defaults to true
            for `"train"`.
        cutout: side of a cutout square (0: none).
        seed: seed of shuffling and augmentation.
        cache: cache the decoded, normalised images in memory.
        epochs: for training, make the epochs `initial_epoch … epochs − 1`
            explicit (see `keras_rts.data.pipeline.image_pipeline`).
        initial_epoch: the first epoch of a resumed run.
        label_noise: for `"train"`, replace this fraction of the labels by
            another class (symmetric noise, fixed by `seed`).

    Returns:
        A `tf.data.Dataset` of `(images, labels)`: float32 images of shape
        `(batch, image_size, image_size, 3)` (grayscale JPEGs get 3
        channels), int32 labels.

    Every image is decoded once, here (`decode_images`): a damaged one is
    named before training.

    Raises:
        ValueError: for a wrong or incomplete folder, naming what is
            missing (a `DataError` for a damaged image).
    """
    check_image_size(image_size)
    check_label_noise(label_noise, split)
    if split == "validation" and not validation_examples:
        raise ValueError(
            "split='validation' needs validation_examples > 0: the "
            "validation split is carved from the training images."
        )
    paths, labels = list_files(root, "train" if split == "validation"
                               else split)
    if split in ("train", "validation"):
        # One fixed order of the training files: the held-out images first,
        # then the training pool (so subsets never overlap them).
        order = np.random.default_rng(0).permutation(len(paths))
        if not 0 <= validation_examples < len(paths):
            raise ValueError(
                f"validation_examples must be in [0, {len(paths)}), got "
                f"{validation_examples!r}."
            )
        held_out, pool = (order[:validation_examples],
                          order[validation_examples:])
        if split == "validation":
            keep = held_out
        else:
            if train_examples is not None and not (
                    0 < train_examples <= len(pool)):
                raise ValueError(
                    f"train_examples must be in (0, {len(pool)}], got "
                    f"{train_examples!r}."
                )
            keep = pool[:train_examples]
        keep = np.sort(keep)
        paths = [paths[i] for i in keep]
        labels = labels[keep]
    if split == "val" and test_examples is not None:
        if not 0 < test_examples <= len(paths):
            raise ValueError(
                f"test_examples must be in (0, {len(paths)}], got "
                f"{test_examples!r}."
            )
        paths, labels = paths[:test_examples], labels[:test_examples]
    images = decode_images(paths, image_size)  # a damaged file named now
    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    return image_pipeline(
        dataset, mean=MEAN, std=STD, batch_size=batch_size,
        training=split == "train" if augment is None else augment,
        seed=seed, cutout=cutout, cache=cache, epochs=epochs,
        initial_epoch=initial_epoch, size=len(paths),
        label_noise=label_noise, num_classes=num_classes(root),
    )


def num_classes(root):
    """The number of classes listed in `root/wnids.txt`."""
    return len(read_wnids(root))
