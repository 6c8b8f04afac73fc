"""The engine's rules at the edges: element indices, NaN and infinity, empty batches, scale."""

import inspect
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import equijax as ej

G4 = ej.groups.rot90()
P3 = ej.groups.permutation(6, [(0, 1, 2)])


def _groups_and_inputs():
    k = jax.random.key(0)
    img = jax.random.normal(k, (2, 4, 4, 1))
    ids = jnp.array([[0, 1, 2, 5], [3, 4, 0, 1]])
    return [
        ("rot90", G4, img),
        ("dihedral", ej.groups.dihedral(), img),
        ("perm3", P3, ids),
        ("generated", ej.groups.generated([(1, 0, 2, 3, 4, 5), (1, 2, 3, 0, 4, 5)]), ids),
        ("product_perm", ej.groups.product(P3, ej.groups.permutation(6, [(4, 5)])), ids),
        ("product_generic", ej.groups.product(ej.groups.rot180(), ej.groups.hflip()), img),
        ("sign_flip", ej.groups.sign_flip([-1.0, 1.0]), jax.random.normal(k, (3, 2))),
        ("cyclic5", ej.groups.cyclic(5), jax.random.normal(k, (3, 2))),
    ]


CASES = _groups_and_inputs()
NAMES = [c[0] for c in CASES]


# ------------------------------------------------------------------------------------------
# Element indices.
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,G,x", CASES, ids=NAMES)
def test_static_indices_are_validated(name, G, x):
    n = G.order
    with pytest.raises(ValueError, match=r"out of range.*\[0, "):
        G.act(n, x)
    with pytest.raises(ValueError, match="out of range"):
        G.act(-1, x)
    for bad in (1.5, 1.0, True, np.float32(1.0)):
        with pytest.raises(TypeError, match="g"):
            G.act(bad, x)
    with pytest.raises(TypeError, match="h"):
        G.compose(0, 1.0)
    with pytest.raises(ValueError, match="out of range"):
        G.compose(0, n)
    with pytest.raises(TypeError):
        G.inverse(False)
    with pytest.raises(ValueError, match="out of range"):
        G.inverse(n + 3)
    with pytest.raises(TypeError, match="integer dtype"):
        jax.jit(G.act)(jnp.float32(1.0), x)


@pytest.mark.parametrize("name,G,x", CASES, ids=NAMES)
def test_traced_indices_are_taken_modulo_the_order(name, G, x):
    n = G.order
    act = jax.jit(G.act)
    compose = jax.jit(G.compose)
    inverse = jax.jit(G.inverse)
    for g in range(n):
        want = np.asarray(G.act(g, x))
        for shift in (n, -n, 3 * n):
            got = np.asarray(act(jnp.int32(g + shift), x))
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)  # cyclic: float angles
        for h in range(n):
            assert int(compose(jnp.int32(g - n), jnp.int32(h + 2 * n))) == G.compose(g, h)
        assert int(inverse(jnp.int32(g + n))) == G.inverse(g)
    # concrete integer arrays (not Python ints) follow the array rule too
    got = np.asarray(G.act(jnp.int32(n + 1), x))
    np.testing.assert_allclose(got, np.asarray(G.act(1, x)), rtol=1e-6, atol=1e-6)


def test_permutation_act_on_ids_outside_the_index_set():
    G = ej.groups.permutation(5, [(0, 1, 2)])
    ids = jnp.array([5, 7, -1, 0, 4])
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        G.act(1, ids)
    out = jax.jit(G.act)(1, ids)  # the example returned INT_MIN here
    assert out.tolist() == [5, 7, -1, 1, 4]
    out = jax.jit(G.act, static_argnums=0)(1, ids)
    assert out.tolist() == [5, 7, -1, 1, 4]


def test_act_axis_validates_axis():
    G = ej.groups.permutation(5, [(0, 1)])
    y = jnp.ones((2, 5))
    with pytest.raises(ValueError, match="axis=5"):
        G.act_axis(1, y, axis=5)
    with pytest.raises(ValueError, match="axis=-3"):
        G.act_axis(1, y, axis=-3)
    with pytest.raises(TypeError, match="axis"):
        G.act_axis(1, y, axis=1.0)
    assert G.act_axis(1, y, axis=-1).shape == (2, 5)


@pytest.mark.parametrize("cycles", [[(0.5, 2)], [(0, 2.0)], [(True, 2)]])
def test_float_cycle_indices_raise(cycles):
    with pytest.raises(TypeError, match="cycle indices must be ints"):
        ej.groups.permutation(5, cycles)


def test_float_permutation_entries_raise():
    with pytest.raises(TypeError, match="ints"):
        ej.groups.permutation_group([(0, 1, 2), (1.0, 0, 2)])


# ------------------------------------------------------------------------------------------
# Groups at scale.
# ------------------------------------------------------------------------------------------


def _symmetric(k):
    swap = (1, 0, *range(2, k))
    cycle = (*range(1, k), 0)
    return ej.groups.generated([swap, cycle], name=f"S{k}")


def test_symmetric_group_s6_builds_and_equitunes_with_chunks():
    t0 = time.perf_counter()
    S6 = _symmetric(6)
    assert S6.order == 720
    assert time.perf_counter() - t0 < 10
    t = np.asarray(S6.table)
    rng = np.random.default_rng(0)
    a, b, c = rng.integers(0, 720, (3, 200))
    np.testing.assert_array_equal(t[t[a, b], c], t[a, t[b, c]])
    assert S6 == ej.groups.permutation_group(S6.perms, name="S6")
    assert hash(S6) == hash(ej.groups.permutation_group(S6.perms, name="S6"))
    # a model on 6-token sequences, invariant after equitune over all 720 relabelings
    w = jax.random.normal(jax.random.key(0), (6 * 6, 3))
    fn = lambda ids: jax.nn.one_hot(ids, 6).reshape(ids.shape[0], -1) @ w
    x = jnp.array([[0, 1, 2, 3, 4, 5], [5, 5, 1, 0, 2, 2]])
    f = jax.jit(lambda x: ej.equitune(fn, S6, x, chunk_size=90))
    y = f(x)
    g = jnp.int32(417)
    np.testing.assert_allclose(f(S6.act(g, x)), y, atol=1e-5)
    brute = jax.jit(jax.vmap(lambda g: fn(S6.act(g, x))))(jnp.arange(720)).mean(0)
    np.testing.assert_allclose(brute, y, atol=1e-5)


def test_symmetric_group_s7_builds_in_bounded_time():
    t0 = time.perf_counter()
    S7 = _symmetric(7)
    elapsed = time.perf_counter() - t0
    assert S7.order == 5040 == math.factorial(7)
    assert elapsed < 30, elapsed
    t = S7._table_np
    assert t.dtype == np.int32 and t.shape == (5040, 5040)
    rng = np.random.default_rng(1)
    a, b = rng.integers(0, 5040, (2, 100))
    for i, j in zip(a, b, strict=True):
        p = np.asarray(S7.perms[i])[np.asarray(S7.perms[j])]
        assert tuple(p.tolist()) == S7.perms[t[i, j]]
    assert S7.inverse(S7.compose(17, 4000)) == S7.compose(S7.inverse(4000), S7.inverse(17))


def test_product_of_permutation_groups_is_vectorised():
    S4 = ej.groups.generated([(1, 0, 2, 3, 4, 5, 6, 7), (1, 2, 3, 0, 4, 5, 6, 7)])
    C4 = ej.groups.generated([(0, 1, 2, 3, 5, 6, 7, 4)])
    G = ej.groups.product(S4, C4)
    assert isinstance(G, ej.groups.PermutationGroup) and G.order == 96
    ids = jnp.arange(8)[None]
    for g, h in [(5, 70), (95, 1), (33, 33)]:
        lhs = G.act(g, G.act(h, ids))
        np.testing.assert_array_equal(lhs, G.act(G.compose(g, h), ids))


# ------------------------------------------------------------------------------------------
# NaN and infinity rules.
# ------------------------------------------------------------------------------------------

W = jax.random.normal(jax.random.key(3), (16, 5))


def _fn(x):
    return x.reshape(x.shape[0], 16) @ W


X = jax.random.normal(jax.random.key(4), (3, 4, 4, 1))


def test_nan_proxy_loss_ranks_last_for_every_chunk_size():
    def loss(y):  # NaN for the element(s) seen as "odd" by the sign of a corner pixel
        base = ej.proxies.neg_max_probability(y)
        return jnp.where(y[:, 0] > 0, jnp.nan, base)

    def loss_all_nan(y):
        return jnp.full(y.shape[:1], jnp.nan)

    outs = []
    for c in (None, 1, 2, 3):
        f = jax.jit(
            lambda x, c=c: ej.equizero(_fn, G4, x, loss=loss, chunk_size=c, return_index=True)
        )
        y, idx = f(X)
        outs.append((np.asarray(y), np.asarray(idx)))
    for y, idx in outs[1:]:
        np.testing.assert_allclose(y, outs[0][0], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(idx, outs[0][1])
    # the chosen element never has a NaN loss when another element has a number
    ys = jnp.stack([G4.act(g, X) for g in range(4)])
    losses = jnp.stack([loss(_fn(xg)) for xg in ys])  # (4, B)
    chosen = losses[outs[0][1], jnp.arange(3)]
    has_number = ~jnp.isnan(losses).all(0)
    assert bool(jnp.all(~jnp.isnan(chosen) | ~has_number))
    assert bool(jnp.isnan(losses).any()), "the test needs some NaN losses"
    # every loss NaN: all elements tie, the result is the equitune mean, for every chunk size
    mean = ej.equitune(_fn, G4, X)
    for c in (None, 1, 3):
        y = jax.jit(lambda x, c=c: ej.equizero(_fn, G4, x, loss=loss_all_nan, chunk_size=c))(X)
        np.testing.assert_allclose(y, mean, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("scale", [1e10, 1e30])
@pytest.mark.parametrize("chunk", [None, 1, 3])
def test_lambda_weights_finite_for_huge_logit_spreads(scale, chunk):
    weight_fn = lambda z: scale * z[:, 0, 0, 0]
    f = jax.jit(
        lambda x: ej.lambda_equitune(
            _fn, G4, x, weight_fn=weight_fn, chunk_size=chunk, return_weights=True
        )
    )
    y, w = f(X)
    assert bool(jnp.isfinite(y).all()) and bool(jnp.isfinite(w).all())
    np.testing.assert_allclose(w.sum(1), 1.0, rtol=1e-6)
    # the weights are one-hot on the element with the largest logit
    logits = jnp.stack([G4.act(g, X)[:, 0, 0, 0] for g in range(4)], axis=1)  # (B, 4)
    best = jnp.argmax(logits, axis=1)
    np.testing.assert_array_equal(np.asarray(w), np.asarray(jax.nn.one_hot(best, 4)))
    want = jnp.stack([_fn(G4.act(int(best[b]), X))[b] for b in range(3)])
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)


def test_normalized_weights_rules():
    from equijax.decoding import normalized_weights

    w = jax.jit(normalized_weights)(jnp.array([[1e30, -1e30], [0.0, 0.0], [-jnp.inf, 2.0]]).T)
    np.testing.assert_array_equal(np.asarray(w).T, [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])
    w = normalized_weights(jnp.array([-jnp.inf, jnp.nan, -jnp.inf]))
    np.testing.assert_array_equal(np.asarray(w), np.full(3, 1 / 3, np.float32))


def _masking_weight_fn(xg):
    # element logits: -inf where the corner pixel is negative (masks), else the pixel itself;
    # example 2 is masked for every element (all four corners negative)
    v = xg[:, 0, 0, 0]
    return jnp.where(v < 0, -jnp.inf, v)


def test_minus_inf_logits_mask_elements_identically_for_every_chunk_size():
    x = X.at[2].set(-jnp.abs(X[2]))  # every corner of example 2 negative: all masked
    x = x.at[0, 0, 0, 0].set(1.0).at[0, 0, -1, 0].set(-1.0)  # example 0: some masked
    outs = []
    for c in (None, 1, 2, 3):
        f = jax.jit(
            lambda x, c=c: ej.lambda_equitune(
                _fn, G4, x, weight_fn=_masking_weight_fn, chunk_size=c, return_weights=True
            )
        )
        outs.append(f(x))
    for y, w in outs:
        assert bool(jnp.isfinite(y).all())
        np.testing.assert_allclose(y, outs[0][0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(w, outs[0][1], rtol=1e-6)
    y, w = outs[0]
    logits = jnp.stack([_masking_weight_fn(G4.act(g, x)) for g in range(4)], axis=1)
    np.testing.assert_array_equal(
        np.asarray(w) == 0, np.asarray(logits == -jnp.inf) & [[1], [1], [0]]
    )
    np.testing.assert_allclose(w[2], 0.25)  # all masked: uniform
    np.testing.assert_allclose(y[2], ej.equitune(_fn, G4, x)[2], rtol=1e-5, atol=1e-6)


def test_masked_element_with_nan_output_is_never_read():
    def fn(x):
        y = _fn(x)
        return jnp.where(x[:, 0, 0, :1] < 0, jnp.nan, y)

    y = ej.lambda_equitune(fn, G4, X, weight_fn=_masking_weight_fn, chunk_size=2)
    logits = jnp.stack([_masking_weight_fn(G4.act(g, X)) for g in range(4)])
    some = jnp.isfinite(logits).any(0)
    assert bool(jnp.isfinite(y[some]).all())


def test_assertions_fail_on_nan_outputs():
    x = jnp.ones((2, 4, 4, 1))
    all_nan = lambda x: jnp.full((x.shape[0], 3), jnp.nan)
    with pytest.raises(AssertionError, match="NaN"):
        ej.testing.assert_invariant(all_nan, G4, x)
    ej.testing.assert_invariant(all_nan, G4, x, allow_nan=True)
    one_side = lambda x: jnp.where(x[:, :1, 0, 0] > 0, jnp.nan, 1.0) * jnp.ones((1, 3))
    xs = jnp.arange(32.0).reshape(2, 4, 4, 1) - 8.5
    with pytest.raises(AssertionError, match="NaN"):
        ej.testing.assert_invariant(one_side, G4, xs, allow_nan=True)
    with pytest.raises(AssertionError, match="NaN"):
        ej.testing.assert_equivariant(lambda x: x / 0 * 0, G4, x, out_action=G4.act)


def test_equivariance_error_never_hides_a_nan():
    def fn(x):  # not invariant; one output column NaN
        y = _fn(x)
        return y.at[:, 2].set(jnp.nan)

    assert math.isnan(ej.testing.equivariance_error(fn, G4, X))
    assert math.isnan(ej.testing.equivariance_error(fn, G4, X, relative=True))
    inf_one_side = lambda x: jnp.where(x[:, :1, 0, 0] > 0, jnp.inf, 0.0)
    assert ej.testing.equivariance_error(inf_one_side, G4, X) == math.inf
    assert ej.testing.equivariance_error(lambda x: jnp.full((3, 2), jnp.inf), G4, X) == 0.0


# ------------------------------------------------------------------------------------------
# Empty batches.
# ------------------------------------------------------------------------------------------

EMPTY = jnp.zeros((0, 4, 4, 1))


@pytest.mark.parametrize(
    "proxy", [ej.proxies.neg_max_probability, ej.proxies.entropy, ej.proxies.neg_max_score]
)
def test_empty_batch_every_proxy(proxy):
    y, idx = ej.equizero(_fn, G4, EMPTY, loss=proxy, return_index=True)
    assert y.shape == (0, 5) and idx.shape == (0,)
    assert proxy(jnp.zeros((0, 7, 5))).shape == (0,)
    assert ej.proxies.given(lambda o: o[:, 0])(jnp.zeros((0, 3))).shape == (0,)


@pytest.mark.parametrize("chunk", [None, 3])
def test_empty_batch_every_method(chunk):
    assert ej.equitune(_fn, G4, EMPTY, chunk_size=chunk).shape == (0, 5)
    y = ej.equizero(
        _fn, G4, EMPTY, loss=ej.proxies.entropy, chunk_size=chunk, straight_through=True
    )
    assert y.shape == (0, 5)
    y, w = ej.lambda_equitune(
        _fn, G4, EMPTY, weight_fn=lambda z: z[:, 0, 0, 0], chunk_size=chunk, return_weights=True
    )
    assert y.shape == (0, 5) and w.shape == (0, 4)
    pts = jnp.zeros((0, 3, 2))
    out = ej.canonical_lambda_equitune(
        lambda p: p.reshape(p.shape[0], 6),
        pts,
        canonicalizer=ej.so2_canonicalizer,
        thetas=[0.0, 1.0],
        chunk_size=1 if chunk else None,
    )
    assert out.shape == (0, 6)
    grads = jax.grad(lambda w: ej.equitune(lambda x: _fn(x) * w, G4, EMPTY).sum())(1.0)
    assert float(grads) == 0.0


# ------------------------------------------------------------------------------------------
# The transformed function has its own identity.
# ------------------------------------------------------------------------------------------


def test_transformed_function_has_its_own_name_and_signature():
    def my_model(params, x):
        """My docstring."""
        return x.reshape(x.shape[0], -1) @ params

    f = ej.equitune(my_model, G4)
    assert f.__name__ == "equitune(my_model)"
    assert "my_model" in f.__qualname__ and f.__qualname__ != my_model.__qualname__
    assert f.__doc__ != my_model.__doc__
    assert not hasattr(f, "__wrapped__")
    assert list(inspect.signature(f).parameters) == ["args"]
    z = ej.equizero(my_model, G4, loss=ej.proxies.entropy)
    assert z.__name__ == "equizero(my_model)"
    y = f(W, X)
    np.testing.assert_allclose(y, ej.equitune(lambda x: my_model(W, x), G4, X), rtol=1e-6)
