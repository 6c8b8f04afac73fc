"""Every group of equijax, one module per kind.

* :mod:`.base`: :class:`FiniteGroup` (a Cayley table plus an action) and the element-index rules;
* :mod:`.images`: finite groups on images, the D4 subgroups (:func:`rot90`, :func:`hflip`,
  :func:`dihedral`, ...) and C_n by any angle (:func:`image_rotations`);
* :mod:`.permutations`: permutation groups on ids and vocabulary axes;
* :mod:`.products`: direct products;
* :mod:`.vectors`: linear actions on vectors (:func:`sign_flip`, :func:`cyclic`);
* :mod:`.continuous`: SO(2) on vectors (:class:`SO2`) and on images (:class:`ImageRotation`);
* :mod:`.symmetric`: S_n on point sets without a Cayley table (:class:`SymmetricGroup`).

This package re-exports every name its modules define (private helpers included), so
``from equijax._src.groups import X`` works for every ``X`` of the former single module.
"""

# Private helpers of the former single module are re-exported (`_x as _x`) for old imports.
from equijax._src.groups.base import Element, FiniteGroup
from equijax._src.groups.base import _as_table_tuple as _as_table_tuple
from equijax._src.groups.base import _check_n as _check_n
from equijax._src.groups.base import _check_table as _check_table
from equijax._src.groups.base import _element as _element
from equijax._src.groups.base import _is_static_int as _is_static_int
from equijax._src.groups.base import _table_from_elements as _table_from_elements
from equijax._src.groups.continuous import SO2, AngleLaw, ImageRotation
from equijax._src.groups.images import (
    ImageGroup,
    ImageRotationGroup,
    dihedral,
    hflip,
    image_rotations,
    rot90,
    rot180,
    vflip,
)
from equijax._src.groups.images import _d4_mul as _d4_mul
from equijax._src.groups.images import _image_group as _image_group
from equijax._src.groups.permutations import _MAX_ORDER as _MAX_ORDER
from equijax._src.groups.permutations import _PREBUILT as _PREBUILT
from equijax._src.groups.permutations import (
    PermutationGroup,
    generated,
    permutation,
    permutation_group,
)
from equijax._src.groups.permutations import _as_perm as _as_perm
from equijax._src.groups.permutations import _closure as _closure
from equijax._src.groups.permutations import _perm_from_cycles as _perm_from_cycles
from equijax._src.groups.permutations import _perm_mul as _perm_mul
from equijax._src.groups.permutations import _perm_table as _perm_table
from equijax._src.groups.permutations import _permutation_group_from as _permutation_group_from
from equijax._src.groups.permutations import (
    _trusted_permutation_group as _trusted_permutation_group,
)
from equijax._src.groups.products import ProductGroup, product
from equijax._src.groups.symmetric import STRATEGIES, Strategy, SymmetricGroup
from equijax._src.groups.vectors import SignFlipGroup, VectorRotationGroup, cyclic, sign_flip
from equijax._src.groups.vectors import _rotate as _rotate

__all__ = [
    "SO2",
    "STRATEGIES",
    "AngleLaw",
    "Element",
    "FiniteGroup",
    "ImageGroup",
    "ImageRotation",
    "ImageRotationGroup",
    "PermutationGroup",
    "ProductGroup",
    "SignFlipGroup",
    "Strategy",
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
