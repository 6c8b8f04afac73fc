"""Group axioms, action compatibility and bad input for every group."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import equijax as ej
from equijax.groups import FiniteGroup

IMAGE_GROUPS = {
    "rot90": ej.groups.rot90,
    "rot180": ej.groups.rot180,
    "hflip": ej.groups.hflip,
    "vflip": ej.groups.vflip,
    "dihedral": ej.groups.dihedral,
}


def _image_x(key, layout="NHWC"):
    shape = (2, 5, 5, 3) if layout == "NHWC" else (2, 3, 5, 5)
    return jax.random.normal(key, shape)


def all_groups():
    """(name, group, example input) for every kind of group."""
    k = jax.random.key(0)
    out = [(n, f(), _image_x(k)) for n, f in IMAGE_GROUPS.items()]
    out.append(("dihedral_nchw", ej.groups.dihedral("NCHW"), _image_x(k, "NCHW")))
    ids = jax.random.randint(k, (3, 7), 0, 9)
    out.append(("perm_swap", ej.groups.permutation(9, [(2, 7)]), ids))
    out.append(("perm_3cycle", ej.groups.permutation(9, [(0, 1, 2)]), ids))
    out.append(("perm_two_cycles", ej.groups.permutation(9, [(0, 1, 2), (4, 5)]), ids))
    out.append(
        (
            "generated_s3",
            ej.groups.generated([(1, 0, 2, 3, 4, 5, 6, 7, 8), (1, 2, 0, 3, 4, 5, 6, 7, 8)]),
            ids,
        )
    )
    out.append(
        (
            "product_perm",
            ej.groups.product(
                ej.groups.permutation(9, [(0, 1)]), ej.groups.permutation(9, [(3, 4, 5)])
            ),
            ids,
        )
    )
    out.append(
        (
            "product_generic",
            ej.groups.product(ej.groups.rot180(), ej.groups.sign_flip([-1, 1, 1])),
            _image_x(k),
        )
    )
    out.append(("sign_flip", ej.groups.sign_flip([-1.0, 1.0, -1.0]), jax.random.normal(k, (4, 3))))
    out.append(("cyclic5", ej.groups.cyclic(5), jax.random.normal(k, (4, 6, 2))))
    return out


GROUPS = all_groups()
IDS = [g[0] for g in GROUPS]


@pytest.mark.parametrize("name,G,x", GROUPS, ids=IDS)
def test_cayley_table_is_a_group(name, G, x):
    t = np.asarray(G.table)
    n = G.order
    assert t.shape == (n, n)
    for a, b, c in itertools.product(range(n), repeat=3):
        assert t[t[a, b], c] == t[a, t[b, c]]
    for g in range(n):
        assert G.compose(g, G.inverse(g)) == 0
        assert G.compose(G.inverse(g), g) == 0
        assert G.compose(0, g) == g == G.compose(g, 0)


@pytest.mark.parametrize("name,G,x", GROUPS, ids=IDS)
def test_action_is_compatible_with_composition(name, G, x):
    for g, h in itertools.product(range(G.order), repeat=2):
        lhs = G.act(g, G.act(h, x))
        rhs = G.act(G.compose(g, h), x)
        np.testing.assert_allclose(np.asarray(lhs), np.asarray(rhs), atol=1e-5)
    np.testing.assert_array_equal(np.asarray(G.act(0, x)), np.asarray(x))


@pytest.mark.parametrize("name,G,x", GROUPS, ids=IDS)
def test_action_is_faithful(name, G, x):
    images = [np.asarray(G.act(g, x)) for g in range(G.order)]
    for a, b in itertools.combinations(range(G.order), 2):
        assert not np.allclose(images[a], images[b]), (a, b)


@pytest.mark.parametrize("name,G,x", GROUPS, ids=IDS)
def test_traced_index_matches_static_index(name, G, x):
    traced = jax.jit(lambda g, x: G.act(g, x))
    for g in range(G.order):
        np.testing.assert_allclose(
            np.asarray(traced(jnp.int32(g), x)), np.asarray(G.act(g, x)), atol=1e-6
        )
    batched = jax.vmap(lambda g: G.act(g, x))(jnp.arange(G.order))
    for g in range(G.order):
        np.testing.assert_allclose(np.asarray(batched[g]), np.asarray(G.act(g, x)), atol=1e-6)


def test_groups_hash_and_compare_by_value():
    assert ej.groups.rot90() == ej.groups.rot90()
    assert hash(ej.groups.permutation(5, [(0, 1)])) == hash(ej.groups.permutation(5, [(0, 1)]))
    assert ej.groups.rot90() != ej.groups.rot90("NCHW")
    f = jax.jit(lambda x, G: G.act(1, x), static_argnums=1)
    f(jnp.ones((1, 2, 2, 1)), ej.groups.rot90())
    f(jnp.ones((1, 2, 2, 1)), ej.groups.rot90())
    assert f._cache_size() == 1


def test_mirror_is_not_a_rotation():
    x = jnp.arange(9.0).reshape(1, 3, 3, 1)
    flipped = ej.groups.hflip().act(1, x)
    np.testing.assert_array_equal(flipped[0, :, :, 0], np.fliplr(np.arange(9.0).reshape(3, 3)))
    for k in range(4):
        assert not np.array_equal(np.asarray(flipped), np.asarray(ej.groups.rot90().act(k, x)))
    np.testing.assert_array_equal(
        ej.groups.vflip().act(1, x)[0, :, :, 0], np.flipud(np.arange(9.0).reshape(3, 3))
    )


def test_rot90_quarter_turn_is_counter_clockwise():
    x = jnp.arange(4.0).reshape(1, 2, 2, 1)
    np.testing.assert_array_equal(
        ej.groups.rot90().act(1, x)[0, :, :, 0], np.rot90(np.arange(4.0).reshape(2, 2))
    )


def test_permutation_orders_and_examples():
    assert ej.groups.permutation(15, [(2, 10)]).order == 2
    assert ej.groups.permutation(5, [(0, 1, 2)]).order == 3
    assert ej.groups.permutation(9, [(0, 1, 2), (4, 5)]).order == 6
    P = ej.groups.permutation(15, [(2, 10)])
    np.testing.assert_array_equal(P.act(1, jnp.array([2, 10, 3])), [10, 2, 3])


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(3, 12),
    data=st.data(),
)
def test_act_axis_matches_one_hot_of_act(n, data):
    perm = data.draw(st.permutations(list(range(n))))
    cycle = [i for i in range(n) if perm[i] != i]
    if len(cycle) < 2:
        cycle = [0, 1]
    P = ej.groups.permutation(n, [tuple(cycle)])
    ids = jnp.asarray(data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=6)))
    for g in range(P.order):
        lhs = P.act_axis(g, jax.nn.one_hot(ids, n), axis=-1)
        rhs = jax.nn.one_hot(P.act(g, ids), n)
        np.testing.assert_array_equal(lhs, rhs)
        # The axis action is a group action too.
        for h in range(P.order):
            y = jax.random.normal(jax.random.key(g + 7 * h), (2, n))
            np.testing.assert_allclose(
                P.act_axis(g, P.act_axis(h, y)), P.act_axis(P.compose(g, h), y), atol=0
            )


def test_so2_action_composes():
    G = ej.groups.SO2()
    x = jax.random.normal(jax.random.key(0), (3, 4, 2))
    a, b = 0.3, -1.1
    np.testing.assert_allclose(G.act(a, G.act(b, x)), G.act(G.compose(a, b), x), atol=1e-5)
    per_example = jnp.array([0.1, 0.2, 0.3])
    np.testing.assert_allclose(G.act(per_example, x)[1], G.act(0.2, x[1]), atol=1e-6)


# ---------------------------------------------------------------- bad input


def test_rot90_rejects_non_square_images():
    with pytest.raises(ValueError, match="square"):
        ej.groups.rot90().act(1, jnp.ones((1, 4, 5, 3)))
    with pytest.raises(ValueError, match="square"):
        ej.groups.dihedral().act(0, jnp.ones((1, 4, 5, 3)))
    ej.groups.hflip().act(1, jnp.ones((1, 4, 5, 3)))  # mirrors are fine


def test_image_groups_reject_wrong_rank():
    with pytest.raises(ValueError, match="rank"):
        ej.groups.rot90().act(1, jnp.ones((4, 4)))


def test_layout_is_validated():
    with pytest.raises(ValueError, match="layout"):
        ej.groups.rot90("HWC")


def test_permutation_rejects_ids_out_of_range():
    P = ej.groups.permutation(5, [(0, 1)])
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        P.act(1, jnp.array([0, 5]))
    with pytest.raises(TypeError, match="integer"):
        P.act(1, jnp.array([0.0]))
    with pytest.raises(ValueError, match="out of range"):
        P.act(2, jnp.array([0]))


@pytest.mark.parametrize(
    "n,cycles,match",
    [
        (5, [(0, 5)], "out of range"),
        (5, [(0, 1), (1, 2)], "disjoint"),
        (5, [], "at least one"),
        (5, [(1,)], "two"),
    ],
)
def test_permutation_rejects_bad_cycles(n, cycles, match):
    with pytest.raises(ValueError, match=match):
        ej.groups.permutation(n, cycles)


def test_permutation_group_rejects_non_closed_elements():
    with pytest.raises(ValueError, match="not closed"):
        ej.groups.permutation_group([(0, 1, 2), (1, 2, 0)])  # missing (2, 0, 1)
    assert ej.groups.permutation_group([(0, 1, 2), (1, 2, 0), (2, 0, 1)]).order == 3


def test_product_rejects_non_commuting_permutation_groups():
    with pytest.raises(ValueError, match="commute"):
        ej.groups.product(ej.groups.permutation(3, [(0, 1)]), ej.groups.permutation(3, [(1, 2)]))


def test_cayley_table_validation():
    with pytest.raises(ValueError, match="identity"):
        FiniteGroup(name="bad", table=((1, 0), (0, 1)))
    with pytest.raises(ValueError, match="Latin"):
        FiniteGroup(name="bad", table=((0, 1, 2), (1, 1, 0), (2, 0, 1)))


def test_act_axis_rejects_wrong_length():
    P = ej.groups.permutation(5, [(0, 1)])
    with pytest.raises(ValueError, match="axis"):
        P.act_axis(1, jnp.ones((2, 4)))


def test_every_group_class_and_constructor_is_reachable_from_equijax_groups():
    """``equijax.groups`` is the one place for every group: each public class and constructor
    defined in the engine's group modules is exported there (same object, in ``__all__``)."""
    import importlib
    import inspect
    import pkgutil

    engine = importlib.import_module(FiniteGroup.__module__.rpartition(".")[0])
    not_groups = {"AngleLaw"}  # the angle law SO2 and ImageRotation share, not a group
    found = set()
    for info in pkgutil.iter_modules(engine.__path__, engine.__name__ + "."):
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            defined_here = getattr(obj, "__module__", None) == module.__name__
            if defined_here and not name.startswith("_") and name not in not_groups:
                if inspect.isclass(obj) or inspect.isfunction(obj):
                    found.add(name)
                    assert getattr(ej.groups, name, None) is obj, name
    assert found <= set(ej.groups.__all__), found - set(ej.groups.__all__)
    assert {"SymmetricGroup", "ImageRotationGroup", "image_rotations", "ImageRotation"} <= found
    # the old access paths still work and give the same objects
    assert ej.SymmetricGroup is ej.groups.SymmetricGroup
    assert ej.rotations.ImageRotationGroup is ej.groups.ImageRotationGroup
    assert ej.rotations.image_rotations is ej.groups.image_rotations
    assert ej.rotations.ImageRotation is ej.groups.ImageRotation
