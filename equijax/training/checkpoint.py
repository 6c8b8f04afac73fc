"""Resumable training runs: orbax checkpoints that carry a fingerprint of the run's settings.

One checkpoint directory holds one run. Its root file ``equijax_run.json`` records the settings
that shape the result (learning rate, steps, seeds, model sizes, ... — not output paths or
logging flags) and their fingerprint; every step directory (kept by an orbax
:class:`~orbax.checkpoint.CheckpointManager`, at least the two newest) holds the training state
and the training history, so a resumed run reports the whole history, not only the part after
the interruption.

:func:`resume_or_start` opens such a directory:

* no checkpoint yet: a fresh run (step 0, the given initial state, an empty history);
* a checkpoint with the same fingerprint: resumed from its newest readable step (logged at
  INFO as ``resumed from step N``); an unreadable newest step is moved aside into
  ``<directory>/_unreadable/`` with a warning, and the previous step is used;
* a checkpoint with other settings: :class:`SettingsMismatchError` naming the settings that
  differ, never a silent reuse;
* ``resume=False``: a fresh run; an existing run directory is moved aside to
  ``<directory>.replaced-<time>`` (nothing is deleted);
* a non-empty directory that is not a run directory: refused (nothing is written into it).

Errors from orbax / TensorStore while reading are re-raised as :class:`CheckpointError` naming
the step directory.

Several processes (``jax.distributed``): every process calls :func:`resume_or_start` with the
same arguments; only process 0 writes ``equijax_run.json`` and moves folders aside (the others
wait at a barrier), orbax writes each process's checkpoint shards. The restore target must then
hold global arrays (e.g. placed with :func:`equijax.training.replicate` on the run's mesh): the
checkpoint is restored onto their shardings, so a resume on another process or device count
reshards (a host-local target is refused with a ``ValueError``).
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import hashlib
import json
import logging
import math
import os
import pathlib
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

from equijax.training.parallel import is_main_process, sync

__all__ = [
    "CheckpointError",
    "Run",
    "SettingsMismatchError",
    "canonical_json",
    "resume_or_start",
    "settings_fingerprint",
]

logger = logging.getLogger(__name__)

PyTree = Any
RUN_FILE = "equijax_run.json"
UNREADABLE_DIR = "_unreadable"
_FORMAT = 1


class CheckpointError(RuntimeError):
    """A checkpoint directory or step cannot be read or written; the message names the path."""


class SettingsMismatchError(ValueError):
    """The checkpoint directory belongs to a run with other settings.

    Attributes:
        directory: the checkpoint directory.
        differences: ``{key: (stored value, requested value)}`` for every differing setting.
    """

    def __init__(self, message: str, directory: pathlib.Path, differences: dict[str, tuple]):
        super().__init__(message)
        self.directory = directory
        self.differences = differences


def _canonical(obj: Any, where: str = "settings") -> Any:
    """JSON-ready canonical form: dict keys as sorted strings, tuples as lists, paths as str."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        if not math.isfinite(f):
            return repr(f)
        return f
    if isinstance(obj, enum.Enum):
        return _canonical(obj.value, where)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {
            f.name: _canonical(getattr(obj, f.name), f"{where}.{f.name}")
            for f in dataclasses.fields(obj)
        }
    if isinstance(obj, Mapping):
        return {str(k): _canonical(v, f"{where}.{k}") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, (set, frozenset)):
        return sorted(_canonical(v, where) for v in obj)
    raise TypeError(
        f"{where}: a setting of type {type(obj).__name__} cannot be fingerprinted; pass numbers, "
        "strings, booleans, None, paths, lists/tuples, dicts or dataclasses of these"
    )


def canonical_json(settings: Mapping[str, Any]) -> str:
    """The canonical JSON text of a settings dict (sorted keys, no spaces, tuples as lists).

    Args:
        settings: a mapping of setting names to JSON-like values (nested dicts, lists, tuples,
            dataclasses, numbers, strings, booleans, ``None``, paths).

    Returns:
        A string that is equal for equal settings whatever the key order.

    Raises:
        TypeError: a value that has no canonical JSON form (named in the message).

    Examples:
        >>> from equijax.training import canonical_json
        >>> canonical_json({"lr": 1e-4, "cells": ("lstm",)})
        '{"cells":["lstm"],"lr":0.0001}'
    """
    if not isinstance(settings, Mapping):
        raise TypeError(f"settings must be a mapping, got {type(settings).__name__}")
    return json.dumps(
        _canonical(settings),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )


def settings_fingerprint(settings: Mapping[str, Any]) -> str:
    r"""The fingerprint of a run's settings: SHA-256 of their canonical JSON, 16 hex digits.

    .. math:: \mathrm{fp}(s) = \mathrm{sha256}(\mathrm{canonical\_json}(s))_{[0:16]}

    Args:
        settings: the settings that shape the result (see :func:`canonical_json`).

    Returns:
        16 lowercase hexadecimal digits.

    Examples:
        >>> from equijax.training import settings_fingerprint
        >>> a = settings_fingerprint({"lr": 1e-4, "steps": 100})
        >>> a == settings_fingerprint({"steps": 100, "lr": 0.0001}), len(a)
        (True, 16)
        >>> a == settings_fingerprint({"lr": 1e-3, "steps": 100})
        False
    """
    return hashlib.sha256(canonical_json(settings).encode()).hexdigest()[:16]


def _json_history(obj: Any, where: str = "history") -> Any:
    """``history`` with numpy / JAX values as Python numbers and lists; raises ``TypeError``
    naming the entry for a value with no JSON form."""
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, (np.bool_, np.integer, np.floating)):
        return obj.item()
    if isinstance(obj, (np.ndarray, jax.Array)):
        arr = np.asarray(obj)
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"{where} is an array of dtype {arr.dtype}, which has no JSON form")
        return arr.tolist()
    if isinstance(obj, Mapping):
        out = {}
        for k, v in obj.items():
            if not (k is None or isinstance(k, (str, int, float, bool))):
                raise TypeError(f"{where} has a key {k!r} of type {type(k).__name__}; use strings")
            out[k] = _json_history(v, f"{where}[{k!r}]")
        return out
    if isinstance(obj, (list, tuple)):
        return [_json_history(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    raise TypeError(
        f"{where} is a {type(obj).__name__}, which has no JSON form; store numbers, strings, "
        "booleans, None, lists or dicts"
    )


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


def _differences(old: dict, new: dict) -> dict[str, tuple]:
    a, b = _flatten(old), _flatten(new)
    return {
        k: (a.get(k, "<absent>"), b.get(k, "<absent>"))
        for k in sorted(set(a) | set(b))
        if a.get(k, "<absent>") != b.get(k, "<absent>")
    }


def _step_dirs(directory: pathlib.Path) -> list[int]:
    if not directory.is_dir():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if p.is_dir() and p.name.isdigit())


def _stamp() -> str:
    return datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")


def _move_aside(path: pathlib.Path, target: pathlib.Path) -> pathlib.Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    path.rename(target)
    return target


@dataclasses.dataclass
class Run:
    """An open training run (returned by :func:`resume_or_start`).

    Attributes:
        directory: the checkpoint directory.
        settings: the canonical settings (a JSON-ready dict).
        fingerprint: :func:`settings_fingerprint` of ``settings``.
        step: the step the run continues from (0 for a fresh run).
        state: the restored state (or the initial state of a fresh run).
        history: the restored training history (a list, empty for a fresh run); append to it
            and pass it to :meth:`save`.
        resumed: whether ``state`` came from a checkpoint.
        skipped_steps: newer steps that could not be read (moved into ``_unreadable/``).
    """

    directory: pathlib.Path
    settings: dict[str, Any]
    fingerprint: str
    step: int
    state: PyTree
    history: list[Any]
    resumed: bool
    skipped_steps: list[int]
    _manager: Any = dataclasses.field(repr=False, default=None)

    def save(self, step: int, state: PyTree, history: list[Any] | None = None) -> None:
        """Checkpoint ``state`` and ``history`` as ``step`` (asynchronous).

        ``history`` entries are JSON-like: numpy / JAX scalars and arrays are converted to Python
        numbers and lists (``np.float32(0.5)`` is stored as ``0.5``), tuples to lists. A value
        with no JSON form raises here, before anything is written: the steps already saved and
        this run's ``step`` / ``history`` stay as they were.

        Raises:
            ValueError: ``step`` is not larger than the last saved step.
            CheckpointError: a history value has no JSON form (the message names the step and
                the entry), the previous asynchronous save failed (naming that step), or orbax
                could not write the step (the message names the directory).
        """
        if (
            isinstance(step, (bool, np.bool_))
            or not isinstance(step, (int, np.integer))
            or int(step) <= self.step
        ):
            raise ValueError(f"step must be an int > {self.step} (the last step), got {step!r}")
        history = self.history if history is None else history
        import orbax.checkpoint as ocp

        try:
            history = _json_history(list(history))
            meta = {"fingerprint": self.fingerprint, "step": int(step), "history": history}
            json.dumps(meta)
        except (TypeError, ValueError) as err:
            raise CheckpointError(
                f"cannot write checkpoint step {step} in {self.directory}: {err}; nothing was "
                f"written (step {self.step} is the last saved step)"
            ) from err
        self._finish_pending()
        try:
            self._manager.save(
                int(step),
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
                ),
            )
        except Exception as err:
            raise CheckpointError(
                f"cannot write checkpoint step {step} in {self.directory}: "
                f"{type(err).__name__}: {err}"
            ) from err
        self.step, self.state, self.history = int(step), state, list(history)

    def _finish_pending(self) -> None:
        """Waits for the previous asynchronous save; its failure names that step."""
        if self._manager is None:
            return
        try:
            self._manager.wait_until_finished()
        except Exception as err:
            raise CheckpointError(
                f"checkpoint step {self.step} in {self.directory} was not written: "
                f"{type(err).__name__}: {err}"
            ) from err

    def wait(self) -> None:
        """Blocks until the asynchronous saves have finished.

        Raises:
            CheckpointError: the last save failed (the message names its step).
        """
        self._finish_pending()

    def close(self) -> None:
        """Waits for pending saves and releases the checkpoint manager (also when one failed).

        Raises:
            CheckpointError: the last save failed (the message names its step).
        """
        if self._manager is None:
            return
        try:
            self._finish_pending()
        finally:
            manager, self._manager = self._manager, None
            manager.close()

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _check_global_target(target: PyTree) -> None:
    """With several processes the restore target must be global arrays (their shardings are
    where the checkpoint is restored to); host-local leaves are refused in one line."""
    if jax.process_count() == 1:
        return
    for leaf in jax.tree.leaves(target):
        if not isinstance(leaf, jax.Array) or leaf.is_fully_addressable:
            raise ValueError(
                f"init_state holds a host-local {type(leaf).__name__} in a "
                f"{jax.process_count()}-process job; place it on the run's global shardings "
                "first (equijax.training.replicate(tree, mesh)) so checkpoints are saved and "
                "restored across hosts"
            )


def _abstract(tree: PyTree) -> PyTree:
    import orbax.checkpoint as ocp

    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


_JSON_FILES = ("_METADATA", "_CHECKPOINT_METADATA", "metadata", "_sharding")


def _suspect_file(step_dir: pathlib.Path, message: str) -> pathlib.Path | None:
    """The file an orbax/TensorStore error is about: named in the message, or unparseable."""
    files = sorted(p for p in step_dir.rglob("*") if p.is_file())
    for f in files:
        if str(f) in message or (f.name in message and len(f.name) >= 16):
            return f
    for f in files:
        if f.name in _JSON_FILES:
            try:
                json.loads(f.read_text())
            except (OSError, ValueError):
                return f
        elif f.stat().st_size == 0 and f.name != "commit_success.txt":
            return f
    return None


def _restore(manager: Any, directory: pathlib.Path, step: int, target: PyTree, fp: str):
    import orbax.checkpoint as ocp

    _check_global_target(target)
    try:
        out = manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(_abstract(target)), meta=ocp.args.JsonRestore()
            ),
        )
    except Exception as err:
        step_dir = directory / str(step)
        bad = _suspect_file(step_dir, str(err))
        raise CheckpointError(
            f"cannot read checkpoint {step_dir}{f' (file {bad})' if bad else ''}: "
            f"{type(err).__name__}: {err}"
        ) from err
    meta = out["meta"]
    if not isinstance(meta, dict) or meta.get("fingerprint") != fp:
        raise CheckpointError(
            f"checkpoint {directory / str(step)} has fingerprint "
            f"{meta.get('fingerprint') if isinstance(meta, dict) else None!r}, expected {fp!r}"
        )
    return out["state"], list(meta.get("history", []))


def resume_or_start(
    directory: str | os.PathLike,
    settings: Mapping[str, Any],
    init_state: PyTree | Callable[[int], PyTree],
    *,
    resume: bool = True,
    max_to_keep: int = 2,
    hint: str = "",
) -> Run:
    """Opens the run in ``directory``: resumes it if its settings match, else starts fresh.

    Args:
        directory: the run's checkpoint directory (created if missing).
        settings: the settings that shape the result (JSON-like; see :func:`canonical_json`).
            Leave out output paths, logging and progress flags.
        init_state: the initial state pytree of a fresh run, or ``step -> pytree`` giving the
            restore target for a checkpoint of ``step`` (for states whose structure changes
            during training; called with 0 for a fresh run). Only shapes, dtypes and tree
            structure are used for restoring.
        resume: ``False`` starts fresh; an existing run directory is first moved aside to
            ``<directory>.replaced-<time>`` (never deleted).
        max_to_keep: newest steps kept on disk (at least 2, so an unreadable newest step can
            fall back to the previous one).
        hint: appended to the error messages (e.g. the command-line flags that fix them).

    Returns:
        A :class:`Run`; call :meth:`Run.save` after each chunk and :meth:`Run.close` (or use it
        as a context manager) at the end.

    Raises:
        SettingsMismatchError: the directory holds a run with other settings.
        CheckpointError: no stored step can be read (the message names the newest), or the
            directory is not empty and not a run directory.
        ValueError: ``max_to_keep < 2``.
        TypeError: settings without a canonical JSON form.

    Examples:
        >>> import tempfile, jax.numpy as jnp
        >>> from equijax.training import resume_or_start
        >>> d = tempfile.mkdtemp()
        >>> with resume_or_start(d, {"lr": 0.1}, {"w": jnp.zeros(2)}) as run:
        ...     run.save(1, {"w": jnp.ones(2)}, [{"loss": 0.5}])
        >>> with resume_or_start(d, {"lr": 0.1}, {"w": jnp.zeros(2)}) as run:
        ...     print(run.step, run.state["w"], run.history)
        1 [1. 1.] [{'loss': 0.5}]
    """
    import orbax.checkpoint as ocp

    if not isinstance(max_to_keep, int) or max_to_keep < 2:
        raise ValueError(f"max_to_keep must be an int >= 2 (fallback needs two), got {max_to_keep}")
    directory = pathlib.Path(directory).expanduser().resolve()
    canon = json.loads(canonical_json(settings))
    fp = settings_fingerprint(settings)
    tail = f"; {hint}" if hint else ""
    run_file = directory / RUN_FILE
    target_fn = init_state if callable(init_state) else (lambda _step: init_state)

    if directory.exists() and not directory.is_dir():
        raise CheckpointError(f"{directory} exists and is not a directory{tail}")
    ours = run_file.is_file()
    non_empty = directory.is_dir() and any(directory.iterdir())
    steps = _step_dirs(directory)
    main = is_main_process()
    sync("equijax_resume_inspected")  # every process has looked before process 0 changes things
    if non_empty and not ours:
        what = "orbax checkpoints without a settings fingerprint" if steps else "other files"
        raise CheckpointError(
            f"{directory} holds {what}, not an equijax run; refusing to write into it "
            f"(choose an empty or new directory){tail}"
        )
    if ours and not resume:
        if main:  # one process moves the folder aside
            moved = _move_aside(
                directory, directory.with_name(f"{directory.name}.replaced-{_stamp()}")
            )
            logger.warning("starting fresh: moved the previous run %s to %s", directory, moved)
        ours, steps = False, []
    if ours:
        try:
            stored = json.loads(run_file.read_text())
        except (OSError, ValueError) as err:
            raise CheckpointError(f"cannot read {run_file}: {err}{tail}") from err
        if stored.get("fingerprint") != fp:
            diff = _differences(stored.get("settings", {}), canon)
            shown = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in list(diff.items())[:6])
            raise SettingsMismatchError(
                f"{directory} holds a run with other settings ({shown or 'fingerprint differs'})"
                f"{tail}",
                directory,
                diff,
            )
    if main:
        directory.mkdir(parents=True, exist_ok=True)
        if not ours:
            run_file.write_text(
                json.dumps({"format": _FORMAT, "fingerprint": fp, "settings": canon}, indent=1)
            )
    sync("equijax_resume_run_file")  # the others see process 0's run file / moved folder

    state, history, step, skipped = None, [], 0, []
    if steps:
        reader = ocp.CheckpointManager(
            directory, options=ocp.CheckpointManagerOptions(create=False)
        )
        errors: list[CheckpointError] = []
        try:
            for s in reversed(steps):
                try:
                    state, history = _restore(reader, directory, s, target_fn(s), fp)
                    step = s
                    break
                except CheckpointError as err:
                    errors.append(err)
        finally:
            reader.close()
        if state is None:
            raise CheckpointError(f"{errors[0]}{tail}") from errors[0].__cause__
        skipped = [s for s in steps if s > step]
        for s, err in zip(reversed(steps), errors, strict=False):
            moved = directory / UNREADABLE_DIR / f"{s}-{_stamp()}"
            if main:  # one process moves the unreadable step aside
                _move_aside(directory / str(s), moved)
            warnings.warn(
                f"{err}; moved it to {moved} and resumed from step {step}",
                RuntimeWarning,
                stacklevel=2,
            )
        sync("equijax_resume_restored")
        logger.info("resumed from step %d (%s)", step, directory)
    else:
        state = target_fn(0)
    manager = ocp.CheckpointManager(
        directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
    )
    return Run(
        directory=directory,
        settings=canon,
        fingerprint=fp,
        step=step,
        state=state,
        history=list(history),
        resumed=bool(steps),
        skipped_steps=skipped,
        _manager=manager,
    )
