"""Equivariant Q-functions and greedy policies from a pretrained DQN, and vectorised evaluation.

Given a pretrained Q-network ``Q(s) ∈ R^{|A|}`` and an :class:`~equijax.rl.EnvSymmetry` (a group
acting on observations by ``g·s`` and on the action axis of Q-values by ``act_q``):

* ``pretrained``: ``Q(s)``;
* ``equitune``: ``Q_G(s) = 1/|G| Σ_g g⁻¹·Q(g·s)`` (:func:`equijax.equitune`);
* ``equizero``: ``g* = argmax_g max_a Q(g·s, a)`` and ``Q_G^0(s) = g*⁻¹·Q(g*·s)``
  (:func:`equijax.equizero` with :func:`equijax.proxies.neg_max_score`);
* ``lambda_equitune``: ``Q_G^λ(s) = Σ_g λ(g·s) g⁻¹·Q(g·s) / Σ_g λ(g·s)`` with λ > 0 from a small
  :class:`equijax.LambdaNet` on the (flattened) transformed observation, normalised by a softmax
  over the group (:func:`equijax.lambda_equitune`). λ is obtained by :func:`train_lambda`: a brief
  finetuning of the λ net alone (the Q-network stays frozen) that minimises the Huber TD error of
  ``Q_G^λ`` on the pretraining replay buffer.

All four act greedily, ``a = argmax_a Q_•(s, a)``; every variant except ``pretrained`` is exactly
equivariant, ``Q_•(g·s) = g·Q_•(s)``, so the greedy action satisfies ``π(g·s) = g·π(s)`` (up to
ties).
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from equijax._src.equitune import equitune
from equijax._src.equizero import equizero
from equijax._src.lambda_equitune import lambda_equitune
from equijax._src.nn import LambdaNet
from equijax._src.proxies import neg_max_score
from equijax.rl.dqn import DQNConfig, ReplayBuffer, q_values, td_loss
from equijax.rl.symmetries import EnvSymmetry

__all__ = [
    "METHODS",
    "Evaluation",
    "LambdaConfig",
    "evaluate",
    "greedy_policy",
    "init_lambda",
    "lambda_weight_fn",
    "make_q_fn",
    "train_lambda",
]

#: Policy variants, in the order of the paper's Fig. 2 (plus λ-equitune).
METHODS = ("pretrained", "equitune", "equizero", "lambda_equitune")


def _lambda_net(hidden: int = 100) -> Any:
    # Observations are raw physical quantities / one-hot grids: no L2 normalisation.
    return LambdaNet(hidden=hidden, dropout=0.5, l2_normalize=False)


def make_q_fn(
    method: str,
    q_fn: Callable[[jax.Array], jax.Array],
    symmetry: EnvSymmetry,
    *,
    lambda_fn: Callable[[jax.Array], jax.Array] | None = None,
) -> Callable[[jax.Array], jax.Array]:
    """The Q-function of one policy variant (see the module docstring).

    Args:
        method: one of :data:`METHODS`.
        q_fn: pretrained Q-function, ``(B, *obs_shape) -> (B, num_actions)``.
        symmetry: the environment's symmetry (observation and action sides).
        lambda_fn: for ``"lambda_equitune"``: ``(B, *obs_shape) -> (B,)`` weight logits of the
            transformed observations (λ = softmax over the group).

    Returns:
        ``obs -> Q-values`` of shape ``(B, num_actions)``.

    Raises:
        ValueError: unknown method, or ``lambda_equitune`` without ``lambda_fn``.

    Examples:
        >>> import jax.numpy as jnp
        >>> from equijax.rl import get_symmetry
        >>> sym = get_symmetry("cartpole")
        >>> q = lambda s: jnp.stack([s[:, 0], 2 * s[:, 1]], -1)   # not equivariant
        >>> qg = make_q_fn("equitune", q, sym)
        >>> s = jnp.array([[1.0, 2.0, 0.0, 0.0]])
        >>> qg(s).tolist(), qg(-s).tolist()
        ([[-1.5, 1.5]], [[1.5, -1.5]])
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {list(METHODS)}")
    if not isinstance(symmetry, EnvSymmetry):
        raise TypeError(f"symmetry must be an EnvSymmetry, got {type(symmetry).__name__}")
    group, out = symmetry.obs_group, symmetry.act_q
    q_fn = _checked(q_fn, symmetry)
    if method == "pretrained":
        return q_fn
    if method == "equitune":
        return lambda obs: equitune(q_fn, group, obs, out_action=out)
    if method == "equizero":
        return lambda obs: equizero(q_fn, group, obs, loss=neg_max_score, out_action=out)
    if lambda_fn is None:
        raise ValueError("method 'lambda_equitune' needs lambda_fn (see train_lambda)")
    return lambda obs: lambda_equitune(q_fn, group, obs, weight_fn=lambda_fn, out_action=out)


def _checked(q_fn: Callable[[jax.Array], jax.Array], symmetry: EnvSymmetry):
    def wrapped(obs: jax.Array) -> jax.Array:
        q = q_fn(obs)
        if q.ndim != 2 or q.shape[-1] != symmetry.num_actions:
            raise ValueError(
                f"q_fn returned Q-values of shape {q.shape}, but symmetry {symmetry.name!r} "
                f"permutes {symmetry.num_actions} actions: expected (B, {symmetry.num_actions}); "
                "use the symmetry of the environment the Q-network was trained on"
            )
        return q

    return wrapped


def greedy_policy(q_fn: Callable[[jax.Array], jax.Array]) -> Callable[[jax.Array], jax.Array]:
    """``obs -> argmax_a q_fn(obs)[a]`` (int32 ``(B,)``)."""
    return lambda obs: jnp.argmax(q_fn(obs), axis=-1).astype(jnp.int32)


@dataclasses.dataclass(frozen=True)
class LambdaConfig:
    """How λ is finetuned for λ-equitune (Q frozen; TD loss on the pretraining replay buffer).

    The TD target's discount and double-Q setting are those of the DQN run
    (``DQNConfig.gamma`` / ``DQNConfig.double_q``, passed to :func:`train_lambda` as
    ``dqn_config``), so λ is trained for the same objective as the Q-network.

    Attributes:
        steps: Adam steps.
        batch_size: minibatch size.
        learning_rate: Adam learning rate.
        hidden: λ-net hidden width (paper: 100).
        gamma: deprecated and unused (the discount is ``DQNConfig.gamma``); ``None``. A value
            other than the DQN's makes :func:`train_lambda` raise.
    """

    steps: int = 2_000
    batch_size: int = 128
    learning_rate: float = 1e-3
    hidden: int = 100
    gamma: float | None = None

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "hidden"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"LambdaConfig.{name} must be a positive int, got {v!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"LambdaConfig.learning_rate must be > 0, got {self.learning_rate!r}")
        if self.gamma is not None:
            warnings.warn(
                "LambdaConfig.gamma is deprecated: λ training uses DQNConfig.gamma",
                DeprecationWarning,
                stacklevel=3,
            )


def lambda_weight_fn(lam_params: Any, config: LambdaConfig = LambdaConfig()):
    """``obs (B, ...) -> (B,)`` λ logits of a λ net trained by :func:`train_lambda` (eval mode)."""
    net = _lambda_net(config.hidden)
    return lambda obs: net.apply(lam_params, obs)


def init_lambda(key: jax.Array, obs_example: jax.Array, config: LambdaConfig = LambdaConfig()):
    """Initial λ-net parameters for observations shaped like ``obs_example`` ``(B, ...)``."""
    return _lambda_net(config.hidden).init(key, obs_example[:1])


def _lambda_q(
    q_params, lam_params, obs, *, symmetry, num_actions, dqn_hidden, lam_hidden, dropout_key=None
):
    q_fn = lambda o: q_values(q_params, o, num_actions=num_actions, hidden=dqn_hidden)
    if dropout_key is None:
        weight_fn = lambda_weight_fn(lam_params, LambdaConfig(hidden=lam_hidden))
    else:
        net = _lambda_net(lam_hidden)
        weight_fn = lambda o: net.apply(
            lam_params, o, deterministic=False, rngs={"dropout": dropout_key}
        )
    return make_q_fn("lambda_equitune", q_fn, symmetry, lambda_fn=weight_fn)(obs)


@functools.partial(jax.jit, static_argnames=("symmetry", "num_actions", "dqn_config", "config"))
def train_lambda(
    q_params: Any,
    buffer: ReplayBuffer,
    key: jax.Array,
    *,
    symmetry: EnvSymmetry,
    num_actions: int,
    dqn_config: DQNConfig,
    config: LambdaConfig = LambdaConfig(),
    target_params: Any = None,
) -> tuple[Any, jax.Array]:
    """Finetune the λ net of λ-equitune with the pretrained Q-network frozen.

    Minimises the Huber TD error of ``Q_G^λ`` (:func:`equijax.rl.td_loss`) over minibatches of
    the pretraining replay buffer (``buffer`` of one run), with dropout in the λ net during
    training (Adam, ``config.steps`` steps). The TD target is
    ``r + γ (1 − d) sg(Q_G^λ,target(s'))[a*]`` with ``γ = dqn_config.gamma`` and, as in the DQN
    run, ``a* = argmax_a sg(Q_G^λ(s'))[a]`` if ``dqn_config.double_q`` else the target's argmax;
    the target network is ``target_params`` (default: ``q_params``).

    Returns:
        ``(lam_params, losses)`` with the per-step TD losses ``(steps,)``.

    Raises:
        ValueError: ``config.gamma`` (deprecated) set to a value other than ``dqn_config.gamma``.
    """
    if config.gamma is not None and config.gamma != dqn_config.gamma:
        raise ValueError(
            f"LambdaConfig.gamma ({config.gamma}) differs from DQNConfig.gamma "
            f"({dqn_config.gamma}); λ training uses DQNConfig.gamma: drop LambdaConfig.gamma"
        )
    target_params = q_params if target_params is None else target_params
    k_init, k_run = jax.random.split(key)
    lam_params = init_lambda(k_init, buffer.obs[:1], config)
    opt = optax.adam(config.learning_rate)
    qlam = functools.partial(
        _lambda_q,
        symmetry=symmetry,
        num_actions=num_actions,
        dqn_hidden=dqn_config.hidden,
        lam_hidden=config.hidden,
    )

    def loss_fn(lp, batch, k):
        frozen = jax.lax.stop_gradient(lp)
        online_next = qlam(q_params, frozen, batch["next_obs"]) if dqn_config.double_q else None
        return td_loss(
            qlam(q_params, lp, batch["obs"], dropout_key=k),
            batch,
            qlam(target_params, frozen, batch["next_obs"]),
            gamma=dqn_config.gamma,
            double_q=dqn_config.double_q,
            next_q_online=online_next,
        )

    def step(carry, k):
        lp, os = carry
        k_idx, k_drop = jax.random.split(k)
        batch = buffer.gather(buffer.sample_indices(k_idx, config.batch_size))
        loss, grads = jax.value_and_grad(loss_fn)(lp, batch, k_drop)
        updates, os = opt.update(grads, os, lp)
        return (optax.apply_updates(lp, updates), os), loss

    (lam_params, _), losses = jax.lax.scan(
        step, (lam_params, opt.init(lam_params)), jax.random.split(k_run, config.steps)
    )
    return lam_params, losses


class Evaluation(NamedTuple):
    """Result of :func:`evaluate` (also readable as ``result["returns"]`` etc.).

    Attributes:
        returns: ``(num_episodes,)`` float32 undiscounted returns.
        discounted_returns: ``(num_episodes,)`` ``Σ_t γ^t r_t`` (equal to ``returns`` for
            ``γ = 1``).
        initial_obs: ``(num_episodes, *obs_shape)`` first observations.
    """

    returns: jax.Array
    discounted_returns: jax.Array
    initial_obs: jax.Array

    def __getitem__(self, key):  # type: ignore[override]
        # Field names work as keys, as with the dict that ``evaluate(gamma=...)`` used to return.
        return getattr(self, key) if isinstance(key, str) else tuple.__getitem__(self, key)


def evaluate(
    policy: Callable[[jax.Array], jax.Array],
    env: Any,
    env_params: Any,
    key: jax.Array,
    num_episodes: int,
    *,
    max_steps: int | None = None,
    gamma: float = 1.0,
) -> Evaluation:
    """Undiscounted returns of ``num_episodes`` episodes run in parallel (``vmap``, ``lax.scan``).

    Each episode runs until its first termination or truncation
    (``env_params.max_steps_in_episode`` steps at most); later rewards are masked out.

    Args:
        policy: ``obs (B, ...) -> actions (B,)``; must be traceable.
        env: gymnax-style environment.
        env_params: its parameters.
        key: PRNG key.
        num_episodes: parallel episodes (≥ 1).
        max_steps: scan length; defaults to ``env_params.max_steps_in_episode`` (which must then
            be concrete, i.e. ``env_params`` not traced).
        gamma: discount of ``discounted_returns`` (default 1: undiscounted).

    Returns:
        An :class:`Evaluation` ``(returns, discounted_returns, initial_obs)``, whatever the
        arguments.

    Raises:
        ValueError: if ``num_episodes < 1`` or ``gamma`` is outside ``[0, 1]``.
    """
    if not isinstance(num_episodes, int) or num_episodes < 1:
        raise ValueError(f"num_episodes must be a positive int, got {num_episodes!r}")
    if not (isinstance(gamma, int | float) and 0.0 <= gamma <= 1.0):
        raise ValueError(f"gamma must be a number in [0, 1], got {gamma!r}")
    k_reset, k_steps = jax.random.split(key)
    obs, state = jax.vmap(env.reset, in_axes=(0, None))(
        jax.random.split(k_reset, num_episodes), env_params
    )
    if max_steps is None:
        max_steps = int(env_params.max_steps_in_episode)

    disc_factor = float(gamma)
    initial_obs = obs

    def body(carry, k):
        obs, state, alive, ret, disc, scale = carry
        action = policy(obs)
        obs, state, reward, term, trunc, _ = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
            jax.random.split(k, num_episodes), state, action, env_params
        )
        r = jnp.where(alive, reward, 0.0)
        ret, disc = ret + r, disc + scale * r
        alive = jnp.logical_and(alive, jnp.logical_not(jnp.logical_or(term, trunc)))
        return (obs, state, alive, ret, disc, scale * disc_factor), None

    zeros = jnp.zeros((num_episodes,), jnp.float32)
    init = (obs, state, jnp.ones((num_episodes,), bool), zeros, zeros, jnp.float32(1.0))
    (_, _, _, returns, disc, _), _ = jax.lax.scan(body, init, jax.random.split(k_steps, max_steps))
    return Evaluation(returns, disc, initial_obs)
