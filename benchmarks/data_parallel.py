"""Data-parallel scaling check: the SCAN pretraining step on N host devices vs 1.

One process with ``--xla_force_host_platform_device_count=8`` (set here unless ``XLA_FLAGS``
already asks for a device count). The same global batch (SCAN Add Jump, the paper's LSTM, hidden
64, batch 64) is trained with the one-device step of ``experiments.scan`` and with the
data-parallel step on a mesh of N devices (``experiments.scan --devices N``: batch split over
the devices, parameters replicated, gradients all-reduced). The implementations run in turn
(interleaved rounds of ``--steps`` steps, after a compiling warm-up), and the table gives the
median steps/s with its min–max and the ratio to one device.

CPU host devices are slices of the same cores (2 on the reference machine), so this measures the
overhead of splitting and all-reducing, not a speed-up: on real accelerators each device brings
its own compute.

    python -m benchmarks.data_parallel                 # 1 vs 8 devices, 5 rounds (~1.5 min)
    python -m benchmarks.data_parallel --devices 1 2 4 8 --steps 30 --repeats 5
"""

from __future__ import annotations

import os

if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    ).strip()

import argparse
import statistics
import time

from benchmarks._timing import MIN_REPEATS


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(prog="python -m benchmarks.data_parallel", description=__doc__)
    p.add_argument("--devices", type=int, nargs="+", default=[1, 8])
    p.add_argument("--steps", type=int, default=20, help="timed steps per round")
    p.add_argument("--repeats", type=int, default=MIN_REPEATS, help="interleaved rounds")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--cell", default="lstm", choices=["lstm", "gru", "rnn"])
    a = p.parse_args(argv)

    import jax
    import numpy as np

    from benchmarks import _timing
    from equijax.models import seq2seq as s2s
    from experiments import scan as scan_exp

    data = scan_exp.load_split("add_jump", 0.1)
    model = s2s.Seq2Seq(
        len(scan_exp.scan.input_vocab()), len(scan_exp.scan.output_vocab()), cell=a.cell
    )
    params0 = s2s.init_params(model, jax.random.key(0))
    # One fixed length bucket: every step has the same shape (one compilation per setting).
    it = scan_exp.bucketed_batches(*data.train, a.batch_size, np.random.default_rng(0),
                                   buckets=(scan_exp.scan.MAX_OUTPUT_LEN,))  # fmt: skip
    batches = [next(it) for _ in range(a.steps)]

    runners = {}
    for n in a.devices:
        mesh = None if n == 1 else scan_exp.data_parallel_mesh(n)
        opt, step = scan_exp._pretrain_step(model, 10_000, 3e-3, 0.5, mesh)
        (params, opt_state), _ = scan_exp._put(mesh, (params0, opt.init(params0)))
        placed = [scan_exp._put(mesh, jax.random.key(i), b) for i, b in enumerate(batches)]

        def run(step=step, params=params, opt_state=opt_state, placed=placed):
            p, o = params, opt_state
            for key, (src, tgt) in placed:
                p, o, loss = step(p, o, src, tgt, key)
            jax.block_until_ready((p, o, loss))

        t = time.perf_counter()
        run()  # compile + warm up
        runners[n] = (run, time.perf_counter() - t)

    load = _timing.Load.start()
    rates: dict[int, list[float]] = {n: [] for n in a.devices}
    for _ in range(a.repeats):
        for n in a.devices:
            t = time.perf_counter()
            runners[n][0]()
            rates[n].append(a.steps / (time.perf_counter() - t))
    load.stop()

    base = statistics.median(rates[a.devices[0]])
    rows = []
    lines = [
        f"SCAN pretraining step ({a.cell.upper()}, hidden {model.hidden}, batch {a.batch_size}, "
        f"target length {scan_exp.scan.MAX_OUTPUT_LEN}); {a.repeats} interleaved rounds of "
        f"{a.steps} steps",
        "",
        f"| devices | steps/s (median, min–max) | examples/s | vs {a.devices[0]} device(s) "
        "| first call (s) |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    for n in a.devices:
        med = statistics.median(rates[n])
        rows.append({"devices": n, "steps_per_s": med, "ratio": med / base})
        lines.append(
            f"| {n} | {med:.2f} ({min(rates[n]):.2f}–{max(rates[n]):.2f}) | "
            f"{med * a.batch_size:.0f} | {med / base:.2f}× | {runners[n][1]:.1f} |"
        )
    lines += ["", _timing.machine(), load.describe()]
    print("\n".join(lines))
    return rows


if __name__ == "__main__":
    main()
