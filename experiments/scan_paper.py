"""SCAN Table 2 with the authors' model and training protocol, all seeds x splits in one program.

The model is :mod:`equijax.models.gordon_seq2seq` (the authors' fork of Gordon et al.'s
seq2seq; it decodes their published weights token for token), trained as in their code: one
example per iteration drawn uniformly from the 80 % of train kept for training, Adam lr 1e-4,
teacher forcing with probability 0.5 per iteration, summed NLL (without teacher forcing the sum
stops at the first predicted EOS), gradient-norm clipping 5 for the encoder and the decoder
separately, dropout 0.1 on the decoder embedding, the best-validation parameters kept
(validation exact match every ``--eval-every`` iterations). For each cell the members (splits x
seeds) train together in one compiled program (:mod:`equijax.training.ensemble`), checkpointed
after every validation and resumable (``--fresh`` starts over; other settings are refused).

Then every member is evaluated zero-shot with its best-validation parameters on its held-out
validation part and on the full test split: ``pretrained``, ``equitune`` (step-wise),
``equitune_sequence`` (the paper's EquiLSTM row: mean of the branches' log-probabilities, zero
rows after a branch's EOS) and ``equizero`` (max-probability proxy), through
:mod:`equijax.decoding`. Finetuning is NOT part of this script (the zero-shot subset of Table 2).
Writes ``results.json`` and ``results.md`` (mean ± std over seeds, the paper's numbers beside).

Several processes (``--distributed``, or ``--coordinator HOST:PORT --num-processes N
--process-id I``): every process trains all members on the state replicated over all devices
(:func:`equijax.training.ensemble.fit`; the member axis is not split) and decodes every member
identically; orbax saves the replicated checkpoint once, and only process 0 writes
``results.json`` / ``results.md``.

Run from the repository root::

    python -m experiments.scan_paper --preset tiny      # 60 iterations, 64 commands (tests)
    python -m experiments.scan_paper                    # LSTM, 2 splits x 3 seeds, 200k iterations
    python -m experiments.scan_paper --cells lstm,gru,rnn
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from equijax import decoding
from equijax.data import scan
from equijax.models import gordon_seq2seq as gs
from equijax.training import ensemble
from experiments._cli import (
    add_distributed_flags,
    check_distributed_flags,
    cli,
    is_main,
    setup_logging,
    start_distributed,
)
from experiments._config import check_choice, parse_config, setting, split_commas

log = logging.getLogger("experiments.scan_paper")

PROG = "python -m experiments.scan_paper"
PRESETS = ("paper", "tiny")
CELL_TITLES = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}
SPLIT_TITLES = {"add_jump": "Add Jump", "around_right": "Around Right"}
# (key, row label, decode kwargs; None = plain greedy).
METHODS = (
    ("pretrained", "{cell}", None),
    ("equitune", "Equi{cell} (step-wise)", dict(method="equitune")),
    ("equitune_sequence", "Equi{cell} (whole-seq., paper)",
     dict(method="equitune_sequence", average="logprob", after_eos="zero")),
    ("equizero", "Equizero{cell}", dict(method="equizero", proxy="neg_max_probability")),
)  # fmt: skip
# Decoder lengths each iteration may run (the smallest that fits the members' examples).
BUCKETS = (16, 24, 32)
# Paper Table 2 (LSTM, zero-shot, 3 seeds): (val, test mean, test std) in %.
PAPER = {
    "add_jump": {"pretrained": (99.1, 0.0, None), "equitune_sequence": (62.5, 7.1, 1.3),
                 "equizero": (98.4, 75.2, 1.5)},
    "around_right": {"pretrained": (98.9, 0.4, None), "equitune_sequence": (80.5, 28.2, 12.9),
                     "equizero": (98.7, 81.7, 2.4)},
}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Config:
    """One run. Presets: :meth:`paper` (the authors' protocol) and :meth:`tiny` (tests)."""

    cells: tuple[str, ...] = setting(("lstm",), "recurrent cells (comma list of lstm gru rnn)")
    splits: tuple[str, ...] = setting(scan.SPLITS, f"SCAN splits, any of {' '.join(scan.SPLITS)}")
    seeds: tuple[int, ...] = setting((0, 1, 2), "seeds (one member per split and seed)")
    iterations: int = setting(200_000, "pretraining iterations per member (one example each)")
    eval_every: int = setting(1_000, "iterations between validations (= compiled chunk)")
    hidden: int = setting(64, "encoder width per direction (decoder: twice this)")
    lr: float = setting(1e-4, "Adam learning rate")
    teacher_forcing: float = setting(0.5, "probability of teacher forcing per iteration")
    dropout: float = setting(0.1, "dropout on the decoder embedding")
    clip: float = setting(5.0, "gradient-norm clipping per module (encoder, decoder)")
    val_fraction: float = setting(0.2, "fraction of train held out for validation")
    members: str = setting("vmap", "members in one program: vmap (batched) or scan (in turn)")
    eval_limit: int = setting(0, "evaluate on the first N validation / test commands (0: all)")
    eval_batch: int = setting(512, "commands per compiled evaluation call")
    out: Path = setting(Path("runs/scan_paper"), "output directory")  # noqa: RUF009

    def __post_init__(self) -> None:
        check_choice("cells", self.cells, tuple(CELL_TITLES))
        check_choice("splits", self.splits, scan.SPLITS)
        check_choice("members", self.members, ("vmap", "scan"))
        for name in ("iterations", "eval_every", "hidden", "eval_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 (--{name.replace('_', '-')})")
        if not self.seeds:
            raise ValueError("seeds is empty (--seeds)")
        if self.eval_limit < 0:
            raise ValueError("eval_limit must be >= 0 (--eval-limit)")

    @classmethod
    def paper(cls, **kw: Any) -> Config:
        return cls(**kw)

    @classmethod
    def tiny(cls, **kw: Any) -> Config:
        base = dict(seeds=(0, 1), iterations=60, eval_every=30, hidden=16, eval_limit=64,
                    eval_batch=64, out=Path("runs/scan_paper_tiny"))  # fmt: skip
        return cls(**{**base, **kw})

    def train_settings(self, cell: str) -> dict[str, Any]:
        """Everything that shapes one cell's training (the checkpoint's identity)."""
        # members: vmap and scan agree to float round-off only, which long runs can amplify.
        keep = ("splits", "seeds", "hidden", "lr", "teacher_forcing", "dropout", "clip",
                "val_fraction", "members")  # fmt: skip
        return {"cell": cell, "protocol": "gordon-batch1-v1",
                **{k: getattr(self, k) for k in keep}}  # fmt: skip


def _plain(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--fresh", action="store_true",
        help="start over (the old run directory is moved aside, never deleted)",
    )  # fmt: skip
    add_distributed_flags(p)


def _prepare(args: argparse.Namespace) -> dict[str, Any]:
    check_distributed_flags(args)
    if args.cells is not None:
        args.cells = list(split_commas(args.cells))
    if args.splits is not None:
        args.splits = list(split_commas(args.splits))
    return {}


def _members(s: Config) -> list[tuple[str, int]]:
    return [(sp, seed) for sp in s.splits for seed in s.seeds]


def _arrays(pairs: list[tuple[str, str]], length: int) -> dict[str, np.ndarray]:
    src, tgt = scan.encode(pairs, max_output_len=length)
    return {"src": src, "src_mask": src != 0, "tgt": tgt, "tgt_mask": tgt != 0}


def _stack(parts: list[dict[str, np.ndarray]]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    rows = max(len(p["src"]) for p in parts)

    def pad(a: np.ndarray) -> np.ndarray:
        return np.pad(a, [(0, rows - len(a))] + [(0, 0)] * (a.ndim - 1))

    data = {k: np.stack([pad(p[k]) for p in parts]) for k in parts[0]}
    return data, np.array([len(p["src"]) for p in parts], np.int32)


def load_data(s: Config) -> dict[tuple[str, int], dict[str, list]]:
    """Per member ``(split, seed)``: its ``train`` / ``val`` pairs and the ``test`` pairs."""
    out = {}
    for sp in s.splits:
        train, test = scan.split(sp)
        for seed in s.seeds:
            tr, va = scan.train_val_split(train, val_fraction=s.val_fraction, seed=seed)
            out[(sp, seed)] = {"train": tr, "val": va, "test": test}
    return out


def _model(s: Config, cell: str) -> gs.GordonSeq2Seq:
    ov = scan.output_vocab()
    cfg = gs.GordonSeq2SeqConfig(len(scan.input_vocab()), len(ov), cell=cell, hidden=s.hidden,
                                 dropout=s.dropout, sos_id=ov.sos_id, eos_id=ov.eos_id)  # fmt: skip
    return gs.GordonSeq2Seq(cfg)


def _limit(pairs: list, s: Config) -> list:
    return pairs[: s.eval_limit] if s.eval_limit else pairs


def pretrain(s: Config, cell: str, data: dict, *, fresh: bool) -> tuple[Any, dict]:
    """Trains every member of ``cell`` in one program; returns (best params stacked, history)."""
    model = _model(s, cell)
    members = _members(s)
    length = 1 + max(len(a.split()) for m in members for _, a in data[m]["train"])
    train, n = _stack([_arrays(data[m]["train"], length) for m in members])
    val, n_val = _stack([_arrays(_limit(data[m]["val"], s), length) for m in members])
    opt = gs.paper_optimizer(s.lr, s.clip)
    loss = functools.partial(model.example_loss, teacher_forcing=s.teacher_forcing)

    @jax.jit
    def val_accuracy(params):
        def one(p, v, nv):
            toks = model.greedy(p, v["src"], v["src_mask"], max_len=length)
            ok = (toks == v["tgt"]).all(-1) & (jnp.arange(toks.shape[0]) < nv)
            return ok.sum() / nv

        return jax.vmap(one)(params, val, n_val)

    # Member (split, seed) has its own seed, independent of which other members train with it.
    seeds = [1000 * seed + scan.SPLITS.index(sp) for sp, seed in members]
    state = ensemble.init_members(model.init, opt, seeds)
    settings = {**s.train_settings(cell), "members": [list(m) for m in members]}
    result, history = ensemble.fit(
        s.out / "checkpoints" / cell, settings, state, train, n, loss_fn=loss, optimizer=opt,
        iterations=s.iterations, chunk=s.eval_every, evaluate=val_accuracy, resume=not fresh,
        desc=f"pretrain {cell} ({len(members)} models)",
        buckets=(*[b for b in BUCKETS if b < length], length), length_fn=model.target_length,
        members=s.members,
    )  # fmt: skip
    return result, history


def _decoder(model: gs.GordonSeq2Seq, split: str, kwargs: dict | None):
    g_in, g_out = scan.groups(scan.SPLIT_GROUP[split])
    ov = scan.output_vocab()
    common = dict(max_len=scan.MAX_OUTPUT_LEN, start_id=ov.sos_id, eos_id=ov.eos_id,
                  pad_id=ov.pad_id)  # fmt: skip
    init = model.decoder_init(scan.input_vocab().pad_id)

    @jax.jit
    def decode(params, src):
        if kwargs is None:
            return decoding.greedy_decode(model.step, params, init(params, src),
                                          batch_size=src.shape[0], **common).tokens  # fmt: skip
        states = decoding.branch_states(init, params, src, g_in)
        out = decoding.equivariant_greedy_decode(
            model.step, params, states, g_out, batch_size=src.shape[0], **kwargs, **common
        )
        return out.tokens

    return decode


def accuracy(decode, params, pairs: list, batch: int) -> float:
    """Exact match (%) of ``decode`` on ``pairs`` (whole output incl. EOS), in fixed-size chunks."""
    src, tgt = scan.encode(pairs)
    hits = 0
    for i in range(0, len(src), batch):
        s_chunk = src[i : i + batch]
        pad = batch - len(s_chunk)
        padded = np.concatenate([s_chunk, np.repeat(s_chunk[:1], pad, 0)]) if pad else s_chunk
        toks = np.asarray(decode(params, jnp.asarray(padded)))[: len(s_chunk)]
        hits += int((toks[:, : tgt.shape[1]] == tgt[i : i + batch]).all(-1).sum())
    return 100.0 * hits / len(src)


def evaluate(s: Config, cell: str, best: Any, data: dict) -> dict:
    """``{split: {method: {"val": [per seed], "test": [per seed]}}}`` in %."""
    model = _model(s, cell)
    res: dict = {sp: {k: {"val": [], "test": []} for k, _, _ in METHODS} for sp in s.splits}
    decoders = {(sp, k): _decoder(model, sp, kw) for sp in s.splits for k, _, kw in METHODS}
    for i, (sp, seed) in enumerate(_members(s)):
        params = jax.tree_util.tree_map(lambda a, i=i: a[i], best)
        for key, _, _ in METHODS:
            for part in ("val", "test"):
                acc = accuracy(decoders[(sp, key)], params, _limit(data[(sp, seed)][part], s),
                               s.eval_batch)  # fmt: skip
                res[sp][key][part].append(acc)
            log.info("%s %s seed %d %s: val %.1f test %.1f", cell, sp, seed, key,
                     res[sp][key]["val"][-1], res[sp][key]["test"][-1])  # fmt: skip
    return res


def _fmt(vals: list[float]) -> str:
    if len(vals) == 1:
        return f"{vals[0]:.1f}"
    return f"{np.mean(vals):.1f} ± {np.std(vals, ddof=1):.1f}"


def _paper(split: str, key: str, cell: str) -> str:
    row = PAPER.get(split, {}).get(key) if cell == "lstm" else None
    if row is None:
        return "–"
    val, test, std = row
    return f"{val} / {test}" + (f" ± {std}" if std is not None else "")


def write_report(results: dict, s: Config, wall: float, rates: dict) -> str:
    lines = [
        "# SCAN, the authors' model and protocol (zero-shot; exact match %, val / test)",
        "",
        f"`{PROG}` — cells {', '.join(s.cells)}; seeds {list(s.seeds)}; {s.iterations:,} "
        f"iterations per model (batch 1, Adam {s.lr:g}, teacher forcing {s.teacher_forcing}, "
        f"clip {s.clip:g} per module, dropout {s.dropout}); best of validations every "
        f"{s.eval_every:,}; evaluation on "
        + (f"the first {s.eval_limit} commands" if s.eval_limit else "the full splits")
        + f". Wall time {wall / 60:.1f} min.",
        "",
        "| split | row | val | test | paper (val / test, 3 seeds) |",
        "|---|---|---|---|---|",
    ]
    for cell in s.cells:
        for sp in s.splits:
            for key, label, _ in METHODS:
                r = results[cell][sp][key]
                row = label.format(cell=CELL_TITLES[cell])
                lines.append(f"| {SPLIT_TITLES[sp]} | {row} | {_fmt(r['val'])} | "
                             f"{_fmt(r['test'])} | {_paper(sp, key, cell)} |")  # fmt: skip
    lines += ["", "Pretraining rate (model-iterations/s, after compilation, this call): "
              + ", ".join(f"{c} {r:.0f}" for c, r in rates.items()), ""]  # fmt: skip
    return "\n".join(lines)


@cli(PROG)
def main(argv: list[str] | None = None) -> dict:
    s, args = parse_config(Config, argv, prog=PROG, description=__doc__.split("\n")[0],
                           presets=PRESETS, plain=_plain, prepare=_prepare)  # fmt: skip
    start_distributed(args)
    setup_logging("experiments")
    t0 = time.time()
    data = load_data(s)
    results, rates, best_steps = {}, {}, {}
    for cell in s.cells:
        best, hist = pretrain(s, cell, data, fresh=args.fresh)
        rates[cell] = hist["model_iterations_per_second"]
        best_steps[cell] = np.asarray(best["best_step"]).tolist()
        # host copies: every process decodes every member the same way (one writer below)
        results[cell] = evaluate(s, cell, jax.tree.map(np.asarray, best["best_params"]), data)
    wall = time.time() - t0
    md = write_report(results, s, wall, rates)
    settings = {f.name: str(getattr(s, f.name)) for f in dataclasses.fields(s)}
    out = {"settings": settings, "wall_seconds": wall, "members": [list(m) for m in _members(s)],
           "best_step": best_steps, "model_iterations_per_second": rates,
           "results": results, "paper": PAPER}  # fmt: skip
    if is_main():  # one writer
        s.out.mkdir(parents=True, exist_ok=True)
        (s.out / "results.json").write_text(json.dumps(out, indent=1, default=str))
        (s.out / "results.md").write_text(md)
        print(md)
    return out


if __name__ == "__main__":
    main()
