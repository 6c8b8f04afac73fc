"""Cached GPT-2 sampling against the machine's matrix rate: plain, EquiLM and R-EquiLM.

In one process: the dense float32 GEMM rate (a jitted 2048³ matmul, median of ``--repeats``),
then the tokens/s of ``equijax.nlg.decoding.sample`` with methods ``pretrained`` (plain top-k
sampling), ``equitune`` (EquiLM) and ``r_equitune`` (R-EquiLM; |G| = 2, man ↔ woman) at batch 32,
64 and 128 (KV cache, one jitted program per call; compile excluded by a warm-up call). The
three methods are interleaved round by round at each batch size (``--repeats`` rounds, default
5); the EquiLM / plain ratio is the median of the per-round ratios, with its min–max. It prints

    FLOP utilisation = tokens/s × forward FLOPs per token ÷ GEMM FLOP/s,
    forward FLOPs per token = 2 × (non-embedding parameters + vocabulary × width),

(per *output* token: EquiLM runs |G| = 2 forwards per token, so its hardware use is twice its
figure). ``--profile`` adds where the time of one decoding step goes at one batch size: the
transformer step alone (KV cache, vmapped over the |G| branches for EquiLM), the token selection
alone (top-k filter, Gumbel noise, argmax over the vocabulary) and EquiLM's group combination.

    python -m benchmarks.sampling                  # GPT-2 small (124M, random weights)
    python -m benchmarks.sampling --quick          # 2 layers x 128 wide, full vocabulary
    python -m benchmarks.sampling --profile 64     # + the per-step breakdown at batch 64
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import _timing
from benchmarks.equilm_speed import _toy_group
from equijax import decoding as engine
from equijax.models import gpt2
from equijax.nlg import decoding

METHODS = ("pretrained", "equitune", "r_equitune")


def gemm_rate(repeats: int, n: int = 2048) -> float:
    """Dense float32 GEMM rate (FLOP/s) of a jitted ``n³`` matmul (median of ``repeats``)."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    mm = jax.jit(jnp.matmul)
    smp = _timing.interleave({"gemm": lambda: mm(a, b).block_until_ready()}, repeats)
    return 2 * n**3 / smp["gemm"].median


def forward_flops_per_token(cfg: gpt2.GPT2Config, params) -> float:
    """``2 × (non-embedding parameters + vocabulary × width)``."""
    total = sum(x.size for x in jax.tree_util.tree_leaves(params))
    emb = cfg.vocab_size * cfg.n_embd + cfg.n_positions * cfg.n_embd
    return 2.0 * (total - emb + cfg.vocab_size * cfg.n_embd)


def profile_step(model, params, dg, batch: int, prompt_len: int, steps: int, repeats: int):
    """Per-step seconds of the pieces of one EquiLM / plain decoding step (each jitted alone,
    as a ``lax.scan`` of ``steps`` steps)."""
    cfg = model.config
    v = cfg.vocab_size
    ids = jnp.tile(jnp.arange(prompt_len, dtype=jnp.int32)[None] + 500, (batch, 1))
    G = dg.group
    _, cache = gpt2.prefill(model, params, ids, max_length=prompt_len + steps)
    cache_g = jax.tree.map(lambda x: jnp.stack([x, x]), cache)
    tok = jnp.zeros((batch,), jnp.int32)
    logits = jax.random.normal(jax.random.key(0), (batch, v), jnp.float32)
    logits_g = jnp.stack([logits, logits[:, ::-1]])
    frame = jnp.zeros((batch,), jnp.int32)

    @jax.jit
    def model_plain(cache):
        def body(c, _):
            lg, c = gpt2.decode_step(model, params, c, tok)
            return c, lg[:, 0]

        return jax.lax.scan(body, cache, None, length=steps)[1]

    @jax.jit
    def model_equi(cache_g):
        def body(c, _):
            lg, c = jax.vmap(lambda cc: gpt2.decode_step(model, params, cc, tok))(c)
            return c, lg[:, :, 0]

        return jax.lax.scan(body, cache_g, None, length=steps)[1]

    def scan_steps(fn):
        # fn(i, key) for step i (a float32 scalar, so that nothing is constant-folded)
        xs = jnp.arange(steps, dtype=jnp.float32)
        return jax.jit(lambda: jax.lax.scan(
            lambda c, i: (c, fn(i, jax.random.fold_in(jax.random.key(1), i.astype(jnp.int32)))),
            0, xs)[1])  # fmt: skip

    temp = jnp.float32(1.0)
    pieces = {
        "transformer step, 1 branch (plain)": lambda: model_plain(cache),
        "transformer step, 2 branches (EquiLM, G = man ↔ woman)": lambda: model_equi(cache_g),
        "top-k filter (k = 40) over the vocabulary": scan_steps(
            lambda i, k: engine.filter_logits(logits + i, top_k=40, temperature=temp)[:, 0]
        ),
        "Gumbel noise (B × V) in the canonical frame": scan_steps(
            lambda i, k: engine.gumbel_in_frame(G, k, frame, v)[:, 0]
        ),
        "group combination 1/|G| Σ g⁻¹ l_g (sorted sum)": scan_steps(
            lambda i, k: decoding.combined_logits(G, logits_g + i)[:, 0]
        ),
        "argmax over the vocabulary": scan_steps(lambda i, k: jnp.argmax(logits + i, axis=-1)),
    }
    smp = _timing.interleave(
        {k: (lambda f=f: jax.block_until_ready(f())) for k, f in pieces.items()}, repeats
    )
    return {k: s.median / steps for k, s in smp.items()}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="2 layers x 128 wide, 8 new tokens")
    p.add_argument("--batches", default="32,64,128")
    p.add_argument("--new-tokens", type=int, default=15)
    p.add_argument("--profile", type=int, default=0, help="batch size of the per-step breakdown")
    _timing.add_repeat_args(p)
    a = p.parse_args(argv)
    if a.quick:
        cfg = gpt2.GPT2Config(n_positions=64, n_embd=128, n_layer=2, n_head=2)
        a.new_tokens = min(a.new_tokens, 8)
    else:
        cfg = gpt2.GPT2Config(n_positions=1024)  # GPT-2 small
    batches = [int(b) for b in a.batches.split(",")]
    model = gpt2.GPT2LMHeadModel(cfg)
    params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 1), jnp.int32))["params"]
    flops_tok = forward_flops_per_token(cfg, params)
    dg = _toy_group(cfg.vocab_size)
    prompt = [464, 582, 373, 1900, 329]  # "The man was known for"
    n = a.new_tokens

    load = _timing.Load.start()
    gemm = gemm_rate(a.repeats)
    rows = []
    for b in batches:
        ids = np.tile(np.asarray([prompt], np.int32), (b, 1))

        def run(method, ids=ids):
            out = decoding.sample(model, params, ids, method=method, group=dg,
                                  key=jax.random.key(1), max_new_tokens=n, top_k=40)  # fmt: skip
            return out.tokens.block_until_ready()

        smp = _timing.interleave({m: (lambda m=m: run(m)) for m in METHODS}, a.repeats)
        for m in METHODS:
            tps = b * n / smp[m].median
            rel = _timing.pair_ratios(smp["pretrained"].wall, smp[m].wall)  # tok/s ÷ plain tok/s
            rows.append((b, m, tps, tps * flops_tok / gemm, rel))
    prof = None
    if a.profile:
        prof = profile_step(model, params, dg, a.profile, len(prompt), n, a.repeats)
    load.stop()

    n_params = sum(x.size for x in jax.tree_util.tree_leaves(params))
    print(f"GPT-2 {n_params / 1e6:.0f}M params ({cfg.n_layer} layers, width {cfg.n_embd}, "
          f"vocabulary {cfg.vocab_size}), random weights, {n} new tokens, top-k 40, |G| = 2; "
          f"{_timing.machine()}\n")  # fmt: skip
    print(f"dense float32 GEMM (2048³, jit): {gemm / 1e9:.1f} GFLOP/s; forward FLOPs per token "
          f"{flops_tok / 1e6:.0f} MFLOP\n")  # fmt: skip
    print("| batch | method | tokens / s (median) | FLOP utilisation "
          "| tokens/s ÷ plain [min–max] |")
    print("|---:|---|---:|---:|---:|")
    for b, m, tps, util, rel in rows:
        print(f"| {b} | {m} | {tps:.1f} | {util:.3f} | {rel.fmt(2)} |")
    if prof:
        step = sum(v for k, v in prof.items() if "(plain)" not in k)
        print(f"\nWhere one EquiLM step goes at batch {a.profile} (each piece jitted alone, "
              "ms per step; the sum is an estimate of the EquiLM step):\n")  # fmt: skip
        print("| piece | ms / step | share of the EquiLM step |")
        print("|---|---:|---:|")
        for k, v in prof.items():
            share = "–" if "(plain)" in k else f"{v / step:.0%}"
            print(f"| {k} | {v * 1e3:.2f} | {share} |")
    print(f"\n{_timing.footer(load, a.repeats)}")


if __name__ == "__main__":
    main()
