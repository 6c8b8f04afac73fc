"""Shared timing for the benchmarks: interleaved repeats, per-pair ratios, and the machine's load.

Every benchmark that compares implementations uses these helpers, so that a ratio survives a
rerun on a shared machine:

* :func:`interleave` runs the implementations in turn (A, B, A, B, …), ``repeats`` rounds after
  one warm-up call each, so that load from other processes hits every side alike;
* :func:`pair_ratios` divides the two sides round by round (the i-th A by the i-th B) and
  :class:`Spread` summarises those per-pair ratios by their median, min–max and interquartile
  range (never a single best-of-n);
* :class:`Load` records ``os.getloadavg()`` before and after the measurement and the number of
  CPUs, which every table states next to its numbers.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

MIN_REPEATS = 5


def _loadavg() -> tuple[float, float, float]:
    try:
        return os.getloadavg()
    except (AttributeError, OSError):  # pragma: no cover - not on Windows
        return (float("nan"),) * 3


@dataclasses.dataclass
class Load:
    """The machine's load average (1, 5, 15 min) before and after a measurement."""

    before: tuple[float, float, float]
    after: tuple[float, float, float] | None = None
    cpus: int = dataclasses.field(default_factory=lambda: os.cpu_count() or 1)

    @classmethod
    def start(cls) -> Load:
        return cls(before=_loadavg())

    def stop(self) -> Load:
        self.after = _loadavg()
        return self

    def describe(self) -> str:
        fmt = lambda t: "/".join(f"{x:.1f}" for x in t)
        after = fmt(self.after) if self.after else "–"
        # Only the load before the run says whether other jobs were there: the benchmark's own
        # process keeps up to every core busy, so the load after it counts the benchmark itself.
        busy = self.before[0] / self.cpus
        note = " (machine shared: timings taken under load)" if busy > 0.75 else ""
        return (
            f"load average (1/5/15 min) {fmt(self.before)} before, {after} after, "
            f"on {self.cpus} CPUs{note}"
        )


def machine(extra: str = "") -> str:
    """One line naming the machine and the software versions (jax, and ``extra``)."""
    import jax

    dev = jax.devices()[0].platform
    line = (
        f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"jax {jax.__version__} ({jax.device_count()} {dev} device(s))"
    )
    return f"{line}, {extra}" if extra else line


@dataclasses.dataclass
class Samples:
    """Timings of one implementation: the warm-up call and every timed repeat."""

    first: float
    wall: list[float]
    cpu: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.wall)

    @property
    def median_cpu(self) -> float:
        return statistics.median(self.cpu)


def timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """``(wall seconds, process CPU seconds, result)`` of one call."""
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - t, time.process_time() - c, out


def interleave(
    fns: Mapping[str, Callable[[], Any]], repeats: int = MIN_REPEATS, *, warmup: bool = True
) -> dict[str, Samples]:
    """Time each function ``repeats`` times, alternating between them (A, B, A, B, …).

    Each function must block until its work is done (``jax.block_until_ready``). With
    ``warmup`` each is called once first (compilation, caches), and that call's time is kept as
    :attr:`Samples.first`.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    first = {k: (timed(fn)[0] if warmup else float("nan")) for k, fn in fns.items()}
    wall: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            w, c, _ = timed(fn)
            wall[k].append(w)
            cpu[k].append(c)
    return {k: Samples(first[k], wall[k], cpu[k]) for k in fns}


@dataclasses.dataclass(frozen=True)
class Spread:
    """Median and spread of a list of per-pair ratios (or of any repeated measurement)."""

    values: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def lo(self) -> float:
        return min(self.values)

    @property
    def hi(self) -> float:
        return max(self.values)

    @property
    def iqr(self) -> tuple[float, float]:
        if len(self.values) < 2:
            return self.values[0], self.values[0]
        q = statistics.quantiles(self.values, n=4, method="inclusive")
        return q[0], q[2]

    def fmt(self, digits: int = 2, unit: str = "") -> str:
        """``"4.37× [3.91–4.60]"``: the median and, in brackets, min–max over the pairs."""
        d = digits
        return f"{self.median:.{d}f}{unit} [{self.lo:.{d}f}–{self.hi:.{d}f}]"


def pair_ratios(num: Sequence[float], den: Sequence[float]) -> Spread:
    """Per-round ratios ``num[i] / den[i]`` of two interleaved series."""
    if len(num) != len(den) or not num:
        raise ValueError("pair_ratios needs two non-empty series of equal length")
    return Spread(tuple(a / b for a, b in zip(num, den, strict=True)))


def spread(values: Sequence[float]) -> Spread:
    return Spread(tuple(values))


def footer(load: Load, repeats: int) -> str:
    """The closing line every table prints: how ratios were formed, and the load."""
    return (
        f"Ratios: median over {repeats} interleaved rounds of the per-round ratio, "
        f"[min–max] in brackets; {load.describe()}."
    )


def add_repeat_args(parser: Any, default: int = MIN_REPEATS) -> None:
    """``--repeats`` (interleaved rounds, at least 5 for a reported ratio)."""
    parser.add_argument(
        "--repeats",
        type=int,
        default=default,
        help=f"interleaved rounds per comparison (default {default}; use >= {MIN_REPEATS} "
        "for a reported ratio)",
    )
