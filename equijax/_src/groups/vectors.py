"""Finite groups acting linearly on vectors: sign flips (diagonal reflections) and C_n
rotating 2-D vectors."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from equijax._src.groups.base import Element, FiniteGroup, _check_n


@dataclasses.dataclass(frozen=True)
class SignFlipGroup(FiniteGroup):
    """Z2 acting on the last axis by ``x -> x * signs`` (a diagonal reflection).

    Example: CartPole's reflection ``s -> -s`` is ``sign_flip([-1, -1, -1, -1])``.
    """

    signs: tuple[float, ...] = ()

    def act(self, g: Element, x: ArrayLike) -> jax.Array:
        x = jnp.asarray(x)
        if x.ndim == 0 or x.shape[-1] != len(self.signs):
            raise ValueError(
                f"sign_flip with {len(self.signs)} signs acts on arrays whose last axis has "
                f"length {len(self.signs)}, got x with shape {x.shape}."
            )
        signs = jnp.asarray(self.signs, dtype=x.dtype)
        g = self._check_index(g)
        if isinstance(g, int):
            return x * signs if g else x
        return jnp.where(g == 1, x * signs, x)


def sign_flip(signs: Sequence[float], *, name: str = "sign_flip") -> SignFlipGroup:
    """Z2 whose non-identity element multiplies the last axis by ``signs`` (entries ±1).

    Examples:
      >>> import jax.numpy as jnp, equijax as ej
      >>> ej.groups.sign_flip([1, -1]).act(1, jnp.array([2.0, 3.0])).tolist()
      [2.0, -3.0]
    """
    signs = tuple(float(s) for s in signs)
    if not signs or any(s not in (1.0, -1.0) for s in signs):
        raise ValueError(f"signs must be a non-empty sequence of ±1, got {signs}.")
    if all(s == 1.0 for s in signs):
        raise ValueError("signs are all +1: that is the trivial action; flip at least one entry.")
    return SignFlipGroup(name=name, table=((0, 1), (1, 0)), signs=signs)


def _rotate(theta: jax.Array, x: jax.Array) -> jax.Array:
    if x.ndim == 0 or x.shape[-1] != 2:
        raise ValueError(
            f"rotations act on 2-D vectors (last axis of length 2), got shape {x.shape}."
        )
    theta = jnp.asarray(theta, dtype=x.dtype)
    extra = x.ndim - 1 - theta.ndim
    if extra < 0 or x.shape[: theta.ndim] != theta.shape:
        raise ValueError(
            f"angles of shape {theta.shape} must be a prefix of the vector batch shape "
            f"{x.shape[:-1]} (one angle per example, or a scalar)."
        )
    theta = theta.reshape(theta.shape + (1,) * extra)
    c, s = jnp.cos(theta), jnp.sin(theta)
    return jnp.stack([c * x[..., 0] - s * x[..., 1], s * x[..., 0] + c * x[..., 1]], axis=-1)


@dataclasses.dataclass(frozen=True)
class VectorRotationGroup(FiniteGroup):
    """C_n: rotations of 2-D vectors (last axis of length 2) by ``2 pi k / n``."""

    def angle(self, g: Element) -> jax.Array:
        g = self._check_index(g)
        return 2.0 * jnp.pi * jnp.asarray(g, jnp.float32) / self.order

    def act(self, g: Element, x: ArrayLike) -> jax.Array:
        return _rotate(self.angle(g), jnp.asarray(x))


def cyclic(n: int) -> VectorRotationGroup:
    """C_n acting on 2-D vectors by rotations through multiples of ``2 pi / n``.

    Examples:
      >>> import jax.numpy as jnp, equijax as ej
      >>> v = ej.groups.cyclic(4).act(1, jnp.array([1.0, 0.0]))
      >>> bool(jnp.allclose(v, jnp.array([0.0, 1.0]), atol=1e-6))
      True
    """
    n = _check_n(n)
    table = tuple(tuple((a + b) % n for b in range(n)) for a in range(n))
    return VectorRotationGroup(name=f"C{n}", table=table)
