r"""A learned, rotation-equivariant image canonicalizer (Kaba et al. 2022; equiadapt-style).

A small network of isotropic convolutions outputs an orientation :math:`h(x)` with
:math:`h(R_\theta x) = h(x) + \theta` (exactly for quarter turns, up to discretisation
otherwise). Canonicalization is :math:`x \mapsto R_{-h(x)} x`, invariant up to
interpolation error. Training uses equiadapt's *prior regularisation*: on upright training
images the canonical pose should be the identity, :math:`\mathcal L_\text{prior} =
\mathbb E[1 - \cos h(x)]`.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from equijax._src.equitune import equitune
from equijax._src.groups import cyclic, image_rotations
from equijax._src.image_rotation import rotate_images


class IsotropicConv(nn.Module):
    """A convolution with radially symmetric kernels (weights shared by distance rings).

    The kernel is invariant under the symmetries of the square grid, so the layer commutes
    exactly with quarter turns and mirrors, and with rotations by any angle up to the
    discretisation of the rings.

    Attributes:
      features: output channels.
      size: odd kernel size (default 5: rings at squared distances 0, 1, 2, 4, 5, 8).
    """

    features: int
    size: int = 5

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.size % 2 != 1:
            raise ValueError(f"size must be odd, got {self.size}.")
        r = self.size // 2
        d2 = np.add.outer(np.arange(-r, r + 1) ** 2, np.arange(-r, r + 1) ** 2)
        rings, ring_of = np.unique(d2, return_inverse=True)
        w = self.param(
            "rings",
            nn.initializers.lecun_normal(in_axis=(0, 1), out_axis=2),
            (len(rings), x.shape[-1], self.features),
        )
        b = self.param("bias", nn.initializers.zeros, (self.features,))
        kernel = w[jnp.asarray(ring_of.reshape(self.size, self.size))]  # (k, k, in, out)
        y = jax.lax.conv_general_dilated(
            x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        return y + b


class RotationCanonicalizer(nn.Module):
    r"""Predicts an orientation angle ``h(x)`` that rotates with the image.

    Isotropic convolutions (:class:`IsotropicConv`) give per-pixel feature maps that rotate
    with the image; the output vector is their position-weighted sum around the image centre,

    .. math::

        v(x) = \sum_{c}\sum_{p} a_c\, f_c(x)(p)\, (p - p_0), \qquad
        h(x) = \operatorname{atan2} v(x),

    which rotates with the image: exactly for quarter turns (and mirrors act as reflections),
    up to discretisation for other angles. ``orientations=n > 1`` additionally averages over
    C_n with :func:`equijax.equitune` (vector output action), removing residual anisotropy at
    multiples of ``360°/n`` at ``n`` times the cost.

    Attributes:
      widths: channels of the isotropic convolutions.
      orientations: ``n`` of the optional C_n averaging (1: none).

    Returns (from ``__call__``):
      Angles ``(B,)`` in radians; ``return_vector=True`` returns the 2-vectors ``(B, 2)``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> net = RotationCanonicalizer(widths=(4, 4))
      >>> x = jax.random.normal(jax.random.key(0), (2, 12, 12, 1))
      >>> params = net.init(jax.random.key(1), x)
      >>> h = net.apply(params, x)
      >>> h_rot = net.apply(params, jnp.rot90(x, 1, axes=(1, 2)))
      >>> bool(jnp.allclose(jnp.cos(h_rot - h - jnp.pi / 2), 1.0, atol=1e-5))
      True
    """

    widths: Sequence[int] = (8, 8, 8)
    orientations: int = 1

    @nn.compact
    def __call__(self, images: jax.Array, *, return_vector: bool = False) -> jax.Array:
        convs = [IsotropicConv(w, name=f"conv_{i}") for i, w in enumerate(self.widths)]
        mix = nn.Dense(1, use_bias=False, name="mix")

        def s(x: jax.Array) -> jax.Array:
            for conv in convs:
                x = nn.gelu(conv(x))
            weights = mix(x)[..., 0]  # (B, H, W)
            h, w = x.shape[1:3]
            u = jnp.arange(h, dtype=x.dtype) - (h - 1) / 2
            v = jnp.arange(w, dtype=x.dtype) - (w - 1) / 2
            # image axes (row down, column right) -> (x right, y up), so angles are
            # counter-clockwise as displayed, like rotate_images
            vx = jnp.einsum("bhw,w->b", weights, v)
            vy = jnp.einsum("bhw,h->b", weights, -u)
            return jnp.stack([vx, vy], axis=-1) / (h * w)

        if self.orientations == 1:
            vec = s(images)
        else:
            G = image_rotations(self.orientations)
            vec = equitune(s, G, images, out_action=cyclic(self.orientations).act, batching="fold")
        if return_vector:
            return vec
        return jnp.arctan2(vec[:, 1], vec[:, 0])


def prior_loss(angles: ArrayLike) -> jax.Array:
    r"""equiadapt's prior regularisation for SO(2): :math:`\operatorname{mean}(1 - \cos h)`.

    Applied to the canonicalizer's angles on *upright* training images, it pulls their
    canonical pose to the identity, so the canonicalized input looks like the pretraining data.

    Examples:
      >>> import jax.numpy as jnp
      >>> float(prior_loss(jnp.array([0.0, jnp.pi])))
      1.0
    """
    return jnp.mean(1.0 - jnp.cos(jnp.asarray(angles)))


def canonicalize(images: ArrayLike, angles: ArrayLike) -> jax.Array:
    """``R_{-h(x)} x``: rotates each image back by its predicted angle (see
    :func:`equijax.rotations.rotate_images`)."""
    return rotate_images(images, -jnp.asarray(angles))
