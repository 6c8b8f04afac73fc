"""Kept for old imports: :class:`SymmetricGroup` lives in :mod:`equijax._src.groups.symmetric`."""

from equijax._src.groups.symmetric import _MAX_ENUMERATE as _MAX_ENUMERATE
from equijax._src.groups.symmetric import _MAX_RANKED as _MAX_RANKED
from equijax._src.groups.symmetric import STRATEGIES, Strategy, SymmetricGroup
from equijax._src.groups.symmetric import _all_permutations as _all_permutations
from equijax._src.groups.symmetric import _floyd_sample as _floyd_sample
from equijax._src.groups.symmetric import _random_perms as _random_perms
from equijax._src.groups.symmetric import _sample as _sample
from equijax._src.groups.symmetric import _unrank as _unrank

__all__ = ["STRATEGIES", "Strategy", "SymmetricGroup"]
