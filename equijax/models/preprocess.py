"""CLIP image preprocessing in NumPy/JAX: resize, centre crop, scale to [0, 1], normalise.

Two paths:

* :func:`clip_preprocess` -- the reference pipeline on uint8 images (PIL bicubic resize of the
  shortest edge, centre crop, ``/255``, normalise with CLIP's mean/std), matching
  ``transformers``' ``CLIPImageProcessor`` (PIL backend). Returns **NHWC** float32.
* :func:`resize_and_crop` + :func:`normalize` -- a jittable JAX path for float images already on
  the device (``jax.image.resize``, bicubic); numerically close to, not identical with, PIL.

All model ports in :mod:`equijax.models` take NHWC images; :func:`nchw_to_nhwc` /
:func:`nhwc_to_nchw` convert from/to PyTorch's layout.

Examples:
    >>> import numpy as np
    >>> images = np.random.default_rng(0).integers(0, 256, (2, 32, 48, 3), dtype=np.uint8)
    >>> clip_preprocess(images, size=24).shape
    (2, 24, 24, 3)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "center_crop",
    "clip_preprocess",
    "nchw_to_nhwc",
    "nhwc_to_nchw",
    "normalize",
    "resize_and_crop",
    "resize_shortest_edge",
]

#: Per-channel RGB mean of OpenAI's CLIP preprocessing (images scaled to [0, 1]).
CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
#: Per-channel RGB standard deviation of OpenAI's CLIP preprocessing.
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)

_PIL_RESAMPLE = {"nearest": 0, "bilinear": 2, "bicubic": 3, "lanczos": 1}


def _as_uint8_hwc(image: Any) -> np.ndarray:
    """A PIL image or an ``(H, W)`` / ``(H, W, 1|3|4)`` uint8 array -> ``(H, W, 3)`` uint8 RGB."""
    if hasattr(image, "convert") and hasattr(image, "size"):  # PIL.Image
        return np.asarray(image.convert("RGB"))
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise TypeError(
            f"images must be uint8 (0..255) arrays or PIL images, got dtype {arr.dtype}; for "
            "float images already in [0, 1] use resize_and_crop + normalize"
        )
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4):
        raise ValueError(
            f"each image must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) (channels last), got "
            f"shape {arr.shape}; convert NCHW arrays with nchw_to_nhwc"
        )
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    return arr[..., :3]


def resize_shortest_edge(image: Any, size: int, *, resample: str = "bicubic") -> np.ndarray:
    """Resize so that the shorter side is ``size`` (aspect ratio kept, long side truncated).

    Args:
        image: PIL image or ``(H, W[, C])`` uint8 array.
        size: target length of the shorter side.
        resample: ``"bicubic"`` (CLIP), ``"bilinear"``, ``"nearest"`` or ``"lanczos"``.

    Returns:
        ``(H', W', 3)`` uint8 array with ``min(H', W') == size``.
    """
    from PIL import Image

    if resample not in _PIL_RESAMPLE:
        raise ValueError(f"resample={resample!r} must be one of {sorted(_PIL_RESAMPLE)}")
    if size < 1:
        raise ValueError(f"size={size} must be positive")
    arr = _as_uint8_hwc(image)
    h, w = arr.shape[:2]
    if h <= w:
        new_h, new_w = size, int(size * w / h)
    else:
        new_h, new_w = int(size * h / w), size
    if (new_h, new_w) == (h, w):
        return arr
    out = Image.fromarray(arr).resize((new_w, new_h), resample=_PIL_RESAMPLE[resample])
    return np.asarray(out)


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
    """Crop the central ``size x size`` window of an ``(H, W, C)`` array (offsets floored).

    Raises:
        ValueError: if the image is smaller than ``size`` on either side.
    """
    h, w = image.shape[:2]
    if h < size or w < size:
        raise ValueError(f"cannot centre-crop {size}x{size} from a {h}x{w} image; resize first")
    top, left = (h - size) // 2, (w - size) // 2
    return image[top : top + size, left : left + size]


def normalize(
    images: jax.typing.ArrayLike,
    mean: Sequence[float] = CLIP_MEAN,
    std: Sequence[float] = CLIP_STD,
) -> jax.Array:
    """``(x - mean) / std`` over the last (channel) axis of float images in [0, 1] (jittable)."""
    images = jnp.asarray(images)
    if images.shape[-1] != len(mean) or len(mean) != len(std):
        raise ValueError(
            f"images have {images.shape[-1]} channels (last axis, NHWC) but mean/std have "
            f"{len(mean)}/{len(std)} entries"
        )
    return (images - jnp.asarray(mean, images.dtype)) / jnp.asarray(std, images.dtype)


def clip_preprocess(
    images: Any,
    *,
    size: int = 224,
    mean: Sequence[float] = CLIP_MEAN,
    std: Sequence[float] = CLIP_STD,
    resample: str = "bicubic",
) -> np.ndarray:
    """CLIP preprocessing of uint8 images to a normalised NHWC float32 batch.

    Per image: resize the shorter side to ``size`` (PIL, bicubic), centre crop ``size x size``,
    scale to [0, 1], normalise ``(x - mean) / std``. Grey-scale and RGBA inputs become RGB.

    Args:
        images: one PIL image or ``(H, W[, C])`` uint8 array, a sequence of them (sizes may
            differ), or a ``(B, H, W, C)`` uint8 array.
        size: output resolution (the model's ``image_size``).
        mean: per-channel mean.
        std: per-channel standard deviation.
        resample: resize filter (see :func:`resize_shortest_edge`).

    Returns:
        ``(B, size, size, 3)`` float32 NHWC array (``B = 1`` for a single image).

    Raises:
        TypeError: non-uint8 arrays.
        ValueError: bad shapes (e.g. NCHW input).
    """
    if hasattr(images, "convert") or (isinstance(images, np.ndarray) and images.ndim in (2, 3)):
        images = [images]
    elif isinstance(images, np.ndarray | jax.Array) and np.ndim(images) == 4:
        images = list(np.asarray(images))
    elif not isinstance(images, Sequence) or isinstance(images, str):
        raise TypeError(
            "images must be a PIL image, a uint8 array (H, W[, C]) or (B, H, W, C), or a "
            f"sequence of those; got {type(images).__name__}"
        )
    if len(images) == 0:
        raise ValueError("images is empty")
    out = np.empty((len(images), size, size, 3), np.float32)
    for i, image in enumerate(images):
        arr = center_crop(resize_shortest_edge(image, size, resample=resample), size)
        out[i] = arr.astype(np.float32) / 255.0
    mean_arr, std_arr = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    return (out - mean_arr) / std_arr


def resize_and_crop(
    images: jax.typing.ArrayLike, size: int, *, method: str = "bicubic", antialias: bool = True
) -> jax.Array:
    """Jittable resize (shorter side -> ``size``) and centre crop of float NHWC images.

    Args:
        images: ``(B, H, W, C)`` float images (e.g. in [0, 1]).
        size: output resolution.
        method: ``jax.image.resize`` method (``"bicubic"``, ``"linear"``, ``"nearest"``, ...).
        antialias: antialias when downsampling.

    Returns:
        ``(B, size, size, C)`` images (not clipped: bicubic may overshoot the input range).

    Examples:
        >>> import jax.numpy as jnp
        >>> resize_and_crop(jnp.ones((1, 32, 32, 3)), 64).shape
        (1, 64, 64, 3)
    """
    images = jnp.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"images must be (B, H, W, C) NHWC, got shape {images.shape}")
    b, h, w, c = images.shape
    if h <= w:
        new_h, new_w = size, int(size * w / h)
    else:
        new_h, new_w = int(size * h / w), size
    if (new_h, new_w) != (h, w):
        images = jax.image.resize(images, (b, new_h, new_w, c), method=method, antialias=antialias)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return images[:, top : top + size, left : left + size]


def nchw_to_nhwc(images: jax.typing.ArrayLike) -> jax.Array:
    """``(B, C, H, W)`` -> ``(B, H, W, C)``.

    Examples:
        >>> nchw_to_nhwc(jnp.zeros((2, 3, 8, 5))).shape
        (2, 8, 5, 3)
    """
    images = jnp.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"images must be 4-D (B, C, H, W), got shape {images.shape}")
    return jnp.transpose(images, (0, 2, 3, 1))


def nhwc_to_nchw(images: jax.typing.ArrayLike) -> jax.Array:
    """``(B, H, W, C)`` -> ``(B, C, H, W)``."""
    images = jnp.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"images must be 4-D (B, H, W, C), got shape {images.shape}")
    return jnp.transpose(images, (0, 3, 1, 2))
