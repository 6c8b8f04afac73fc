"""Continuous groups: SO(2) on angles, acting on 2-D vectors (:class:`SO2`) and on square NHWC
images (:class:`ImageRotation`). They have no Cayley table: elements are angles in radians,
``compose`` adds and ``inverse`` negates (:class:`AngleLaw`). Used by
:func:`equijax.canonical_lambda_equitune`."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from equijax._src.groups.vectors import _rotate
from equijax._src.image_rotation import rotate_images


class AngleLaw:
    """The group law of SO(2) on angles (radians): ``compose`` adds, ``inverse`` negates, the
    identity is 0. Shared by :class:`SO2` (on vectors) and ``ImageRotation`` (on images), which
    add their own ``act``."""

    @staticmethod
    def compose(a: ArrayLike, b: ArrayLike) -> jax.Array:
        return jnp.asarray(a) + jnp.asarray(b)

    @staticmethod
    def inverse(a: ArrayLike) -> jax.Array:
        return -jnp.asarray(a)

    @staticmethod
    def identity() -> jax.Array:
        return jnp.zeros(())


@dataclasses.dataclass(frozen=True)
class SO2(AngleLaw):
    """The continuous rotation group SO(2) acting on 2-D vectors; elements are angles (radians).

    ``act(theta, x)`` rotates the vectors ``x[..., :]`` (last axis of length 2) by ``theta``,
    a scalar or one angle per example (a prefix of ``x.shape[:-1]``). Used by
    :func:`equijax.canonical_lambda_equitune`.

    Examples:
      >>> import jax.numpy as jnp, equijax as ej
      >>> G = ej.groups.SO2()
      >>> v = G.act(jnp.pi / 2, jnp.array([1.0, 0.0]))
      >>> bool(jnp.allclose(v, jnp.array([0.0, 1.0]), atol=1e-6))
      True
    """

    name: str = "SO2"

    def act(self, theta: ArrayLike, x: ArrayLike) -> jax.Array:
        return _rotate(jnp.asarray(theta), jnp.asarray(x))


@dataclasses.dataclass(frozen=True)
class ImageRotation(AngleLaw):
    """SO(2) acting on square NHWC images by :func:`rotate_images`; elements are angles.

    Has ``compose``/``inverse``/``identity``/``act`` like :class:`equijax.groups.SO2`, so it
    plugs into :func:`equijax.canonical_lambda_equitune` (``group=ImageRotation()``).

    Examples:
      >>> import jax.numpy as jnp
      >>> G = ImageRotation()
      >>> x = jnp.ones((2, 5, 5, 1))
      >>> G.act(jnp.array([0.3, -1.0]), x).shape
      (2, 5, 5, 1)
    """

    name: str = "SO2-images"
    mask: bool = True

    def act(self, theta: ArrayLike, x: ArrayLike) -> jax.Array:
        return rotate_images(x, theta, mask=self.mask)
