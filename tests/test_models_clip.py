"""CLIP ports: parity with PyTorch references, tokenizer, preprocessing, zero-shot, bad inputs.

References:
* ViT CLIP: ``transformers.CLIPModel`` (PyTorch) with a tiny random config, saved with
  ``save_pretrained`` and loaded by ``equijax.models.clip.from_pretrained``.
* ModifiedResNet CLIP: OpenCLIP's own ``open_clip.model.CLIP`` (PyTorch), through a stored
  fixture: ``tests/fixtures/open_clip_rn/`` holds a tiny random OpenCLIP checkpoint (OpenCLIP's
  safetensors + config format), inputs and OpenCLIP's outputs, written once by
  ``tests/fixtures/make_open_clip_reference.py`` in a separate environment with
  ``open-clip-torch`` (see that script). The suite itself needs no OpenCLIP.
* Tokenizer: OpenAI's ``SimpleTokenizer`` (as shipped in OpenCLIP) ids for a list of texts under
  the tiny BPE vocabulary of :mod:`equijax.models.testing`, stored in the same fixture. The real
  49,408-token vocabulary is checked by ``tests/test_models_network.py`` (``pytest -m network``).
"""

from __future__ import annotations

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import equijax as ej
from equijax.models import _hub, clip, clip_data, clip_resnet, preprocess
from equijax.models import testing as tiny

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

ATOL = 1e-4


FIXTURE = pathlib.Path(__file__).resolve().parent / "fixtures" / "open_clip_rn"


@pytest.fixture(scope="module")
def open_clip_reference():
    """OpenCLIP's inputs/outputs stored by tests/fixtures/make_open_clip_reference.py."""
    with np.load(FIXTURE / "reference.npz") as data:
        return {k: data[k] for k in data.files}


# ----------------------------------------------------------------------------- ViT CLIP


def _tiny_hf_config(eos_token_id: int, hidden_act: str):
    return transformers.CLIPConfig(
        text_config=dict(
            vocab_size=99, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=16, eos_token_id=eos_token_id,
            hidden_act=hidden_act,
        ),
        vision_config=dict(
            hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
            image_size=30, patch_size=6, hidden_act=hidden_act,
        ),
        projection_dim=24,
    )  # fmt: skip


@pytest.fixture(scope="module")
def hf_clip(tmp_path_factory):
    """A tiny random transformers CLIPModel (new-style eos pooling), saved as safetensors."""
    torch.manual_seed(0)
    model = transformers.CLIPModel(_tiny_hf_config(98, "quick_gelu")).eval()
    path = tmp_path_factory.mktemp("tiny_clip")
    model.save_pretrained(path)
    return model, path


def _ids(rng: np.random.Generator, eos: int) -> np.ndarray:
    ids = rng.integers(3, 90, size=(4, 12))
    ids[:, 7] = eos
    ids[1, 3] = eos  # earlier eos: "eos" pooling takes the first one
    ids[2, 9] = 97  # larger id after eos: distinguishes argmax pooling from eos pooling
    return ids


def _torch_outputs(model, images_nhwc: np.ndarray, ids: np.ndarray):
    pixels = torch.from_numpy(images_nhwc.transpose(0, 3, 1, 2).copy())
    tids = torch.from_numpy(ids)
    with torch.no_grad():
        img = model.get_image_features(pixel_values=pixels)
        txt = model.get_text_features(input_ids=tids)
        out = model(input_ids=tids, pixel_values=pixels)
    img = getattr(img, "pooler_output", img)
    txt = getattr(txt, "pooler_output", txt)
    return img.numpy(), txt.numpy(), out.logits_per_image.numpy()


def _assert_towers_match(torch_model, model, params, *, seed, n_images):
    """Both towers of ``model`` match ``torch_model`` on random images and ids; returns the
    inputs and the PyTorch logits."""
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(n_images, 30, 30, 3)).astype(np.float32)
    ids = _ids(rng, 98)
    ref_img, ref_txt, ref_logits = _torch_outputs(torch_model, images, ids)
    np.testing.assert_allclose(model.encode_image(params, images), ref_img, atol=ATOL, rtol=0)
    np.testing.assert_allclose(model.encode_text(params, ids), ref_txt, atol=ATOL, rtol=0)
    return images, ids, ref_logits


def test_clip_vit_matches_transformers_pytorch(hf_clip):
    torch_model, path = hf_clip
    model, params = clip.from_pretrained(path)
    images, ids, ref_logits = _assert_towers_match(torch_model, model, params, seed=0, n_images=3)
    np.testing.assert_allclose(model.logits(params, images, ids), ref_logits, atol=ATOL, rtol=0)


def test_clip_vit_legacy_argmax_pooling_and_sharded_checkpoint_match_pytorch(tmp_path):
    torch.manual_seed(1)
    torch_model = transformers.CLIPModel(_tiny_hf_config(2, "gelu")).eval()
    torch_model.save_pretrained(tmp_path, max_shard_size="40KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    model, params = clip.from_pretrained(tmp_path)
    assert model.config.text.pooling == "argmax" and model.config.text.hidden_act == "gelu"
    _assert_towers_match(torch_model, model, params, seed=1, n_images=2)


def test_from_pretrained_reads_flax_msgpack_checkpoint(hf_clip, tmp_path):
    """A ``flax_model.msgpack`` in the layout of transformers' former FlaxCLIPModel."""
    import flax.serialization

    _, path = hf_clip
    _, params = clip.from_pretrained(path)
    tree: dict = {}  # FlaxCLIPModel names: layers/<i>/..., no "params" level
    for key, value in _hub.flatten_params(params["params"]).items():
        parts = []
        for part in key.split("."):
            parts.extend(["layers", part[7:]] if part.startswith("layers_") else [part])
        node = tree
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = np.asarray(value)
    (tmp_path / "flax_model.msgpack").write_bytes(flax.serialization.msgpack_serialize(tree))
    (tmp_path / "config.json").write_text((path / "config.json").read_text())
    _, loaded = clip.from_pretrained(tmp_path)
    same = jax.tree.map(lambda a, b: bool((a == b).all()), loaded, params)
    assert all(jax.tree.leaves(same))


def test_from_pretrained_bfloat16_casts_params_and_stays_close(hf_clip):
    _, path = hf_clip
    model32, params32 = clip.from_pretrained(path)
    model16, params16 = clip.from_pretrained(path, dtype=jnp.bfloat16)
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(params16))
    ids = _ids(np.random.default_rng(2), 98)
    a = model32.encode_text(params32, ids, normalize=True)
    b = model16.encode_text(params16, ids, normalize=True)
    assert b.dtype == jnp.bfloat16
    assert float(jnp.abs(a - b.astype(jnp.float32)).max()) < 0.1


@pytest.mark.slow  # end-to-end, > 20 s on 2 cores; CI runs the slow suite too
def test_readme_zero_shot_equitune_flow_through_local_dirs(tmp_path, clip_tokenizer):
    """The README example, with local directories standing in for the hub ids."""
    torch.manual_seed(2)
    hf_config = transformers.CLIPConfig(
        text_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                         num_attention_heads=4, vocab_size=tiny.TINY_CLIP_VOCAB_SIZE,
                         eos_token_id=tiny.TINY_CLIP_VOCAB_SIZE - 1),  # context length 77
        vision_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                           num_attention_heads=4, image_size=30, patch_size=6),
        projection_dim=24,
    )  # fmt: skip
    transformers.CLIPModel(hf_config).save_pretrained(tmp_path)

    model, params = clip.from_pretrained(tmp_path)  # "openai/clip-vit-base-patch32" online
    classnames, templates = clip_data.CIFAR100_CLASSNAMES[:4], clip_data.CIFAR100_TEMPLATES[:3]
    W = model.build_zero_shot_classifier(params, clip_tokenizer, classnames, templates)
    assert W.shape == (24, 4)
    uint8_images = np.random.default_rng(4).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    images = preprocess.clip_preprocess(uint8_images, size=model.image_size)
    G = ej.groups.rot90()

    def zero_shot(p, x):
        return model.zero_shot_logits(p, x, W)

    equituned = jax.jit(lambda p, x: ej.equitune(lambda y: zero_shot(p, y), G, x))
    equizeroed = jax.jit(
        lambda x: ej.equizero(
            lambda y: zero_shot(params, y), G, x, loss=ej.proxies.neg_max_probability
        )
    )
    # the raw model is not rot90-invariant; both symmetrised ones are
    assert ej.testing.equivariance_error(lambda x: zero_shot(params, x), G, images) > 1e-4
    ej.testing.assert_equivariant(lambda x: equituned(params, x), G, images, atol=1e-4)
    ej.testing.assert_equivariant(equizeroed, G, images, atol=1e-4)
    grads = jax.grad(lambda p: jax.nn.logsumexp(equituned(p, images), axis=-1).sum())(params)
    g = grads["params"]["vision_model"]["encoder"]["layers_0"]["self_attn"]["q_proj"]["kernel"]
    assert bool(jnp.isfinite(g).all()) and float(jnp.abs(g).max()) > 0


# ----------------------------------------------------------------------------- ResNet CLIP


def test_clip_resnet_matches_stored_open_clip_outputs(open_clip_reference):
    ref = open_clip_reference
    model, params = clip_resnet.from_pretrained(FIXTURE)
    assert model.config.layers == (1, 2, 1, 1) and model.config.text.hidden_act == "quick_gelu"
    assert model.config.width == 2 and model.config.text.vocab_size == tiny.TINY_CLIP_VOCAB_SIZE
    images, ids = ref["images"].astype(np.float32), ref["ids"]
    assert images.shape == (2, 64, 64, 3) and ids.shape == (3, 12)
    img, txt = model.encode_image(params, images), model.encode_text(params, ids)
    assert float(jnp.abs(ref["image_features"]).max()) > 1e-2  # a real signal to compare
    np.testing.assert_allclose(img, ref["image_features"], atol=ATOL, rtol=0)
    np.testing.assert_allclose(txt, ref["text_features"], atol=ATOL, rtol=0)
    np.testing.assert_allclose(model.logits(params, images, ids), ref["logits"], atol=ATOL, rtol=0)
    # and the comparison is sharp: a perturbed batch-norm statistic breaks it
    bad = jax.tree.map(lambda x: x, params)
    bn = bad["batch_stats"]["visual"]["layer2_1"]["bn2"]
    bn["mean"] = bn["mean"] + 0.5
    assert float(jnp.abs(model.encode_image(bad, images) - img).max()) > 10 * ATOL


def test_clip_resnet_rejects_bad_checkpoints(tmp_path):
    path = FIXTURE
    with pytest.raises(FileNotFoundError, match=r"open_clip_config\.json"):
        clip_resnet.from_pretrained(tmp_path)
    (tmp_path / "open_clip_config.json").write_text((path / "open_clip_config.json").read_text())
    with pytest.raises(FileNotFoundError, match=r"open_clip_model\.safetensors"):
        clip_resnet.from_pretrained(tmp_path)
    from safetensors.numpy import load_file, save_file

    state = load_file(str(path / "open_clip_model.safetensors"))
    del state["visual.attnpool.c_proj.bias"]
    state["visual.extra.weight"] = np.zeros(3, np.float32)
    state["ln_final.weight"] = np.zeros(5, np.float32)
    save_file(state, str(tmp_path / "open_clip_model.safetensors"))
    with pytest.raises(_hub.CheckpointMismatchError) as err:
        clip_resnet.from_pretrained(tmp_path)
    assert err.value.missing == ["params.visual.attnpool.c_proj.bias"]
    assert err.value.unexpected == ["visual.extra.weight"]  # the checkpoint's own name
    assert [k for k, _, _ in err.value.mismatched] == ["params.text_model.final_layer_norm.scale"]
    vit = {
        "model_cfg": {
            "embed_dim": 512,
            "vision_cfg": {"layers": 12, "width": 768, "patch_size": 32},
            "text_cfg": {},
        }
    }
    with pytest.raises(ValueError, match="ViT"):
        clip_resnet.CLIPResNetConfig.from_open_clip(vit)


def test_clip_resnet_quick_gelu_flag_override_and_openai_default(tmp_path):
    path = FIXTURE
    assert clip_resnet.from_pretrained(path, quick_gelu=False)[0].config.text.hidden_act == "gelu"
    cfg = json.loads((path / "open_clip_config.json").read_text())
    del cfg["model_cfg"]["quick_gelu"]
    for name, act in [("rn_clip.openai", "quick_gelu"), ("rn_clip.laion", "gelu")]:
        d = tmp_path / name
        d.mkdir()
        (d / "open_clip_config.json").write_text(json.dumps(cfg))
        (d / "open_clip_model.safetensors").symlink_to(path / "open_clip_model.safetensors")
        assert clip_resnet.from_pretrained(d)[0].config.text.hidden_act == act


def test_clip_resnet_rejects_wrong_image_shape():
    model = clip_resnet.CLIPResNet(clip_resnet.CLIPResNetConfig.tiny())
    params = model.init(jax.random.key(0))
    with pytest.raises(ValueError, match=r"\(batch, 64, 64, 3\)"):
        model.encode_image(params, jnp.zeros((1, 32, 32, 3)))


# ----------------------------------------------------------------------------- bad inputs


def test_clip_rejects_bad_inputs_with_clear_errors(hf_clip, tmp_path):
    _, path = hf_clip
    model, params = clip.from_pretrained(path)
    with pytest.raises(ValueError, match=r"\(batch, 30, 30, 3\)"):
        model.encode_image(params, jnp.zeros((1, 32, 32, 3)))
    with pytest.raises(ValueError, match=r"\(batch, 30, 30, 3\)"):
        model.encode_image(params, jnp.zeros((1, 30, 30, 1)))
    with pytest.raises(ValueError, match="NCHW"):
        model.encode_image(params, jnp.zeros((1, 3, 30, 30)))
    with pytest.raises(TypeError, match="floating"):
        model.encode_image(params, jnp.zeros((1, 30, 30, 3), jnp.uint8))
    with pytest.raises(ValueError, match="vocab_size=99"):
        model.encode_text(params, jnp.array([[1, 99, 98]]))
    with pytest.raises(ValueError, match="vocab_size=99"):
        model.encode_text(params, np.array([[-1, 5, 98]]))
    with pytest.raises(ValueError, match="max_position_embeddings=16"):
        model.encode_text(params, jnp.ones((1, 17), jnp.int32))
    with pytest.raises(ValueError, match="seq_len"):
        model.encode_text(params, jnp.ones((17,), jnp.int32))
    with pytest.raises(ValueError, match="num_classes"):
        model.zero_shot_logits(params, jnp.zeros((1, 30, 30, 3)), jnp.zeros((23, 4)))
    # directory without a checkpoint / without config
    (tmp_path / "config.json").write_text((path / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match="no checkpoint found"):
        clip.from_pretrained(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        clip.from_pretrained(empty)


def test_clip_checkpoint_mismatch_lists_keys(hf_clip, tmp_path):
    _, path = hf_clip
    from safetensors.numpy import load_file, save_file

    state = load_file(str(path / "model.safetensors"))
    del state["visual_projection.weight"]
    state["text_projection.weight"] = np.zeros((3, 32), np.float32)
    state["vision_model.bogus.weight"] = np.zeros(2, np.float32)
    save_file(state, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text((path / "config.json").read_text())
    with pytest.raises(_hub.CheckpointMismatchError) as err:
        clip.from_pretrained(tmp_path)
    assert err.value.missing == ["params.visual_projection.kernel"]
    assert err.value.unexpected == ["vision_model.bogus.weight"]  # the checkpoint's own name
    assert err.value.mismatched == [("params.text_projection.kernel", (32, 24), (32, 3))]


# ----------------------------------------------------------------------------- tokenizer


@pytest.fixture(scope="module")
def clip_tokenizer(tmp_path_factory):
    """The tiny CLIP BPE tokenizer (no network, no OpenCLIP)."""
    return clip.load_tokenizer(tiny.write_tiny_clip_tokenizer(tmp_path_factory.mktemp("tok")))


def test_tokenize_matches_openai_simple_tokenizer(clip_tokenizer, open_clip_reference):
    ref = open_clip_reference
    assert tuple(ref["merges"].tolist()) == tiny.TINY_CLIP_MERGES  # the vocabulary it was made with
    texts = [str(t) for t in ref["texts"]]
    ours = clip.tokenize(clip_tokenizer, texts, 77)
    assert ours.dtype == np.int32 and ours.shape == (len(texts), 77)
    np.testing.assert_array_equal(ours, ref["token_ids"])
    # merges are used (not only single bytes), and every row ends with end-of-text
    eot = tiny.TINY_CLIP_VOCAB_SIZE - 1
    assert (ours >= 512).sum() > len(texts) * 2 and (ours == eot).sum(axis=1).tolist() == [1] * 9


# ----------------------------------------------------------------------------- zero-shot


def test_zero_shot_classifier_averages_normalised_template_embeddings(hf_clip):
    _, path = hf_clip
    model, params = clip.from_pretrained(path)
    classnames, templates = ["cat", "dog", "lawn mower"], ["a {}.", "a photo of a {}!", "{}"]

    def tok(texts):
        ids = np.zeros((len(texts), 16), np.int32)
        for i, t in enumerate(texts):
            body = [3 + (ord(ch) % 90) for ch in t][:14]
            ids[i, : len(body) + 1] = [*body, 98]
        return ids

    w = clip.zero_shot_classifier(
        lambda ids: model.encode_text(params, ids), tok, classnames, templates,
        context_length=16, batch_size=3,
    )  # fmt: skip
    assert w.shape == (24, 3)
    np.testing.assert_allclose(jnp.linalg.norm(w, axis=0), 1.0, atol=1e-5)
    for c, name in enumerate(classnames):
        emb = np.array(model.encode_text(params, tok([t.format(name) for t in templates])))
        emb /= np.linalg.norm(emb, axis=-1, keepdims=True)
        mean = emb.mean(0)
        np.testing.assert_allclose(w[:, c], mean / np.linalg.norm(mean), atol=1e-5)
    with pytest.raises(ValueError, match="placeholder"):
        clip.zero_shot_classifier(lambda ids: ids, tok, ["cat"], ["no slot"], context_length=16)


def test_clip_data_prompt_lists_are_complete():
    assert len(clip_data.CIFAR100_CLASSNAMES) == 100
    assert len(clip_data.CIFAR100_TEMPLATES) == 18
    assert len(clip_data.IMAGENET_CLASSNAMES) == 1000
    assert len(clip_data.IMAGENET_TEMPLATES) == 80
    # CIFAR-100 fine labels are numbered alphabetically by their underscore names
    underscored = [c.replace(" ", "_") for c in clip_data.CIFAR100_CLASSNAMES]
    assert underscored == sorted(underscored)
    for t in (*clip_data.CIFAR100_TEMPLATES, *clip_data.IMAGENET_TEMPLATES):
        assert t.count("{}") == 1
    assert clip_data.get_zero_shot_prompts("ImageNet-V2")[1] is clip_data.IMAGENET_TEMPLATES
    with pytest.raises(ValueError, match="dataset"):
        clip_data.get_zero_shot_prompts("mnist")


def test_prompts_are_declared_package_data_with_attribution():
    import tomllib

    from equijax.data import zero_shot

    assert clip_data.IMAGENET_CLASSNAMES is zero_shot.IMAGENET_CLASSNAMES  # one source
    assert zero_shot.prompt_sets() == ("cifar100", "imagenet")
    root = pathlib.Path(__file__).resolve().parents[1]
    pyproject = tomllib.loads((root / "pyproject.toml").read_text())
    declared = pyproject["tool"]["setuptools"]["package-data"]["equijax.data"]
    folder = root / "equijax" / "data"
    shipped = {p for pattern in declared for p in folder.glob(pattern)}
    assert {p.stem for p in shipped} == set(zero_shot.prompt_sets())
    for path in shipped:
        data = json.loads(path.read_text(encoding="utf-8"))
        assert set(data) == {"source", "order", "classnames", "templates"}
        assert "MIT" in data["source"] and "github.com/openai/CLIP" in data["source"]


# ----------------------------------------------------------------------------- preprocessing


def test_clip_preprocess_matches_transformers_image_processor():
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    processor = CLIPImageProcessorPil()
    rng = np.random.default_rng(0)
    for shape in [(32, 32, 3), (300, 200, 3), (181, 250, 3), (224, 224, 3)]:
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        ref = processor(images=image, return_tensors="np")["pixel_values"]
        ours = preprocess.clip_preprocess(image)
        assert ours.shape == (1, 224, 224, 3) and ours.dtype == np.float32
        np.testing.assert_allclose(preprocess.nhwc_to_nchw(ours), ref, atol=1e-5)
    grey = rng.integers(0, 256, (40, 41), dtype=np.uint8)
    out = preprocess.clip_preprocess([grey, np.stack([grey] * 3, -1)], size=32)
    np.testing.assert_array_equal(out[0], out[1])
    with pytest.raises(TypeError, match="uint8"):
        preprocess.clip_preprocess(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="NCHW"):
        preprocess.clip_preprocess(np.zeros((2, 3, 8, 8), np.uint8))


def test_resize_and_crop_jax_path_is_close_to_pil_and_jittable():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (1, 32, 48, 3), dtype=np.uint8)
    pil = preprocess.clip_preprocess(image, size=64)
    f = jax.jit(lambda x: preprocess.normalize(preprocess.resize_and_crop(x, 64)))
    ours = f(jnp.asarray(image, jnp.float32) / 255.0)
    assert ours.shape == (1, 64, 64, 3)
    # PIL rounds to uint8 and clips; the JAX path does neither: close on average, not exact
    assert float(jnp.abs(ours - pil).mean()) < 0.05
    x = jnp.arange(2 * 3 * 4 * 5.0).reshape(2, 3, 4, 5)
    np.testing.assert_array_equal(preprocess.nhwc_to_nchw(preprocess.nchw_to_nhwc(x)), x)


def test_to_open_clip_inverts_the_converter_on_the_openclip_fixture():
    from safetensors.numpy import load_file

    ref = load_file(str(FIXTURE / "open_clip_model.safetensors"))
    _, params = clip_resnet.from_pretrained(FIXTURE)
    state = tiny.to_open_clip(params)
    buffers = ("num_batches_tracked", "attn_mask")
    assert set(state) == {k for k in ref if not k.endswith(buffers)}
    for k, v in state.items():
        np.testing.assert_array_equal(v, ref[k], err_msg=k)


def test_tiny_random_writers_load_offline(tmp_path):
    rn_dir = tiny.write_tiny_random_clip_resnet(tmp_path / "rn", seed=1)
    model, params = clip_resnet.from_pretrained(rn_dir)
    assert tiny.is_random_model(rn_dir) and model.config.text.vocab_size == 530
    tok = clip.load_tokenizer(rn_dir)
    ids = clip.tokenize(tok, ["a photo of the cat."], model.context_length)
    emb = model.encode_text(params, ids, normalize=True)
    assert emb.shape == (1, 16) and bool(jnp.isfinite(emb).all())
    fresh = model.init(jax.random.key(1))
    same = jax.tree.map(lambda a, b: bool((np.asarray(a) == np.asarray(b)).all()), params, fresh)
    assert all(jax.tree.leaves(same))  # the file holds exactly the port's initialisation


def test_zoo_loads_either_family_and_builds_a_dataset_head(tmp_path):
    rn_dir = tiny.write_tiny_random_clip_resnet(tmp_path / "rn")
    model, variables, tok_src = clip.zoo.load(str(rn_dir))
    assert isinstance(model, clip_resnet.CLIPResNet) and tok_src == str(rn_dir)
    assert clip.zoo.feature_dim(model, variables) == 16
    vit_dir = tiny.write_tiny_random_clip(tmp_path / "vit")
    model, variables, tok_src = clip.zoo.load(str(vit_dir))
    assert isinstance(model, clip.CLIP) and tok_src == str(vit_dir)
    w, n_templates = clip.zoo.zero_shot_head(model, variables, tok_src, "cifar100")
    assert w.shape == (clip.zoo.feature_dim(model, variables), 100) and n_templates == 18
    np.testing.assert_allclose(jnp.linalg.norm(w, axis=0), 1.0, atol=1e-5)
    assert clip.zoo.PAPER_MODELS["ViT-B/32"] == clip.zoo.DEFAULT_TOKENIZER
