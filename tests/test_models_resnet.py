"""Parity and behaviour tests of the Flax ResNet port against transformers (PyTorch)."""

from __future__ import annotations

import dataclasses
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from equijax.models import _hub, resnet  # noqa: E402

TINY = {
    "basic": dict(embedding_size=8, hidden_sizes=[8, 16, 24], depths=[2, 1, 2], layer_type="basic"),
    "bottleneck": dict(
        embedding_size=8, hidden_sizes=[16, 32, 48], depths=[1, 2, 1], layer_type="bottleneck"
    ),
}


def _randomise_batchnorm(model, seed: int) -> None:
    # Fresh BatchNorm layers have mean 0 / var 1 / weight 1 / bias 0: parity would not notice
    # swapped statistics. Give every BN distinct random values.
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(n, generator=gen) * 0.1)


_CACHE: dict = {}


def _save(kind, tmp_path_factory):
    if kind in _CACHE:
        return _CACHE[kind]
    torch.manual_seed(0)
    config = transformers.ResNetConfig(num_labels=7, **TINY[kind])
    model = transformers.ResNetForImageClassification(config).eval()
    _randomise_batchnorm(model, seed=1)
    path = tmp_path_factory.mktemp(f"resnet_{kind}")
    model.save_pretrained(path)
    _CACHE[kind] = (kind, model, path)
    return _CACHE[kind]


@pytest.fixture(scope="module", params=sorted(TINY))
def both_resnets(request, tmp_path_factory):
    return _save(request.param, tmp_path_factory)


@pytest.fixture(scope="module")
def saved_resnet(tmp_path_factory):
    return _save("bottleneck", tmp_path_factory)


def test_logits_match_torch_when_loaded_from_save_pretrained(both_resnets):
    kind, pt_model, path = both_resnets
    model, variables = resnet.from_pretrained(path)
    assert model.config.layer_type == kind
    x = np.random.default_rng(0).normal(size=(3, 3, 64, 48)).astype(np.float32)  # NCHW
    with torch.no_grad():
        pt = pt_model(torch.from_numpy(x), output_hidden_states=True)
    out = jax.jit(model.apply)(variables, resnet.nchw_to_nhwc(x))
    np.testing.assert_allclose(np.asarray(out.logits), pt.logits.numpy(), atol=1e-4, rtol=0)
    pt_last = pt.hidden_states[-1].numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(np.asarray(out.last_hidden_state), pt_last, atol=1e-4, rtol=0)
    np.testing.assert_allclose(np.asarray(out.pooled), pt_last.mean(axis=(1, 2)), atol=1e-5)


def test_train_mode_matches_torch_batch_statistics_and_updates_them(both_resnets):
    _, pt_model, path = both_resnets
    model, variables = resnet.from_pretrained(path)
    x = np.random.default_rng(1).normal(size=(4, 3, 32, 32)).astype(np.float32)
    pt_train = pt_model.train()
    try:
        with torch.no_grad():
            ref = pt_train(torch.from_numpy(x)).logits.numpy()
    finally:
        pt_model.eval()
    apply = jax.jit(model.apply, static_argnames=("train", "mutable"))
    out, updates = apply(variables, resnet.nchw_to_nhwc(x), train=True, mutable=("batch_stats",))
    # BatchNorm in training mode normalises with batch statistics, as torch does
    np.testing.assert_allclose(np.asarray(out.logits), ref, atol=1e-4, rtol=0)
    old = jax.tree_util.tree_leaves(variables["batch_stats"])
    new = jax.tree_util.tree_leaves(updates["batch_stats"])
    assert any(not np.allclose(a, b) for a, b in zip(old, new, strict=True))


def test_grad_over_params_flows_through_pure_apply(saved_resnet):
    _, _, path = saved_resnet
    model, variables = resnet.from_pretrained(path)
    x = jnp.ones((2, 32, 32, 3))

    def loss(params):
        out = model.apply({"params": params, "batch_stats": variables["batch_stats"]}, x)
        return jnp.sum(out.logits**2)

    grads = jax.jit(jax.grad(loss))(variables["params"])
    assert jax.tree_util.tree_structure(grads) == jax.tree_util.tree_structure(variables["params"])
    assert float(jnp.abs(grads["classifier"]["kernel"]).sum()) > 0


def test_bfloat16_load_is_close_to_float32(saved_resnet):
    _, _, path = saved_resnet
    model32, v32 = resnet.from_pretrained(path)
    model16, v16 = resnet.from_pretrained(path, dtype=jnp.bfloat16)
    assert all(a.dtype == jnp.bfloat16 for a in jax.tree_util.tree_leaves(v16))
    x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
    a = jax.jit(model32.apply)(v32, x).logits
    b = jax.jit(model16.apply)(v16, x).logits.astype(jnp.float32)
    assert float(jnp.max(jnp.abs(a - b))) < 0.1 * float(jnp.max(jnp.abs(a))) + 0.05


def test_bad_images_raise_clear_errors(saved_resnet):
    _, _, path = saved_resnet
    model, variables = resnet.from_pretrained(path)
    with pytest.raises(ValueError, match="NCHW"):
        model.apply(variables, jnp.zeros((1, 3, 32, 32)))
    with pytest.raises(ValueError, match="channels"):
        model.apply(variables, jnp.zeros((1, 32, 32, 4)))
    with pytest.raises(ValueError, match="too small"):
        model.apply(variables, jnp.zeros((1, 8, 8, 3)))
    with pytest.raises(ValueError, match="NHWC"):
        model.apply(variables, jnp.zeros((32, 32, 3)))
    with pytest.raises(ValueError, match="preprocess"):
        model.apply(variables, jnp.zeros((1, 32, 32, 3), jnp.uint8))


def test_mismatched_config_lists_mis_shaped_and_missing_keys(saved_resnet, tmp_path):
    _, _, path = saved_resnet
    config = json.loads((path / "config.json").read_text())
    config["hidden_sizes"] = [h * 2 for h in config["hidden_sizes"]]
    config["depths"] = [*config["depths"][:-1], config["depths"][-1] + 1]
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "model.safetensors").symlink_to(path / "model.safetensors")
    with pytest.raises(_hub.CheckpointMismatchError) as info:
        resnet.from_pretrained(tmp_path)
    err = info.value
    assert err.mismatched and err.missing
    assert any("stages_2_layers_" in k for k in err.missing)
    assert "mis-shaped" in str(err) and "missing" in str(err)


def test_directory_without_checkpoint_raises_file_not_found(tmp_path):
    config = {"depths": [1, 1], "hidden_sizes": [8, 16], "embedding_size": 8}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors"):
        resnet.from_pretrained(tmp_path)


def test_preprocess_matches_hf_image_processor_normalisation():
    images = np.random.default_rng(0).integers(0, 256, size=(2, 8, 8, 3), dtype=np.uint8)
    proc = transformers.ConvNextImageProcessor(
        do_resize=False, do_rescale=True, do_normalize=True,
        image_mean=list(resnet.IMAGENET_MEAN), image_std=list(resnet.IMAGENET_STD),
    )  # fmt: skip
    ref = proc(list(images), return_tensors="np")["pixel_values"].transpose(0, 2, 3, 1)
    np.testing.assert_allclose(np.asarray(resnet.preprocess(images)), ref, atol=1e-5)


def test_equitune_of_loaded_resnet_is_rot90_invariant(saved_resnet):
    import equijax as ej

    _, _, path = saved_resnet
    model, variables = resnet.from_pretrained(path)
    G = ej.groups.rot90()
    x = jax.random.normal(jax.random.key(3), (2, 32, 32, 3))

    @jax.jit
    def fn(variables, x):
        return ej.equitune(lambda xb: model.apply(variables, xb).logits, G, x)

    y = fn(variables, x)
    y_rot = fn(variables, jnp.rot90(x, k=1, axes=(1, 2)))
    np.testing.assert_allclose(np.asarray(y), np.asarray(y_rot), atol=1e-4)


@pytest.mark.parametrize(("layer_type", "act"), [("bottleneck", "gelu"), ("basic", "silu")])
def test_non_relu_hidden_act_matches_torch(tmp_path, layer_type, act):
    """HF applies hidden_act in the stem and after each residual sum, ReLU inside the blocks."""
    from equijax.models import testing as tiny

    path = tiny.write_tiny_random_resnet(tmp_path, seed=3, layer_type=layer_type, hidden_act=act)
    ref = transformers.ResNetForImageClassification.from_pretrained(path).eval()
    model, variables = resnet.from_pretrained(path)
    assert model.config.hidden_act == act
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)
    with torch.no_grad():
        want = ref(pixel_values=torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).logits.numpy()
    got = np.asarray(model.apply(variables, x).logits)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    # hidden_act really matters here: the same weights with ReLU throughout differ clearly
    wrong = dataclasses.replace(model.config, hidden_act="relu")
    assert float(np.abs(resnet.ResNet(wrong).apply(variables, x).logits - want).max()) > 1e-3


FLAX_FIXTURE = pathlib.Path(__file__).resolve().parent / "fixtures" / "flax_resnet"


def test_reads_hf_flax_msgpack_written_by_transformers_4():
    """tests/fixtures/flax_resnet: FlaxResNetForImageClassification.save_pretrained output."""
    assert sorted(p.name for p in FLAX_FIXTURE.iterdir()) == [
        "config.json", "flax_model.msgpack", "reference.npz"]  # fmt: skip
    model, variables = resnet.from_pretrained(FLAX_FIXTURE)
    assert model.config.depths == (1, 2) and set(variables) == {"params", "batch_stats"}
    with np.load(FLAX_FIXTURE / "reference.npz") as ref:
        images, logits = ref["images"].astype(np.float32), ref["logits"]
    got = np.asarray(model.apply(variables, images).logits)
    assert float(np.abs(logits).max()) > 1e-2
    np.testing.assert_allclose(got, logits, atol=1e-4, rtol=0)
    stats = variables["batch_stats"]["stages_1_layers_1"]["layer_1"]["normalization"]
    assert float(jnp.abs(stats["var"] - 1).max()) > 1e-3  # the random statistics were read


def _hf_flax_tree(variables):
    """The port's variables nested as transformers 4.x's FlaxResNetForImageClassification."""
    tree: dict = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(variables)[0]:
        collection, module, *rest = (p.key for p in path)
        if module == "embedder":
            keys = ["resnet", "embedder", "embedder", *rest]
        elif module == "classifier":
            keys = ["classifier", "1", *rest]
        else:  # stages_I_layers_J / (layer_K | shortcut) / ...
            _, i, _, j = module.split("_")
            head, *tail = rest
            block = ["layer", "layer", head.split("_")[1]] if head.startswith("layer_") else [head]
            keys = ["resnet", "encoder", "stages", i, "layers", j, *block, *tail]
        node = tree.setdefault(collection, {})
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = np.asarray(leaf)
    return tree


def test_reads_hf_flax_msgpack_of_a_basic_block_resnet(tmp_path):
    """ResNet-18/34 in transformers 4.x's Flax layout: ``layers.J.layer.layer.K``."""
    from flax.serialization import msgpack_serialize

    cfg = {"embedding_size": 8, "hidden_sizes": [8, 16], "depths": [2, 1], "layer_type": "basic",
           "num_labels": 3}  # fmt: skip
    model = resnet.ResNet(resnet.ResNetConfig.from_hf(cfg))
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 32, 32, 3)), jnp.float32)
    variables = model.init(jax.random.key(1), x)
    variables = jax.tree_util.tree_map(  # non-trivial batch statistics
        lambda a: a + 0.25 * jax.random.uniform(jax.random.key(2), a.shape), variables
    )
    tree = _hf_flax_tree(variables)
    assert "layer" in tree["params"]["resnet"]["encoder"]["stages"]["0"]["layers"]["0"]["layer"]
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "flax_model.msgpack").write_bytes(msgpack_serialize(tree))
    loaded_model, loaded = resnet.from_pretrained(tmp_path)
    assert jax.tree_util.tree_structure(loaded) == jax.tree_util.tree_structure(variables)
    for a, b in zip(jax.tree_util.tree_leaves(loaded), jax.tree_util.tree_leaves(variables),
                    strict=True):  # fmt: skip
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_allclose(
        loaded_model.apply(loaded, x).logits, model.apply(variables, x).logits, atol=1e-6
    )
