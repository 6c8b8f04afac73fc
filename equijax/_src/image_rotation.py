r"""The maths of rotating NHWC images by any angle (the action of SO(2) and C_n on images).

The action (counter-clockwise as displayed, about the image centre):

.. math::

    (R_\theta x)(p) = m(p)\; \mathrm{bilinear}(m \odot x)\big(c + R_{-\theta}(p - c)\big)

with :math:`m` the disk of radius :math:`\min(H, W)/2` (the circular mask): rotation maps the
disk onto itself, so the action is defined without inventing corners. The angle is split as
:math:`\theta = k\pi/2 + r` with :math:`|r| \le \pi/4`; the quarter turns are exact pixel
permutations (``jnp.rot90``) and only the residual :math:`r` is interpolated. Hence for
multiples of 90° the result is **bitwise** ``m ⊙ rot90^k(x)``, and
``R_{θ + π/2} x == rot90(R_θ x)`` up to float round-off.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

_SNAP = 1e-5  # residual angles below this (radians) count as exact quarter turns


def _check_images(x: jax.Array) -> None:
    if x.ndim != 4:
        raise ValueError(
            f"images must be a (B, H, W, C) NHWC batch, got shape {x.shape}; add a batch axis "
            "with x[None] or a channel axis with x[..., None]."
        )
    if x.shape[1] != x.shape[2]:
        raise ValueError(
            f"rotations by any angle need square images, got spatial shape {x.shape[1:3]}; crop "
            "or pad to a square first."
        )


def disk_mask(size: int, dtype: Any = jnp.float32) -> jax.Array:
    """The circular mask ``(size, size, 1)``: 1 where the pixel centre lies in the inscribed disk.

    Invariant under quarter turns and mirrors of the square grid.

    Examples:
      >>> disk_mask(4)[..., 0].astype(int).tolist()
      [[0, 1, 1, 0], [1, 1, 1, 1], [1, 1, 1, 1], [0, 1, 1, 0]]
    """
    c = (size - 1) / 2.0
    i = jnp.arange(size, dtype=jnp.float32) - c
    r2 = i[:, None] ** 2 + i[None, :] ** 2
    return (r2 <= (size / 2.0) ** 2).astype(dtype)[..., None]


def _quarter_turns(x: jax.Array, k: jax.Array) -> jax.Array:
    """``rot90(x[b], k[b])`` per example (k in 0..3), by exact selection among the four."""
    outs = [jnp.rot90(x, j, axes=(1, 2)) for j in range(4)]
    sel = k.reshape(-1, 1, 1, 1)
    out = outs[0]
    for j in range(1, 4):
        out = jnp.where(sel == j, outs[j], out)
    return out


def _bilinear_rotate(x: jax.Array, r: jax.Array) -> jax.Array:
    """Rotates each image by its residual angle ``r[b]`` with bilinear interpolation (zeros
    outside the image)."""
    _, h, w, _ = x.shape
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    u = jnp.arange(h, dtype=jnp.float32) - cy
    v = jnp.arange(w, dtype=jnp.float32) - cx
    uu, vv = jnp.meshgrid(u, v, indexing="ij")

    def one(img: jax.Array, angle: jax.Array) -> jax.Array:
        c, s = jnp.cos(angle), jnp.sin(angle)
        sy = cy + c * uu + s * vv
        sx = cx - s * uu + c * vv
        y0, x0 = jnp.floor(sy), jnp.floor(sx)
        fy, fx = sy - y0, sx - x0
        y0i, x0i = y0.astype(jnp.int32), x0.astype(jnp.int32)
        out = jnp.zeros_like(img)
        for dy, wy in ((0, 1.0 - fy), (1, fy)):
            for dx, wx in ((0, 1.0 - fx), (1, fx)):
                yi, xi = y0i + dy, x0i + dx
                ok = (yi >= 0) & (yi < h) & (xi >= 0) & (xi < w)
                val = img[jnp.clip(yi, 0, h - 1), jnp.clip(xi, 0, w - 1)]
                wgt = jnp.where(ok, wy * wx, 0.0)[..., None].astype(img.dtype)
                out = out + wgt * val
        return out

    return jax.vmap(one)(x, r)


def rotate_images(images: ArrayLike, angles: ArrayLike, *, mask: bool = True) -> jax.Array:
    r"""Rotates NHWC images counter-clockwise by ``angles`` (radians), bilinear, masked.

    Args:
      images: ``(B, H, W, C)`` float images, square.
      angles: a scalar or one angle per image ``(B,)``.
      mask: apply the circular mask to input and output (default; needed for an action
        that composes: without it, corners are cut differently at every angle).

    Returns:
      ``(B, H, W, C)`` images. Exact for multiples of 90° (bitwise ``mask * rot90``);
      differentiable in ``images`` and ``angles``; ``jit``/``vmap``-friendly.

    Raises:
      ValueError: non-square or non-batched images, misshapen angles, or concrete angles that
        are not finite (traced angles cannot be checked).

    Examples:
      >>> import jax.numpy as jnp
      >>> x = jnp.arange(16.0).reshape(1, 4, 4, 1)
      >>> y = rotate_images(x, jnp.pi / 2)
      >>> bool((y == disk_mask(4) * jnp.rot90(x, 1, axes=(1, 2))).all())
      True
    """
    x = jnp.asarray(images)
    _check_images(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float32)
    angles = jnp.asarray(angles, jnp.float32)
    if angles.ndim > 1 or (angles.ndim == 1 and angles.shape[0] != x.shape[0]):
        raise ValueError(
            f"angles must be a scalar or one angle per image, shape ({x.shape[0]},), got "
            f"{angles.shape}."
        )
    if not isinstance(angles, jax.core.Tracer) and not bool(jnp.isfinite(angles).all()):
        raise ValueError(
            f"angles must be finite, got {int((~jnp.isfinite(angles)).sum())} NaN or infinite "
            "angle(s); a non-finite angle is no rotation."
        )
    return _rotate(x, angles, mask)


@functools.partial(jax.jit, static_argnums=(2,))
def _rotate(x: jax.Array, angles: jax.Array, mask: bool) -> jax.Array:
    theta = jnp.broadcast_to(angles, (x.shape[0],))
    quarter = jnp.float32(math.pi / 2)
    k = jnp.round(theta / quarter)
    r = theta - k * quarter
    r = jnp.where(jnp.abs(r) < _SNAP, 0.0, r)
    k = jnp.mod(k.astype(jnp.int32), 4)
    m = disk_mask(x.shape[1], x.dtype) if mask else None
    if m is not None:
        x = x * m
    x = _quarter_turns(x, k)
    exact = (r == 0).reshape(-1, 1, 1, 1)
    # The residual rotation never moves a masked-in pixel to a non-integer source when r == 0,
    # but we select explicitly so the quarter-turn case is bitwise exact (and its gradient is
    # the permutation's).
    safe_r = jnp.where(r == 0, 0.0, r)
    x = jnp.where(exact, x, _bilinear_rotate(x, safe_r))
    if m is not None:
        x = x * m
    return x
