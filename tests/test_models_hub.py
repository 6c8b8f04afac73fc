"""Tests of checkpoint plumbing: resolving, reading (no pickle), assigning, orbax round trips."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from equijax.models import _hub, restore_params, save_params

safetensors_numpy = pytest.importorskip("safetensors.numpy")


def _write_config(path, **config):
    (path / "config.json").write_text(json.dumps(config))


def test_resolve_pretrained_returns_existing_local_directory(tmp_path):
    assert _hub.resolve_pretrained(tmp_path) == tmp_path
    assert _hub.resolve_pretrained(str(tmp_path)) == tmp_path


def test_resolve_pretrained_offline_unknown_id_mentions_local_directories(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    with pytest.raises(OSError, match="local directory"):
        _hub.resolve_pretrained("equijax-test/definitely-not-cached-model")


def test_resolve_pretrained_uses_hub_cache_when_offline(tmp_path, monkeypatch):
    # populate a hub cache by hand (the layout huggingface_hub writes) and resolve offline
    cache = tmp_path / "cache"
    repo = cache / "models--someone--tiny"
    commit = "0" * 40
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    _write_config(snap, n_layer=1)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache), raising=False)
    resolved = _hub.resolve_pretrained("someone/tiny")
    assert _hub.read_config(resolved) == {"n_layer": 1}


def test_resolve_pretrained_rejects_files_and_non_paths(tmp_path):
    f = tmp_path / "model.safetensors"
    f.write_bytes(b"")
    with pytest.raises(ValueError, match="directory"):
        _hub.resolve_pretrained(f)
    with pytest.raises(TypeError, match="name_or_path"):
        _hub.resolve_pretrained(42)


def test_read_state_dict_reads_safetensors_without_torch(tmp_path):
    arrays = {"a.weight": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(4, np.int64)}
    safetensors_numpy.save_file(arrays, str(tmp_path / "model.safetensors"))
    out = _hub.read_state_dict(tmp_path)
    assert sorted(out) == sorted(arrays)
    for k, v in arrays.items():
        np.testing.assert_array_equal(out[k], v)
        assert out[k].dtype == v.dtype


def test_read_state_dict_reads_bfloat16_and_assign_casts_it(tmp_path):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    w = torch.tensor([[1.5, -2.0], [0.25, 3.0]], dtype=torch.bfloat16)
    save_file({"w": w}, str(tmp_path / "model.safetensors"))
    out = _hub.read_state_dict(tmp_path)
    assert out["w"].dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(out["w"].astype(np.float32), w.float().numpy())
    params = _hub.assign({"w": jax.ShapeDtypeStruct((2, 2), jnp.float32)}, out)
    assert params["w"].dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(params["w"]), w.float().numpy())


def test_read_state_dict_merges_sharded_index(tmp_path):
    safetensors_numpy.save_file({"x": np.ones(2, np.float32)}, str(tmp_path / "s-1.safetensors"))
    safetensors_numpy.save_file({"y": np.zeros(3, np.float32)}, str(tmp_path / "s-2.safetensors"))
    index = {"metadata": {}, "weight_map": {"x": "s-1.safetensors", "y": "s-2.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    out = _hub.read_state_dict(tmp_path)
    assert set(out) == {"x", "y"} and out["y"].shape == (3,)


def test_read_state_dict_missing_shard_raises(tmp_path):
    index = {"weight_map": {"x": "gone.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(FileNotFoundError, match="gone"):
        _hub.read_state_dict(tmp_path)


def test_read_state_dict_reads_flax_msgpack_with_dotted_keys(tmp_path):
    from flax.serialization import msgpack_serialize

    tree = {"params": {"dense": {"kernel": np.ones((2, 2), np.float32)}}}
    (tmp_path / "flax_model.msgpack").write_bytes(msgpack_serialize(tree))
    out = _hub.read_state_dict(tmp_path)
    assert list(out) == ["params.dense.kernel"]


def test_read_state_dict_prefers_first_listed_file(tmp_path):
    from flax.serialization import msgpack_serialize

    safetensors_numpy.save_file({"st": np.ones(1, np.float32)}, str(tmp_path / "model.safetensors"))
    (tmp_path / "flax_model.msgpack").write_bytes(msgpack_serialize({"mp": np.ones(1)}))
    assert list(_hub.read_state_dict(tmp_path)) == ["st"]
    assert list(_hub.read_state_dict(tmp_path, filenames=["flax_model.msgpack"])) == ["mp"]


def test_read_state_dict_never_unpickles_bin_files(tmp_path):
    (tmp_path / "pytorch_model.bin").write_bytes(b"not a pickle that should ever be opened")
    with pytest.raises(FileNotFoundError) as info:
        _hub.read_state_dict(tmp_path)
    msg = str(info.value)
    assert str(tmp_path) in msg and "model.safetensors" in msg and "pytorch_model.bin" in msg
    assert "safe_serialization" not in msg  # gone in transformers 5


def test_read_state_dict_rejects_unsupported_file_type(tmp_path):
    (tmp_path / "weights.npz").write_bytes(b"")
    with pytest.raises(ValueError, match="unsupported"):
        _hub.read_state_dict(tmp_path, filenames=["weights.npz"])


def test_read_config_missing_file_names_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        _hub.read_config(tmp_path)


def test_assign_fills_nested_template_and_casts_dtype():
    template = {"a": {"w": jax.ShapeDtypeStruct((2, 3), jnp.float32)}, "b": np.zeros(2, np.int32)}
    arrays = {("a", "w"): np.ones((2, 3), np.float64), "b": np.array([1, 2], np.int32)}
    out = _hub.assign(template, arrays)
    assert out["a"]["w"].dtype == jnp.float32 and out["b"].dtype == jnp.int32
    out16 = _hub.assign(template, arrays, dtype=jnp.bfloat16)
    assert out16["a"]["w"].dtype == jnp.bfloat16
    assert out16["b"].dtype == jnp.int32  # integer leaves are never cast


def test_assign_lists_all_missing_unexpected_and_misshaped_keys_sorted():
    template = {"z": np.zeros(1), "m": {"a": np.zeros((2, 2)), "b": np.zeros(3)}, "k": np.zeros(1)}
    arrays = {"m.a": np.zeros((2, 3)), "k": np.zeros(2), "extra.two": 1, "extra.one": 1}
    with pytest.raises(_hub.CheckpointMismatchError) as info:
        _hub.assign(template, arrays, context="ckpt-dir")
    err = info.value
    assert isinstance(err, ValueError)
    assert err.missing == ["m.b", "z"]
    assert err.unexpected == ["extra.one", "extra.two"]
    assert err.mismatched == [("k", (1,), (2,)), ("m.a", (2, 2), (2, 3))]
    text = str(err)
    for word in ("missing", "unexpected", "mis-shaped", "ckpt-dir", "m.b", "extra.one"):
        assert word in text


def test_orbax_round_trip_with_and_without_template(tmp_path):
    params = {"dense": {"kernel": jnp.arange(6.0).reshape(2, 3)}, "step": jnp.array(3)}
    save_params(tmp_path / "ckpt", params)
    save_params(tmp_path / "ckpt", params)  # overwriting is allowed
    plain = restore_params(tmp_path / "ckpt")
    np.testing.assert_array_equal(plain["dense"]["kernel"], params["dense"]["kernel"])
    shaped = restore_params(tmp_path / "ckpt", template=params)
    assert jax.tree_util.tree_structure(shaped) == jax.tree_util.tree_structure(params)
    assert int(shaped["step"]) == 3


def test_restore_params_missing_path_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="save_params"):
        restore_params(tmp_path / "nothing")


def test_save_params_refuses_directory_with_user_files(tmp_path):
    target = tmp_path / "results"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    (target / "sub").mkdir()
    with pytest.raises(FileExistsError, match="not an orbax checkpoint"):
        save_params(target, {"w": jnp.ones(2)})
    assert (target / "notes.txt").read_text() == "keep me" and (target / "sub").is_dir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="is a file"):
        save_params(tmp_path / "file", {"w": jnp.ones(2)})
    assert (tmp_path / "file").read_text() == "x"
    empty = tmp_path / "empty"
    empty.mkdir()
    save_params(empty, {"w": jnp.ones(2)})  # an empty directory is fine
    save_params(empty, {"w": jnp.zeros(2)})  # and so is replacing a checkpoint
    assert float(restore_params(empty)["w"].sum()) == 0.0


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("damaged", ["_METADATA", "array"])
def test_restore_params_names_the_path_of_a_truncated_file(tmp_path, damaged):
    ckpt = tmp_path / "ckpt"
    save_params(ckpt, {"w": jnp.arange(5.0), "b": {"c": jnp.ones((2, 3))}})
    victim = ckpt / "_METADATA"
    if damaged == "_METADATA":
        _truncate(victim)
    else:  # the merged OCDBT data files that hold the arrays
        data_files = sorted((ckpt / "d").iterdir())
        assert data_files
        for path in data_files:
            _truncate(path)
    with pytest.raises(ValueError) as info:
        restore_params(ckpt)
    msg = str(info.value)
    assert str(ckpt) in msg
    if damaged == "_METADATA":
        assert str(victim) in msg and "truncated" in msg


def test_restore_params_raises_checkpoint_error_for_a_truncated_array_data_file(tmp_path):
    """TensorStore raises a bare ``Exception`` for a truncated chunk of array data: wrapped."""
    from equijax.training import CheckpointError

    ckpt = tmp_path / "ckpt"
    # large enough that the array's bytes sit in an OCDBT data file, not inline in the index
    save_params(ckpt, {"w": jnp.arange(50_000.0)})
    data = max((p for p in ckpt.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    assert data.parent.name == "d" and data.stat().st_size > 100_000
    _truncate(data)
    with pytest.raises(CheckpointError) as info:
        restore_params(ckpt)
    assert isinstance(info.value, ValueError)  # as restore_params raised before
    msg = str(info.value)
    assert str(ckpt) in msg and "save_params" in msg and "truncated" in msg
    with pytest.raises(CheckpointError, match="save_params"):
        restore_params(ckpt, template={"w": jnp.zeros(50_000)})


def test_shared_converter_layouts_collections_and_unknown_names():
    from equijax.models import _convert

    T = _convert.Target
    rules = {
        "lin": T("linear", ("lin",)), "c1d": T("conv1d", ("c1d",)), "conv": T("conv", ("conv",)),
        "bn": T("norm", ("bn",)), "emb": T("embedding", ("emb",)), "p": T("param", ("a", "p")),
        "buf": _convert.DROP,
    }  # fmt: skip

    def rule(name):
        return rules.get(name.split(".")[0])

    rng = np.random.default_rng(0)
    w2, w4 = rng.normal(size=(3, 2)), rng.normal(size=(5, 4, 3, 2))
    torch_like = {
        "lin.weight": w2, "lin.bias": np.ones(3), "c1d.weight": w2, "conv.weight": w4,
        "bn.weight": np.ones(4), "bn.running_mean": np.zeros(4), "bn.running_var": np.ones(4),
        "bn.num_batches_tracked": np.array(3), "emb.weight": w2, "p": np.ones(2),
        "buf.mask": np.ones(2), "mystery.weight": np.ones(2), "lin.gamma": np.ones(2),
    }  # fmt: skip
    out = _convert.convert(torch_like, rule)
    np.testing.assert_array_equal(out[("params", "lin", "kernel")], w2.T)
    np.testing.assert_array_equal(out[("params", "c1d", "kernel")], w2)  # Conv1D is (in, out)
    np.testing.assert_array_equal(out[("params", "conv", "kernel")], w4.transpose(2, 3, 1, 0))
    assert ("batch_stats", "bn", "mean") in out and ("params", "bn", "scale") in out
    assert ("params", "emb", "embedding") in out and ("params", "a", "p") in out
    # unknown names and leaves stay in the checkpoint's words; buffers are dropped
    assert {k for k in out if isinstance(k, str)} == {"mystery.weight", "lin.gamma"}
    assert not any("buf" in str(k) or "num_batches" in str(k) for k in out)
    # HF-Flax names (collection prefix, Flax leaves) land on the same paths
    flax_like = {
        "params.lin.kernel": w2.T, "params.c1d.kernel": w2.T,
        "params.conv.kernel": w4.transpose(2, 3, 1, 0),
        "batch_stats.bn.mean": np.zeros(4), "params.bn.scale": np.ones(4),
        "params.emb.embedding": w2,
    }  # fmt: skip
    again = _convert.convert(flax_like, rule)
    for key in again:
        np.testing.assert_array_equal(again[key], out[key], err_msg=str(key))
    assert _convert.convert({"lin.weight": w2}, rule, collections=False).keys() == {
        ("lin", "kernel")
    }


@pytest.mark.slow  # end-to-end: tens of seconds on 2 cores
def test_every_family_follows_one_from_pretrained_contract(tmp_path):
    """(model, variables) and dtype=None -> float32, dtype=bfloat16 -> bfloat16, for every port."""
    pytest.importorskip("torch")
    from equijax.models import clip, clip_resnet, gpt2, resnet
    from equijax.models import testing as tiny

    families = [
        (clip, tiny.write_tiny_random_clip(tmp_path / "clip")),
        (clip_resnet, tiny.write_tiny_random_clip_resnet(tmp_path / "clip_rn")),
        (resnet, tiny.write_tiny_random_resnet(tmp_path / "resnet")),
        (gpt2, tiny.write_tiny_random_gpt2(tmp_path / "gpt2", n_layer=1, n_embd=16)),
    ]
    for family, directory in families:
        assert tiny.is_random_model(directory), family.__name__
        dtypes = [(None, jnp.float32)]
        if family in (resnet, gpt2):  # bfloat16 of the CLIPs: tests/test_models_clip.py
            dtypes.append((jnp.bfloat16, jnp.bfloat16))
        for dtype, want in dtypes:
            model, variables = family.from_pretrained(directory, dtype=dtype)
            hash(model)  # static: usable as a jit static argument
            leaves = jax.tree.leaves(variables)
            assert leaves and all(x.dtype == want for x in leaves), (family.__name__, dtype)
            assert "params" in variables, family.__name__


def test_models_face_does_not_import_the_test_checkpoint_writers():
    import subprocess
    import sys

    code = (
        "import sys, equijax, equijax.models; "
        "print(sorted(m for m in sys.modules if m.startswith('equijax.models.testing')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    from equijax.models import testing

    assert callable(testing.write_tiny_random_gpt2)
