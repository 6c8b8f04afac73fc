"""exact=True: bitwise equivariance under jit, with outputs spanning many orders of magnitude."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import equijax as ej

D4 = ej.groups.dihedral()
SCALE = 10.0 ** jnp.linspace(-15, 15, 36).reshape(1, 6, 6, 1)
W = jax.random.normal(jax.random.key(0), (72, 7)) * (10.0 ** jnp.linspace(-12, 12, 7))
X = jax.random.normal(jax.random.key(1), (3, 6, 6, 2))


def img_fn(x):  # image -> image with position-dependent scales 1e-15 .. 1e15 (not equivariant)
    return jnp.tanh(x * 3.0) * SCALE + x**3


def logit_fn(x):  # image -> logits of scales 1e-12 .. 1e12 (not invariant)
    return jnp.tanh(x.reshape(x.shape[0], 72)) @ W


def _lam(z):
    return 3.0 * z[:, 0, 0, 0]


METHODS = {
    "equitune": lambda fn, G, **kw: lambda x: ej.equitune(fn, G, x, **kw),
    "equizero": lambda fn, G, **kw: (
        lambda x: ej.equizero(
            fn, G, x, loss=lambda y: y.reshape(y.shape[0], -1).sum(-1) * 0.0, **kw
        )
    ),
    "equizero_st": lambda fn, G, **kw: (
        lambda x: ej.equizero(
            fn,
            G,
            x,
            loss=lambda y: -jnp.abs(y.reshape(y.shape[0], -1)[:, 0]),
            straight_through=True,
            **kw,
        )
    ),
    "lambda": lambda fn, G, **kw: lambda x: ej.lambda_equitune(fn, G, x, weight_fn=_lam, **kw),
}


def _check(f, G, x, out_action):
    f = jax.jit(f)
    y = np.asarray(f(x))
    for g in range(G.order):
        lhs = np.asarray(f(G.act(g, x)))
        rhs = y if out_action is None else np.asarray(out_action(g, y))
        assert np.array_equal(lhs, rhs), f"not bitwise equivariant for g={g}"


@pytest.mark.parametrize("method", list(METHODS))
def test_exact_image_outputs(method):
    f = METHODS[method](img_fn, D4, out_action=D4.act, exact=True)
    _check(f, D4, X, D4.act)


@pytest.mark.parametrize("method", list(METHODS))
def test_exact_invariant_logits(method):
    f = METHODS[method](logit_fn, D4, exact=True)
    _check(f, D4, X, None)


def test_default_is_equivariant_up_to_round_off_only():
    # the motivation for exact=True: the default sums in element order
    f = jax.jit(lambda x: ej.equitune(img_fn, D4, x, out_action=D4.act))
    y = f(X)
    diffs = [not np.array_equal(f(D4.act(g, X)), D4.act(g, y)) for g in range(8)]
    assert any(diffs)
    for g in range(8):
        np.testing.assert_allclose(f(D4.act(g, X)), D4.act(g, y), rtol=1e-5)


# A permutation group of order 24 (S4 on tokens 1..4) acting on a vocabulary axis of 9.
S4 = ej.groups.generated(
    [(0, 2, 1, 3, 4, 5, 6, 7, 8), (0, 2, 3, 4, 1, 5, 6, 7, 8)], name="S4 on tokens 1..4"
)
E = jax.random.normal(jax.random.key(2), (9, 5)) * (10.0 ** jnp.linspace(-10, 10, 5))
V = jax.random.normal(jax.random.key(3), (5 * 6, 9)) * (10.0 ** jnp.linspace(-8, 8, 9))


def lm_fn(ids):  # (B, T) ids -> next-token logits (B, 9); position-dependent, not equivariant
    h = jnp.tanh(E[ids] * jnp.arange(1, 7)[None, :, None] / 10)
    return h.reshape(ids.shape[0], 30) @ V


def _vocab(g, y):
    return S4.act_axis(g, y, axis=-1)


@pytest.mark.parametrize("method", ["equitune", "equizero_st", "lambda"])
def test_exact_permutations_on_a_vocabulary_axis(method):
    ids = jax.random.randint(jax.random.key(4), (4, 6), 0, 9)
    kw = dict(out_action=_vocab, exact=True)
    if method == "lambda":
        f = lambda x: ej.lambda_equitune(
            lm_fn, S4, x, weight_fn=lambda z: z[:, 0].astype(jnp.float32), **kw
        )
    else:
        f = METHODS[method](lm_fn, S4, **kw)
    _check(f, S4, ids, _vocab)


def test_exact_equizero_ties_on_inputs_with_a_stabiliser():
    # x fixed by the 180-degree rotation: g and g·r2 tie exactly; their average is exact
    x = X + D4.act(2, X)
    loss = lambda y: -jnp.abs(y.reshape(y.shape[0], -1)).max(-1)
    f = lambda x: ej.equizero(img_fn, D4, x, loss=loss, out_action=D4.act, exact=True)
    _check(f, D4, x, D4.act)


def test_exact_canonical_lambda_equitune_matches_default():
    pts = jax.random.normal(jax.random.key(5), (3, 4, 2))
    fn = lambda p: p.reshape(p.shape[0], 8) * 10.0 ** jnp.arange(8)
    kw = dict(
        canonicalizer=ej.so2_canonicalizer, thetas=[0.0, 1.0, 2.0], weight_fn=lambda p: p[:, 0, 0]
    )
    a = jax.jit(lambda p: ej.canonical_lambda_equitune(fn, p, exact=True, **kw))(pts)
    b = jax.jit(lambda p: ej.canonical_lambda_equitune(fn, p, **kw))(pts)
    np.testing.assert_allclose(a, b, rtol=1e-5)


def test_exact_with_chunks_is_a_clear_error():
    for call in (
        lambda: ej.equitune(img_fn, D4, X, exact=True, chunk_size=3),
        lambda: ej.equizero(logit_fn, D4, X, loss=ej.proxies.entropy, exact=True, chunk_size=1),
        lambda: ej.lambda_equitune(logit_fn, D4, X, weight_fn=_lam, exact=True, chunk_size=4),
        lambda: ej.equitune(img_fn, D4, exact=True, chunk_size=2),  # transformation form too
    ):
        with pytest.raises(ValueError, match=r"exact=True.*chunk_size"):
            call()
    # a chunk covering the whole orbit is fine
    y = ej.equitune(logit_fn, D4, X, exact=True, chunk_size=8)
    np.testing.assert_allclose(y, ej.equitune(logit_fn, D4, X), rtol=1e-5)
    with pytest.raises(ValueError, match="ties='average'"):
        ej.equizero(logit_fn, D4, X, loss=ej.proxies.entropy, exact=True, ties="first")
    with pytest.raises(TypeError, match="exact"):
        ej.equitune(logit_fn, D4, X, exact="yes")


def test_exact_gradients_match_default():
    def loss(w, exact):
        return ej.equitune(lambda x: logit_fn(x) * w, D4, X, exact=exact).sum()

    ga = jax.grad(loss)(0.5, True)
    gb = jax.grad(loss)(0.5, False)
    np.testing.assert_allclose(ga, gb, rtol=1e-4)
