"""Zero-shot CLIP prompts as package data: class names and prompt templates per dataset.

The lists live in JSON files under ``equijax/data/prompts/`` (``cifar100.json``,
``imagenet.json``: ``{"source", "order", "classnames", "templates"}``), read once with
:mod:`importlib.resources`, so they ship inside the wheel and work from a zip import too.

Attribution (also in each file's ``"source"``): the CIFAR-100 class names and 18 templates and
the 80 ImageNet templates are those published by OpenAI with CLIP (Radford et al., 2021,
https://github.com/openai/CLIP, ``data/prompts.md`` and
``notebooks/Prompt_Engineering_for_ImageNet.ipynb``, MIT licence); the ImageNet class names are
OpenAI's curated list as distributed in OpenCLIP (https://github.com/mlfoundations/open_clip,
``src/open_clip/zero_shot_metadata.py``, MIT licence). Templates are ``str.format`` strings with
one ``{}``. CIFAR-100 class names are in label order (fine labels, alphabetical, underscores
replaced by spaces); ImageNet class names in the standard 1000-class index order (also
ImageNet-V2's).

Examples:
    >>> len(CIFAR100_CLASSNAMES), len(CIFAR100_TEMPLATES), len(IMAGENET_TEMPLATES)
    (100, 18, 80)
    >>> CIFAR100_TEMPLATES[0].format(CIFAR100_CLASSNAMES[0])
    'a photo of a apple.'
"""

from __future__ import annotations

import functools
import json
from importlib import resources

__all__ = [
    "CIFAR100_CLASSNAMES",
    "CIFAR100_TEMPLATES",
    "IMAGENET_CLASSNAMES",
    "IMAGENET_TEMPLATES",
    "get_zero_shot_prompts",
    "prompt_sets",
]


@functools.cache
def _load(name: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    path = resources.files("equijax.data").joinpath("prompts", f"{name}.json")
    data = json.loads(path.read_text(encoding="utf-8"))
    return tuple(data["classnames"]), tuple(data["templates"])


def prompt_sets() -> tuple[str, ...]:
    """Names of the shipped prompt files (``"cifar100"``, ``"imagenet"``).

    Examples:
        >>> prompt_sets()
        ('cifar100', 'imagenet')
    """
    folder = resources.files("equijax.data").joinpath("prompts")
    return tuple(sorted(p.name[: -len(".json")] for p in folder.iterdir()
                        if p.name.endswith(".json")))  # fmt: skip


_CIFAR100, _IMAGENET = _load("cifar100"), _load("imagenet")
#: CIFAR-100 class names in label order.
CIFAR100_CLASSNAMES = _CIFAR100[0]
#: The CLIP prompt templates for CIFAR-100 (``str.format`` with the class name).
CIFAR100_TEMPLATES = _CIFAR100[1]
#: ImageNet (and ImageNet-V2) class names in index order.
IMAGENET_CLASSNAMES = _IMAGENET[0]
#: The 80 CLIP prompt templates for ImageNet.
IMAGENET_TEMPLATES = _IMAGENET[1]

_ALIASES = {"cifar100": "cifar100", "imagenet": "imagenet", "imagenet_v2": "imagenet"}


def get_zero_shot_prompts(dataset: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Class names and templates for ``"cifar100"``, ``"imagenet"`` or ``"imagenet_v2"``.

    Returns:
        ``(classnames, templates)`` (the module-level tuples, not copies).

    Raises:
        ValueError: unknown dataset name.

    Examples:
        >>> names, templates = get_zero_shot_prompts("imagenet_v2")
        >>> len(names), len(templates)
        (1000, 80)
    """
    key = dataset.lower().replace("-", "_")
    if key not in _ALIASES:
        raise ValueError(f"dataset={dataset!r} is not one of {sorted(_ALIASES)}")
    return _load(_ALIASES[key])
