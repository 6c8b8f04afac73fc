"""Checkpoint plumbing shared by the model ports: locate, read and assign pretrained weights.

Pretrained checkpoints come from the Hugging Face hub (``microsoft/resnet-50``, ``gpt2``,
``openai/clip-vit-base-patch32``, ...) or from a local directory written by
``transformers``' ``save_pretrained``. This module

* resolves a hub id or a local directory to a directory on disk (:func:`resolve_pretrained`),
* reads ``config.json`` (:func:`read_config`) and the weights as plain NumPy arrays
  (:func:`read_state_dict`) from ``model.safetensors``, a sharded
  ``model.safetensors.index.json`` or ``flax_model.msgpack`` -- never through pickle,
* fills a Flax parameter pytree from a flat ``path -> array`` mapping, checking names and
  shapes (:func:`assign`, raising :class:`CheckpointMismatchError`), and
* saves / restores finetuned parameters with orbax (:func:`save_params`, :func:`restore_params`).

Examples:
    >>> import numpy as np
    >>> f32 = np.float32
    >>> template = {"dense": {"kernel": np.zeros((2, 3), f32), "bias": np.zeros(3, f32)}}
    >>> params = assign(template, {"dense.kernel": np.ones((2, 3)), ("dense", "bias"): np.ones(3)})
    >>> float(params["dense"]["kernel"].sum())
    6.0
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from equijax.models._orbax import restore_params, save_params

__all__ = [
    "CheckpointMismatchError",
    "assign",
    "flatten_params",
    "read_config",
    "read_state_dict",
    "resolve_pretrained",
    "restore_params",
    "save_params",
]

PyTree = Any

_DEFAULT_FILENAMES = ("model.safetensors", "model.safetensors.index.json", "flax_model.msgpack")
_MAX_LISTED = 50


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


def resolve_pretrained(
    name_or_path: str | os.PathLike, *, allow_patterns: Sequence[str] | None = None
) -> pathlib.Path:
    """Return a local directory holding a pretrained checkpoint.

    An existing local directory is returned as is. Anything else is treated as a Hugging Face
    hub repository id and fetched with ``huggingface_hub.snapshot_download`` (which honours the
    local cache and ``HF_HUB_OFFLINE=1``).

    Args:
        name_or_path: a local directory (e.g. written by ``save_pretrained``) or a hub id such as
            ``"gpt2"`` or ``"microsoft/resnet-50"``.
        allow_patterns: optional glob patterns restricting the files downloaded from the hub,
            e.g. ``["config.json", "*.safetensors", "*.json"]``.

    Returns:
        The directory as a :class:`pathlib.Path`.

    Raises:
        TypeError: if ``name_or_path`` is not a string or path.
        ValueError: if ``name_or_path`` is an existing file rather than a directory.
        OSError: if it is not a local directory and the hub download fails (offline, unknown id,
            ``huggingface_hub`` not installed); the message suggests passing a local directory.

    Examples:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     resolve_pretrained(d) == pathlib.Path(d)
        True
    """
    if not isinstance(name_or_path, str | os.PathLike):
        raise TypeError(
            f"name_or_path must be a str or os.PathLike (a hub id or a local directory), "
            f"got {type(name_or_path).__name__}"
        )
    path = pathlib.Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if path.is_file():
        raise ValueError(
            f"name_or_path={str(name_or_path)!r} is a file; pass the directory that holds "
            "config.json and the weights instead"
        )
    repo_id = os.fspath(name_or_path)
    try:
        import huggingface_hub
    except ImportError as err:
        raise OSError(
            f"{repo_id!r} is not a local directory, and huggingface_hub is not installed to "
            "fetch it from the hub; `pip install huggingface_hub` or pass a local directory "
            "written by save_pretrained"
        ) from err
    try:
        local = huggingface_hub.snapshot_download(
            repo_id, allow_patterns=list(allow_patterns) if allow_patterns is not None else None
        )
    except Exception as err:  # network errors, unknown repos, offline mode without cache...
        raise OSError(
            f"could not resolve {repo_id!r}: it is not an existing local directory and downloading "
            f"it from the Hugging Face hub failed ({type(err).__name__}: {err}). Pass a local "
            "directory containing config.json and model.safetensors (e.g. written by "
            "save_pretrained), or check the hub id / network / HF_HUB_OFFLINE cache."
        ) from err
    return pathlib.Path(local)


def read_config(directory: str | os.PathLike) -> dict:
    """Read ``config.json`` from a checkpoint directory.

    Args:
        directory: the checkpoint directory.

    Returns:
        The parsed JSON object.

    Raises:
        FileNotFoundError: if ``directory/config.json`` does not exist.
        ValueError: if it is not a JSON object.

    Examples:
        >>> import tempfile, json, pathlib
        >>> with tempfile.TemporaryDirectory() as d:
        ...     _ = (pathlib.Path(d) / "config.json").write_text(json.dumps({"n_layer": 2}))
        ...     read_config(d)["n_layer"]
        2
    """
    path = pathlib.Path(directory) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"no config.json in {str(directory)!r}; a checkpoint directory needs config.json "
            "next to its weights (as written by save_pretrained)"
        )
    with open(path, encoding="utf-8") as f:
        config = json.load(f)
    if not isinstance(config, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(config).__name__}")
    return config


def read_state_dict(
    directory: str | os.PathLike, *, filenames: Sequence[str] = _DEFAULT_FILENAMES
) -> dict[str, np.ndarray]:
    """Read a checkpoint's weights as a flat ``name -> np.ndarray`` dict, without pickle.

    The first file of ``filenames`` present in ``directory`` wins. ``*.safetensors`` files are read
    with ``safetensors.numpy``; ``*.index.json`` files list safetensors shards (``weight_map``),
    all of which are read; ``*.msgpack`` files (Flax checkpoints) are read with
    ``flax.serialization.msgpack_restore`` and flattened with ``"."``-joined keys. PyTorch
    ``*.bin`` pickles are never opened.

    Args:
        directory: the checkpoint directory.
        filenames: candidate file names, in order of preference.

    Returns:
        A dict from parameter name (e.g. ``"h.0.attn.c_attn.weight"``) to a NumPy array. bfloat16
        tensors keep their dtype (``ml_dtypes.bfloat16``).

    Raises:
        FileNotFoundError: if none of ``filenames`` exists in ``directory`` (the message names
            both).
        ValueError: for an unsupported file type.

    Examples:
        >>> import tempfile, numpy as np
        >>> from safetensors.numpy import save_file
        >>> with tempfile.TemporaryDirectory() as d:
        ...     save_file({"w": np.ones((2, 2), np.float32)}, f"{d}/model.safetensors")
        ...     read_state_dict(d)["w"].shape
        (2, 2)
    """
    directory = pathlib.Path(directory)
    if isinstance(filenames, str):
        raise TypeError("filenames must be a sequence of file names, not a single string")
    for name in filenames:
        path = directory / name
        if path.is_file():
            return _read_file(path)
    if directory.is_dir():
        present = sorted(p.name for p in directory.iterdir())
        contents = f"directory contains {present}" if present else "directory is empty"
    else:
        contents = "directory does not exist"
    raise FileNotFoundError(
        f"no checkpoint found in {str(directory)!r}: looked for {list(filenames)}; {contents}."
        " PyTorch pickles (*.bin) are never read; convert them to model.safetensors (e.g. "
        "load the model with transformers and call save_pretrained, which writes safetensors)"
    )


def _read_file(path: pathlib.Path) -> dict[str, np.ndarray]:
    name = path.name
    if name.endswith(".index.json"):
        with open(path, encoding="utf-8") as f:
            index = json.load(f)
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict):
            raise ValueError(f"{path} has no 'weight_map' object; is it a sharded index?")
        out: dict[str, np.ndarray] = {}
        for shard in sorted(set(weight_map.values())):
            shard_path = path.parent / shard
            if not shard_path.is_file():
                raise FileNotFoundError(f"shard {shard!r} listed in {path} is missing")
            out.update(_read_file(shard_path))
        return out
    if name.endswith(".safetensors"):
        return _read_safetensors(path)
    if name.endswith(".msgpack"):
        from flax.serialization import msgpack_restore

        tree = msgpack_restore(path.read_bytes())
        return {k: np.asarray(v) for k, v in flatten_params(tree).items()}
    raise ValueError(
        f"unsupported checkpoint file {path.name!r}; supported: *.safetensors, "
        "*.safetensors.index.json, *.msgpack"
    )


def _read_safetensors(path: pathlib.Path) -> dict[str, np.ndarray]:
    import ml_dtypes  # noqa: F401  (registers bfloat16 with numpy so safetensors can read it)

    try:
        from safetensors.numpy import load_file
    except ImportError as err:
        raise ImportError(
            "reading *.safetensors needs the safetensors package: pip install safetensors"
        ) from err
    return dict(load_file(str(path)))


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


@functools.lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """The byte -> printable-unicode map of GPT-2 / CLIP byte-level BPE (``" "`` -> ``"Ġ"``).

    Examples:
        >>> bytes_to_unicode()[ord(" ")], len(bytes_to_unicode())
        ('Ġ', 256)
    """
    bs = list(range(ord("!"), ord("~") + 1))
    bs += list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))
