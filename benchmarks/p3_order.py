"""P3 (equizero / equitune) with the order inside each round swapped: a cost or a position effect?

``benchmarks.core_overhead`` times plain, equitune, equizero and λ-equitune in that order in every
round, so equizero always runs right after equitune. This script interleaves only the two, first as
(equitune, equizero), then as (equizero, equitune), 5 rounds each, on the same ViT-B/32-size model,
batch and group as P3, and prints the median per-round ratio equizero / equitune for both orders::

    python -m benchmarks.p3_order        # ~4 min on 2 CPU cores
    python -m benchmarks.p3_order --small  # smoke run, seconds
"""

from __future__ import annotations

import argparse

import jax

import equijax as ej
from benchmarks._timing import MIN_REPEATS, Load, footer, interleave, machine, pair_ratios
from benchmarks.core_overhead import setup


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--small", action="store_true", help="tiny model for a smoke run")
    small = p.parse_args().small
    _, G, x, params, logits, equizero_fn = setup(small)
    tune = jax.jit(lambda p, x: ej.equitune(lambda z: logits(p, z), G, x))
    zero = jax.jit(equizero_fn)
    calls = {
        "equitune": lambda: jax.block_until_ready(tune(params, x)),
        "equizero": lambda: jax.block_until_ready(zero(params, x)),
    }
    load = Load.start()
    rows = []
    for order in (("equitune", "equizero"), ("equizero", "equitune")):
        s = interleave({k: calls[k] for k in order}, MIN_REPEATS)
        rows.append((order, pair_ratios(s["equizero"].wall, s["equitune"].wall), s))
    load.stop()
    size = "small" if small else "ViT-B/32 size"
    print(f"P3 by order within a round; {size}, batch 32, C4; {machine()}\n")
    print("| order in each round | equizero / equitune [min–max] | equitune s | equizero s |")
    print("|---|---:|---:|---:|")
    for order, ratio, s in rows:
        print(f"| {', '.join(order)} | {ratio.fmt(3)} | {s['equitune'].median:.2f} "
              f"| {s['equizero'].median:.2f} |")  # fmt: skip
    print(f"\n{footer(load, MIN_REPEATS)}")


if __name__ == "__main__":
    main()
