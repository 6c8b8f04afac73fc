"""Flax linen shells around the functional core."""

from equijax._src.nn import EquiTune, EquiZero, LambdaEquiTune, LambdaNet

__all__ = ["EquiTune", "EquiZero", "LambdaEquiTune", "LambdaNet"]
