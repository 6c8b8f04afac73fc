"""Overhead of equitune / equizero / λ-equitune over a plain forward pass, and memory vs chunk size.

Side by side in one run, on a ViT image encoder with random weights (ViT-B/32 size by default:
width 768, 12 layers, 12 heads, patch 32, 224x224 images), batch 32, group C4 (rot90):

* P1: equitune time / plain forward of the 4x batch (the same 128 images, stacked by hand);
* P2: λ-equitune time / equitune time, with λ reading the backbone's own features (has_aux);
* P3: equizero time / equitune time;
* P6: peak temporary memory (XLA's compiled memory analysis) and time vs ``chunk_size``;
* exact: time and peak temporary memory of ``exact=True`` (order-independent sorted sums,
  bitwise equivariant) relative to the default reduction, for equitune / equizero / λ-equitune,
  and for equitune with a dense per-pixel output (the sort's worst case: ``|G|·B·H·W·C`` values).

Run: ``python -m benchmarks.core_overhead`` (``--small`` for a quick smoke run).
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform

import flax.linen as nn
import jax
import jax.numpy as jnp

import equijax as ej
from benchmarks._timing import MIN_REPEATS, interleave, pair_ratios


class Block(nn.Module):
    width: int
    heads: int

    @nn.compact
    def __call__(self, x):
        h = nn.LayerNorm()(x)
        x = x + nn.MultiHeadDotProductAttention(num_heads=self.heads)(h, h)
        h = nn.LayerNorm()(x)
        h = nn.Dense(4 * self.width)(h)
        return x + nn.Dense(self.width)(nn.gelu(h))


class ViT(nn.Module):
    """A plain ViT image encoder returning (logits, pooled features)."""

    width: int = 768
    layers: int = 12
    heads: int = 12
    patch: int = 32
    classes: int = 100

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(self.width, (self.patch, self.patch), strides=self.patch, use_bias=False)(x)
        x = x.reshape(x.shape[0], -1, self.width)
        cls = self.param("cls", nn.initializers.normal(0.02), (1, 1, self.width))
        x = jnp.concatenate([jnp.broadcast_to(cls, (x.shape[0], 1, self.width)), x], axis=1)
        x = x + self.param("pos", nn.initializers.normal(0.02), (1, x.shape[1], self.width))
        for _ in range(self.layers):
            x = Block(self.width, self.heads)(x)
        feats = nn.LayerNorm()(x[:, 0])
        return nn.Dense(self.classes)(feats), feats


def temp_bytes(f, *args):
    analysis = jax.jit(f).lower(*args).compile().memory_analysis()
    return getattr(analysis, "temp_size_in_bytes", float("nan"))


def setup(small: bool = False, batch: int = 32):
    """``(model, G, x, params, logits, equizero_fn)`` of the benchmark (P3 also in ``p3_order``)."""
    cfg = dict(width=64, layers=2, heads=4, patch=8) if small else {}
    size = 32 if small else 224
    model = ViT(**cfg)
    G = ej.groups.rot90()
    x = jax.random.normal(jax.random.key(0), (batch, size, size, 3))
    params = model.init(jax.random.key(1), x[:1])

    def logits(p, z):
        return model.apply(p, z)[0]

    def equizero_fn(p, x, exact=False):
        return ej.equizero(
            lambda z: logits(p, z), G, x, loss=ej.proxies.neg_max_probability, exact=exact
        )

    return model, G, x, params, logits, equizero_fn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--small", action="store_true", help="tiny model for a smoke run")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=MIN_REPEATS, help="interleaved rounds")
    parser.add_argument(
        "--exact-only", action="store_true", help="only the exact=True vs default table"
    )
    args = parser.parse_args()

    model, G, x, params, logits, equizero_fn = setup(args.small, args.batch)
    lam = ej.LambdaNet()
    lam_params = lam.init(jax.random.key(2), jnp.ones((1, model.width)))

    @jax.jit
    def plain_4x(p, x):
        stacked = jnp.concatenate([G.act(g, x) for g in range(G.order)], axis=0)
        return logits(p, stacked)

    def equitune(p, x, chunk=None, exact=False):
        return ej.equitune(lambda z: logits(p, z), G, x, chunk_size=chunk, exact=exact)

    def lambda_fn(p, lp, x, exact=False):
        return ej.lambda_equitune(
            lambda z: model.apply(p, z),
            G,
            x,
            has_aux=True,
            weight_fn=lambda f: lam.apply(lp, f),
            exact=exact,
        )

    equizero = jax.jit(equizero_fn)
    lambda_equitune = jax.jit(lambda_fn)

    r = args.repeats
    print(
        f"Machine: {platform.machine()}, {jax.device_count()} CPU device(s), "
        f"jax {jax.__version__}; "
        f"model {'small' if args.small else 'ViT-B/32-size'}, batch {args.batch}, C4; "
        f"1-min load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} core(s)\n"
    )
    if not args.exact_only:
        overhead_tables(params, lam_params, x, r, plain_4x, equitune, equizero, lambda_equitune)
    exact_table(model, params, lam_params, x, r, G, logits, equitune, equizero_fn, lambda_fn)
    print(f"\n1-min load average at the end {os.getloadavg()[0]:.1f}")


def overhead_tables(params, lam_params, x, r, plain_4x, equitune, equizero, lambda_equitune):
    """P1–P3 and the chunk table, every implementation timed in interleaved rounds."""
    tune = jax.jit(equitune, static_argnums=2)
    fns = {
        "plain": lambda: jax.block_until_ready(plain_4x(params, x)),
        "equitune": lambda: jax.block_until_ready(tune(params, x, None)),
        "equizero": lambda: jax.block_until_ready(equizero(params, x)),
        "lambda": lambda: jax.block_until_ready(lambda_equitune(params, lam_params, x)),
    }
    s = interleave(fns, r)

    def ratio(a, b):
        return pair_ratios(s[a].wall, s[b].wall)

    rows = [
        ("P1 equitune / plain forward of 4x batch", ratio("equitune", "plain"), "≤ 1.05",
         f"{s['equitune'].median:.2f} s / {s['plain'].median:.2f} s"),
        ("P2 λ-equitune / equitune (λ on backbone features)", ratio("lambda", "equitune"),
         "≤ 1.10", f"{s['lambda'].median:.2f} s"),
        ("P3 equizero / equitune", ratio("equizero", "equitune"), "≤ 1.02",
         f"{s['equizero'].median:.2f} s"),
    ]  # fmt: skip
    print(f"| ratio (median of {r} interleaved rounds, [min–max]) | measured | target |")
    print("|---|---|---|")
    for name, sp, target, detail in rows:
        print(f"| {name} | {sp.fmt(3)} ({detail}) | {target} |")

    print(
        "\n| chunk_size | peak temp memory (MiB) | time (s, median) | time / unchunked [min–max] |"
        "\n|---|---|---|---|"
    )
    chunks = (None, 2, 1)
    jitted = {c: jax.jit(lambda p, x, c=c: equitune(p, x, c)) for c in chunks}
    calls = {c: (lambda c=c: jax.block_until_ready(jitted[c](params, x))) for c in chunks}
    t = interleave(calls, r)
    for chunk in chunks:
        mem = temp_bytes(lambda p, x, c=chunk: equitune(p, x, c), params, x) / 2**20
        sp = pair_ratios(t[chunk].wall, t[None].wall)
        print(f"| {chunk or 'None (all 4)'} | {mem:.1f} | {t[chunk].median:.2f} | {sp.fmt(3)} |")


def exact_table(model, params, lam_params, x, r, G, logits, equitune, equizero_fn, lambda_fn):
    """exact=True against the default, same model and batch."""

    def dense(p, x, exact):  # per-pixel output: the patch embedding upsampled back to pixels
        return ej.equitune(
            lambda z: jnp.tanh(z) * logits(p, z).mean(-1)[:, None, None, None],
            G,
            x,
            out_action=G.act,
            exact=exact,
        )

    cases = {
        "equitune (logits)": (lambda e: lambda p, x: equitune(p, x, None, e), (params, x)),
        "equizero (logits)": (lambda e: lambda p, x: equizero_fn(p, x, e), (params, x)),
        "λ-equitune (logits)": (
            lambda e: lambda p, lp, x: lambda_fn(p, lp, x, e),
            (params, lam_params, x),
        ),
        "equitune (dense image output)": (lambda e: lambda p, x: dense(p, x, e), (params, x)),
    }
    print(
        "\n| exact=True vs default (interleaved, medians) | time default (s) | time exact (s) "
        "| time ratio (min–max) | temp MiB default | temp MiB exact |\n|---|---|---|---|---|---|"
    )
    for name, (make, fargs) in cases.items():
        fa, fb = jax.jit(make(False)), jax.jit(make(True))
        t = interleave(
            {
                "default": lambda fa=fa: jax.block_until_ready(fa(*fargs)),
                "exact": lambda fb=fb: jax.block_until_ready(fb(*fargs)),
            },
            r,
        )
        sp = pair_ratios(t["exact"].wall, t["default"].wall)
        mems = [temp_bytes(make(e), *fargs) / 2**20 for e in (False, True)]
        print(
            f"| {name} | {t['default'].median:.2f} | {t['exact'].median:.2f} "
            f"| {sp.median:.3f} ({sp.lo:.3f}–{sp.hi:.3f}) | {mems[0]:.1f} | {mems[1]:.1f} |"
        )


if __name__ == "__main__":
    main()
