"""Data-parallel training over a device mesh, on one host or several.

The experiments train data-parallel: the batch is split over the ``"batch"`` axis of a
``("group", "batch")`` device mesh, parameters and optimiser state are replicated, and the orbit
of the group methods may be split over the ``"group"`` axis (the mesh's
:func:`orbit_spec_sharding` is what :func:`equijax.equitune` and friends take as
``orbit_sharding=``). Gradients are averaged over the batch by the compiler (the loss is a mean
over the global batch), so a step on ``n`` devices computes the same update as on one device, up
to the order of floating-point sums.

Several hosts (TPU VM pods, multi-node GPU): call :func:`initialize_distributed` before anything
touches devices. Every host then reads the same global batch stream (same seed) and keeps only
the rows its devices hold (:func:`host_rows`); :func:`put_global_batch` (or
:func:`shard_batch` with per-host data) assembles the global :class:`jax.Array` with
:func:`jax.make_array_from_process_local_data`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

__all__ = [
    "batch_sharding",
    "check_distributed_args",
    "data_mesh",
    "data_parallel_jit",
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
    "shard_batch",
    "sync",
]


def check_distributed_args(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> None:
    """Validates explicit :func:`initialize_distributed` arguments (all three, or none).

    Args:
      coordinator_address: ``"HOST:PORT"`` of process 0's coordinator service.
      num_processes: ``N >= 1``, the number of processes of the job.
      process_id: ``0 <= I < N``, this process's index.

    Raises:
      ValueError: naming the argument (and its command-line flag) and the fix.

    Examples:
      >>> from equijax.training.parallel import check_distributed_args
      >>> check_distributed_args("127.0.0.1:1234", 2, 1)
      >>> check_distributed_args()  # automatic detection
      >>> check_distributed_args("127.0.0.1:1234", 2, 2)
      Traceback (most recent call last):
      ...
      ValueError: process_id=2 (--process-id) must be in [0, 2) for num_processes=2
    """
    given = {"coordinator_address (--coordinator)": coordinator_address,
             "num_processes (--num-processes)": num_processes,
             "process_id (--process-id)": process_id}  # fmt: skip
    if all(v is None for v in given.values()):
        return
    missing = [k for k, v in given.items() if v is None]
    if missing:
        raise ValueError(
            f"{', '.join(missing)} missing: pass coordinator_address, num_processes and "
            "process_id together (--coordinator HOST:PORT --num-processes N --process-id I), "
            "or none of them for jax's automatic detection (Cloud TPU, SLURM, Open MPI)"
        )
    host, sep, port = str(coordinator_address).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(
            f"coordinator_address={coordinator_address!r} (--coordinator) must be HOST:PORT, "
            "e.g. 10.0.0.1:1234 (process 0's host and a free port)"
        )
    if isinstance(num_processes, bool) or not isinstance(num_processes, int) or num_processes < 1:
        raise ValueError(f"num_processes={num_processes!r} (--num-processes) must be an int >= 1")
    if (
        isinstance(process_id, bool)
        or not isinstance(process_id, int)
        or not 0 <= process_id < num_processes
    ):
        raise ValueError(
            f"process_id={process_id!r} (--process-id) must be in [0, {num_processes}) for "
            f"num_processes={num_processes}"
        )


def initialize_distributed(
    enabled: bool = True,
    *,
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    local_device_ids: Sequence[int] | None = None,
    **kwargs: Any,
) -> None:
    """Starts :mod:`jax.distributed` for a multi-process run (no-op when ``enabled`` is false).

    Must run in every process before anything else touches devices (``jax.devices()``, the
    first array). Two ways in:

    * **automatic** (no arguments): :func:`jax.distributed.initialize` detects a Cloud TPU VM
      pod slice, a SLURM job step (``SLURM_JOB_ID``, ``SLURM_STEP_NODELIST``, ``SLURM_NTASKS``,
      ``SLURM_PROCID``, ``SLURM_LOCALID``; each process then uses only device
      ``[SLURM_LOCALID]`` of its node unless ``JAX_LOCAL_DEVICE_IDS`` says otherwise) and
      Open MPI 4 (``mpirun``). From the environment jax reads only ``JAX_COORDINATOR_ADDRESS``,
      ``JAX_COORDINATOR_PORT`` and ``JAX_LOCAL_DEVICE_IDS`` (not a process count or index);
    * **explicit**: ``coordinator_address="HOST:PORT"`` (process 0's host, a free port),
      ``num_processes=N`` and ``process_id=I`` in process ``I`` — all three or none
      (:func:`check_distributed_args`).

    Args:
      enabled: whether to initialise (the scripts pass ``--distributed``).
      coordinator_address: ``"HOST:PORT"`` of process 0.
      num_processes: the number of processes ``N``.
      process_id: this process's index ``0 <= I < N``.
      local_device_ids: the local devices this process uses (default: all, or jax's choice).
      **kwargs: forwarded to :func:`jax.distributed.initialize`.

    Raises:
      ValueError: explicit arguments that are incomplete or out of range (named).

    Examples:
      >>> from equijax.training import initialize_distributed
      >>> initialize_distributed(False)  # single process: nothing to do
    """
    check_distributed_args(coordinator_address, num_processes, process_id)
    if not enabled:
        return
    explicit = {"coordinator_address": coordinator_address, "num_processes": num_processes,
                "process_id": process_id, "local_device_ids": local_device_ids}  # fmt: skip
    jax.distributed.initialize(**{k: v for k, v in explicit.items() if v is not None}, **kwargs)


def is_main_process() -> bool:
    """Whether this is process 0, the one that writes results, tables, figures and run files.

    Examples:
      >>> from equijax.training import is_main_process
      >>> is_main_process()
      True
    """
    return jax.process_index() == 0


_BARRIERS = [0]


def sync(name: str, timeout: float = 1800.0) -> None:
    """A barrier of all processes (no-op with one process): e.g. after process 0 wrote a file.

    Uses the distributed runtime's coordination-service barrier (as orbax does), not a device
    collective, so a process may arrive long after the others (a device collective's first
    connection times out after a few tens of seconds). Every process must call the same
    barriers in the same order.

    Args:
      name: what is waited for (in error messages); made unique per call.
      timeout: seconds to wait for the other processes.

    Examples:
      >>> from equijax.training.parallel import sync
      >>> sync("nothing to wait for")
    """
    if jax.process_count() == 1:
        return
    _BARRIERS[0] += 1
    barrier = f"equijax_{_BARRIERS[0]}_{name}"
    try:
        from jax._src import distributed

        client = distributed.global_state.client
    except (ImportError, AttributeError):  # pragma: no cover - another jax layout
        client = None
    if client is None:  # pragma: no cover
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(barrier)
        return
    client.wait_at_barrier(barrier, timeout_in_ms=int(timeout * 1000))


def data_mesh(
    devices: int | Sequence[jax.Device] | None = None,
    group_devices: int = 1,
) -> Mesh:
    """A ``("group", "batch")`` mesh of ``devices`` with Auto axis types.

    ``group_devices`` devices along ``"group"`` (the orbit), the rest along ``"batch"``;
    ``group_devices=1`` is pure data parallelism. Devices keep :func:`jax.devices` order, so on
    several hosts each host's devices are contiguous along ``"batch"``.

    Args:
      devices: the first ``devices`` of :func:`jax.devices` (an int), an explicit device list,
        or ``None`` for all devices (of all hosts).
      group_devices: devices along the group axis; must divide the device count.

    Returns:
      A :class:`jax.sharding.Mesh` of shape ``(group_devices, n // group_devices)``.

    Raises:
      ValueError: if ``devices`` asks for more devices than exist or ``group_devices`` does
        not divide the device count.

    Examples:
      >>> import jax
      >>> from equijax.training import data_mesh
      >>> mesh = data_mesh(1)
      >>> mesh.axis_names, dict(mesh.shape)
      (('group', 'batch'), {'group': 1, 'batch': 1})
    """
    all_devices = jax.devices()
    if devices is None:
        devs = list(all_devices)
    elif isinstance(devices, int):
        if not 1 <= devices <= len(all_devices):
            raise ValueError(
                f"devices={devices} must be between 1 and the {len(all_devices)} available "
                "devices (on CPU, XLA_FLAGS=--xla_force_host_platform_device_count=N gives N)."
            )
        devs = list(all_devices[:devices])
    else:
        devs = list(devices)
        if not devs:
            raise ValueError("devices must not be empty")
    n = len(devs)
    if (
        isinstance(group_devices, (bool, np.bool_))
        or not isinstance(group_devices, (int, np.integer))
        or group_devices < 1
        or n % group_devices
    ):
        raise ValueError(
            f"group_devices={group_devices} must divide the number of devices ({n}); "
            f"choose one of {[d for d in range(1, n + 1) if n % d == 0]}."
        )
    group_devices = int(group_devices)
    grid = np.asarray(devs, dtype=object).reshape(group_devices, n // group_devices)
    return Mesh(grid, ("group", "batch"), axis_types=(AxisType.Auto, AxisType.Auto))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over ``"batch"``, replicated over ``"group"``: ``P("batch")``.

    Examples:
      >>> from equijax.training import batch_sharding, data_mesh
      >>> tuple(batch_sharding(data_mesh(1)).spec)
      ('batch',)
    """
    return NamedSharding(mesh, P("batch"))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array: ``P()`` (parameters, optimiser state, scalars).

    Examples:
      >>> from equijax.training import data_mesh, replicated_sharding
      >>> replicated_sharding(data_mesh(1)).is_fully_replicated
      True
    """
    return NamedSharding(mesh, P())


def orbit_spec_sharding(mesh: Mesh) -> NamedSharding:
    """The ``orbit_sharding=`` for the group methods on this mesh: ``P("group", "batch")``.

    Stacked orbit inputs ``(elements, B, ...)`` are split over ``"group"`` along the elements
    and over ``"batch"`` along the batch, consistently with :func:`batch_sharding`.

    Examples:
      >>> from equijax.training import data_mesh, orbit_spec_sharding
      >>> tuple(orbit_spec_sharding(data_mesh(1)).spec)
      ('group', 'batch')
    """
    return NamedSharding(mesh, P("group", "batch"))


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Places every leaf of ``tree`` on all devices of ``mesh`` (same value on every host).

    Works with several processes too: host values (NumPy, or arrays committed to one local
    device, e.g. freshly initialised parameters) are copied into a global replicated array
    (every process must pass the same value); typed PRNG keys go through their raw ``uint32``
    key data (:func:`jax.random.key_data` / :func:`jax.random.wrap_key_data`), which a global
    sharding accepts; arrays already on a global sharding are resharded.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from equijax.training import data_mesh, replicate
      >>> replicate({"w": jnp.ones(3)}, data_mesh(1))["w"].sharding.is_fully_replicated
      True
      >>> k = replicate(jax.random.key(0), data_mesh(1))
      >>> jax.dtypes.issubdtype(k.dtype, jax.dtypes.prng_key)
      True
    """
    sharding = replicated_sharding(mesh)
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)
    return jax.tree.map(lambda x: _replicate_leaf(x, sharding), tree)


def _replicate_leaf(x: Any, sharding: NamedSharding) -> Any:
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        impl = jax.random.key_impl(x)
        return jax.random.wrap_key_data(_replicate_leaf(jax.random.key_data(x), sharding),
                                        impl=impl)  # fmt: skip
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return x if x.sharding == sharding else jax.device_put(x, sharding)
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def _batch_size(tree: Any) -> int:
    sizes = {np.shape(x)[0] if np.ndim(x) else None for x in jax.tree.leaves(tree)}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(
            f"every leaf of the batch needs the same leading (batch) dimension; got {sizes}"
        )
    return sizes.pop()


def _check_divisible(global_batch: int, mesh: Mesh) -> None:
    n = mesh.shape["batch"]
    if global_batch % n:
        raise ValueError(
            f"the global batch size {global_batch} must be divisible by the {n} devices of the "
            "mesh's 'batch' axis; change the batch size or the device count."
        )


def host_rows(global_batch: int, mesh: Mesh) -> slice:
    """The rows ``[start, stop)`` of a global batch that this process's devices hold.

    Every host reads the same global batch stream and keeps ``batch[host_rows(B, mesh)]``;
    on one host this is ``slice(0, B)``.

    Args:
      global_batch: ``B``, divisible by the size of the mesh's ``"batch"`` axis.
      mesh: from :func:`data_mesh`.

    Raises:
      ValueError: if ``B`` is not divisible, or this process's rows are not contiguous (a mesh
        not built in :func:`jax.devices` order).

    Examples:
      >>> from equijax.training import data_mesh, host_rows
      >>> host_rows(8, data_mesh(1))
      slice(0, 8, None)
    """
    _check_divisible(global_batch, mesh)
    index_map = batch_sharding(mesh).addressable_devices_indices_map((global_batch,))
    rows = sorted({(ix[0].start or 0, global_batch if ix[0].stop is None else ix[0].stop)
                   for ix in index_map.values()})  # fmt: skip
    start, stop = rows[0][0], rows[-1][1]
    if sum(b - a for a, b in rows) != stop - start:
        raise ValueError("this process's batch rows are not contiguous; build the mesh with "
                         "data_mesh() (jax.devices() order)")  # fmt: skip
    return slice(start, stop)


def shard_batch(local: Any, mesh: Mesh, global_batch: int | None = None) -> Any:
    """Builds global batch arrays from this process's rows (per-host input).

    ``jax.make_array_from_process_local_data(batch_sharding(mesh), leaf, global_shape)`` for
    every leaf: process ``p`` passes rows ``host_rows(B, mesh)`` of the global batch.

    Args:
      local: a pytree of arrays ``(B_local, ...)`` — this process's rows.
      mesh: from :func:`data_mesh`.
      global_batch: ``B`` (default: ``B_local`` × :func:`jax.process_count`).

    Returns:
      The pytree of global :class:`jax.Array`\\ s ``(B, ...)`` sharded by
      :func:`batch_sharding`.

    Raises:
      ValueError: if the leaves disagree on ``B_local`` or ``B`` is not divisible by the
        ``"batch"`` axis.

    Examples:
      >>> import numpy as np
      >>> from equijax.training import data_mesh, shard_batch
      >>> x = shard_batch(np.arange(6.0).reshape(3, 2), data_mesh(1))
      >>> x.shape, tuple(x.sharding.spec)
      ((3, 2), ('batch',))
    """
    b_local = _batch_size(local)
    b = b_local * jax.process_count() if global_batch is None else int(global_batch)
    _check_divisible(b, mesh)
    sharding = batch_sharding(mesh)
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(
            sharding, np.asarray(x), (b, *np.shape(x)[1:])
        ),
        local,
    )


def put_global_batch(batch: Any, mesh: Mesh) -> Any:
    """Shards a global batch that every process holds in full: keeps this host's rows only.

    ``shard_batch(batch[host_rows(B, mesh)], mesh, B)`` for every leaf — what the experiments
    call with the batches of their (identically seeded) input streams.

    Examples:
      >>> import numpy as np
      >>> from equijax.training import data_mesh, put_global_batch
      >>> put_global_batch({"x": np.zeros((4, 3))}, data_mesh(1))["x"].shape
      (4, 3)
    """
    b = _batch_size(batch)
    rows = host_rows(b, mesh)
    return shard_batch(jax.tree.map(lambda x: np.asarray(x)[rows], batch), mesh, b)


def data_parallel_jit(fn: Callable[..., Any], mesh: Mesh, **jit_kwargs: Any) -> Callable[..., Any]:
    """``jax.jit(fn)`` whose outputs are all replicated over ``mesh`` (a training step).

    Inputs keep the shardings they come with (parameters :func:`replicate`\\ d, the batch from
    :func:`put_global_batch`); the compiler then all-reduces the gradients. ``fn`` may itself be
    jitted (it is inlined).

    Examples:
      >>> import jax.numpy as jnp
      >>> from equijax.training import data_mesh, data_parallel_jit
      >>> mesh = data_mesh(1)
      >>> f = data_parallel_jit(lambda w, x: (w - x.mean(0), (x**2).sum()), mesh)
      >>> w, s = f(jnp.zeros(2), jnp.ones((4, 2)))
      >>> w.tolist(), float(s), w.sharding.is_fully_replicated
      ([-1.0, -1.0], 8.0, True)
    """
    return jax.jit(fn, out_shardings=replicated_sharding(mesh), **jit_kwargs)


def _owners(global_batch: int, mesh: Mesh) -> dict[int, slice]:
    """``{process: its rows}`` for the processes that own rows: each process's rows (contiguous,
    as :func:`host_rows`), and of processes holding the same rows (an orbit split over
    processes along ``"group"``) only the lowest index."""
    held: dict[int, tuple[int, int]] = {}
    for dev, index in batch_sharding(mesh).devices_indices_map((global_batch,)).items():
        a = index[0].start or 0
        b = global_batch if index[0].stop is None else index[0].stop
        lo, hi = held.get(dev.process_index, (a, b))
        held[dev.process_index] = (min(lo, a), max(hi, b))
    first: dict[tuple[int, int], int] = {}
    for proc in sorted(held):
        first.setdefault(held[proc], proc)
    return {proc: slice(*rows) for rows, proc in first.items()}


def owned_rows(global_batch: int, mesh: Mesh) -> slice:
    """The rows of a global batch this process counts once (e.g. in an accuracy).

    :func:`host_rows`, except that of several processes holding the same rows (the orbit split
    over processes along ``"group"``) only the lowest-numbered one owns them; the others get an
    empty slice. Summing per-process counts over owned rows counts every row once.

    Examples:
      >>> from equijax.training import data_mesh, owned_rows
      >>> owned_rows(8, data_mesh(1))
      slice(0, 8, None)
    """
    _check_divisible(global_batch, mesh)
    rows = host_rows(global_batch, mesh)
    mine = _owners(global_batch, mesh).get(jax.process_index())
    return rows if mine is not None else slice(rows.start, rows.start)


def local_rows(x: jax.Array, mesh: Mesh) -> np.ndarray:
    """This process's rows of a global batch array, as NumPy, without communication.

    ``x`` (``(B, ...)``) is first placed on :func:`batch_sharding` (a no-op for a batch-sharded
    array); the result is ``x[host_rows(B, mesh)]``.

    Examples:
      >>> import numpy as np
      >>> from equijax.training import data_mesh, local_rows, put_global_batch
      >>> mesh = data_mesh(1)
      >>> local_rows(put_global_batch(np.arange(4), mesh), mesh).tolist()
      [0, 1, 2, 3]
    """
    rows = host_rows(x.shape[0], mesh)
    x = jax.device_put(x, batch_sharding(mesh))
    parts: dict[int, Any] = {}
    for shard in x.addressable_shards:
        parts.setdefault(shard.index[0].start or 0, shard.data)
    out = np.concatenate([np.asarray(parts[k]) for k in sorted(parts)])
    if len(out) != rows.stop - rows.start:  # pragma: no cover - guarded by host_rows
        raise ValueError("this process's rows are not contiguous")
    return out


def gather_local_rows(chunks: Sequence[np.ndarray], global_batch: int, mesh: Mesh) -> np.ndarray:
    """The global rows of several batch chunks from every process's :func:`local_rows`.

    Every process passes its rows of the same ``C`` chunks of ``global_batch`` rows each; one
    all-gather (:func:`jax.experimental.multihost_utils.process_allgather`) returns, on every
    process, the ``C * global_batch`` rows in global order (chunk by chunk). One process: the
    chunks concatenated.

    Args:
      chunks: ``C`` arrays ``(rows of this process, ...)`` of equal shape.
      global_batch: ``B``, the rows of one chunk over all processes.
      mesh: from :func:`data_mesh`.

    Examples:
      >>> import numpy as np
      >>> from equijax.training import data_mesh, gather_local_rows
      >>> gather_local_rows([np.arange(2), np.arange(2, 4)], 2, data_mesh(1)).tolist()
      [0, 1, 2, 3]
    """
    local = np.stack([np.asarray(c) for c in chunks])  # (C, r, ...)
    if jax.process_count() == 1:
        return local.reshape(-1, *local.shape[2:])
    from jax.experimental import multihost_utils

    every = np.asarray(multihost_utils.process_allgather(local, tiled=False))  # (P, C, r, ...)
    owners = _owners(global_batch, mesh)  # processes holding the same rows: the first one's
    order = sorted(owners, key=lambda p: owners[p].start)
    blocks = np.concatenate([every[p] for p in order], axis=1)  # (C, B, ...)
    return blocks.reshape(-1, *blocks.shape[2:])


def gather(tree: Any) -> Any:
    """The global value of every leaf as a NumPy array on every process (e.g. sharded outputs).

    One process: ``np.asarray``; several: an all-gather
    (:func:`jax.experimental.multihost_utils.process_allgather`).

    Examples:
      >>> import numpy as np
      >>> from equijax.training import data_mesh, gather, put_global_batch
      >>> gather(put_global_batch(np.arange(4), data_mesh(1))).tolist()
      [0, 1, 2, 3]
    """
    if jax.process_count() == 1:
        return jax.tree.map(np.asarray, tree)
    from jax.experimental import multihost_utils

    return jax.tree.map(
        lambda x: np.asarray(multihost_utils.process_allgather(x, tiled=True)), tree
    )
