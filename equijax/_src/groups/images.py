"""Finite groups acting on images: the subgroups of D4 (quarter turns and true mirror flips,
exact pixel permutations) and C_n by rotations through ``2πk/n`` (interpolated, see
:mod:`equijax._src.image_rotation` for the maths)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from equijax._src.groups.base import Element, FiniteGroup, _table_from_elements
from equijax._src.image_rotation import rotate_images


def _d4_mul(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    # Element (k, f) acts as x -> rot^k(flip^f(x)), flip = mirror of the width axis.
    # flip rot^k = rot^{-k} flip, so (k1,f1)(k2,f2) = (k1 + (-1)^f1 k2, f1 xor f2).
    (k1, f1), (k2, f2) = a, b
    return ((k1 + (k2 if f1 == 0 else -k2)) % 4, f1 ^ f2)


@dataclasses.dataclass(frozen=True)
class ImageGroup(FiniteGroup):
    """A subgroup of D4 acting on the two spatial axes of image batches.

    Element ``(k, f)`` maps an image to ``rot90^k(mirror^f(image))``: first a true mirror
    (reversal of the width axis) if ``f == 1``, then ``k`` counter-clockwise quarter turns.
    ``mirror`` is a reflection, not a 180-degree rotation.

    Attributes:
      elements: the ``(k, f)`` pairs, identity first.
      layout: ``"NHWC"`` (spatial axes ``-3, -2``) or ``"NCHW"`` (spatial axes ``-2, -1``).
    """

    elements: tuple[tuple[int, int], ...] = ()
    layout: Literal["NHWC", "NCHW"] = "NHWC"

    @property
    def spatial_axes(self) -> tuple[int, int]:
        return (-3, -2) if self.layout == "NHWC" else (-2, -1)

    def _validate(self, x: jax.Array) -> None:
        if x.ndim < 4:
            raise ValueError(
                f"{self.name} acts on batched images of layout {self.layout} (rank >= 4), got x "
                f"with shape {x.shape}; add a batch axis (x[None]) or a channel axis."
            )
        h, w = (x.shape[a] for a in self.spatial_axes)
        rotates = any(k % 2 == 1 for k, _ in self.elements)
        if rotates and h != w:
            raise ValueError(
                f"{self.name} contains quarter turns, which need square images, got x with "
                f"spatial shape ({h}, {w}); crop or pad x to a square first."
            )

    def _apply(self, elem: tuple[int, int], x: jax.Array) -> jax.Array:
        k, f = elem
        ah, aw = self.spatial_axes
        if f:
            x = jnp.flip(x, axis=aw)
        return jnp.rot90(x, k, axes=(ah, aw)) if k else x

    def act(self, g: Element, x: ArrayLike) -> jax.Array:
        """Applies element ``g`` to a batch of images ``x`` of shape ``(..., H, W, C)``.

        Args:
          g: element index (int or traced int scalar).
          x: images in the group's layout, rank >= 4.

        Returns:
          The transformed images, same shape as ``x``.

        Examples:
          >>> import jax.numpy as jnp, equijax as ej
          >>> G = ej.groups.rot90()
          >>> x = jnp.arange(4.0).reshape(1, 2, 2, 1)
          >>> G.act(1, x)[0, ..., 0].tolist()
          [[1.0, 3.0], [0.0, 2.0]]
        """
        x = jnp.asarray(x)
        self._validate(x)
        branches = [lambda x, e=e: self._apply(e, x) for e in self.elements]
        return self._switch(g, branches, x)


def _image_group(name: str, elements: Sequence[tuple[int, int]], layout: str) -> ImageGroup:
    if layout not in ("NHWC", "NCHW"):
        raise ValueError(f"layout must be 'NHWC' or 'NCHW', got {layout!r}.")
    elements = tuple(elements)
    table = _table_from_elements(elements, _d4_mul)
    return ImageGroup(name=name, table=table, elements=elements, layout=layout)


def rot90(layout: Literal["NHWC", "NCHW"] = "NHWC") -> ImageGroup:
    """C4: rotations of square images by multiples of 90 degrees (element k = k quarter turns).

    Examples:
      >>> import equijax as ej
      >>> ej.groups.rot90().order
      4
    """
    return _image_group("rot90", [(k, 0) for k in range(4)], layout)


def rot180(layout: Literal["NHWC", "NCHW"] = "NHWC") -> ImageGroup:
    """C2: the identity and the 180-degree rotation (works on non-square images)."""
    return _image_group("rot180", [(0, 0), (2, 0)], layout)


def hflip(layout: Literal["NHWC", "NCHW"] = "NHWC") -> ImageGroup:
    """Z2: the identity and the horizontal mirror (left-right reversal of the width axis)."""
    return _image_group("hflip", [(0, 0), (0, 1)], layout)


def vflip(layout: Literal["NHWC", "NCHW"] = "NHWC") -> ImageGroup:
    """Z2: the identity and the vertical mirror (up-down reversal of the height axis).

    The vertical mirror is ``rot90^2 ∘ hflip``; element 1 is stored as ``(2, 1)``.
    """
    return _image_group("vflip", [(0, 0), (2, 1)], layout)


def dihedral(layout: Literal["NHWC", "NCHW"] = "NHWC") -> ImageGroup:
    """D4: the 8 symmetries of the square, elements ``(k, f)`` ordered ``k + 4 f``.

    Examples:
      >>> import equijax as ej
      >>> G = ej.groups.dihedral()
      >>> G.order, G.compose(4, 4)
      (8, 0)
    """
    return _image_group("dihedral", [(k, f) for f in range(2) for k in range(4)], layout)


# ----------------------------------------------------------------------------------------
# C_n rotating images through any angle (bilinear inside the disk mask).
# ----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ImageRotationGroup(FiniteGroup):
    """C_n acting on square NHWC images by rotations through ``2πk/n`` (interpolated).

    A :class:`equijax.groups.FiniteGroup`, so every method accepts it
    (``ej.equitune(fn, image_rotations(8), x)``). For ``n`` a multiple of 4 the quarter turns
    are exact; other elements are bilinear, so ``act(g, act(h, x))`` equals
    ``act(compose(g, h), x)`` only up to interpolation error.
    """

    n: int = 4
    mask: bool = True

    def angle(self, g: Any) -> jax.Array:
        """The angle ``2πg/n`` of element ``g`` (validated like every element index: a float,
        bool or non-integer array raises ``TypeError``; an integer array is taken mod ``n``)."""
        g = self._check_index(g)
        return 2.0 * jnp.pi * jnp.asarray(g, jnp.float32) / self.n

    def act(self, g: Any, x: ArrayLike) -> jax.Array:
        return rotate_images(x, self.angle(g), mask=self.mask)


def image_rotations(n: int, *, mask: bool = True) -> ImageRotationGroup:
    """C_n rotating images by multiples of ``360°/n`` (see :class:`ImageRotationGroup`).

    Examples:
      >>> import jax.numpy as jnp
      >>> G = image_rotations(8)
      >>> G.order, G.compose(5, 6)
      (8, 3)
    """
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}.")
    n = int(n)
    table = tuple(tuple((a + b) % n for b in range(n)) for a in range(n))
    return ImageRotationGroup(name=f"C{n}-images", table=table, n=n, mask=mask)
