"""The loading sequence of every model family, written once.

resolve -> config -> build -> read -> assign.

A family describes its checkpoints with a :class:`Family` -- which files to read, and hooks for
what differs: the *config mapping* (checkpoint config -> the port's static config), the
*build* (config -> static model), the *template* (model -> variable shapes) and the *name
mapping* (checkpoint tensors -> Flax paths, usually ``_convert.convert(state, rule)`` with the
family's ``rule``). Its ``from_pretrained`` is then one call of :func:`load_pretrained`::

    FAMILY = Family(
        config=lambda raw, name_or_path: MyConfig.from_hf(raw),
        build=lambda config, dtype, compute_dtype: MyModel(config, dtype=compute_dtype or dtype),
        template=lambda model: jax.eval_shape(model.init, jax.random.key(0), dummy_input),
        convert=lambda state_dict, config: _convert.convert(state_dict, my_rule),
    )

    def from_pretrained(name_or_path, *, dtype=None):
        return load_pretrained(FAMILY, name_or_path, dtype=dtype)

Every family shares the steps: :func:`~equijax.models._hub.resolve_pretrained` (hub id or local
directory), :func:`~equijax.models._hub.read_config`, the build,
:func:`~equijax.models._hub.read_state_dict` (safetensors, sharded indexes, HF-Flax msgpack;
never pickle) and :func:`~equijax.models._convert.assign` (every name and shape checked, a
:class:`~equijax.models._convert.CheckpointMismatchError` listing what does not fit).

Examples:
    >>> import json, pathlib, tempfile
    >>> import flax.linen as nn, jax, jax.numpy as jnp, numpy as np
    >>> from safetensors.numpy import save_file
    >>> from equijax.models import _convert
    >>> proj = _convert.Target("linear", ())  # name mapping: every tensor is the Dense layer's
    >>> family = Family(
    ...     config=lambda raw, name_or_path: raw["width"],
    ...     build=lambda width, dtype, compute_dtype: nn.Dense(width),
    ...     template=lambda model: jax.eval_shape(model.init, jax.random.key(0), jnp.ones((1, 3))),
    ...     convert=lambda state, width: _convert.convert(state, lambda name: proj),
    ... )
    >>> with tempfile.TemporaryDirectory() as d:
    ...     _ = pathlib.Path(d, "config.json").write_text(json.dumps({"width": 2}))
    ...     save_file({"proj.weight": np.ones((2, 3), np.float32),
    ...                "proj.bias": np.zeros(2, np.float32)}, f"{d}/model.safetensors")
    ...     model, variables = load_pretrained(family, d)
    >>> variables["params"]["kernel"].shape
    (3, 2)
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from equijax.models import _convert, _hub

__all__ = ["Family", "load_pretrained", "read_variables"]

PyTree = Any


@dataclasses.dataclass(frozen=True)
class Family:
    """What one model family's checkpoints look like: files and per-family hooks.

    Attributes:
        config: config mapping, ``(raw_config_dict, name_or_path, **options) -> config`` (the
            port's static, hashable config); raises ``ValueError`` for checkpoints of another
            kind. ``options`` are the extra keyword arguments of :func:`load_pretrained`.
        build: ``(config, dtype, compute_dtype) -> model`` (static and hashable).
        template: ``model -> variables`` of arrays or ``jax.ShapeDtypeStruct`` (shapes only;
            e.g. ``jax.eval_shape`` of ``model.init``).
        convert: name mapping, ``(state_dict, config) -> {path: array}`` with paths as in
            ``template`` (usually ``_convert.convert(state_dict, rule)``).
        config_file: the config's file name in a checkpoint directory.
        weight_files: the weight files, in order of preference (see
            :func:`~equijax.models._hub.read_state_dict`).
        download: glob patterns fetched from the hub.
        msgpack_fallback: for a hub id without ``model*.safetensors``, fetch the HF-Flax
            ``*.msgpack`` too (older repos ship only Flax weights besides the pickle).
        params_only: ``template`` and ``convert`` describe the ``params`` collection's
            contents; the variables are ``{"params": ...}``.
    """

    config: Callable[..., Any]
    build: Callable[[Any, Any, Any], Any]
    template: Callable[[Any], PyTree]
    convert: Callable[[Mapping[str, np.ndarray], Any], Mapping]
    config_file: str = "config.json"
    weight_files: tuple[str, ...] = _hub.WEIGHT_FILES
    download: tuple[str, ...] = ("*.json", "*.safetensors")
    msgpack_fallback: bool = True
    params_only: bool = False


def read_variables(
    family: Family, directory: str | os.PathLike, model: Any, config: Any, *, dtype: Any = None
) -> dict:
    """Read, convert and assign a checkpoint directory's weights for a built ``model``.

    Args:
        family: the family's :class:`Family`.
        directory: a local checkpoint directory.
        model: the model built from ``config``.
        config: its config (passed to ``family.convert``).
        dtype: cast floating arrays to this dtype (``None``: the template's dtypes).

    Returns:
        The Flax variables dict.

    Raises:
        FileNotFoundError: no weight file of ``family.weight_files``.
        CheckpointMismatchError: names or shapes that do not fit the template.
    """
    state = _hub.read_state_dict(directory, filenames=family.weight_files)
    variables = _convert.assign(
        family.template(model), family.convert(state, config), dtype=dtype, context=str(directory)
    )
    return {"params": variables} if family.params_only else variables


def load_pretrained(
    family: Family,
    name_or_path: str | os.PathLike,
    *,
    dtype: Any = None,
    compute_dtype: Any = None,
    **options: Any,
) -> tuple[Any, dict]:
    """``(model, variables)`` from a hub id or local directory: the sequence of every family.

    resolve (hub id or directory) -> config (``family.config``) -> build (``family.build``) ->
    read (the weight files) -> assign (``family.convert`` then name and shape checks).

    Args:
        family: the family's :class:`Family`.
        name_or_path: a Hugging Face hub id or a local checkpoint directory.
        dtype: parameter (and computation) dtype; ``None``: float32.
        compute_dtype: computation dtype, when it differs (families that support it).
        **options: passed to ``family.config`` (e.g. CLIP ResNet's ``quick_gelu``).

    Returns:
        ``(model, variables)``.

    Raises:
        OSError: not a local directory and the download failed.
        FileNotFoundError: no config file or no weight file in the directory.
        ValueError: the config is for another kind of model.
        CheckpointMismatchError: the weights do not fit the model built from the config.
    """
    is_local = isinstance(name_or_path, str | os.PathLike) and (
        pathlib.Path(name_or_path).expanduser().is_dir()
    )
    patterns = list(family.download)
    directory = _hub.resolve_pretrained(name_or_path, allow_patterns=patterns)
    if family.msgpack_fallback and not is_local and not any(directory.glob("model*.safetensors")):
        directory = _hub.resolve_pretrained(name_or_path, allow_patterns=[*patterns, "*.msgpack"])
    raw = _hub.read_config(directory, filename=family.config_file)
    config = family.config(raw, os.fspath(name_or_path), **options)
    model = family.build(config, dtype, compute_dtype)
    return model, read_variables(family, directory, model, config, dtype=dtype)
