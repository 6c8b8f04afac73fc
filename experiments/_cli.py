"""Command-line support shared by the experiment scripts (not an experiment itself).

* :func:`setup_logging` — progress messages of the scripts and of :mod:`equijax.training`
  (``resumed from step N``) visible by default; orbax/absl chatter hidden.
* :class:`ScriptError` — an expected failure (no network, missing dataset or package, bad
  flag combination) with the fix; :func:`cli` turns it, and checkpoint refusals, into one line
  on stderr and exit code 2.
* :class:`ArgumentParser` — argparse whose errors are one line too (exit code 2).
* :data:`RESUME_HINT` — the fix named by every checkpoint refusal.
* :func:`add_distributed_flags` / :func:`start_distributed` — ``--distributed`` (jax's
  automatic detection) or ``--coordinator HOST:PORT --num-processes N --process-id I``;
  :func:`refuse_distributed` (the one-process scripts refuse those flags in one line);
  :func:`is_main` (process 0 writes the run's files) and :func:`progress` (a tqdm bar on
  process 0 only).
"""

from __future__ import annotations

import argparse
import functools
import logging
import sys
from collections.abc import Callable
from typing import Any, NoReturn

RESUME_HINT = (
    "rerun with the same settings, choose another --out, or pass --no-resume to start fresh "
    "(the old checkpoints are moved aside, never deleted)"
)
OFFLINE_CLIP = "for an offline smoke run use --model tiny-random --mock-data"
EXIT_USAGE = 2


class ScriptError(Exception):
    """An expected failure: ``what`` went wrong and the flag or command that fixes it."""

    def __init__(self, what: str, fix: str):
        super().__init__(f"{what}; {fix}")
        self.what, self.fix = what, fix


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def fail(prog: str, message: str) -> NoReturn:
    print(f"{prog}: error: {one_line(message)}", file=sys.stderr)
    raise SystemExit(EXIT_USAGE)


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one line on stderr (exit code 2)."""

    def error(self, message: str) -> NoReturn:
        fail(self.prog, f"{message} (see --help)")


def setup_logging(*names: str) -> None:
    """INFO messages of ``names`` and of ``equijax.training`` on stderr; absl/orbax at WARNING.

    In a multi-process job only process 0 logs at INFO (the others log warnings and errors,
    prefixed with their process index).
    """
    main = is_main()
    fmt = "%(message)s" if main else f"[process {_process_index()}] %(message)s"
    logging.basicConfig(level=logging.WARNING, format=fmt)
    for name in ("equijax.training", *names):
        logging.getLogger(name).setLevel(logging.INFO if main else logging.WARNING)
    logging.getLogger("absl").setLevel(logging.WARNING)
    try:  # orbax logs every checkpoint step through absl at INFO
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.WARNING)
    except ImportError:  # pragma: no cover
        pass


def _process_index() -> int:
    import jax

    return jax.process_index()


def is_main() -> bool:
    """Whether this is process 0 (the only writer of results, tables, figures and run files):
    :func:`equijax.training.parallel.is_main_process`."""
    from equijax.training.parallel import is_main_process

    return is_main_process()


def progress(iterable: Any = None, **kwargs: Any) -> Any:
    """``tqdm(iterable, **kwargs)``, shown by process 0 only (one bar per job, not per host)."""
    from tqdm.auto import tqdm

    disable = kwargs.pop("disable", False)
    return tqdm(iterable, disable=disable or not is_main(), **kwargs)


def add_distributed_flags(p: argparse.ArgumentParser) -> None:
    """``--distributed`` and the explicit ``--coordinator/--num-processes/--process-id``."""
    p.add_argument(
        "--distributed",
        action="store_true",
        help="several processes (one per host): jax.distributed.initialize() with "
        "jax's automatic detection (Cloud TPU pod slice, SLURM, Open MPI 4); "
        "elsewhere pass --coordinator, --num-processes and --process-id",
    )
    p.add_argument(
        "--coordinator",
        default=None,
        metavar="HOST:PORT",
        help="process 0's address and a free port (implies --distributed)",
    )
    p.add_argument(
        "--num-processes",
        type=int,
        default=None,
        metavar="N",
        help="number of processes of the job (with --coordinator)",
    )
    p.add_argument("--process-id", type=int, default=None, metavar="I",
                   help="this process's index 0..N-1 (with --coordinator)")  # fmt: skip


def check_distributed_flags(a: argparse.Namespace) -> None:
    """Validates the flags of :func:`add_distributed_flags` (``ValueError``: a usage error);
    explicit ones set ``a.distributed``."""
    from equijax.training.parallel import check_distributed_args

    check_distributed_args(a.coordinator, a.num_processes, a.process_id)
    if a.coordinator is not None:
        a.distributed = True


def refuse_distributed(a: argparse.Namespace, why: str) -> None:
    """For a script that runs as one process: ``ValueError`` (a usage error) naming ``why`` if
    any flag of :func:`add_distributed_flags` was given."""
    flags = (("--distributed", a.distributed), ("--coordinator", a.coordinator),
             ("--num-processes", a.num_processes), ("--process-id", a.process_id))  # fmt: skip
    given = [name for name, value in flags if value is not None and value is not False]
    if given:
        raise ValueError(f"{' / '.join(given)}: {why}; run it as one process without these flags")


def start_distributed(a: argparse.Namespace) -> None:
    """``initialize_distributed`` from the flags (before anything touches devices)."""
    from equijax.training import parallel

    parallel.initialize_distributed(
        bool(a.distributed or a.coordinator),
        coordinator_address=a.coordinator,
        num_processes=a.num_processes,
        process_id=a.process_id,
    )


def require(module: str, install: str, why: str = "") -> Any:
    """Imports ``module`` or raises :class:`ScriptError` naming the install command."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        need = f" ({why})" if why else ""
        raise ScriptError(f"missing optional package {module!r}{need}: {err}", install) from err


def cli(prog: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorates a script's ``main``: expected failures become one stderr line and exit code 2."""

    def wrap(main: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(main)
        def run(*args: Any, **kwargs: Any) -> Any:
            from equijax.training import CheckpointError, SettingsMismatchError

            try:
                return main(*args, **kwargs)
            except ScriptError as err:
                fail(prog, str(err))
            except SettingsMismatchError as err:
                fail(prog, str(err))
            except CheckpointError as err:
                fail(prog, str(err))

        return run

    return wrap


def require_tfds(name: str, data_dir: Any, offline_fix: str) -> None:
    """Raises :class:`ScriptError` unless tfds dataset ``name`` is prepared in ``data_dir``.

    Checked up front because ``tfds.data_source`` on an unprepared dataset starts a download.
    """
    tfds = require("tensorflow_datasets", "pip install 'equijax[data]'", f"dataset {name}")
    where = data_dir or "the default tfds data_dir (~/tensorflow_datasets)"
    try:
        prepared = tfds.builder(name, data_dir=data_dir).is_prepared()
    except Exception as err:  # unknown name / unreadable folder: report, do not download
        raise ScriptError(f"cannot open tfds dataset {name!r} in {where} ({err})",
                          offline_fix) from err  # fmt: skip
    if not prepared:
        raise ScriptError(
            f"tfds dataset {name!r} is not prepared in {where}",
            f"prepare it once with network access (tfds build {name} --data_dir DIR) and pass "
            f"--data-dir DIR, or {offline_fix}",
        )


# ----------------------------------------------------------------------------- shared by scripts
# (the CLIP loader and tfds sources of the image scripts: clip_zeroshot, clip_finetune,
# cnn_rot90)


def load_clip(name: str, out: Any) -> tuple[Any, Any, str]:
    """:func:`equijax.models.clip.zoo.load` for ``--model``, plus ``tiny-random`` (a tiny random
    CLIP written into ``<out>/tiny_clip``), with one-line failures naming the fix.

    Returns ``(model, variables, tokenizer source)``.
    """
    from pathlib import Path

    from equijax.models.clip import zoo

    try:
        if name == "tiny-random":
            from equijax.models.testing import write_tiny_random_clip
            from equijax.training.parallel import sync

            if is_main():  # one writer; the other processes read it after the barrier
                write_tiny_random_clip(Path(out) / "tiny_clip")
            sync("experiments_tiny_clip")
            return zoo.load(Path(out) / "tiny_clip")
        return zoo.load(name)
    except ImportError as err:
        raise ScriptError(f"--model {name} needs torch and transformers ({err})",
                          "pip install 'equijax[test]'") from err  # fmt: skip
    except OSError as err:
        ident = zoo.PAPER_MODELS.get(name, name)
        raise ScriptError(f"cannot load CLIP {name!r} ({ident}): not a local directory and the "
                          "Hugging Face hub is unreachable or has no such id",
                          OFFLINE_CLIP) from err  # fmt: skip


def tfds_splits(
    name: str,
    read: Callable[..., Any],
    splits: tuple[Any, ...],
    *,
    data_dir: Any,
    offline_fix: str,
    mock_examples: int | None = None,
) -> list[Any]:
    """``[read(*split) for split in splits]`` from tfds dataset ``name``, real or mock.

    ``splits`` holds one tuple of ``read``'s arguments per split, e.g.
    ``(("train", 256), ("test", 64))`` for ``read(split, limit)``. Real data
    (``mock_examples=None``) is checked to be prepared first (:func:`require_tfds`: nothing is
    downloaded, a missing dataset is one line naming ``--data-dir`` and ``offline_fix``);
    otherwise ``tfds.testing.mock_data`` with ``mock_examples`` random examples per split, read
    inside the mock's context (so ``read`` must materialise what it returns, e.g. with
    :func:`equijax.data.images.subset`).
    """
    if mock_examples is None:
        require_tfds(name, data_dir, offline_fix)
        return [read(*split) for split in splits]
    tfds = require("tensorflow_datasets", "pip install 'equijax[data]'", "--mock-data")
    with tfds.testing.mock_data(num_examples=mock_examples):
        return [read(*split) for split in splits]


def shared_data_dir(name: str) -> Any:
    """``$EQUIJAX_SHARED_DATA/<name>``, else ``<repository>/../shared/data/<name>``."""
    import os
    from pathlib import Path

    root = os.environ.get("EQUIJAX_SHARED_DATA")
    base = Path(root) if root else Path(__file__).resolve().parents[2] / "shared" / "data"
    return base / name
