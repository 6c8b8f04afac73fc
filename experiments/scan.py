"""SCAN compositional generalisation with equitune / equizero / λ-equitune (paper Table 2).

Pretrains seq2seq RNN / GRU / LSTM models on the SCAN Add Jump and Around Right training splits
(cached with orbax; an interrupted run resumes), evaluates zero-shot plain, equitune (step-wise
and whole-sequence), equizero (max-probability and entropy proxies) and λ-equitune (λ network on
encoder features, trained with the model frozen) on the held-out validation part of train and on
the full test split, then finetunes (equitune, equizero with the straight-through estimator,
λ-equitune) and evaluates again. Writes ``results.json``, ``results.md`` (Table-2-shaped,
mean ± std over seeds) and ``results.png``; rows are keyed by the method names ``pretrained``,
``equitune``, ``equitune_sequence`` (the paper's row), ``equitune_sequence_prob``, ``equizero``,
``equizero_entropy``, ``lambda_equitune``, ``finetuned_equitune``, ``finetuned_equizero``,
``finetuned_lambda_equitune``.

One run is a frozen :class:`Config` with the presets ``paper()`` (default) and ``quick()``;
every field can be overridden by its flag (``--help`` shows each field under both presets).
``--ablation`` also decodes the paper row under one change at a time (rows after EOS, log-prob
vs probability mean, decode length) on the trained model and on a model pretrained with
``--ablation-pretrain-examples`` (2x the budget by default), into ``ablation.json`` /
``ablation.md``.

Run from the repository root::

    python -m experiments.scan --quick          # LSTM, 1 seed, both splits, < 10 min on 2 CPU cores
    python -m experiments.scan --quick --ablation   # + the ablation of the paper row
    python -m experiments.scan                  # LSTM/GRU/RNN x 3 seeds, paper budget (hours)
    python -m experiments.scan --devices 8      # data-parallel on 8 devices (same results)
    python -m experiments.scan --distributed    # every host of a TPU VM pod / GPU cluster
    python -m experiments.scan --coordinator 10.0.0.1:1234 --num-processes 2 --process-id 0

With ``--devices`` / ``--distributed`` (:mod:`equijax.training.parallel`) pretraining, λ training
and finetuning split each batch over the devices (parameters replicated) and evaluation splits
the decoded chunks; a batch the device count does not divide (the paper's finetuning batch of 1)
is replicated instead. Results equal a one-device run to round-off. With several processes
(``--distributed``, or ``--coordinator HOST:PORT --num-processes N --process-id I``) every
process replays the same batch stream and feeds only its devices' rows, decodes only its rows of
every evaluation chunk (gathered once per evaluation), and only process 0 writes the files and
shows progress bars; checkpoints hold global arrays and resume on any process or device count.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import functools
import json
import logging
import math
import os
import threading
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from equijax import decoding
from equijax.data import scan
from equijax.models import seq2seq as s2s
from equijax.nn import LambdaNet
from experiments._cli import (
    RESUME_HINT,
    add_distributed_flags,
    check_distributed_flags,
    cli,
    is_main,
    progress,
    setup_logging,
    start_distributed,
)
from experiments._config import check_choice, parse_config, setting

log = logging.getLogger("experiments.scan")

SPLIT_TITLES = {"add_jump": "Add Jump", "around_right": "Around Right"}
CELL_TITLES = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}
# Row labels (tables, figure legends), keyed by the method names of every script.
LABELS = {
    "pretrained": "{cell}",
    "equitune": "Equi{cell} (step-wise)",
    "equitune_sequence": "Equi{cell} (whole-seq., paper)",
    "equitune_sequence_prob": "Equi{cell} (whole-seq., prob. mixture)",
    "equizero": "Equizero{cell}",
    "equizero_entropy": "Equizero{cell} (entropy)",
    "lambda_equitune": "λ-Equi{cell} (λ trained, model frozen)",
    "finetuned_equitune": "Equi{cell} finetuned",
    "finetuned_equizero": "Equizero{cell} finetuned (ST)",
    "finetuned_lambda_equitune": "λ-Equi{cell} finetuned",
}
# (key, label, decode kwargs) of every evaluated decoder.
ZERO_SHOT = (
    ("pretrained", LABELS["pretrained"], None),
    ("equitune", LABELS["equitune"], dict(method="equitune")),
    # The authors' semantics: mean of the branches' log-softmax rows, zero rows after a
    # branch's own EOS (their zero-initialised buffer).
    ("equitune_sequence", LABELS["equitune_sequence"],
     dict(method="equitune_sequence", average="logprob", after_eos="zero")),
    ("equitune_sequence_prob", LABELS["equitune_sequence_prob"],
     dict(method="equitune_sequence", average="prob")),
    ("equizero", LABELS["equizero"], dict(method="equizero", proxy="neg_max_probability")),
    ("equizero_entropy", LABELS["equizero_entropy"], dict(method="equizero", proxy="entropy")),
    ("lambda_equitune", LABELS["lambda_equitune"], dict(method="lambda_equitune")),
)  # fmt: skip
# (key, label, finetuning objective, decode kwargs) of every finetuned row.
FINETUNE = (
    ("finetuned_equitune", LABELS["finetuned_equitune"], "equitune", dict(method="equitune")),
    ("finetuned_equizero", LABELS["finetuned_equizero"], "equizero", dict(method="equizero")),
    ("finetuned_lambda_equitune", LABELS["finetuned_lambda_equitune"], "lambda_equitune",
     dict(method="lambda_equitune")),
)  # fmt: skip
# Bucket boundaries for the padded target length during training (fewer wasted decoder steps).
BUCKETS = (16, 32, scan.MAX_OUTPUT_LEN)
# The paper's finetuning learning rates (10k steps of batch 1).
PAPER_FINETUNE_LR = {"add_jump": 1e-5, "around_right": 2e-5}
# Fields of Config that do not shape results: plain flags, not presets.
RUNTIME_FIELDS = ("out", "resume", "jobs", "devices", "distributed")


@dataclasses.dataclass(frozen=True)
class Config:
    """One SCAN run. Presets: :meth:`paper` (the paper's budgets) and :meth:`quick` (CPU).

    The last five fields (``out`` .. ``distributed``) choose where and how the run executes,
    not what it computes; they are plain command-line flags.
    """

    splits: tuple[str, ...] = setting(scan.SPLITS, f"SCAN splits, any of {' '.join(scan.SPLITS)}")
    cells: tuple[str, ...] = setting(("lstm", "gru", "rnn"), "recurrent cells, any of lstm gru rnn")
    seeds: tuple[int, ...] = setting((0, 1, 2), "seeds")
    pretrain_examples: int = setting(200_000, "pretraining budget in examples")
    batch_size: int = setting(64, "pretraining batch")
    lr: float = setting(3e-3, "peak Adam lr for batched pretraining (cosine decay, clip 1.0)")
    teacher_forcing: float = setting(0.5, "teacher-forcing probability in pretraining")
    lambda_steps: int = setting(1000, "λ-network training steps (model frozen, pretraining batch)")
    lambda_lr: float = setting(1e-3, "λ-network Adam lr")
    finetune_steps: int = setting(10_000, "finetuning iterations (paper: 10,000 of batch 1)")
    finetune_batch: int = setting(1, "finetuning batch")
    finetune_lr: float | None = setting(
        None, "one finetuning lr for both splits (None: the paper's 1e-5 Add Jump, 2e-5 Around "
        "Right, times the batch with --finetune-lr-batch-scaling)")  # fmt: skip
    finetune_lr_batch_scaling: bool = setting(
        False, "scale the paper's finetuning lr linearly by the finetuning batch (ignored with "
        "--finetune-lr)")  # fmt: skip
    val_fraction: float = setting(0.1, "held-out validation fraction of train")
    eval_batch: int = setting(
        512, "decoding chunk (every part padded to it: one compilation per decoder)")
    eval_limit: int | None = setting(
        None, "decode only the first N examples of val and of test (None: all; smoke runs)")
    ablation_pretrain_examples: int = setting(
        400_000, "--ablation: the larger pretraining budget compared with --pretrain-examples")
    out: Path = Path("runs/scan")
    resume: bool = True
    jobs: int = 1
    devices: int | None = None
    distributed: bool = False

    def __post_init__(self):
        for name in ("pretrain_examples", "batch_size", "eval_batch", "finetune_batch",
                     "ablation_pretrain_examples"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.eval_limit is not None and self.eval_limit < 1:
            raise ValueError(f"eval_limit must be >= 1 or None, got {self.eval_limit}.")
        for name in ("lambda_steps", "finetune_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}.")
        check_choice("splits", self.splits, scan.SPLITS)
        check_choice("cells", self.cells, tuple(CELL_TITLES))
        if not self.seeds:
            raise ValueError("seeds must name at least one seed.")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}.")
        if self.jobs < 1:
            raise ValueError(f"jobs must be >= 1, got {self.jobs}.")
        if self.devices is not None and self.devices < 1:
            raise ValueError(f"devices must be >= 1, got {self.devices}.")

    @classmethod
    def paper(cls, **overrides: Any) -> Config:
        """The paper's budgets: LSTM/GRU/RNN x 3 seeds, 200k examples, 10k finetuning steps."""
        return cls(**overrides)

    @classmethod
    def quick(cls, **overrides: Any) -> Config:
        """LSTM, 1 seed, short budgets (< 10 min on 2 CPU cores).

        A quick run cannot match the paper's 10k single-example finetuning steps; it takes a
        few batch-64 steps with the paper's lr scaled linearly by the batch size instead.
        """
        kw: dict[str, Any] = dict(
            cells=("lstm",), seeds=(0,), pretrain_examples=160_000, lambda_steps=60,
            finetune_steps=40, finetune_batch=64, finetune_lr_batch_scaling=True,
            ablation_pretrain_examples=320_000,
        )  # fmt: skip
        return cls(**{**kw, **overrides})

    @property
    def finetune_lrs(self) -> dict[str, float]:
        """Finetuning lr per split."""
        if self.finetune_lr is not None:
            return {sp: self.finetune_lr for sp in PAPER_FINETUNE_LR}
        scale = self.finetune_batch if self.finetune_lr_batch_scaling else 1
        return {sp: lr * scale for sp, lr in PAPER_FINETUNE_LR.items()}

    def results_settings(self) -> dict:
        """The fields that shape results (written to results.json)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in RUNTIME_FIELDS}


def _plain_flags(p: argparse.ArgumentParser) -> None:
    """The flags that do not shape results (not :class:`Config` presets)."""
    p.add_argument("--ablation", action="store_true",
                   help="also run the ablation of the paper row (equitune_sequence): after-EOS "
                        "rows, log-prob vs prob mean, decode length, pretraining budget; writes "
                        "ablation.json / ablation.md")  # fmt: skip
    p.add_argument("--out", type=Path, default=Path("runs/scan"))
    p.add_argument("--no-resume", action="store_true",
                   help="pretrain afresh; existing checkpoints are moved aside, not deleted")
    p.add_argument("--jobs", type=int, default=None,
                   help="(split, cell, seed) runs in parallel threads (default: 2 on a CPU "
                        "with >= 2 cores, else 1); results do not depend on it")
    p.add_argument("--devices", type=int, default=None,
                   help="train data-parallel on the first N devices (with --distributed: all "
                        "devices of all hosts unless given)")
    add_distributed_flags(p)


def _runtime(a: argparse.Namespace) -> dict[str, Any]:
    """The :data:`RUNTIME_FIELDS` of the config, from the plain flags."""
    if a.jobs is not None and a.jobs < 1:
        raise ValueError("--jobs must be >= 1")
    if a.devices is not None and a.devices < 1:
        raise ValueError("--devices must be >= 1")
    check_distributed_flags(a)
    if a.distributed and a.jobs is not None and a.jobs > 1:
        raise ValueError("--jobs must be 1 with several processes (--distributed / "
                         "--coordinator): every process must run the same steps in one order")
    jobs = a.jobs if a.jobs is not None else (
        1 if a.devices or a.distributed else _default_jobs()  # no device query before
    )  # jax.distributed.initialize
    return dict(out=a.out, resume=not a.no_resume, jobs=jobs, devices=a.devices,
                distributed=a.distributed)  # fmt: skip


def parse_args(argv: list[str] | None = None) -> Config:
    """The :class:`Config` of a command line (preset, overrides and the runtime flags)."""
    return _parse(argv)[0]


def _parse(argv: list[str] | None = None) -> tuple[Config, argparse.Namespace]:
    return parse_config(Config, argv, prog="python -m experiments.scan", description=__doc__,
                        plain=_plain_flags, skip=RUNTIME_FIELDS, prepare=_runtime)  # fmt: skip


@functools.lru_cache(maxsize=4)
def data_parallel_mesh(devices: int | None, distributed: bool = False):
    """The data-parallel mesh for ``--devices`` / ``--distributed``, or ``None`` (one device)."""
    if devices is None and not distributed:
        return None
    from equijax.training import parallel

    mesh = parallel.data_mesh(devices)
    log.info("data-parallel over %s (%d process(es))", dict(mesh.shape), jax.process_count())
    return mesh


def _put(mesh, params=(), batch=()):
    """``(replicated params, batch split over the mesh)``; unchanged without a mesh.

    A batch the ``"batch"`` axis does not divide is replicated (every device computes it).
    """
    if mesh is None:
        return params, batch
    from equijax.training import parallel

    params = parallel.replicate(params, mesh)
    if not jax.tree.leaves(batch):
        return params, batch
    if len(jax.tree.leaves(batch)[0]) % mesh.shape["batch"]:
        return params, parallel.replicate(batch, mesh)
    return params, parallel.put_global_batch(batch, mesh)


def _default_jobs() -> int:
    if jax.default_backend() != "cpu":
        return 1
    return 2 if (os.cpu_count() or 1) >= 2 else 1


# ------------------------------------------------------------------------------------------
# Data.
# ------------------------------------------------------------------------------------------


@dataclasses.dataclass
class SplitData:
    name: str
    train: tuple[np.ndarray, np.ndarray]
    val: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]
    in_group: Any
    out_group: Any


def load_split(name: str, val_fraction: float) -> SplitData:
    train, test = scan.split(name)
    train, val = scan.train_val_split(train, val_fraction=val_fraction, seed=0)
    g_in, g_out = scan.groups(scan.SPLIT_GROUP[name])
    return SplitData(name, scan.encode(train), scan.encode(val), scan.encode(test), g_in, g_out)


def bucketed_batches(src, tgt, batch_size: int, rng: np.random.Generator, buckets=BUCKETS):
    """Endless shuffled batches, each padded only to its length bucket."""
    lengths = (tgt != 0).sum(1)
    bucket = np.searchsorted(np.asarray(buckets), lengths)
    while True:
        batches = []
        for b, t_len in enumerate(buckets):
            idx = rng.permutation(np.flatnonzero(bucket == b))
            for i in range(0, len(idx) - batch_size + 1, batch_size):
                batches.append((idx[i : i + batch_size], t_len))
        for j in rng.permutation(len(batches)):
            idx, t_len = batches[j]
            yield src[idx], tgt[idx, :t_len]


# ------------------------------------------------------------------------------------------
# Pretraining (orbax-cached, resumable).
# ------------------------------------------------------------------------------------------


def _progress(total: int, desc: str):
    try:  # shown by process 0 only
        return progress(total=total, desc=desc, leave=False, mininterval=2.0)
    except ImportError:  # pragma: no cover
        return None


def pretrain_settings(model, data: SplitData, seed: int, s: Config) -> dict:
    """What shapes a pretrained model (its checkpoint's fingerprint): not finetuning or eval."""
    return {"experiment": "scan/pretrain", "split": data.name, "val_fraction": s.val_fraction,
            "model": {"cell": model.cell, "hidden": model.hidden,
                      "vocab": [len(scan.input_vocab()), len(scan.output_vocab())]},
            "seed": seed, "pretrain_examples": s.pretrain_examples, "batch_size": s.batch_size,
            "lr": s.lr, "teacher_forcing": s.teacher_forcing, "buckets": BUCKETS}  # fmt: skip


@functools.lru_cache(maxsize=8)
def _pretrain_step(model, steps: int, lr: float, teacher_forcing: float, mesh=None):
    """``(optimizer, jitted train step)``, built once per setting (reruns reuse the compilation).

    With a ``mesh`` the step's outputs (parameters, optimiser state, loss) are replicated over
    it; the inputs bring their shardings (:func:`_put`).
    """
    opt = optax.chain(
        optax.clip_by_global_norm(1.0),
        optax.adam(optax.cosine_decay_schedule(lr, steps, alpha=0.05)),
    )
    step = s2s.make_train_step(model, opt, sos_id=1, pad_id=0, teacher_forcing=teacher_forcing)
    if mesh is not None:
        from equijax.training import parallel

        step = parallel.data_parallel_jit(step, mesh)
    return opt, step


def pretrain(model, data: SplitData, seed: int, s: Config, ckpt_dir: Path, resume: bool = True):
    """Pretrains (or resumes) one model; checkpoints keep the 2 newest of 5 saves + the history.

    A resumed run replays the same batches and PRNG keys as an uninterrupted one (the batch
    stream is re-seeded and skipped ahead; the key is part of the checkpoint), so the result
    does not depend on interruptions.
    """
    from equijax.training import resume_or_start

    steps = math.ceil(s.pretrain_examples / s.batch_size)
    mesh = data_parallel_mesh(s.devices, s.distributed)
    opt, train_step = _pretrain_step(model, steps, s.lr, s.teacher_forcing, mesh)

    @functools.cache
    def init(_step: int) -> dict:  # built only when needed: a refused rerun stops before
        params = s2s.init_params(model, jax.random.key(seed))
        key = jax.random.fold_in(jax.random.key(seed), 0)
        return {"params": params, "opt_state": opt.init(params), "key": jax.random.key_data(key)}

    def target(step: int) -> dict:  # on the mesh: restored onto its (global) shardings
        return _put(mesh, init(step))[0]

    with resume_or_start(ckpt_dir, pretrain_settings(model, data, seed, s), target,
                         resume=resume, hint=RESUME_HINT) as run:  # fmt: skip
        start, history = run.step, run.history
        (params, opt_state), _ = _put(mesh, (run.state["params"], run.state["opt_state"]))
        key = jax.random.wrap_key_data(run.state["key"])
        info = {"steps": steps, "resumed": run.resumed,
                "resumed_from_step": start if run.resumed else None}  # fmt: skip
        if start >= steps:
            return params, {**info, "seconds": 0.0, "history": history,
                            "final_loss": history[-1]["loss"] if history else None}  # fmt: skip
        it = bucketed_batches(*data.train, s.batch_size, np.random.default_rng(seed * 1000))
        for _ in range(start):  # replay the batch stream up to the resume point
            next(it)
        bar = _progress(steps - start, f"pretrain {data.name}/{model.cell}/s{seed}")
        t0 = time.time()
        save_every = max(steps // 5, 1)
        loss = jnp.nan
        for step in range(start, steps):
            src, tgt = next(it)
            key, sub = jax.random.split(key)
            sub, (src, tgt) = _put(mesh, sub, (src, tgt))
            params, opt_state, loss = train_step(params, opt_state, src, tgt, sub)
            if bar is not None:
                bar.update(1)
                if step % 100 == 0:
                    bar.set_postfix(loss=f"{float(loss):.3f}")
            if (step + 1) % save_every == 0 or step + 1 == steps:
                history.append({"step": step + 1, "loss": float(loss)})
                key_data = _put(mesh, jax.random.key_data(key))[0]  # global with a mesh
                run.save(step + 1, {"params": params, "opt_state": opt_state,
                                    "key": key_data}, history)  # fmt: skip
        if bar is not None:
            bar.close()
    return params, {**info, "seconds": time.time() - t0, "final_loss": float(loss),
                    "history": history}  # fmt: skip


# ------------------------------------------------------------------------------------------
# Evaluation.
# ------------------------------------------------------------------------------------------


_DECODERS: dict[tuple, Any] = {}


def make_decoder(model, data: SplitData, kwargs: dict | None, lam_net=None):
    """A jitted ``decode(params, lam_params, src) -> tokens``.

    Parameters are arguments, so one compiled decoder per (model, split, method) serves every
    seed and the finetuned parameters too; decoders are cached here.
    """
    cache_key = (model, data.name, lam_net, _decode_key(kwargs), kwargs is None)
    if cache_key not in _DECODERS:
        _DECODERS[cache_key] = _build_decoder(model, data, kwargs, lam_net)
    return _DECODERS[cache_key]


def _decode_key(kwargs: dict | None) -> tuple:
    """``kwargs`` with ``equivariant_decode``'s defaults filled in: equal decoders, one compile."""
    if kwargs is None:
        return ()
    import inspect

    params = inspect.signature(s2s.equivariant_decode).parameters
    full = {k: p.default for k, p in params.items() if p.kind is p.KEYWORD_ONLY
            and p.default is not p.empty and k != "weight_fn"}  # fmt: skip
    full.update(kwargs)
    return tuple(sorted((k, v if isinstance(v, (str, int, float, bool)) else repr(v))
                        for k, v in full.items()))  # fmt: skip


def _build_decoder(model, data: SplitData, kwargs: dict | None, lam_net=None):
    @jax.jit
    def decode(params, lam_params, src):
        if kwargs is None:
            return s2s.greedy_decode(model, params, src, max_len=scan.MAX_OUTPUT_LEN)
        kw = dict(kwargs)
        max_len = kw.pop("max_len", scan.MAX_OUTPUT_LEN)
        if kw["method"] == "lambda_equitune":
            kw["weight_fn"] = lambda f: lam_net.apply(lam_params, f)
        return s2s.equivariant_decode(
            model, params, src, data.in_group, data.out_group, max_len=max_len, **kw
        ).tokens

    return decode


def predict(decode, params, lam_params, src: np.ndarray, eval_batch: int, mesh=None) -> np.ndarray:
    """Decodes ``src`` in chunks of ``eval_batch`` rows (the last one padded).

    Every split part (val, test) uses the same chunk shape, so each decoder compiles once.
    With a ``mesh`` every chunk is split over its ``"batch"`` axis: each process decodes only
    its devices' rows, keeps them on the host, and the rows of all processes are gathered once
    at the end (:func:`equijax.training.gather_local_rows`). A chunk the ``"batch"`` axis does
    not divide is decoded whole by every device.
    """
    from equijax.training import parallel

    n = len(src)
    bs = eval_batch
    split = mesh is not None and bs % mesh.shape["batch"] == 0
    outs = []
    for i in range(0, n, bs):
        chunk = src[i : i + bs]
        pad = bs - len(chunk)
        if pad:
            chunk = np.concatenate([chunk, np.repeat(chunk[:1], pad, 0)])
        (p, lp), chunk = _put(mesh, (params, lam_params), chunk)
        out = decode(p, lp, chunk)
        outs.append(parallel.local_rows(out, mesh) if split else parallel.gather(out))
    if split:
        return parallel.gather_local_rows(outs, bs, mesh)[:n]
    return np.concatenate(outs)[:n]


def accuracy(pred: np.ndarray, tgt: np.ndarray) -> float:
    return float(np.mean(np.asarray(s2s.exact_match(jnp.asarray(pred), jnp.asarray(tgt)))))


# ------------------------------------------------------------------------------------------
# λ training and finetuning (teacher-forced, all branches vmapped).
# ------------------------------------------------------------------------------------------


def _canonical_kind(kind: str) -> str:
    """The library's method name (the one table; ``"lambda"`` -> ``"lambda_equitune"``, warned)."""
    return decoding.renamed(kind, what="kind", stacklevel=3)


def make_ft_step(model, data: SplitData, kind: str, lam_net, opt, train_model: bool, mesh=None):
    kind = _canonical_kind(kind)
    sm = s2s.sequence_model(model, sos_id=1)

    def loss_fn(trainable, frozen, src, tgt, rng):
        params = trainable.get("model", frozen.get("model"))
        lam_params = trainable.get("lambda", frozen.get("lambda"))
        r1, r2 = jax.random.split(rng)
        # The method's log-probs of the gold targets, through the library's orbit engine;
        # only the λ network (on encoder features) is SCAN's own.
        weight_fn = None
        if kind == "lambda_equitune":
            weight_fn = lambda f, r: lam_net.apply(lam_params, f, deterministic=False,
                                                   rngs={"dropout": r})  # fmt: skip
        out = decoding.method_log_probs(
            sm.teacher_force, params, src, src != 0, tgt, method=kind, group=data.out_group,
            in_group=data.in_group, rng=r1 if train_model else None, weight_fn=weight_fn,
            weight_rng=r2,
        )  # fmt: skip
        mask = (tgt != 0).astype(out.dtype)
        nll = -jnp.take_along_axis(out, tgt[..., None], -1)[..., 0]
        return (nll * mask).sum() / mask.sum()

    def jit(f):  # with a mesh: outputs replicated over it, inputs bring their shardings
        from equijax.training import parallel

        return jax.jit(f) if mesh is None else parallel.data_parallel_jit(f, mesh)

    @jit
    def step(trainable, frozen, opt_state, src, tgt, rng):
        loss, grads = jax.value_and_grad(loss_fn)(trainable, frozen, src, tgt, rng)
        updates, opt_state = opt.update(grads, opt_state, trainable)
        return optax.apply_updates(trainable, updates), opt_state, loss

    return step


def run_ft(model, data, kind, params, lam_net, lam_params, *, steps, batch, lr, seed,
           train_model, train_lambda, desc, mesh=None):
    kind = _canonical_kind(kind)
    opt = optax.adam(lr)
    trainable, frozen = {}, {}
    (trainable if train_model else frozen)["model"] = params
    if lam_params is not None:
        (trainable if train_lambda else frozen)["lambda"] = lam_params
    opt_state = opt.init(trainable)
    (trainable, frozen, opt_state), _ = _put(mesh, (trainable, frozen, opt_state))
    step = make_ft_step(model, data, kind, lam_net, opt, train_model, mesh)
    # One padded length (one compilation): finetuning runs are short.
    it = bucketed_batches(*data.train, batch, np.random.default_rng(seed + 17),
                          buckets=(scan.MAX_OUTPUT_LEN,))
    key = jax.random.key(seed + 17)
    bar = _progress(steps, desc)
    for _ in range(steps):
        src, tgt = next(it)
        key, sub = jax.random.split(key)
        sub, (src, tgt) = _put(mesh, sub, (src, tgt))
        trainable, opt_state, _loss = step(trainable, frozen, opt_state, src, tgt, sub)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    merged = {**frozen, **trainable}
    return merged["model"], merged.get("lambda")


# ------------------------------------------------------------------------------------------
# One (split, cell, seed) run.
# ------------------------------------------------------------------------------------------


def _evaluate(model, data: SplitData, cell: str, seed: int, s: Config, mesh, lam_net):
    """``evaluate(key, kwargs, params, lam_params, into)``: val and test exact match."""

    def evaluate(key, kwargs, params, lam_params, into):
        t0 = time.time()
        dec = make_decoder(model, data, kwargs, lam_net)
        val, test = (tuple(x[: s.eval_limit] for x in part) for part in (data.val, data.test))
        n_val = len(val[0])  # val and test decoded together: fewer padded rows
        pred = predict(dec, params, lam_params, np.concatenate([val[0], test[0]]),
                       s.eval_batch, mesh)  # fmt: skip
        accs = {"val": accuracy(pred[:n_val], val[1]), "test": accuracy(pred[n_val:], test[1])}
        accs["seconds"] = time.time() - t0
        into[key] = accs
        log.info("%s %s s%d %s: val %.4f test %.4f (%.1fs)", data.name, cell, seed, key,
                 accs["val"], accs["test"], accs["seconds"])

    return evaluate


def run_one(data: SplitData, cell: str, seed: int, s: Config) -> dict:
    model = s2s.Seq2Seq(len(scan.input_vocab()), len(scan.output_vocab()), cell=cell)
    ckpt = s.out / "checkpoints" / f"{data.name}-{cell}-s{seed}"
    params, info = pretrain(model, data, seed, s, ckpt, resume=s.resume)
    mesh = data_parallel_mesh(s.devices, s.distributed)
    res: dict[str, Any] = {"pretrain": info, "zero_shot": {}, "finetune": {}}
    lam_net = LambdaNet()
    lam_params = lam_net.init(jax.random.key(seed + 5), jnp.ones((1, model.hidden)))
    evaluate = _evaluate(model, data, cell, seed, s, mesh, lam_net)

    for key, _label, kwargs in ZERO_SHOT:
        if key == "lambda_equitune":
            lam_trained = run_ft(
                model, data, "lambda_equitune", params, lam_net, lam_params,
                steps=s.lambda_steps, batch=s.batch_size, lr=s.lambda_lr, seed=seed,
                train_model=False, train_lambda=True, desc=f"λ {data.name}/{cell}/s{seed}",
                mesh=mesh,
            )[1]  # fmt: skip
            evaluate(key, kwargs, params, lam_trained, res["zero_shot"])
        else:
            evaluate(key, kwargs, params, lam_params, res["zero_shot"])
    if s.finetune_steps > 0:
        for key, _label, kind, kwargs in FINETUNE:
            start_lam = lam_trained if kind == "lambda_equitune" else None
            p_ft, l_ft = run_ft(
                model, data, kind, params, lam_net, start_lam, steps=s.finetune_steps,
                batch=s.finetune_batch, lr=s.finetune_lrs[data.name], seed=seed,
                train_model=True, train_lambda=True, desc=f"ft {kind} {data.name}/{cell}/s{seed}",
                mesh=mesh,
            )
            evaluate(key, kwargs, p_ft, l_ft if l_ft is not None else lam_params, res["finetune"])
    return res


# ------------------------------------------------------------------------------------------
# Ablation of the paper row (issue #16).
# ------------------------------------------------------------------------------------------

_PAPER_ROW = dict(method="equitune_sequence", average="logprob", after_eos="zero")
# (key, label, decode kwargs): the paper row and one change at a time.
ABLATION = (
    ("pretrained", "pretrained model (no symmetrisation)", None),
    ("equitune_sequence", "paper row: log-prob mean, zero rows after EOS, length 50",
     _PAPER_ROW),
    ("after_eos_model", "rows after a branch's EOS from the model (not 0)",
     {**_PAPER_ROW, "after_eos": "model"}),
    ("prob_zero", "probability mean (not log-prob), zero rows after EOS",
     {**_PAPER_ROW, "average": "prob"}),
    ("prob_model", "probability mean, model rows after EOS (= equitune_sequence_prob)",
     {**_PAPER_ROW, "average": "prob", "after_eos": "model"}),
    ("max_len_75", "decode length 75 (1.5 x the dataset's 50)",
     {**_PAPER_ROW, "max_len": 75}),
    ("stepwise_logprob", "step-wise log-prob mean (branches fed the combined tokens)",
     dict(method="equitune", average="logprob")),
    ("equizero", "equizero (neg_max_probability), for reference",
     dict(method="equizero", proxy="neg_max_probability")),
)  # fmt: skip


def run_ablation(data: SplitData, cell: str, seed: int, s: Config) -> dict:
    """The :data:`ABLATION` decoders on the model pretrained with ``s`` and with the larger
    budget ``s.ablation_pretrain_examples``.

    Both models come from :func:`pretrain`, which resumes a finished checkpoint of the same
    settings (the main run's ``<out>/checkpoints/<split>-<cell>-s<seed>``; the larger budget
    under ``...-examples<N>``) instead of training again: the decode-only variants never
    retrain.
    """
    model = s2s.Seq2Seq(len(scan.input_vocab()), len(scan.output_vocab()), cell=cell)
    mesh = data_parallel_mesh(s.devices, s.distributed)
    lam_net = LambdaNet()
    evaluate = _evaluate(model, data, cell, seed, s, mesh, lam_net)
    out: dict[str, dict] = {}
    for n in dict.fromkeys((s.pretrain_examples, s.ablation_pretrain_examples)):
        ckpt = s.out / "checkpoints" / f"{data.name}-{cell}-s{seed}"
        if n != s.pretrain_examples:
            ckpt = ckpt.with_name(f"{ckpt.name}-examples{n}")
        s_n = dataclasses.replace(s, pretrain_examples=n)
        p_n, info = pretrain(model, data, seed, s_n, ckpt, resume=s.resume)
        lam_params = None
        res: dict[str, Any] = {"pretrain": {k: v for k, v in info.items() if k != "history"}}
        for key, _label, kwargs in ABLATION:
            evaluate(f"ablation/{n}/{key}", kwargs, p_n, lam_params, res)
            res[key] = res.pop(f"ablation/{n}/{key}")
        out[str(n)] = res
    return out


# ------------------------------------------------------------------------------------------
# Reporting.
# ------------------------------------------------------------------------------------------


def _fmt(vals: list[float]) -> str:
    v = 100 * np.asarray(vals)
    return f"{v.mean():.1f} ± {v.std():.1f}" if len(v) > 1 else f"{v.mean():.1f}"


def write_report(results: dict, s: Config, wall: float) -> str:
    rows = [(k, lab, "zero_shot") for k, lab, _ in ZERO_SHOT]
    rows += [(k, lab, "finetune") for k, lab, _, _ in FINETUNE] if s.finetune_steps > 0 else []
    head = "| Model | " + " | ".join(
        f"{SPLIT_TITLES[sp]} val | {SPLIT_TITLES[sp]} test" for sp in s.splits
    ) + " |"
    lines = [head, "|" + " --- |" * (1 + 2 * len(s.splits))]
    for cell in s.cells:
        for key, label, phase in rows:
            cells = []
            for sp in s.splits:
                runs = [results[sp][cell][str(seed)][phase][key] for seed in s.seeds]
                cells += [_fmt([r["val"] for r in runs]), _fmt([r["test"] for r in runs])]
            lines.append(f"| {label.format(cell=CELL_TITLES[cell])} | " + " | ".join(cells) + " |")
    md = [
        "# SCAN: zero-shot and finetuned exact-match accuracy (%)",
        "",
        f"Seeds: {list(s.seeds)} (mean ± std over seeds); val = held-out {s.val_fraction:.0%} of "
        f"train (in-distribution), test = the full published test split. Pretraining: "
        f"{s.pretrain_examples:,} examples (batch {s.batch_size}, Adam {s.lr:g}, teacher forcing "
        f"{s.teacher_forcing}). λ: {s.lambda_steps} steps with the model frozen. Finetuning: "
        f"{s.finetune_steps} steps of batch {s.finetune_batch}, lr {s.finetune_lrs}.",
        f"Wall time {wall / 60:.1f} min on {os.cpu_count()} CPU core(s).",
        "",
        *lines,
        "",
        "Paper Table 2 (LSTM, 3 seeds, val/test): Add Jump LSTM 99.1/0.0, EquiLSTM 62.5/7.1, "
        "EquizeroLSTM 98.4/75.2; Around Right LSTM 98.9/0.4, EquiLSTM 80.5/28.2, "
        "EquizeroLSTM 98.7/81.7.",
    ]
    return "\n".join(md) + "\n"


def write_figure(results: dict, s: Config, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [(k, "zero_shot") for k, _, _ in ZERO_SHOT]
    keys += [(k, "finetune") for k, _, _, _ in FINETUNE] if s.finetune_steps > 0 else []
    fig, axes = plt.subplots(1, len(s.splits), figsize=(6 * len(s.splits), 4), squeeze=False)
    width = 0.8 / len(s.cells)
    for ax, sp in zip(axes[0], s.splits, strict=True):
        for j, cell in enumerate(s.cells):
            means, stds = [], []
            for key, phase in keys:
                v = [100 * results[sp][cell][str(seed)][phase][key]["test"] for seed in s.seeds]
                means.append(np.mean(v))
                stds.append(np.std(v))
            x = np.arange(len(keys)) + j * width
            ax.bar(x, means, width, yerr=stds, label=CELL_TITLES[cell])
        ax.set_xticks(np.arange(len(keys)) + width * (len(s.cells) - 1) / 2)
        ax.set_xticklabels([k for k, _ in keys], rotation=45, ha="right", fontsize=8)
        ax.set_ylabel("test exact match (%)")
        ax.set_ylim(0, 100)
        ax.set_title(f"SCAN {SPLIT_TITLES[sp]}")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_ablation(results: dict, s: Config) -> str:
    """``ablation.md``: the paper row under one change at a time, per pretraining budget."""
    budgets = list(dict.fromkeys((s.pretrain_examples, s.ablation_pretrain_examples)))
    head = "| Variant | " + " | ".join(
        f"{SPLIT_TITLES[sp]} {n // 1000}k val | {SPLIT_TITLES[sp]} {n // 1000}k test"
        for sp in s.splits for n in budgets
    ) + " |"
    lines = [head, "|" + " --- |" * (1 + 2 * len(s.splits) * len(budgets))]
    for cell in s.cells:
        for key, label, _ in ABLATION:
            cells = []
            for sp in s.splits:
                for n in budgets:
                    runs = [results[sp][cell][str(seed)][str(n)][key] for seed in s.seeds]
                    cells += [_fmt([r["val"] for r in runs]), _fmt([r["test"] for r in runs])]
            lines.append(f"| {CELL_TITLES[cell]}: `{key}` {label} | " + " | ".join(cells) + " |")
    md = [
        "# SCAN ablation of the paper row (`equitune_sequence`): exact match (%)",
        "",
        f"Seeds {list(s.seeds)} (mean ± std over seeds); pretraining budgets {budgets} examples "
        f"(batch {s.batch_size}, Adam {s.lr:g}); every other row changes one thing of the paper "
        "row. Paper Table 2, EquiLSTM test: Add Jump 7.1 ± 1.3, Around Right 28.2 ± 12.9.",
        "",
        *lines,
    ]
    return "\n".join(md) + "\n"


@cli("python -m experiments.scan")
def main(argv: list[str] | None = None) -> dict:
    s, args = _parse(argv)
    start_distributed(args)  # before anything touches devices (no-op without --distributed)
    setup_logging("experiments")
    main_process = is_main()  # the only writer of results, tables and figures
    s.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    results: dict = {sp: {cell: {} for cell in s.cells} for sp in s.splits}
    ablation: dict = {sp: {cell: {} for cell in s.cells} for sp in s.splits}
    data = {sp: load_split(sp, s.val_fraction) for sp in s.splits}
    jobs = [(sp, cell, seed) for sp in s.splits for cell in s.cells for seed in s.seeds]
    lock = threading.Lock()

    def job(sp: str, cell: str, seed: int) -> None:
        res = run_one(data[sp], cell, seed, s)
        with lock:
            results[sp][cell][str(seed)] = res
            if main_process:
                (s.out / "results.json").write_text(json.dumps(results, indent=1))
        if args.ablation:  # after the main rows are stored; resumes the pretrained model
            abl = run_ablation(data[sp], cell, seed, s)
            with lock:
                ablation[sp][cell][str(seed)] = abl
                if main_process:
                    (s.out / "ablation.json").write_text(json.dumps(ablation, indent=1))

    # Independent runs in parallel threads: most of a run (compilation, small LSTM steps) keeps
    # one core busy, so two runs fill a 2-core machine. Every run is deterministic on its own,
    # so the numbers do not depend on --jobs.
    workers = max(1, min(s.jobs, len(jobs)))
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        for f in [pool.submit(job, *j) for j in jobs]:
            f.result()
    wall = time.time() - t0
    md = write_report(results, s, wall)
    settings = {k: str(v) for k, v in s.results_settings().items()}
    if not main_process:
        return results
    (s.out / "results.json").write_text(
        json.dumps({"settings": settings, "wall_seconds": wall, "results": results}, indent=1)
    )
    (s.out / "results.md").write_text(md)
    write_figure(results, s, s.out / "results.png")
    print(md)
    if args.ablation:
        amd = write_ablation(ablation, s)
        (s.out / "ablation.json").write_text(
            json.dumps({"settings": settings, "wall_seconds": wall, "results": ablation}, indent=1)
        )
        (s.out / "ablation.md").write_text(amd)
        print(amd)
    return results


if __name__ == "__main__":
    main()
