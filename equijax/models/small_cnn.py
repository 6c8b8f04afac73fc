"""A small convolutional classifier (for offline experiments on MNIST-style digits).

Not rotation invariant: strided 3x3 convolutions and a linear head on globally pooled
features, so a network trained on upright digits fails on rotated ones, which is the
setting where equitune / equizero / λ-equitune help.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


class SmallCNN(nn.Module):
    """Conv(3x3, stride 2) blocks with ReLU, global average pooling, and a linear head.

    Attributes:
      widths: channels of the convolution blocks.
      num_classes: logits per example.

    Returns (from ``__call__``):
      ``(logits (B, num_classes), features (B, widths[-1]))``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> net = SmallCNN(widths=(8, 16), num_classes=10)
      >>> params = net.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
      >>> logits, feats = net.apply(params, jnp.zeros((2, 28, 28, 1)))
      >>> logits.shape, feats.shape
      ((2, 10), (2, 16))
    """

    widths: Sequence[int] = (16, 32, 64)
    num_classes: int = 10

    def setup(self) -> None:
        self.convs = [
            nn.Conv(w, (3, 3), strides=(2, 2), name=f"conv_{i}") for i, w in enumerate(self.widths)
        ]
        self.head = nn.Dense(self.num_classes, name="head")

    def features(self, images: jax.Array) -> jax.Array:
        """Pooled features ``(B, widths[-1])`` of float NHWC images."""
        if images.ndim != 4:
            raise ValueError(f"images must be (B, H, W, C) NHWC, got shape {images.shape}")
        x = images
        for conv in self.convs:
            x = nn.relu(conv(x))
        return jnp.mean(x, axis=(1, 2))

    def __call__(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
        feats = self.features(images)
        return self.head(feats), feats
