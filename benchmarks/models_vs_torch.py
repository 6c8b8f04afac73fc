"""Forward / generation speed of equijax's Flax ResNet and GPT-2 ports vs transformers (PyTorch).

Models are full-size architectures (ResNet-18, ResNet-50, GPT-2 small) with random weights: each is
built in PyTorch, written with ``save_pretrained`` into a temporary directory and loaded with
equijax's ``from_pretrained`` (so the loader is exercised too). Times are medians over repeats
after a warm-up (JAX compile excluded, reported separately), torch and JAX interleaved round by
round (``--repeats``, default 5); torch/JAX is the median of the per-round ratios with its
min–max. Prints a markdown table.

Run from the repo root::

    python -m benchmarks.models_vs_torch            # full (a few minutes on 2 CPU cores)
    python -m benchmarks.models_vs_torch --quick    # smaller batches, fewer repeats
    python -m benchmarks.models_vs_torch --quick --threads 1   # both frameworks single-threaded

``--threads 1`` also makes XLA single-threaded (equal resources; the fairest comparison on a
machine shared with other jobs, where a multi-threaded torch degrades badly).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import tempfile
import time

import numpy as np

from benchmarks import _timing


def _pair(torch, run_torch, run_jax, repeats: int):
    """Interleaved torch / JAX timings (both already warmed up): medians and the per-round
    torch/JAX ratio."""

    def t():
        with torch.no_grad():
            run_torch()

    smp = _timing.interleave({"torch": t, "jax": run_jax}, repeats, warmup=False)
    ratio = _timing.pair_ratios(smp["torch"].wall, smp["jax"].wall)
    return smp["torch"].median, smp["jax"].median, ratio


def _forward_row(torch, what, run_torch, run_jax, repeats: int) -> dict:
    """One forward-pass row: JAX compile time (first call), max |JAX - torch| of the outputs,
    and the interleaved timings of :func:`_pair`."""
    t0 = time.perf_counter()
    out = run_jax()
    compile_s = time.perf_counter() - t0
    with torch.no_grad():
        ref = run_torch().numpy()
    t_torch, t_jax, ratio = _pair(torch, run_torch, run_jax, repeats)
    return {
        "what": what, "torch": t_torch, "jax": t_jax, "ratio": ratio, "compile": compile_s,
        "maxdiff": float(np.max(np.abs(np.asarray(out) - ref))),
    }  # fmt: skip


def bench_resnet(torch, transformers, name, kwargs, batch, repeats, tmp):
    import jax
    import jax.numpy as jnp

    from equijax.models import resnet

    torch.manual_seed(0)
    config = transformers.ResNetConfig(num_labels=1000, **kwargs)
    pt = transformers.ResNetForImageClassification(config).eval()
    path = pathlib.Path(tmp) / name
    pt.save_pretrained(path)
    model, variables = resnet.from_pretrained(path)
    x = np.random.default_rng(0).normal(size=(batch, 3, 224, 224)).astype(np.float32)
    x_t = torch.from_numpy(x)
    x_j = jnp.asarray(x.transpose(0, 2, 3, 1))
    fwd = jax.jit(lambda v, x: model.apply(v, x).logits)
    return _forward_row(
        torch, f"{name} forward, batch {batch}x224x224", lambda: pt(x_t).logits,
        lambda: fwd(variables, x_j).block_until_ready(), repeats,
    )  # fmt: skip


def bench_gpt2(torch, transformers, batch, seq, new_tokens, repeats, tmp):
    import jax

    from equijax.models import gpt2

    torch.manual_seed(0)
    cfg = transformers.GPT2Config()  # GPT-2 small: 124M parameters
    pt = transformers.GPT2LMHeadModel(cfg).eval()
    path = pathlib.Path(tmp) / "gpt2"
    pt.save_pretrained(path)
    model, variables = gpt2.from_pretrained(path)
    params = variables["params"]
    ids = np.random.default_rng(0).integers(0, cfg.vocab_size, size=(batch, seq))
    ids_t = torch.from_numpy(ids)
    fwd = jax.jit(lambda v, i: model.apply(v, i)[0])
    rows = [_forward_row(
        torch, f"GPT-2 small forward, batch {batch}x{seq} tokens", lambda: pt(ids_t).logits,
        lambda: fwd(variables, ids).block_until_ready(), repeats,
    )]  # fmt: skip

    prompt = ids[:, :8]
    prompt_t = torch.from_numpy(prompt)
    gen_config = transformers.GenerationConfig(
        do_sample=False, eos_token_id=None, pad_token_id=0, max_new_tokens=new_tokens
    )
    pt.generation_config = gen_config
    for use_cache in (True, False):
        def run_jax(use_cache=use_cache):
            return gpt2.generate(model, params, prompt, max_new_tokens=new_tokens,
                                 use_cache=use_cache).block_until_ready()  # fmt: skip

        t0 = time.perf_counter()
        seq_j = run_jax()
        compile_s = time.perf_counter() - t0

        def run_torch(use_cache=use_cache):
            return pt.generate(prompt_t, attention_mask=torch.ones_like(prompt_t),
                               use_cache=use_cache)  # fmt: skip

        with torch.no_grad():
            seq_t = run_torch()
        t_torch, t_jax, ratio = _pair(torch, run_torch, run_jax, repeats)
        same = bool(np.array_equal(np.asarray(seq_j), seq_t.numpy()))
        n = batch * new_tokens
        rows.append({
            "what": f"GPT-2 small greedy generate {new_tokens} tok, batch {batch}, "
            f"{'KV cache' if use_cache else 'no cache'} (tokens/s)",
            "torch": t_torch, "jax": t_jax, "ratio": ratio, "compile": compile_s,
            "tok_s_torch": n / t_torch,
            "tok_s_jax": n / t_jax, "same_tokens": same,
        })  # fmt: skip
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller batches, fewer repeats")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    _timing.add_repeat_args(parser)
    args = parser.parse_args(argv)
    if args.threads == 1:  # must happen before jax initialises its CPU backend
        flags = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flags).strip()
    import torch
    import transformers

    torch.set_num_threads(args.threads)
    batch, seq, new = (2, 64, 16) if args.quick else (8, 128, 32)
    repeats = args.repeats
    load = _timing.Load.start()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        resnets = {
            "ResNet-18": dict(layer_type="basic", hidden_sizes=[64, 128, 256, 512],
                              depths=[2, 2, 2, 2]),
            "ResNet-50": dict(layer_type="bottleneck", hidden_sizes=[256, 512, 1024, 2048],
                              depths=[3, 4, 6, 3]),
        }  # fmt: skip
        for name, kwargs in resnets.items():
            rows.append(bench_resnet(torch, transformers, name, kwargs, batch, repeats, tmp))
        rows += bench_gpt2(torch, transformers, max(1, batch // 2), seq, new, repeats, tmp)

    load.stop()
    print(_timing.machine(f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
                          f"transformers {transformers.__version__}, XLA "
                          f"{'single-threaded' if args.threads == 1 else 'default threads'}"))
    print()
    print("| workload | torch s (median) | equijax (JAX) s (median) | torch/JAX [min–max] "
          "| JAX compile s | check |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        if "tok_s_jax" in r:
            check = "same tokens" if r["same_tokens"] else "TOKENS DIFFER"
            timing = (f"{r['torch']:.3f} ({r['tok_s_torch']:.0f} tok/s) | "
                      f"{r['jax']:.3f} ({r['tok_s_jax']:.0f} tok/s)")  # fmt: skip
        else:
            check = f"max abs diff {r['maxdiff']:.1e}"
            timing = f"{r['torch']:.3f} | {r['jax']:.3f}"
        print(f"| {r['what']} | {timing} | {r['ratio'].fmt(2)} | {r['compile']:.1f} "
              f"| {check} |")  # fmt: skip
    print(f"\n{_timing.footer(load, repeats)}")


if __name__ == "__main__":
    main()
