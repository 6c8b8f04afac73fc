"""Rotations of images by any angle, the learned canonicalizer, and the experiment (issue 14.3)."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import equijax as ej
from equijax.rotations import (
    ImageRotation,
    RotationCanonicalizer,
    canonicalize,
    disk_mask,
    image_rotations,
    prior_loss,
    rotate_images,
)


def _blobs(size=28):
    """Smooth test images (sums of Gaussians) inside the disk: interpolation is accurate."""
    i = jnp.arange(size, dtype=jnp.float32) - (size - 1) / 2

    def blob(cx, cy, s):
        return jnp.exp(-((i[:, None] - cy) ** 2 + (i[None, :] - cx) ** 2) / s)

    a = blob(4, -3, 20) + 0.5 * blob(-5, 2, 8)
    b = blob(-2, 6, 15) + blob(3, 3, 6)
    return jnp.stack([jnp.stack([a, b], -1), jnp.stack([b, a], -1)])  # (2, size, size, 2)


def test_quarter_turns_are_bitwise_rot90(keys):
    x = jax.random.normal(keys(), (3, 9, 9, 2))
    m = disk_mask(9)
    for k in range(-3, 9):
        y = rotate_images(x, k * jnp.pi / 2)
        np.testing.assert_array_equal(y, m * jnp.rot90(x, k % 4, axes=(1, 2)))
    # jitted, per-example angles, traced
    ks = jnp.array([0, 1, 3])
    y = jax.jit(rotate_images)(x, ks * (jnp.pi / 2))
    for b in range(3):
        np.testing.assert_array_equal(y[b], m * jnp.rot90(x[b], int(ks[b]), axes=(0, 1)))


def test_other_angles_commute_with_rot90_and_compose(keys):
    x = jax.random.normal(keys(), (2, 11, 11, 1))
    m = disk_mask(11)
    for th in (0.3, 1.0, -2.2, 3 * math.pi / 4):
        a = rotate_images(x, th + jnp.pi / 2)
        b = m * jnp.rot90(rotate_images(x, th), 1, axes=(1, 2))
        np.testing.assert_allclose(a, b, atol=1e-5)
    s = _blobs()
    two = rotate_images(rotate_images(s, 0.4), 0.5)
    one = rotate_images(s, 0.9)
    assert float(jnp.abs(two - one).max()) < 0.1 * float(s.max())  # interpolation error only
    assert float(jnp.abs(one - s * disk_mask(28)).max()) > 0.3  # and it did rotate
    # counter-clockwise as displayed, like rot90: a point right of the centre moves up
    dot = jnp.zeros((1, 9, 9, 1)).at[0, 4, 7, 0].set(1.0)
    assert float(rotate_images(dot, jnp.pi / 2)[0, 1, 4, 0]) == 1.0
    assert float(rotate_images(dot, jnp.pi / 4)[0, :4, 4:, 0].sum()) > 0.9


def test_rotation_gradients_vmap_and_errors(keys):
    s = _blobs()
    g_angle = jax.grad(lambda t: jnp.sum(rotate_images(s, t) * s))(0.3)
    assert np.isfinite(float(g_angle)) and abs(float(g_angle)) > 1e-3
    g_img = jax.grad(lambda z: jnp.sum(rotate_images(z, 0.7) ** 2))(s)
    assert np.isfinite(np.asarray(g_img)).all() and float(jnp.abs(g_img).max()) > 0
    per = jax.vmap(lambda a: rotate_images(s, a))(jnp.array([0.0, 1.0]))
    assert per.shape == (2, *s.shape)
    with pytest.raises(ValueError, match="square"):
        rotate_images(jnp.zeros((1, 4, 5, 1)), 0.1)
    with pytest.raises(ValueError, match="NHWC"):
        rotate_images(jnp.zeros((4, 4, 1)), 0.1)


def test_image_rotation_groups_work_with_the_methods(keys):
    G = image_rotations(8)
    assert G.order == 8 and G.compose(5, 6) == 3 and G.inverse(3) == 5
    w = jax.random.normal(keys(), (9 * 9, 4))
    fn = lambda im: im.reshape(im.shape[0], -1) @ w
    x = jax.random.normal(keys(), (2, 9, 9, 1))
    y = ej.equitune(fn, G, x)
    # exactly invariant to quarter turns (elements 2, 4, 6 are exact pixel permutations)
    np.testing.assert_allclose(ej.equitune(fn, G, G.act(2, x)), y, atol=1e-4)
    # C4 via image_rotations(4) equals equitune over the rot90 group on masked images
    xm = x * disk_mask(9)
    np.testing.assert_allclose(
        ej.equitune(fn, image_rotations(4), xm), ej.equitune(fn, ej.groups.rot90(), xm), atol=1e-5
    )
    so2 = ImageRotation()
    np.testing.assert_array_equal(so2.act(jnp.pi, x), rotate_images(x, jnp.pi))
    assert float(so2.compose(0.5, so2.inverse(0.5))) == 0.0


@pytest.mark.slow  # > 20 s on 2 cores; CI runs the slow suite too
def test_canonicalizer_is_equivariant_to_interpolation_error():
    s = _blobs()
    net = RotationCanonicalizer(orientations=4)
    params = net.init(jax.random.key(0), s)
    h = jax.jit(lambda z: net.apply(params, z))
    h0 = h(s)
    wrap = lambda a: jnp.abs(jnp.angle(jnp.exp(1j * a)))
    for k in range(4):  # quarter turns: exact up to round-off
        assert float(wrap(h(rotate_images(s, k * jnp.pi / 2)) - h0 - k * jnp.pi / 2).max()) < 1e-4
    errs = [float(wrap(h(rotate_images(s, t)) - h0 - t).max()) for t in (0.3, 0.8, 2.0, -1.2)]
    assert max(errs) < 0.05, errs  # < 3 degrees: interpolation error
    # canonicalization is invariant up to interpolation error
    c0 = canonicalize(s, h0)
    c1 = canonicalize(rotate_images(s, 1.1), h(rotate_images(s, 1.1)))
    assert float(jnp.abs(c1 - c0).max()) < 0.1 * float(s.max())
    assert float(prior_loss(jnp.zeros(3))) == 0.0
    # gradients reach the canonicalizer's parameters through the rotation
    g = jax.grad(lambda p: jnp.sum(canonicalize(s, net.apply(p, s)) * s))(params)
    assert all(np.isfinite(np.asarray(a)).all() for a in jax.tree.leaves(g))
    assert max(float(jnp.abs(a).max()) for a in jax.tree.leaves(g)) > 0


def test_canonical_lambda_equitune_on_images_is_invariant(keys):
    s = _blobs()
    net = RotationCanonicalizer(widths=(4, 4), orientations=4)
    params = net.init(jax.random.key(1), s)
    w = jax.random.normal(keys(), (28 * 28 * 2, 3))
    fn = lambda im: im.reshape(im.shape[0], -1) @ w
    f = lambda z: ej.canonical_lambda_equitune(
        fn, z, canonicalizer=lambda q: net.apply(params, q),
        thetas=[0.0, math.pi / 2, math.pi, 3 * math.pi / 2], group=ImageRotation(),
    )  # fmt: skip
    y = f(s)
    np.testing.assert_allclose(f(rotate_images(s, jnp.pi / 2)), y, rtol=1e-3, atol=1e-3)
    rel = float(jnp.abs(f(rotate_images(s, 0.6)) - y).max() / jnp.abs(y).max())
    assert rel < 0.05, rel
    plain = float(jnp.abs(fn(rotate_images(s, 0.6)) - fn(s)).max() / jnp.abs(fn(s)).max())
    assert plain > 5 * rel


@pytest.mark.slow  # end-to-end: tens of seconds on 2 cores
def test_experiment_main_runs_end_to_end(tmp_path, shared_data, monkeypatch):
    from experiments import continuous_rotations as cr

    monkeypatch.setenv("EQUIJAX_SHARED_DATA", str(shared_data))
    res = cr.main(["--tiny", "--methods", "pretrained,canonicalization", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "results.json").read_text())
    assert set(saved["summary"]) >= {"pretrained", "canonicalization"}
    assert 0.0 <= saved["summary"]["pretrained"]["accuracy_mean"] <= 1.0
    assert saved["summary"]["canonicalization"]["ms_per_image"] > 0
    assert saved["summary"]["canonicalizer_equivariance_deg"] >= 0.0
    assert (tmp_path / "rotations.png").stat().st_size > 1000
    assert res["cpu_s"] > 0 and "canonicalization" in (tmp_path / "results.md").read_text()
    with pytest.raises(ValueError, match="subset"):
        cr.Config(methods=("bogus",))


def test_experiment_presets_overrides_and_old_method_spelling(capsys):
    from experiments import continuous_rotations as cr

    assert cr.parse_args([]) == cr.Config.paper()
    assert cr.parse_args(["--quick", "--seeds", "2"]) == cr.Config.quick(seeds=2)
    assert cr.parse_args(["--tiny"]) == cr.parse_args(["--preset", "tiny"]) == cr.Config.tiny()
    with pytest.warns(FutureWarning, match="--methods plain is now spelled pretrained"):
        cfg = cr.parse_args(["--tiny", "--methods", "plain,canonicalization"])
    assert cfg.methods == ("pretrained", "canonicalization")
    assert set(cr.LABELS) == set(cr.METHODS)
    for bad in (["--tiny", "--quick"], ["--methods", "bogus"]):
        with pytest.raises(SystemExit):
            cr.parse_args(bad)
        assert len(capsys.readouterr().err.strip().splitlines()) == 1
    with pytest.raises(SystemExit):
        cr.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "[paper: 3; quick: 3; tiny: 1]" in text and text.count("[paper: 10; quick: 4;") == 1


@pytest.mark.slow
def test_experiment_all_methods_tiny(tmp_path):
    from experiments import continuous_rotations as cr

    res = cr.main(["--tiny", "--out", str(tmp_path)])
    assert set(cr.METHODS) <= set(res["summary"])
