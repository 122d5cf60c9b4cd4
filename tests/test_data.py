"""Input pipelines: TFDS' real load path (mocked and real), Tiny ImageNet."""

import dataclasses
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from keras_rts import data
from keras_rts.data import augment, tiny_imagenet

CIFAR10_MEAN = np.array([0.4914, 0.4822, 0.4465])
CIFAR10_STD = np.array([0.2470, 0.2435, 0.2616])


def _arrays(dataset):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in dataset])
    return np.concatenate(xs), np.concatenate(ys)


@pytest.mark.parametrize("name, classes", [("cifar10", 10), ("cifar100", 100)])
def test_cifar_through_tfds_load_with_mock_data(name, classes):
    with tfds.testing.mock_data(num_examples=64):
        for split, augmented in (("train", True), ("test", False)):
            x, y = _arrays(data.load(name, split, batch_size=16,
                                     train_examples=64))
            assert x.shape == (64, 32, 32, 3) and x.dtype == np.float32
            assert y.dtype == np.int32
            assert y.min() >= 0 and y.max() < classes
            assert np.all(np.isfinite(x))


@pytest.mark.slow
def test_real_cifar10_shapes_labels_and_normalisation(tfds_dir):
    x, y = _arrays(data.load_cifar("cifar10", "train", data_dir=tfds_dir,
                              batch_size=5000, augment=False))
    assert x.shape == (50_000, 32, 32, 3) and y.shape == (50_000,)
    assert np.bincount(y).tolist() == [5000] * 10
    # Normalised with the published statistics of the training images.
    pixels = x.reshape(-1, 3).astype(np.float64)
    np.testing.assert_allclose(pixels.mean(axis=0), 0.0, atol=2e-3)
    np.testing.assert_allclose(pixels.std(axis=0), 1.0, atol=2e-3)
    raw = x * CIFAR10_STD + CIFAR10_MEAN
    np.testing.assert_allclose(raw.min(), 0.0, atol=1e-5)
    np.testing.assert_allclose(raw.max(), 1.0, atol=1e-5)
    xt, yt = _arrays(data.load("cifar10", "test", data_dir=tfds_dir,
                               batch_size=1000))
    assert xt.shape == (10_000, 32, 32, 3)
    assert np.bincount(yt).tolist() == [1000] * 10


def test_real_cifar10_subset_and_validation_split(tfds_dir):
    kwargs = dict(data_dir=tfds_dir, batch_size=100, augment=False)
    x, y = _arrays(data.load_cifar("cifar10", "test", test_examples=300,
                                   **kwargs))
    assert x.shape == (300, 32, 32, 3) and x.dtype == np.float32
    assert y.dtype == np.int32 and 0 <= y.min() and y.max() <= 9
    assert len(set(y.tolist())) == 10
    np.testing.assert_allclose(x.reshape(-1, 3).mean(0), 0.0, atol=0.1)
    sub_x, sub_y = _arrays(data.load_cifar("cifar10", "train", train_examples=300,
                                      **kwargs))
    val_x, _ = _arrays(data.load_cifar("cifar10", "validation",
                                  validation_examples=500, **kwargs))
    assert sub_x.shape[0] == 300 and val_x.shape[0] == 500
    # Without augmentation or shuffling the subset is the first images.
    first_x, first_y = _arrays(data.load_cifar("cifar10", "train",
                                          train_examples=400, **kwargs))
    np.testing.assert_array_equal(first_x[:300], sub_x)
    np.testing.assert_array_equal(first_y[:300], sub_y)


def test_training_pipeline_is_seeded_and_epoch_keyed(tfds_dir):
    def epochs(seed, initial_epoch=0):
        return _arrays(data.load_cifar(
            "cifar10", "train", data_dir=tfds_dir, batch_size=64,
            train_examples=256, seed=seed, epochs=3,
            initial_epoch=initial_epoch))

    x, y = epochs(seed=1)
    assert x.shape == (3 * 256, 32, 32, 3)
    again_x, _ = epochs(seed=1)
    np.testing.assert_array_equal(x, again_x)
    other_x, _ = epochs(seed=2)
    assert not np.array_equal(x, other_x)
    # Each epoch is a permutation of the same 256 images, in a new order.
    assert sorted(y[:256]) == sorted(y[256:512])
    assert not np.array_equal(y[:256], y[256:512])
    # A run resumed at epoch 1 sees exactly epochs 1 and 2.
    resumed_x, resumed_y = epochs(seed=1, initial_epoch=1)
    np.testing.assert_array_equal(resumed_x, x[256:])
    np.testing.assert_array_equal(resumed_y, y[256:])


def test_augmentation_keeps_shapes_and_changes_pixels(tfds_dir):
    images, _ = next(iter(data.load_cifar("cifar10", "test", data_dir=tfds_dir,
                                     batch_size=16)))
    changed = 0
    for i, image in enumerate(images):
        out = augment.pad_crop_flip(image, tf.constant([3, i], tf.int64))
        assert out.shape == image.shape
        changed += not np.array_equal(out.numpy(), image.numpy())
        cut = augment.cutout(image, tf.constant([5, i], tf.int64), 8)
        assert cut.shape == image.shape
        zeros = np.all(cut.numpy() == 0, axis=-1).sum()
        assert 16 <= zeros <= 81  # a square of side ≤ 9, maybe clipped
    assert changed >= 12


@pytest.mark.parametrize("call, match", [
    (lambda: data.load("imagenet", "train"), "name='imagenet'"),
    (lambda: data.load("cifar10", "validation"), "split='validation'"),
    (lambda: data.load_cifar("cifar10", "valid"), "split='valid'"),
    (lambda: data.load_cifar("cifar10", "validation"), "validation_examples"),
    (lambda: data.load_cifar("cifar10", "train", train_examples=0),
     "train_examples"),
    (lambda: data.load_cifar("mnist"), "name='mnist'"),
    (lambda: tiny_imagenet.list_files("/nonexistent", "train"),
     "dataset folder is missing: /nonexistent"),
    (lambda: tiny_imagenet.list_files("/nonexistent", "test"),
     "split='test'"),
])
def test_bad_names_and_splits_raise_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# --- Tiny ImageNet --------------------------------------------------------

def _val_annotations(root):
    with open(os.path.join(root, "val", "val_annotations.txt")) as f:
        return [line.split("\t")[:2] for line in f if line.strip()]


def test_real_tiny_imagenet_subset(tiny_dir):
    with open(os.path.join(tiny_dir, "wnids.txt")) as f:
        wnids = f.read().split()
    assert data.shape("tiny_imagenet", tiny_dir) == (20, (64, 64, 3))
    x, y = _arrays(data.load("tiny_imagenet", "train", data_dir=tiny_dir,
                             batch_size=500, augment=False))
    assert x.shape == (4000, 64, 64, 3) and x.dtype == np.float32
    assert np.bincount(y).tolist() == [200] * 20
    xv, yv = _arrays(data.load("tiny_imagenet", "test", data_dir=tiny_dir,
                               batch_size=500))
    assert xv.shape == (1000, 64, 64, 3)
    # Every validation label is the annotation's, in file order.
    expected = [wnids.index(wnid) for _, wnid in _val_annotations(tiny_dir)]
    assert yv.tolist() == expected
    assert np.bincount(yv).tolist() == [50] * 20


def test_grayscale_jpegs_get_three_channels(tiny_dir):
    paths, labels = tiny_imagenet.list_files(tiny_dir, "train")
    gray = next(p for p in paths if tf.io.decode_jpeg(
        tf.io.read_file(p), channels=0).shape[-1] == 1)
    image = tiny_imagenet._decode(tf.constant(gray))
    assert image.shape == (64, 64, 3)
    np.testing.assert_array_equal(image[..., 0], image[..., 2])


def test_tiny_imagenet_resized_to_32_averages_2x2_blocks(tiny_dir):
    assert data.shape("tiny_imagenet", tiny_dir, 32) == (20, (32, 32, 3))
    small = _arrays(data.load("tiny_imagenet", "test", data_dir=tiny_dir,
                              batch_size=100, test_examples=100,
                              image_size=32))[0]
    full = _arrays(data.load("tiny_imagenet", "test", data_dir=tiny_dir,
                             batch_size=100, test_examples=100))[0]
    assert small.shape == (100, 32, 32, 3)
    # Undo the normalisation, average 2×2 blocks of the originals in NumPy.
    mean, std = np.array(tiny_imagenet.MEAN), np.array(tiny_imagenet.STD)
    pixels = np.round((full * std + mean) * 255.0)
    blocks = pixels.reshape(100, 32, 2, 32, 2, 3).mean(axis=(2, 4))
    want = (np.round(blocks) / 255.0 - mean) / std
    np.testing.assert_allclose(small, want, atol=1.01 / 255 / std.min())
    assert np.mean(np.abs(small - want) < 1e-4) > 0.95  # exact but ties


@pytest.mark.parametrize("size", [4, 65, 32.0, True])
def test_tiny_imagenet_bad_image_size(tiny_dir, size):
    with pytest.raises(ValueError, match="image_size"):
        data.load("tiny_imagenet", "test", data_dir=tiny_dir,
                  image_size=size)


def test_tiny_imagenet_training_subset_and_augmentation(tiny_dir):
    x, y = _arrays(data.load("tiny_imagenet", "train", data_dir=tiny_dir,
                             batch_size=100, train_examples=400, epochs=1))
    assert x.shape == (400, 64, 64, 3)
    assert len(set(y.tolist())) > 15  # a random subset, not one class


def _copy_tree(src, dst, wnids=2, per_class=3, val=4):
    """A small tree in the standard layout, from real files."""
    with open(os.path.join(src, "wnids.txt")) as f:
        kept = f.read().split()[:wnids]
    os.makedirs(os.path.join(dst, "val", "images"))
    with open(os.path.join(dst, "wnids.txt"), "w") as f:
        f.write("\n".join(kept) + "\n")
    for wnid in kept:
        folder = os.path.join(dst, "train", wnid, "images")
        os.makedirs(folder)
        source = os.path.join(src, "train", wnid, "images")
        for name in sorted(os.listdir(source))[:per_class]:
            shutil.copy(os.path.join(source, name), folder)
    lines = [a for a in _val_annotations(src) if a[1] in kept][:val]
    with open(os.path.join(dst, "val", "val_annotations.txt"), "w") as f:
        for name, wnid in lines:
            shutil.copy(os.path.join(src, "val", "images", name),
                        os.path.join(dst, "val", "images"))
            f.write(f"{name}\t{wnid}\t0\t0\t63\t63\n")
    return kept


def test_a_small_tree_in_the_layout_loads(tiny_dir, tmp_path):
    root = str(tmp_path / "tiny")
    _copy_tree(tiny_dir, root)
    x, y = _arrays(data.load("tiny_imagenet", "train", data_dir=root,
                             batch_size=6, augment=False))
    assert x.shape == (6, 64, 64, 3) and sorted(y.tolist()) == [0, 0, 0, 1,
                                                                1, 1]


@pytest.mark.parametrize("breakage, split, match", [
    ("no_wnids", "train", "class list wnids.txt is missing"),
    ("no_annotations", "val", "val_annotations.txt is missing"),
    ("empty_class", "train", "holds no JPEG images"),
    ("missing_class", "train", "training folder of class"),
    ("unknown_wnid", "val", "not in wnids.txt"),
    ("missing_val_image", "val", "the image of line 1"),
])
def test_broken_trees_name_what_is_missing(tiny_dir, tmp_path, breakage,
                                           split, match):
    root = str(tmp_path / "tiny")
    kept = _copy_tree(tiny_dir, root)
    annotations = os.path.join(root, "val", "val_annotations.txt")
    if breakage == "no_wnids":
        os.remove(os.path.join(root, "wnids.txt"))
    elif breakage == "no_annotations":
        os.remove(annotations)
    elif breakage == "empty_class":
        folder = os.path.join(root, "train", kept[1], "images")
        for name in os.listdir(folder):
            os.remove(os.path.join(folder, name))
    elif breakage == "missing_class":
        shutil.rmtree(os.path.join(root, "train", kept[0]))
    elif breakage == "unknown_wnid":
        with open(annotations, "a") as f:
            f.write("val_x.JPEG\tn00000000\t0\t0\t1\t1\n")
    elif breakage == "missing_val_image":
        first = open(annotations).readline().split("\t")[0]
        os.remove(os.path.join(root, "val", "images", first))
    with pytest.raises(ValueError, match=match) as error:
        tiny_imagenet.list_files(root, split)
    assert root in str(error.value) or breakage == "unknown_wnid"


def test_a_truncated_jpeg_is_named_before_training(tiny_dir, tmp_path):
    root = str(tmp_path / "tiny")
    kept = _copy_tree(tiny_dir, root)
    folder = os.path.join(root, "train", kept[0], "images")
    broken = os.path.join(folder, sorted(os.listdir(folder))[1])
    with open(broken, "rb") as f:
        content = f.read()
    with open(broken, "wb") as f:
        f.write(content[: len(content) // 2])
    with pytest.raises(ValueError, match="not a whole JPEG") as error:
        data.load("tiny_imagenet", "train", data_dir=root, batch_size=2)
    assert broken in str(error.value)
    with open(broken, "wb") as f:
        f.write(b"GIF89a" + content[6:])
    with pytest.raises(ValueError, match=broken):
        data.load("tiny_imagenet", "train", data_dir=root, batch_size=2)


# --- label noise ----------------------------------------------------------

@pytest.mark.parametrize("fraction, n, classes", [
    (0.2, 1000, 10), (0.4, 1000, 10), (0.25, 7, 3), (0.0, 50, 10)])
def test_symmetric_label_noise_flips_exactly_the_fraction(fraction, n,
                                                          classes):
    from keras_rts.data.pipeline import symmetric_label_noise
    labels = np.arange(n, dtype=np.int32) % classes
    noisy = symmetric_label_noise(tf.constant(labels), fraction, classes,
                                  seed=3).numpy()
    changed = noisy != labels
    assert changed.sum() == int(fraction * n + 0.5)  # round half up
    assert noisy.min() >= 0 and noisy.max() < classes
    again = symmetric_label_noise(tf.constant(labels), fraction, classes,
                                  seed=3).numpy()
    np.testing.assert_array_equal(noisy, again)  # fixed by the seed
    if fraction:
        other = symmetric_label_noise(tf.constant(labels), fraction,
                                      classes, seed=4).numpy()
        assert (other != noisy).any()


def test_symmetric_label_noise_draws_the_other_classes_uniformly():
    from keras_rts.data.pipeline import symmetric_label_noise
    n, classes = 200_000, 5
    labels = np.zeros(n, np.int32)
    noisy = symmetric_label_noise(tf.constant(labels), 0.5, classes,
                                  seed=0).numpy()
    counts = np.bincount(noisy, minlength=classes)
    assert counts[0] == n // 2
    # Each other class gets a quarter of the flipped half: within 4 std.
    expected = n / 2 / (classes - 1)
    std = np.sqrt(n / 2 * (1 / 4) * (3 / 4))
    assert np.all(np.abs(counts[1:] - expected) < 4 * std)


def test_recipe_data_with_label_noise(tfds_dir):
    """The training labels of the run's data differ from the clean ones in
    exactly round(p·n) images, the same in every epoch; test labels are
    untouched."""
    from keras_rts import experiment
    s = experiment.Settings(dataset="cifar10", epochs=2, batch_size=100,
                            train_examples=1000, data_dir=tfds_dir,
                            test_examples=500)
    noisy_s = dataclasses.replace(s, label_noise=0.3)

    def labels(settings):
        train, test = experiment.datasets(settings)
        # Same seed: the same order and augmentation, so images line up.
        (x, y), (tx, ty) = _arrays(train), _arrays(test)
        return x, y, tx, ty

    x, y, tx, ty = labels(s)
    nx, ny, ntx, nty = labels(noisy_s)
    np.testing.assert_array_equal(x, nx)
    np.testing.assert_array_equal(tx, ntx)
    np.testing.assert_array_equal(ty, nty)
    flipped = y != ny
    assert flipped[:1000].sum() == flipped[1000:].sum() == 300
    # The same images are noisy in both epochs: the clean and noisy label
    # pairs of an epoch, as multisets, are the same.
    pairs = [sorted(zip(y[e * 1000:(e + 1) * 1000][flipped[e * 1000:(e + 1)
                                                           * 1000]],
                        ny[e * 1000:(e + 1) * 1000][flipped[e * 1000:(e + 1)
                                                             * 1000]]))
             for e in (0, 1)]
    assert pairs[0] == pairs[1]
    with pytest.raises(ValueError, match="training split only"):
        data.load("cifar10", "test", data_dir=tfds_dir, label_noise=0.2)


# --- cutout ---------------------------------------------------------------

@pytest.mark.parametrize("size", [8, 16, 5])
def test_cutout_hides_a_size_by_size_square_clipped_at_the_borders(size):
    image = tf.ones((32, 32, 3))
    full = 0
    for seed in range(200):
        hidden = (augment.cutout(image, tf.constant([seed, 1], tf.int64),
                                 size).numpy() == 0).all(-1)
        rows, cols = np.nonzero(hidden)
        assert len(rows) > 0
        height = rows.max() - rows.min() + 1
        width = cols.max() - cols.min() + 1
        assert hidden.sum() == height * width  # one rectangle
        assert height <= size and width <= size
        full += hidden.sum() == size * size
    # Most centres lie far enough from the borders for the whole square.
    assert full > 200 * ((32 - size) / 32) ** 2 * 0.7


def test_data_dir_without_the_dataset_creates_nothing(tmp_path):
    missing = tmp_path / "missing"
    with pytest.raises(ValueError, match="does not exist"):
        data.check("cifar10", str(missing))
    with pytest.raises(ValueError, match=str(missing)):
        data.load("cifar10", "train", data_dir=str(missing))
    assert not missing.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="cifar10/3.0.2/dataset_info.json"):
        data.load("cifar10", "test", data_dir=str(empty))
    assert list(empty.iterdir()) == []


def test_datasets_have_their_length(tfds_dir, tiny_dir):
    """Keras' progress bar shows N/N: every split says how many batches."""
    for dataset, batches in [
        (data.load("cifar10", "train", data_dir=tfds_dir, batch_size=128,
                   train_examples=1000), 1000 // 128),
        (data.load("cifar10", "train", data_dir=tfds_dir, batch_size=100,
                   train_examples=1000, epochs=5, initial_epoch=2), 3 * 10),
        (data.load("cifar10", "test", data_dir=tfds_dir, batch_size=128,
                   test_examples=1000), 8),
        (data.load("tiny_imagenet", "test", data_dir=tiny_dir,
                   batch_size=300, test_examples=1000), 4),
    ]:
        assert int(dataset.cardinality()) == batches
        assert sum(1 for _ in dataset) == batches


@pytest.mark.parametrize("kwargs, match", [
    (dict(batch_size=0), "batch_size"),
    (dict(batch_size="128"), "batch_size"),
    (dict(cutout=100), "cutout must be below the image side 32"),
    (dict(cutout=-1), "cutout"),
    (dict(epochs=0), "epochs"),
    (dict(epochs=3, initial_epoch=5), "initial_epoch=5"),
    (dict(seed=1.5), "seed"),
    (dict(label_noise=1.0), "label_noise"),
])
def test_load_refuses_bad_arguments_naming_them(kwargs, match, tfds_dir):
    with pytest.raises(ValueError, match=match):
        data.load("cifar10", "train", data_dir=tfds_dir, train_examples=256,
                  **kwargs)
