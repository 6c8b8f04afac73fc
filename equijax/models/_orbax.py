"""The one orbax path for finetuned parameters: :func:`save_params` / :func:`restore_params`.

Built on :mod:`equijax.training.checkpoint` (the run-file checkpoints of the training loops):
the same abstract-template rule, the same search for the file an orbax / TensorStore error is
about and the same error class, :class:`~equijax.training.CheckpointError`, for every damaged
checkpoint. A run directory holds many steps and a settings fingerprint; a parameter checkpoint
written here is one orbax directory.

Examples:
    >>> import tempfile, jax.numpy as jnp
    >>> with tempfile.TemporaryDirectory() as d:
    ...     save_params(f"{d}/ckpt", {"w": jnp.ones(3)})
    ...     float(restore_params(f"{d}/ckpt")["w"].sum())
    3.0
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any

from equijax.training.checkpoint import CheckpointError, _abstract, _suspect_file

__all__ = ["DamagedCheckpointError", "restore_params", "save_params"]

PyTree = Any

_ORBAX_MARKERS = ("_CHECKPOINT_METADATA", "_METADATA")
_FIX = (
    "the checkpoint is truncated or corrupted (an interrupted copy or a full disk); save the "
    "parameters again with save_params, or restore another copy"
)


class DamagedCheckpointError(CheckpointError, ValueError):
    """A parameter checkpoint cannot be read: the project's :class:`CheckpointError`.

    Also a ``ValueError``, as :func:`restore_params` raised for damaged checkpoints before.

    Attributes:
        directory: the checkpoint directory.
        path: the damaged file, when it can be told (else ``None``).
    """

    def __init__(self, message: str, directory: pathlib.Path, path: pathlib.Path | None = None):
        super().__init__(message)
        self.directory = directory
        self.path = path


def _is_checkpoint(path: pathlib.Path) -> bool:
    return any((path / marker).is_file() for marker in _ORBAX_MARKERS)


def save_params(path: str | os.PathLike, params: PyTree) -> None:
    """Save a params pytree with orbax; replaces an earlier checkpoint, never other files.

    ``path`` may be new, an empty directory, or a checkpoint written earlier (which is
    replaced). Anything else -- a file, or a directory holding files that are not an orbax
    checkpoint -- is refused, because writing there would delete its contents.

    Args:
        path: target directory (made absolute; orbax requires absolute paths).
        params: pytree of arrays.

    Raises:
        FileExistsError: ``path`` is a file, or a non-empty directory that is not a checkpoint.

    Examples:
        >>> import tempfile, jax.numpy as jnp
        >>> with tempfile.TemporaryDirectory() as d:
        ...     save_params(f"{d}/ckpt", {"b": jnp.zeros(2)})
        ...     sorted(restore_params(f"{d}/ckpt"))
        ['b']
    """
    import orbax.checkpoint as ocp

    path = pathlib.Path(path).expanduser().absolute()
    if path.is_file():
        raise FileExistsError(
            f"save_params: {str(path)!r} is a file; pass a new directory for the checkpoint"
        )
    if path.is_dir() and any(path.iterdir()) and not _is_checkpoint(path):
        n = sum(1 for _ in path.iterdir())
        raise FileExistsError(
            f"save_params: {str(path)!r} is a non-empty directory ({n} entries) that is not an "
            "orbax checkpoint; saving there would delete its contents. Pass a new or empty "
            "directory (or a checkpoint written by save_params, which is replaced)"
        )
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(path, params, force=True)
        ckptr.wait_until_finished()


def restore_params(path: str | os.PathLike, template: PyTree | None = None) -> PyTree:
    """Restore a params pytree saved by :func:`save_params`.

    Args:
        path: the checkpoint directory.
        template: optional pytree (arrays or ``jax.ShapeDtypeStruct``) fixing structure, shapes,
            dtypes and shardings of the result.

    Returns:
        The restored pytree.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        TypeError: ``template`` does not fit the checkpoint's structure.
        DamagedCheckpointError: the checkpoint is damaged (a truncated ``_METADATA``, array
            data or index file, ...): a :class:`~equijax.training.CheckpointError` (and a
            ``ValueError``) naming the directory, the damaged file when it can be told, and the
            fix; never orbax's or TensorStore's own exception.

    Examples:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     restore_params(f"{d}/missing")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        FileNotFoundError: no orbax checkpoint at ...
    """
    import orbax.checkpoint as ocp

    path = pathlib.Path(path).expanduser().absolute()
    if not path.exists():
        raise FileNotFoundError(f"no orbax checkpoint at {str(path)!r}; save one with save_params")
    for marker in _ORBAX_MARKERS:
        meta = path / marker
        if meta.is_file():
            try:
                json.loads(meta.read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError) as err:
                raise DamagedCheckpointError(
                    f"damaged checkpoint {str(path)!r}: {str(meta)!r} is not valid JSON ({err}); "
                    + _FIX,
                    path,
                    meta,
                ) from err
    try:
        with ocp.StandardCheckpointer() as ckptr:
            if template is None:
                return ckptr.restore(path)
            return ckptr.restore(path, _abstract(template))
    except (FileNotFoundError, TypeError) as err:
        raise type(err)(f"could not restore the checkpoint at {str(path)!r}: {err}") from err
    except Exception as err:  # orbax / TensorStore raise ValueError, OSError or bare Exception
        bad = _suspect_file(path, str(err))
        where = f" (file {str(bad)!r})" if bad else ""
        fit = "" if template is None else " (or `template` does not fit what was saved)"
        raise DamagedCheckpointError(
            f"could not restore the checkpoint at {str(path)!r}{where}: {_FIX}{fit}. "
            f"Cause: {type(err).__name__}: {_first_line(err)}",
            path,
            bad,
        ) from err


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:300] if text else ""
