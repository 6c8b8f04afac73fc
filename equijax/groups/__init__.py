"""Every group of equijax: finite groups (and SO(2)) with their actions on images, ids, vectors
and point sets.

By kind (one engine module each, under ``equijax/_src/groups/``):

* images: :func:`rot90`, :func:`rot180`, :func:`hflip`, :func:`vflip`, :func:`dihedral`
  (:class:`ImageGroup`, exact pixel permutations) and :func:`image_rotations` (C_n by any
  angle, :class:`ImageRotationGroup`);
* permutations of ids: :func:`permutation`, :func:`permutation_group`, :func:`generated`
  (:class:`PermutationGroup`); direct products: :func:`product` (:class:`ProductGroup`);
* vectors: :func:`sign_flip` (:class:`SignFlipGroup`), :func:`cyclic`
  (:class:`VectorRotationGroup`);
* continuous: :class:`SO2` (on vectors) and :class:`ImageRotation` (on images), elements are
  angles;
* too large to enumerate: :class:`SymmetricGroup` (S_n on point sets, elements are
  permutation arrays, no Cayley table).

Contract relied on across equijax: ``G.order`` (int), ``G.act(g, x)`` for an element index
``g`` in ``[0, G.order)`` (a Python int or a traced int scalar), identity ``0``,
``G.compose(g, h)``, ``G.inverse(g)``; permutation groups also have ``G.act_axis(g, y, axis)``.

Element indices: a Python ``int`` out of range raises ``ValueError``; a ``float``, ``bool`` or
non-integer array raises ``TypeError``; an integer array (traced or not) is taken modulo
``G.order`` by ``act``, ``compose`` and ``inverse``. ``PermutationGroup.act`` leaves ids outside
``[0, n)`` unchanged under ``jit`` (and raises for a concrete array). Permutation groups build in
``O(|G|²)`` memory; S7 (order 5040) is about the practical limit.
"""

from equijax._src.groups import (
    SO2,
    FiniteGroup,
    ImageGroup,
    ImageRotation,
    ImageRotationGroup,
    PermutationGroup,
    ProductGroup,
    SignFlipGroup,
    SymmetricGroup,
    VectorRotationGroup,
    cyclic,
    dihedral,
    generated,
    hflip,
    image_rotations,
    permutation,
    permutation_group,
    product,
    rot90,
    rot180,
    sign_flip,
    vflip,
)

__all__ = [
    "SO2",
    "FiniteGroup",
    "ImageGroup",
    "ImageRotation",
    "ImageRotationGroup",
    "PermutationGroup",
    "ProductGroup",
    "SignFlipGroup",
    "SymmetricGroup",
    "VectorRotationGroup",
    "cyclic",
    "dihedral",
    "generated",
    "hflip",
    "image_rotations",
    "permutation",
    "permutation_group",
    "product",
    "rot90",
    "rot180",
    "sign_flip",
    "vflip",
]
