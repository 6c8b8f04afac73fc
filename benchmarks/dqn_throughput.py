"""DQN training throughput on CartPole-v1: equijax (JAX, one jitted scan) vs stable-baselines3.

Both sides train on the same budget with the same DQN hyperparameters (SB3 defaults: MLP 2×64,
batch 32, one gradient step per 4 transitions (``train_freq=4``, ``gradient_steps=1``), target
update every 10k transitions, lr 1e-4, ``learning_starts=100``, replay capacity = the budget)
and count environment transitions per second of *training* (acting + env step + replay +
gradient steps). Every implementation is run ``--repeats`` times, interleaved (SB3, equijax,
SB3, equijax, …), each call a fresh training run of ``--steps`` transitions per seed; the
speed-up is the median of the per-round ratios, with its min–max. equijax's one-off XLA
compilation is excluded (a warm-up call) and reported separately.

    python -m benchmarks.dqn_throughput            # 20k transitions per call, 5 rounds (~3 min)
    python -m benchmarks.dqn_throughput --quick    # 5k transitions per call (~1 min)
    python -m benchmarks.dqn_throughput --cpus 1   # the whole process pinned to one core

``--cpus N`` pins the process (both implementations) to the first N CPUs before jax and torch
start, so that XLA sizes its thread pool to them. A single-environment DQN step is dozens of
tiny kernels (a 64-wide MLP); with two cores XLA:CPU hands them between threads, and one core
runs the same loop faster in wall time at less than half the CPU time (``taskset -c 0`` does
the same for ``python -m experiments.dqn``). SB3 runs with ``--sb3-threads`` torch threads (1)
either way.

stable-baselines3 (``pip install stable-baselines3``, torch CPU) is needed for its rows only.
"""

from __future__ import annotations

import argparse
import os
import sys

from benchmarks import _timing


def sb3_runner(steps: int, threads: int, num_envs: int = 1):
    """A callable training a fresh SB3 DQN for ``steps`` transitions, or ``None`` without SB3.

    With ``num_envs`` > 1 a ``DummyVecEnv`` and ``train_freq=4 // num_envs`` vector steps,
    i.e. the same one gradient step per 4 transitions as equijax.
    """
    try:
        import gymnasium as gym
        import torch
        from stable_baselines3 import DQN
        from stable_baselines3.common.env_util import make_vec_env
    except ImportError:
        return None
    torch.set_num_threads(threads)  # 1 is SB3's fastest setting for this tiny MLP on 2 cores

    def run():
        torch.manual_seed(0)
        env = gym.make("CartPole-v1") if num_envs == 1 else make_vec_env("CartPole-v1", num_envs)
        model = DQN("MlpPolicy", env, learning_rate=1e-4, learning_starts=100,
                    buffer_size=max(steps, 1000), train_freq=max(4 // num_envs, 1),
                    gradient_steps=1, seed=0, device="cpu", verbose=0)  # fmt: skip
        model.learn(total_timesteps=steps)

    return run


def equijax_runner(steps: int, num_envs: int, seeds: int):
    """``(callable, compile seconds)``: the callable trains ``seeds`` fresh equijax DQNs."""
    import time

    import jax
    import jax.numpy as jnp

    from equijax.rl import DQNConfig, init_state, make_env, train_chunk

    env, params = make_env("cartpole")
    cfg = DQNConfig(total_steps=steps, num_envs=num_envs, learning_rate=1e-4, learning_starts=100,
                    buffer_size=max(steps, 1000))  # fmt: skip
    keys = jnp.stack([jax.random.PRNGKey(i) for i in range(seeds)])
    state = jax.vmap(lambda k: init_state(k, env, params, cfg))(keys)
    run = jax.jit(jax.vmap(lambda s: train_chunk(s, params, env=env, config=cfg,
                                                 num_iterations=cfg.num_iterations)))  # fmt: skip
    t = time.perf_counter()
    compiled = run.lower(state).compile()
    compile_s = time.perf_counter() - t
    return (lambda: jax.block_until_ready(compiled(state))), compile_s


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=20_000, help="transitions per call and seed "
                   "(both implementations)")  # fmt: skip
    p.add_argument("--sb3-threads", type=int, default=1, help="torch threads for SB3")
    p.add_argument("--quick", action="store_true", help="5,000 transitions per call")
    p.add_argument("--cpus", type=int, default=0, help="pin the process to the first N CPUs "
                   "before jax and torch start (0: all)")  # fmt: skip
    _timing.add_repeat_args(p)
    a = p.parse_args(argv)
    if a.cpus:
        available = sorted(os.sched_getaffinity(0))
        if not 1 <= a.cpus <= len(available):
            p.error(f"--cpus must be between 1 and {len(available)} (this machine's CPUs)")
        if "jax" in sys.modules or "torch" in sys.modules:
            p.error("--cpus must be set before jax or torch is imported (run as a script)")
        os.sched_setaffinity(0, set(available[: a.cpus]))
    if a.quick:
        a.steps = 5_000

    load = _timing.Load.start()
    # (label, transitions per call, runner, compile s, number of envs, is SB3)
    rows = []
    for n_env in (1, 4):
        run = sb3_runner(a.steps, a.sb3_threads, n_env)
        label = f"stable-baselines3 DQN (torch CPU, {a.sb3_threads} thread), {n_env} env"
        label += "s (DummyVecEnv)" if n_env > 1 else ""
        rows.append((label, a.steps, run, None, n_env, True))
    for n_env, seeds in ((1, 1), (4, 1), (4, 5)):
        run, comp = equijax_runner(a.steps, n_env, seeds)
        label = f"equijax DQN, {n_env} env{'s' if n_env > 1 else ''}"
        label += f", {seeds} seeds (vmap)" if seeds > 1 else ", 1 seed"
        rows.append((label, a.steps * seeds, run, comp, n_env, False))
    fns = {r[0]: r[2] for r in rows if r[2] is not None}
    samples = _timing.interleave(fns, a.repeats)
    load.stop()
    refs = {r[4]: samples.get(r[0]) for r in rows if r[5]}

    pinned = f"; process pinned to {a.cpus} CPU(s)" if a.cpus else ""
    print(f"DQN training throughput, CartPole-v1, same budget ({a.steps:,} transitions per call "
          f"and seed); {_timing.machine()}{pinned}\n")  # fmt: skip
    print("| implementation | transitions per call | transitions / s (wall, median) "
          "| speed-up vs SB3, same envs (wall) | speed-up (process CPU time) | compile s |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, n, run, comp, envs, is_sb3 in rows:
        if run is None:
            print(f"| {label} | – | not installed | – | – | – |")
            continue
        s = samples[label]
        rate = n / s.median
        ref = refs.get(envs)
        if is_sb3 or ref is None:
            sw = sc = "1.0×" if is_sb3 else "–"
        else:
            # per round: (n / t_jax) / (steps / t_sb3)
            sw = _timing.pair_ratios([n / a.steps * r for r in ref.wall], s.wall).fmt(1, "×")
            sc = _timing.pair_ratios([n / a.steps * r for r in ref.cpu], s.cpu).fmt(1, "×")
        comp_s = f"{comp:.1f}" if comp is not None else "–"
        print(f"| {label} | {n:,} | {rate:,.0f} | {sw} | {sc} | {comp_s} |")
    print(f"\n{_timing.footer(load, a.repeats)}")


if __name__ == "__main__":
    main()
