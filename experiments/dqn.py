"""Zero-shot equivariant DQN policies (paper Fig. 2): pretrained, equitune, equizero, λ-equitune.

For one environment, pretrain one DQN per seed (seeds run in parallel, one jitted scan; orbax
checkpoints; resumable), then evaluate greedy policies built from the *same* pretrained Q-network:
``pretrained`` Q(s), ``equitune`` (group mean of g⁻¹·Q(g·s)), ``equizero`` (the g maximising
max_a Q(g·s, a)) and ``lambda_equitune`` (λ net finetuned briefly on the pretraining replay buffer
with Q frozen; see :mod:`equijax.rl.policies`). Evaluation episodes use fresh environment seeds.

    python -m experiments.dqn --env cartpole              # paper budget: 100k steps, 5 seeds
    python -m experiments.dqn --env gridworld --quick     # a few minutes on a 2-core CPU
    python -m experiments.dqn --env gridworld --protocol paper

``--protocol paper`` is the paper's protocol as far as it is documented (Basu et al. 2023, Fig. 2;
no public code): DQN agents pretrained for 100k / 100k / 70k steps at lr 1e-4, five seeds, then
the symmetrised agents evaluated **zero-shot** (no finetuning, so no λ-equitune row, which the
paper does not show in Fig. 2). The paper does not state how many evaluation episodes each point
averages; this protocol uses :data:`PAPER_EPISODES` = 100 per seed and method (an assumption,
recorded as such in ``results.json``). ``--protocol default`` (the default) is this repository's
own protocol: the same budget and seeds, 200 episodes, plus the λ-equitune row.

One run is described by a :class:`Config` with presets ``default`` / ``paper`` / ``quick``
(``--protocol paper`` is ``--preset paper``; ``--quick`` is ``--preset quick``); every field has
an override flag (``--steps``, ``--seeds``, ``--episodes``, ``--lr``, ``--num-envs``,
``--lambda-steps``) whose value under each preset ``--help`` shows.

For every pair of methods the report gives the paired difference of per-seed mean returns (same
network, same evaluation episodes) with a 95 % Student-t confidence interval over seeds, and says
which orderings the intervals support (interval excludes 0).

Writes ``<out>/<env>/results.json``, ``results.md`` and ``returns.png`` (mean ± std over seeds);
``<out>/summary.png`` gathers every environment found under ``<out>``.

One process, one device: ``--distributed`` / ``--coordinator`` are refused in one line naming
why (:data:`ONE_PROCESS`).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import time
from pathlib import Path

import numpy as np

from experiments._cli import (
    RESUME_HINT,
    ScriptError,
    add_distributed_flags,
    cli,
    refuse_distributed,
    setup_logging,
)
from experiments._config import check_choice, parse_config, setting

PAPER_STEPS = {"gridworld": 100_000, "cartpole": 100_000, "acrobot": 70_000}
QUICK_STEPS = {"gridworld": 30_000, "cartpole": 30_000, "acrobot": 20_000}
#: Evaluation episodes per seed and method under ``--protocol paper``. The paper states neither
#: episode counts nor evaluation length (facts.md §2 RL: "zero-shot evaluation over 5 seeds");
#: 100 is our assumption, not the paper's number.
PAPER_EPISODES = 100
PAPER_SEEDS = 5
PAPER_LR = 1e-4
PAPER_METHODS = ("pretrained", "equitune", "equizero")
LABELS = {
    "pretrained": "Pretrained",
    "equitune": "Equitune",
    "equizero": "Equizero",
    "lambda_equitune": "λ-equitune",
}


PAPER_FIXES = ("--protocol paper fixes the budget, lr and seeds: drop --quick / --steps / --lr / "
               "--seeds (or use --protocol default)")  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Config:
    """One run on one environment: the DQN pretraining budget and the zero-shot evaluation.

    Presets (each takes ``env``): :meth:`default` (the paper's budget, this repository's
    protocol with the λ-equitune row), :meth:`paper` (the paper's Fig. 2 protocol, zero-shot,
    no λ-equitune row) and :meth:`quick` (a few minutes on a 2-core CPU).
    """

    env: str = dataclasses.field(metadata={"help": "environment"})
    protocol: str = setting(
        "default", "'paper' (the paper's Fig. 2 protocol) or 'default' (this repository's)"
    )
    steps: int = setting(
        PAPER_STEPS["gridworld"],
        "pretraining transitions per seed (presets scale with --env: 100k/100k/70k, quick "
        "30k/30k/20k for gridworld/cartpole/acrobot; shown: gridworld)",
    )
    seeds: int = setting(PAPER_SEEDS, "number of seeds")
    episodes: int = setting(200, "evaluation episodes per seed and method")
    lr: float = setting(PAPER_LR, "DQN learning rate")
    num_envs: int = setting(4, "parallel environments per seed")
    lambda_steps: int = setting(2000, "λ-net finetuning steps (default protocol)")

    @classmethod
    def default(cls, env: str, **kw) -> Config:
        """The paper's budget (steps, lr, seeds); 200 episodes; adds the λ-equitune row."""
        return cls(env=env, **{"steps": PAPER_STEPS.get(env, 0), **kw})

    @classmethod
    def paper(cls, env: str, **kw) -> Config:
        """The paper's Fig. 2 protocol: paper budget, zero-shot methods, assumed episodes."""
        kw = {"steps": PAPER_STEPS.get(env, 0), "episodes": PAPER_EPISODES, **kw}
        return cls(env=env, protocol="paper", **kw)

    @classmethod
    def quick(cls, env: str, **kw) -> Config:
        """A short run (a few minutes on a 2-core CPU)."""
        kw = {"steps": QUICK_STEPS.get(env, 0), "episodes": 50, "lambda_steps": 500, **kw}
        return cls(env=env, **kw)

    def __post_init__(self) -> None:
        check_choice("env", self.env, tuple(PAPER_STEPS))
        check_choice("protocol", self.protocol, ("default", "paper"))
        if self.seeds < 1:
            raise ValueError("--seeds must be >= 1")
        if self.num_envs < 1:
            raise ValueError("--num-envs must be >= 1")
        if self.steps < self.num_envs:
            raise ValueError("--steps must be >= --num-envs")
        if self.episodes < 1:
            raise ValueError("--episodes must be >= 1")
        if self.lambda_steps < 1:
            raise ValueError("--lambda-steps must be >= 1")
        if self.protocol == "paper" and (self.steps, self.lr, self.seeds) != (
            PAPER_STEPS[self.env],
            PAPER_LR,
            PAPER_SEEDS,
        ):
            raise ValueError(PAPER_FIXES)

    @property
    def methods(self) -> tuple[str, ...]:
        """The evaluated policies: no λ-equitune row under the paper's (zero-shot) protocol."""
        from equijax.rl import METHODS

        return PAPER_METHODS if self.protocol == "paper" else METHODS

    def dqn_config(self):
        """The :class:`equijax.rl.DQNConfig` of the pretraining (what the checkpoints hold)."""
        from equijax.rl import DQNConfig

        return DQNConfig(total_steps=self.steps, learning_rate=self.lr, num_envs=self.num_envs,
                         buffer_size=max(self.steps, 1000))  # fmt: skip

    def checkpoint_settings(self) -> dict:
        """The fingerprint of the pretraining checkpoints: what shapes the pretrained networks
        (environment, seeds, every :class:`~equijax.rl.DQNConfig` field), not the evaluation
        settings (``episodes``, ``lambda_steps``, ``protocol``) nor ``--chunks`` / ``--out``."""
        return {"experiment": "dqn", "env": self.env, "seeds": list(range(self.seeds)),
                "dqn": dataclasses.asdict(self.dqn_config())}  # fmt: skip


PRESETS = ("default", "paper", "quick")


ONE_PROCESS = (
    "experiments.dqn runs on one device (no data-parallel mesh), so several processes would "
    "only repeat the same run and write the same files"
)


def _plain_flags(p: argparse.ArgumentParser) -> None:
    add_distributed_flags(p)  # refused in one line (ONE_PROCESS)
    p.add_argument("--env", required=True, choices=list(PAPER_STEPS))
    p.add_argument(
        "--protocol", choices=["default", "paper"], default=None,
        help="'paper': the paper's Fig. 2 protocol, i.e. --preset paper (paper budget "
        "100k/100k/70k steps, lr 1e-4, 5 seeds, zero-shot pretrained/equitune/equizero, "
        f"{PAPER_EPISODES} episodes: the paper does not state its episode count); "
        "'default': this repository's protocol (adds λ-equitune, 200 episodes; with --quick "
        "a short run)",
    )  # fmt: skip
    p.add_argument(
        "--chunks", type=int, default=20, help="checkpoint / progress chunks (may change on resume)"
    )
    p.add_argument("--out", type=Path, default=Path("runs/dqn"), help="default runs/dqn")
    p.add_argument(
        "--no-resume",
        action="store_true",
        help="start fresh; an existing checkpoint directory is moved aside, not deleted",
    )


def _prepare(a: argparse.Namespace) -> dict:
    """``--protocol`` names a preset (``default`` also allows ``--quick``); checks the rest."""
    refuse_distributed(a, ONE_PROCESS)
    if a.protocol == "paper":
        if a.quick or a.preset not in (None, "paper"):
            raise ValueError(PAPER_FIXES)
        a.preset = "paper"
    elif a.protocol == "default" and a.preset == "paper":
        raise ValueError("--protocol default contradicts --preset paper: pass one of them")
    if a.preset == "paper" and a.lambda_steps is not None:
        raise ValueError("--protocol paper has no λ-equitune row: drop --lambda-steps")
    if a.chunks < 1:
        raise ValueError("--chunks must be >= 1")
    return {"env": a.env}


def parse_args(argv: list[str] | None = None) -> tuple[Config, argparse.Namespace]:
    """``(config, args)``: the run's :class:`Config` and the plain flags (``--out`` ...)."""
    return parse_config(
        Config, argv, prog="python -m experiments.dqn", description=__doc__.split("\n")[0],
        presets=PRESETS, plain=_plain_flags, skip=("env", "protocol"),
        required={"env": "gridworld"}, prepare=_prepare,
    )  # fmt: skip


def paired_ci(a, b, confidence: float = 0.95) -> dict:
    """Paired difference ``a − b`` of per-seed means with a Student-t confidence interval.

    ``d_i = a_i − b_i``; mean ``d̄``, half-width ``t_{(1+c)/2, n−1} · s_d / √n`` (``s_d`` with
    ``ddof=1``). With one seed the interval is undefined (NaN bounds, ``supported`` = None).

    Returns ``{"mean", "low", "high", "n", "supported"}`` where ``supported`` is ``">"`` if the
    interval lies above 0, ``"<"`` if below, ``"="`` if it contains 0.
    """
    from scipy import stats

    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if d.ndim != 1 or d.size == 0:
        raise ValueError(f"a and b must be equal-length 1-D sequences, got shape {d.shape}")
    n = int(d.size)
    mean = float(d.mean())
    if n < 2:
        return {"mean": mean, "low": float("nan"), "high": float("nan"), "n": n,
                "supported": None}  # fmt: skip
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1) * d.std(ddof=1) / math.sqrt(n))
    low, high = mean - half, mean + half
    sup = ">" if low > 0 else "<" if high < 0 else "="
    return {"mean": mean, "low": low, "high": high, "n": n, "supported": sup}


def pairwise(methods: dict, confidence: float = 0.95) -> list[dict]:
    """Every pair ``(a, b)`` of methods (in order given): paired difference ``a − b`` with CI."""
    names = list(methods)
    out = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            ci = paired_ci(methods[a]["per_seed"], methods[b]["per_seed"], confidence)
            out.append({"a": a, "b": b, **ci})
    return out


def supported_orderings(pairs: list[dict]) -> list[str]:
    """Orderings ``"x > y"`` whose paired CI excludes 0."""
    res = []
    for p in pairs:
        if p["supported"] == ">":
            res.append(f"{p['a']} > {p['b']}")
        elif p["supported"] == "<":
            res.append(f"{p['b']} > {p['a']}")
    return res


def _figure(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = list(results)
    fig, axes = plt.subplots(1, len(envs), figsize=(4.2 * len(envs), 3.6), squeeze=False)
    for ax, env in zip(axes[0], envs, strict=True):
        r = results[env]["methods"]
        names = list(r)
        means = [r[m]["mean"] for m in names]
        stds = [r[m]["std_over_seeds"] for m in names]
        ax.bar(
            range(len(names)),
            means,
            yerr=stds,
            capsize=4,
            color=["#999999", "#4c72b0", "#dd8452", "#55a868"][: len(names)],
        )
        ax.set_xticks(range(len(names)), [LABELS[m] for m in names], rotation=20)
        ax.set_ylabel("return (mean ± std over seeds)")
        meta = results[env]["config"]
        ax.set_title(f"{env}: {meta['steps'] // 1000}k steps, {meta['seeds']} seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _markdown(res: dict) -> str:
    cfg = res["config"]
    lines = [
        f"### {cfg['env']} — zero-shot returns ({cfg['seeds']} seeds × {cfg['episodes']} episodes, "
        f"pretrained {cfg['steps']:,} steps, lr {cfg['lr']:g})",
        "",
        "| method | mean return | std over seeds | gain vs pretrained (paired) | seeds better |"
        " V̂(s0) − G0 | per-seed means |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    n = cfg["seeds"]
    for m, r in res["methods"].items():
        per = ", ".join(f"{v:.3g}" for v in r["per_seed"])
        gain = f"{r['gain_over_pretrained']:+.2f} ± {r['gain_std_over_seeds']:.2f}"
        lines.append(
            f"| {LABELS[m]} | {r['mean']:.2f} | {r['std_over_seeds']:.2f} | {gain} | "
            f"{r['seeds_better_than_pretrained']}/{n} | "
            f"{r['value_overestimation']:+.2f} | {per} |"
        )
    lines += [
        "",
        "V̂(s0) − G0: predicted start-state value max_a Q(s0, a) of the method minus the "
        "discounted return it then obtains (positive = over-estimation).",
        "",
        f"Ordering (best first): {' > '.join(LABELS[m] for m in res['ordering'])}; "
        f"paper's claim equizero > equitune > pretrained holds: {res['paper_order_holds']}.",
    ]
    if "pairwise" in res:
        lines += [
            "",
            f"Paired differences over seeds (A − B of per-seed mean returns; "
            f"{res['confidence']:.0%} t-interval, n = {n}):",
            "",
            "| A − B | mean | 95 % CI | supported |",
            "|---|---:|---|---|",
        ]
        for p in res["pairwise"]:
            sup = {
                ">": f"{LABELS[p['a']]} > {LABELS[p['b']]}",
                "<": f"{LABELS[p['b']]} > {LABELS[p['a']]}",
                "=": "neither (CI contains 0)",
                None: "n/a (1 seed)",
            }[p["supported"]]
            lines.append(
                f"| {LABELS[p['a']]} − {LABELS[p['b']]} | {p['mean']:+.3f} | "
                f"[{p['low']:+.3f}, {p['high']:+.3f}] | {sup} |"
            )
        sup = res["supported_orderings"]
        lines += [
            "",
            "Orderings supported (CI excludes 0): "
            + (", ".join(sup) if sup else "none")
            + "; paper's full claim "
            f"(equizero > equitune > pretrained, each with CI) supported: "
            f"{res['paper_order_supported']}.",
        ]
    return "\n".join(lines) + "\n"


@functools.lru_cache(maxsize=8)
def _chunk_runner(env, config):
    """``train_chunk`` vmapped over seeds and jitted, once per (env, config)."""
    import jax

    from equijax.rl import train_chunk

    return jax.jit(
        jax.vmap(lambda s, p, n: train_chunk(s, p, env=env, config=config, num_iterations=n),
                 in_axes=(0, None, None)),
        static_argnums=2,
    )  # fmt: skip


def pretrain(
    env,
    env_params,
    config,
    seeds: list[int],
    *,
    num_chunks: int,
    directory: Path,
    resume: bool,
    settings: dict,
    desc: str,
):
    """Pretrains one DQN per seed in resumable chunks; returns ``(state, history, resumed_from)``.

    The batched train state and the per-chunk history are checkpointed after every chunk
    (:func:`equijax.training.resume_or_start`), so an interrupted run continues where it stopped
    and its history covers the whole run.
    """
    import jax
    import jax.numpy as jnp
    from tqdm.auto import tqdm

    from equijax.rl import init_state
    from equijax.training import resume_or_start

    total = config.num_iterations
    chunk = math.ceil(total / min(num_chunks, total))
    run_chunk = _chunk_runner(env, config)

    built: list = []

    def init(_step: int):  # built only when needed (a refused rerun stops before)
        if not built:
            keys = jnp.stack([jax.random.PRNGKey(s) for s in seeds])
            built.append(jax.vmap(lambda k: init_state(k, env, env_params, config))(keys))
        return built[0]

    with resume_or_start(directory, settings, init, resume=resume, hint=RESUME_HINT) as run:
        state, history, done = run.state, run.history, run.step
        resumed_from = done if run.resumed else None
        bar = tqdm(total=total * config.num_envs, initial=done * config.num_envs, desc=desc,
                   unit="step", unit_scale=True)  # fmt: skip
        while done < total:
            n = min(chunk, total - done)
            state, m = run_chunk(state, env_params, n)
            done += n
            m = jax.device_get(m)
            rec = {
                "transitions": done * config.num_envs,
                "mean_return": [float(r / e) if e > 0 else float("nan")
                                for r, e in zip(m["return_sum"], m["episodes"], strict=True)],
                "episodes": [int(e) for e in m["episodes"]],
                "mean_loss": float(m["loss_sum"].sum() / max(m["updates"].sum(), 1.0)),
            }  # fmt: skip
            history.append(rec)
            run.save(done, state, history)
            finite = [r for r in rec["mean_return"] if r == r]
            bar.set_postfix(ret=f"{sum(finite) / max(len(finite), 1):.1f}",
                            loss=f"{rec['mean_loss']:.3g}")  # fmt: skip
            bar.update(n * config.num_envs)
        bar.close()
    return state, history, resumed_from


def run(cfg: Config, *, out: Path = Path("runs/dqn"), resume: bool = True, chunks: int = 20,
        preset: str | None = None) -> dict:  # fmt: skip
    """Pretrains, evaluates and writes ``<out>/<env>/results.json`` (+ table and figures)."""
    import jax
    import jax.numpy as jnp

    from equijax.rl import (
        LambdaConfig,
        evaluate,
        get_symmetry,
        greedy_policy,
        lambda_weight_fn,
        make_env,
        make_q_fn,
        q_values,
        train_lambda,
    )

    paper = cfg.protocol == "paper"
    episodes = cfg.episodes
    eval_methods = cfg.methods
    try:
        env, env_params = make_env(cfg.env)
    except ImportError as err:
        raise ScriptError(f"--env {cfg.env} needs gymnax ({err})",
                          "pip install 'equijax[rl]', or use --env gridworld") from err  # fmt: skip
    sym = get_symmetry(cfg.env)
    sym.check_env(env)
    config = cfg.dqn_config()
    root = Path(out)
    out = root / cfg.env
    out.mkdir(parents=True, exist_ok=True)
    seeds = list(range(cfg.seeds))
    settings = cfg.checkpoint_settings()

    t0 = time.perf_counter()
    state, history, resumed_from = pretrain(
        env, env_params, config, seeds, num_chunks=chunks, directory=out / "checkpoints",
        resume=resume, settings=settings, desc=f"DQN {cfg.env} ×{len(seeds)} seeds",
    )  # fmt: skip
    jax.block_until_ready(state.params)
    train_time = time.perf_counter() - t0

    n_act = env.num_actions
    lam_cfg = LambdaConfig(steps=cfg.lambda_steps)
    t1 = time.perf_counter()
    lam_params = lam_losses = None  # zero-shot protocol (paper): no λ net is trained
    if "lambda_equitune" in eval_methods:
        lam_params, lam_losses = jax.vmap(
            lambda qp, buf, k: train_lambda(
                qp, buf, k, symmetry=sym, num_actions=n_act, dqn_config=config, config=lam_cfg
            )
        )(state.params, state.buffer, jnp.stack([jax.random.PRNGKey(1000 + s) for s in seeds]))
        jax.block_until_ready(lam_losses)
    lambda_time = time.perf_counter() - t1

    def run_eval(method, qp, lp, key):
        q_fn = lambda o: q_values(qp, o, num_actions=n_act, hidden=config.hidden)
        lam_fn = None if lp is None else lambda_weight_fn(lp, lam_cfg)
        q_method = make_q_fn(method, q_fn, sym, lambda_fn=lam_fn)
        out = evaluate(greedy_policy(q_method), env, env_params, key, episodes, gamma=config.gamma)
        # Diagnostic: predicted value of the start state vs the discounted return obtained.
        v_hat = q_method(out["initial_obs"]).max(axis=-1)
        return out["returns"], v_hat - out["discounted_returns"]

    # Evaluation environments use keys disjoint from training (training used PRNGKey(seed)).
    eval_keys = jnp.stack([jax.random.PRNGKey(10_000 + s) for s in seeds])
    methods = {}
    t2 = time.perf_counter()
    from tqdm.auto import tqdm

    for method in tqdm(eval_methods, desc="evaluate"):
        fn = jax.jit(jax.vmap(lambda qp, lp, k, m=method: run_eval(m, qp, lp, k)))
        rets, over = fn(state.params, lam_params, eval_keys)  # (seeds, episodes) each
        rets, over = np.asarray(rets), np.asarray(over)
        per_seed = rets.mean(axis=1)
        methods[method] = {
            "value_overestimation": float(over.mean()),
            "value_overestimation_per_seed": over.mean(axis=1).tolist(),
            "mean": float(per_seed.mean()),
            "std_over_seeds": float(per_seed.std(ddof=1)) if len(seeds) > 1 else 0.0,
            "per_seed": per_seed.tolist(),
            "std_over_episodes": float(rets.std()),
        }
    eval_time = time.perf_counter() - t2
    # Paired comparison: every method uses the same pretrained network and evaluation episodes.
    base = np.asarray(methods["pretrained"]["per_seed"])
    for r in methods.values():
        diff = np.asarray(r["per_seed"]) - base
        r["gain_over_pretrained"] = float(diff.mean())
        r["gain_std_over_seeds"] = float(diff.std(ddof=1)) if len(seeds) > 1 else 0.0
        r["seeds_better_than_pretrained"] = int((diff > 0).sum())
    ordering = sorted(methods, key=lambda m: -methods[m]["mean"])
    m = {k: v["mean"] for k, v in methods.items()}
    confidence = 0.95
    pairs = pairwise(methods, confidence)
    sup = supported_orderings(pairs)
    res = {
        "config": {
            "env": cfg.env,
            "protocol": cfg.protocol,
            "episodes_source": (
                "assumed (the paper does not state its episode count)"
                if paper and episodes == PAPER_EPISODES
                else "chosen"
            ),
            "steps": cfg.steps,
            "seeds": len(seeds),
            "episodes": episodes,
            "lr": cfg.lr,
            "num_envs": cfg.num_envs,
            "preset": preset,
            "quick": preset == "quick",
            "dqn": dataclasses.asdict(config),
            "lambda": dataclasses.asdict(lam_cfg),
            "symmetry": sym.name,
            "group_order": sym.order,
        },
        "methods": methods,
        "ordering": ordering,
        "paper_order_holds": bool(m["equizero"] > m["equitune"] > m["pretrained"]),
        "confidence": confidence,
        "pairwise": pairs,
        "supported_orderings": sup,
        "paper_order_supported": bool(
            "equizero > equitune" in sup and "equitune > pretrained" in sup
        ),
        "lambda_td_loss_first_last": None
        if lam_losses is None
        else [float(lam_losses[:, :50].mean()), float(lam_losses[:, -50:].mean())],
        "training_history": history,
        "resumed_from_step": resumed_from,
        "timing_s": {"pretrain": train_time, "lambda": lambda_time, "evaluate": eval_time},
        "device": str(jax.devices()[0]),
    }
    (out / "results.json").write_text(json.dumps(res, indent=1))
    md = _markdown(res)
    (out / "results.md").write_text(md)
    _figure({cfg.env: res}, out / "returns.png")
    every = {p.parent.name: json.loads(p.read_text()) for p in sorted(root.glob("*/results.json"))}
    _figure(every, root / "summary.png")
    print(md)
    print(
        f"pretrain {train_time:.1f}s, λ {lambda_time:.1f}s, evaluate {eval_time:.1f}s; "
        f"wrote {out}/results.json, results.md, returns.png"
    )
    return res


@cli("python -m experiments.dqn")
def main(argv: list[str] | None = None) -> dict:
    cfg, args = parse_args(argv)
    setup_logging("experiments")
    return run(cfg, out=args.out, resume=not args.no_resume, chunks=args.chunks, preset=args.preset)


if __name__ == "__main__":
    main()
