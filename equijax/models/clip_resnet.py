"""CLIP with the ModifiedResNet image tower (RN50, RN101, ...) in Flax, from OpenCLIP checkpoints.

OpenAI's ResNet CLIP models differ from torchvision's ResNet: a three-convolution stem with an
average pool, anti-aliased strided bottlenecks (an average pool before the strided 1x1
convolutions) and a QKV attention pool instead of global average pooling. This module ports that
tower and reuses :class:`equijax.models.clip.CLIPTextTransformer` for the text tower.

Checkpoints are OpenCLIP-format directories, e.g. the hub repos ``timm/resnet50_clip.openai`` /
``timm/resnet101_clip.openai``: ``open_clip_config.json`` (``{"model_cfg": {...}}``) and
``open_clip_model.safetensors`` with OpenCLIP names (``visual.*``, ``transformer.resblocks.*``,
``token_embedding``, ``positional_embedding``, ``ln_final``, ``text_projection``,
``logit_scale``). The ``model.safetensors`` in those repos is a *timm* image-tower-only checkpoint
and is not read.

The API mirrors :class:`equijax.models.clip.CLIP`: ``encode_image(params, images)`` with NHWC
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
import os
from collections.abc import Mapping
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from equijax.models import _convert
from equijax.models._attention import attend
from equijax.models.clip import CLIPBase, CLIPTextConfig, check_images
from equijax.models.clip.model import _CLIPShell

__all__ = [
    "CLIPResNet",
    "CLIPResNetConfig",
    "CLIPResNetModule",
    "ModifiedResNet",
    "from_pretrained",
    "open_clip_to_flax",
    "to_open_clip",
]

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

    Same methods and shapes as :class:`equijax.models.clip.CLIP` (both are
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


_DROPPED = ("num_batches_tracked", "attn_mask", "input_resolution", "context_length", "vocab_size")


def open_clip_to_flax(state_dict: Mapping[str, np.ndarray]) -> dict[tuple[str, ...], np.ndarray]:
    """Map OpenCLIP ResNet-CLIP tensor names/layouts to this port's Flax variable paths.

    ``visual.layerS.J.*`` -> ``visual/layerS_J/*``; ``downsample.0/1`` -> ``downsample_0/1``;
    batch-norm running statistics go to the ``batch_stats`` collection; the fused text attention
    ``in_proj_weight`` is split into ``q/k/v_proj``; convolutions ``(O, I, kh, kw)`` become
    ``(kh, kw, I, O)`` and linear weights are transposed; ``text_projection`` (``(width, D)``,
    used as ``x @ P``) is kept as is. Buffers (``attn_mask``, ``num_batches_tracked``) are
    dropped; unknown names are kept under their own name so that
    :func:`equijax.models._hub.assign` reports them. Layout rules are the shared ones of
    :func:`equijax.models._convert.convert`; this port adds only its names.

    Args:
        state_dict: ``name -> array`` from ``open_clip_model.safetensors``.

    Returns:
        ``(collection, ...) -> array``.

    Examples:
        >>> import numpy as np
        >>> out = open_clip_to_flax({"visual.bn1.running_var": np.ones(4)})
        >>> list(out)
        [('batch_stats', 'visual', 'bn1', 'var')]
    """
    split: dict[str, np.ndarray] = {}
    for name, value in state_dict.items():
        stem, _, leaf = name.rpartition(".")
        if stem.endswith(".attn") and leaf in ("in_proj_weight", "in_proj_bias"):
            kind = "weight" if leaf == "in_proj_weight" else "bias"
            for proj, chunk in zip(("q_proj", "k_proj", "v_proj"), np.split(np.asarray(value), 3),
                                   strict=True):  # fmt: skip
                split[f"{stem}.{proj}.{kind}"] = chunk
        else:
            split[name] = value
    return _convert.convert(split, _open_clip_rule)


_VISUAL_LISTS = ("layer1", "layer2", "layer3", "layer4", "downsample")
_TEXT_BLOCK_MODULES = {
    "ln_1": ("layer_norm1",), "ln_2": ("layer_norm2",), "attn.out_proj": ("self_attn", "out_proj"),
    "attn.q_proj": ("self_attn", "q_proj"), "attn.k_proj": ("self_attn", "k_proj"),
    "attn.v_proj": ("self_attn", "v_proj"), "mlp.c_fc": ("mlp", "fc1"),
    "mlp.c_proj": ("mlp", "fc2"),
}  # fmt: skip


def _open_clip_rule(name: str) -> _convert.Target | str | None:
    """OpenCLIP tensor name -> owning Flax module (see :mod:`equijax.models._convert`)."""
    Target = _convert.Target
    if name.endswith(_DROPPED):
        return _convert.DROP
    parts = tuple(name.split("."))
    text = ("text_model",)
    if parts[0] == "visual":
        mods = tuple(_convert.join_indices(name, *_VISUAL_LISTS).split("."))[:-1]
        if parts[-1] == "positional_embedding":
            return Target("param", (*mods, "positional_embedding"))
        owner = mods[-1] if len(mods) > 1 else ""
        if owner.startswith("bn") or owner == "downsample_1":
            return Target("norm", mods)
        if owner.startswith("conv") or owner == "downsample_0":
            return Target("conv", mods)
        return Target("linear", mods) if owner else None
    if name == "token_embedding.weight":
        return Target("embedding", (*text, "embeddings", "token_embedding"))
    if name == "positional_embedding":
        return Target("param", (*text, "embeddings", "position_embedding", "embedding"))
    if parts[0] == "ln_final":
        return Target("norm", (*text, "final_layer_norm"))
    if name == "text_projection":  # (width, D), used as x @ P: already a Flax kernel
        return Target("param", ("text_projection", "kernel"))
    if name == "logit_scale":
        return Target("param", ("logit_scale",))
    if parts[:2] == ("transformer", "resblocks") and len(parts) >= 5:
        module = _TEXT_BLOCK_MODULES.get(".".join(parts[3:-1]))
        if module is None:
            return None
        layer = (*text, "encoder", f"layers_{parts[2]}")
        kind = "norm" if module[0].startswith("layer_norm") else "linear"
        return Target(kind, (*layer, *module))
    return None


_TEXT_BLOCK_NAMES = {v: k for k, v in _TEXT_BLOCK_MODULES.items()}
_FLAX_TO_TORCH_LEAF = {
    "scale": "weight",
    "bias": "bias",
    "mean": "running_mean",
    "var": "running_var",
}


def to_open_clip(params: Params) -> dict[str, np.ndarray]:
    """The inverse of :func:`open_clip_to_flax`: variables -> OpenCLIP ``state_dict`` arrays.

    Used to write OpenCLIP-format checkpoints without torch (e.g.
    :func:`equijax.models.testing.write_tiny_random_clip_resnet`); the fused text attention
    projection is re-assembled as ``in_proj_weight`` / ``in_proj_bias``.

    Args:
        params: variables ``{"params": ..., "batch_stats": ...}`` of a :class:`CLIPResNet`.

    Returns:
        ``name -> float32 array`` with OpenCLIP names and PyTorch layouts.

    Examples:
        >>> import jax
        >>> model = CLIPResNet(CLIPResNetConfig.tiny())
        >>> state = to_open_clip(model.init(jax.random.key(0)))
        >>> state["visual.conv1.weight"].shape, state["text_projection"].shape
        ((4, 3, 3, 3), (16, 16))
    """
    from equijax.models import _hub

    out: dict[str, np.ndarray] = {}
    fused: dict[str, dict[str, np.ndarray]] = {}
    for key, value in _hub.flatten_params(params).items():
        value = np.array(value, np.float32, order="C")  # keeps 0-d arrays 0-d
        collection, *mods, leaf = key.split(".")
        if mods and mods[0] == "visual":
            names = []
            for m in mods:
                head, _, idx = m.rpartition("_")
                names.append(f"{head}.{idx}" if idx.isdigit() and head else m)
            stem = ".".join(names)
            owner = mods[-1]
            if collection == "batch_stats" or owner.startswith("bn") or owner == "downsample_1":
                out[f"{stem}.{_FLAX_TO_TORCH_LEAF[leaf]}"] = value
            elif leaf == "kernel":
                w = value.transpose(3, 2, 0, 1) if value.ndim == 4 else value.T
                out[f"{stem}.weight"] = np.ascontiguousarray(w)
            else:
                out[f"{stem}.{leaf}"] = value
        elif mods[:1] == ["text_model"]:
            rest = mods[1:]
            if rest == ["embeddings", "token_embedding"]:
                out["token_embedding.weight"] = value
            elif rest == ["embeddings", "position_embedding"]:
                out["positional_embedding"] = value
            elif rest == ["final_layer_norm"]:
                out[f"ln_final.{_FLAX_TO_TORCH_LEAF[leaf]}"] = value
            else:  # encoder / layers_N / module...
                layer = rest[1].removeprefix("layers_")
                prefix = f"transformer.resblocks.{layer}"
                module = tuple(rest[2:])
                if module in (("self_attn", p) for p in ("q_proj", "k_proj", "v_proj")):
                    fused.setdefault(f"{prefix}.attn.in_proj_{leaf}", {})[module[1]] = value
                    continue
                name = _TEXT_BLOCK_NAMES[module]
                if leaf == "kernel":
                    out[f"{prefix}.{name}.weight"] = np.ascontiguousarray(value.T)
                else:
                    out[f"{prefix}.{name}.{_FLAX_TO_TORCH_LEAF.get(leaf, leaf)}"] = value
        elif mods == ["text_projection"]:
            out["text_projection"] = value
        else:
            out[".".join([*mods, leaf])] = value
    for name, parts in fused.items():
        qkv = [parts[p] for p in ("q_proj", "k_proj", "v_proj")]
        if name.endswith("kernel"):
            out[name.replace("in_proj_kernel", "in_proj_weight")] = np.concatenate(
                [q.T for q in qkv]
            )
        else:
            out[name] = np.concatenate(qkv)
    # C order for every array (safetensors writes raw buffers; 0-d arrays stay 0-d)
    return {k: np.array(v, np.float32, order="C") for k, v in out.items()}


_CONFIG_FILES = ("open_clip_config.json",)
_WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_model.safetensors.index.json")


def from_pretrained(
    name_or_path: str | os.PathLike, *, dtype: Any = None, quick_gelu: bool | None = None
) -> tuple[CLIPResNet, Params]:
    """Load an OpenCLIP ResNet-CLIP checkpoint (hub id or local directory).

    Reads ``open_clip_config.json`` and ``open_clip_model.safetensors`` (never a pickle) and
    checks every name and shape.

    Args:
        name_or_path: e.g. ``"timm/resnet50_clip.openai"`` or ``"timm/resnet101_clip.openai"``
            (via ``huggingface_hub``, honouring its cache and ``HF_HUB_OFFLINE``), or a local
            directory with those two files.
        dtype: cast floating parameters (and computation) to this dtype; default float32.
        quick_gelu: text-tower activation override. ``None``: the config's ``quick_gelu`` flag;
            if the config has none and ``name_or_path`` contains ``"openai"``, QuickGELU (OpenAI
            trained with it; early snapshots of the ``timm/*_clip.openai`` repos lack the flag).

    Returns:
        ``(model, params)``.

    Raises:
        FileNotFoundError: no ``open_clip_config.json`` or no ``open_clip_model.safetensors``.
        equijax.models._hub.CheckpointMismatchError: missing / unexpected / mis-shaped tensors.

    Examples:
        >>> import pathlib, tempfile
        >>> from equijax.models import testing as tiny
        >>> with tempfile.TemporaryDirectory() as d:
        ...     model, variables = from_pretrained(tiny.write_tiny_random_clip_resnet(d))
        >>> model.config.layers, sorted(variables)
        ((1, 1, 1, 1), ['batch_stats', 'params'])
    """
    import json
    import pathlib

    from equijax.models import _hub

    directory = pathlib.Path(
        _hub.resolve_pretrained(name_or_path, allow_patterns=[*_CONFIG_FILES, *_WEIGHT_FILES])
    )
    config_path = directory / _CONFIG_FILES[0]
    if not config_path.is_file():
        raise FileNotFoundError(
            f"no open_clip_config.json in {str(directory)!r}; an OpenCLIP checkpoint directory "
            "needs it next to open_clip_model.safetensors"
        )
    raw = json.loads(config_path.read_text(encoding="utf-8"))
    config = CLIPResNetConfig.from_open_clip(raw)
    model_cfg = raw.get("model_cfg", raw)
    if quick_gelu is None and "quick_gelu" not in model_cfg:
        quick_gelu = True if "openai" in str(name_or_path).lower() else None
    if quick_gelu is not None:
        act = "quick_gelu" if quick_gelu else "gelu"
        config = dataclasses.replace(config, text=dataclasses.replace(config.text, hidden_act=act))
    model = CLIPResNet(config, dtype=dtype)
    state = _hub.read_state_dict(directory, filenames=_WEIGHT_FILES)
    params = _hub.assign(
        model.param_template(), open_clip_to_flax(state), dtype=dtype, context=str(directory)
    )
    return model, params
