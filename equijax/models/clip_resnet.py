"""CLIP ResNet's former module: its names now live in :mod:`equijax.models.clip`.

The ModifiedResNet CLIP port is part of the CLIP package (:mod:`equijax.models.clip.resnet`,
its OpenCLIP name mapping in :mod:`equijax.models.clip.convert`); ``clip.from_pretrained``
loads OpenCLIP checkpoints too. This module keeps the old names working:
``clip_resnet.from_pretrained`` is :func:`equijax.models.clip.from_open_clip`.

Examples:
    >>> from equijax.models import clip
    >>> from_pretrained is clip.from_open_clip and CLIPResNet is clip.CLIPResNet
    True
"""

from equijax.models.clip.convert import from_open_clip as from_pretrained
from equijax.models.clip.convert import open_clip_to_flax
from equijax.models.clip.resnet import (
    CLIPResNet,
    CLIPResNetConfig,
    CLIPResNetModule,
    ModifiedResNet,
)

__all__ = [
    "CLIPResNet",
    "CLIPResNetConfig",
    "CLIPResNetModule",
    "ModifiedResNet",
    "from_pretrained",
    "open_clip_to_flax",
]
