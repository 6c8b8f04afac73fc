"""S_n-invariance for point sets too large to enumerate: sampled equitune and frame averaging.

A non-invariant MLP on the flattened coordinates of ``n`` 2-D points (random weights,
``2n -> 128 -> 128 -> 1``, tanh) is made S_n-invariant three ways:

* exact equitune over all ``n!`` orderings (``n <= 8``: 40,320 forward passes per example,
  evaluated in chunks);
* :func:`equijax.sampled_equitune` with ``k`` random orderings, ``strategy="iid"`` and
  ``"stratified"`` (over the ``n`` cosets "which point goes to slot 0");
* :func:`equijax.frame_average` over the sort frame (one forward pass, exactly invariant; it
  is a *different* invariant function from the group mean, so it has no "error vs exact").

Columns: forward passes per example; time per batch of 64 sets (compiled, median of 3);
RMS error against exact equitune over 16 keys (``n = 8``); the estimator's own standard error
(mean over examples); and the invariance error ``max_g mean_b |f(g x) - f(x)|`` over 8 random
permutations with the key held fixed (2 for exact equitune; 0 up to round-off for exact
methods). For ``n > 8`` only two sample sizes are run.

Run: ``python -m benchmarks.large_groups`` (about a minute on a quiet 2-core CPU; ``--small``
for a smoke run). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from equijax import SymmetricGroup, frame_average, sampled_equitune
from equijax.frames import sort_frame


def make_mlp(n: int, hidden: int = 128, seed: int = 0):
    ks = jax.random.split(jax.random.key(seed), 3)
    dims = [2 * n, hidden, hidden, 1]
    params = [
        jax.random.normal(k, shape) / np.sqrt(shape[0])
        for k, shape in zip(ks, itertools.pairwise(dims), strict=True)
    ]

    def fn(pts: jax.Array) -> jax.Array:
        h = pts.reshape(pts.shape[0], -1)
        for w in params[:-1]:
            h = jnp.tanh(h @ w)
        return (h @ params[-1])[:, 0]

    return fn


def timed(f, *args, repeats: int = 3) -> float:
    jax.block_until_ready(f(*args))  # compile
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(f(*args))
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def invariance_error(f, x, G: SymmetricGroup, key, num: int = 8) -> float:
    y = f(x)
    perms = G.sample(key, num)
    return max(float(jnp.abs(f(G.act(p, x)) - y).mean()) for p in perms)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--small", action="store_true", help="smoke run: n in (6, 8), k <= 64")
    p.add_argument("--batch", type=int, default=64)
    a = p.parse_args(argv)
    ns = (6, 8) if a.small else (8, 10, 12)
    ks = (16, 64) if a.small else (16, 64, 256, 1024)
    reps = 16
    rows = []
    t_start = time.perf_counter()
    for n in ns:
        G = SymmetricGroup(n)
        fn = make_mlp(n)
        x = jax.random.normal(jax.random.key(n), (a.batch, n, 2))
        key = jax.random.key(1)
        exact = None
        if n <= 8:
            f_exact = jax.jit(
                lambda z, G=G, fn=fn: sampled_equitune(
                    fn, G, z, elements=G.elements(), chunk_size=2048
                )
            )
            t = timed(f_exact, x, repeats=1)
            exact = f_exact(x)
            inv = invariance_error(f_exact, x, G, key, num=2)
            rows.append((n, "exact equitune", G.order, t, 0.0, 0.0, inv))
        rows.append(
            (n, "plain MLP", 1, timed(jax.jit(fn), x), None if exact is None else
             float(jnp.sqrt(jnp.mean((fn(x) - exact) ** 2))), None,
             invariance_error(fn, x, G, key))
        )  # fmt: skip
        for strategy in ("iid", "stratified"):
            for k in ks if n <= 8 else (ks[1], ks[-1]):
                one = jax.jit(
                    lambda z, kk, G=G, fn=fn, k=k, s=strategy: sampled_equitune(
                        fn, G, z, key=kk, num_samples=k, strategy=s, return_stderr=True,
                        chunk_size=min(k, 256))
                )  # fmt: skip
                t = timed(lambda z: one(z, key)[0], x)
                se = float(one(x, key)[1].mean())
                err = None
                if exact is not None:
                    many = jax.jit(jax.vmap(lambda kk: one(x, kk)[0]))
                    est = many(jax.random.split(jax.random.key(7), reps))
                    err = float(jnp.sqrt(jnp.mean((est - exact[None]) ** 2)))
                inv = invariance_error(lambda z: one(z, key)[0], x, G, key)
                rows.append((n, f"sampled ({strategy})", k, t, err, se, inv))
        spec = sort_frame(n)
        f_frame = jax.jit(lambda z, fn=fn, spec=spec: frame_average(fn, z, frame=spec))
        rows.append(
            (n, "frame average (sort)", 1, timed(f_frame, x), None, 0.0,
             invariance_error(f_frame, x, G, key))
        )  # fmt: skip
    wall = time.perf_counter() - t_start

    def fmt(v, spec=".4f"):
        return "—" if v is None else format(v, spec)

    print(
        f"\nS_n-invariant MLP on point sets, batch {a.batch}; jax {jax.__version__}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.1f}; total {wall:.0f} s\n"
    )
    print("| n | method | passes / example | ms / batch | RMS error vs exact | std. error | "
          "invariance error |")  # fmt: skip
    print("|---:|---|---:|---:|---:|---:|---:|")
    for n, name, k, t, err, se, inv in rows:
        print(
            f"| {n} | {name} | {k:,} | {1e3 * t:.1f} | {fmt(err)} | {fmt(se)} | {fmt(inv, '.2e')} |"
        )


if __name__ == "__main__":
    main()
