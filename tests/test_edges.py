"""Edges of the newer surfaces never fail silently (issue 22): frames, element indices, sampled
elements, orbit sharding arguments and run files. (NNX shells: tests/test_nnx_edges.py.)"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import equijax as ej
from equijax.training import CheckpointError, resume_or_start

# --------------------------------------------------------------------------------------------
# Frames
# --------------------------------------------------------------------------------------------


def test_sort_frame_and_average_tied_points_on_an_empty_batch():
    spec = ej.frames.sort_frame(3)
    x = jnp.zeros((0, 3, 2))
    assert ej.frame_average(lambda p: p.sum((1, 2)), x, frame=spec).shape == (0,)
    assert ej.frame_average(lambda p: p, x, frame=spec, out_action=spec.act).shape == (0, 3, 2)
    assert ej.frames.average_tied_points(x, jnp.zeros((0, 3))).shape == (0, 3)
    image = ej.frames.image_frame(ej.groups.rot90())
    assert ej.frame_average(lambda im: im.sum((1, 2, 3)), jnp.zeros((0, 4, 4, 1)),
                            frame=image).shape == (0,)  # fmt: skip


def test_sort_frame_canonical_array_ignores_the_sign_of_zero_and_nan_payloads():
    spec = ej.frames.sort_frame(3)
    a = jnp.array([[[0.0, 1.0], [-0.0, 1.0], [2.0, 0.0]]])
    b = a[:, jnp.array([1, 0, 2])]  # the same set, the two zeros swapped
    canon = lambda x: spec.act(spec.frame_fn(x).elements[:, 0], x)
    ca, cb = np.asarray(canon(a)), np.asarray(canon(b))
    assert ca.tobytes() == cb.tobytes()  # bitwise, sign of zero included
    assert not np.signbit(ca).any()
    fn = lambda p: 1.0 / p[:, 0, 0]
    assert (
        ej.frame_average(fn, a, frame=spec).tolist() == ej.frame_average(fn, b, frame=spec).tolist()
    )
    # NaNs with different sign bits tie in the sort, and are made one NaN
    n1 = jnp.array([[[jnp.nan, 1.0], [-jnp.nan, 1.0], [0.0, 0.0]]])
    n2 = n1[:, jnp.array([1, 0, 2])]
    assert np.asarray(canon(n1)).tobytes() == np.asarray(canon(n2)).tobytes()


def test_average_tied_points_ties_nan_with_nan_instead_of_dividing_by_zero():
    pts = jnp.array([[[jnp.nan], [jnp.nan], [1.0], [-0.0], [0.0]]])
    out = ej.frames.average_tied_points(pts, jnp.array([[1.0, 3.0, 5.0, 6.0, 8.0]]))
    assert out.tolist() == [[2.0, 2.0, 5.0, 7.0, 7.0]]


def test_image_frame_keeps_one_slot_for_a_nan_score():
    spec = ej.frames.image_frame(ej.groups.rot90(), max_size=2)
    x = jnp.full((1, 4, 4, 1), jnp.nan)
    _, fr = ej.frame_average(lambda im: im.sum((1, 2, 3)), x, frame=spec, return_frame=True)
    assert float(fr.weights[0, 0]) == 1.0  # never an all-zero weight row (0 / 0)


# --------------------------------------------------------------------------------------------
# Element indices: every finite group refuses float / bool indices in act, compose and inverse
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("g", [1.5, True, np.float32(2.0), "float array", "bool array"])
def test_image_rotations_refuse_non_integer_indices_like_compose_and_inverse(g):
    G = ej.rotations.image_rotations(8)
    g = {"float array": jnp.array(1.0), "bool array": jnp.array(True)}.get(g, g) if isinstance(
        g, str) else g  # fmt: skip
    x = jnp.ones((1, 5, 5, 1))
    for op in (lambda: G.act(g, x), lambda: G.compose(g, 1), lambda: G.inverse(g),
               lambda: G.angle(g)):  # fmt: skip
        with pytest.raises(TypeError, match="group element index"):
            op()
    with pytest.raises(ValueError, match="out of range"):
        G.act(8, x)
    # integer arrays (traced or not) are taken mod n, as for every group
    assert jnp.array_equal(G.act(jnp.array(9), x), G.act(1, x))
    assert jax.vmap(lambda i: G.act(i, x))(jnp.arange(3)).shape == (3, 1, 5, 5, 1)


def test_rotate_images_refuses_non_finite_concrete_angles():
    with pytest.raises(ValueError, match="finite"):
        ej.rotations.rotate_images(jnp.ones((2, 5, 5, 1)), jnp.array([0.3, jnp.nan]))
    assert ej.rotations.rotate_images(jnp.ones((0, 5, 5, 1)), 0.3).shape == (0, 5, 5, 1)


# --------------------------------------------------------------------------------------------
# sampled_equitune(elements=...)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["list", "tuple", "numpy"])
def test_sampled_equitune_accepts_python_and_numpy_elements(kind):
    G = ej.groups.rot90()
    x = jax.random.normal(jax.random.key(0), (2, 2, 2, 1))
    fn = lambda im: im.reshape(im.shape[0], -1)[:, :3]
    given = {"list": [0, 2, 3], "tuple": (0, 2, 3), "numpy": np.array([0, 2, 3])}[kind]
    got = ej.sampled_equitune(fn, G, x, elements=given)
    want = ej.sampled_equitune(fn, G, x, elements=jnp.array([0, 2, 3]))
    np.testing.assert_array_equal(got, want)
    exact = ej.sampled_equitune(fn, G, x, elements=list(range(G.order)))
    np.testing.assert_allclose(exact, ej.equitune(fn, G, x), atol=1e-6)


def test_sampled_equitune_refuses_elements_that_are_not_indices():
    G = ej.groups.dihedral()
    x = jnp.ones((2, 4, 4, 1))
    fn = lambda im: im.reshape(im.shape[0], -1)
    with pytest.raises(TypeError, match=r"jnp.arange\(G.order\)"):
        ej.sampled_equitune(fn, G, x, elements=G.elements)  # (k, f) pairs, not indices
    with pytest.raises(TypeError, match="integer"):
        ej.sampled_equitune(fn, G, x, elements=[0.5, 1.0])
    with pytest.raises(ValueError, match="at least one element"):
        ej.sampled_equitune(fn, G, x, elements=[])
    S = ej.SymmetricGroup(3)
    pts = jnp.arange(12.0).reshape(2, 3, 2)
    flat = lambda p: p.reshape(p.shape[0], -1)
    got = ej.sampled_equitune(flat, S, pts, elements=[[0, 1, 2], [1, 0, 2]])
    np.testing.assert_allclose(
        got, ej.sampled_equitune(flat, S, pts, elements=S.elements()[jnp.array([0, 2])])
    )


# --------------------------------------------------------------------------------------------
# orbit_sharding(group_devices=...)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [2.5, True, 2.0, "2"])
def test_orbit_sharding_refuses_non_int_group_devices(bad):
    with pytest.raises(ValueError, match="group_devices"):
        ej.orbit_sharding(group_devices=bad)
    assert dict(ej.orbit_sharding(group_devices=np.int64(1)).mesh.shape)["group"] == 1


# --------------------------------------------------------------------------------------------
# Run files: a history value with no JSON form fails at its own save, losing nothing
# --------------------------------------------------------------------------------------------


def test_run_save_converts_numpy_history_and_refuses_what_has_no_json_form(tmp_path):
    d = tmp_path / "run"
    with resume_or_start(d, {"lr": 0.1}, {"w": jnp.zeros(2)}) as run:
        run.save(1, {"w": jnp.ones(2)}, [{"loss": np.float32(0.5), "n": np.int64(3)}])
        with pytest.raises(CheckpointError, match=r"step 2 .*history\[1\]\['loss'\]"):
            run.save(2, {"w": 2 * jnp.ones(2)}, [*run.history, {"loss": object()}])
        assert run.step == 1  # nothing of the failed save was recorded
        run.save(2, {"w": 2 * jnp.ones(2)}, [*run.history, {"loss": jnp.float32(0.25)}])
    with resume_or_start(d, {"lr": 0.1}, {"w": jnp.zeros(2)}) as run:
        assert run.step == 2
        assert run.history == [{"loss": 0.5, "n": 3}, {"loss": 0.25}]
        json.dumps(run.history)
        np.testing.assert_array_equal(run.state["w"], [2.0, 2.0])


def test_run_close_reports_a_failed_pending_save_as_checkpoint_error(tmp_path):
    run = resume_or_start(tmp_path / "run", {"lr": 0.1}, {"w": jnp.zeros(2)})
    run.save(1, {"w": jnp.ones(2)})
    manager = run._manager
    manager.wait_until_finished()
    closed = []
    real_close = manager.close

    calls = []

    def failing_wait():  # the pending save failed in orbax's background thread
        calls.append(1)
        if len(calls) == 1:
            raise TypeError("Object of type float32 is not JSON serializable")

    manager.wait_until_finished = failing_wait
    manager.close = lambda: closed.append(True) or real_close()
    with pytest.raises(CheckpointError, match=r"step 1 .* was not written"):
        run.close()
    assert closed == [True] and run._manager is None  # released all the same
    run.close()  # a second close is a no-op


def test_frame_average_refuses_frames_without_a_positive_finite_weight():
    act = ej.frames.per_example_act(ej.groups.rot90())
    x = jnp.ones((2, 2, 2, 1))
    fn = lambda im: im.reshape(im.shape[0], -1)
    for w in ([[1.0], [0.0]], [[1.0], [jnp.nan]], [[1.0], [-1.0]]):
        frame_fn = lambda x, w=w: ej.frames.Frame(jnp.zeros((2, 1), jnp.int32), jnp.array(w))
        with pytest.raises(ValueError, match="frame weights"):
            ej.frame_average(fn, x, frame_fn=frame_fn, act=act)


def test_average_tied_points_checks_y_and_image_rotations_take_numpy_ints():
    with pytest.raises(ValueError, match="one row per point"):
        ej.frames.average_tied_points(jnp.ones((2, 3, 1)), jnp.ones((2, 4)))
    assert ej.rotations.image_rotations(np.int64(4)).order == 4
    with pytest.raises(ValueError, match="positive int"):
        ej.rotations.image_rotations(4.0)
