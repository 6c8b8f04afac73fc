"""Datasets.

* :mod:`equijax.data.scan` — SCAN generated from its grammar (embedded, no download), the
  ``add_jump`` and ``around_right`` splits, vocabularies, batching and the symmetry groups;
* :mod:`equijax.data.images` — tfds / image-folder / MNIST-idx sources, batching and per-image
  random test-time transformations;
* :mod:`equijax.data.zero_shot` — CLIP zero-shot class names and prompt templates, shipped as
  JSON package data (``equijax/data/prompts/*.json``).
"""

from equijax.data import images, scan, zero_shot

__all__ = ["images", "scan", "zero_shot"]
