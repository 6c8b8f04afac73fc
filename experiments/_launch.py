"""Run a script as N processes on this machine: a process-level simulation of a multi-host job.

Every process gets ``XLA_FLAGS=--xla_force_host_platform_device_count=D`` (D host CPU devices)
and the explicit start-up flags ``--coordinator 127.0.0.1:PORT --num-processes N --process-id
I`` (a free loopback port), so the N processes form one job of N × D devices, joined by JAX's
distributed runtime with its CPU collectives. Used by ``tests/test_multiprocess.py`` and for the
2-process measurement in ``benchmarks/RESULTS.md``::

    python -m experiments._launch --processes 2 --devices-per-process 2 -- \\
        -m experiments.clip_finetune --model tiny-random --mock-data --quick --out /tmp/run

Each process's stdout/stderr go to ``<log-dir>/process<I>.out`` / ``.err`` (default: a temporary
folder, printed). The launcher waits with a deadline: if a process fails or the time is up it
kills the others (no process is left waiting at a barrier) and exits non-zero.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port on the loopback address that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


@dataclasses.dataclass
class ProcessResult:
    """One process of a :func:`launch`: its index, exit code and captured output."""

    process_id: int
    returncode: int | None  # None: killed (deadline or another process failed)
    stdout: str
    stderr: str


def launch(
    args: Sequence[str],
    *,
    processes: int = 2,
    devices_per_process: int = 2,
    timeout: float = 300.0,
    log_dir: str | os.PathLike | None = None,
    env: dict[str, str] | None = None,
    cwd: str | os.PathLike | None = None,
) -> list[ProcessResult]:
    """Runs ``python <args> --coordinator ... --process-id I`` for ``I < processes``.

    Args:
      args: the Python command line after ``python`` (e.g. ``["-m", "experiments.scan", ...]``).
      processes: the number of processes ``N``.
      devices_per_process: host CPU devices per process.
      timeout: seconds for the whole job; then every process still running is killed.
      log_dir: where ``process<I>.out`` / ``.err`` are written (default: a temporary folder).
      env: extra environment variables for every process.
      cwd: the working directory of the processes.

    Returns:
      One :class:`ProcessResult` per process, in process order.
    """
    if processes < 1 or devices_per_process < 1:
        raise ValueError("processes and devices_per_process must be >= 1")
    logs = Path(log_dir) if log_dir is not None else Path(tempfile.mkdtemp(prefix="launch-"))
    logs.mkdir(parents=True, exist_ok=True)
    port = free_port()
    devices = f"--xla_force_host_platform_device_count={devices_per_process}"
    base = {**os.environ, **(env or {}), "JAX_PLATFORMS": "cpu", "XLA_FLAGS": devices}
    procs, files = [], []
    try:
        for i in range(processes):
            out = open(logs / f"process{i}.out", "w")  # closed below
            err = open(logs / f"process{i}.err", "w")
            files += [out, err]
            cmd = [sys.executable, *args, "--coordinator", f"{LOOPBACK}:{port}",
                   "--num-processes", str(processes), "--process-id", str(i)]  # fmt: skip
            procs.append(subprocess.Popen(cmd, stdout=out, stderr=err, env=base, cwd=cwd))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            codes = [p.poll() for p in procs]
            if all(c is not None for c in codes) or any(c not in (None, 0) for c in codes):
                break
            time.sleep(0.2)
    finally:
        for p in procs:  # a failed or late job: kill what is left (these children only)
            if p.poll() is None:
                p.kill()
                p.wait()
        for f in files:
            f.close()
    return [
        ProcessResult(i, p.returncode if p.returncode is not None and p.returncode >= 0 else None,
                      (logs / f"process{i}.out").read_text(),
                      (logs / f"process{i}.err").read_text())
        for i, p in enumerate(procs)
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments._launch", description=__doc__)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--devices-per-process", type=int, default=2)
    p.add_argument("--timeout", type=float, default=3600.0)
    p.add_argument("--log-dir", type=Path, default=None)
    p.add_argument("args", nargs=argparse.REMAINDER, help="-- then the python arguments")
    a = p.parse_args(argv)
    args = a.args[1:] if a.args[:1] == ["--"] else a.args
    if not args:
        p.error("give the script after --, e.g. -- -m experiments.scan --quick")
    t0 = time.time()
    results = launch(args, processes=a.processes, devices_per_process=a.devices_per_process,
                     timeout=a.timeout, log_dir=a.log_dir)  # fmt: skip
    for r in results:
        sys.stderr.write(f"process {r.process_id}: exit {r.returncode}\n")
    sys.stderr.write(f"wall {time.time() - t0:.1f} s\n")
    sys.stdout.write(results[0].stdout)
    return 0 if all(r.returncode == 0 for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
