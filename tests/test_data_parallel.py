"""Data-parallel training (equijax.training.parallel) on the 8 host CPU devices of conftest.py:
the helpers, and SCAN / CLIP-finetune steps on a mesh equal to one device (to round-off)."""

from __future__ import annotations

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from equijax.training import (
    batch_sharding,
    data_mesh,
    data_parallel_jit,
    gather,
    host_rows,
    initialize_distributed,
    orbit_spec_sharding,
    put_global_batch,
    replicate,
    replicated_sharding,
    shard_batch,
)


def allclose_trees(a, b, rtol=1e-4, atol=1e-5):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert jax.tree.structure(a) == jax.tree.structure(b) and la
    for x, y in zip(la, lb, strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


# ---- helpers -------------------------------------------------------------------------------


def test_data_mesh_shapes_and_argument_errors():
    mesh = data_mesh()
    assert mesh.axis_names == ("group", "batch") and dict(mesh.shape) == {"group": 1, "batch": 8}
    assert dict(data_mesh(8, group_devices=2).shape) == {"group": 2, "batch": 4}
    assert list(data_mesh(4).devices.ravel()) == jax.devices()[:4]
    assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)
    with pytest.raises(ValueError, match="group_devices=3"):
        data_mesh(8, group_devices=3)
    with pytest.raises(ValueError, match="devices=9"):
        data_mesh(9)
    for bad in (True, 2.0, 2.5):  # like orbit_sharding: no bool, no float
        with pytest.raises(ValueError, match="group_devices="):
            data_mesh(8, group_devices=bad)
    assert dict(data_mesh(8, group_devices=np.int64(2)).shape) == {"group": 2, "batch": 4}
    with pytest.raises(ValueError, match="devices=0"):
        data_mesh(0)
    assert tuple(orbit_spec_sharding(mesh).spec) == ("group", "batch")
    assert replicated_sharding(mesh).is_fully_replicated


def test_batches_are_split_over_the_batch_axis_and_replicated_over_group():
    mesh = data_mesh(8, group_devices=2)
    x = np.arange(24.0).reshape(8, 3)
    xs, ys = put_global_batch((x, np.arange(8)), mesh)
    assert xs.sharding == batch_sharding(mesh) and xs.shape == (8, 3)
    assert len(xs.sharding.device_set) == 8
    # 4 batch devices: 2 rows each; the two group devices of a batch column hold the same rows.
    for s in xs.addressable_shards:
        assert s.data.shape == (2, 3)
        np.testing.assert_array_equal(np.asarray(s.data), x[s.index[0]])
    np.testing.assert_array_equal(gather(xs), x)
    np.testing.assert_array_equal(gather(ys), np.arange(8))
    assert host_rows(8, mesh) == slice(0, 8)  # one process holds every row
    np.testing.assert_array_equal(gather(shard_batch({"x": x}, mesh)["x"]), x)
    with pytest.raises(ValueError, match="divisible by the 4 devices"):
        put_global_batch(np.zeros((6, 2)), mesh)
    with pytest.raises(ValueError, match="same leading"):
        put_global_batch((np.zeros((8, 2)), np.zeros(4)), mesh)


def test_data_parallel_jit_replicates_outputs_and_matches_one_device():
    mesh = data_mesh()
    initialize_distributed(False)  # one process: a no-op

    def step(w, x, y):
        loss, g = jax.value_and_grad(lambda w: jnp.mean((x @ w - y) ** 2))(w)
        return w - 0.1 * g, loss

    rng = np.random.default_rng(0)
    w = rng.normal(size=(5, 2)).astype(np.float32)
    x, y = rng.normal(size=(16, 5)).astype(np.float32), rng.normal(size=(16, 2)).astype(np.float32)
    w1, l1 = jax.jit(step)(w, x, y)
    w8, l8 = data_parallel_jit(step, mesh)(replicate(w, mesh), *put_global_batch((x, y), mesh))
    assert w8.sharding.is_fully_replicated and l8.sharding.is_fully_replicated
    assert len(w8.sharding.device_set) == 8
    allclose_trees((w1, l1), (w8, l8))


# ---- SCAN ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scan_split():
    from experiments import scan as scan_exp

    return scan_exp.load_split("add_jump", 0.1)


def _batches(data, batch, n, buckets=None):
    from equijax.data import scan
    from experiments import scan as scan_exp

    it = scan_exp.bucketed_batches(*data.train, batch, np.random.default_rng(0),
                                   buckets=buckets or (scan.MAX_OUTPUT_LEN,))  # fmt: skip
    return [next(it) for _ in range(n)]


@pytest.mark.slow  # end-to-end: tens of seconds on 2 cores
def test_scan_pretraining_steps_on_8_devices_equal_one_device(scan_split):
    from equijax.models import seq2seq as s2s
    from experiments import scan as scan_exp

    model = s2s.Seq2Seq(len(scan_exp.scan.input_vocab()), len(scan_exp.scan.output_vocab()),
                        cell="rnn", hidden=8)  # fmt: skip
    mesh = scan_exp.data_parallel_mesh(8)
    params0 = s2s.init_params(model, jax.random.key(0))
    batches = _batches(scan_split, 8, 2, buckets=(8,))
    out = {}
    for m in (None, mesh):
        opt, step = scan_exp._pretrain_step(model, 3, 3e-3, 0.5, m)
        (params, opt_state), _ = scan_exp._put(m, (params0, opt.init(params0)))
        key, losses = jax.random.key(1), []
        for src, tgt in batches:
            key, sub = jax.random.split(key)
            sub, (src, tgt) = scan_exp._put(m, sub, (src, tgt))
            if m is not None:
                assert len(src.sharding.device_set) == 8 and not src.sharding.is_fully_replicated
            params, opt_state, loss = step(params, opt_state, src, tgt, sub)
            losses.append(loss)
        if m is not None:
            assert all(x.sharding.is_fully_replicated for x in jax.tree.leaves(params))
        out[m is None] = (params, losses)
    allclose_trees(out[True], out[False])
    assert not np.allclose(jax.tree.leaves(out[True][0])[0], jax.tree.leaves(params0)[0])


def _scan_gru_and_lambda():
    """The SCAN experiment module, a small GRU seq2seq with parameters, and a λ network."""
    from equijax.models import seq2seq as s2s
    from equijax.nn import LambdaNet
    from experiments import scan as scan_exp

    model = s2s.Seq2Seq(len(scan_exp.scan.input_vocab()), len(scan_exp.scan.output_vocab()),
                        cell="gru", hidden=16)  # fmt: skip
    params = s2s.init_params(model, jax.random.key(0))
    lam_net = LambdaNet()
    lam = lam_net.init(jax.random.key(5), jnp.ones((1, 16)))
    return scan_exp, model, params, lam_net, lam


@pytest.mark.slow
def test_scan_finetuning_steps_on_8_devices_equal_one_device(scan_split):
    import optax

    scan_exp, model, params, lam_net, lam = _scan_gru_and_lambda()
    opt = optax.sgd(0.5)
    batches = _batches(scan_split, 16, 2, buckets=(8,))
    out = []
    for m in (None, scan_exp.data_parallel_mesh(8)):
        step = scan_exp.make_ft_step(model, scan_split, "lambda_equitune", lam_net, opt, True, m)
        trainable = {"model": params, "lambda": lam}
        (trainable, opt_state), _ = scan_exp._put(m, (trainable, opt.init(trainable)))
        key, losses = jax.random.key(3), []
        for src, tgt in batches:
            key, sub = jax.random.split(key)
            sub, (src, tgt) = scan_exp._put(m, sub, (src, tgt))
            trainable, opt_state, loss = step(trainable, {}, opt_state, src, tgt, sub)
            losses.append(loss)
        out.append((trainable, losses))
    allclose_trees(out[0], out[1])
    assert not np.allclose(jax.tree.leaves(out[0][0])[-1], jax.tree.leaves(params)[-1])


@pytest.mark.slow
def test_scan_run_ft_and_decoding_on_8_devices_equal_one_device(scan_split):
    scan_exp, model, params, lam_net, lam = _scan_gru_and_lambda()
    mesh = scan_exp.data_parallel_mesh(8)
    runs = [
        scan_exp.run_ft(model, scan_split, "lambda_equitune", params, lam_net, lam, steps=2,
                        batch=16, lr=1e-3, seed=0, train_model=True, train_lambda=True, desc="t",
                        mesh=m)
        for m in (None, mesh)
    ]  # fmt: skip
    # Adam divides by sqrt(v): for the few parameters whose gradients are ~0, round-off in the
    # gradient can flip an update's sign (Adam's step is ~lr in size). Nearly all agree tightly.
    a, b = (np.concatenate([np.ravel(x) for x in jax.tree.leaves(r)]) for r in runs)
    assert np.mean(np.abs(a - b) <= 1e-5 + 1e-4 * np.abs(b)) > 0.995
    np.testing.assert_allclose(a, b, atol=3e-3)
    # Evaluation splits the decoded chunks over the devices: same tokens.
    dec = scan_exp.make_decoder(model, scan_split, dict(method="equitune"), lam_net)
    src = scan_split.test[0][:20]
    p1 = scan_exp.predict(dec, runs[0][0], lam, src, 8)
    p8 = scan_exp.predict(dec, runs[1][0], lam, src, 8, mesh)
    np.testing.assert_array_equal(p1, p8)


def test_scan_cli_flags():
    from experiments import scan as scan_exp

    s = scan_exp.parse_args(["--quick", "--devices", "8"])
    assert s.devices == 8 and s.jobs == 1 and not s.distributed
    assert scan_exp.parse_args(["--quick"]).devices is None
    assert scan_exp.data_parallel_mesh(None) is None
    with pytest.raises(SystemExit):
        scan_exp.parse_args(["--devices", "0"])


# ---- CLIP finetuning -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("tensorflow_datasets")
    from equijax.models.testing import write_tiny_random_clip

    return write_tiny_random_clip(tmp_path_factory.mktemp("tiny_clip"))


@pytest.mark.slow
def test_clip_finetune_on_8_devices_equals_one_device(tiny_clip_dir, tmp_path):
    from experiments import clip_finetune

    common = ["--model", str(tiny_clip_dir), "--mock-data", "--batch-size", "8",
              "--train-limit", "16", "--eval-limit", "12", "--eval-every", "2",
              "--stage1-steps", "2", "--stage2-steps", "2", "--lambda-trainable",
              "--lr-model", "1e-3"]  # fmt: skip
    res, lam = {}, {}
    for name, extra in [("one", []), ("dp", ["--devices", "8"]),
                        ("dp_orbit", ["--devices", "8", "--group-devices", "2"])]:  # fmt: skip
        out = tmp_path / name
        res[name] = clip_finetune.main([*common, *extra, "--out", str(out)])
        lam[name] = flax.serialization.msgpack_restore(
            (out / "lambda_rot90.msgpack").read_bytes()
        )
    for name in ("dp", "dp_orbit"):
        allclose_trees(lam["one"], lam[name])
        np.testing.assert_allclose(np.asarray(res[name]["loss"]),
                                   np.asarray(res["one"]["loss"]), rtol=1e-4)  # fmt: skip
        assert res[name]["curve"] == res["one"]["curve"]
    with pytest.raises(SystemExit) as e:  # batch 8 on a 3-device batch axis: refused, exit 2
        clip_finetune.main([*common, "--devices", "3", "--out", str(tmp_path / "bad")])
    assert e.value.code == 2
