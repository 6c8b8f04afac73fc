"""Benchmark: evaluation of the whole SCAN Add Jump test split (7,706 commands), |G| = 2.

Measures examples/s of plain greedy decoding, step-wise equitune and equizero (max-probability
proxy) with an LSTM seq2seq (hidden 64), the whole split decoded in fixed-size jitted batches
(one ``lax.scan`` per batch, group branches vmapped). Compilation is excluded (one warm-up
run); the three decoders are interleaved round by round (``--repeats``, default 5) and the
medians and the per-round ratios to plain decoding (median, min–max) are reported. The model is
briefly trained so that output lengths are realistic (speed does not depend on accuracy: every
batch runs 50 decoder steps).

The reference PyTorch code decodes one example at a time: on this machine kind (2-core CPU)
it runs at 164 (plain) / 68 (equitune) / 65 (equizero) examples/s (facts.md §4).

Run from the repository root::

    python -m benchmarks.scan_eval [--batch 2048] [--repeats 5]
    python -m benchmarks.scan_eval --quick      # 20 training steps
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import _timing
from equijax.data import scan
from equijax.models import seq2seq as s2s

REFERENCE = {"plain": 164.0, "equitune": 68.0, "equizero": 65.0}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--batch", type=int, default=2048, help="decoding batch size")
    _timing.add_repeat_args(p)
    p.add_argument("--train-steps", type=int, default=100)
    p.add_argument("--quick", action="store_true", help="20 training steps")
    a = p.parse_args(argv)
    if a.quick:
        a.train_steps = 20

    train, test = scan.split("add_jump")
    (tr_src, tr_tgt), (src, _) = scan.encode(train), scan.encode(test)
    g_in, g_out = scan.groups("verb")
    model = s2s.Seq2Seq(len(scan.input_vocab()), len(scan.output_vocab()), cell="lstm")
    params = s2s.init_params(model, jax.random.key(0))
    opt = optax.adam(3e-3)
    st = opt.init(params)
    step = s2s.make_train_step(model, opt, sos_id=1)
    rng = np.random.default_rng(0)
    for i in range(a.train_steps):
        idx = rng.integers(0, len(tr_src), 64)
        params, st, _ = step(params, st, tr_src[idx], tr_tgt[idx], jax.random.key(i))

    n = len(src)
    bs = min(a.batch, n)
    n_pad = -n % bs
    src_p = np.concatenate([src, np.repeat(src[:1], n_pad, 0)])
    chunks = [jnp.asarray(src_p[i : i + bs]) for i in range(0, len(src_p), bs)]

    decoders = {
        "plain": jax.jit(lambda s: s2s.greedy_decode(model, params, s)),
        "equitune": jax.jit(
            lambda s: s2s.equivariant_decode(model, params, s, g_in, g_out, method="equitune")
        ),
        "equizero": jax.jit(
            lambda s: s2s.equivariant_decode(model, params, s, g_in, g_out, method="equizero")
        ),
    }
    compile_s = {}
    for name, fn in decoders.items():
        t0 = time.perf_counter()
        jax.block_until_ready(fn(chunks[0]))
        compile_s[name] = time.perf_counter() - t0

    def whole_split(fn):
        return lambda: jax.block_until_ready([fn(c) for c in chunks])

    load = _timing.Load.start()
    smp = _timing.interleave({k: whole_split(f) for k, f in decoders.items()}, a.repeats)
    load.stop()

    print(f"SCAN Add Jump test split ({n} commands), LSTM h=64, |G| = 2, batch {bs}; "
          f"{_timing.machine()}\n")  # fmt: skip
    print("| decoder | seconds (whole split, median) | examples/s | time / plain [min–max] "
          "| reference PyTorch ex/s | speed-up vs reference | process CPU s | compile s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, s in smp.items():
        eps = n / s.median
        rel = _timing.pair_ratios(s.wall, smp["plain"].wall).fmt(2)
        print(f"| {name} | {s.median:.2f} | {eps:,.0f} | {rel} | {REFERENCE[name]:.0f} "
              f"| {eps / REFERENCE[name]:.0f}× | {s.median_cpu:.2f} | {compile_s[name]:.1f} |")
    print(f"\n{_timing.footer(load, a.repeats)} The reference column is recorded, not measured "
          "in this run (facts.md §4).")

if __name__ == "__main__":
    main()
