"""Symmetries of the RL environments: a group acting on observations *and* on actions.

An :class:`EnvSymmetry` pairs two actions of the same abstract group (same element indices, same
Cayley table): ``obs_group`` acts on batched observations and ``action_group`` (a
:class:`~equijax.groups.PermutationGroup` on action ids) acts on actions and, with ``act_axis``,
on the action axis of Q-values. It is a symmetry of the MDP when, for every state ``s`` and action
``a``, ``step(g·s, g·a) = g·step(s, a)`` (same observation up to ``g``, same reward, same
termination); then the optimal Q-function is equivariant, ``Q*(g·s) = act_axis(g, Q*(s))``.

Provided symmetries (checked against the dynamics in ``tests/test_rl_envs.py``):

* ``cartpole`` — Z2 reflection ``s → −s`` (all four observation entries negate), actions
  ``0 (push left) ↔ 1 (push right)``.
* ``acrobot`` — Z2 reflection ``(θ1, θ2, ω1, ω2) → (−θ1, −θ2, −ω1, −ω2)``, i.e. observation
  ``(cos θ1, sin θ1, cos θ2, sin θ2, ω1, ω2) → (cos θ1, −sin θ1, cos θ2, −sin θ2, −ω1, −ω2)``,
  torque ``−1 ↔ +1`` (actions ``0 ↔ 2``, ``1`` fixed).
* ``gridworld`` — C4 (element ``k`` = ``k`` counter-clockwise quarter turns of the board,
  ``ej.groups.rot90()``), actions ``a → (a + k) mod 4``; ``gridworld-d4`` adds the mirror
  (``ej.groups.dihedral()``; the mirror swaps left ↔ right).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

import equijax.groups as _groups
from equijax.rl.envs import canonical_env_name
from equijax.rl.gridworld import rotate_cells

__all__ = ["SYMMETRY_NAMES", "EnvSymmetry", "get_symmetry"]

#: Names accepted by :func:`get_symmetry`.
SYMMETRY_NAMES = ("gridworld", "gridworld-d4", "cartpole", "acrobot")


@dataclasses.dataclass(frozen=True)
class EnvSymmetry:
    """A finite group acting on an environment's observations, actions and (for tests) states.

    Attributes:
        name: display name.
        obs_group: group acting on batched observations via ``obs_group.act(g, obs)``.
        action_group: permutation group on the ``num_actions`` action ids, with the same element
            indexing (identical Cayley table) as ``obs_group``.
        state_action: ``(g, env_state) -> env_state`` for a single (unbatched) state, or ``None``;
            used to check that the dynamics commute.

    Raises:
        TypeError: if ``action_group`` is not a permutation group.
        ValueError: if the two groups' orders or Cayley tables differ.
    """

    name: str
    obs_group: Any
    action_group: _groups.PermutationGroup
    state_action: Callable[[Any, Any], Any] | None = dataclasses.field(
        default=None, compare=False, hash=False
    )

    def __post_init__(self) -> None:
        if not isinstance(self.action_group, _groups.PermutationGroup):
            raise TypeError(
                "action_group must be a PermutationGroup on action ids, e.g. "
                "ej.groups.permutation(n_actions, [(0, 1)]); got "
                f"{type(self.action_group).__name__}"
            )
        if self.obs_group.order != self.action_group.order:
            raise ValueError(
                f"obs_group ({self.obs_group.name}, order {self.obs_group.order}) and action_group "
                f"({self.action_group.name}, order {self.action_group.order}) must have the same "
                "order: element g acts on both sides"
            )
        if tuple(self.obs_group.table) != tuple(self.action_group.table):
            raise ValueError(
                "obs_group and action_group must index the same abstract group (identical Cayley "
                "tables); reorder the action permutations to match the observation elements"
            )

    @property
    def order(self) -> int:
        """Group order ``|G|``."""
        return self.obs_group.order

    @property
    def num_actions(self) -> int:
        """Number of actions the action group permutes."""
        return self.action_group.n

    def act_obs(self, g: Any, obs: jax.Array) -> jax.Array:
        """``g·obs`` for a batch of observations."""
        return self.obs_group.act(g, obs)

    def act_action(self, g: Any, action: jax.Array) -> jax.Array:
        """``g·a`` for integer action ids (any shape)."""
        return self.action_group.act(g, action)

    def act_q(self, g: Any, q: jax.Array) -> jax.Array:
        """Permute the action axis (last) of Q-values: ``out[..., g·a] = q[..., a]``."""
        return self.action_group.act_axis(g, q, axis=-1)

    def check_env(self, env: Any) -> None:
        """Raise ``ValueError`` if the action group does not match ``env.num_actions``."""
        if env.num_actions != self.num_actions:
            raise ValueError(
                f"symmetry {self.name!r} permutes {self.num_actions} actions but the environment "
                f"{getattr(env, 'name', env)!r} has {env.num_actions}; use a matching symmetry "
                f"(get_symmetry(<env name>)) or build action_group with "
                f"n={env.num_actions}"
            )


def _negate_fields(fields: tuple[str, ...]) -> Callable[[Any, Any], Any]:
    def act(g: Any, state: Any) -> Any:
        sign = jnp.where(jnp.asarray(g) == 1, -1.0, 1.0)
        return state.replace(**{f: getattr(state, f) * sign for f in fields})

    return act


def _grid_state_action(size: int, with_mirror: bool) -> Callable[[Any, Any], Any]:
    def act(g: Any, state: Any) -> Any:
        g = jnp.asarray(g, jnp.int32)
        k, f = g % 4, g // 4

        def tf(cells: jax.Array) -> jax.Array:
            if with_mirror:
                mirrored = cells.at[..., 1].set(size - 1 - cells[..., 1])
                cells = jnp.where(f == 1, mirrored, cells)
            return rotate_cells(cells, k, size)

        return state.replace(agent=tf(state.agent), goal=tf(state.goal), walls=tf(state.walls))

    return act


def _grid_action_perms(with_mirror: bool) -> list[tuple[int, ...]]:
    # Actions counter-clockwise: 0 up, 1 left, 2 down, 3 right. A CCW quarter turn maps
    # a -> a + 1; the width mirror swaps left (1) and right (3). Element (k, f) = rot^k ∘ mirror^f
    # with index k + 4 f, as in ej.groups.dihedral().
    rot = lambda k: tuple((a + k) % 4 for a in range(4))
    mirror = (0, 3, 2, 1)
    perms = [rot(k) for k in range(4)]
    if with_mirror:
        perms += [tuple(rot(k)[mirror[a]] for a in range(4)) for k in range(4)]
    return perms


def get_symmetry(name: str, *, grid_size: int = 5) -> EnvSymmetry:
    """The standard symmetry of an environment.

    Args:
        name: ``"cartpole"``, ``"acrobot"``, ``"gridworld"`` (C4) or ``"gridworld-d4"`` (D4);
            gym ids are accepted.
        grid_size: board size of the Gridworld (for the state action used in tests).

    Returns:
        An :class:`EnvSymmetry`.

    Raises:
        ValueError: unknown name.

    Examples:
        >>> import jax.numpy as jnp
        >>> sym = get_symmetry("cartpole")
        >>> sym.order, sym.act_obs(1, jnp.ones((1, 4))).tolist(), sym.act_action(1, jnp.array([0]))
        (2, [[-1.0, -1.0, -1.0, -1.0]], Array([1], dtype=int32))
    """
    if not isinstance(name, str):
        raise TypeError(f"symmetry name must be a str, got {type(name).__name__}")
    key = name.strip().lower()
    if key in ("gridworld-d4", "d4"):
        return EnvSymmetry(
            name="gridworld-d4",
            obs_group=_groups.dihedral("NHWC"),
            action_group=_groups.permutation_group(_grid_action_perms(True), name="D4 moves"),
            state_action=_grid_state_action(grid_size, True),
        )
    try:
        env = canonical_env_name(key)
    except ValueError:
        raise ValueError(
            f"unknown symmetry {name!r}; choose one of {list(SYMMETRY_NAMES)}"
        ) from None
    if env == "cartpole":
        return EnvSymmetry(
            name="cartpole-reflection",
            obs_group=_groups.sign_flip([-1, -1, -1, -1], name="cartpole-reflection"),
            action_group=_groups.permutation(2, [(0, 1)], name="left<->right"),
            state_action=_negate_fields(("x", "x_dot", "theta", "theta_dot")),
        )
    if env == "acrobot":
        return EnvSymmetry(
            name="acrobot-reflection",
            obs_group=_groups.sign_flip([1, -1, 1, -1, -1, -1], name="acrobot-reflection"),
            action_group=_groups.permutation(3, [(0, 2)], name="torque -1<->+1"),
            state_action=_negate_fields(
                ("joint_angle1", "joint_angle2", "velocity_1", "velocity_2")
            ),
        )
    return EnvSymmetry(
        name="gridworld-c4",
        obs_group=_groups.rot90("NHWC"),
        action_group=_groups.permutation(4, [(0, 1, 2, 3)], name="C4 moves"),
        state_action=_grid_state_action(grid_size, False),
    )
