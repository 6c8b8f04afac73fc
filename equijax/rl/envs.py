"""Environment registry: gymnax ``CartPole-v1`` / ``Acrobot-v1`` and the C4 :class:`Gridworld`.

gymnax is imported lazily (it is the optional ``equijax[rl]`` extra; gymnax 1.0.1 also needs
``six``).
"""

from __future__ import annotations

from typing import Any

from equijax.rl.gridworld import Gridworld

__all__ = ["ENV_NAMES", "canonical_env_name", "make_env"]

#: Canonical environment names accepted by :func:`make_env` (case-insensitive; gym ids work too).
ENV_NAMES = ("gridworld", "cartpole", "acrobot")

#: Every accepted (lower-case) name: the canonical ones and the ids of gymnax / the paper.
_ALIASES = {name: name for name in ENV_NAMES} | {
    "gridworld-c4": "gridworld", "cartpole-v1": "cartpole", "acrobot-v1": "acrobot",
}  # fmt: skip


def canonical_env_name(name: str) -> str:
    """Map ``name`` (e.g. ``"CartPole-v1"``) to one of :data:`ENV_NAMES`.

    Raises:
        TypeError: if ``name`` is not a string.
        ValueError: for an unknown environment name (the message lists the valid ones).

    >>> canonical_env_name("CartPole-v1")
    'cartpole'
    """
    if not isinstance(name, str):
        raise TypeError(f"env name must be a str, got {type(name).__name__}")
    key = name.strip().lower()
    if key not in _ALIASES:
        raise ValueError(
            f"unknown environment {name!r}; choose one of {list(ENV_NAMES)} "
            "(gym ids 'CartPole-v1' and 'Acrobot-v1' are accepted too)"
        )
    return _ALIASES[key]


def make_env(name: str, **kwargs: Any) -> tuple[Any, Any]:
    """Create an environment and its default parameters.

    Args:
        name: ``"gridworld"``, ``"cartpole"`` or ``"acrobot"`` (case-insensitive; gym ids accepted).
        **kwargs: constructor arguments, only for the Gridworld (``size``, ``n_walls``).

    Returns:
        ``(env, params)``: a gymnax-style environment (``reset(key, params) -> (obs, state)``,
        ``step(key, state, action, params) -> (obs, state, reward, terminated, truncated, info)``
        with auto-reset, ``step_env`` without) and its ``default_params``. Vectorise with
        ``jax.vmap(env.step, in_axes=(0, 0, 0, None))``.

    Raises:
        ValueError: unknown name, or constructor kwargs given for a gymnax environment.
        ImportError: gymnax is not installed (``pip install 'equijax[rl]'``).

    >>> env, params = make_env("gridworld", size=4)
    >>> env.num_actions
    4
    """
    canonical = canonical_env_name(name)
    if canonical == "gridworld":
        env = Gridworld(**kwargs)
        return env, env.default_params
    if kwargs:
        raise ValueError(f"{name!r} takes no constructor arguments, got {sorted(kwargs)}")
    try:
        import gymnax
    except ImportError as err:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            f"environment {name!r} needs gymnax: pip install 'equijax[rl]' (gymnax and six)"
        ) from err
    gym_id = {"cartpole": "CartPole-v1", "acrobot": "Acrobot-v1"}[canonical]
    env, params = gymnax.make(gym_id)
    return env, params
