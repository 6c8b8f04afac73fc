"""Deep Q-learning in JAX: the whole training loop is one jitted ``lax.scan`` over vectorised envs.

Defaults follow stable-baselines3's ``DQN`` (the paper's setup): MLP Q-network 2×64 ReLU, Adam
lr 1e-4, batch 32, γ 0.99, Huber (smooth-L1) TD loss, one gradient step per 4 transitions, hard
target update every 10,000 transitions, ε linearly 1.0 → 0.05 over the first 10 % of training,
gradient-norm clipping 10. The replay buffer is a pytree ring buffer stored in the train state, so a
run is ``state = init_state(...)`` followed by repeated ``state, metrics = train_chunk(...)``;
:func:`train` adds several seeds at once (``vmap``), orbax checkpoints after every chunk, resume,
and a tqdm progress bar.

Per-transition cost on CPU is dominated by the number of XLA kernels the loop body launches, not
by arithmetic, so the loop is written to launch few: all random numbers of a chunk are drawn in
bulk before the scan (iteration ``i`` uses ``fold_in(key, i)``), the environment's auto-reset,
the gradient step and the target update run under ``lax.cond`` only when due, metrics are summed
in the carry, and Adam updates one flattened parameter vector.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.flatten_util
import jax.numpy as jnp
import optax
from flax import struct

__all__ = [
    "DQNConfig",
    "DQNState",
    "QNetwork",
    "ReplayBuffer",
    "epsilon_at",
    "init_state",
    "q_values",
    "td_loss",
    "train",
    "train_chunk",
]

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class DQNConfig:
    """Static (hashable) DQN hyperparameters; counts are in environment transitions.

    Attributes:
        total_steps: environment transitions to collect (summed over the ``num_envs`` envs).
        num_envs: environments stepped in parallel (``vmap``) per iteration.
        learning_rate: Adam learning rate (paper: 1e-4).
        buffer_size: replay capacity (transitions).
        learning_starts: transitions collected before the first gradient step.
        batch_size: replay minibatch size.
        gamma: discount factor in ``[0, 1]``.
        train_freq: transitions per gradient step (SB3 semantics; must divide or be a multiple of
            ``num_envs``).
        target_update_interval: transitions between target-network updates.
        tau: target update coefficient (1.0 = hard copy).
        exploration_fraction: fraction of ``total_steps`` over which ε decays linearly.
        exploration_initial_eps: ε at the start.
        exploration_final_eps: ε after the decay.
        max_grad_norm: global gradient-norm clip.
        hidden: hidden layer widths of the MLP Q-network.
        double_q: use double-DQN targets (off in SB3's DQN).
    """

    total_steps: int = 100_000
    num_envs: int = 4
    learning_rate: float = 1e-4
    buffer_size: int = 100_000
    learning_starts: int = 1_000
    batch_size: int = 32
    gamma: float = 0.99
    train_freq: int = 4
    target_update_interval: int = 10_000
    tau: float = 1.0
    exploration_fraction: float = 0.1
    exploration_initial_eps: float = 1.0
    exploration_final_eps: float = 0.05
    max_grad_norm: float = 10.0
    hidden: tuple[int, ...] = (64, 64)
    double_q: bool = False

    def __post_init__(self) -> None:
        def _pos_int(name: str) -> None:
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"DQNConfig.{name} must be a positive int, got {v!r}")

        for name in (
            "total_steps",
            "num_envs",
            "buffer_size",
            "batch_size",
            "train_freq",
            "target_update_interval",
        ):
            _pos_int(name)
        if not isinstance(self.learning_starts, int) or self.learning_starts < 0:
            raise ValueError(
                f"DQNConfig.learning_starts must be an int >= 0, got {self.learning_starts!r}"
            )
        if not (isinstance(self.learning_rate, int | float) and self.learning_rate > 0):
            raise ValueError(f"DQNConfig.learning_rate must be > 0, got {self.learning_rate!r}")
        for name in (
            "gamma",
            "exploration_fraction",
            "exploration_initial_eps",
            "exploration_final_eps",
        ):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and 0.0 <= v <= 1.0):
                raise ValueError(f"DQNConfig.{name} must be in [0, 1], got {v!r}")
        if not (isinstance(self.tau, int | float) and 0.0 < self.tau <= 1.0):
            raise ValueError(f"DQNConfig.tau must be in (0, 1], got {self.tau!r}")
        if not (isinstance(self.max_grad_norm, int | float) and self.max_grad_norm > 0):
            raise ValueError(f"DQNConfig.max_grad_norm must be > 0, got {self.max_grad_norm!r}")
        if not isinstance(self.hidden, tuple) or not all(
            isinstance(h, int) and h > 0 for h in self.hidden
        ):
            raise ValueError(
                f"DQNConfig.hidden must be a tuple of positive ints, got {self.hidden!r}"
            )
        if self.num_envs % self.train_freq and self.train_freq % self.num_envs:
            raise ValueError(
                f"DQNConfig.train_freq ({self.train_freq}) must divide or be a multiple of "
                f"num_envs ({self.num_envs})"
            )
        if self.total_steps < self.num_envs:
            raise ValueError(
                f"DQNConfig.total_steps ({self.total_steps}) must be >= num_envs ({self.num_envs})"
            )
        if self.batch_size > self.buffer_size:
            raise ValueError(
                f"DQNConfig.batch_size ({self.batch_size}) must be <= buffer_size "
                f"({self.buffer_size})"
            )

    @property
    def num_iterations(self) -> int:
        """Scan iterations (each steps all ``num_envs`` environments once)."""
        return self.total_steps // self.num_envs


class QNetwork(nn.Module):
    """MLP Q-network (stable-baselines3 default: 2×64 ReLU); observations are flattened.

    Attributes:
        num_actions: number of discrete actions (output width).
        hidden: hidden layer widths.

    >>> import jax, jax.numpy as jnp
    >>> net = QNetwork(num_actions=2)
    >>> params = net.init(jax.random.PRNGKey(0), jnp.zeros((1, 4)))
    >>> net.apply(params, jnp.zeros((3, 4))).shape
    (3, 2)
    """

    num_actions: int
    hidden: Sequence[int] = (64, 64)

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        x = jnp.reshape(obs, (obs.shape[0], -1)).astype(jnp.float32)
        for width in self.hidden:
            x = nn.relu(nn.Dense(width)(x))
        return nn.Dense(self.num_actions)(x)


@struct.dataclass
class ReplayBuffer:
    """Pytree ring buffer of transitions (capacity = leading axis)."""

    obs: jax.Array
    action: jax.Array
    reward: jax.Array
    next_obs: jax.Array
    terminated: jax.Array
    pos: jax.Array
    size: jax.Array

    def gather(self, idx: jax.Array) -> dict[str, jax.Array]:
        """The transitions at ``idx`` as a dict of arrays (the minibatch of :func:`td_loss`)."""
        return {f: getattr(self, f)[idx] for f in _TRANSITION_FIELDS}

    def sample_indices(self, key: jax.Array, batch_size: int) -> jax.Array:
        """``(batch_size,)`` indices drawn uniformly (with replacement) from the filled part."""
        return jax.random.randint(key, (batch_size,), 0, jnp.maximum(self.size, 1))


_TRANSITION_FIELDS = ("obs", "action", "reward", "next_obs", "terminated")


@struct.dataclass
class DQNState:
    """Everything a DQN run carries between iterations (a pytree; checkpointable).

    ``key`` is the run's base key: iteration ``i`` draws all its randomness from
    ``fold_in(key, i)``, so a run gives the same result however it is split into chunks.
    """

    params: Any
    target_params: Any
    opt_state: Any
    buffer: ReplayBuffer
    env_state: Any
    obs: jax.Array
    key: jax.Array
    iteration: jax.Array
    ep_return: jax.Array
    ep_length: jax.Array


def _optimizer(config: DQNConfig) -> optax.GradientTransformation:
    return optax.chain(
        optax.clip_by_global_norm(config.max_grad_norm), optax.adam(config.learning_rate)
    )


def _network(config: DQNConfig, num_actions: int) -> QNetwork:
    return QNetwork(num_actions=num_actions, hidden=config.hidden)


def q_values(
    params: Any, obs: jax.Array, *, num_actions: int, hidden: Sequence[int] = (64, 64)
) -> jax.Array:
    """Q-values ``(B, num_actions)`` of a batch of observations ``(B, *obs_shape)``."""
    return QNetwork(num_actions=num_actions, hidden=tuple(hidden)).apply(params, obs)


def epsilon_at(config: DQNConfig, transitions: jax.typing.ArrayLike) -> jax.Array:
    """ε of the linear schedule after ``transitions`` environment transitions."""
    decay = max(config.exploration_fraction * config.total_steps, 1.0)
    frac = jnp.clip(jnp.asarray(transitions, jnp.float32) / decay, 0.0, 1.0)
    return config.exploration_initial_eps + frac * (
        config.exploration_final_eps - config.exploration_initial_eps
    )


def _check_env(env: Any) -> None:
    for attr in ("reset", "step", "num_actions"):
        if not hasattr(env, attr):
            raise TypeError(f"env must be a gymnax-style environment with .{attr}; got {env!r}")


def init_state(key: jax.Array, env: Any, env_params: Any, config: DQNConfig) -> DQNState:
    """Initial :class:`DQNState`: fresh network, empty buffer, ``num_envs`` reset environments.

    Args:
        key: PRNG key (``jax.random.PRNGKey``).
        env: gymnax-style environment (see :func:`equijax.rl.make_env`).
        env_params: its parameters.
        config: hyperparameters.

    Returns:
        The train state (a pytree).
    """
    _check_env(env)
    if not isinstance(config, DQNConfig):
        raise TypeError(f"config must be a DQNConfig, got {type(config).__name__}")
    k_net, k_env, k_run = jax.random.split(key, 3)
    obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(
        jax.random.split(k_env, config.num_envs), env_params
    )
    env_state = jax.tree.map(jnp.asarray, env_state)
    net = _network(config, env.num_actions)
    params = net.init(k_net, obs[:1])
    cap = config.buffer_size
    buffer = ReplayBuffer(
        obs=jnp.zeros((cap, *obs.shape[1:]), obs.dtype),
        action=jnp.zeros((cap,), jnp.int32),
        reward=jnp.zeros((cap,), jnp.float32),
        next_obs=jnp.zeros((cap, *obs.shape[1:]), obs.dtype),
        terminated=jnp.zeros((cap,), jnp.float32),
        pos=jnp.int32(0),
        size=jnp.int32(0),
    )
    return DQNState(
        params=params,
        target_params=params,
        opt_state=_optimizer(config).init(jax.flatten_util.ravel_pytree(params)[0]),
        buffer=buffer,
        env_state=env_state,
        obs=obs,
        key=k_run,
        iteration=jnp.int32(0),
        ep_return=jnp.zeros((config.num_envs,), jnp.float32),
        ep_length=jnp.zeros((config.num_envs,), jnp.int32),
    )


def td_loss(
    q: jax.Array,
    batch: dict[str, jax.Array],
    next_q_target: jax.Array,
    *,
    gamma: float,
    double_q: bool = False,
    next_q_online: jax.Array | None = None,
) -> jax.Array:
    r"""Mean Huber (smooth-L1, δ = 1) temporal-difference error of a minibatch.

    .. math::
        y = r + \gamma (1 - d)\, Q_{\text{target}}(s', a^*), \qquad
        a^* = \begin{cases} \arg\max_a Q_{\text{online}}(s', a) & \text{double Q} \\
        \arg\max_a Q_{\text{target}}(s', a) & \text{otherwise} \end{cases}

    and the loss is ``mean(huber(Q(s, a) − stop_gradient(y)))``. The single TD loss of the
    package: DQN training and λ training (:func:`equijax.rl.train_lambda`) both use it.

    Args:
        q: ``(B, A)`` Q-values of ``batch["obs"]`` (differentiated).
        batch: from :meth:`ReplayBuffer.gather`: ``action`` ``(B,)``, ``reward`` ``(B,)``,
            ``terminated`` ``(B,)`` (1.0 for a true termination, not a time-limit truncation).
        next_q_target: ``(B, A)`` target-network Q-values of ``batch["next_obs"]``.
        gamma: discount in ``[0, 1]``.
        double_q: choose ``a*`` with ``next_q_online`` (van Hasselt et al. 2016).
        next_q_online: ``(B, A)`` online Q-values of ``batch["next_obs"]``; needed for
            ``double_q``.

    Returns:
        The scalar loss.

    Examples:
        >>> import jax.numpy as jnp
        >>> b = {"action": jnp.array([0]), "reward": jnp.array([1.0]),
        ...      "terminated": jnp.array([0.0])}
        >>> float(td_loss(jnp.array([[1.5, 0.0]]), b, jnp.array([[0.0, 0.5]]), gamma=1.0))
        0.0
    """
    if double_q and next_q_online is None:
        raise ValueError("td_loss(double_q=True) needs next_q_online")
    q_sa = jnp.take_along_axis(q, batch["action"][:, None], axis=-1)[:, 0]
    if double_q:
        a_star = jnp.argmax(next_q_online, axis=-1)
        next_v = jnp.take_along_axis(next_q_target, a_star[:, None], axis=-1)[:, 0]
    else:
        next_v = jnp.max(next_q_target, axis=-1)
    target = batch["reward"] + gamma * (1.0 - batch["terminated"]) * next_v
    return jnp.mean(optax.huber_loss(q_sa, jax.lax.stop_gradient(target), delta=1.0))


def _dqn_loss(params, target_params, batch, config: DQNConfig, num_actions: int):
    net = _network(config, num_actions)
    online_next = net.apply(params, batch["next_obs"]) if config.double_q else None
    return td_loss(
        net.apply(params, batch["obs"]),
        batch,
        net.apply(target_params, batch["next_obs"]),
        gamma=config.gamma,
        double_q=config.double_q,
        next_q_online=online_next,
    )


def _gradient_step(
    params,
    opt_state,
    target_params,
    buf: ReplayBuffer,
    idx: jax.Array,
    config: DQNConfig,
    num_actions: int,
):
    # The optimiser works on the flattened parameter vector: one fused Adam / clipping update
    # instead of one per layer (a few dozen fewer kernels per gradient step on CPU).
    batch = buf.gather(idx)
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    loss, grads = jax.value_and_grad(
        lambda f: _dqn_loss(unravel(f), target_params, batch, config, num_actions)
    )(flat)
    updates, opt_state = _optimizer(config).update(grads, opt_state, flat)
    return unravel(flat + updates), opt_state, loss


def _env_step(env, k_step, k_reset, env_state, action, env_params):
    """``vmap(env.step)`` with the auto-reset computed only when an episode ended.

    The same values as gymnax's ``step`` for keys ``split(key) == (k_step, k_reset)``.
    """
    obs_st, state_st, reward, terminated, _ = jax.vmap(env.step_env, in_axes=(0, 0, 0, None))(
        k_step, env_state, action, env_params
    )
    truncated = jax.vmap(env.is_truncated, in_axes=(0, None))(state_st, env_params)
    done = jnp.logical_or(terminated, truncated)

    def reset(operand):
        obs_st, state_st = operand
        obs_re, state_re = jax.vmap(env.reset_env, in_axes=(0, None))(k_reset, env_params)
        sel = lambda a, b: jnp.where(jnp.reshape(done, done.shape + (1,) * (a.ndim - 1)), a, b)
        return jax.tree.map(sel, obs_re, obs_st), jax.tree.map(sel, state_re, state_st)

    obs, state = jax.lax.cond(jnp.any(done), reset, lambda o: o, (obs_st, state_st))
    return obs, state, reward, terminated, truncated, obs_st


def _iteration_randomness(key, iteration, config: DQNConfig, num_actions: int):
    """All random draws of one iteration, from ``fold_in(key, iteration)`` (chunk-independent).

    Drawn in bulk for a whole chunk (``vmap`` over iterations) so that the scan body does no
    random-number generation: ε-greedy coin and random action per env, step / reset keys per env,
    and the replay indices of the iteration's gradient steps (used only if it trains; the
    buffer then holds ``min((iteration + 1) · num_envs, buffer_size)`` transitions).
    """
    n = config.num_envs
    k_eps, k_rand, k_step, k_reset, k_idx = jax.random.split(jax.random.fold_in(key, iteration), 5)
    per_iter = max(n // config.train_freq, 1)
    size = jnp.minimum((iteration + 1) * n, config.buffer_size)
    explore = jax.random.uniform(k_eps, (n,)) < epsilon_at(config, iteration * n)
    return {
        "explore": explore,
        "random_action": jax.random.randint(k_rand, (n,), 0, num_actions, dtype=jnp.int32),
        "k_step": jax.random.split(k_step, n),
        "k_reset": jax.random.split(k_reset, n),
        "idx": jax.random.randint(k_idx, (per_iter, config.batch_size), 0, size),
    }


def _iteration(state: DQNState, rnd: dict, env: Any, env_params: Any, config: DQNConfig):
    n = config.num_envs
    num_actions = env.num_actions
    # ε-greedy action selection.
    q = _network(config, num_actions).apply(state.params, state.obs)
    greedy = jnp.argmax(q, axis=-1).astype(jnp.int32)
    action = jnp.where(rnd["explore"], rnd["random_action"], greedy)
    # Environment step (auto-reset); the stored next_obs is the pre-reset observation.
    obs, env_state, reward, terminated, truncated, final_obs = _env_step(
        env, rnd["k_step"], rnd["k_reset"], state.env_state, action, env_params
    )
    env_state = jax.tree.map(
        lambda new, old: jnp.asarray(new, old.dtype), env_state, state.env_state
    )
    reward = reward.astype(jnp.float32)
    done = jnp.logical_or(terminated, truncated)
    # Replay buffer write (ring).
    buf = state.buffer
    cap = config.buffer_size
    slots = (buf.pos + jnp.arange(n)) % cap
    buf = buf.replace(
        obs=buf.obs.at[slots].set(state.obs),
        action=buf.action.at[slots].set(action),
        reward=buf.reward.at[slots].set(reward),
        next_obs=buf.next_obs.at[slots].set(final_obs.astype(buf.obs.dtype)),
        terminated=buf.terminated.at[slots].set(terminated.astype(jnp.float32)),
        pos=(buf.pos + n) % cap,
        size=jnp.minimum(buf.size + n, cap),
    )
    ep_return = state.ep_return + reward
    ep_length = state.ep_length + 1
    metrics = {
        "episodes": jnp.sum(done).astype(jnp.float32),
        "return_sum": jnp.sum(jnp.where(done, ep_return, 0.0)),
        "length_sum": jnp.sum(jnp.where(done, ep_length, 0)).astype(jnp.float32),
    }
    state = state.replace(
        buffer=buf,
        env_state=env_state,
        obs=obs.astype(state.obs.dtype),
        iteration=state.iteration + 1,
        ep_return=jnp.where(done, 0.0, ep_return),
        ep_length=jnp.where(done, 0, ep_length),
    )
    # Gradient steps: `per_iter` every `every` iterations once learning has started.
    every = max(config.train_freq // n, 1)
    transitions = state.iteration * n
    do_train = jnp.logical_and(transitions >= config.learning_starts, state.iteration % every == 0)

    # Only (params, opt_state) go through the cond: under vmap (several seeds) it becomes a
    # select, which must not copy the replay buffer every iteration.
    def _train(po):
        def body(po, idx):
            p, o, loss = _gradient_step(
                *po, state.target_params, state.buffer, idx, config, num_actions
            )
            return (p, o), loss

        po, losses = jax.lax.scan(body, po, rnd["idx"])
        return po, jnp.mean(losses)

    (params, opt_state), loss = jax.lax.cond(
        do_train, _train, lambda po: (po, jnp.float32(0.0)), (state.params, state.opt_state)
    )
    state = state.replace(params=params, opt_state=opt_state)
    metrics["loss_sum"] = loss
    metrics["updates"] = do_train.astype(jnp.float32)
    # Target network update every `target_update_interval` transitions.
    target_every = max(config.target_update_interval // n, 1)
    do_target = state.iteration % target_every == 0
    target_params = jax.lax.cond(
        do_target,
        lambda pt: optax.incremental_update(pt[0], pt[1], config.tau),
        lambda pt: pt[1],
        (state.params, state.target_params),
    )
    return state.replace(target_params=target_params), metrics


@functools.partial(jax.jit, static_argnames=("env", "config", "num_iterations"))
def train_chunk(
    state: DQNState, env_params: Any, *, env: Any, config: DQNConfig, num_iterations: int
) -> tuple[DQNState, dict[str, jax.Array]]:
    """Run ``num_iterations`` training iterations (``num_iterations × num_envs`` transitions).

    Pure and jitted (``env``/``config``/``num_iterations`` static); ``vmap`` it over a batch of
    states for several seeds. The chunk's random numbers are drawn before the loop (iteration
    ``i`` from ``fold_in(state.key, i)``, so results do not depend on the chunking); they take
    about ``num_iterations × (⌈num_envs / train_freq⌉ × batch_size + 6 × num_envs) × 4`` bytes
    (13 MB for 100,000 single-environment iterations): split very long runs into chunks.

    Returns:
        ``(state, metrics)`` with metrics summed over the chunk: ``episodes``, ``return_sum``,
        ``length_sum`` (finished episodes), ``loss_sum`` and ``updates`` (gradient iterations).
    """
    step = functools.partial(_iteration, env=env, env_params=env_params, config=config)
    iterations = state.iteration + jnp.arange(num_iterations, dtype=jnp.int32)
    rnd = jax.vmap(lambda it: _iteration_randomness(state.key, it, config, env.num_actions))(
        iterations
    )

    def body(carry, rnd):
        state, acc = carry
        state, m = step(state, rnd)
        return (state, jax.tree.map(jnp.add, acc, m)), None

    zero = jnp.float32(0.0)
    acc = {k: zero for k in ("episodes", "return_sum", "length_sum", "loss_sum", "updates")}
    (state, metrics), _ = jax.lax.scan(body, (state, acc), rnd)
    return state, metrics


@functools.lru_cache(maxsize=16)
def _seed_runner(env: Any, config: DQNConfig):
    """Jitted ``train_chunk`` vmapped over seeds (cached so repeated/resumed runs reuse it)."""
    return jax.jit(
        jax.vmap(
            lambda s, p, n: train_chunk(s, p, env=env, config=config, num_iterations=n),
            in_axes=(0, None, None),
        ),
        static_argnums=2,
    )


def train(
    env: Any,
    env_params: Any,
    config: DQNConfig,
    seeds: Sequence[int] | int = 0,
    *,
    num_chunks: int = 20,
    checkpoint_dir: str | None = None,
    resume: bool = True,
    progress: bool = False,
    desc: str = "DQN",
) -> tuple[DQNState, list[dict[str, Any]]]:
    """Train one DQN per seed (seeds run in parallel with ``vmap``).

    Args:
        env: gymnax-style environment.
        env_params: its parameters.
        config: hyperparameters.
        seeds: an int or a sequence of ints; the returned state has a leading seed axis.
        num_chunks: training is split into this many jitted chunks (checkpoint / log granularity).
        checkpoint_dir: if given, the full state and the history are checkpointed after each chunk
            through :func:`equijax.training.resume_or_start` (settings fingerprint; the two newest
            steps kept; an unreadable newest step falls back to the previous one).
        resume: continue from the latest checkpoint in ``checkpoint_dir`` if there is one;
            ``False`` moves an existing run directory aside (never deletes it) and starts fresh.
        progress: show a tqdm progress bar.
        desc: progress-bar label.

    Returns:
        ``(state, history)``: the final batched state and one dict per chunk with the mean return
        of episodes finished in that chunk (per seed), mean TD loss and transitions so far.

    Raises:
        ValueError: bad ``seeds`` / ``num_chunks``.
        equijax.training.SettingsMismatchError: ``checkpoint_dir`` holds a run with other
            settings.
    """
    seeds = [seeds] if isinstance(seeds, int) else list(seeds)
    if not seeds or not all(isinstance(s, int) for s in seeds):
        raise ValueError(f"seeds must be an int or a non-empty sequence of ints, got {seeds!r}")
    if not isinstance(num_chunks, int) or num_chunks <= 0:
        raise ValueError(f"num_chunks must be a positive int, got {num_chunks!r}")
    total_iters = config.num_iterations
    num_chunks = min(num_chunks, total_iters)
    chunk_iters = math.ceil(total_iters / num_chunks)
    keys = jnp.stack([jax.random.PRNGKey(s) for s in seeds])
    state = jax.vmap(lambda k: init_state(k, env, env_params, config))(keys)
    run = _seed_runner(env, config)
    run_ckpt = None
    done_iters = 0
    history: list[dict[str, Any]] = []
    if checkpoint_dir is not None:
        from equijax.training import resume_or_start

        settings = {
            "env": type(env).__name__,
            "seeds": seeds,
            "config": dataclasses.asdict(config),
            "num_chunks": num_chunks,
        }
        run_ckpt = resume_or_start(
            checkpoint_dir,
            settings,
            state,
            resume=resume,
            hint="pass another checkpoint_dir, or resume=False to start fresh",
        )
        if run_ckpt.resumed:
            state, done_iters = run_ckpt.state, int(run_ckpt.step)
            history = list(run_ckpt.history)
            logger.info("resumed DQN from %s at iteration %d", checkpoint_dir, done_iters)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=total_iters * config.num_envs,
            initial=done_iters * config.num_envs,
            desc=desc,
            unit="step",
            unit_scale=True,
        )
    while done_iters < total_iters:
        n = min(chunk_iters, total_iters - done_iters)
        state, m = run(state, env_params, n)
        done_iters += n
        m = jax.device_get(m)
        episodes = m["episodes"]
        rec = {
            "transitions": done_iters * config.num_envs,
            "mean_return": [
                float(r / e) if e > 0 else float("nan")
                for r, e in zip(m["return_sum"], episodes, strict=True)
            ],
            "episodes": [int(e) for e in episodes],
            "mean_loss": float(m["loss_sum"].sum() / max(m["updates"].sum(), 1.0)),
        }
        history.append(rec)
        if run_ckpt is not None:
            run_ckpt.save(done_iters, state, history)
        if bar is not None:
            finite = [r for r in rec["mean_return"] if r == r]
            bar.set_postfix(
                ret=f"{sum(finite) / max(len(finite), 1):.1f}", loss=f"{rec['mean_loss']:.3g}"
            )
            bar.update(n * config.num_envs)
    if run_ckpt is not None:
        run_ckpt.close()
    if bar is not None:
        bar.close()
    return state, history
