"""ResNet modules: the static config, the linen network and ImageNet preprocessing.

A port of ``transformers``' ``ResNetForImageClassification``; see :mod:`equijax.models.resnet`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from equijax.models._activations import ACTIVATIONS, check_activation
from equijax.models.preprocess import nchw_to_nhwc

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ResNet",
    "ResNetConfig",
    "ResNetOutput",
    "nchw_to_nhwc",
    "preprocess",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class ResNetConfig:
    """Static (hashable) ResNet hyper-parameters, mirroring HF ``ResNetConfig``.

    Attributes:
        num_channels: input image channels.
        embedding_size: channels of the 7x7 stem convolution.
        hidden_sizes: output channels of each stage.
        depths: number of residual blocks per stage.
        layer_type: ``"basic"`` (two 3x3 convs; ResNet-18/34) or ``"bottleneck"`` (1x1-3x3-1x1).
        hidden_act: activation of the stem and after each residual sum (``"relu"`` in all
            ``microsoft/resnet-*`` checkpoints); the convolutions inside a block always use ReLU,
            as in ``transformers``.
        downsample_in_first_stage: stride 2 in the first stage's first block.
        downsample_in_bottleneck: stride on the first 1x1 instead of the 3x3 in bottlenecks.
        num_labels: classifier outputs; 0 means no classifier (``logits`` is then ``None``).
    """

    num_channels: int = 3
    embedding_size: int = 64
    hidden_sizes: tuple[int, ...] = (256, 512, 1024, 2048)
    depths: tuple[int, ...] = (3, 4, 6, 3)
    layer_type: str = "bottleneck"
    hidden_act: str = "relu"
    downsample_in_first_stage: bool = False
    downsample_in_bottleneck: bool = False
    num_labels: int = 1000

    def __post_init__(self):
        object.__setattr__(self, "hidden_sizes", tuple(int(h) for h in self.hidden_sizes))
        object.__setattr__(self, "depths", tuple(int(d) for d in self.depths))
        if self.layer_type not in ("basic", "bottleneck"):
            raise ValueError(f"layer_type must be 'basic' or 'bottleneck', got {self.layer_type!r}")
        check_activation(self.hidden_act, "hidden_act")
        if len(self.hidden_sizes) != len(self.depths) or not self.depths:
            raise ValueError(
                "hidden_sizes and depths must be non-empty and of equal length, got "
                f"{self.hidden_sizes} and {self.depths}"
            )
        if any(d < 1 for d in self.depths):
            raise ValueError(f"every depth must be >= 1, got depths={self.depths}")
        if self.num_labels < 0:
            raise ValueError(f"num_labels must be >= 0, got {self.num_labels}")

    @classmethod
    def from_hf(cls, config: Mapping[str, Any]) -> ResNetConfig:
        """Build from a HF ``config.json`` dict (unknown keys are ignored).

        Missing keys take HF's defaults (``transformers`` 5 omits defaults from
        ``config.json``); ``num_labels`` is ``len(id2label)``, or HF's default 2 without it.
        """
        kwargs = {f.name: config[f.name] for f in dataclasses.fields(cls) if f.name in config}
        if "num_labels" not in config:
            kwargs["num_labels"] = len(config.get("id2label") or {0: 0, 1: 1})
        return cls(**kwargs)

    @property
    def total_stride(self) -> int:
        """Spatial downsampling factor from input to ``last_hidden_state``."""
        return 4 * 2 ** (len(self.depths) - 1) * (2 if self.downsample_in_first_stage else 1)


@flax.struct.dataclass
class ResNetOutput:
    """Outputs of :class:`ResNet`.

    Attributes:
        logits: ``(B, num_labels)`` classifier logits (``None`` when ``num_labels == 0``).
        pooled: ``(B, hidden_sizes[-1])`` globally average-pooled features.
        last_hidden_state: ``(B, H', W', hidden_sizes[-1])`` final feature map (NHWC).
    """

    logits: jax.Array | None
    pooled: jax.Array
    last_hidden_state: jax.Array


def _batch_norm(train: bool, dtype: Any, param_dtype: Any, name: str) -> nn.BatchNorm:
    # PyTorch BatchNorm2d: eps 1e-5, momentum 0.1 (flax momentum = 1 - torch momentum).
    return nn.BatchNorm(
        use_running_average=not train,
        momentum=0.9,
        epsilon=1e-5,
        dtype=dtype,
        param_dtype=param_dtype,
        name=name,
    )


class _ConvLayer(nn.Module):
    features: int
    kernel_size: int = 3
    stride: int = 1
    activation: str | None = "relu"
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        pad = self.kernel_size // 2
        x = nn.Conv(
            self.features,
            (self.kernel_size, self.kernel_size),
            strides=(self.stride, self.stride),
            padding=((pad, pad), (pad, pad)),
            use_bias=False,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="convolution",
        )(x)
        x = _batch_norm(train, self.dtype, self.param_dtype, "normalization")(x)
        if self.activation is not None:
            x = ACTIVATIONS[self.activation](x)
        return x


class _Block(nn.Module):
    config: ResNetConfig
    features: int
    stride: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        cfg = self.config
        kw = {"dtype": self.dtype, "param_dtype": self.param_dtype}
        # As in transformers: the convolutions inside a block always use ReLU; config.hidden_act
        # applies only in the stem and after the residual sum.
        inner = "relu"
        residual = x
        if x.shape[-1] != self.features or self.stride != 1:
            shortcut = _ConvLayer(self.features, 1, self.stride, None, name="shortcut", **kw)
            residual = shortcut(x, train)  # 1x1 convolution + batch norm, no activation
        if cfg.layer_type == "basic":
            h = _ConvLayer(self.features, 3, self.stride, inner, name="layer_0", **kw)(x, train)
            h = _ConvLayer(self.features, 3, 1, None, name="layer_1", **kw)(h, train)
        else:
            reduced = self.features // 4
            s1, s2 = (self.stride, 1) if cfg.downsample_in_bottleneck else (1, self.stride)
            h = _ConvLayer(reduced, 1, s1, inner, name="layer_0", **kw)(x, train)
            h = _ConvLayer(reduced, 3, s2, inner, name="layer_1", **kw)(h, train)
            h = _ConvLayer(self.features, 1, 1, None, name="layer_2", **kw)(h, train)
        return ACTIVATIONS[cfg.hidden_act](h + residual)


class ResNet(nn.Module):
    """HF-compatible ResNet image classifier on NHWC images.

    Attributes:
        config: a :class:`ResNetConfig`.
        dtype: computation dtype (e.g. ``jnp.bfloat16`` for faster inference).
        param_dtype: parameter dtype used by ``init``.
    """

    config: ResNetConfig
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, pixel_values: jax.Array, *, train: bool = False) -> ResNetOutput:
        """Run the network.

        Args:
            pixel_values: ``(B, H, W, num_channels)`` float images, normalised as the
                checkpoint expects (see :func:`preprocess`).
            train: use batch statistics in BatchNorm (and update ``batch_stats``, which must then
                be passed as ``mutable=["batch_stats"]`` to ``apply``). Default: inference mode.

        Returns:
            A :class:`ResNetOutput`.

        Raises:
            ValueError: for a wrong rank, channel count (with a hint for NCHW input), images
                smaller than the network's total stride, or non-float input.
        """
        cfg = self.config
        _check_images(pixel_values, cfg)
        kw = {"dtype": self.dtype, "param_dtype": self.param_dtype}
        x = jnp.asarray(pixel_values, self.dtype)
        x = _ConvLayer(cfg.embedding_size, 7, 2, cfg.hidden_act, name="embedder", **kw)(x, train)
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        for i, (features, depth) in enumerate(zip(cfg.hidden_sizes, cfg.depths, strict=True)):
            first_stride = (2 if cfg.downsample_in_first_stage else 1) if i == 0 else 2
            for j in range(depth):
                stride = first_stride if j == 0 else 1
                x = _Block(cfg, features, stride, name=f"stages_{i}_layers_{j}", **kw)(x, train)
        pooled = jnp.mean(x, axis=(1, 2))
        logits = None
        if cfg.num_labels > 0:
            logits = nn.Dense(cfg.num_labels, name="classifier", **kw)(pooled)
        return ResNetOutput(logits=logits, pooled=pooled, last_hidden_state=x)


def _check_images(x: Any, cfg: ResNetConfig) -> None:
    shape = np.shape(x)
    if len(shape) != 4:
        raise ValueError(
            f"pixel_values must have shape (batch, height, width, {cfg.num_channels}) (NHWC), got "
            f"shape {shape}"
        )
    if shape[-1] != cfg.num_channels:
        hint = (
            "; it looks like NCHW (PyTorch layout): convert with resnet.nchw_to_nhwc(x)"
            if shape[1] == cfg.num_channels
            else ""
        )
        raise ValueError(
            f"pixel_values must have {cfg.num_channels} channels on the last axis (NHWC), got "
            f"shape {shape}{hint}"
        )
    if min(shape[1], shape[2]) < cfg.total_stride:
        raise ValueError(
            f"images of size {shape[1]}x{shape[2]} are too small for this ResNet: height and width "
            f"must be at least {cfg.total_stride} (the network's total stride; checkpoints are "
            "trained at 224x224)"
        )
    dtype = getattr(x, "dtype", None)
    if dtype is not None and not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(
            f"pixel_values must be floating point, got dtype {dtype}; convert uint8 images with "
            "resnet.preprocess(images)"
        )


def preprocess(
    images: jax.typing.ArrayLike,
    *,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> jax.Array:
    """Normalise NHWC images as the ``microsoft/resnet-*`` checkpoints expect.

    ``uint8`` images are rescaled by 1/255; float images are assumed to be in ``[0, 1]``. Then
    ``(x - mean) / std`` per channel. (Resizing / cropping to 224x224 is left to the caller.)

    Args:
        images: ``(..., H, W, C)`` uint8 or float images.
        mean: per-channel mean.
        std: per-channel standard deviation.

    Returns:
        float32 array of the same shape.

    Examples:
        >>> x = preprocess(jnp.full((1, 2, 2, 3), 255, jnp.uint8))
        >>> bool(jnp.allclose(x[0, 0, 0], (1 - jnp.array(IMAGENET_MEAN)) / jnp.array(IMAGENET_STD)))
        True
    """
    x = jnp.asarray(images)
    if x.dtype == jnp.uint8:
        x = x.astype(jnp.float32) / 255.0
    elif not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"images must be uint8 or floating point, got dtype {x.dtype}")
    mean_a = jnp.asarray(mean, jnp.float32)
    std_a = jnp.asarray(std, jnp.float32)
    if x.shape[-1] != mean_a.shape[0] or std_a.shape != mean_a.shape:
        raise ValueError(
            f"images must be channels-last with {mean_a.shape[0]} channels matching mean/std, got "
            f"shape {x.shape}"
        )
    return (x.astype(jnp.float32) - mean_a) / std_a
