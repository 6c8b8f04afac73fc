"""CLIP with the ModifiedResNet image tower (RN50, RN101, ...): config and modules.

OpenAI's ResNet CLIP models differ from torchvision's ResNet: a three-convolution stem with an
average pool, anti-aliased strided bottlenecks (an average pool before the strided 1x1
convolutions) and a QKV attention pool instead of global average pooling. This module ports that
tower and reuses :class:`~equijax.models.clip.CLIPTextTransformer` for the text tower; its
checkpoints (OpenCLIP format, e.g. ``timm/resnet50_clip.openai``) load with
:func:`equijax.models.clip.from_pretrained` (or :func:`~equijax.models.clip.from_open_clip`),
the name mapping being :func:`~equijax.models.clip.open_clip_to_flax`.

The API mirrors :class:`~equijax.models.clip.CLIP`: ``encode_image(params, images)`` with NHWC
float images, ``encode_text(params, ids)``, ``logits`` and ``zero_shot_logits``. ``params`` is a
Flax variables dict ``{"params": ..., "batch_stats": ...}``; batch norm always runs in inference
mode (running statistics), so take gradients with respect to ``params["params"]`` only.

Examples:
    >>> import jax, jax.numpy as jnp
    >>> model = CLIPResNet(CLIPResNetConfig.tiny())
    >>> params = model.init(jax.random.key(0))
    >>> s = model.config.image_size
    >>> model.encode_image(params, jnp.zeros((2, s, s, 3))).shape
    (2, 16)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from equijax.models._attention import attend
from equijax.models.clip.model import CLIPBase, CLIPTextConfig, _CLIPShell, check_images

__all__ = ["CLIPResNet", "CLIPResNetConfig", "CLIPResNetModule", "ModifiedResNet"]

Params = Any


@dataclasses.dataclass(frozen=True)
class CLIPResNetConfig:
    """OpenCLIP ResNet-CLIP hyper-parameters (``model_cfg`` of ``open_clip_config.json``).

    Attributes:
        embed_dim: joint embedding size (1024 for RN50, 512 for RN101).
        layers: bottleneck blocks per stage (RN50 ``(3, 4, 6, 3)``, RN101 ``(3, 4, 23, 3)``).
        width: stem width (64); the final feature map has ``32 * width`` channels.
        head_width: attention-pool head width (64); heads = ``32 * width // head_width``.
        image_size: input resolution, a multiple of 32.
        text: the text tower (OpenCLIP ``text_cfg``; argmax pooling).
    """

    embed_dim: int = 1024
    layers: tuple[int, int, int, int] = (3, 4, 6, 3)
    width: int = 64
    head_width: int = 64
    image_size: int = 224
    text: CLIPTextConfig = dataclasses.field(
        default_factory=lambda: CLIPTextConfig(pooling="argmax")
    )

    def __post_init__(self):
        if len(self.layers) != 4 or any(int(n) < 1 for n in self.layers):
            raise ValueError(f"layers={self.layers} must be four positive block counts")
        object.__setattr__(self, "layers", tuple(int(n) for n in self.layers))
        if self.image_size % 32:
            raise ValueError(f"image_size={self.image_size} must be a multiple of 32")
        if (32 * self.width) % self.head_width:
            raise ValueError(
                f"32 * width ({32 * self.width}) must be divisible by head_width={self.head_width}"
            )

    @property
    def heads(self) -> int:
        return 32 * self.width // self.head_width

    @classmethod
    def from_open_clip(cls, config: Mapping[str, Any]) -> CLIPResNetConfig:
        """Build from an OpenCLIP model config (``open_clip_config.json`` or its ``model_cfg``).

        ``quick_gelu`` (true for OpenAI's weights) selects the text activation; OpenCLIP's
        default is exact GELU.

        Raises:
            ValueError: missing ``vision_cfg``/``text_cfg``, or a ViT (``patch_size``) config.
        """
        if not isinstance(config, Mapping):
            raise TypeError(f"config must be a mapping, got {type(config).__name__}")
        cfg = config.get("model_cfg", config)
        vision, text = cfg.get("vision_cfg"), cfg.get("text_cfg")
        if not isinstance(vision, Mapping) or not isinstance(text, Mapping):
            raise ValueError(
                "an OpenCLIP config needs 'vision_cfg' and 'text_cfg' objects (optionally under "
                f"'model_cfg'); got keys {sorted(cfg)}"
            )
        if vision.get("patch_size") or not isinstance(vision.get("layers"), list | tuple):
            raise ValueError(
                "this OpenCLIP config describes a ViT image tower, not a ModifiedResNet; load "
                "ViT CLIP models from Hugging Face CLIPModel checkpoints with "
                "equijax.models.clip.from_pretrained"
            )
        width = int(text.get("width", 512))
        text_cfg = CLIPTextConfig(
            vocab_size=int(text.get("vocab_size", 49408)),
            hidden_size=width,
            intermediate_size=int(width * float(text.get("mlp_ratio", 4.0))),
            num_hidden_layers=int(text.get("layers", 12)),
            num_attention_heads=int(text.get("heads", 8)),
            max_position_embeddings=int(text.get("context_length", 77)),
            hidden_act="quick_gelu" if cfg.get("quick_gelu", False) else "gelu",
            pooling="argmax",
        )
        return cls(
            embed_dim=int(cfg["embed_dim"]),
            layers=tuple(int(n) for n in vision["layers"]),
            width=int(vision.get("width", 64)),
            head_width=int(vision.get("head_width", 64)),
            image_size=int(vision.get("image_size", 224)),
            text=text_cfg,
        )

    @classmethod
    def tiny(cls) -> CLIPResNetConfig:
        """A small config for tests and doctests."""
        text = CLIPTextConfig(
            vocab_size=64, hidden_size=16, intermediate_size=64, num_hidden_layers=1,
            num_attention_heads=2, max_position_embeddings=8, pooling="argmax",
        )  # fmt: skip
        return cls(embed_dim=16, layers=(1, 1, 1, 1), width=8, head_width=8, image_size=64,
                   text=text)  # fmt: skip


def _bn(name: str) -> nn.BatchNorm:
    return nn.BatchNorm(use_running_average=True, momentum=0.9, epsilon=1e-5, name=name)


def _avg_pool(x: jax.Array, k: int) -> jax.Array:
    return nn.avg_pool(x, (k, k), strides=(k, k), padding="VALID") if k > 1 else x


class _Bottleneck(nn.Module):
    planes: int
    stride: int = 1
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        out_ch = 4 * self.planes

        def conv(features: int, k: int, name: str) -> nn.Conv:
            pad = ((k // 2, k // 2), (k // 2, k // 2))
            return nn.Conv(features, (k, k), padding=pad, use_bias=False, dtype=self.dtype,
                           name=name)  # fmt: skip

        out = nn.relu(_bn("bn1")(conv(self.planes, 1, "conv1")(x)))
        out = nn.relu(_bn("bn2")(conv(self.planes, 3, "conv2")(out)))
        out = _avg_pool(out, self.stride)
        out = _bn("bn3")(conv(out_ch, 1, "conv3")(out))
        identity = x
        if self.stride > 1 or x.shape[-1] != out_ch:
            identity = _avg_pool(x, self.stride)
            identity = _bn("downsample_1")(conv(out_ch, 1, "downsample_0")(identity))
        return nn.relu(out + identity)


class _AttentionPool2d(nn.Module):
    spatial: int
    embed_dim: int
    num_heads: int
    output_dim: int
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, h, w, c = x.shape
        x = x.reshape(b, h * w, c)
        x = jnp.concatenate([x.mean(axis=1, keepdims=True), x], axis=1)  # (B, HW+1, C)
        pos = self.param(
            "positional_embedding", nn.initializers.normal(self.embed_dim**-0.5),
            (self.spatial**2 + 1, self.embed_dim),
        )  # fmt: skip
        x = x + pos[None].astype(x.dtype)
        d = self.embed_dim // self.num_heads

        def proj(name: str, inputs: jax.Array) -> jax.Array:
            y = nn.Dense(self.embed_dim, dtype=self.dtype, name=name)(inputs)
            return y.reshape(b, inputs.shape[1], self.num_heads, d)

        q = proj("q_proj", x[:, :1])  # only the mean token's output is used
        out = attend(q, proj("k_proj", x), proj("v_proj", x)).reshape(b, self.embed_dim)
        return nn.Dense(self.output_dim, dtype=self.dtype, name="c_proj")(out)


class ModifiedResNet(nn.Module):
    """OpenAI's ModifiedResNet image tower: NHWC images ``(B, S, S, 3)`` -> ``(B, embed_dim)``."""

    config: CLIPResNetConfig
    dtype: Any = None

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        c = self.config
        x = check_images(images, c.image_size, 3)
        w = c.width
        for i, features in enumerate((w // 2, w // 2, w), start=1):
            stride = 2 if i == 1 else 1
            x = nn.Conv(features, (3, 3), strides=(stride, stride), padding=((1, 1), (1, 1)),
                        use_bias=False, dtype=self.dtype, name=f"conv{i}")(x)  # fmt: skip
            x = nn.relu(_bn(f"bn{i}")(x))
        x = _avg_pool(x, 2)
        for stage, blocks in enumerate(c.layers):
            planes = w * 2**stage
            for j in range(blocks):
                stride = 2 if (stage > 0 and j == 0) else 1
                x = _Bottleneck(planes, stride, self.dtype, name=f"layer{stage + 1}_{j}")(x)
        return _AttentionPool2d(
            c.image_size // 32, 32 * w, c.heads, c.embed_dim, self.dtype, name="attnpool"
        )(x)


_LOGIT_SCALE_INIT = float(np.log(1 / 0.07))  # OpenAI's initial temperature 0.07


class CLIPResNetModule(_CLIPShell):
    """Flax linen shell: ``visual`` (ModifiedResNet), ``text_model``, ``text_projection``,
    ``logit_scale``. Prefer the functional wrapper :class:`CLIPResNet`."""

    config: CLIPResNetConfig
    dtype: Any = None

    def setup(self):
        c = self.config
        self.visual = ModifiedResNet(c, self.dtype)
        self._setup_text(c.text, c.embed_dim, _LOGIT_SCALE_INIT)

    def encode_image(self, images: jax.Array) -> jax.Array:
        return self.visual(images)


@dataclasses.dataclass(frozen=True)
class CLIPResNet(CLIPBase):
    """Functional ResNet CLIP: static config plus pure ``(params, inputs)`` methods.

    Same methods and shapes as :class:`~equijax.models.clip.CLIP` (both are
    :class:`equijax.models.clip.CLIPBase`); ``params`` holds ``"params"`` and ``"batch_stats"``
    (batch norm in inference mode).
    """

    config: CLIPResNetConfig
    dtype: Any = None
    module_class: ClassVar[type[nn.Module]] = CLIPResNetModule
    num_channels: ClassVar[int] = 3
    logit_scale_init: ClassVar[float] = _LOGIT_SCALE_INIT

    @property
    def image_size(self) -> int:
        return self.config.image_size

    @property
    def embed_dim(self) -> int:
        """Joint embedding size (``config.embed_dim``)."""
        return self.config.embed_dim
