"""Image data: tfds sources without TensorFlow, image folders, MNIST idx files, batching, and
per-image random group transformations.

Every source is a random-access sequence of ``(image, label)`` pairs with ``image`` a uint8
``(H, W, C)`` numpy array and ``label`` an int. :func:`batches` turns a source into
deterministically shuffled numpy batches; :func:`random_transform` applies one random group
element **per image** (jittable), e.g. a random quarter turn for "rot90-CIFAR".

Sources:

* :func:`tfds_source` — ``cifar10``, ``cifar100``, ``imagenet_v2`` through
  ``tensorflow_datasets.data_source`` (ArrayRecord + pillow, no TensorFlow needed); the data
  must already be prepared in ``data_dir`` (``tfds build`` or a previous download).
* :func:`image_folder_source` — any ``root/<class>/<image>`` folder (offline path).
* :func:`mnist_source` / :func:`load_mnist_idx` — MNIST idx(.gz) files.
* :class:`ArraySource` — in-memory arrays.
"""

from __future__ import annotations

import gzip
import os
import pathlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# tfds name -> (default test split, number of classes, default tfds config suffix)
TFDS_DATASETS: dict[str, tuple[str, int]] = {
    "cifar10": ("test", 10),
    "cifar100": ("test", 100),
    "imagenet_v2": ("test", 1000),
}

# Per-image random transformations: name -> group factory name in equijax.groups.
# "flip" is a true mirror (left-right). The reference code's "flip" was a 180-degree rotation;
# that transformation is offered under its honest name "rot180".
TRANSFORMS: tuple[str, ...] = ("none", "rot90", "flip", "hflip", "vflip", "rot180", "dihedral")

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def _as_image(image: Any, where: str) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise ValueError(f"{where}: expected an (H, W) or (H, W, C) image, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise TypeError(f"{where}: expected uint8 pixels, got dtype {arr.dtype}")
    return arr


class ArraySource:
    """An in-memory source of uint8 images and int labels.

    Args:
      images: ``(N, H, W)`` or ``(N, H, W, C)`` uint8 array.
      labels: ``(N,)`` int labels.
      class_names: optional class names (index = label).

    Raises:
      ValueError: mismatched lengths or bad image rank.
      TypeError: non-uint8 images.

    Examples:
      >>> import numpy as np
      >>> src = ArraySource(np.zeros((3, 4, 4), np.uint8), np.array([0, 1, 2]))
      >>> len(src), src[1][0].shape, src[1][1]
      (3, (4, 4, 1), 1)
    """

    def __init__(self, images: Any, labels: Any, class_names: Sequence[str] | None = None) -> None:
        images = np.asarray(images)
        if images.ndim == 3:
            images = images[..., None]
        if images.ndim != 4:
            raise ValueError(f"images must be (N, H, W[, C]), got shape {images.shape}")
        if images.dtype != np.uint8:
            raise TypeError(f"images must be uint8, got {images.dtype}; scale to 0..255 first")
        labels = np.asarray(labels).astype(np.int64).reshape(-1)
        if len(labels) != len(images):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels = images, labels
        self.class_names = tuple(class_names) if class_names is not None else None

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        return self.images[i], int(self.labels[i])


class TfdsSource:
    """A tfds ``data_source`` wrapped to yield ``(image, label)``, one example at a time.

    (The mock data source's batched ``__getitems__`` is unreliable, so examples are always
    read individually.) Build it with :func:`tfds_source`.
    """

    def __init__(self, source: Any, name: str, num_classes: int) -> None:
        self._source, self.name, self.num_classes = source, name, num_classes
        self.class_names = None

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        ex = self._source[int(i)]
        return _as_image(ex["image"], f"{self.name}[{i}]"), int(ex["label"])


def tfds_source(
    name: str, split: str | None = None, *, data_dir: str | os.PathLike | None = None
) -> TfdsSource:
    """Open ``cifar10`` / ``cifar100`` / ``imagenet_v2`` with ``tfds.data_source`` (no TensorFlow).

    Args:
      name: dataset name (``imagenet_v2`` uses tfds' default ``matched-frequency`` config;
        pass e.g. ``"imagenet_v2/topimages"`` for another).
      split: split, default ``"test"`` (the evaluation split used by the paper).
      data_dir: tfds data directory (default: tfds' own, ``~/tensorflow_datasets``).

    Returns:
      A :class:`TfdsSource` of ``(uint8 (H, W, 3) image, int label)``.

    Raises:
      ValueError: unknown dataset name.
      ImportError: tensorflow-datasets is not installed.
    """
    base = name.split("/")[0].lower().replace("-", "_")
    if base not in TFDS_DATASETS:
        raise ValueError(
            f"name={name!r} is not a supported tfds dataset; choose one of {sorted(TFDS_DATASETS)}"
            " or use image_folder_source / mnist_source for local data"
        )
    try:
        import tensorflow_datasets as tfds
    except ImportError as err:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "tfds_source needs tensorflow-datasets (pip install tensorflow-datasets pillow); "
            "TensorFlow itself is not required"
        ) from err
    default_split, num_classes = TFDS_DATASETS[base]
    full = base + name[len(base) :] if "/" in name else base
    src = tfds.data_source(full, split=split or default_split, data_dir=data_dir)
    return TfdsSource(src, base, num_classes)


class FolderSource:
    """Images in ``root/<class name>/<file>``; classes sorted by name (label = index)."""

    def __init__(self, files: Sequence[pathlib.Path], labels: Sequence[int], classes: Sequence[str],
                 mode: str) -> None:  # fmt: skip
        self.files, self.labels = list(files), np.asarray(labels, np.int64)
        self.class_names, self.mode = tuple(classes), mode

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        from PIL import Image

        with Image.open(self.files[i]) as im:
            arr = np.asarray(im.convert(self.mode))
        return _as_image(arr, str(self.files[i])), int(self.labels[i])


def image_folder_source(
    root: str | os.PathLike, *, mode: str = "RGB", extensions: Sequence[str] = IMAGE_EXTENSIONS
) -> FolderSource:
    """A source over an image folder laid out as ``root/<class>/<image file>``.

    Args:
      root: directory with one sub-directory per class.
      mode: PIL mode the images are converted to (``"RGB"`` or ``"L"``).
      extensions: accepted file extensions (lower case).

    Returns:
      A :class:`FolderSource`; ``class_names`` are the sorted sub-directory names.

    Raises:
      FileNotFoundError: ``root`` is missing or holds no class folder with images.

    Examples:
      >>> import tempfile, pathlib, numpy as np
      >>> from PIL import Image
      >>> with tempfile.TemporaryDirectory() as d:
      ...     (pathlib.Path(d) / "cat").mkdir()
      ...     Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(f"{d}/cat/a.png")
      ...     src = image_folder_source(d)
      ...     len(src), src.class_names, src[0][0].shape
      (1, ('cat',), (5, 5, 3))
    """
    root = pathlib.Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"root={str(root)!r} is not a directory")
    exts = tuple(e.lower() for e in extensions)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    files, labels = [], []
    for label, cls in enumerate(classes):
        for f in sorted((root / cls).iterdir()):
            if f.is_file() and f.suffix.lower() in exts:
                files.append(f)
                labels.append(label)
    if not files:
        raise FileNotFoundError(
            f"no images with extensions {exts} in class sub-folders of {str(root)!r}; expected "
            "root/<class>/<image>"
        )
    return FolderSource(files, labels, classes, mode)


def _read_idx(path: pathlib.Path, expected_magic: int) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    magic = int.from_bytes(data[:4], "big")
    if magic != expected_magic:
        raise ValueError(
            f"{str(path)!r} is not an idx file of the expected kind (magic {magic:#x}, expected "
            f"{expected_magic:#x})"
        )
    ndim = magic & 0xFF
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_mnist_idx(
    images_path: str | os.PathLike, labels_path: str | os.PathLike
) -> tuple[np.ndarray, np.ndarray]:
    """Read MNIST idx files (optionally gzipped).

    Returns:
      ``(images, labels)``: uint8 ``(N, 28, 28, 1)`` and int64 ``(N,)``.

    Raises:
      FileNotFoundError: a file is missing.
      ValueError: wrong magic number or mismatched counts.
    """
    ip, lp = pathlib.Path(images_path), pathlib.Path(labels_path)
    for p in (ip, lp):
        if not p.is_file():
            raise FileNotFoundError(f"MNIST idx file {str(p)!r} not found")
    images = _read_idx(ip, 0x803)
    labels = _read_idx(lp, 0x801).astype(np.int64)
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels in {ip} / {lp}")
    return images[..., None], labels


def mnist_source(directory: str | os.PathLike, split: str = "t10k") -> ArraySource:
    """MNIST from ``directory/{split}-images-idx3-ubyte[.gz]`` and the matching labels file.

    Args:
      directory: folder with the idx files.
      split: ``"t10k"`` (test) or ``"train"``.

    Raises:
      ValueError: unknown split.
      FileNotFoundError: files missing.
    """
    if split not in ("t10k", "train"):
        raise ValueError(f"split must be 't10k' or 'train', got {split!r}")
    d = pathlib.Path(directory)

    def find(kind: str) -> pathlib.Path:
        for suffix in (".gz", ""):
            p = d / f"{split}-{kind}-idx{3 if kind == 'images' else 1}-ubyte{suffix}"
            if p.is_file():
                return p
        raise FileNotFoundError(f"no {split} {kind} idx file in {str(d)!r}")

    images, labels = load_mnist_idx(find("images"), find("labels"))
    return ArraySource(images, labels, [str(i) for i in range(10)])


def subset(source: Any, indices: Sequence[int]) -> ArraySource:
    """Materialise ``source[i]`` for ``i`` in ``indices`` (images must share one shape)."""
    items = [source[int(i)] for i in indices]
    return ArraySource(
        stack_images([im for im, _ in items]), [lab for _, lab in items],
        getattr(source, "class_names", None),
    )  # fmt: skip


def stack_images(images: Sequence[np.ndarray]) -> np.ndarray:
    """Stack same-sized uint8 images; a clear error names the first differing shape."""
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise ValueError(
            f"images of different shapes {sorted(shapes)[:3]} cannot be stacked; pass a "
            "`preprocess` (e.g. equijax.models.preprocess.clip_preprocess) that resizes them"
        )
    return np.stack(images)


def batches(
    source: Any,
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int = 0,
    epoch: int = 0,
    drop_remainder: bool = False,
    limit: int | None = None,
    preprocess: Callable[[list[np.ndarray]], np.ndarray] | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Deterministic numpy batches ``(images, labels)`` from a source.

    The order is a pure function of ``(seed, epoch)``: the same arguments always give the same
    batches, and each epoch gets a fresh permutation.

    Args:
      source: any sequence of ``(image, label)``.
      batch_size: examples per batch (>= 1).
      shuffle: shuffle with ``np.random.default_rng([seed, epoch])``.
      seed: shuffling seed.
      epoch: epoch number (changes the permutation).
      drop_remainder: drop the last incomplete batch.
      limit: use only the first ``limit`` examples (of the shuffled order if ``shuffle``).
      preprocess: list of uint8 images -> array batch (default: stack; images must then have
        one shape).

    Yields:
      ``(images, labels)``: ``(B, ...)`` array and int32 ``(B,)``.

    Raises:
      ValueError: ``batch_size < 1``.

    Examples:
      >>> import numpy as np
      >>> src = ArraySource(np.zeros((5, 2, 2), np.uint8), np.arange(5))
      >>> [y.tolist() for _, y in batches(src, 2)]
      [[0, 1], [2, 3], [4]]
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    n = len(source)
    order = np.arange(n)
    if shuffle:
        order = np.random.default_rng([seed, epoch]).permutation(n)
    if limit is not None:
        order = order[:limit]
    prep = preprocess or stack_images
    stop = len(order) - (len(order) % batch_size if drop_remainder else 0)
    for start in range(0, stop, batch_size):
        idx = order[start : start + batch_size]
        if isinstance(source, ArraySource) and preprocess is None:
            yield source.images[idx], source.labels[idx].astype(np.int32)
            continue
        items = [source[int(i)] for i in idx]
        yield prep([im for im, _ in items]), np.asarray([lab for _, lab in items], np.int32)


def transform_group(kind: str, layout: str = "NHWC") -> Any:
    """The image group behind a transformation name (see :data:`TRANSFORMS`).

    ``"flip"`` and ``"hflip"`` are the true left-right mirror; ``"rot180"`` is the 180-degree
    rotation (what the reference code called "flip").

    Raises:
      ValueError: unknown name.
    """
    from equijax._src import groups

    table = {
        "rot90": groups.rot90, "flip": groups.hflip, "hflip": groups.hflip,
        "vflip": groups.vflip, "rot180": groups.rot180, "dihedral": groups.dihedral,
    }  # fmt: skip
    if kind not in table:
        raise ValueError(
            f"transform {kind!r} is not one of {[t for t in TRANSFORMS if t != 'none']}"
        )
    return table[kind](layout)


def apply_per_image(group: Any, elements: jax.typing.ArrayLike, images: jax.Array) -> jax.Array:
    """Applies ``group`` element ``elements[i]`` to image ``i`` (jittable).

    Args:
      group: an image group.
      elements: int ``(B,)`` element indices.
      images: ``(B, H, W, C)`` (or the group's layout).

    Returns:
      The transformed batch.
    """
    images = jnp.asarray(images)
    elements = jnp.asarray(elements, jnp.int32)
    if elements.shape != images.shape[:1]:
        raise ValueError(
            f"elements must have shape ({images.shape[0]},), one per image, got {elements.shape}"
        )
    return jax.vmap(lambda g, x: group.act(g, x[None])[0])(elements, images)


def random_transform(
    key: jax.Array, images: jax.typing.ArrayLike, kind: str = "rot90", *, layout: str = "NHWC"
) -> tuple[jax.Array, jax.Array]:
    """Transforms each image by its own uniformly random group element (jittable).

    Args:
      key: PRNG key.
      images: ``(B, H, W, C)`` batch (square for ``rot90`` / ``dihedral``).
      kind: one of :data:`TRANSFORMS` (``"none"`` returns the batch unchanged).
      layout: ``"NHWC"`` or ``"NCHW"``.

    Returns:
      ``(transformed images, element indices (B,))``.

    Raises:
      ValueError: unknown ``kind``, or non-square images for quarter turns.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> x = jnp.arange(2 * 2 * 2.0).reshape(2, 2, 2, 1)
      >>> y, g = random_transform(jax.random.key(0), x, "rot90")
      >>> y.shape, g.shape
      ((2, 2, 2, 1), (2,))
    """
    images = jnp.asarray(images)
    if kind == "none":
        return images, jnp.zeros(images.shape[:1], jnp.int32)
    group = transform_group(kind, layout)
    elements = jax.random.randint(key, images.shape[:1], 0, group.order, jnp.int32)
    return apply_per_image(group, elements, images), elements


def check_images(
    images: Any, size: int | tuple[int, int], channels: int, name: str = "images"
) -> None:
    """Raises ``ValueError`` unless ``images`` is ``(B, H, W, C)`` with the given size/channels."""
    shape = np.shape(images)
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if len(shape) != 4 or tuple(shape[1:3]) != hw or shape[3] != channels:
        hint = ""
        if len(shape) == 4 and shape[1] == channels and tuple(shape[2:]) == hw:
            hint = " (this looks like NCHW; transpose to NHWC)"
        raise ValueError(
            f"{name} must have shape (B, {hw[0]}, {hw[1]}, {channels}), got {tuple(shape)}{hint}; "
            "resize/convert the images first"
        )


def to_float(images: jax.typing.ArrayLike, mean: Sequence[float] | None = None,
             std: Sequence[float] | None = None) -> jax.Array:  # fmt: skip
    """uint8 -> float32 in [0, 1], optionally normalised per channel ``(x - mean) / std``."""
    x = jnp.asarray(images, jnp.float32) / 255.0
    if mean is not None:
        x = (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)
    return x
