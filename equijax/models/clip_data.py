"""Zero-shot CLIP prompt data (kept for compatibility): see :mod:`equijax.data.zero_shot`.

The class names and templates are package data now (JSON under ``equijax/data/prompts/``); this
module re-exports the same objects.

Examples:
    >>> len(CIFAR100_CLASSNAMES), len(IMAGENET_CLASSNAMES)
    (100, 1000)
"""

from equijax.data.zero_shot import (
    CIFAR100_CLASSNAMES,
    CIFAR100_TEMPLATES,
    IMAGENET_CLASSNAMES,
    IMAGENET_TEMPLATES,
    get_zero_shot_prompts,
)

__all__ = [
    "CIFAR100_CLASSNAMES",
    "CIFAR100_TEMPLATES",
    "IMAGENET_CLASSNAMES",
    "IMAGENET_TEMPLATES",
    "get_zero_shot_prompts",
]
