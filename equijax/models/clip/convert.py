"""Loading CLIP checkpoints: the name mappings and :func:`from_pretrained`.

Two checkpoint formats, one family: Hugging Face ``CLIPModel`` (``config.json`` +
``model.safetensors`` or HF-Flax ``flax_model.msgpack``; ViT image towers) into
:class:`~equijax.models.clip.CLIP`, and OpenCLIP (``open_clip_config.json`` +
``open_clip_model.safetensors``; the ModifiedResNet towers RN50, RN101) into
:class:`~equijax.models.clip.CLIPResNet`. Only the name mappings (:func:`hf_to_flax`,
:func:`open_clip_to_flax`) and config mappings live here; the loading sequence is the shared
one of :func:`equijax.models._load.load_pretrained`, the layout rules those of
:mod:`equijax.models._convert`.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from equijax.models import _convert, _load
from equijax.models.clip.model import CLIP, CLIPConfig
from equijax.models.clip.resnet import CLIPResNet, CLIPResNetConfig

__all__ = ["from_open_clip", "from_pretrained", "hf_to_flax", "is_open_clip", "open_clip_to_flax"]

Params = Any


_LAYER_NORMS = {
    "layer_norm1", "layer_norm2", "final_layer_norm", "pre_layrnorm", "post_layernorm",
}  # fmt: skip
_EMBEDDINGS = {"token_embedding", "position_embedding"}
_DROPPED_SUFFIXES = ("position_ids",)


def hf_to_flax(state_dict: Mapping[str, np.ndarray]) -> dict[tuple[str, ...], np.ndarray]:
    """Map Hugging Face ``CLIPModel`` tensor names/layouts to this port's Flax paths.

    Linear weights ``(out, in)`` become kernels ``(in, out)``; the patch convolution
    ``(O, I, kh, kw)`` becomes ``(kh, kw, I, O)``; layer-norm ``weight`` becomes ``scale``;
    embedding ``weight`` becomes ``embedding``; ``layers.N`` becomes ``layers_N``. Non-persistent
    buffers (``position_ids``) are dropped. Leaves already in Flax layout (``kernel``, ``scale``,
    ``embedding``: the ``flax_model.msgpack`` of ``transformers``' former ``FlaxCLIPModel``, whose
    module names are the same) are kept as they are. Unknown names are kept under their own
    name so that :func:`~equijax.models._convert.assign` reports them as unexpected. The layout
    rules are the shared ones of :func:`equijax.models._convert.convert`; this port adds only its
    names.

    Args:
        state_dict: ``name -> array`` as read from ``model.safetensors``.

    Returns:
        ``("params", ...) -> array``.

    Examples:
        >>> import numpy as np
        >>> out = hf_to_flax({"text_projection.weight": np.zeros((4, 3))})
        >>> out[("params", "text_projection", "kernel")].shape
        (3, 4)
    """
    return _convert.convert(state_dict, _clip_rule)


def _clip_rule(name: str) -> _convert.Target | str | None:
    """HF ``CLIPModel`` tensor name -> owning Flax module (see :mod:`equijax.models._convert`)."""
    if name.endswith(_DROPPED_SUFFIXES):
        return _convert.DROP
    parts = tuple(_convert.join_indices(name, "layers").split("."))
    mods, leaf = parts[:-1], parts[-1]
    if leaf in ("logit_scale", "class_embedding"):
        return _convert.Target("param", parts)
    if not mods:
        return None
    if mods[-1] in _LAYER_NORMS:
        return _convert.Target("norm", mods)
    if mods[-1] in _EMBEDDINGS:
        return _convert.Target("embedding", mods)
    if mods[-1] == "patch_embedding":
        return _convert.Target("conv", mods)
    return _convert.Target("linear", mods)


_OPEN_CLIP_DROPPED = (
    "num_batches_tracked", "attn_mask", "input_resolution", "context_length", "vocab_size",
)  # fmt: skip


def open_clip_to_flax(state_dict: Mapping[str, np.ndarray]) -> dict[tuple[str, ...], np.ndarray]:
    """Map OpenCLIP ResNet-CLIP tensor names/layouts to this port's Flax variable paths.

    ``visual.layerS.J.*`` -> ``visual/layerS_J/*``; ``downsample.0/1`` -> ``downsample_0/1``;
    batch-norm running statistics go to the ``batch_stats`` collection; the fused text attention
    ``in_proj_weight`` is split into ``q/k/v_proj``; convolutions ``(O, I, kh, kw)`` become
    ``(kh, kw, I, O)`` and linear weights are transposed; ``text_projection`` (``(width, D)``,
    used as ``x @ P``) is kept as is. Buffers (``attn_mask``, ``num_batches_tracked``) are
    dropped; unknown names are kept under their own name so that
    :func:`~equijax.models._convert.assign` reports them. Layout rules are the shared ones of
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
    if name.endswith(_OPEN_CLIP_DROPPED):
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


def _hf_config(raw: Mapping[str, Any], name_or_path: str) -> CLIPConfig:
    if raw.get("model_type") not in (None, "clip"):
        raise ValueError(
            f"{name_or_path!r} holds a {raw.get('model_type')!r} model, not 'clip' (OpenCLIP "
            "ResNet checkpoints hold open_clip_config.json: see equijax.models.clip.from_open_clip)"
        )
    return CLIPConfig.from_dict(raw)


def _open_clip_config(
    raw: Mapping[str, Any], name_or_path: str, *, quick_gelu: bool | None = None
) -> CLIPResNetConfig:
    config = CLIPResNetConfig.from_open_clip(raw)
    model_cfg = raw.get("model_cfg", raw)
    if quick_gelu is None and "quick_gelu" not in model_cfg:
        quick_gelu = True if "openai" in name_or_path.lower() else None
    if quick_gelu is not None:
        act = "quick_gelu" if quick_gelu else "gelu"
        config = dataclasses.replace(config, text=dataclasses.replace(config.text, hidden_act=act))
    return config


#: Hugging Face ``CLIPModel`` checkpoints (ViT towers).
_HF_CLIP = _load.Family(
    config=_hf_config,
    build=lambda config, dtype, compute_dtype: CLIP(config, dtype=dtype),
    template=lambda model: model.param_template(),
    convert=lambda state, config: hf_to_flax(state),
    download=("config.json", "model*.safetensors", "model.safetensors.index.json"),
)
#: OpenCLIP checkpoints of the ModifiedResNet towers (``timm/resnet50_clip.openai``, ...).
_OPEN_CLIP = _load.Family(
    config=_open_clip_config,
    build=lambda config, dtype, compute_dtype: CLIPResNet(config, dtype=dtype),
    template=lambda model: model.param_template(),
    convert=lambda state, config: open_clip_to_flax(state),
    config_file="open_clip_config.json",
    weight_files=("open_clip_model.safetensors", "open_clip_model.safetensors.index.json"),
    download=("open_clip_config.json", "open_clip_model*.safetensors*"),
    msgpack_fallback=False,
)


def is_open_clip(name_or_path: str | os.PathLike) -> bool:
    """Whether ``name_or_path`` names an OpenCLIP checkpoint (read by :func:`from_open_clip`).

    A local directory holding ``open_clip_config.json``, or a ``timm/*_clip.*`` hub id.

    Examples:
        >>> is_open_clip("timm/resnet50_clip.openai"), is_open_clip("openai/clip-vit-base-patch32")
        (True, False)
    """
    local = pathlib.Path(name_or_path).expanduser()
    if local.is_dir():
        return (local / "open_clip_config.json").is_file()
    ident = os.fspath(name_or_path)
    return ident.startswith("timm/") and "_clip." in ident


def from_pretrained(
    name_or_path: str | os.PathLike, *, dtype: Any = None, quick_gelu: bool | None = None
) -> tuple[CLIP | CLIPResNet, Params]:
    """Load a CLIP checkpoint: Hugging Face ``CLIPModel`` or OpenCLIP ResNet (hub id or directory).

    ``model, variables = clip.from_pretrained(name_or_path)``, the shape of every family. An
    OpenCLIP checkpoint (:func:`is_open_clip`) loads as :class:`~equijax.models.clip.CLIPResNet`
    (as :func:`from_open_clip`); anything else as a Hugging Face ``CLIPModel`` into
    :class:`~equijax.models.clip.CLIP`, from ``config.json`` and ``model.safetensors`` (or a
    sharded index, or ``flax_model.msgpack``) -- never a pickle -- checking every name and shape.

    Args:
        name_or_path: e.g. ``"openai/clip-vit-base-patch32"`` or ``"timm/resnet50_clip.openai"``
            (fetched via ``huggingface_hub``, honouring its cache and ``HF_HUB_OFFLINE``) or a
            directory written by ``CLIPModel.save_pretrained`` / OpenCLIP.
        dtype: cast floating parameters (and computation) to this dtype, e.g. ``jnp.bfloat16``;
            default float32.
        quick_gelu: OpenCLIP checkpoints only: see :func:`from_open_clip`.

    Returns:
        ``(model, variables)``: the functional :class:`~equijax.models.clip.CLIP` (or
        :class:`~equijax.models.clip.CLIPResNet`) and its variables dict.

    Raises:
        FileNotFoundError: no ``config.json`` or no checkpoint file in the directory.
        OSError: not a directory and the hub download failed.
        ValueError: ``config.json`` describes another model type, or ``quick_gelu`` is given for
            a Hugging Face checkpoint.
        equijax.models._convert.CheckpointMismatchError: missing / unexpected / mis-shaped
            tensors.

    Examples:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     try:
        ...         from_pretrained(d)
        ...     except FileNotFoundError as err:
        ...         print("config.json" in str(err))
        True
    """
    if is_open_clip(name_or_path):
        return from_open_clip(name_or_path, dtype=dtype, quick_gelu=quick_gelu)
    if quick_gelu is not None:
        raise ValueError(
            "quick_gelu applies to OpenCLIP checkpoints only; a Hugging Face CLIPModel's "
            "config.json names its activation (hidden_act)"
        )
    return _load.load_pretrained(_HF_CLIP, name_or_path, dtype=dtype)


def from_open_clip(
    name_or_path: str | os.PathLike, *, dtype: Any = None, quick_gelu: bool | None = None
) -> tuple[CLIPResNet, Params]:
    """Load an OpenCLIP ResNet-CLIP checkpoint (hub id or local directory).

    Reads ``open_clip_config.json`` and ``open_clip_model.safetensors`` (never a pickle) and
    checks every name and shape. (The ``model.safetensors`` of the ``timm/*_clip.openai`` repos
    is a *timm* image-tower-only checkpoint and is not read.)

    Args:
        name_or_path: e.g. ``"timm/resnet50_clip.openai"`` or ``"timm/resnet101_clip.openai"``
            (via ``huggingface_hub``, honouring its cache and ``HF_HUB_OFFLINE``), or a local
            directory with those two files.
        dtype: cast floating parameters (and computation) to this dtype; default float32.
        quick_gelu: text-tower activation override. ``None``: the config's ``quick_gelu`` flag;
            if the config has none and ``name_or_path`` contains ``"openai"``, QuickGELU (OpenAI
            trained with it; early snapshots of the ``timm/*_clip.openai`` repos lack the flag).

    Returns:
        ``(model, variables)`` with ``variables = {"params": ..., "batch_stats": ...}``.

    Raises:
        FileNotFoundError: no ``open_clip_config.json`` or no ``open_clip_model.safetensors``.
        equijax.models._convert.CheckpointMismatchError: missing / unexpected / mis-shaped
            tensors.

    Examples:
        >>> import tempfile
        >>> from equijax.models import testing
        >>> with tempfile.TemporaryDirectory() as d:
        ...     model, variables = from_open_clip(testing.write_tiny_random_clip_resnet(d))
        >>> model.config.layers, sorted(variables)
        ((1, 1, 1, 1), ['batch_stats', 'params'])
    """
    return _load.load_pretrained(_OPEN_CLIP, name_or_path, dtype=dtype, quick_gelu=quick_gelu)
