"""JAX DQN, equivariant Q-policies and evaluation (equijax.rl)."""

from __future__ import annotations

import dataclasses
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("gymnax")  # the [rl] extra; installed on CI

import equijax as ej
from equijax.rl import (
    METHODS,
    DQNConfig,
    Evaluation,
    Gridworld,
    LambdaConfig,
    evaluate,
    get_symmetry,
    greedy_policy,
    init_state,
    lambda_weight_fn,
    make_env,
    make_q_fn,
    q_values,
    train,
    train_lambda,
)
from equijax.rl.policies import init_lambda


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"gamma": 1.5}, "gamma"),
        ({"batch_size": 0}, "batch_size"),
        ({"num_envs": 3, "train_freq": 4}, "train_freq"),
        ({"hidden": (64, -1)}, "hidden"),
        ({"tau": 0.0}, "tau"),
        ({"exploration_final_eps": -0.1}, "exploration_final_eps"),
        ({"batch_size": 64, "buffer_size": 32}, "batch_size"),
        ({"total_steps": 2, "num_envs": 4}, "total_steps"),
    ],
)
def test_config_invalid_hyperparameters_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DQNConfig(**kwargs)


def test_lambda_config_and_train_arguments_invalid_raise():
    with pytest.raises(ValueError, match="steps"):
        LambdaConfig(steps=0)
    env, params = make_env("gridworld", size=3)
    with pytest.raises(ValueError, match="seeds"):
        train(env, params, DQNConfig(total_steps=8), seeds=[])
    with pytest.raises(ValueError, match="num_chunks"):
        train(env, params, DQNConfig(total_steps=8), num_chunks=0)
    with pytest.raises(TypeError, match="gymnax-style"):
        init_state(jax.random.PRNGKey(0), object(), params, DQNConfig())


# One short CartPole run shared by several tests (one compilation).
SMALL = DQNConfig(total_steps=2_000, num_envs=4, learning_starts=100, buffer_size=2_000,
                  target_update_interval=400)


@pytest.fixture(scope="module")
def cartpole():
    return make_env("cartpole")


@pytest.fixture(scope="module")
def short_run(cartpole, tmp_path_factory):
    """Two chunks of one seed with checkpoints; returns (state of seed 0, history, ckpt dir)."""
    env, params = cartpole
    ckpt = tmp_path_factory.mktemp("dqn") / "ckpt"
    state, history = train(env, params, SMALL, seeds=[0], num_chunks=2, checkpoint_dir=str(ckpt))
    return jax.tree.map(lambda a: a[0], state), history, ckpt


def test_replay_buffer_stores_pre_reset_observation(short_run):
    state, history, _ = short_run
    buf = jax.device_get(state.buffer)
    assert int(buf.size) == 2_000 and sum(h["episodes"][0] for h in history) > 20
    assert all(np.isfinite(h["mean_loss"]) for h in history)
    term = buf.terminated.astype(bool)
    nxt = buf.next_obs
    out_of_bounds = (np.abs(nxt[:, 0]) > 2.4) | (np.abs(nxt[:, 2]) > 12 * 2 * np.pi / 360)
    # terminal transitions end in a terminal (not a freshly reset) observation, and only they do
    np.testing.assert_array_equal(out_of_bounds, term)
    # consecutive transitions of one env chain: next_obs(t) == obs(t + 1) unless the episode ended
    cont = ~term[:-4]
    np.testing.assert_allclose(nxt[:-4][cont], buf.obs[4:][cont], atol=1e-6)


@pytest.mark.slow  # end-to-end: tens of seconds on 2 cores
def test_train_learns_small_gridworld():
    env = Gridworld(size=3, n_walls=0)
    params = env.default_params.replace(max_steps_in_episode=20)
    cfg = DQNConfig(total_steps=8_000, num_envs=4, learning_rate=1e-3, learning_starts=500,
                    target_update_interval=500, exploration_fraction=0.3, buffer_size=8_000)
    state, history = train(env, params, cfg, seeds=0, num_chunks=1)
    assert len(history) == 1 and np.isfinite(history[-1]["mean_loss"])
    key = jax.random.PRNGKey(123)

    @jax.jit
    def success_rate(qp):
        policy = greedy_policy(lambda o: q_values(qp, o, num_actions=4))
        return jnp.mean(evaluate(policy, env, params, key, 200).returns > 0)

    trained = jax.tree.map(lambda a: a[0], state.params)
    untrained = ej.rl.QNetwork(num_actions=4).init(jax.random.PRNGKey(0), jnp.zeros((1, 3, 3, 3)))
    # the trained greedy policy reaches the goal far more often than the untrained one
    assert float(success_rate(trained)) > float(success_rate(untrained)) + 0.3


def test_checkpoint_resume_matches_uninterrupted(short_run, cartpole):
    env, params = cartpole
    full, _, ckpt = short_run
    steps = sorted(int(p.name) for p in ckpt.iterdir() if p.name.isdigit())
    assert steps == [250, 500]
    shutil.rmtree(ckpt / "500")  # as if the run had been interrupted after the first chunk
    resumed, hist = train(env, params, SMALL, seeds=[0], num_chunks=2, checkpoint_dir=str(ckpt))
    assert len(hist) == 2  # the history covers the whole run: chunk 1 restored, chunk 2 ran
    assert [int(p.name) for p in ckpt.iterdir() if p.name.isdigit()].count(500) == 1
    for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(resumed), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b)[0])


def test_checkpoints_refuse_other_settings_and_never_delete(short_run, cartpole):
    from equijax.training import SettingsMismatchError

    env, params = cartpole
    _, _, ckpt = short_run
    other = dataclasses.replace(SMALL, learning_rate=SMALL.learning_rate * 10)
    with pytest.raises(SettingsMismatchError, match="learning_rate"):
        train(env, params, other, seeds=[0], num_chunks=2, checkpoint_dir=str(ckpt))
    train(env, params, other, seeds=[0], num_chunks=2, checkpoint_dir=str(ckpt), resume=False)
    moved = [p for p in ckpt.parent.iterdir() if p.name.startswith("ckpt.replaced-")]
    assert len(moved) == 1 and any(p.name.isdigit() for p in moved[0].iterdir())  # kept


@pytest.mark.parametrize("env_name", ["cartpole", "acrobot", "gridworld"])
def test_equivariant_policies_commute_with_group(env_name):
    env, _ = make_env(env_name)
    sym = get_symmetry(env_name)
    obs = jax.random.normal(jax.random.PRNGKey(1), (16, *env.obs_shape))  # generic inputs
    qp = ej.rl.QNetwork(num_actions=env.num_actions).init(jax.random.PRNGKey(2), obs[:1])
    q_fn = lambda o: q_values(qp, o, num_actions=env.num_actions)
    lp = init_lambda(jax.random.PRNGKey(3), obs)
    lam_fn = lambda_weight_fn(lp)
    G = sym.obs_group
    for method in ("equitune", "equizero", "lambda_equitune"):
        qg = jax.jit(make_q_fn(method, q_fn, sym, lambda_fn=lam_fn))
        ej.testing.assert_equivariant(qg, G, obs, out_action=sym.act_q, atol=1e-5, rtol=1e-5)
        # greedy actions transform like actions: π(g·s) = g·π(s)
        pi = lambda o, qg=qg: jnp.argmax(qg(o), axis=-1).astype(jnp.int32)
        for g in range(1, G.order):
            np.testing.assert_array_equal(pi(G.act(g, obs)), sym.act_action(g, pi(obs)))
    # control: the raw pretrained network is not equivariant
    assert ej.testing.equivariance_error(q_fn, G, obs, out_action=sym.act_q) > 1e-3


def test_make_q_fn_bad_inputs_raise():
    sym = get_symmetry("acrobot")
    with pytest.raises(ValueError, match="unknown method"):
        make_q_fn("equifancy", lambda o: o, sym)
    with pytest.raises(ValueError, match="lambda_fn"):
        make_q_fn("lambda_equitune", lambda o: o, sym)
    # Q-values for 2 actions with a symmetry permuting 3 actions
    q2 = make_q_fn("equitune", lambda o: o[:, :2], sym)
    with pytest.raises(ValueError, match="3 actions"):
        q2(jnp.ones((2, 6)))


def test_evaluate_matches_manual_rollout(cartpole):
    env, params = cartpole
    policy = lambda o: (o[:, 2] > 0).astype(jnp.int32)  # push towards the pole's lean
    key = jax.random.PRNGKey(5)
    out = evaluate(policy, env, params, key, 3)
    rets = np.asarray(out.returns)
    # one return type whatever the arguments; γ = 1 by default, and dict-style access works
    np.testing.assert_array_equal(np.asarray(out.discounted_returns), rets)
    np.testing.assert_array_equal(np.asarray(out["returns"]), rets)
    assert isinstance(evaluate(policy, env, params, key, 3, gamma=0.5), Evaluation)
    k_reset, _ = jax.random.split(key)
    for i, k in enumerate(jax.random.split(k_reset, 3)):
        obs, s = env.reset(k, params)
        total = 0.0
        step = jax.jit(env.step_env)
        for _ in range(params.max_steps_in_episode):
            obs, s, r, term, _ = step(k, s, int(obs[2] > 0), params)
            total += float(r)
            if bool(term) or int(s.time) >= params.max_steps_in_episode:
                break
        assert rets[i] == pytest.approx(total)
    with pytest.raises(ValueError, match="num_episodes"):
        evaluate(policy, env, params, key, 0)


def test_train_lambda_gives_normalised_positive_weights(short_run):
    state, _, _ = short_run
    cfg = SMALL
    sym = get_symmetry("cartpole")
    lam_cfg = LambdaConfig(steps=10, batch_size=32)
    lp, losses = train_lambda(state.params, state.buffer, jax.random.PRNGKey(1), symmetry=sym,
                              num_actions=2, dqn_config=cfg, config=lam_cfg)
    assert losses.shape == (10,) and bool(jnp.all(jnp.isfinite(losses)))
    obs = state.buffer.obs[:64]
    q_fn = lambda o: q_values(state.params, o, num_actions=2)
    lam_fn = lambda_weight_fn(lp, lam_cfg)
    _, w = ej.lambda_equitune(q_fn, sym.obs_group, obs, weight_fn=lam_fn, out_action=sym.act_q,
                              return_weights=True)
    assert w.shape == (64, 2) and bool(jnp.all(w > 0))
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-6)


def test_all_methods_listed():
    assert METHODS == ("pretrained", "equitune", "equizero", "lambda_equitune")


@pytest.mark.slow
def test_experiment_quick_end_to_end(tmp_path):
    from experiments import dqn as exp

    res = exp.main(["--env", "cartpole", "--steps", "2000", "--seeds", "2", "--episodes", "4",
                    "--lambda-steps", "20", "--chunks", "2", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "cartpole" / "results.json").read_text())
    assert set(saved["methods"]) == set(METHODS) and saved["config"]["seeds"] == 2
    assert (tmp_path / "cartpole" / "returns.png").stat().st_size > 0
    assert res["ordering"][0] in METHODS


@pytest.mark.parametrize("env_name", ["cartpole", "gridworld"])
def test_env_step_matches_gymnax_auto_reset(env_name):
    # the loop's own auto-reset (reset only under cond when an episode ended) equals env.step
    from equijax.rl.dqn import _env_step

    env, params = make_env(env_name)
    n = 8
    keys = jax.random.split(jax.random.PRNGKey(0), n)
    _, state = jax.vmap(env.reset, in_axes=(0, None))(keys, params)
    step_ref = jax.jit(jax.vmap(env.step, in_axes=(0, 0, 0, None)))
    step_ours = jax.jit(lambda ks, kr, s, a: _env_step(env, ks, kr, s, a, params))
    ended = 0
    for t in range(60):
        k = jax.random.split(jax.random.PRNGKey(t + 1), n)
        ks, kr = jax.vmap(jax.random.split)(k).transpose(1, 0, 2)
        action = jax.random.randint(jax.random.PRNGKey(100 + t), (n,), 0, env.num_actions)
        ref = step_ref(k, state, action, params)
        ours = step_ours(ks, kr, state, action)
        # same values up to float round-off (the two programs fuse differently)
        same = lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6,
                                                       atol=1e-7)  # fmt: skip
        same(ours[0], ref[0])
        for a, b in zip(jax.tree.leaves(ours[1]), jax.tree.leaves(ref[1]), strict=True):
            same(a, b)
        for i in (2, 3, 4):
            same(ours[i], ref[i])
        same(ours[5], ref[5]["final_observation"])
        ended += int(jnp.sum(ref[3] | ref[4]))
        state = ref[1]
    assert ended > 0  # the reset branch was exercised


@pytest.mark.slow  # end-to-end, > 20 s on 2 cores; CI runs the slow suite too
def test_train_chunks_do_not_change_the_result(cartpole):
    # randomness of iteration i comes from fold_in(key, i): one chunk == two chunks
    env, params = cartpole
    cfg = DQNConfig(total_steps=400, num_envs=1, learning_starts=50, buffer_size=400,
                    target_update_interval=100)
    st = init_state(jax.random.PRNGKey(3), env, params, cfg)
    one, m1 = ej.rl.train_chunk(st, params, env=env, config=cfg, num_iterations=400)
    half, ma = ej.rl.train_chunk(st, params, env=env, config=cfg, num_iterations=150)
    two, mb = ej.rl.train_chunk(half, params, env=env, config=cfg, num_iterations=250)
    for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(two), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert float(m1["updates"]) == float(ma["updates"] + mb["updates"]) > 0
    np.testing.assert_allclose(float(m1["episodes"]), float(ma["episodes"] + mb["episodes"]))


def test_td_loss_double_q_and_discount():
    from equijax.rl import td_loss

    b = {"action": jnp.array([1]), "reward": jnp.array([0.0]), "terminated": jnp.array([0.0])}
    q = jnp.array([[0.0, 2.0]])
    tgt = jnp.array([[4.0, 1.0]])
    online = jnp.array([[0.0, 3.0]])  # double Q: a* = 1 (online), valued by the target: 1.0
    # plain: y = 0.5 * max(4, 1) = 2 = Q(s, a) -> 0
    assert float(td_loss(q, b, tgt, gamma=0.5)) == pytest.approx(0.0)
    # double Q: y = 0.5 * 1 = 0.5, error 1.5 -> Huber 1.5 - 0.5 = 1.0
    dq = td_loss(q, b, tgt, gamma=0.5, double_q=True, next_q_online=online)
    assert float(dq) == pytest.approx(1.0)
    # a terminal transition ignores the next state: error 2 -> 1.5
    term = {**b, "terminated": jnp.array([1.0])}
    assert float(td_loss(q, term, tgt, gamma=0.5)) == pytest.approx(1.5)
    with pytest.raises(ValueError, match="next_q_online"):
        td_loss(q, b, tgt, gamma=0.5, double_q=True)


@pytest.mark.slow  # end-to-end, > 20 s on 2 cores; CI runs the slow suite too
def test_train_lambda_uses_the_dqn_discount(short_run):
    state, _, _ = short_run
    sym = get_symmetry("cartpole")
    lam_cfg = LambdaConfig(steps=5, batch_size=16)
    run = lambda cfg: train_lambda(state.params, state.buffer, jax.random.PRNGKey(1),
                                   symmetry=sym, num_actions=2, dqn_config=cfg, config=lam_cfg)
    import dataclasses

    _, l_99 = run(SMALL)
    _, l_0 = run(dataclasses.replace(SMALL, gamma=0.0))
    _, l_dq = run(dataclasses.replace(SMALL, double_q=True))
    assert not np.allclose(np.asarray(l_99), np.asarray(l_0))  # the DQN's γ is the one used
    assert np.all(np.isfinite(np.asarray(l_dq)))
    with pytest.warns(DeprecationWarning, match="gamma"):
        bad = LambdaConfig(steps=5, gamma=0.5)
    with pytest.raises(ValueError, match=r"DQNConfig\.gamma"):
        train_lambda(state.params, state.buffer, jax.random.PRNGKey(1), symmetry=sym,
                     num_actions=2, dqn_config=SMALL, config=bad)
