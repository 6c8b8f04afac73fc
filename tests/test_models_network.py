"""Real checkpoints from the Hugging Face hub against their reference implementations.

Deselected by default and on CI (``-m 'not slow and not network'`` in pyproject's addopts). Run
once, with network access (about 1 GB of downloads, cached by ``huggingface_hub``):

    python -m pytest -m network tests/test_models_network.py

Each test downloads a checkpoint (``openai/clip-vit-base-patch32``, ``microsoft/resnet-50``,
``gpt2``, ``timm/resnet50_clip.openai``), runs the equijax port and the reference
(``transformers`` PyTorch; OpenCLIP for the ResNet CLIP) on real photographs shipped inside
installed packages -- matplotlib's ``grace_hopper.jpg`` and scikit-learn's ``china.jpg`` /
``flower.jpg`` -- and checks max |Δ| ≤ 1e-4 (on L2-normalised embeddings and probabilities;
on logits relative to their largest magnitude) and the expected top-1 labels / zero-shot
choices. Without network (or with ``HF_HUB_OFFLINE=1`` and an empty cache) each test skips
with a message saying so. The ResNet CLIP test also needs ``open-clip-torch`` (installed with
``pip install --no-deps open-clip-torch==3.3.0``; its declared dependencies pull a torchvision
that breaks beside torch 2.13 CPU).
"""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from equijax.models import clip, clip_resnet, gpt2, preprocess, resnet

pytestmark = pytest.mark.network
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TOL = 1e-4
HOW = "run `python -m pytest -m network tests/test_models_network.py` with network access"
PROMPTS = ["a photo of a person", "a photo of a temple", "a photo of a flower", "a photo of a cat"]
EXPECTED_CHOICE = {"grace_hopper": 0, "china": 1, "flower": 2}


@pytest.fixture(autouse=True)
def _online(monkeypatch):
    """tests/conftest.py sets HF_HUB_OFFLINE=1 for the offline suite; these tests download."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


def _download(repo: str, patterns: list[str]) -> pathlib.Path:
    import huggingface_hub

    try:
        return pathlib.Path(huggingface_hub.snapshot_download(repo, allow_patterns=patterns))
    except Exception as err:  # offline, proxy, unknown repo
        pytest.skip(f"could not download {repo!r} ({type(err).__name__}: {err}); {HOW}")


def _photos() -> dict[str, np.ndarray]:
    """Real photographs shipped in installed packages, as uint8 (H, W, 3) arrays."""
    import matplotlib
    from PIL import Image
    from sklearn.datasets import load_sample_images

    hopper = pathlib.Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    sample = load_sample_images()
    photos = {"grace_hopper": np.asarray(Image.open(hopper).convert("RGB"))}
    for path, image in zip(sample.filenames, sample.images, strict=True):
        photos[pathlib.Path(path).stem] = np.asarray(image)
    assert set(photos) == set(EXPECTED_CHOICE)
    return photos


def _close(ours, ref, *, scale: float = 1.0) -> None:
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    assert ours.shape == ref.shape
    err = float(np.abs(ours - ref).max())
    assert err <= TOL * scale, f"max |Δ| = {err:.3g} > {TOL * scale:.3g}"


def _normed(x) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _zero_shot_choices(image_emb, text_emb) -> list[int]:
    return np.argmax(_normed(image_emb) @ _normed(text_emb).T, axis=-1).tolist()


def test_clip_vit_b32_matches_transformers_on_photographs():
    d = _download("openai/clip-vit-base-patch32",
                  ["config.json", "model.safetensors", "*.txt", "vocab.json",
                   "*token*"])  # fmt: skip
    model, params = clip.from_pretrained(d)
    ref = transformers.CLIPModel.from_pretrained(d).eval()
    tokenizer = clip.load_tokenizer(d)
    photos = _photos()
    images = preprocess.clip_preprocess(list(photos.values()), size=model.image_size)
    ids = clip.tokenize(tokenizer, PROMPTS, model.context_length)
    ref_ids = transformers.CLIPTokenizer.from_pretrained(d)(
        PROMPTS, padding="max_length", max_length=77, return_tensors="np")["input_ids"]  # fmt: skip
    np.testing.assert_array_equal(np.where(ids == 0, ref_ids, ids), ref_ids)  # up to padding
    with torch.no_grad():
        pix = torch.from_numpy(np.asarray(preprocess.nhwc_to_nchw(images)).copy())
        ref_img = ref.get_image_features(pixel_values=pix)
        ref_txt = ref.get_text_features(input_ids=torch.from_numpy(ids.astype(np.int64)))
    ref_img = getattr(ref_img, "pooler_output", ref_img).numpy()
    ref_txt = getattr(ref_txt, "pooler_output", ref_txt).numpy()
    img, txt = model.encode_image(params, images), model.encode_text(params, ids)
    _close(_normed(img), _normed(ref_img))
    _close(_normed(txt), _normed(ref_txt))
    assert _zero_shot_choices(img, txt) == [EXPECTED_CHOICE[k] for k in photos]
    assert _zero_shot_choices(ref_img, ref_txt) == [EXPECTED_CHOICE[k] for k in photos]


def _imagenet_input(photo: np.ndarray, size: int = 224) -> np.ndarray:
    """Resize the short side to 256 (bicubic), centre-crop 224, ImageNet-normalise."""
    resized = preprocess.resize_shortest_edge(photo, 256)
    return np.asarray(resnet.preprocess(preprocess.center_crop(resized, size)[None]))


def test_resnet50_matches_transformers_and_knows_grace_hoppers_uniform():
    d = _download("microsoft/resnet-50", ["config.json", "model.safetensors"])
    model, variables = resnet.from_pretrained(d)
    ref = transformers.ResNetForImageClassification.from_pretrained(d).eval()
    photos = _photos()
    x = np.concatenate([_imagenet_input(p) for p in photos.values()])
    logits = np.asarray(jax.jit(lambda v, x: model.apply(v, x).logits)(variables, x))
    with torch.no_grad():
        ref_logits = ref(pixel_values=torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).logits
    ref_logits = ref_logits.numpy()
    _close(logits, ref_logits, scale=max(1.0, float(np.abs(ref_logits).max())))
    _close(jax.nn.softmax(logits), jax.nn.softmax(ref_logits))
    top1 = [ref.config.id2label[int(i)] for i in logits.argmax(-1)]
    assert top1 == [ref.config.id2label[int(i)] for i in ref_logits.argmax(-1)]
    assert top1[0] == "military uniform", top1


def test_gpt2_matches_transformers_logits_and_greedy_text():
    d = _download("gpt2", ["config.json", "model.safetensors", "vocab.json", "merges.txt",
                           "tokenizer*"])  # fmt: skip
    model, variables = gpt2.from_pretrained(d)
    params = variables["params"]
    ref = transformers.GPT2LMHeadModel.from_pretrained(d).eval()
    tok = gpt2.load_tokenizer(d)
    text = "The capital of France is Paris, and the capital of Germany is"
    ids = np.asarray([tok(text)["input_ids"]], np.int32)
    logits = np.asarray(model.apply({"params": params}, jnp.asarray(ids))[0])
    with torch.no_grad():
        ref_logits = ref(torch.from_numpy(ids.astype(np.int64))).logits.numpy()
    _close(logits, ref_logits, scale=max(1.0, float(np.abs(ref_logits).max())))
    _close(jax.nn.log_softmax(logits)[0, -1], jax.nn.log_softmax(ref_logits)[0, -1], scale=10.0)
    out = gpt2.generate(model, params, ids, max_new_tokens=8, strategy="greedy")
    with torch.no_grad():
        ref_out = ref.generate(torch.from_numpy(ids.astype(np.int64)), max_new_tokens=8,
                               do_sample=False, pad_token_id=tok.eos_token_id)  # fmt: skip
    new = np.asarray(out)[0, -8:].tolist()
    assert new == ref_out[0, -8:].tolist()
    assert "Berlin" in tok.decode(new)


def _open_clip_modules():
    import importlib
    import importlib.util
    import sys

    if importlib.util.find_spec("open_clip") is None:
        pytest.skip("needs open-clip-torch: pip install --no-deps open-clip-torch==3.3.0 ftfy "
                    f"regex; then {HOW}")  # fmt: skip
    fixtures = pathlib.Path(__file__).resolve().parent / "fixtures"
    sys.path.insert(0, str(fixtures))
    try:
        make = importlib.import_module("make_open_clip_reference")
    finally:
        sys.path.remove(str(fixtures))
    return make.import_open_clip()


def test_clip_rn50_matches_open_clip_on_photographs():
    import json

    from safetensors.torch import load_file

    oc_model, _ = _open_clip_modules()
    d = _download("timm/resnet50_clip.openai",
                  ["open_clip_config.json", "open_clip_model.safetensors"])  # fmt: skip
    tok_dir = _download("openai/clip-vit-base-patch32", ["*.txt", "vocab.json", "*token*"])
    model, params = clip_resnet.from_pretrained(d)
    cfg = json.loads((d / "open_clip_config.json").read_text())["model_cfg"]
    cfg["quick_gelu"] = True  # OpenAI's weights
    ref = oc_model.CLIP(
        embed_dim=cfg["embed_dim"], vision_cfg=oc_model.CLIPVisionCfg(**cfg["vision_cfg"]),
        text_cfg=oc_model.CLIPTextCfg(**cfg["text_cfg"]), quick_gelu=True,
    )  # fmt: skip
    ref.load_state_dict(load_file(str(d / "open_clip_model.safetensors")))
    ref.eval()
    photos = _photos()
    images = preprocess.clip_preprocess(list(photos.values()), size=model.image_size)
    ids = clip.tokenize(clip.load_tokenizer(tok_dir), PROMPTS, model.context_length)
    with torch.no_grad():
        ref_img = ref.encode_image(torch.from_numpy(np.asarray(preprocess.nhwc_to_nchw(images))
                                                    .copy())).numpy()  # fmt: skip
        ref_txt = ref.encode_text(torch.from_numpy(ids.astype(np.int64))).numpy()
    img, txt = model.encode_image(params, images), model.encode_text(params, ids)
    _close(_normed(img), _normed(ref_img))
    _close(_normed(txt), _normed(ref_txt))
    assert _zero_shot_choices(img, txt) == [EXPECTED_CHOICE[k] for k in photos]
