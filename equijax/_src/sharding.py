"""Device meshes for evaluating a group orbit on several devices."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P


def orbit_sharding(
    group_devices: int | None = None,
    devices: Sequence[jax.Device] | None = None,
) -> NamedSharding:
    """A sharding for stacked orbit inputs ``(elements, B, ...)`` over a 2-D device mesh.

    The mesh has axes ``("group", "batch")``: group elements are spread over ``group_devices``
    devices and the batch over the rest. Pass the result as ``orbit_sharding=`` to
    :func:`equijax.equitune`, :func:`equijax.equizero` or :func:`equijax.lambda_equitune` inside
    :func:`jax.jit`; XLA then runs each device's share of the orbit and all-reduces the result.
    The group order (or ``chunk_size``) should be divisible by ``group_devices`` and the batch
    by the number of batch devices, or XLA pads.

    Args:
      group_devices: devices along the group axis (default: all devices, i.e. pure orbit
        parallelism; use 1 for pure data parallelism).
      devices: the devices to use (default: ``jax.devices()``).

    Returns:
      A :class:`jax.sharding.NamedSharding` with spec ``P("group", "batch")``.

    Raises:
      ValueError: if ``group_devices`` is not an int (a float or a bool) or does not divide
        the number of devices, or ``devices`` is empty.

    Examples:
      >>> import equijax as ej
      >>> s = ej.orbit_sharding(group_devices=1)
      >>> tuple(s.spec), s.mesh.axis_names
      (('group', 'batch'), ('group', 'batch'))
    """
    devices = list(jax.devices() if devices is None else devices)
    n = len(devices)
    if not devices:
        raise ValueError("devices must not be empty; pass None for jax.devices().")
    if group_devices is None:
        group_devices = n
    elif isinstance(group_devices, (bool, np.bool_)) or not isinstance(
        group_devices, (int, np.integer)
    ):
        # as training.data_mesh: only an int (never 2.5 -> 2 or True -> 1)
        raise ValueError(
            f"group_devices={group_devices!r} must be an int dividing the number of devices "
            f"({n}); choose one of {[d for d in range(1, n + 1) if n % d == 0]}."
        )
    group_devices = int(group_devices)
    if group_devices < 1 or n % group_devices:
        raise ValueError(
            f"group_devices={group_devices} must divide the number of devices ({n}); "
            f"choose one of {[d for d in range(1, n + 1) if n % d == 0]}."
        )
    grid = np.asarray(devices, dtype=object).reshape(group_devices, n // group_devices)
    mesh = Mesh(grid, ("group", "batch"), axis_types=(AxisType.Auto, AxisType.Auto))
    return NamedSharding(mesh, P("group", "batch"))
