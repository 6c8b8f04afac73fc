"""Paper Table 1: time and memory of equitune / equizero / λ-equitune for CLIP (C4, batch 32).

Random weights (timing and memory do not depend on the values). For each backbone and mode
(``infer``: zero-shot logits; ``train``: loss + gradient w.r.t. all trainable parameters, as in
finetuning) the three methods are jitted side by side; memory is XLA's compiled
``memory_analysis()`` (arguments + outputs + temporaries − aliased), time the median wall
time of ``--repeats`` interleaved rounds (equitune, equizero, λ-equitune, equitune, …) after one
warm-up call each. Time ratios are relative to equitune: the median of the per-round ratios,
with its min–max.

    python -m benchmarks.table1                                  # ViT-B/32 + RN50, 224 px, batch 32
    python -m benchmarks.table1 --repeats 0                      # memory only (compile, no run)
    python -m benchmarks.table1 --batch-size 8 --modes infer     # a lighter CPU run
    python -m benchmarks.table1 --quick                          # tiny CLIP, seconds

Paper (A100, CIFAR100, batch 32): time equitune/equizero/λ-equitune RN50 14.15/14.10/23.5 s,
ViT-B/32 11.00/10.27/16.08 s; memory RN50 3703/3703/3941 MB, ViT-B/32 2589/2587/2915 MB.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import optax

import equijax as ej
from benchmarks import _timing
from equijax.models import clip, clip_resnet

METHODS = ("equitune", "equizero", "lambda_equitune")


def build(name: str, image_size: int | None, key: jax.Array):
    if name == "vit-b32":
        cfg = clip.CLIPConfig()
        if image_size:
            import dataclasses

            cfg = dataclasses.replace(
                cfg, vision=dataclasses.replace(cfg.vision, image_size=image_size)
            )
        model = clip.CLIP(cfg)
    elif name == "rn50":
        cfg = clip_resnet.CLIPResNetConfig(image_size=image_size or 224)
        model = clip_resnet.CLIPResNet(cfg)
    elif name == "tiny":
        model = clip.CLIP(clip.CLIPConfig.tiny())
    else:
        raise ValueError(f"unknown model {name!r}; choose vit-b32, rn50 or tiny")
    return model, model.init(key)


def method_fn(model, method: str, mode: str, group):
    """``f(trainable, classifier, x, y) -> logits or (loss, grads)``."""
    lam = ej.LambdaNet()

    def logits(t, classifier, x):
        p = t["model"]

        def fn(z):
            f = model.encode_image(p, z, normalize=True)
            return model.logit_scale(p) * f @ classifier, f

        if method == "equitune":
            return ej.equitune(lambda z: fn(z)[0], group, x)
        if method == "equizero":
            return ej.equizero(lambda z: fn(z)[0], group, x, loss=ej.proxies.neg_max_probability,
                               straight_through=mode == "train")  # fmt: skip
        weight_fn = lambda f: lam.apply({"params": t["lam"]}, f)
        return ej.lambda_equitune(fn, group, x, has_aux=True, weight_fn=weight_fn)

    if mode == "infer":
        return lambda t, c, x, y: logits(t, c, x)

    def loss_and_grad(t, c, x, y):
        def loss(t):
            out = logits(t, c, x)
            return optax.softmax_cross_entropy_with_integer_labels(out, y).mean()

        return jax.value_and_grad(loss)(t)

    return loss_and_grad


def memory_mb(compiled) -> float:
    ma = compiled.memory_analysis()
    total = (ma.argument_size_in_bytes + ma.output_size_in_bytes + ma.temp_size_in_bytes
             - ma.alias_size_in_bytes)  # fmt: skip
    return total / 2**20


def run(args: argparse.Namespace) -> list[dict]:
    group = ej.groups.rot90()
    rows = []
    for name in args.models:
        model, params = build(name, args.image_size, jax.random.key(0))
        s = model.image_size
        d = int(jax.eval_shape(lambda p: model.encode_image(p, jnp.zeros((1, s, s, 3))),
                               params).shape[-1])  # fmt: skip
        classifier = jax.random.normal(jax.random.key(1), (d, args.classes))
        classifier = classifier / jnp.linalg.norm(classifier, axis=0)
        lam_params = ej.LambdaNet().init(jax.random.key(2), jnp.zeros((1, d)))["params"]
        x = jax.random.normal(jax.random.key(3), (args.batch_size, s, s, 3))
        y = jax.random.randint(jax.random.key(4), (args.batch_size,), 0, args.classes)
        for mode in args.modes:
            fns, group_rows = {}, []
            for method in METHODS:
                t = {"model": params}
                if method == "lambda_equitune":
                    t["lam"] = lam_params
                f = jax.jit(method_fn(model, method, mode, group))
                t0 = time.perf_counter()
                compiled = f.lower(t, classifier, x, y).compile()
                compile_s = time.perf_counter() - t0
                row = {"model": name, "mode": mode, "method": method, "image_size": s,
                       "batch": args.batch_size, "memory_mb": memory_mb(compiled),
                       "compile_s": compile_s, "time_s": float("nan"), "ratio": None}  # fmt: skip
                fns[method] = lambda c=compiled, t=t: jax.block_until_ready(c(t, classifier, x, y))
                group_rows.append(row)
            if args.repeats > 0:
                smp = _timing.interleave(fns, args.repeats)
                for row in group_rows:
                    row["time_s"] = smp[row["method"]].median
                    row["ratio"] = _timing.pair_ratios(
                        smp[row["method"]].wall, smp["equitune"].wall
                    )
            for row in group_rows:
                print(f"  {name} {mode} {row['method']}: {row['memory_mb']:.0f} MB, "
                      f"{row['time_s']:.4g} s", flush=True)  # fmt: skip
            rows.extend(group_rows)
        del params
    return rows


def table(rows: list[dict]) -> str:
    base = {(r["model"], r["mode"]): r for r in rows if r["method"] == "equitune"}
    out = ["| model | mode | method | time (s, median) | time ratio [min–max] | memory (MB) "
           "| memory ratio |",
           "| --- | --- | --- | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for r in rows:
        b = base[(r["model"], r["mode"])]
        out.append(
            f"| {r['model']} ({r['image_size']} px, B={r['batch']}) | {r['mode']} | {r['method']} "
            f"| {r['time_s']:.4g} | {r['ratio'].fmt(2) if r['ratio'] else '–'} "
            f"| {r['memory_mb']:.0f} | "
            f"{r['memory_mb'] / b['memory_mb']:.2f} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="vit-b32,rn50", help="comma list: vit-b32, rn50, tiny")
    p.add_argument("--modes", default="infer,train", help="comma list: infer, train")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--image-size", type=int, default=None, help="default: the model's (224)")
    p.add_argument("--classes", type=int, default=100, help="zero-shot classes (CIFAR100)")
    p.add_argument("--repeats", type=int, default=_timing.MIN_REPEATS,
                   help="interleaved timed rounds (0: memory only)")
    p.add_argument("--quick", action="store_true", help="tiny CLIP, batch 4 (seconds)")
    args = p.parse_args(argv)
    if args.quick:
        args.models, args.batch_size = "tiny", 4
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if any(m not in ("infer", "train") for m in args.modes):
        p.error("--modes entries must be infer or train")
    if args.batch_size < 1 or args.repeats < 0:
        p.error("--batch-size must be >= 1 and --repeats >= 0")
    print(f"{_timing.machine()}; group C4 (rot90)")
    load = _timing.Load.start()
    rows = run(args)
    load.stop()
    print()
    print(table(rows))
    if args.repeats > 0:
        print(f"\nTime ratios are relative to equitune. {_timing.footer(load, args.repeats)}")
    return rows


if __name__ == "__main__":
    main()
