"""Proxy losses for :func:`equijax.equizero`: one loss per example, lower is better.

Each maps a batch of one group element's raw outputs ``y`` (leading axis ``B``) to losses of
shape ``(B,)``. Outputs with extra axes between the batch and the class axis (e.g. a sequence
of next-token logits ``(B, L, V)``) are averaged over those axes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

__all__ = ["entropy", "given", "neg_max_probability", "neg_max_score"]


def _mean_over_middle(v: jax.Array) -> jax.Array:
    if v.ndim == 0:
        raise ValueError("proxy losses need a leading batch axis on the outputs.")
    # explicit size (not -1): reshape(0, -1) is ambiguous for an empty batch
    return v.reshape(v.shape[0], math.prod(v.shape[1:])).mean(axis=1)


def neg_max_probability(logits: ArrayLike, axis: int = -1) -> jax.Array:
    r"""Negative confidence: :math:`l(y) = -\max_c \operatorname{softmax}(y)_c`.

    Minimising it picks the most confident element (argmax of confidence; the reference
    CNN code picked the least confident one).

    Examples:
      >>> import jax.numpy as jnp, equijax as ej
      >>> ej.proxies.neg_max_probability(jnp.array([[0.0, 0.0], [10.0, 0.0]])).round(3).tolist()
      [-0.5, -1.0]
    """
    p = jax.nn.softmax(jnp.asarray(logits), axis=axis)
    return _mean_over_middle(-p.max(axis=axis))


def entropy(logits: ArrayLike, axis: int = -1) -> jax.Array:
    r"""Predictive entropy :math:`H(\operatorname{softmax}(y))` computed from logits.

    Examples:
      >>> import jax.numpy as jnp, equijax as ej
      >>> round(float(ej.proxies.entropy(jnp.zeros((1, 4)))[0]), 4)   # log 4
      1.3863
    """
    logp = jax.nn.log_softmax(jnp.asarray(logits), axis=axis)
    return _mean_over_middle(-(jnp.exp(logp) * logp).sum(axis=axis))


def neg_max_score(scores: ArrayLike, axis: int = -1) -> jax.Array:
    r"""Negative best score :math:`-\max_a y_a`.

    For Q-values, equizero then picks the g maximising :math:`\max_a Q(g s, a)`.

    Examples:
      >>> import jax.numpy as jnp, equijax as ej
      >>> ej.proxies.neg_max_score(jnp.array([[1.0, 3.0]])).tolist()
      [-3.0]
    """
    return _mean_over_middle(-jnp.asarray(scores).max(axis=axis))


def given(
    select: Callable[[Any], ArrayLike], *, higher_is_better: bool = True
) -> Callable[[Any], jax.Array]:
    """A proxy that reads a score the model already returns, e.g. ``fn(x) -> (y, score)``.

    Args:
      select: maps the raw output to per-example scores ``(B,)``.
      higher_is_better: negate the score so that equizero picks its maximum.

    Examples:
      >>> import jax.numpy as jnp, equijax as ej
      >>> loss = ej.proxies.given(lambda out: out[1])
      >>> loss((jnp.zeros((2, 3)), jnp.array([0.25, 0.5]))).tolist()
      [-0.25, -0.5]
    """
    sign = -1.0 if higher_is_better else 1.0

    def loss(y: Any) -> jax.Array:
        return sign * jnp.asarray(select(y))

    return loss
