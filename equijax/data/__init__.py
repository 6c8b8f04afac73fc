"""Datasets.

* :mod:`equijax.data.scan` — SCAN generated from its grammar (embedded, no download), the
  ``add_jump`` and ``around_right`` splits, vocabularies, batching and the symmetry groups;
* :mod:`equijax.data.images` — tfds / image-folder / MNIST-idx sources, batching and per-image
  random test-time transformations.
"""

from equijax.data import images, scan

__all__ = ["images", "scan"]
