"""Generic greedy / equivariant greedy decoding over a step function (toy models)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from equijax import decoding as dec
from equijax.groups import permutation

V = 8  # 0 pad, 1 start, 2 eos, 3..7 content tokens
PAD, START, EOS = 0, 1, 2
G2 = permutation(V, [(3, 4)])
G4 = permutation(V, [(3, 4, 5, 6)])
MAX_LEN = 12


def _params(seed=0, hidden=16, equivariant=False):
    k = jax.random.split(jax.random.key(seed), 4)
    p = {
        "emb": jax.random.normal(k[0], (V, hidden)),
        "rec": jax.random.normal(k[1], (hidden, hidden)) / np.sqrt(hidden),
        "out": jax.random.normal(k[2], (hidden, V)),
        "inp": jax.random.normal(k[3], (V, hidden)),
    }
    if equivariant:
        p["out"] = jnp.zeros_like(p["out"])
    return p


def _init(params, x):
    """x: (B, V) float 'input' whose last axis is indexed by vocabulary ids."""
    return {"h": jnp.tanh(x @ params["inp"]), "x": x, "t": jnp.zeros(x.shape[:1])}


def _step(params, state, token):
    h = jnp.tanh(params["emb"][token] + state["h"] @ params["rec"])
    # The input bias makes the model input-dependent; EOS gets a growing push so sequences end.
    logits = h @ params["out"] + 3.0 * state["x"]
    logits = logits.at[:, EOS].add(state["x"][:, EOS] + 0.3 * state["t"])
    return {**state, "h": h, "t": state["t"] + 1.0}, logits


def _inputs(seed, b=64):
    x = jax.random.normal(jax.random.key(100 + seed), (b, V))
    return x.at[:, PAD].set(-5.0).at[:, START].set(-5.0)


def _decode(params, x, group, **kw):
    states = dec.branch_states(_init, params, x, group.act_axis, order=group.order)
    return dec.equivariant_greedy_decode(
        _step, params, states, group, max_len=MAX_LEN, start_id=START, eos_id=EOS, **kw
    )


# Jitted variants (one compilation per static configuration keeps the tests fast).
_decode_j = jax.jit(
    _decode, static_argnames=("group", "method", "average", "proxy", "after_eos")
)


@jax.jit
def _greedy_j(params, x):
    return dec.greedy_decode(_step, params, _init(params, x), max_len=MAX_LEN, start_id=START,
                             eos_id=EOS)


CASES = [
    dict(method="equitune"),
    dict(method="equitune", average="logprob"),
    dict(method="equitune_sequence"),
    dict(method="equitune_sequence", average="logprob", after_eos="zero"),
    dict(method="equizero"),
    dict(method="equizero", proxy="entropy"),
    dict(method="lambda_equitune"),
]


@pytest.mark.parametrize("group", [G2, G4], ids=["G2", "G4"])
def test_equivariant_decode_is_exact_for_every_element_and_method(group):
    params = _params(1)
    x = _inputs(0, b=256)
    lam = jax.random.normal(jax.random.key(7), (V,))

    @jax.jit
    def run(x):
        outs = []
        for kw in CASES:
            extra = dict(kw)
            if kw["method"] == "lambda_equitune":
                # λ(g·x): a function of the transformed input, so the weights permute with g.
                states = dec.branch_states(_init, params, x, group.act_axis, order=group.order)
                extra["weights"] = jax.vmap(lambda s: jnp.exp(s["x"] @ lam / 4.0))(states).T
            outs.append(_decode(params, x, group, **extra).tokens)
        return outs

    base = [np.asarray(o) for o in run(x)]
    for o in base:
        assert (o[:, 0] != PAD).all()
    for g in range(1, group.order):
        outs = run(group.act_axis(g, x))
        for kw, out, ref in zip(CASES, outs, base, strict=True):
            np.testing.assert_array_equal(
                np.asarray(out), np.asarray(group.act(g, ref)), err_msg=f"{kw}, g={g}"
            )


def test_greedy_decode_matches_python_loop_and_pads_after_eos():
    params = _params(2)
    x = _inputs(1, b=64)
    out = _greedy_j(params, x)
    state, tok = _init(params, x), jnp.full((64,), START)
    done = np.zeros(64, bool)
    ref = np.zeros((64, MAX_LEN), int)
    for t in range(MAX_LEN):
        state, logits = _step(params, state, tok)
        tok = jnp.argmax(logits, -1)
        ref[:, t] = np.where(done, PAD, np.asarray(tok))
        done |= np.asarray(tok) == EOS
    np.testing.assert_array_equal(np.asarray(out.tokens), ref)
    lengths = np.asarray(out.lengths)
    for row, n in zip(ref, lengths, strict=True):
        assert (row[n:] == PAD).all()
        if n < MAX_LEN or EOS in row:
            assert row[n - 1] == EOS
    assert (np.asarray(out.scores)[ref == PAD] == 0).all()


def test_equitune_of_equivariant_model_equals_plain_decode():
    # With out == 0 the logits are 3x + EOS push, and the hidden state does not reach the
    # logits, so the model is exactly equivariant: symmetrisation must not change it.
    params = _params(3, equivariant=True)
    x = _inputs(2, b=64)
    plain = _greedy_j(params, x).tokens

    @jax.jit
    def run(x):
        return [_decode(params, x, G4, **kw).tokens for kw in CASES[:5]]

    for out in run(x):
        np.testing.assert_array_equal(np.asarray(out), np.asarray(plain))


def test_equizero_selects_branch_with_lowest_proxy():
    params = _params(4)
    x = _inputs(3, b=64)
    out = _decode_j(params, x, G4, method="equizero")
    branches = [_greedy_j(params, G4.act_axis(g, x)) for g in range(4)]
    for g in range(4):
        o = branches[g]
        valid = np.arange(MAX_LEN)[None] < np.asarray(o.lengths)[:, None]
        conf = (np.asarray(o.scores) * valid).sum(1) / valid.sum(1)
        np.testing.assert_allclose(np.asarray(out.proxy[g]), -conf, rtol=1e-5)
    best = np.asarray(out.branch)
    np.testing.assert_array_equal(best, np.argmin(np.asarray(out.proxy), 0))
    for g in range(4):
        rows = best == g
        if rows.any():
            np.testing.assert_array_equal(
                np.asarray(out.tokens)[rows],
                np.asarray(G4.act(G4.inverse(g), branches[g].tokens))[rows],
            )


def test_lambda_with_indicator_weights_is_that_branch_and_uniform_is_equitune():
    params = _params(5)
    x = _inputs(4, b=64)
    for g in range(4):
        w = jnp.zeros((64, 4)).at[:, g].set(1.0)
        out = _decode_j(params, x, G4, method="lambda_equitune", weights=w)
        o = _greedy_j(params, G4.act_axis(g, x))
        np.testing.assert_array_equal(np.asarray(out.tokens),
                                      np.asarray(G4.act(G4.inverse(g), o.tokens)))
    uni = _decode_j(params, x, G4, method="lambda_equitune", weights=jnp.full((64, 4), 2.5))
    np.testing.assert_array_equal(np.asarray(uni.tokens),
                                  np.asarray(_decode_j(params, x, G4, method="equitune").tokens))


def test_sorted_sum_is_permutation_invariant_bitwise():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((4, 5000)).astype(np.float32) * 10.0 ** rng.integers(
        -3, 4, size=(4, 5000)))
    ref = np.asarray(dec.sorted_sum(x, 0))
    for perm in ([1, 0, 2, 3], [3, 2, 1, 0], [2, 3, 0, 1]):
        np.testing.assert_array_equal(np.asarray(dec.sorted_sum(x[jnp.array(perm)], 0)), ref)
    np.testing.assert_allclose(ref, np.asarray(x.sum(0)), rtol=1e-4, atol=1e-3)


def test_combine_branches_maps_back_with_inverse():
    # For a 4-cycle g != g⁻¹, so applying g instead of g⁻¹ would give a different result.
    y = jax.nn.one_hot(jnp.array([3]), V)  # branch outputs token 3 in its own frame
    vals = jnp.stack([G4.act_axis(g, y) for g in range(4)])  # branch g saw g·x, answered g·3
    comb = dec.combine_branches(vals, G4)
    np.testing.assert_allclose(np.asarray(comb), np.asarray(y))


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        (dict(method="beam"), "method must be one of"),
        (dict(method="lambda_equitune"), "needs weights"),
        (dict(method="lambda_equitune", weights=jnp.ones((3, 4))), "weights must have shape"),
        (dict(method="equitune", weights=jnp.ones((16, 4))), "only used by method='lambda_eq"),
        (dict(method="equitune", average="median"), "average must be"),
        (dict(method="equizero", proxy="confidence"), "proxy must be"),
    ],
)
def test_bad_arguments_raise(kw, match):
    params = _params(0)
    with pytest.raises(ValueError, match=match):
        _decode(params, _inputs(0, b=16), G4, **kw)


def test_group_moving_special_tokens_raises():
    params = _params(0)
    bad = permutation(V, [(2, 3)])  # moves EOS
    with pytest.raises(ValueError, match="must be fixed"):
        _decode(params, _inputs(0, b=4), bad, method="equitune")


def test_states_without_group_axis_raise():
    params = _params(0)
    x = _inputs(0, b=3)
    with pytest.raises(ValueError, match="leading group axis"):
        dec.equivariant_greedy_decode(_step, params, _init(params, x), G4, max_len=4,
                                      start_id=START, eos_id=EOS)


def test_paper_whole_sequence_semantics_is_the_mean_of_log_softmax_rows_with_zero_rows():
    """The authors' SCAN equitune: decode every branch g·x greedily on its own, map its
    log-softmax rows back with g⁻¹, rows after the branch's own EOS stay 0, average over the
    group, argmax per step, cut at the first EOS."""
    params = _params(3)
    x = _inputs(2, b=48)
    group = G4
    out = dec.equivariant_greedy_decode(
        _step, params, dec.branch_states(_init, params, x, group.act_axis, order=group.order),
        group, method="equitune_sequence", average="logprob", after_eos="zero",
        max_len=MAX_LEN, start_id=START, eos_id=EOS,
    )  # fmt: skip
    # reference, one branch at a time in numpy
    rows = np.zeros((group.order, x.shape[0], MAX_LEN, V), np.float64)
    for g in range(group.order):
        xg = group.act_axis(g, x)
        o, probs = dec.greedy_decode(_step, params, _init(params, xg), max_len=MAX_LEN,
                                     start_id=START, eos_id=EOS, return_probs=True)  # fmt: skip
        lp = np.log(np.maximum(np.asarray(probs, np.float64), 1e-30))
        lp = np.asarray(group.act_axis(group.inverse(g), jnp.asarray(lp, jnp.float32)))
        for b in range(x.shape[0]):
            n = int(o.lengths[b])
            rows[g, b, :n] = lp[b, :n]  # rows after this branch's EOS stay 0
    mean = rows.mean(0)
    want = mean.argmax(-1)
    toks = np.asarray(out.tokens)
    for b in range(x.shape[0]):
        ref = want[b]
        stop = np.flatnonzero(ref == EOS)
        n = stop[0] + 1 if stop.size else MAX_LEN
        np.testing.assert_array_equal(toks[b, :n], ref[:n])
        assert (toks[b, n:] == PAD).all()


def test_after_eos_is_validated():
    params = _params(0)
    x = _inputs(0, b=4)
    with pytest.raises(ValueError, match="after_eos"):
        _decode(params, x, G2, method="equitune_sequence", after_eos="drop")
    with pytest.raises(ValueError, match="after_eos applies"):
        _decode(params, x, G2, method="equitune", after_eos="zero")


def test_equizero_decoding_nan_proxy_ranks_last():
    params = _params(4)
    x = _inputs(3, b=16)

    def proxy(probs, valid):  # NaN for every branch whose first token is content token 3
        conf = -(probs.max(-1) * valid).sum(-1) / jnp.maximum(valid.sum(-1), 1)
        return jnp.where(probs[:, 0].argmax(-1) == 3, jnp.nan, conf)

    out = _decode(params, x, G2, method="equizero", proxy=proxy)
    loss = np.asarray(out.proxy)
    chosen = loss[np.asarray(out.branch), np.arange(16)]
    some = ~np.isnan(loss).all(0)
    assert not np.isnan(chosen[some]).any()
