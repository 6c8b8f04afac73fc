"""Environments and their symmetries: the dynamics commute with the group (equijax.rl)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("gymnax")  # the [rl] extra; installed on CI

from equijax import groups as G
from equijax.rl.envs import ENV_NAMES, canonical_env_name, make_env
from equijax.rl.gridworld import Gridworld
from equijax.rl.symmetries import EnvSymmetry, get_symmetry

N_STATES = 256


def _random_states(name: str, env, params, key):
    """A batch of states: uniform draws covering the state space (incl. near-terminal ones)."""
    ks = jax.random.split(key, 5)
    if name == "cartpole":
        from gymnax.environments.classic_control.cartpole import EnvState

        u = lambda k, lo, hi: jax.random.uniform(k, (N_STATES,), minval=lo, maxval=hi)
        return EnvState(
            x=u(ks[0], -2.5, 2.5), x_dot=u(ks[1], -3.0, 3.0), theta=u(ks[2], -0.25, 0.25),
            theta_dot=u(ks[3], -3.0, 3.0), time=jnp.zeros((N_STATES,), jnp.int32),
        )
    if name == "acrobot":
        from gymnax.environments.classic_control.acrobot import EnvState

        u = lambda k, lo, hi: jax.random.uniform(k, (N_STATES,), minval=lo, maxval=hi)
        return EnvState(
            joint_angle1=u(ks[0], -3.1, 3.1), joint_angle2=u(ks[1], -3.1, 3.1),
            velocity_1=u(ks[2], -12.0, 12.0), velocity_2=u(ks[3], -28.0, 28.0),
            time=jnp.zeros((N_STATES,), jnp.int32),
        )
    # Gridworld: resets followed by random walks (reachable states, some next to the goal).
    _, state = jax.vmap(env.reset_env, in_axes=(0, None))(jax.random.split(ks[0], N_STATES), params)

    def walk(s, k):
        k1, k2 = jax.random.split(k)
        a = jax.random.randint(k1, (N_STATES,), 0, 4)
        _, s, *_ = jax.vmap(env.step_env, in_axes=(0, 0, 0, None))(
            jax.random.split(k2, N_STATES), s, a, params)
        return s, None

    state, _ = jax.lax.scan(walk, state, jax.random.split(ks[1], 3))
    return state


@pytest.mark.parametrize("sym_name", ["cartpole", "acrobot", "gridworld", "gridworld-d4"])
def test_dynamics_commute_with_symmetry_on_random_states(sym_name):
    env_name = "gridworld" if sym_name.startswith("gridworld") else sym_name
    env, params = make_env(env_name)
    sym = get_symmetry(sym_name)
    sym.check_env(env)
    key = jax.random.PRNGKey(0)
    states = _random_states(env_name, env, params, key)
    actions = jax.random.randint(jax.random.PRNGKey(1), (N_STATES,), 0, env.num_actions)
    keys = jax.random.split(jax.random.PRNGKey(2), N_STATES)
    step = jax.jit(jax.vmap(env.step_env, in_axes=(0, 0, 0, None)))
    get_obs = jax.vmap(env.get_obs)
    obs0 = get_obs(states)
    obs1, _, r1, d1, _ = step(keys, states, actions, params)
    n_terminal = 0
    for g in range(sym.order):
        gs = jax.vmap(sym.state_action, in_axes=(None, 0))(g, states)
        # The state action induces the observation action.
        np.testing.assert_allclose(get_obs(gs), sym.act_obs(g, obs0), atol=1e-5)
        obs_g, _, r_g, d_g, _ = step(keys, gs, sym.act_action(g, actions), params)
        np.testing.assert_allclose(obs_g, sym.act_obs(g, obs1), atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(r_g, r1, atol=1e-6)
        np.testing.assert_array_equal(d_g, d1)
        n_terminal += int(d1.sum())
    # the sample must include both ongoing and terminating transitions to be a real check
    assert 0 < n_terminal < sym.order * N_STATES


def test_non_symmetry_is_detected():
    # Control: pairing the CartPole reflection with the identity on actions breaks commutation.
    env, params = make_env("cartpole")
    sym = get_symmetry("cartpole")
    states = _random_states("cartpole", env, params, jax.random.PRNGKey(3))
    actions = jnp.ones((N_STATES,), jnp.int32)
    keys = jax.random.split(jax.random.PRNGKey(4), N_STATES)
    step = jax.vmap(env.step_env, in_axes=(0, 0, 0, None))
    obs1, *_ = step(keys, states, actions, params)
    gs = jax.vmap(sym.state_action, in_axes=(None, 0))(1, states)
    obs_wrong, *_ = step(keys, gs, actions, params)  # action not reflected
    assert not np.allclose(obs_wrong, sym.act_obs(1, obs1), atol=1e-4)


def test_gridworld_reset_and_step_follow_rules():
    env = Gridworld(size=4, n_walls=2)
    params = env.default_params
    obs, state = env.reset(jax.random.PRNGKey(0), params)
    assert obs.shape == (4, 4, 3)
    assert obs.sum(axis=(0, 1)).tolist() == [1.0, 1.0, 2.0]
    cells = {tuple(state.agent.tolist()), tuple(state.goal.tolist())} | {
        tuple(w) for w in state.walls.tolist()
    }
    assert len(cells) == 4  # distinct cells
    # Put the agent right below the goal and move up: +1 and termination.
    goal = jnp.array([1, 2], jnp.int32)
    s = state.replace(agent=jnp.array([2, 2], jnp.int32), goal=goal,
                      walls=jnp.array([[0, 0], [3, 3]], jnp.int32))
    _, _, r, term, _ = env.step_env(jax.random.PRNGKey(1), s, 0, params)
    assert bool(term) and float(r) == params.goal_reward
    # Moving left from column 0 stays put; moving into a wall stays put.
    s = s.replace(agent=jnp.array([2, 0], jnp.int32))
    _, s3, r, term, _ = env.step_env(jax.random.PRNGKey(1), s, 1, params)
    assert s3.agent.tolist() == [2, 0] and not bool(term)
    assert float(r) == pytest.approx(-params.step_penalty)
    s = s.replace(agent=jnp.array([1, 0], jnp.int32))
    _, s4, *_ = env.step_env(jax.random.PRNGKey(1), s, 0, params)  # (0, 0) is a wall
    assert s4.agent.tolist() == [1, 0]
    # Truncation and auto-reset after max_steps_in_episode.
    s = s.replace(time=jnp.int32(params.max_steps_in_episode - 1))
    obs, s5, _, term, trunc, info = env.step(jax.random.PRNGKey(2), s, 2, params)
    assert bool(trunc) and not bool(term) and int(s5.time) == 0
    assert info["final_observation"].shape == obs.shape


@pytest.mark.slow  # end-to-end, > 20 s on 2 cores; CI runs the slow suite too
def test_envs_vectorise_with_vmap():
    assert set(ENV_NAMES) == {"gridworld", "cartpole", "acrobot"}
    for name in ("gridworld", "acrobot"):  # CartPole's vmapped step runs in tests/test_dqn.py
        env, params = make_env(name)
        keys = jax.random.split(jax.random.PRNGKey(0), 3)
        obs, state = jax.vmap(env.reset, in_axes=(0, None))(keys, params)
        out = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
            jax.random.split(jax.random.PRNGKey(1), 3), state, jnp.zeros((3,), jnp.int32), params)
        assert len(out) == 6 and out[0].shape == obs.shape and out[2].shape == (3,)


def test_unknown_env_name_raises():
    with pytest.raises(ValueError, match="unknown environment 'pong'"):
        make_env("pong")
    with pytest.raises(ValueError, match="unknown symmetry"):
        get_symmetry("pong")
    with pytest.raises(TypeError):
        canonical_env_name(3)
    with pytest.raises(ValueError, match="no constructor arguments"):
        make_env("cartpole", size=3)
    with pytest.raises(ValueError, match="n_walls"):
        Gridworld(size=2, n_walls=3)


def test_symmetry_action_count_mismatch_raises():
    env, _ = make_env("acrobot")
    with pytest.raises(ValueError, match="permutes 2 actions"):
        get_symmetry("cartpole").check_env(env)


def test_symmetry_groups_must_match():
    with pytest.raises(ValueError, match="same order"):
        EnvSymmetry("bad", G.rot90(), G.permutation(2, [(0, 1)]))
    with pytest.raises(TypeError, match="PermutationGroup"):
        EnvSymmetry("bad", G.sign_flip([-1]), G.sign_flip([-1]))
