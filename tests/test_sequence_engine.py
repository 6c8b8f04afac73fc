"""The sequence engine on a decoder that is not in the house.

A two-layer plain-JAX transformer with its own KV cache (defined here, nothing from
equijax.models) meets the contract ``prefill(params, ids, mask) -> (cache, logits)``,
``step(params, cache, token) -> (cache, logits)``; through the public ``equijax.decoding``
it samples with every method, with exact group fairness
(``decode(g·x, key) == g·decode(x, key)`` token for token) and exact greedy equivariance, and
it finetunes through the teacher-forced objective with chunking.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from equijax import decoding
from equijax.groups import permutation

V, D, LAYERS, SLOTS = 12, 16, 2, 16
PAD = 0
G3 = permutation(V, [(3, 4, 5), (6, 7, 8)])  # order 3; 0 (pad), 1, 2 and 9..11 are fixed


def _init(key):
    ks = iter(jax.random.split(key, 3 + 6 * LAYERS))
    n = lambda shape, s=1.0: s * jax.random.normal(next(ks), shape) / np.sqrt(shape[0])
    layers = [
        {name: n((D, D)) for name in ("q", "k", "v", "o")}
        | {"w1": n((D, 2 * D)), "w2": n((2 * D, D))}
        for _ in range(LAYERS)
    ]
    return {"emb": n((V, D), 4.0), "pos": n((SLOTS, D)), "out": n((D, V), 3.0), "layers": layers}


def _step(params, cache, token):
    """One token per row through both layers; the cache holds keys/values of every slot."""
    t = cache["t"]
    h = params["emb"][token] + params["pos"][cache["n"]]
    valid = cache["valid"].at[:, t].set(cache["live"])
    ks, vs = [], []
    for layer, k_c, v_c in zip(params["layers"], cache["k"], cache["v"], strict=True):
        k_c = k_c.at[:, t].set(h @ layer["k"])
        v_c = v_c.at[:, t].set(h @ layer["v"])
        att = jnp.einsum("bd,bsd->bs", h @ layer["q"], k_c) / np.sqrt(D)
        att = jnp.where(valid, att, -1e9)
        h = h + jnp.einsum("bs,bsd->bd", jax.nn.softmax(att, -1), v_c) @ layer["o"]
        h = h + jnp.tanh(h @ layer["w1"]) @ layer["w2"]
        ks.append(k_c)
        vs.append(v_c)
    cache = {**cache, "k": ks, "v": vs, "valid": valid, "t": t + 1,
             "n": cache["n"] + cache["live"].astype(jnp.int32)}  # fmt: skip
    return cache, h @ params["out"]


def _prefill(params, ids, mask):
    """Feeds the (left-padded) prompt token by token; padding slots stay invisible."""
    b = ids.shape[0]
    zeros = jnp.zeros((b, SLOTS, D))
    cache = {"k": [zeros] * LAYERS, "v": [zeros] * LAYERS, "valid": jnp.zeros((b, SLOTS), bool),
             "t": 0, "n": jnp.zeros((b,), jnp.int32), "live": jnp.ones((b,), bool)}  # fmt: skip

    def body(c, col):
        tok, m = col
        c, logits = _step(params, {**c, "live": m}, tok)
        return c, logits

    cache, logits = jax.lax.scan(body, cache, (ids.T, mask.T))
    return {**cache, "live": jnp.ones((b,), bool)}, logits[-1]


MODEL = decoding.SequenceModel(_prefill, _step)
PARAMS = _init(jax.random.key(0))
PROMPTS = np.array([[0, 3, 9, 6, 10], [4, 4, 11, 8, 2], [0, 0, 5, 7, 3], [10, 6, 3, 9, 1]])
MASK = PROMPTS != PAD
N = 6


@functools.partial(jax.jit, static_argnames=("method", "greedy", "keep", "top_k"))
def _decode(ids, key, *, method, greedy, keep=False, top_k=None):
    kw = {}
    if method == "lambda_equitune":
        kw["weights"] = lambda cache: cache["k"][-1][:, 0, 0]  # λ logits from each branch's cache
    if method in ("equizero", "r_equizero"):
        kw["chunk_tokens"] = 2
    if method.startswith("r_"):
        kw["keep_identity"] = jnp.arange(V) >= (9 if keep else V)  # tokens 9..11 (fixed by G)
    group = None if method == "pretrained" else G3
    return decoding.decode(MODEL, PARAMS, ids, ids != PAD, method=method, group=group,
                           max_new_tokens=N, key=None if greedy else key, temperature=1.5,
                           top_k=top_k, **kw)  # fmt: skip


FAIR = ["equitune", "lambda_equitune", "equitune_sequence", "equizero", "r_equitune",
        "r_equizero"]  # fmt: skip


@pytest.mark.parametrize("method", FAIR)
@pytest.mark.parametrize("greedy", [False, True])
def test_every_method_is_exactly_fair_token_for_token(method, greedy):
    key = jax.random.key(3)
    out = _decode(jnp.asarray(PROMPTS), key, method=method, greedy=greedy)
    assert set(np.asarray(out.tokens).ravel()) & {3, 4, 5, 6, 7, 8}  # moved tokens appear
    for g in (1, 2):
        out_g = _decode(G3.act(g, jnp.asarray(PROMPTS)), key, method=method, greedy=greedy)
        np.testing.assert_array_equal(out_g.tokens, G3.act(g, out.tokens))
        np.testing.assert_array_equal(out_g.frame, [G3.compose(g, int(c)) for c in out.frame])


def test_plain_sampling_is_not_fair_and_the_key_matters():
    key = jax.random.key(3)
    x = jnp.asarray(PROMPTS)
    a = _decode(x, key, method="pretrained", greedy=False)
    b = _decode(G3.act(1, x), key, method="pretrained", greedy=False)
    assert not np.array_equal(np.asarray(b.tokens), np.asarray(G3.act(1, a.tokens)))
    c = _decode(x, jax.random.key(4), method="equitune", greedy=False)
    d = _decode(x, key, method="equitune", greedy=False)
    assert not np.array_equal(np.asarray(c.tokens), np.asarray(d.tokens))


def test_relaxed_methods_keep_the_identity_branch_on_kept_tokens():
    key = jax.random.key(5)
    x = jnp.asarray(PROMPTS)
    for method in ("r_equitune", "r_equizero"):
        exact = _decode(x, key, method=method[2:], greedy=False)
        empty = _decode(x, key, method=method, greedy=False)
        kept = _decode(x, key, method=method, greedy=False, keep=True)
        np.testing.assert_array_equal(exact.tokens, empty.tokens)
        assert not np.array_equal(np.asarray(kept.tokens), np.asarray(exact.tokens))


@pytest.mark.slow  # ~30-60 s of compilation on 2 cores
def test_greedy_equitune_is_the_argmax_of_the_group_mean_at_every_step():
    out = _decode(jnp.asarray(PROMPTS), None, method="equitune", greedy=True)
    toks, mask = jnp.asarray(PROMPTS), jnp.asarray(MASK)
    for t in range(N):  # reference: no cache reuse, every branch re-run on the whole history
        probs = [jax.nn.softmax(_prefill(PARAMS, G3.act(g, toks), mask)[1], -1) for g in range(3)]
        mean = sum(G3.act_axis(G3.inverse(g), p) for g, p in enumerate(probs)) / 3
        nxt = jnp.argmax(mean, -1).astype(jnp.int32)
        assert (nxt == out.tokens[:, t]).all()
        toks = jnp.concatenate([toks, nxt[:, None]], 1)
        mask = jnp.concatenate([mask, jnp.ones((len(toks), 1), bool)], 1)


def test_top_k_one_is_greedy_and_the_filter_is_shared():
    x = jnp.asarray(PROMPTS)
    a = _decode(x, jax.random.key(1), method="equitune", greedy=False, top_k=1)
    b = _decode(x, None, method="equitune", greedy=True)
    # top-1 sampling keeps only the most likely token of the group mean: greedy decoding
    np.testing.assert_array_equal(a.tokens, b.tokens)
    lg = jnp.array([[0.0, 3.0, 2.0, 1.0]])
    assert decoding.filter_logits(lg, top_k=2).tolist() == [[-jnp.inf, 3.0, 2.0, -jnp.inf]]
    assert decoding.filter_logits(lg, top_p=0.5).tolist() == [[-jnp.inf, 3.0, -jnp.inf, -jnp.inf]]


@pytest.mark.slow  # ~30-60 s of compilation on 2 cores
def test_teacher_forced_objective_is_equivariant_and_chunks():
    base = decoding.teacher_forced(MODEL)

    def fn(params, ids, mask, targets, rng):  # + features for λ: the prompt's mean embedding
        feats = (params["emb"][ids] * mask[..., None]).sum(1)
        return base(params, ids, mask, targets, rng), feats

    x = jnp.asarray(PROMPTS)
    tgt = jnp.asarray([[3, 4, 9, 2], [6, 2, 0, 0], [7, 8, 5, 2], [11, 3, 2, 0]])
    for method in ("equitune", "equizero", "lambda_equitune"):
        kw = {"weight_fn": (lambda f, r: f[:, 0])} if "lambda" in method else {}
        run = functools.partial(decoding.method_log_probs, fn, PARAMS, method=method, group=G3,
                                **kw)  # fmt: skip
        lp = run(x, x != PAD, tgt)
        assert lp.shape == (4, 4, V)
        np.testing.assert_allclose(jnp.exp(lp).sum(-1), 1.0, rtol=1e-5)
        lp_g = run(G3.act(1, x), x != PAD, G3.act(1, tgt))
        np.testing.assert_allclose(lp_g, G3.act_axis(1, lp), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(run(x, x != PAD, tgt, chunk_size=1), lp, rtol=1e-5,
                                   atol=1e-6)  # fmt: skip
    grad = jax.grad(lambda p: decoding.method_log_probs(fn, p, x, x != PAD, tgt,
                                                        method="equizero", group=G3).sum())(
        PARAMS
    )  # fmt: skip
    assert float(jnp.abs(grad["out"]).sum()) > 0  # straight-through: a gradient flows
