"""DQN training throughput on CartPole-v1: equijax (JAX, one jitted scan) vs stable-baselines3.

Both use the same DQN hyperparameters (SB3 defaults: MLP 2×64, batch 32, one gradient step per
4 transitions, target update every 10k transitions, lr 1e-4, learning_starts 100) and count
environment transitions per second of *training* (acting + env step + replay + gradient steps).
equijax times exclude the one-off XLA compilation, which is reported separately.

    python -m benchmarks.dqn_throughput            # ~1-2 minutes on a 2-core CPU
    python -m benchmarks.dqn_throughput --sb3-steps 5000 --steps 50000

stable-baselines3 (``pip install stable-baselines3``, torch CPU) is needed for its row only.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def bench_sb3(steps: int, threads: int, num_envs: int = 1) -> tuple[float, float] | None:
    """SB3 DQN transitions/s; with ``num_envs`` > 1 a ``DummyVecEnv`` and one gradient step per
    vector step (``train_freq=1``), i.e. the same one gradient step per 4 transitions as equijax."""
    try:
        import gymnasium as gym
        import torch
        from stable_baselines3 import DQN
        from stable_baselines3.common.env_util import make_vec_env
    except ImportError:
        return None
    torch.set_num_threads(threads)  # 1 is SB3's fastest setting for this tiny MLP on 2 cores
    torch.manual_seed(0)
    env = gym.make("CartPole-v1") if num_envs == 1 else make_vec_env("CartPole-v1", num_envs)
    model = DQN("MlpPolicy", env, learning_rate=1e-4, learning_starts=100,
                train_freq=4 // num_envs if num_envs in (1, 2, 4) else 1,
                seed=0, device="cpu", verbose=0)
    t, c = time.perf_counter(), time.process_time()
    model.learn(total_timesteps=steps)
    return steps / (time.perf_counter() - t), steps / (time.process_time() - c)


def bench_equijax(steps: int, num_envs: int, seeds: int, repeats: int = 2):
    import jax
    import jax.numpy as jnp

    from equijax.rl import DQNConfig, init_state, make_env, train_chunk

    env, params = make_env("cartpole")
    cfg = DQNConfig(total_steps=steps, num_envs=num_envs, learning_rate=1e-4, learning_starts=100,
                    buffer_size=max(steps, 1000))
    keys = jnp.stack([jax.random.PRNGKey(i) for i in range(seeds)])
    state = jax.vmap(lambda k: init_state(k, env, params, cfg))(keys)
    run = jax.jit(jax.vmap(lambda s: train_chunk(s, params, env=env, config=cfg,
                                                 num_iterations=cfg.num_iterations)))
    t = time.perf_counter()
    compiled = run.lower(state).compile()
    compile_s = time.perf_counter() - t
    best, best_cpu = float("inf"), float("inf")
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        jax.block_until_ready(compiled(state))
        best = min(best, time.perf_counter() - t)
        best_cpu = min(best_cpu, time.process_time() - c)
    transitions = cfg.num_iterations * num_envs * seeds
    return transitions / best, transitions / best_cpu, compile_s


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=100_000, help="equijax transitions per seed")
    p.add_argument("--sb3-steps", type=int, default=10_000, help="SB3 transitions")
    p.add_argument("--sb3-threads", type=int, default=1, help="torch threads for SB3")
    a = p.parse_args(argv)
    import jax

    rows = []
    sb3 = bench_sb3(a.sb3_steps, a.sb3_threads)
    sb3_vec = bench_sb3(a.sb3_steps, a.sb3_threads, num_envs=4)
    refs = {1: sb3 or (None, None), 4: sb3_vec or (None, None)}
    rows.append((f"stable-baselines3 DQN (torch CPU, {a.sb3_threads} thread), 1 env", a.sb3_steps,
                 *refs[1], None, 1))
    rows.append((f"stable-baselines3 DQN (torch CPU, {a.sb3_threads} thread), 4 envs (DummyVecEnv)",
                 a.sb3_steps, *refs[4], None, 4))
    for num_envs, seeds in ((1, 1), (4, 1), (4, 5)):
        sps, cps, comp = bench_equijax(a.steps, num_envs, seeds)
        label = f"equijax DQN, {num_envs} env{'s' if num_envs > 1 else ''}"
        label += f", {seeds} seeds (vmap)" if seeds > 1 else ", 1 seed"
        rows.append((label, a.steps * seeds, sps, cps, comp, num_envs))
    print(f"DQN training throughput, CartPole-v1, {jax.devices()[0].platform.upper()}, "
          f"jax {jax.__version__}; wall-clock and per-CPU-second rates; speed-ups against SB3 "
          "with the same number of environments\n")
    print("| implementation | transitions timed | transitions / s (wall) | speed-up (wall) "
          "| transitions / CPU-s | speed-up (CPU) | compile s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, n, sps, cps, comp, envs in rows:
        ref_wall, ref_cpu = refs[envs]
        if sps is None:
            print(f"| {label} | – | not installed | – | – | – | – |")
            continue
        sw = f"{sps / ref_wall:.1f}×" if ref_wall else "–"
        sc = f"{cps / ref_cpu:.1f}×" if ref_cpu else "–"
        comp_s = f"{comp:.1f}" if comp is not None else "–"
        print(f"| {label} | {n:,} | {sps:,.0f} | {sw} | {cps:,.0f} | {sc} | {comp_s} |")


if __name__ == "__main__":
    main()
