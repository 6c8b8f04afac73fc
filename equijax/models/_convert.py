"""The one checkpoint converter of the model ports: PyTorch / HF-Flax tensors -> equijax paths.

Every port keeps only its *name-mapping rule*: a function ``rename(name) -> Target | DROP |
None`` from a checkpoint tensor name (``"encoder.layers.0.fc1.weight"``) to the Flax module that
owns it and its kind (``Target("linear", ("encoder", "layers_0", "fc1"))``). :func:`convert`
does the rest, the same way for every family:

================  ======================================  ====================================
kind              PyTorch leaf -> Flax leaf               HF-Flax leaf (``flax_model.msgpack``)
================  ======================================  ====================================
``"linear"``      ``weight (out, in)`` -> ``kernel.T``    ``kernel (in, out)`` kept
``"conv1d"``      ``weight (in, out)`` -> ``kernel``      ``kernel (out, in)`` -> ``kernel.T``
``"conv"``        ``weight (O, I, kh, kw)`` ->            ``kernel (kh, kw, I, O)`` kept
                  ``kernel (kh, kw, I, O)``
``"norm"``        ``weight`` -> ``scale``;                ``scale``, ``mean``, ``var`` kept
                  ``running_mean/var`` -> ``batch_stats``
``"embedding"``   ``weight`` -> ``embedding``             ``embedding`` kept
``"param"``       the tensor itself, at the target path   (same)
================  ======================================  ====================================

``bias`` is ``bias`` for every kind; ``num_batches_tracked`` is dropped; a leading ``params.`` or
``batch_stats.`` collection level (HF-Flax files) is ignored, since the kind decides the
collection. Names the rule does not know (``None``), and leaves a kind does not know, are kept
under the checkpoint's own name, so :func:`equijax.models._hub.assign` reports them as
*unexpected* in the checkpoint's own words.

Examples:
    >>> import numpy as np
    >>> rule = lambda name: Target("linear", ("proj",)) if name.startswith("proj.") else None
    >>> out = convert({"proj.weight": np.zeros((4, 3)), "extra.w": np.zeros(2)}, rule)
    >>> out[("params", "proj", "kernel")].shape, "extra.w" in out
    ((3, 4), True)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Literal, NamedTuple

import numpy as np

__all__ = ["DROP", "Target", "convert", "join_indices"]

Kind = Literal["linear", "conv1d", "conv", "norm", "embedding", "param"]
DROP = "drop"  # returned by a rule for tensors that are not parameters (buffers, tied weights)


class Target(NamedTuple):
    """Where a checkpoint tensor goes: its ``kind`` and the owning module's path.

    For ``kind="param"`` the path is the full parameter path (no leaf is appended).
    """

    kind: Kind
    path: tuple[str, ...]


_COLLECTIONS = ("params.", "batch_stats.")


def _leaf(kind: str, leaf: str, value: np.ndarray) -> tuple[str, str, np.ndarray] | None:
    """``(collection, flax_leaf, array)`` for a checkpoint leaf of a module of ``kind``."""
    if leaf == "bias":
        return "params", "bias", value
    if kind == "linear" and value.ndim == 2:
        if leaf == "weight":
            return "params", "kernel", value.T
        if leaf == "kernel":
            return "params", "kernel", value
    elif kind == "conv1d" and value.ndim == 2:
        if leaf == "weight":
            return "params", "kernel", value
        if leaf == "kernel":
            return "params", "kernel", value.T
    elif kind == "conv" and value.ndim == 4:
        if leaf == "weight":
            return "params", "kernel", value.transpose(2, 3, 1, 0)
        if leaf == "kernel":
            return "params", "kernel", value
    elif kind == "norm":
        if leaf in ("weight", "scale"):
            return "params", "scale", value
        if leaf in ("running_mean", "mean"):
            return "batch_stats", "mean", value
        if leaf in ("running_var", "var"):
            return "batch_stats", "var", value
    elif kind == "embedding" and leaf in ("weight", "embedding"):
        return "params", "embedding", value
    return None


def convert(
    state_dict: Mapping[str, np.ndarray],
    rule: Callable[[str], Target | str | None],
    *,
    collections: bool = True,
) -> dict[tuple[str, ...] | str, np.ndarray]:
    """Convert a checkpoint's ``name -> array`` dict to Flax variable paths with ``rule``.

    Args:
        state_dict: flat checkpoint tensors (PyTorch names, or ``"."``-joined HF-Flax paths).
        rule: ``name -> Target`` (where it goes), :data:`DROP` (not a parameter) or ``None``
            (unknown: kept under ``name``, reported as unexpected by ``assign``). ``name`` has
            any leading ``params.`` / ``batch_stats.`` removed.
        collections: prefix each path with its collection (``"params"`` / ``"batch_stats"``);
            ``False`` for ports whose templates hold the ``params`` collection's contents.

    Returns:
        ``path tuple -> array`` for known tensors, ``name -> array`` for unknown ones.
    """
    out: dict[tuple[str, ...] | str, np.ndarray] = {}
    for full_name, raw in state_dict.items():
        name = full_name
        for prefix in _COLLECTIONS:
            name = name.removeprefix(prefix)
        if name.endswith("num_batches_tracked"):
            continue
        target = rule(name)
        if target == DROP:
            continue
        value = np.asarray(raw)
        if not isinstance(target, Target):
            out[full_name] = value
            continue
        if target.kind == "param":
            path, collection = target.path, "params"
        else:
            mapped = _leaf(target.kind, name.rsplit(".", 1)[-1], value)
            if mapped is None:
                out[full_name] = value
                continue
            collection, leaf, value = mapped
            path = (*target.path, leaf)
        out[(collection, *path) if collections else path] = value
    return out


def join_indices(name: str, *containers: str) -> str:
    """``"encoder.layers.3.fc1"`` -> ``"encoder.layers_3.fc1"`` for the given container names.

    PyTorch ``ModuleList`` children are numbered path components; Flax linen names them
    ``layers_3``. Only components listed in ``containers`` are joined.

    Examples:
        >>> join_indices("encoder.layers.3.mlp.fc1.weight", "layers")
        'encoder.layers_3.mlp.fc1.weight'
    """
    parts = name.split(".")
    out: list[str] = []
    i = 0
    while i < len(parts):
        if parts[i] in containers and i + 1 < len(parts) and parts[i + 1].isdigit():
            out.append(f"{parts[i]}_{parts[i + 1]}")
            i += 2
        else:
            out.append(parts[i])
            i += 1
    return ".".join(out)
