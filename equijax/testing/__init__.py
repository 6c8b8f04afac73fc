"""Equivariance assertions for your own models (built on chex)."""

from equijax._src.testing import assert_equivariant, assert_invariant, equivariance_error

__all__ = ["assert_equivariant", "assert_invariant", "equivariance_error"]
