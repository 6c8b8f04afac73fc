"""The four methods: equivariance, special cases, chunking, sharding, bad input."""

import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import equijax as ej


@pytest.fixture(autouse=True)
def strict_jax():
    with jax.debug_nans(True), jax.numpy_rank_promotion("raise"):
        yield


# ------------------------------------------------------------------ random non-equivariant models


class ConvNet(nn.Module):
    out: int = 5

    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Conv(4, (3, 3))(x))
        return nn.Conv(self.out, (3, 3))(h)


class Classifier(nn.Module):
    classes: int = 6

    @nn.compact
    def __call__(self, x):
        h = nn.tanh(nn.Dense(16)(x.reshape(x.shape[0], -1)))
        return nn.Dense(self.classes)(h)


class TokenModel(nn.Module):
    """ids (B, L) -> logits over the vocabulary (B, V): not equivariant by construction."""

    vocab: int = 9

    @nn.compact
    def __call__(self, ids):
        e = nn.Embed(self.vocab, 8)(ids).reshape(ids.shape[0], -1)
        return nn.Dense(self.vocab)(nn.tanh(nn.Dense(16)(e)))


def image_case(group, equivariant_output):
    x = jax.random.normal(jax.random.key(1), (3, 6, 6, 2))
    model = ConvNet() if equivariant_output else Classifier()
    params = model.init(jax.random.key(0), x)
    fn = functools.partial(model.apply, params)
    return fn, x, (group.act if equivariant_output else None)


def token_case(group):
    ids = jax.random.randint(jax.random.key(1), (4, 5), 0, 9)
    model = TokenModel()
    params = model.init(jax.random.key(0), ids)
    return functools.partial(model.apply, params), ids, group.act_axis


CASES = {
    "rot90/invariant": lambda: (ej.groups.rot90(), *image_case(ej.groups.rot90(), False)),
    "dihedral/equivariant": lambda: (ej.groups.dihedral(), *image_case(ej.groups.dihedral(), True)),
    "hflip/equivariant": lambda: (ej.groups.hflip(), *image_case(ej.groups.hflip(), True)),
    "vflip/invariant": lambda: (ej.groups.vflip(), *image_case(ej.groups.vflip(), False)),
    "perm3/equivariant": lambda: (
        ej.groups.permutation(9, [(0, 4, 7)]),
        *token_case(ej.groups.permutation(9, [(0, 4, 7)])),
    ),
    "perm_product/equivariant": lambda: (
        ej.groups.product(
            ej.groups.permutation(9, [(0, 1)]), ej.groups.permutation(9, [(2, 3, 5)])
        ),
        *token_case(
            ej.groups.product(
                ej.groups.permutation(9, [(0, 1)]), ej.groups.permutation(9, [(2, 3, 5)])
            )
        ),
    ),
}


def make(case):
    return CASES[case]()


def weight_fn(xg):
    v = xg.reshape(xg.shape[0], -1).astype(jnp.float32)
    return jnp.sin(v[:, :7].sum(-1) * 1.3) * 2.0


METHODS = {
    "equitune": lambda fn, G, x, oa, cs: ej.equitune(fn, G, x, out_action=oa, chunk_size=cs),
    "equizero": lambda fn, G, x, oa, cs: ej.equizero(
        fn,
        G,
        x,
        loss=lambda y: jnp.sin(y.reshape(y.shape[0], -1).sum(-1)),
        out_action=oa,
        chunk_size=cs,
    ),
    "lambda": lambda fn, G, x, oa, cs: ej.lambda_equitune(
        fn, G, x, weight_fn=weight_fn, out_action=oa, chunk_size=cs
    ),
    "lambda_positive": lambda fn, G, x, oa, cs: ej.lambda_equitune(
        fn, G, x, weight_fn=weight_fn, normalize="positive", out_action=oa, chunk_size=cs
    ),
}


@pytest.mark.parametrize("chunk", [None, 3])
@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("case", sorted(CASES))
def test_method_is_equivariant_under_jit_and_chunking(case, method, chunk):
    G, fn, x, out_action = make(case)
    sym = jax.jit(lambda x: METHODS[method](fn, G, x, out_action, chunk))
    # The base model is not equivariant, so the check below could fail.
    assert ej.testing.equivariance_error(fn, G, x, out_action=out_action) > 1e-3
    ej.testing.assert_equivariant(sym, G, x, out_action=out_action, atol=2e-5, rtol=2e-5)
    # Chunking changes memory, not results.
    plain = METHODS[method](fn, G, x, out_action, None)
    chex.assert_trees_all_close(sym(x), plain, atol=2e-5, rtol=2e-5)


def test_order_three_group_catches_g_instead_of_g_inverse():
    G, fn, x, _ = make("perm3/equivariant")
    wrong = lambda g, y: G.act_axis(G.inverse(g), y)  # an implementation that applied g, not g⁻¹
    y_wrong = ej.equitune(fn, G, x, out_action=wrong)
    y_wrong_g = ej.equitune(fn, G, G.act(1, x), out_action=wrong)
    assert np.abs(np.asarray(y_wrong_g - G.act_axis(1, y_wrong))).max() > 1e-3
    ej.testing.assert_equivariant(
        lambda x: ej.equitune(fn, G, x, out_action=G.act_axis), G, x, out_action=G.act_axis
    )


def test_equitune_matches_the_defining_sum():
    G, fn, x, oa = make("dihedral/equivariant")
    expected = sum(G.act(G.inverse(g), fn(G.act(g, x))) for g in range(G.order)) / G.order
    np.testing.assert_allclose(ej.equitune(fn, G, x, out_action=oa), expected, atol=1e-5)


def test_equizero_picks_argmin_and_returns_index():
    G, fn, x, _ = make("rot90/invariant")
    y, idx = ej.equizero(fn, G, x, loss=ej.proxies.neg_max_probability, return_index=True)
    losses = np.stack(
        [np.asarray(ej.proxies.neg_max_probability(fn(G.act(g, x)))) for g in range(4)]
    )
    np.testing.assert_array_equal(idx, losses.argmin(0))
    for b in range(x.shape[0]):
        np.testing.assert_allclose(y[b], fn(G.act(int(idx[b]), x))[b], atol=1e-6)


def test_equizero_ties_go_to_lowest_index_across_chunks():
    G = ej.groups.dihedral()
    x = jnp.ones((2, 4, 4, 1))
    fn = lambda x: x.reshape(2, -1)[:, :3]
    for chunk in (None, 1, 3):
        _, idx = ej.equizero(
            fn, G, x, loss=lambda y: jnp.zeros(y.shape[0]), chunk_size=chunk, return_index=True
        )
        np.testing.assert_array_equal(idx, [0, 0])


def test_lambda_constant_equals_equitune():
    for case in ("dihedral/equivariant", "perm3/equivariant"):
        G, fn, x, oa = make(case)
        for norm in ("softmax", "positive"):
            y = ej.lambda_equitune(
                fn,
                G,
                x,
                weight_fn=lambda xg: jnp.full(xg.shape[0], 3.0),
                normalize=norm,
                out_action=oa,
                chunk_size=2,
            )
            np.testing.assert_allclose(y, ej.equitune(fn, G, x, out_action=oa), atol=1e-5)


def test_lambda_indicator_equals_equizero():
    G, fn, x, oa = make("dihedral/equivariant")
    loss = lambda y: jnp.cos(y.reshape(y.shape[0], -1).sum(-1))
    indicator = lambda xg: -1e4 * loss(fn(xg))
    y0 = ej.equizero(fn, G, x, loss=loss, out_action=oa)
    for chunk in (None, 3):
        yl, w = ej.lambda_equitune(
            fn, G, x, weight_fn=indicator, out_action=oa, chunk_size=chunk, return_weights=True
        )
        np.testing.assert_allclose(yl, y0, atol=1e-5)
        np.testing.assert_allclose(w.max(1), 1.0, atol=1e-6)


@pytest.mark.parametrize("value", [0.0, 1e4, -1e4, 3e37])
def test_lambda_weights_have_no_nan_for_equal_or_huge_logits(value):
    G, fn, x, _ = make("rot90/invariant")
    for norm in ("softmax", "positive"):
        y, w = ej.lambda_equitune(
            fn,
            G,
            x,
            weight_fn=lambda xg: jnp.full(xg.shape[0], value),
            normalize=norm,
            return_weights=True,
            chunk_size=3,
        )
        assert np.isfinite(np.asarray(y)).all() and np.isfinite(np.asarray(w)).all()
        np.testing.assert_allclose(w, 0.25, atol=1e-6)


def test_lambda_weights_are_positive_and_normalised():
    G, fn, x, oa = make("dihedral/equivariant")
    _, w = ej.lambda_equitune(fn, G, x, weight_fn=weight_fn, out_action=oa, return_weights=True)
    assert w.shape == (x.shape[0], G.order)
    assert (np.asarray(w) > 0).all()
    np.testing.assert_allclose(w.sum(1), 1.0, atol=1e-6)


def test_straight_through_gradient_equals_equitune_gradient():
    G = ej.groups.rot90()
    model = Classifier()
    x = jax.random.normal(jax.random.key(3), (4, 6, 6, 2))
    params = model.init(jax.random.key(0), x)
    cot = jax.random.normal(jax.random.key(5), (4, 6))

    def xent(logits):
        # A loss linear in the outputs: the same cotangent reaches both paths, so the
        # straight-through gradient must equal the equitune gradient exactly.
        return (logits * cot).sum()

    def zero_st(p):
        return xent(
            ej.equizero(
                lambda z: model.apply(p, z),
                G,
                x,
                loss=ej.proxies.entropy,
                straight_through=True,
                chunk_size=2,
            )
        )

    def zero_plain(p):
        return ej.equizero(lambda z: model.apply(p, z), G, x, loss=ej.proxies.entropy)

    def tune(p):
        return xent(ej.equitune(lambda z: model.apply(p, z), G, x))

    g_st = jax.grad(zero_st)(params)
    g_tune = jax.grad(tune)(params)
    chex.assert_trees_all_close(g_st, g_tune, atol=1e-6)
    # ... while the forward value is exactly equizero's.
    st_out = ej.equizero(
        lambda z: model.apply(params, z), G, x, loss=ej.proxies.entropy, straight_through=True
    )
    np.testing.assert_array_equal(st_out, zero_plain(params))
    # identity surrogate: the gradient of the plain model
    g_id = jax.grad(
        lambda p: xent(
            ej.equizero(
                lambda z: model.apply(p, z),
                G,
                x,
                loss=ej.proxies.entropy,
                straight_through=True,
                surrogate="identity",
            )
        )
    )(params)
    chex.assert_trees_all_close(
        g_id, jax.grad(lambda p: xent(model.apply(p, x)))(params), atol=1e-6
    )


def test_transformation_form_passes_params_and_compiles_once():
    G = ej.groups.rot90()
    model = Classifier()
    x = jax.random.normal(jax.random.key(3), (2, 6, 6, 2))
    params = model.init(jax.random.key(0), x)
    sym = ej.equitune(model.apply, G)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(p, x):
        loss = lambda p: sym(p, x).sum()
        g = jax.grad(loss)(p)
        return jax.tree.map(lambda a, b: a - 0.1 * b, p, g)

    p = params
    for _ in range(3):
        p = step(p, x)
    np.testing.assert_allclose(
        sym(params, x), ej.equitune(lambda z: model.apply(params, z), G, x), atol=1e-6
    )
    assert not np.allclose(sym(p, x), sym(params, x))


def test_fold_batching_equals_vmap():
    for case in ("dihedral/equivariant", "perm3/equivariant"):
        G, fn, x, oa = make(case)
        for method in ("equitune", "lambda"):
            kw = {"weight_fn": weight_fn} if method == "lambda" else {}
            f = ej.equitune if method == "equitune" else ej.lambda_equitune
            np.testing.assert_allclose(
                f(fn, G, x, out_action=oa, batching="fold", **kw),
                f(fn, G, x, out_action=oa, **kw),
                atol=1e-5,
            )


def test_has_aux_lets_lambda_read_backbone_features():
    G = ej.groups.rot90()
    x = jax.random.normal(jax.random.key(3), (2, 6, 6, 2))
    w = jax.random.normal(jax.random.key(4), (72, 5))
    fn = lambda z: (jnp.tanh(z.reshape(2, -1) @ w), z.reshape(2, -1)[:, :4])
    y, wts = ej.lambda_equitune(
        fn, G, x, weight_fn=lambda feats: feats.sum(-1), has_aux=True, return_weights=True
    )
    y2, wts2 = ej.lambda_equitune(
        lambda z: fn(z)[0],
        G,
        x,
        weight_fn=lambda z: z.reshape(2, -1)[:, :4].sum(-1),
        return_weights=True,
    )
    np.testing.assert_allclose(y, y2, atol=1e-6)
    np.testing.assert_allclose(wts, wts2, atol=1e-6)


def test_sharded_orbit_equals_unsharded():
    assert jax.device_count() >= 8, "conftest sets --xla_force_host_platform_device_count=8"
    mesh = jax.make_mesh((4, 2), ("group", "batch"), axis_types=(AxisType.Auto, AxisType.Auto))
    sharding = NamedSharding(mesh, P("group", "batch"))
    G, fn, x, oa = make("dihedral/equivariant")
    x = jnp.concatenate([x, x[:1]], 0)  # batch 4
    for method in ("equitune", "lambda", "equizero"):
        kw = {}
        f = {"equitune": ej.equitune, "lambda": ej.lambda_equitune, "equizero": ej.equizero}[method]
        if method == "lambda":
            kw["weight_fn"] = weight_fn
        if method == "equizero":
            kw["loss"] = lambda y: y.sum((1, 2, 3))
        sharded = jax.jit(lambda x: f(fn, G, x, out_action=oa, orbit_sharding=sharding, **kw))
        lowered = sharded.lower(x).compile().as_text()
        assert "all-reduce" in lowered or "reduce-scatter" in lowered or "all-gather" in lowered
        np.testing.assert_allclose(sharded(x), f(fn, G, x, out_action=oa, **kw), atol=1e-5)


def test_canonical_lambda_equitune_is_so2_equivariant_and_invariant():
    R = ej.groups.SO2()
    x = jax.random.normal(jax.random.key(0), (5, 7, 2))
    w = jax.random.normal(jax.random.key(1), (14, 2))
    fn = lambda p: jnp.tanh(p.reshape(p.shape[0], -1) @ w)  # a 2-D vector per example
    lam = lambda p: p[:, 0, 0] * 3.0
    thetas = [0.0, 0.4, -0.4, jnp.pi]
    for theta_inverse in (True, False):
        f = lambda p: ej.canonical_lambda_equitune(
            fn,
            p,
            canonicalizer=ej.so2_canonicalizer,
            thetas=thetas,
            weight_fn=lam,
            out_action=R.act,
            theta_inverse=theta_inverse,
            chunk_size=3,
        )
        for phi in (0.3, 2.0, -1.2):
            np.testing.assert_allclose(f(R.act(phi, x)), R.act(phi, f(x)), atol=2e-5)
    inv = lambda p: ej.canonical_lambda_equitune(
        fn, p, canonicalizer=ej.so2_canonicalizer, thetas=thetas, weight_fn=lam
    )
    np.testing.assert_allclose(inv(R.act(1.1, x)), inv(x), atol=2e-5)
    assert float(jnp.abs(fn(R.act(1.1, x)) - fn(x)).max()) > 1e-2
    _, wts = ej.canonical_lambda_equitune(
        fn, x, canonicalizer=ej.so2_canonicalizer, thetas=thetas, weight_fn=lam, return_weights=True
    )
    np.testing.assert_allclose(wts.sum(1), 1.0, atol=1e-6)


def test_flax_shells_are_equivariant_and_nest():
    G = ej.groups.rot90()

    class Outer(nn.Module):
        @nn.compact
        def __call__(self, x):
            y = ej.nn.EquiTune(Classifier(), G)(x)
            z = ej.nn.EquiZero(Classifier(), G, loss=ej.proxies.neg_max_probability)(x)
            w = ej.nn.LambdaEquiTune(Classifier(), G, lambda_net=ej.LambdaNet(hidden=8))(x)
            return y + z + w

    x = jax.random.normal(jax.random.key(3), (2, 6, 6, 2))
    params = Outer().init(jax.random.key(0), x)
    ej.testing.assert_invariant(lambda x: Outer().apply(params, x), G, x, atol=2e-5)


def test_lambda_net_dropout_only_when_training():
    net = ej.LambdaNet()
    f = jnp.ones((3, 10))
    params = net.init(jax.random.key(0), f)
    a = net.apply(params, f)
    np.testing.assert_array_equal(a, net.apply(params, f))
    b = net.apply(params, f, deterministic=False, rngs={"dropout": jax.random.key(1)})
    assert not np.allclose(a, b)


# ------------------------------------------------------------------ bad input


def test_out_action_that_changes_shape_is_rejected():
    G, fn, x, _ = make("rot90/invariant")
    with pytest.raises(ValueError, match="out_action"):
        ej.equitune(fn, G, x, out_action=lambda g, y: y[:, :2])


@pytest.mark.parametrize(
    "chunk,err", [(0, ValueError), (-2, ValueError), (1.5, TypeError), (True, TypeError)]
)
def test_invalid_chunk_size_is_rejected(chunk, err):
    G, fn, x, _ = make("rot90/invariant")
    with pytest.raises(err, match="chunk_size"):
        ej.equitune(fn, G, x, chunk_size=chunk)


def test_weight_fn_and_loss_of_wrong_shape_are_rejected():
    G, fn, x, _ = make("rot90/invariant")
    with pytest.raises(ValueError, match="weight_fn"):
        ej.lambda_equitune(fn, G, x, weight_fn=lambda xg: jnp.ones((xg.shape[0], 3)))
    with pytest.raises(ValueError, match="loss"):
        ej.equizero(fn, G, x, loss=lambda y: y)


def test_wrong_types_are_rejected():
    G, fn, x, _ = make("rot90/invariant")
    with pytest.raises(TypeError, match="group"):
        ej.equitune(fn, "rot90", x)
    with pytest.raises(TypeError, match="fn"):
        ej.equitune(3, G, x)
    with pytest.raises(TypeError, match="loss"):
        ej.equizero(fn, G, x, loss=None)
    with pytest.raises(ValueError, match="normalize"):
        ej.lambda_equitune(fn, G, x, weight_fn=weight_fn, normalize="abs")
    with pytest.raises(ValueError, match="surrogate"):
        ej.equizero(fn, G, x, loss=ej.proxies.entropy, surrogate="mean")


def test_fn_that_drops_the_batch_axis_is_rejected():
    G, _, x, _ = make("rot90/invariant")
    with pytest.raises(ValueError, match="leading axis"):
        ej.equitune(lambda z: z.sum(), G, x)


def test_testing_helpers_detect_broken_models():
    G = ej.groups.rot90()
    x = jax.random.normal(jax.random.key(0), (2, 4, 4, 1))
    fn = lambda z: z[:, 0, :, 0]
    with pytest.raises(AssertionError, match="g=1"):
        ej.testing.assert_invariant(fn, G, x)
    assert ej.testing.equivariance_error(fn, G, x) > 0.1
    assert ej.testing.equivariance_error(fn, G, x, relative=True) > 0.01


def test_orbit_sharding_helper_builds_a_group_by_batch_mesh():
    s = ej.orbit_sharding(group_devices=4)
    assert dict(s.mesh.shape) == {"group": 4, "batch": 2}
    G, fn, x, oa = make("dihedral/equivariant")
    x = jnp.concatenate([x, x[:1]], 0)
    y = jax.jit(lambda x: ej.equitune(fn, G, x, out_action=oa, orbit_sharding=s, chunk_size=4))(x)
    np.testing.assert_allclose(y, ej.equitune(fn, G, x, out_action=oa), atol=1e-5)
    with pytest.raises(ValueError, match="group_devices"):
        ej.orbit_sharding(group_devices=3)
