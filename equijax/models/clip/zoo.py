"""Loading any CLIP by the paper's name, and its zero-shot classifier, in one call each.

The helpers the CLIP experiments share (formerly in ``experiments/clip_zeroshot.py``): the paper's
backbone names, loading a ViT (Hugging Face ``CLIPModel``) or ModifiedResNet (OpenCLIP) checkpoint
behind one function, and building a dataset's zero-shot classifier from the shipped prompts
(:mod:`equijax.data.zero_shot`).

Examples:
    >>> PAPER_MODELS["RN50"]
    'timm/resnet50_clip.openai'
"""

from __future__ import annotations

import functools
import os
import pathlib
from typing import Any

import jax
import jax.numpy as jnp

from equijax.models.clip import convert
from equijax.models.clip import tokenizer as tokenizer_lib
from equijax.models.clip.model import zero_shot_classifier

__all__ = ["DEFAULT_TOKENIZER", "PAPER_MODELS", "feature_dim", "load", "zero_shot_head"]

#: The paper's CLIP backbones and the hub checkpoints that hold them.
PAPER_MODELS = {
    "ViT-B/32": "openai/clip-vit-base-patch32",
    "ViT-B/16": "openai/clip-vit-base-patch16",
    "RN50": "timm/resnet50_clip.openai",
    "RN101": "timm/resnet101_clip.openai",
}
#: Tokenizer source for checkpoints without tokenizer files (the OpenCLIP ResNets): OpenAI's BPE.
DEFAULT_TOKENIZER = "openai/clip-vit-base-patch32"


def load(name_or_path: str | os.PathLike, *, dtype: Any = None) -> tuple[Any, Any, str]:
    """``(model, variables, tokenizer_source)`` for a paper name, hub id or local directory.

    ``"ViT-B/32"``, ``"ViT-B/16"``, ``"RN50"``, ``"RN101"`` map through :data:`PAPER_MODELS`;
    the checkpoint loads with :func:`equijax.models.clip.from_pretrained` (a Hugging Face
    ``CLIPModel`` or an OpenCLIP ResNet). OpenCLIP checkpoints have no tokenizer files: their
    tokenizer source is :data:`DEFAULT_TOKENIZER` unless the directory holds ``vocab.json``.

    Args:
        name_or_path: paper name, hub id or local checkpoint directory.
        dtype: as in every ``from_pretrained`` (``None``: float32).

    Returns:
        ``(model, variables, tokenizer_source)``; pass the last to
        :func:`equijax.models.clip.load_tokenizer`.
    """
    ident = PAPER_MODELS.get(os.fspath(name_or_path), os.fspath(name_or_path))
    model, variables = convert.from_pretrained(ident, dtype=dtype)
    if convert.is_open_clip(ident):
        local = pathlib.Path(ident).expanduser()
        has_vocab = local.is_dir() and (local / "vocab.json").is_file()
        return model, variables, ident if has_vocab else DEFAULT_TOKENIZER
    return model, variables, ident


def feature_dim(model: Any, variables: Any) -> int:
    """Size of the image embeddings (without computing them).

    Examples:
        >>> from equijax.models import clip
        >>> model = clip.CLIP(clip.CLIPConfig.tiny())
        >>> feature_dim(model, model.init(jax.random.key(0)))
        8
    """
    s = model.image_size
    images = jnp.zeros((1, s, s, model.num_channels), jnp.float32)
    shape = jax.eval_shape(lambda v: model.encode_image(v, images), variables)
    return int(shape.shape[-1])


def zero_shot_head(
    model: Any,
    variables: Any,
    tokenizer: Any,
    dataset: str,
    *,
    templates: str | None = None,
) -> tuple[jax.Array, int]:
    """A dataset's zero-shot classifier ``(D, C)`` from the shipped class names and templates.

    Args:
        model: a CLIP model (e.g. from :func:`load`).
        variables: its variables.
        tokenizer: a tokenizer (:func:`equijax.models.clip.load_tokenizer`) or its source.
        dataset: ``"cifar100"``, ``"imagenet"`` or ``"imagenet_v2"`` (class names).
        templates: the template set's dataset name; default ``dataset``'s own.

    Returns:
        ``(classifier, number_of_templates)``.

    Raises:
        ValueError: unknown dataset / template set.
    """
    from equijax.data import zero_shot

    names, _ = zero_shot.get_zero_shot_prompts(dataset)
    _, temps = zero_shot.get_zero_shot_prompts(templates or dataset)
    if isinstance(tokenizer, str | os.PathLike):
        tokenizer = tokenizer_lib.load_tokenizer(tokenizer)
    encode = jax.jit(functools.partial(model.encode_text, variables))
    w = zero_shot_classifier(encode, tokenizer, names, temps,
                                  context_length=model.context_length)  # fmt: skip
    return w, len(temps)
