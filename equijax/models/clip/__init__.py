"""CLIP in Flax: ViT towers from Hugging Face ``CLIPModel``, ResNet towers from OpenCLIP files.

The ViT port follows ``transformers``' ``CLIPModel`` (Radford et al., 2021) weight for weight, so
a checkpoint such as ``openai/clip-vit-base-patch32`` (ViT-B/32), ``openai/clip-vit-base-patch16``
(ViT-B/16) or any other size described by its ``config.json`` loads without conversion scripts;
the ModifiedResNet port (:class:`CLIPResNet`: RN50, RN101) reads OpenCLIP checkpoints such as
``timm/resnet50_clip.openai``. ``model, variables = clip.from_pretrained(name_or_path)`` loads
either.

Everything is exposed as pure functions of ``(params, inputs)``:

* :meth:`CLIP.encode_image` -- ``(B, H, W, C)`` float images (**NHWC**, already preprocessed with
  :func:`equijax.models.preprocess.clip_preprocess`; use
  :func:`equijax.models.preprocess.nchw_to_nhwc` for PyTorch-layout arrays) -> ``(B, D)``,
* :meth:`CLIP.encode_text` -- ``(N, T)`` int token ids -> ``(N, D)``,
* :meth:`CLIP.logits` -- ``exp(s) * norm(image) @ norm(text).T`` as in ``CLIPModel``,
* :meth:`CLIP.zero_shot_logits` -- image logits against a classifier built by
  :func:`zero_shot_classifier` from class names x prompt templates,

so ``jax.jit``, ``jax.grad`` (w.r.t. ``params``) and the equijax symmetrisers compose with them,
e.g. ``ej.equitune(lambda x: model.zero_shot_logits(params, x, W), G, images)``.

The package reads like the family it ports: :mod:`~equijax.models.clip.model` (configs, ViT
towers, the functional shell :class:`CLIPBase` shared by both towers),
:mod:`~equijax.models.clip.resnet` (the ModifiedResNet config and towers,
:class:`CLIPResNet`), :mod:`~equijax.models.clip.convert` (the name mappings of both checkpoint
formats and :func:`from_pretrained`), :mod:`~equijax.models.clip.tokenizer` (BPE vocabulary
files, :func:`load_tokenizer`, :func:`tokenize`) and :mod:`~equijax.models.clip.zoo` (the
paper's backbones by name, a dataset's zero-shot classifier). The public names of ``model``,
``resnet``, ``convert`` and ``tokenizer`` are re-exported here.

``params`` is a Flax variables dict ``{"params": ...}`` whose module names mirror the Hugging Face
names (``vision_model/encoder/layers_0/self_attn/q_proj/kernel`` <->
``vision_model.encoder.layers.0.self_attn.q_proj.weight``).

Examples:
    >>> import jax, jax.numpy as jnp
    >>> config = CLIPConfig.tiny()
    >>> model = CLIP(config)
    >>> params = model.init(jax.random.key(0))
    >>> images = jnp.zeros((2, config.vision.image_size, config.vision.image_size, 3))
    >>> ids = jnp.array([[1, 5, 7, config.text.eos_token_id, 0]])
    >>> model.logits(params, images, ids).shape
    (2, 1)
"""

from equijax.models.clip import convert, model, resnet, tokenizer, zoo
from equijax.models.clip.convert import *  # noqa: F403
from equijax.models.clip.model import *  # noqa: F403
from equijax.models.clip.resnet import *  # noqa: F403
from equijax.models.clip.tokenizer import *  # noqa: F403

__all__ = [*model.__all__, *resnet.__all__, *convert.__all__, *tokenizer.__all__, "zoo"]
