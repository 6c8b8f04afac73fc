"""Hub file reading shared by the model ports: locate a checkpoint and read its files.

Pretrained checkpoints come from the Hugging Face hub (``microsoft/resnet-50``, ``gpt2``,
``openai/clip-vit-base-patch32``, ...) or from a local directory written by
``transformers``' ``save_pretrained`` (or OpenCLIP). This module

* resolves a hub id or a local directory to a directory on disk (:func:`resolve_pretrained`),
* reads a config file (:func:`read_config`) and the weights as plain NumPy arrays
  (:func:`read_state_dict`) from ``model.safetensors``, a sharded
  ``model.safetensors.index.json`` or ``flax_model.msgpack`` -- never through pickle.

Assigning the arrays to a model's parameters is :mod:`equijax.models._convert`'s job
(``convert``, ``assign``); the sequence resolve -> config -> build -> read -> assign is written
once in :func:`equijax.models._load.load_pretrained`; saving finetuned parameters is
:mod:`equijax.models._orbax`'s.

Examples:
    >>> import tempfile, numpy as np
    >>> from safetensors.numpy import save_file
    >>> with tempfile.TemporaryDirectory() as d:
    ...     save_file({"w": np.ones((2, 3), np.float32)}, f"{d}/model.safetensors")
    ...     read_state_dict(resolve_pretrained(d))["w"].shape
    (2, 3)
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Sequence

import numpy as np

# assignment lives in _convert; these names stay importable from here for code written before
from equijax.models._convert import CheckpointMismatchError, assign, flatten_params  # noqa: F401

__all__ = [
    "WEIGHT_FILES",
    "read_config",
    "read_state_dict",
    "resolve_pretrained",
]

#: Weight files read by default, in order of preference.
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "flax_model.msgpack")


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


def read_config(directory: str | os.PathLike, *, filename: str = "config.json") -> dict:
    """Read a checkpoint directory's config file (``config.json`` by default).

    Args:
        directory: the checkpoint directory.
        filename: the config file's name (e.g. ``"open_clip_config.json"``).

    Returns:
        The parsed JSON object.

    Raises:
        FileNotFoundError: if ``directory/filename`` does not exist.
        ValueError: if it is not a JSON object.

    Examples:
        >>> import tempfile, json, pathlib
        >>> with tempfile.TemporaryDirectory() as d:
        ...     _ = (pathlib.Path(d) / "config.json").write_text(json.dumps({"n_layer": 2}))
        ...     read_config(d)["n_layer"]
        2
    """
    path = pathlib.Path(directory) / filename
    if not path.is_file():
        raise FileNotFoundError(
            f"no {filename} in {str(directory)!r}; a checkpoint directory needs {filename} "
            "next to its weights (as written by save_pretrained, or OpenCLIP)"
        )
    with open(path, encoding="utf-8") as f:
        config = json.load(f)
    if not isinstance(config, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(config).__name__}")
    return config


def read_state_dict(
    directory: str | os.PathLike, *, filenames: Sequence[str] = WEIGHT_FILES
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
