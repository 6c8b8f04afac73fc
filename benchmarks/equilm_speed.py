"""EquiLM sampling speed: equijax (KV cache, vmapped over G, batched, one jitted program) against
the reference code's way (for every sample, every step and every g, re-run the model on the full
context without a cache), in JAX and in PyTorch (transformers, as the reference code), on
GPT-2-small-size random weights, |G| = 2, side by side in one run.

    python -m benchmarks.equilm_speed            # GPT-2 small size (124M), 15 tokens, top-k 40
    python -m benchmarks.equilm_speed --quick    # a small model, seconds

Prints a markdown table of tokens per second (new tokens of all samples / wall time, compile
excluded: every path is run once to warm up first); the paths are interleaved round by round
(``--repeats``, default 5) and each speed-up is the median of the per-round ratios, with its
min–max.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import _timing
from equijax.models import gpt2
from equijax.nlg import decoding, groups


def _toy_group(vocab_size: int) -> groups.DemographicGroup:
    # " man" <-> " woman" as in GPT-2's vocabulary (ids 582 and 2415), no tokenizer needed
    vocab = {"Ġman": 582, "Ġwoman": 2415, "Ġhe": 339, "Ġshe": 673}
    return groups.demographic_group(
        vocab, [[" man", " woman"]], general_words=[" he", " she"], variants=False,
        vocab_size=vocab_size,
    )  # fmt: skip


def reference_loop(model, params, dg, length):
    """The reference code's way in JAX: ``run(prompt, n, top_k, seed)`` draws one sample; for each
    step and each g, a full forward pass on g·context (no cache), right-padded to ``length``.

    The forward is jitted once (one buffer shape) and the permutations are precomputed, so the
    timed calls measure the no-cache forwards, not compilation or index bookkeeping.
    """
    G = dg.group
    perm = np.asarray(G.perms)  # perm[g][v] = g·v

    @jax.jit
    def last_logits(ids, n_valid):
        mask = jnp.arange(ids.shape[1])[None] < n_valid
        logits, _ = model.apply({"params": params}, ids, attention_mask=mask)
        return jax.lax.dynamic_index_in_dim(logits[0], n_valid - 1, keepdims=False)

    def run(prompt, n, top_k, seed):
        t = len(prompt)
        buf = np.full((1, length), 50256 % model.config.vocab_size, np.int32)
        buf[0, :t] = prompt
        rng = np.random.default_rng(seed)
        for i in range(n):
            # (g⁻¹ · logits)[v] = logits[g · v]
            per_g = [np.asarray(last_logits(perm[g][buf], t + i))[perm[g]]
                     for g in range(G.order)]  # fmt: skip
            avg = np.mean(per_g, axis=0)
            top = np.argpartition(avg, -top_k)[-top_k:]
            p = np.exp(avg[top] - avg[top].max())
            buf[0, t + i] = top[rng.choice(top_k, p=p / p.sum())]
        return buf

    return run


def torch_reference(cfg, dg):
    """The reference code's way in PyTorch (transformers GPT-2, same config, random weights).

    Returns ``run(prompt, n, top_k, seed)``, which draws one sample: for each step and each g, a
    full forward pass on the growing g·context without a cache, g⁻¹ applied to the last logits,
    the |G| logits averaged, top-k sampling. ``None`` when torch / transformers are missing.
    """
    try:
        import torch
        import transformers
    except ImportError:
        return None
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=cfg.vocab_size, n_positions=cfg.n_positions, n_embd=cfg.n_embd,
        n_layer=cfg.n_layer, n_head=cfg.n_head,
    )).eval()  # fmt: skip
    G = dg.group
    perms = [torch.tensor(np.array(G.act(g, np.arange(cfg.vocab_size))))
             for g in range(G.order)]  # fmt: skip

    def run(prompt, n, top_k, seed):
        torch.manual_seed(seed)
        ids = torch.as_tensor([prompt])
        with torch.inference_mode():
            for _ in range(n):
                # (g⁻¹ · logits)[v] = logits[g · v]
                per_g = [model(perms[g][ids], use_cache=False).logits[0, -1][perms[g]]
                         for g in range(G.order)]  # fmt: skip
                avg = torch.stack(per_g).mean(0)
                top = torch.topk(avg, top_k)
                nxt = top.indices[torch.multinomial(torch.softmax(top.values, -1), 1)]
                ids = torch.cat([ids, nxt[None]], 1)
        return ids

    return run


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--batch", type=int, default=32, help="samples per equijax call")
    ap.add_argument("--ref-samples", type=int, default=2, help="samples for the slow loop")
    ap.add_argument("--new-tokens", type=int, default=15)
    _timing.add_repeat_args(ap)
    args = ap.parse_args(argv)
    if args.quick:
        cfg = gpt2.GPT2Config(n_positions=64, n_embd=64, n_layer=2, n_head=2)
    else:
        cfg = gpt2.GPT2Config(n_positions=1024)  # GPT-2 small: 768 wide, 12 layers, 124M
    model = gpt2.GPT2LMHeadModel(cfg)
    params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 1), jnp.int32))["params"]
    n_params = sum(x.size for x in jax.tree_util.tree_leaves(params))
    dg = _toy_group(cfg.vocab_size)
    prompt = [464, 582, 373, 1900, 329]  # "The man was known for"
    n, k = args.new_tokens, 40
    ids = np.tile(np.asarray([prompt], np.int32), (args.batch, 1))

    def ours():
        out = decoding.sample(model, params, ids, method="equitune", group=dg,
                              key=jax.random.key(1), max_new_tokens=n, top_k=k)  # fmt: skip
        return out.tokens.block_until_ready()

    jax_run = reference_loop(model, params, dg, len(prompt) + n)
    torch_run = torch_reference(cfg, dg)
    fns = {"ours": ours}
    fns["jax_ref"] = lambda: [jax_run(prompt, n, k, s) for s in range(args.ref_samples)]
    if torch_run is not None:
        fns["torch_ref"] = lambda: [torch_run(prompt, n, k, s) for s in range(args.ref_samples)]
    load = _timing.Load.start()
    smp = _timing.interleave(fns, args.repeats)  # the warm-up call compiles
    load.stop()
    counts = {"ours": args.batch, "jax_ref": args.ref_samples, "torch_ref": args.ref_samples}
    labels = {
        "ours": f"equijax EquiLM (KV cache, vmap over G, batch {args.batch}, jit)",
        "jax_ref": "reference-style loop (no cache, per sample, per g; JAX jit forward)",
        "torch_ref": "reference code's way in PyTorch (transformers GPT-2, no cache, per sample, "
        f"per g; {_torch_threads()} threads)",
    }
    rows = [(labels[name], counts[name] * n / smp[name].median, smp[name].median / counts[name])
            for name in fns]  # fmt: skip
    print(f"GPT-2 config: {n_params / 1e6:.0f}M params (random weights), |G| = 2, "
          f"{n} new tokens, top-k {k}; {_timing.machine()}\n")  # fmt: skip
    print("| path | tokens / s (median) | s / sample (median) |")
    print("|---|---|---|")
    for name, tps, sps in rows:
        print(f"| {name} | {tps:.1f} | {sps:.3f} |")
    print()
    for name in list(fns)[1:]:
        # per round: (tokens_ours / t_ours) / (tokens_ref / t_ref)
        scale = counts["ours"] / counts[name]
        sp = _timing.pair_ratios([scale * t for t in smp[name].wall], smp["ours"].wall)
        print(f"speed-up of equijax EquiLM over the {labels[name].split(' (')[0]}: "
              f"{sp.fmt(1, 'x')}")  # fmt: skip
    print(f"\n{_timing.footer(load, args.repeats)}")


if __name__ == "__main__":
    main()
