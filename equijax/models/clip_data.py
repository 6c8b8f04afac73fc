"""Zero-shot CLIP prompt data (kept for compatibility): see :mod:`equijax.data.zero_shot`.

The class names and templates are package data now (JSON under ``equijax/data/prompts/``); every
name of :mod:`equijax.data.zero_shot` is available here as the same object.

Examples:
    >>> from equijax.models import clip_data
    >>> len(clip_data.CIFAR100_CLASSNAMES), len(clip_data.IMAGENET_CLASSNAMES)
    (100, 1000)
"""

from typing import Any

from equijax.data import zero_shot as _zero_shot

__all__ = list(_zero_shot.__all__)


def __getattr__(name: str) -> Any:
    if name in _zero_shot.__all__:
        return getattr(_zero_shot, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
