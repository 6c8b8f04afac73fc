"""SCAN pretraining rate: 6 models trained in one vmapped program vs one model at a time.

The authors' protocol trains one example per iteration (batch 1), which on a CPU is per-kernel
overhead. ``equijax.training.ensemble.train_chunk`` trains every member (3 seeds x 2 splits) in
one compiled ``lax.scan`` of a ``vmap`` over members (``members="scan"``: the members in turn,
inside one compiled call); the per-model loop calls the same
single-model chunk (also one ``lax.scan``) for each member in turn. Both do ``members x iters``
model-iterations of the authors' LSTM (:mod:`equijax.models.gordon_seq2seq`, hidden 64, Adam,
clipping per module, teacher forcing 0.5, dropout 0.1) per round, the decoder run at the
smallest length bucket that fits the example (the members' longest when vmapped;
``--no-buckets``: always the longest target); rounds are interleaved
(:func:`benchmarks._timing.interleave`) and the table gives model-iterations/s of each side and
the per-round ratio::

    python -m benchmarks.scan_pretrain_rate              # 6 LSTMs, 500 iterations per round
    python -m benchmarks.scan_pretrain_rate --small --repeats 1   # smoke run (no timing claim)

The issue's goal is >= 330 model-iterations/s for the vmapped side on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import functools

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks._timing import (
    Load,
    add_repeat_args,
    footer,
    interleave,
    machine,
    pair_ratios,
    spread,
)
from equijax.data import scan
from equijax.models import gordon_seq2seq as gs
from equijax.training import ensemble


def setup(cell: str, hidden: int, members: int):
    """Model, optimiser, loss, stacked member data (both splits, 80 % of train) and state."""
    ov = scan.output_vocab()
    cfg = gs.GordonSeq2SeqConfig(len(scan.input_vocab()), len(ov), cell=cell, hidden=hidden,
                                 sos_id=ov.sos_id, eos_id=ov.eos_id)  # fmt: skip
    model = gs.GordonSeq2Seq(cfg)
    opt = gs.paper_optimizer(1e-4, 5.0)
    loss = functools.partial(model.example_loss, teacher_forcing=0.5)
    parts = []
    for m in range(members):
        split = scan.SPLITS[m % len(scan.SPLITS)]
        train, _ = scan.split(split)
        tr, _ = scan.train_val_split(train, val_fraction=0.2, seed=m)
        parts.append(tr)
    length = 1 + max(len(a.split()) for tr in parts for _, a in tr)
    arrays = []
    for tr in parts:
        src, tgt = scan.encode(tr, max_output_len=length)
        arrays.append({"src": src, "src_mask": src != 0, "tgt": tgt, "tgt_mask": tgt != 0})
    rows = max(len(a["src"]) for a in arrays)
    pad = lambda a: np.pad(a, [(0, rows - len(a))] + [(0, 0)] * (a.ndim - 1))
    data = {k: jnp.asarray(np.stack([pad(a[k]) for a in arrays])) for k in arrays[0]}
    n = jnp.asarray([len(a["src"]) for a in arrays], jnp.int32)
    state = ensemble.init_members(model.init, opt, list(range(members)))
    buckets = (*[b for b in (16, 24, 32) if b < length], length)
    return loss, opt, data, n, state, buckets, model.target_length


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cell", default="lstm", choices=("lstm", "gru", "rnn"))
    p.add_argument("--members", type=int, default=6, help="models (default 6: 3 seeds x 2 splits)")
    p.add_argument("--iters", type=int, default=500, help="iterations per model per round")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--small", action="store_true", help="hidden 8, 5 iterations: a smoke run")
    p.add_argument("--no-buckets", dest="buckets", action="store_false",
                   help="run every iteration at the longest target length")  # fmt: skip
    add_repeat_args(p)
    a = p.parse_args(argv)
    hidden, iters = (8, 5) if a.small else (a.hidden, a.iters)
    loss, opt, data, n, state, buckets, length_fn = setup(a.cell, hidden, a.members)
    kw = dict(buckets=buckets, length_fn=length_fn) if a.buckets else {}
    vm = ensemble.train_chunk(loss, opt, iters, **kw)
    scanned = ensemble.train_chunk(loss, opt, iters, members="scan", **kw)
    one = ensemble.train_chunk(loss, opt, iters, vmap=False, **kw)
    take = lambda tree, m: jax.tree_util.tree_map(lambda x: x[m], tree)
    singles = [(take(state, m), take(data, m), n[m]) for m in range(a.members)]

    def vmapped():
        return jax.block_until_ready(vm(state, data, n, 0))

    def in_turn():
        return jax.block_until_ready(scanned(state, data, n, 0))

    def loop():
        return jax.block_until_ready([one(s, d, k, 0) for s, d, k in singles])

    load = Load.start()
    sides = {"vmapped": vmapped, "members in turn (one program)": in_turn, "per-model loop": loop}
    s = interleave(sides, a.repeats)
    load.stop()
    work = a.members * iters
    how = f"length buckets {buckets}" if a.buckets else "no length buckets"
    print(f"SCAN pretraining rate, {a.members} x {a.cell.upper()} (hidden {hidden}), {iters} "
          f"iterations per model per round, {how}; {machine()}\n")  # fmt: skip
    print("| side | model-iterations/s (median [min–max]) | first call (compile), s |")
    print("|---|---|---|")
    for k, v in s.items():
        rate = spread([work / w for w in v.wall])
        print(f"| {k} | {rate.fmt(0)} | {v.first:.1f} |")
    for k in ("vmapped", "members in turn (one program)"):
        ratio = pair_ratios(s["per-model loop"].wall, s[k].wall)
        print(f"\n{k}: speed-up over the per-model loop {ratio.fmt(2, '×')}")
    print(f"\n{footer(load, a.repeats)}")


if __name__ == "__main__":
    main()
