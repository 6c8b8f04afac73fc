"""A square Gridworld with an exact C4 (and D4) symmetry, written in the gymnax style.

Rules (``Gridworld(size=5, n_walls=3, max_steps_in_episode=50)``):

* The board is a ``size × size`` square. At reset, ``2 + n_walls`` distinct cells are drawn
  uniformly at random: the agent, the goal and ``n_walls`` wall cells.
* Observation: a float32 ``(size, size, 3)`` image (HWC; batched NHWC) with one-hot channels
  ``[agent, goal, walls]``.
* Four move actions, listed counter-clockwise: ``0 = up (row - 1)``, ``1 = left (col - 1)``,
  ``2 = down (row + 1)``, ``3 = right (col + 1)``. A move that would leave the board or enter a wall
  leaves the agent where it is.
* Reward ``+1`` and termination when the agent steps onto the goal; otherwise ``-step_penalty``
  (default 0.01). Episodes are truncated after ``max_steps_in_episode`` steps.
* ``step`` returns gymnax 1.0's 6-tuple ``(obs, state, reward, terminated, truncated, info)`` and
  auto-resets (``info["final_observation"]`` holds the pre-reset observation); ``step_env`` is
  the raw transition.

Symmetry: rotating the board by 90° counter-clockwise (``jnp.rot90`` on the H, W axes; cell
``(r, c) → (size-1-c, r)``) maps up→left→down→right→up, i.e. action ``a → (a + 1) mod 4``; the
dynamics, reward and termination commute exactly with this C4 action (and the reset distribution is
invariant), see :mod:`equijax.rl.symmetries`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

__all__ = ["MOVES", "Gridworld", "GridworldParams", "GridworldState"]

#: Row/column displacement of each action (counter-clockwise order: up, left, down, right).
MOVES = ((-1, 0), (0, -1), (1, 0), (0, 1))


@struct.dataclass
class GridworldState:
    """State of one Gridworld episode.

    Attributes:
        agent: ``(2,)`` int32 ``(row, col)`` of the agent.
        goal: ``(2,)`` int32 ``(row, col)`` of the goal.
        walls: ``(n_walls, 2)`` int32 wall cells.
        time: int32 number of steps taken.
    """

    agent: jax.Array
    goal: jax.Array
    walls: jax.Array
    time: jax.Array


@struct.dataclass
class GridworldParams:
    """Dynamic parameters (pytree leaves may be traced)."""

    step_penalty: float = 0.01
    goal_reward: float = 1.0
    max_steps_in_episode: int = 50


class Gridworld:
    """gymnax-style Gridworld with a C4 symmetry (see the module docstring for the rules).

    Args:
        size: side of the square board (≥ 2).
        n_walls: number of wall cells (``2 + n_walls ≤ size**2``).

    Raises:
        ValueError: if ``size`` or ``n_walls`` are out of range.

    Examples:
        >>> import jax
        >>> env = Gridworld(size=5, n_walls=3)
        >>> obs, state = env.reset(jax.random.PRNGKey(0))
        >>> obs.shape, env.num_actions
        ((5, 5, 3), 4)
        >>> obs, state, reward, terminated, truncated, info = env.step(
        ...     jax.random.PRNGKey(1), state, 0)
        >>> float(obs.sum())
        5.0
    """

    def __init__(self, size: int = 5, n_walls: int = 3):
        if not isinstance(size, int) or size < 2:
            raise ValueError(f"size must be an int >= 2, got {size!r}")
        if not isinstance(n_walls, int) or n_walls < 0 or n_walls + 2 > size * size:
            raise ValueError(
                f"n_walls must be an int in [0, size**2 - 2] = [0, {size * size - 2}], "
                f"got {n_walls!r}"
            )
        self.size = size
        self.n_walls = n_walls
        self.obs_shape = (size, size, 3)

    def __hash__(self) -> int:
        return hash((type(self), self.size, self.n_walls))

    def __eq__(self, other: object) -> bool:
        return (
            type(other) is type(self)
            and other.size == self.size  # type: ignore[attr-defined]
            and other.n_walls == self.n_walls  # type: ignore[attr-defined]
        )

    def __repr__(self) -> str:
        return f"Gridworld(size={self.size}, n_walls={self.n_walls})"

    @property
    def name(self) -> str:
        return "Gridworld-C4"

    @property
    def num_actions(self) -> int:
        return 4

    @property
    def default_params(self) -> GridworldParams:
        return GridworldParams()

    def get_obs(self, state: GridworldState, params: Any = None, key: Any = None) -> jax.Array:
        """One-hot ``(size, size, 3)`` float32 image with channels ``[agent, goal, walls]``."""
        del params, key
        n = self.size
        agent = jnp.zeros((n, n), jnp.float32).at[state.agent[0], state.agent[1]].set(1.0)
        goal = jnp.zeros((n, n), jnp.float32).at[state.goal[0], state.goal[1]].set(1.0)
        walls = jnp.zeros((n, n), jnp.float32).at[state.walls[:, 0], state.walls[:, 1]].set(1.0)
        return jnp.stack([agent, goal, walls], axis=-1)

    def reset_env(
        self, key: jax.Array, params: GridworldParams
    ) -> tuple[jax.Array, GridworldState]:
        """Draw ``2 + n_walls`` distinct cells uniformly: agent, goal, walls."""
        del params
        n = self.size
        cells = jax.random.choice(key, n * n, shape=(2 + self.n_walls,), replace=False)
        rc = jnp.stack([cells // n, cells % n], axis=-1).astype(jnp.int32)
        state = GridworldState(agent=rc[0], goal=rc[1], walls=rc[2:], time=jnp.int32(0))
        return self.get_obs(state), state

    def step_env(
        self,
        key: jax.Array,
        state: GridworldState,
        action: jax.typing.ArrayLike,
        params: GridworldParams,
    ) -> tuple[jax.Array, GridworldState, jax.Array, jax.Array, dict[str, Any]]:
        """Raw transition (no auto-reset): ``(obs, state, reward, terminated, info)``."""
        del key
        delta = jnp.asarray(MOVES, jnp.int32)[jnp.asarray(action, jnp.int32)]
        proposal = jnp.clip(state.agent + delta, 0, self.size - 1)
        blocked = jnp.any(jnp.all(state.walls == proposal[None, :], axis=-1))
        agent = jnp.where(blocked, state.agent, proposal)
        reached = jnp.all(agent == state.goal)
        reward = jnp.where(reached, params.goal_reward, -params.step_penalty).astype(jnp.float32)
        new_state = GridworldState(
            agent=agent, goal=state.goal, walls=state.walls, time=state.time + 1
        )
        info = {"discount": 1.0 - reached.astype(jnp.float32)}
        return self.get_obs(new_state), new_state, reward, reached, info

    def is_terminated(self, state: GridworldState, params: GridworldParams) -> jax.Array:
        del params
        return jnp.all(state.agent == state.goal)

    def is_truncated(self, state: GridworldState, params: GridworldParams) -> jax.Array:
        return state.time >= params.max_steps_in_episode

    def reset(
        self, key: jax.Array, params: GridworldParams | None = None
    ) -> tuple[jax.Array, GridworldState]:
        """Reset (gymnax signature)."""
        return self.reset_env(key, self.default_params if params is None else params)

    def step(
        self,
        key: jax.Array,
        state: GridworldState,
        action: jax.typing.ArrayLike,
        params: GridworldParams | None = None,
    ) -> tuple[jax.Array, GridworldState, jax.Array, jax.Array, jax.Array, dict[str, Any]]:
        """Step with auto-reset, returning gymnax 1.0's 6-tuple.

        Returns:
            ``(obs, state, reward, terminated, truncated, info)``; after an episode end ``obs`` and
            ``state`` are those of a fresh episode and ``info["final_observation"]`` is the last
            one.
        """
        params = self.default_params if params is None else params
        key_step, key_reset = jax.random.split(key)
        obs_st, state_st, reward, terminated, info = self.step_env(key_step, state, action, params)
        truncated = self.is_truncated(state_st, params)
        done = jnp.logical_or(terminated, truncated)
        obs_re, state_re = self.reset_env(key_reset, params)
        state_out = jax.tree.map(lambda a, b: jnp.where(done, a, b), state_re, state_st)
        obs = jnp.where(done, obs_re, obs_st)
        info = {
            **info,
            "terminated": terminated,
            "truncated": truncated,
            "final_observation": obs_st,
        }
        return obs, state_out, reward, terminated, truncated, info


def rotate_cells(cells: jax.Array, k: jax.typing.ArrayLike, size: int) -> jax.Array:
    """Rotate ``(..., 2)`` int ``(row, col)`` cells by ``k`` quarter turns counter-clockwise.

    Matches ``jnp.rot90(board, k)`` on a ``(size, size)`` board: ``(r, c) → (size-1-c, r)`` per
    turn.

    >>> import jax.numpy as jnp
    >>> rotate_cells(jnp.array([0, 4]), 1, 5).tolist()
    [0, 0]
    """
    r, c = cells[..., 0], cells[..., 1]
    m = size - 1
    options = jnp.stack(
        [
            jnp.stack([r, c], -1),
            jnp.stack([m - c, r], -1),
            jnp.stack([m - r, m - c], -1),
            jnp.stack([c, m - r], -1),
        ]
    )
    return options[jnp.asarray(k, jnp.int32) % 4]
