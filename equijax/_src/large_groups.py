"""Kept for old imports: :class:`SymmetricGroup` lives in :mod:`equijax._src.groups.symmetric`."""

from equijax._src.groups.symmetric import STRATEGIES, Strategy, SymmetricGroup

__all__ = ["STRATEGIES", "Strategy", "SymmetricGroup"]
