"""The multi-head attention core shared by the CLIP towers (ViT/text encoder and RN attention pool).

Examples:
    >>> import jax, jax.numpy as jnp
    >>> q = jax.random.normal(jax.random.key(0), (2, 1, 4, 8))   # (B, Tq, heads, head_dim)
    >>> kv = jax.random.normal(jax.random.key(1), (2, 5, 4, 8))  # (B, Tk, heads, head_dim)
    >>> attend(q, kv, kv).shape
    (2, 1, 4, 8)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["attend"]


def attend(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Scaled dot-product attention per head: ``softmax(q kᵀ / √d) v``.

    Scores and softmax are computed in float32 (then cast to ``v.dtype``); masked-out keys get
    the smallest float32 score, so a row with at least one allowed key ignores them exactly.

    Args:
        q: ``(B, Tq, H, d)`` queries.
        k: ``(B, Tk, H, d)`` keys.
        v: ``(B, Tk, H, d)`` values.
        mask: boolean, broadcastable to ``(B, H, Tq, Tk)``; ``True`` = may attend. ``None``: all.

    Returns:
        ``(B, Tq, H, d)`` attended values.
    """
    d = q.shape[-1]
    scores = jnp.einsum("bqhd,bkhd->bhqk", q * (d**-0.5), k).astype(jnp.float32)
    if mask is not None:
        scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    return jnp.einsum("bhqk,bkhd->bqhd", weights, v)
