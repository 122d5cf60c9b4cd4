"""CIFAR-10 and CIFAR-100 through tensorflow-datasets."""

import json
import os

import tensorflow_datasets as tfds

from keras_rts.data.pipeline import check_label_noise, image_pipeline

STATISTICS = {
    # Per-channel mean and standard deviation of the training images.
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
NUM_CLASSES = {"cifar10": 10, "cifar100": 100}
TRAIN_SIZE = 50_000
SPLITS = ("train", "validation", "test")


def prepared_sizes(name, data_dir):
    """`(train, test)` sizes of the CIFAR dataset prepared in `data_dir`.

    Reads the dataset's `dataset_info.json` (of the version TFDS loads),
    without building a TFDS builder: nothing is downloaded, created or
    logged.

    Raises:
        ValueError: naming the folder and what it should hold.
    """
    version = str(tfds.builder_cls(name).VERSION)
    info = os.path.join(data_dir, name, version, "dataset_info.json")
    what = (f"it should be a prepared TFDS folder holding {name}/{version}/ "
            f"(made by tfds.builder('{name}').download_and_prepare() on a "
            "machine with network); nothing was downloaded")
    if not os.path.isdir(data_dir):
        state = "is a file" if os.path.exists(data_dir) else "does not exist"
        raise ValueError(f"{data_dir} {state}: {what}.")
    try:
        with open(info) as f:
            splits = {split["name"]: sum(int(n) for n in split["shardLengths"])
                      for split in json.load(f)["splits"]}
        return splits["train"], splits["test"]
    except (OSError, ValueError, KeyError, TypeError):
        raise ValueError(f"{data_dir} holds no readable {info}: {what}."
                         ) from None


def load_cifar(name="cifar10", split="train", *, data_dir=None, batch_size=128,
          train_examples=None, validation_examples=0, test_examples=None,
          augment=None,
          cutout=0, seed=0, cache=True, epochs=None, initial_epoch=0,
          label_noise=0.0):
    """Loads a CIFAR split as a batched, normalised `tf.data.Dataset`.

    The data comes from `tfds.load`, which reads a prepared TFDS folder:
    `data_dir` (which must hold it: nothing is downloaded there), else the
    `TFDS_DATA_DIR` environment variable, else TFDS' default (where it
    downloads if the data is not there).

    Args:
        name: `"cifar10"` or `"cifar100"`.
        split: `"train"`, `"test"`, or `"validation"` (the last
            `validation_examples` training images, held out of `"train"`).
        data_dir: folder holding prepared TFDS datasets.
        batch_size: examples per batch.
        train_examples: if set, use only the first this many training
            images (a subset for quick runs).
        validation_examples: training images held out as a validation split.
        test_examples: if set, use only the first this many test images
            (quick runs; published numbers use all 10,000).
        augment: 4-pixel pad-and-crop and horizontal flip; defaults to true
            for `"train"` and false otherwise.
        cutout: side of a cutout square (0: none).
        seed: seed of shuffling and augmentation.
        cache: cache the images in memory.
        epochs: for training, make the epochs `initial_epoch … epochs − 1`
            explicit (see `keras_rts.data.pipeline.image_pipeline`).
        initial_epoch: the first epoch of a resumed run.
        label_noise: for `"train"`, replace this fraction of the labels by
            another class (symmetric noise, fixed by `seed`).

    Returns:
        A `tf.data.Dataset` of `(images, labels)` batches: float32 images of
        shape `(batch, 32, 32, 3)`, int32 labels.

    Raises:
        ValueError: for an unknown dataset or split, or sizes out of range.
    """
    if name not in STATISTICS:
        raise ValueError(
            f"Unknown dataset name={name!r}: expected one of "
            f"{sorted(STATISTICS)}."
        )
    if split not in SPLITS:
        raise ValueError(
            f"Unknown split={split!r} for {name}: expected one of {SPLITS}."
        )
    if not 0 <= validation_examples < TRAIN_SIZE:
        raise ValueError(
            f"validation_examples must be in [0, {TRAIN_SIZE}), got "
            f"{validation_examples!r}."
        )
    if split == "validation" and not validation_examples:
        raise ValueError(
            "split='validation' needs validation_examples > 0: the "
            "validation split is carved from the training images."
        )
    check_label_noise(label_noise, split)
    kept = TRAIN_SIZE - validation_examples
    size = {"train": train_examples or kept, "validation": validation_examples,
            "test": test_examples or 10_000}[split]
    if train_examples is not None and not 0 < train_examples <= kept:
        raise ValueError(
            f"train_examples must be in (0, {kept}], got {train_examples!r}."
        )
    if test_examples is not None and not 0 < test_examples <= 10_000:
        raise ValueError(
            f"test_examples must be in (0, 10000], got {test_examples!r}."
        )
    tfds_split = {
        "train": f"train[:{train_examples or kept}]",
        "validation": f"train[{kept}:]",
        "test": f"test[:{test_examples or 10_000}]",
    }[split]
    if data_dir is not None:
        prepared_sizes(name, data_dir)
    dataset = tfds.load(
        name,
        split=tfds_split,
        as_supervised=True,
        data_dir=data_dir or os.environ.get("TFDS_DATA_DIR"),
        shuffle_files=False,
        download=data_dir is None,
    )
    known = int(dataset.cardinality())
    if known >= 0:  # TFDS' own count (also under tfds.testing.mock_data)
        size = known
    mean, std = STATISTICS[name]
    return image_pipeline(
        dataset,
        mean=mean,
        std=std,
        batch_size=batch_size,
        training=split == "train" if augment is None else augment,
        seed=seed,
        cutout=cutout,
        cache=cache,
        epochs=epochs,
        initial_epoch=initial_epoch,
        size=size,
        label_noise=label_noise,
        num_classes=NUM_CLASSES[name],
    )

