"""Loading Hugging Face ``CLIPModel`` checkpoints into :class:`~equijax.models.clip.CLIP`.

Only this family's name-mapping rule lives here; the layout rules are the shared ones of
:mod:`equijax.models._convert` and the file reading is :mod:`equijax.models._hub`'s.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from equijax.models import _convert, _hub
from equijax.models.clip.model import CLIP, CLIPConfig

__all__ = ["from_pretrained", "hf_to_flax"]

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
    name so that :func:`equijax.models._hub.assign` reports them as unexpected. The layout rules
    are the shared ones of :func:`equijax.models._convert.convert`; this port adds only its names.

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


def from_pretrained(name_or_path: str | os.PathLike, *, dtype: Any = None) -> tuple[CLIP, Params]:
    """Load a Hugging Face ``CLIPModel`` checkpoint (hub id or local directory).

    Reads ``config.json`` and ``model.safetensors`` (or a sharded index, or
    ``flax_model.msgpack``) -- never a pickle -- and checks every name and shape.

    Args:
        name_or_path: e.g. ``"openai/clip-vit-base-patch32"`` (fetched via ``huggingface_hub``,
            honouring its cache and ``HF_HUB_OFFLINE``) or a directory written by
            ``CLIPModel.save_pretrained``.
        dtype: cast floating parameters (and computation) to this dtype, e.g. ``jnp.bfloat16``;
            default float32.

    Returns:
        ``(model, params)``: the functional :class:`CLIP` and its variables dict.

    Raises:
        FileNotFoundError: no ``config.json`` or no checkpoint file in the directory.
        OSError: not a directory and the hub download failed.
        equijax.models._hub.CheckpointMismatchError: missing / unexpected / mis-shaped tensors.

    Examples:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     try:
        ...         from_pretrained(d)
        ...     except FileNotFoundError as err:
        ...         print("config.json" in str(err))
        True
    """
    is_local = pathlib.Path(name_or_path).expanduser().is_dir()
    patterns = ["config.json", "model*.safetensors", "model.safetensors.index.json"]
    directory = _hub.resolve_pretrained(name_or_path, allow_patterns=patterns)
    if not is_local and not any(directory.glob("model*.safetensors")):
        # older hub repos: Flax weights only (never the PyTorch pickle)
        directory = _hub.resolve_pretrained(name_or_path, allow_patterns=[*patterns, "*.msgpack"])
    raw = _hub.read_config(directory)
    if raw.get("model_type") not in (None, "clip"):
        raise ValueError(
            f"{str(name_or_path)!r} holds a {raw.get('model_type')!r} model, not 'clip' "
            "(for OpenCLIP ResNet checkpoints use equijax.models.clip_resnet.from_pretrained)"
        )
    config = CLIPConfig.from_dict(raw)
    model = CLIP(config, dtype=dtype)
    state = _hub.read_state_dict(directory)
    params = _hub.assign(
        model.param_template(), hf_to_flax(state), dtype=dtype, context=str(directory)
    )
    return model, params
