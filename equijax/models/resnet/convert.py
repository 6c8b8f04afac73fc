"""ResNet checkpoints: the HF name-mapping rule and :func:`from_pretrained`."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from equijax.models import _convert, _load
from equijax.models.resnet.model import ResNet, ResNetConfig

__all__ = ["convert_state_dict", "from_pretrained", "load_variables"]


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
