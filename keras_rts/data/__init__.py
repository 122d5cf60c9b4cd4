"""Input pipelines of the recipes, importable for users' own scripts.

`load(name, split)` gives any recipe dataset by name: `"cifar10"`,
`"cifar100"` (through tensorflow-datasets; `data_dir` is a prepared TFDS
folder) or `"tiny_imagenet"` (`data_dir` is the dataset folder in its
standard layout). `split` is `"train"` or `"test"`.

Part of the recipe layer: needs TensorFlow (`tf.data`, on any Keras
backend) and tensorflow-datasets, `pip install 'keras_rts[recipes]'`.
"""

from keras_rts import _extras

_extras.require("tensorflow", "keras_rts.data")
_extras.require("tensorflow_datasets", "keras_rts.data")

from keras_rts.data import cifar, tiny_imagenet  # noqa: E402
from keras_rts.data.cifar import load_cifar  # noqa: E402
from keras_rts.data.tiny_imagenet import DataError, load_tiny_imagenet  # noqa: E402

DATASETS = ("cifar10", "cifar100", "tiny_imagenet")


def _check(name):
    if name not in DATASETS:
        raise ValueError(
            f"Unknown dataset name={name!r}: expected one of {DATASETS}."
        )


def shape(name, data_dir=None, image_size=None):
    """`(num_classes, input_shape)` of a dataset.

    Args:
        name: one of `DATASETS`.
        data_dir: for `"tiny_imagenet"`, the dataset folder (its class
            count is that of `wnids.txt`).
        image_size: for `"tiny_imagenet"`, the side images are resized to
            (default 64, the originals).
    """
    _check(name)
    if name == "tiny_imagenet":
        if data_dir is None:
            raise ValueError("tiny_imagenet needs data_dir, its folder.")
        side = image_size or tiny_imagenet.IMAGE_SIZE
        return tiny_imagenet.num_classes(data_dir), (side, side, 3)
    return {"cifar10": 10, "cifar100": 100}[name], (32, 32, 3)


def train_size(name, data_dir=None):
    """The number of training images of a dataset."""
    _check(name)
    if name == "tiny_imagenet":
        return len(tiny_imagenet.list_files(data_dir, "train")[0])
    return cifar.TRAIN_SIZE


def check(name, data_dir=None):
    """Checks that a dataset is where `data_dir` says, reading no image.

    Nothing is downloaded, created or written.

    Args:
        name: one of `DATASETS`.
        data_dir: a prepared TFDS folder (CIFAR), or the Tiny ImageNet
            folder. Without it, CIFAR comes from TFDS' default folder
            (which `tfds.load` prepares, downloading if needed).

    Returns:
        `(train_size, test_size)`, or `None` for CIFAR without `data_dir`.

    Raises:
        ValueError: naming the folder and what it should hold.
    """
    _check(name)
    if name == "tiny_imagenet":
        if data_dir is None:
            raise ValueError("tiny_imagenet needs data_dir, its folder.")
        return (len(tiny_imagenet.list_files(data_dir, "train")[0]),
                len(tiny_imagenet.list_files(data_dir, "val")[0]))
    if data_dir is None:
        return None
    return cifar.prepared_sizes(name, data_dir)


def load(name, split, *, data_dir=None, **kwargs):
    """A recipe dataset's `"train"` or `"test"` split.

    Args:
        name: one of `DATASETS`.
        split: `"train"`, `"test"` (Tiny ImageNet's test set is its
            labelled `val/` folder) or `"validation"` (training images held
            out of `"train"`: pass the same `validation_examples` to both).
        data_dir: a prepared TFDS folder (CIFAR), or the Tiny ImageNet
            folder.
        **kwargs: passed to `load_cifar` or `load_tiny_imagenet` (`batch_size`,
            `train_examples`, `seed`, `cutout`, `epochs`, …).

    Returns:
        A batched `tf.data.Dataset` of `(images, labels)`.
    """
    _check(name)
    if split not in ("train", "test", "validation"):
        raise ValueError(
            f"Unknown split={split!r}: expected 'train', 'test' or "
            "'validation'."
        )
    if name == "tiny_imagenet":
        if data_dir is None:
            raise ValueError("tiny_imagenet needs data_dir, its folder.")
        return load_tiny_imagenet(
            data_dir, "val" if split == "test" else split, **kwargs)
    return load_cifar(name, split, data_dir=data_dir, **kwargs)


__all__ = [
    "DATASETS",
    "DataError",
    "load",
    "load_cifar",
    "load_tiny_imagenet",
    "shape",
    "train_size",
]
