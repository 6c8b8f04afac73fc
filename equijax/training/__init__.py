"""Training infrastructure shared by the experiments: resumable, fingerprinted checkpoints.

* :func:`resume_or_start` — open a run's checkpoint directory: resume when the settings match,
  refuse when they differ, start fresh (moving the old run aside) when asked.
* :class:`Run` — the open run: ``step``, ``state``, ``history``, :meth:`Run.save`.
* :func:`settings_fingerprint` / :func:`canonical_json` — the settings' identity.
* :mod:`equijax.training.ensemble` — many independent models (seeds x splits) trained in one
  compiled program (``vmap`` over members, ``lax.scan`` over iterations), resumable:
  :func:`~equijax.training.ensemble.fit`, :func:`~equijax.training.ensemble.train_chunk`.
* :mod:`equijax.training.parallel` — data-parallel training over a device mesh, one host or
  several: :func:`data_mesh`, :func:`replicate`, :func:`put_global_batch`,
  :func:`data_parallel_jit`, :func:`initialize_distributed`, :func:`is_main_process`,
  :func:`local_rows` / :func:`gather_local_rows` (evaluation split over processes), ...
"""

from equijax.training import ensemble
from equijax.training.checkpoint import (
    CheckpointError,
    Run,
    SettingsMismatchError,
    canonical_json,
    resume_or_start,
    settings_fingerprint,
)
from equijax.training.parallel import (
    batch_sharding,
    check_distributed_args,
    data_mesh,
    data_parallel_jit,
    gather,
    gather_local_rows,
    host_rows,
    initialize_distributed,
    is_main_process,
    local_rows,
    orbit_spec_sharding,
    owned_rows,
    put_global_batch,
    replicate,
    replicated_sharding,
    shard_batch,
    sync,
)

__all__ = [
    "CheckpointError",
    "Run",
    "SettingsMismatchError",
    "batch_sharding",
    "canonical_json",
    "check_distributed_args",
    "data_mesh",
    "data_parallel_jit",
    "ensemble",
    "gather",
    "gather_local_rows",
    "host_rows",
    "initialize_distributed",
    "is_main_process",
    "local_rows",
    "orbit_spec_sharding",
    "owned_rows",
    "put_global_batch",
    "replicate",
    "replicated_sharding",
    "resume_or_start",
    "settings_fingerprint",
    "shard_batch",
    "sync",
]
