"""Finite groups (and SO(2)) with their actions on images, ids, vocabularies and vectors.

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
    PermutationGroup,
    ProductGroup,
    SignFlipGroup,
    VectorRotationGroup,
    cyclic,
    dihedral,
    generated,
    hflip,
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
    "PermutationGroup",
    "ProductGroup",
    "SignFlipGroup",
    "VectorRotationGroup",
    "cyclic",
    "dihedral",
    "generated",
    "hflip",
    "permutation",
    "permutation_group",
    "product",
    "rot90",
    "rot180",
    "sign_flip",
    "vflip",
]
