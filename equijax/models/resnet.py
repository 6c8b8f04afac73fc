"""ResNet (Hugging Face ``microsoft/resnet-*``) in Flax linen, loading HF checkpoints.

A faithful port of ``transformers``' ``ResNetForImageClassification`` (basic blocks for
ResNet-18/34, bottleneck blocks for ResNet-50/101/152) operating on **NHWC** images (use
:func:`nchw_to_nhwc` for PyTorch-layout arrays). Parameter names mirror the PyTorch module tree, so
checkpoints load by name with shape checks (:class:`~equijax.models.CheckpointMismatchError`).

BatchNorm runs in inference mode (running statistics) by default; pass ``train=True`` and
``mutable=["batch_stats"]`` to use and update batch statistics when finetuning.

Usage::

    from equijax.models import resnet
    model, variables = resnet.from_pretrained("microsoft/resnet-50")   # or a local directory
    images = resnet.preprocess(uint8_images_nhwc)                      # ImageNet normalisation
    out = model.apply(variables, images)     # ResNetOutput(logits, pooled, last_hidden_state)
    # pure function of (variables, images): jit / grad / equitune all work
    logits_fn = lambda v, x: model.apply(v, x).logits
    y = ej.equitune(lambda x: logits_fn(variables, x), ej.groups.rot90(), images)

Examples:
    >>> import jax, jax.numpy as jnp
    >>> cfg = ResNetConfig(embedding_size=4, hidden_sizes=(8,), depths=(1,),
    ...                    layer_type="basic", num_labels=5)
    >>> model = ResNet(cfg)
    >>> x = jnp.zeros((2, 16, 16, 3))
    >>> variables = jax.jit(model.init)(jax.random.key(0), x)
    >>> out = jax.jit(model.apply)(variables, x)
    >>> out.logits.shape, out.pooled.shape, out.last_hidden_state.shape
    ((2, 5), (2, 8), (2, 4, 4, 8))
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from equijax.models import _convert, _load
from equijax.models._activations import ACTIVATIONS, check_activation
from equijax.models.preprocess import nchw_to_nhwc

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ResNet",
    "ResNetConfig",
    "ResNetOutput",
    "convert_state_dict",
    "from_pretrained",
    "load_variables",
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


_PT_LAYER = re.compile(r"^encoder\.stages\.(\d+)\.layers\.(\d+)\.(.*)$")


def convert_state_dict(state_dict: Mapping[str, np.ndarray]) -> dict[tuple[str, ...], np.ndarray]:
    """Map HF ResNet weight names/layouts (PyTorch or HF-Flax) to Flax variable paths.

    ``resnet.`` prefixes are stripped, ``num_batches_tracked`` dropped, conv kernels transposed
    from ``(O, I, kh, kw)`` to ``(kh, kw, I, O)`` and linear weights from ``(O, I)`` to ``(I, O)``.
    BatchNorm ``running_mean/var`` go to the ``batch_stats`` collection. HF-Flax names
    (``flax_model.msgpack`` of ``FlaxResNetForImageClassification``: ``params.``/``batch_stats.``
    prefixes, ``kernel``/``scale``/``mean``/``var`` leaves; basic blocks nested as
    ``layers.J.layer.layer.K``) map to the same paths. Layout rules
    are the shared ones of :func:`equijax.models._convert.convert`.

    Args:
        state_dict: flat ``name -> array`` dict (as from
            :func:`~equijax.models.read_state_dict`).

    Returns:
        dict from ``(collection, module, ..., leaf)`` tuples to arrays. Names that do not fit the
        HF ResNet layout are kept under their own name so that
        :func:`~equijax.models._convert.assign` reports them.
    """
    return _convert.convert(state_dict, _resnet_rule)


def _resnet_rule(name: str) -> _convert.Target | None:
    """HF ResNet tensor name -> owning Flax module (see :mod:`equijax.models._convert`)."""
    key = name.removeprefix("resnet.")
    m = _PT_LAYER.match(key)
    if m:
        # transformers 4.x's Flax basic block nests its convolutions one level deeper
        # (``layer.layer.K``) than its bottleneck block and PyTorch (``layer.K``): read both.
        inner = m.group(3)
        inner = inner.removeprefix("layer.") if inner.startswith("layer.layer.") else inner
        rest = _convert.join_indices(inner, "layer").split(".")[:-1]
        mods = (f"stages_{m.group(1)}_layers_{m.group(2)}", *rest)
    elif key.startswith("embedder.embedder."):
        mods = ("embedder", *key.removeprefix("embedder.embedder.").split(".")[:-1])
    elif key.startswith("classifier.1."):
        return _convert.Target("linear", ("classifier",))
    else:
        return None
    kind = {"convolution": "conv", "normalization": "norm"}.get(mods[-1])
    return _convert.Target(kind, mods) if kind else None


def _template(model: ResNet) -> dict:
    cfg = model.config
    size = max(cfg.total_stride, 32)
    dummy = jax.ShapeDtypeStruct((1, size, size, cfg.num_channels), jnp.float32)
    return jax.eval_shape(lambda x: model.init(jax.random.key(0), x), dummy)


#: Hugging Face ``ResNetForImageClassification`` checkpoints (safetensors or HF-Flax msgpack).
_FAMILY = _load.Family(
    config=lambda raw, name_or_path: ResNetConfig.from_hf(raw),
    build=lambda config, dtype, compute_dtype: ResNet(
        config, dtype=compute_dtype or dtype, param_dtype=dtype
    ),
    template=_template,
    convert=lambda state_dict, config: convert_state_dict(state_dict),
)


def load_variables(
    model: ResNet, state_dict: Mapping[str, np.ndarray], *, dtype: Any = None, context: str = ""
) -> dict:
    """Build ``{"params", "batch_stats"}`` for ``model`` from an HF ResNet state dict.

    Raises:
        CheckpointMismatchError: listing missing / unexpected / mis-shaped weights.
    """
    converted = convert_state_dict(state_dict)
    return _convert.assign(_template(model), converted, dtype=dtype, context=context)


def from_pretrained(
    name_or_path: str | os.PathLike,
    *,
    dtype: Any = None,
    compute_dtype: Any = None,
) -> tuple[ResNet, dict]:
    """Load an HF ResNet checkpoint (hub id such as ``"microsoft/resnet-50"`` or local directory).

    Reads ``config.json`` and ``model.safetensors`` (or a sharded ``model.safetensors.index.json``,
    or the HF-Flax ``flax_model.msgpack`` of ``FlaxResNetForImageClassification``); never PyTorch
    pickles. Follows the contract of :mod:`equijax.models`.

    Args:
        name_or_path: hub id or directory written by ``save_pretrained``.
        dtype: parameter and computation dtype (``None``: float32; ``jnp.bfloat16`` halves
            memory).
        compute_dtype: computation dtype of the returned module if it should differ from
            ``dtype``.

    Returns:
        ``(model, variables)`` where ``variables = {"params": ..., "batch_stats": ...}``; call
        ``model.apply(variables, images_nhwc)``.

    Raises:
        OSError: if the id can be neither found locally nor downloaded.
        FileNotFoundError: if the directory holds no supported checkpoint file.
        CheckpointMismatchError: if the weights do not fit the config.

    Examples:
        >>> import tempfile, json, pathlib
        >>> from safetensors.numpy import save_file
        >>> with tempfile.TemporaryDirectory() as d:
        ...     cfg = {"depths": [1], "hidden_sizes": [8], "embedding_size": 8}
        ...     _ = pathlib.Path(d, "config.json").write_text(json.dumps(cfg))
        ...     save_file({"classifier.1.bias": np.zeros(3, np.float32)}, f"{d}/model.safetensors")
        ...     from_pretrained(d)  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        CheckpointMismatchError: checkpoint does not match the model...
    """
    return _load.load_pretrained(
        _FAMILY,
        name_or_path,
        dtype=jnp.float32 if dtype is None else dtype,
        compute_dtype=compute_dtype,
    )
