"""Groups too large to enumerate: SymmetricGroup, sampled equitune, frame averaging (issue 14.2)."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import equijax as ej
from equijax import SymmetricGroup, frame_average, sample_elements, sampled_equitune
from equijax.frames import average_tied_points, image_frame, sort_frame


def _mlp(n, d=2, hidden=16, out=3, seed=0):
    """A small MLP on the flattened set: depends on the order of the points."""
    k1, k2 = jax.random.split(jax.random.key(seed))
    params = {
        "w1": jax.random.normal(k1, (n * d, hidden)) / np.sqrt(n * d),
        "w2": jax.random.normal(k2, (hidden, out)) / np.sqrt(hidden),
    }

    def apply(p, pts):
        h = jnp.tanh(pts.reshape(pts.shape[0], -1) @ p["w1"])
        return h @ p["w2"]

    return params, apply


def _brute_force_mean(fn, x, n):
    """Mean over all n! orderings of the points, written independently of the library."""
    inv = jnp.asarray([np.argsort(p) for p in itertools.permutations(range(n))])
    return np.asarray(jax.jit(jax.vmap(lambda i: fn(x[:, i])))(inv)).mean(axis=0)


# ---------------------------------------------------------------------------------------
# SymmetricGroup
# ---------------------------------------------------------------------------------------


def test_symmetric_group_action_is_a_left_action(keys):
    G = SymmetricGroup(7)
    x = jax.random.normal(keys(), (3, 7, 2))
    p, q = G.sample(keys(), 2)
    np.testing.assert_array_equal(G.act(p, G.act(q, x)), G.act(G.compose(p, q), x))
    np.testing.assert_array_equal(G.act(G.inverse(p), G.act(p, x)), x)
    # point i goes to slot p[i]
    np.testing.assert_array_equal(G.act(p, x)[:, p], x)
    # one element per example
    ps = G.sample(keys(), 3)
    per = G.act(ps, x)
    for b in range(3):
        np.testing.assert_array_equal(per[b], G.act(ps[b], x[b : b + 1])[0])


def test_symmetric_group_elements_and_order():
    G = SymmetricGroup(5)
    els = np.asarray(G.elements())
    assert G.order == 120 and els.shape == (120, 5)
    assert len({tuple(r) for r in els}) == 120
    assert SymmetricGroup(12).order == math.factorial(12)
    with pytest.raises(ValueError, match="too many"):
        SymmetricGroup(12).elements()
    with pytest.raises(ValueError, match="batch axis"):
        SymmetricGroup(3, axis=0)
    with pytest.raises(ValueError, match="axis 1 of length 4"):
        SymmetricGroup(4).act(jnp.arange(4), jnp.zeros((2, 5, 2)))


def test_sampling_strategies(keys):
    n = 12
    G = SymmetricGroup(n)
    k = 24
    for strategy in ("iid", "without_replacement", "stratified"):
        s = np.asarray(G.sample(keys(), k, strategy))
        assert s.shape == (k, n)
        assert all(sorted(r) == list(range(n)) for r in s), strategy
    distinct = np.asarray(G.sample(keys(), k, "without_replacement"))
    assert len({tuple(r) for r in distinct}) == k
    strat = np.asarray(G.sample(keys(), 2 * n, "stratified"))
    # sample j lies in the coset {p : p[c] = 0} with c = j // 2: point c goes to slot 0
    np.testing.assert_array_equal(np.argmin(strat, axis=1), np.repeat(np.arange(n), 2))
    with pytest.raises(ValueError, match="strategy"):
        G.sample(keys(), 3, "sobol")


def test_without_replacement_limits(keys):
    with pytest.raises(ValueError, match="n <= 12"):
        SymmetricGroup(13).sample(keys(), 4, "without_replacement")
    with pytest.raises(ValueError, match="exceeds"):
        SymmetricGroup(3).sample(keys(), 7, "without_replacement")
    with pytest.raises(ValueError, match="exceeds"):
        sample_elements(ej.groups.rot90(), keys(), 5, "without_replacement")


# ---------------------------------------------------------------------------------------
# sampled_equitune
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [None, 7])
def test_all_elements_give_exact_equitune(keys, chunk_size):
    n = 5
    params, apply = _mlp(n)
    x = jax.random.normal(keys(), (3, n, 2))
    fn = lambda pts: apply(params, pts)
    G = SymmetricGroup(n)
    y = sampled_equitune(fn, G, x, elements=G.elements(), chunk_size=chunk_size)
    np.testing.assert_allclose(y, _brute_force_mean(fn, x, n), atol=1e-5)
    y2, se = sampled_equitune(
        fn, G, x, key=keys(), num_samples=120, strategy="without_replacement", return_stderr=True
    )
    np.testing.assert_allclose(y2, y, atol=1e-5)
    np.testing.assert_array_equal(se, np.zeros_like(se))


def test_finite_group_matches_equitune(keys):
    G = ej.groups.dihedral()
    w = jax.random.normal(keys(), (16, 3))
    fn = lambda im: jnp.tanh(im.reshape(im.shape[0], -1) @ w)
    x = jax.random.normal(keys(), (2, 4, 4, 1))
    y = sampled_equitune(fn, G, x, key=keys(), num_samples=8, strategy="without_replacement")
    np.testing.assert_allclose(y, ej.equitune(fn, G, x), atol=1e-6)
    idx = np.asarray(sample_elements(G, keys(), 8, "stratified"))
    np.testing.assert_array_equal(idx, np.arange(8))  # one index per slice of [0, 8)


def _scalar_s6_problem(keys):
    """A scalar MLP on 6 points, S_6, a batch of 4, and the exact average over all 720."""
    n = 6
    params, apply = _mlp(n, out=1)
    fn = lambda pts: apply(params, pts)[:, 0]
    G = SymmetricGroup(n)
    x = jax.random.normal(keys(), (4, n, 2))
    return fn, G, x, sampled_equitune(fn, G, x, elements=G.elements())


def test_mean_over_keys_converges_at_inverse_sqrt_k(keys):
    """Unbiased, and the RMS error over keys halves when num_samples grows 4x."""
    fn, G, x, exact = _scalar_s6_problem(keys)
    reps = 300
    rms, bias = {}, {}
    for k in (16, 64):  # one compiled program per k
        est = jax.jit(
            jax.vmap(lambda key, k=k: sampled_equitune(fn, G, x, key=key, num_samples=k))
        )(jax.random.split(keys(), reps))
        err = np.asarray(est - exact)
        rms[k] = float(np.sqrt(np.mean(err**2)))
        bias[k] = np.abs(err.mean(axis=0))
        # the mean over keys is within 4 standard errors of the exact average
        assert (bias[k] <= 4 * err.std(axis=0) / np.sqrt(reps) + 1e-6).all(), (k, bias[k])
    assert rms[16] > 1e-3  # a fixed key is not exact
    ratio = rms[16] / rms[64]  # O(1/sqrt(k)): 4x the samples, half the error
    assert 1.7 < ratio < 2.35, (ratio, rms)


def test_stderr_is_calibrated(keys):
    fn, G, x, exact = _scalar_s6_problem(keys)
    one = lambda key: sampled_equitune(fn, G, x, key=key, num_samples=64, return_stderr=True)
    run = jax.jit(jax.vmap(one))
    est, se = run(jax.random.split(keys(), 300))
    z = np.asarray((est - exact) / se)
    assert 0.8 < z.std() < 1.25, z.std()


def test_fixed_key_identity_and_equivariance_in_distribution(keys):
    """Same key at h x equals h applied to the average over the right-translated set S h."""
    n = 7
    params, apply = _mlp(n, out=n)
    fn = lambda pts: apply(params, pts)[..., None]  # one output per point: (B, n, 1)
    G = SymmetricGroup(n)
    x = jax.random.normal(keys(), (3, n, 2))
    key = keys()
    h = G.sample(keys(), 1)[0]
    f = lambda z, **kw: sampled_equitune(fn, G, z, out_action=G.act, **kw)
    lhs = f(G.act(h, x), key=key, num_samples=16)
    S = sample_elements(G, key, 16)
    rhs = G.act(h, f(x, elements=G.compose(S, h[None])))
    np.testing.assert_allclose(lhs, rhs, atol=1e-5)
    # ... but not h f(x) with the same key: a fixed key is not exactly equivariant
    assert float(jnp.abs(lhs - G.act(h, f(x, key=key, num_samples=16))).max()) > 1e-3
    # in distribution: the means over keys of f(h x) and h f(x) agree
    ks = jax.random.split(keys(), 200)
    a = jax.jit(jax.vmap(lambda k: f(G.act(h, x), key=k, num_samples=16)))(ks)
    b = jax.jit(jax.vmap(lambda k: G.act(h, f(x, key=k, num_samples=16))))(ks)
    tol = 5 * np.sqrt((a.var(0) + b.var(0)) / 200) + 1e-6
    assert (np.abs(a.mean(0) - b.mean(0)) <= tol).all()


def test_stratified_removes_variance_between_cosets(keys):
    """A model reading only the point in slot 0 is averaged exactly by n stratified samples."""
    n = 8
    v = jax.random.normal(keys(), (2,))
    fn = lambda pts: jnp.tanh(pts[:, 0] @ v)
    G = SymmetricGroup(n)
    x = jax.random.normal(keys(), (3, n, 2))
    exact = jnp.tanh(x @ v).mean(axis=1)
    y = sampled_equitune(fn, G, x, key=keys(), num_samples=n, strategy="stratified")
    np.testing.assert_allclose(y, exact, atol=1e-6)
    iid = sampled_equitune(fn, G, x, key=keys(), num_samples=n)
    assert float(jnp.abs(iid - exact).max()) > 1e-3


def _mlp_on_points(n, keys):
    """An order-dependent MLP on n points, S_n, a batch of 2 point sets and a sampling key."""
    params, apply = _mlp(n)
    return params, apply, SymmetricGroup(n), jax.random.normal(keys(), (2, n, 2)), keys()


def test_gradients_flow(keys):
    params, apply, G, x, key = _mlp_on_points(9, keys)
    loss = lambda p: jnp.sum(
        sampled_equitune(lambda z: apply(p, z), G, x, key=key, num_samples=10, chunk_size=4) ** 2
    )
    g = jax.grad(loss)(params)
    S = sample_elements(G, key, 10)
    manual = lambda p: jnp.sum(jnp.mean(jnp.stack([apply(p, G.act(s, x)) for s in S]), 0) ** 2)
    g_ref = jax.grad(manual)(params)
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref), strict=True):
        assert np.isfinite(np.asarray(a)).all() and float(jnp.abs(a).max()) > 0
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_transformation_form_jit_and_fold(keys):
    params, apply, G, x, key = _mlp_on_points(10, keys)
    f = sampled_equitune(apply, G, key=key, num_samples=12)
    y = jax.jit(f)(params, x)
    np.testing.assert_allclose(
        y, sampled_equitune(lambda z: apply(params, z), G, x, key=key, num_samples=12), atol=1e-6
    )
    y_fold = sampled_equitune(
        lambda z: apply(params, z), G, x, key=key, num_samples=12, batching="fold", chunk_size=5
    )
    np.testing.assert_allclose(y, y_fold, atol=1e-5)


def test_sampled_argument_errors(keys):
    fn = lambda z: z.sum(axis=(1, 2))
    G = SymmetricGroup(4)
    x = jnp.ones((2, 4, 1))
    with pytest.raises(ValueError, match="key is required"):
        sampled_equitune(fn, G, x, num_samples=3)
    with pytest.raises(ValueError, match="num_samples"):
        sampled_equitune(fn, G, x, key=keys(), num_samples=0)
    with pytest.raises(ValueError, match="strategy"):
        sampled_equitune(fn, G, x, key=keys(), num_samples=2, strategy="halton")
    with pytest.raises(ValueError, match=">= 2"):
        sampled_equitune(fn, G, x, key=keys(), num_samples=1, return_stderr=True)
    with pytest.raises(TypeError, match="sample"):
        sampled_equitune(fn, object(), x, key=keys(), num_samples=2)


# ---------------------------------------------------------------------------------------
# Frame averaging
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [8, 12])
def test_sort_frame_exactly_invariant(keys, n):
    params, apply = _mlp(n)
    fn = lambda pts: apply(params, pts)
    G = SymmetricGroup(n)
    x = jax.random.normal(keys(), (4, n, 2))
    x = x.at[:, 1].set(x[:, 0])  # a tie: two identical points
    x = x.at[:, 3, 0].set(x[:, 2, 0])  # equal first coordinates: the second one decides
    spec = sort_frame(n)
    f = jax.jit(lambda z: frame_average(fn, z, frame=spec))
    y = f(x)
    assert float(jnp.abs(y - fn(x)).max()) > 1e-3  # not the identity branch
    for p in G.sample(keys(), 5):
        np.testing.assert_array_equal(f(G.act(p, x)), y)


def test_sort_frame_equivariant_outputs_with_ties(keys):
    n = 6
    params, apply = _mlp(n, out=n)
    fn = lambda pts: apply(params, pts)[..., None]  # per-point outputs (B, n, 1)
    G = SymmetricGroup(n)
    x = jax.random.normal(keys(), (3, n, 2)).at[:, 4].set(0.0).at[:, 5].set(0.0)
    spec = sort_frame(n)
    f = lambda z: average_tied_points(z, frame_average(fn, z, frame=spec, out_action=G.act))
    y = f(x)
    for p in G.sample(keys(), 4):
        np.testing.assert_allclose(f(G.act(p, x)), G.act(p, y), atol=1e-6)
    np.testing.assert_array_equal(y[:, 4], y[:, 5])


@pytest.mark.parametrize("group", [ej.groups.rot90(), ej.groups.dihedral()], ids=["C4", "D4"])
def test_image_frame_exactly_invariant(keys, group):
    w = jax.random.normal(keys(), (6 * 6 * 2, 5))
    fn = lambda im: jnp.tanh(im.reshape(im.shape[0], -1) @ w)
    x = jax.random.normal(keys(), (3, 6, 6, 2))
    sym = jnp.ones((1, 6, 6, 2))  # fixed by every element: all scores tie
    x = jnp.concatenate([x, sym], axis=0)
    spec = image_frame(group)
    f = jax.jit(lambda z: frame_average(fn, z, frame=spec))
    y = f(x)
    for g in range(group.order):
        err = float(jnp.abs(f(group.act(g, x)) - y).max())
        assert err <= 1e-6, (g, err)
    assert float(jnp.abs(y[:3] - fn(x)[:3]).max()) > 1e-3


def test_image_frame_equivariant_with_full_frame(keys):
    G = ej.groups.rot90()
    k = jax.random.normal(keys(), (3, 3, 1, 1))
    conv = lambda im: jax.lax.conv_general_dilated(
        im, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )  # not rotation-equivariant
    half = jnp.rot90(jax.random.normal(keys(), (1, 5, 5, 1)), 2, axes=(1, 2))
    sym = half + jnp.rot90(half, 2, (1, 2))  # fixed by the 180-degree rotation
    x = jnp.concatenate([jax.random.normal(keys(), (2, 5, 5, 1)), sym])
    spec = image_frame(G, max_size=G.order)
    act = spec.act
    f = lambda z: frame_average(conv, z, frame=spec, out_action=act)
    y, fr = frame_average(conv, x, frame=spec, out_action=act, return_frame=True)
    assert float(fr.weights[2].sum()) == 2.0  # the 180-degree symmetric image ties twice
    for g in range(4):
        gb = jnp.full((3,), g, jnp.int32)
        np.testing.assert_allclose(f(G.act(g, x)), act(gb, y), atol=1e-5)


def test_frame_average_gradients_and_errors(keys):
    n = 5
    params, apply = _mlp(n)
    x = jax.random.normal(keys(), (2, n, 2))
    spec = sort_frame(n)
    g = jax.grad(lambda p: jnp.sum(frame_average(lambda z: apply(p, z), x, frame=spec) ** 2))(
        params
    )
    assert all(np.isfinite(np.asarray(a)).all() for a in jax.tree.leaves(g))
    assert float(jnp.abs(g["w1"]).max()) > 0
    gx = jax.grad(lambda z: jnp.sum(frame_average(lambda q: apply(params, q), z, frame=spec)))(x)
    assert float(jnp.abs(gx).max()) > 0  # gradients reach the input through the action
    with pytest.raises(ValueError, match="not both"):
        frame_average(lambda z: z, x, frame=spec, act=spec.act)
    with pytest.raises(TypeError, match="frame_fn"):
        frame_average(lambda z: z, x)
    with pytest.raises(ValueError, match="max_size"):
        image_frame(ej.groups.rot90(), max_size=5)
    with pytest.raises(ValueError, match="sort_frame"):
        spec.frame_fn(jnp.zeros((2, 4, 2)))
