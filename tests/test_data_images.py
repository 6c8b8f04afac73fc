"""Image data: tfds sources (mock), MNIST idx, image folders, batching, per-image transforms."""

from __future__ import annotations

import gzip

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import equijax as ej
from equijax.data import images

tfds = pytest.importorskip("tensorflow_datasets")


@pytest.mark.parametrize(
    ("name", "classes"), [("cifar10", 10), ("cifar100", 100), ("imagenet_v2", 1000)]
)
def test_tfds_source_yields_uint8_images_and_labels_with_mock_data(name, classes):
    with tfds.testing.mock_data(num_examples=4):
        src = images.tfds_source(name)
        assert len(src) == 4
        assert src.num_classes == classes
        for i in range(len(src)):
            im, label = src[i]
            assert im.dtype == np.uint8 and im.ndim == 3 and im.shape[-1] == 3
            assert isinstance(label, int) and 0 <= label < classes


def test_tfds_source_rejects_unknown_dataset_naming_the_choices():
    with pytest.raises(ValueError, match="cifar100"):
        images.tfds_source("mnist_rotated")


def test_batches_with_variable_size_images_need_a_preprocess():
    with tfds.testing.mock_data(num_examples=6):
        src = images.tfds_source("imagenet_v2")
        shapes = {src[i][0].shape for i in range(len(src))}
        if len(shapes) > 1:  # mock images have random sizes
            with pytest.raises(ValueError, match="preprocess"):
                list(images.batches(src, 6))
        resize = lambda ims: np.stack([np.resize(im, (8, 8, 3)) for im in ims])
        x, y = next(images.batches(src, 6, preprocess=resize))
        assert x.shape == (6, 8, 8, 3) and y.shape == (6,)


def test_batches_are_deterministic_and_cover_every_example_once():
    src = images.ArraySource(np.zeros((23, 2, 2), np.uint8), np.arange(23))
    run = lambda **kw: [y.tolist() for _, y in images.batches(src, 5, shuffle=True, **kw)]
    a, b = run(seed=3, epoch=0), run(seed=3, epoch=0)
    assert a == b
    assert sorted(i for batch in a for i in batch) == list(range(23))
    assert run(seed=3, epoch=1) != a
    assert run(seed=4, epoch=0) != a
    dropped = list(images.batches(src, 5, drop_remainder=True))
    assert [len(y) for _, y in dropped] == [5, 5, 5, 5]
    with pytest.raises(ValueError, match="batch_size"):
        next(images.batches(src, 0))


def test_random_transform_applies_its_own_element_to_each_image(keys):
    x = jax.random.normal(keys(), (64, 6, 6, 2))
    for kind in ("rot90", "flip", "rot180", "dihedral"):
        y, g = images.random_transform(keys(), x, kind)
        G = images.transform_group(kind)
        assert len(set(np.asarray(g).tolist())) > 1  # per image, not one element per batch
        for i in range(0, 64, 7):
            np.testing.assert_array_equal(y[i], G.act(int(g[i]), x[i : i + 1])[0])


def test_flip_is_a_true_mirror_and_rot180_is_offered_separately():
    x = jnp.arange(9.0).reshape(1, 3, 3, 1)
    flip, rot = images.transform_group("flip"), images.transform_group("rot180")
    np.testing.assert_array_equal(flip.act(1, x)[0, :, :, 0], np.arange(9.0).reshape(3, 3)[:, ::-1])
    np.testing.assert_array_equal(
        rot.act(1, x)[0, :, :, 0], np.arange(9.0).reshape(3, 3)[::-1, ::-1]
    )
    with pytest.raises(ValueError, match="rot90"):
        images.random_transform(jax.random.key(0), x, "mirror")


def test_random_transform_is_jittable_and_rejects_non_square_rot90():
    f = jax.jit(lambda k, x: images.random_transform(k, x, "rot90"))
    y, g = f(jax.random.key(0), jnp.ones((3, 4, 4, 1)))
    assert y.shape == (3, 4, 4, 1) and g.dtype == jnp.int32
    with pytest.raises(ValueError, match="square"):
        images.random_transform(jax.random.key(0), jnp.ones((2, 4, 5, 1)), "rot90")


def test_per_image_rotation_makes_equitune_predictions_invariant(keys):
    w = jax.random.normal(keys(), (4 * 4 * 1, 3))
    fn = lambda x: x.reshape(x.shape[0], -1) @ w
    x = jax.random.normal(keys(), (8, 4, 4, 1))
    xr, _ = images.random_transform(keys(), x, "rot90")
    G = ej.groups.rot90()
    np.testing.assert_allclose(ej.equitune(fn, G, x), ej.equitune(fn, G, xr), atol=1e-5)


def _write_idx(path, array, magic):
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def test_load_mnist_idx_round_trips_and_rejects_wrong_files(tmp_path):
    ims = np.random.default_rng(0).integers(0, 256, (5, 28, 28)).astype(np.uint8)
    labels = np.array([3, 1, 4, 1, 5], np.uint8)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", ims, 0x803)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels, 0x801)
    src = images.mnist_source(tmp_path)
    assert len(src) == 5
    np.testing.assert_array_equal(src[2][0][..., 0], ims[2])
    assert [src[i][1] for i in range(5)] == labels.tolist()
    with pytest.raises(ValueError, match="idx"):
        images.load_mnist_idx(
            tmp_path / "t10k-labels-idx1-ubyte.gz", tmp_path / "t10k-labels-idx1-ubyte.gz"
        )
    with pytest.raises(FileNotFoundError):
        images.mnist_source(tmp_path, "train")
    with pytest.raises(ValueError, match="split"):
        images.mnist_source(tmp_path, "validation")


def test_mnist_test_set_from_shared_data(shared_data):
    src = images.mnist_source(shared_data / "mnist", "t10k")
    assert len(src) == 10_000
    assert src.images.shape == (10_000, 28, 28, 1)
    # First labels and class counts as documented in shared/data/mnist/README.md.
    assert src.labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert np.bincount(src.labels).tolist()[:3] == [980, 1135, 1032]


def test_image_folder_source_reads_classes_and_errors_on_empty(tmp_path):
    from PIL import Image

    for cls, value in (("cat", 10), ("dog", 200)):
        (tmp_path / cls).mkdir()
        for j in range(2):
            Image.fromarray(np.full((5, 7, 3), value + j, np.uint8)).save(
                tmp_path / cls / f"{j}.png"
            )
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    src = images.image_folder_source(tmp_path)
    assert src.class_names == ("cat", "dog")
    assert [src[i][1] for i in range(len(src))] == [0, 0, 1, 1]
    assert src[3][0].shape == (5, 7, 3) and int(src[3][0][0, 0, 0]) == 201
    grey = images.image_folder_source(tmp_path, mode="L")
    assert grey[0][0].shape == (5, 7, 1)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="class"):
        images.image_folder_source(tmp_path / "empty")


def test_check_images_and_array_source_give_clear_errors():
    with pytest.raises(ValueError, match="NCHW"):
        images.check_images(np.zeros((2, 3, 32, 32)), 32, 3)
    with pytest.raises(ValueError, match=r"\(B, 32, 32, 3\)"):
        images.check_images(np.zeros((2, 28, 28, 1)), 32, 3)
    images.check_images(np.zeros((2, 32, 32, 3)), 32, 3)
    with pytest.raises(TypeError, match="uint8"):
        images.ArraySource(np.zeros((2, 4, 4), np.float32), [0, 1])
    with pytest.raises(ValueError, match="labels"):
        images.ArraySource(np.zeros((2, 4, 4), np.uint8), [0])
