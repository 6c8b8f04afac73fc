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
under the checkpoint's own name, so :func:`assign` reports them as
*unexpected* in the checkpoint's own words.

:func:`assign` then fills a model's variable template with the converted arrays, checking every
name and shape (:class:`CheckpointMismatchError` lists all that do not fit).

Examples:
    >>> import numpy as np
    >>> rule = lambda name: Target("linear", ("proj",)) if name.startswith("proj.") else None
    >>> out = convert({"proj.weight": np.zeros((4, 3)), "extra.w": np.zeros(2)}, rule)
    >>> out[("params", "proj", "kernel")].shape, "extra.w" in out
    ((3, 4), True)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, NamedTuple

import numpy as np

__all__ = [
    "DROP",
    "CheckpointMismatchError",
    "Target",
    "assign",
    "convert",
    "flatten_params",
    "join_indices",
]

PyTree = Any
_MAX_LISTED = 50

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
            (unknown: kept under ``name``, reported as unexpected by :func:`assign`). ``name`` has
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


class CheckpointMismatchError(ValueError):
    """A checkpoint's parameter names or shapes do not match the model built from its config.

    Attributes:
        missing: sorted keys the model needs but the checkpoint lacks.
        unexpected: sorted keys the checkpoint has but the model does not use.
        mismatched: sorted ``(key, expected_shape, found_shape)`` triples.
    """

    def __init__(
        self,
        missing: Sequence[str] = (),
        unexpected: Sequence[str] = (),
        mismatched: Sequence[tuple[str, tuple[int, ...], tuple[int, ...]]] = (),
        *,
        context: str = "",
    ):
        self.missing = sorted(missing)
        self.unexpected = sorted(unexpected)
        self.mismatched = sorted(mismatched)
        lines = [f"checkpoint does not match the model{(' (' + context + ')') if context else ''}:"]
        if self.missing:
            lines.append(f"  missing keys ({len(self.missing)}): " + _listing(self.missing))
        if self.unexpected:
            n = len(self.unexpected)
            lines.append(f"  unexpected keys ({n}): " + _listing(self.unexpected))
        if self.mismatched:
            items = [f"{k} (expected {tuple(e)}, found {tuple(f)})" for k, e, f in self.mismatched]
            lines.append(f"  mis-shaped keys ({len(items)}): " + _listing(items))
        lines.append(
            "  check that config.json belongs to these weights (same architecture and sizes)."
        )
        super().__init__("\n".join(lines))


def _listing(items: Sequence[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    if len(items) > _MAX_LISTED:
        shown += f", ... ({len(items) - _MAX_LISTED} more)"
    return shown


def _flatten(tree: Mapping, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    out: dict[tuple[str, ...], Any] = {}
    for k, v in tree.items():
        key = (*prefix, str(k))
        if isinstance(v, Mapping):
            out.update(_flatten(v, key))
        else:
            out[key] = v
    return out


def flatten_params(params: Mapping) -> dict[str, Any]:
    """Flatten a nested params dict into ``{"a.b.c": leaf}``.

    Args:
        params: nested mappings (e.g. Flax linen params; ``FrozenDict`` works too).

    Returns:
        A flat dict with ``"."``-joined keys.

    Examples:
        >>> flatten_params({"a": {"b": 1, "c": {"d": 2}}})
        {'a.b': 1, 'a.c.d': 2}
    """
    return {".".join(k): v for k, v in _flatten(params).items()}


def assign(
    template: PyTree,
    arrays: Mapping[tuple[str, ...] | str, np.ndarray],
    *,
    dtype: Any = None,
    context: str = "",
) -> PyTree:
    """Fill a params pytree with checkpoint arrays, checking names and shapes.

    Args:
        template: nested dicts of arrays or ``jax.ShapeDtypeStruct`` (e.g. from
            ``jax.eval_shape(model.init, ...)``) giving every leaf's path and shape.
        arrays: mapping from a leaf path -- a tuple of keys or a ``"."``-joined string -- to an
            array of the template's shape. Every template leaf must be present, and nothing else.
        dtype: if given, floating arrays are cast to this dtype; otherwise to the template leaf's
            dtype when it has one (``float32`` for NumPy/JAX float leaves).
        context: optional text (e.g. the checkpoint directory) added to error messages.

    Returns:
        A pytree with the template's nested-dict structure whose leaves are ``jax.Array``.

    Raises:
        CheckpointMismatchError: if keys are missing or unexpected, or shapes differ; the error
            lists all of them, sorted.
        TypeError: if ``template`` is not a mapping.

    Examples:
        >>> import numpy as np
        >>> template = {"w": np.zeros((2,), np.float32), "b": np.zeros((2,), np.float32)}
        >>> try:
        ...     assign(template, {"w": np.ones((3,)), "c": np.ones(2)})
        ... except CheckpointMismatchError as err:
        ...     print(err.missing, err.unexpected, err.mismatched)
        ['b'] ['c'] [('w', (2,), (3,))]
    """
    import jax
    import jax.numpy as jnp

    if not isinstance(template, Mapping):
        raise TypeError(
            f"template must be a nested mapping of arrays, got {type(template).__name__}"
        )
    flat_template = flatten_params(template)
    flat_arrays: dict[str, Any] = {}
    for k, v in arrays.items():
        key = ".".join(k) if isinstance(k, tuple) else str(k)
        flat_arrays[key] = v
    missing = [k for k in flat_template if k not in flat_arrays]
    unexpected = [k for k in flat_arrays if k not in flat_template]
    mismatched = []
    for k, leaf in flat_template.items():
        if k in flat_arrays:
            want = tuple(np.shape(leaf))
            got = tuple(np.shape(flat_arrays[k]))
            if want != got:
                mismatched.append((k, want, got))
    if missing or unexpected or mismatched:
        raise CheckpointMismatchError(missing, unexpected, mismatched, context=context)

    def convert(key: str, leaf: Any) -> Any:
        value = flat_arrays[key]
        target = dtype if dtype is not None else getattr(leaf, "dtype", None)
        src = np.asarray(value)
        if target is not None and jnp.issubdtype(src.dtype, jnp.floating):
            return jnp.asarray(src, dtype=jax.dtypes.canonicalize_dtype(target))
        return jnp.asarray(src)

    def rebuild(tree: Mapping, prefix: tuple[str, ...]) -> dict:
        out = {}
        for k, v in tree.items():
            key = (*prefix, str(k))
            out[k] = rebuild(v, key) if isinstance(v, Mapping) else convert(".".join(key), v)
        return out

    return rebuild(template, ())
