"""GPT-2 checkpoints: the HF name-mapping rule and :func:`from_pretrained`."""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from equijax.models import _convert, _load
from equijax.models.gpt2.model import GPT2Config, GPT2LMHeadModel

__all__ = ["convert_state_dict", "from_pretrained"]

_PT_BLOCK = re.compile(r"^h\.(\d+)\.(.*)$")
_IGNORED = re.compile(r"^h\.\d+\.attn\.(bias|masked_bias)$")  # causal-mask buffers


def convert_state_dict(
    state_dict: Mapping[str, np.ndarray], config: GPT2Config
) -> dict[tuple[str, ...], np.ndarray]:
    """Map HF GPT-2 weight names/layouts (PyTorch or HF-Flax) to this port's param paths.

    ``transformer.`` prefixes are stripped; the causal-mask buffers ``attn.bias`` /
    ``attn.masked_bias`` are dropped, and so is ``lm_head.weight`` when the embeddings are tied.
    PyTorch ``Conv1D`` weights are already ``(in, out)``; HF-Flax ``kernel`` s are ``(out, in)`` and
    are transposed.

    Layout rules are the shared ones of :func:`equijax.models._convert.convert`.

    Returns:
        dict from param paths to arrays; unknown names are kept under their own name so that
        :func:`~equijax.models._convert.assign` reports them.
    """
    return _convert.convert(
        state_dict, functools.partial(_gpt2_rule, tied=config.tie_word_embeddings),
        collections=False,
    )  # fmt: skip


def _gpt2_rule(name: str, *, tied: bool) -> _convert.Target | str | None:
    """HF GPT-2 tensor name -> owning Flax module (see :mod:`equijax.models._convert`)."""
    key = name.removeprefix("transformer.")
    if _IGNORED.match(key):
        return _convert.DROP
    if key in ("lm_head.weight", "lm_head.kernel"):
        return _convert.DROP if tied else _convert.Target("linear", ("lm_head",))
    m = _PT_BLOCK.match(key)
    parts = (f"h_{m.group(1)}", *m.group(2).split(".")) if m else tuple(key.split("."))
    mods = parts[:-1]
    if not mods or (not m and parts[0] not in ("wte", "wpe", "ln_f")):
        return None
    if mods in (("wte",), ("wpe",)):
        return _convert.Target("embedding", mods)
    if mods[-1].startswith("ln_"):
        return _convert.Target("norm", mods)
    return _convert.Target("conv1d", mods)  # HF Conv1D: (in, out); HF-Flax kernel: (out, in)


def _template(model: GPT2LMHeadModel) -> dict:
    ids = jax.ShapeDtypeStruct((1, 1), jnp.int32)
    return jax.eval_shape(lambda x: model.init(jax.random.key(0), x), ids)["params"]


#: Hugging Face ``GPT2LMHeadModel`` checkpoints (safetensors or HF-Flax msgpack).
_FAMILY = _load.Family(
    config=lambda raw, name_or_path: GPT2Config.from_hf(raw),
    build=lambda config, dtype, compute_dtype: GPT2LMHeadModel(
        config, dtype=compute_dtype or dtype, param_dtype=dtype
    ),
    template=_template,
    convert=convert_state_dict,
    download=("*.json", "*.safetensors", "*.msgpack", "merges.txt", "vocab.json"),
    msgpack_fallback=False,
    params_only=True,
)


def from_pretrained(
    name_or_path: str | os.PathLike,
    *,
    dtype: Any = None,
    compute_dtype: Any = None,
) -> tuple[GPT2LMHeadModel, dict[str, Any]]:
    """Load an HF GPT-2 checkpoint (hub id such as ``"gpt2"`` or a local directory).

    Args:
        name_or_path: hub id (``gpt2``, ``gpt2-medium``, ``distilgpt2``...) or a directory
            written by ``save_pretrained``.
        dtype: parameter and computation dtype (``None``: float32), as for every port (see
            :mod:`equijax.models`).
        compute_dtype: computation dtype if it should differ from ``dtype``; logits are float32.

    Returns:
        ``(model, variables)`` with ``variables = {"params": ...}``, the contract of every
        family: ``model.apply(variables, ids)``; the decoding functions of
        :mod:`equijax.models.gpt2` take ``variables["params"]``.

    Raises:
        OSError: if the id can be neither found locally nor downloaded.
        FileNotFoundError: if the directory holds no supported checkpoint file.
        CheckpointMismatchError: if the weights do not fit the config.
    """
    return _load.load_pretrained(
        _FAMILY,
        name_or_path,
        dtype=jnp.float32 if dtype is None else dtype,
        compute_dtype=compute_dtype,
    )
