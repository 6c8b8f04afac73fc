"""λ-equitune: group averaging weighted by a learned positive function (Basu et al. 2023)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from equijax._src import common, orbit
from equijax._src.groups import FiniteGroup

PyTree = Any
Normalize = Literal["softmax", "positive"]


def log_weights(logits: ArrayLike, normalize: Normalize = "softmax") -> jax.Array:
    r"""Maps weight-function outputs to log λ; the weights are ``softmax(log λ)`` over the group.

    * ``"softmax"``: :math:`\lambda = e^{\ell}`, i.e. the weights are the softmax of the logits.
    * ``"positive"``: :math:`\lambda = \operatorname{softplus}(\ell) > 0`, normalised by its sum
      over the group (the paper's "positive function over its sum"). Computed in log space, so
      tiny or huge values never give ``0/0``.

    Examples:
      >>> import jax.numpy as jnp, equijax as ej
      >>> w = jax.nn.softmax(ej.log_weights(jnp.array([0.0, 0.0]), "positive"))
      >>> w.tolist()
      [0.5, 0.5]
    """
    logits = jnp.asarray(logits)
    if normalize == "softmax":
        return logits
    if normalize == "positive":
        small = logits < -15.0
        safe = jnp.where(small, 0.0, logits)
        return jnp.where(small, logits, jnp.log(jax.nn.softplus(safe)))
    raise ValueError(f"normalize must be 'softmax' or 'positive', got {normalize!r}.")


def lambda_equitune(
    fn: Callable[..., PyTree],
    group: FiniteGroup,
    x: PyTree | None = None,
    *,
    weight_fn: Callable[[PyTree], jax.Array],
    normalize: Normalize = "softmax",
    in_action: Callable[[Any, PyTree], PyTree] | None = None,
    out_action: Callable[[Any, PyTree], PyTree] | None = None,
    chunk_size: int | None = None,
    return_weights: bool = False,
    has_aux: bool = False,
    batching: orbit.Batching = None,
    orbit_sharding: jax.sharding.Sharding | None = None,
    exact: bool = False,
) -> PyTree:
    r"""Weighted group averaging with positive, normalised weights λ.

    .. math::

        M^\lambda_G(x) = \frac{\sum_{g} \lambda(g x)\, g^{-1} M(g x)}{\sum_{g} \lambda(g x)}

    ``weight_fn`` returns one logit per example; λ is made positive and normalised over the
    group by ``normalize`` (see :func:`equijax.log_weights`), with an online log-sum-exp so
    that chunked evaluation gives the same result. The weights are finite for any finite
    logits (any spread, 1e30 included, under ``jit``); a ``-inf`` (or NaN) logit masks its
    element (weight 0, its output is never read), the same for every ``chunk_size``; an example
    whose every logit is masked gets uniform weights (the plain equitune mean).
    λ ≡ const recovers :func:`equijax.equitune`; λ concentrated on :math:`g^*` recovers
    :func:`equijax.equizero`.

    Args:
      fn: the model, batch -> batch of outputs; with ``has_aux=True`` it returns
        ``(outputs, features)`` and ``weight_fn`` reads the features (e.g. the backbone's own
        image features, so no second network runs on the orbit).
      group: a finite group.
      x: the input batch; if omitted, returns the transformed function.
      weight_fn: ``weight_fn(x_g)`` (or ``weight_fn(features)``) -> logits of shape ``(B,)``
        or ``(B, 1)``. For a learned λ, close over its parameters, e.g.
        ``lambda z: lam.apply(lam_params, z)`` with :class:`equijax.LambdaNet`.
      normalize: ``"softmax"`` (default) or ``"positive"``.
      in_action: ``(g, x) -> g x``; defaults to ``group.act``.
      out_action: ``(g, y) -> g y``; ``None`` for invariant outputs.
      chunk_size: group elements per chunk (bounded memory); ``None`` for all at once.
      return_weights: also return the normalised weights, shape ``(B, |G|)``.
      has_aux: whether ``fn`` returns ``(outputs, features)``.
      batching: ``None`` (auto), ``"vmap"`` or ``"fold"`` (see :func:`equijax.equitune`).
      orbit_sharding: optional sharding of the stacked transformed inputs.
      exact: sum the weighted terms and the normaliser order-independently, for bitwise
        equivariance under ``jit`` (see :func:`equijax.equitune`); needs ``chunk_size=None``.

    Returns:
      The weighted outputs (structure of ``fn(x)``, without the features), and the weights
      ``(B, |G|)`` if ``return_weights``.

    Raises:
      ValueError: if ``weight_fn`` does not return one logit per example, or ``exact=True`` is
        combined with chunking.

    Examples:
      >>> import jax, jax.numpy as jnp, equijax as ej
      >>> G = ej.groups.hflip()
      >>> w = jax.random.normal(jax.random.key(0), (8, 3))
      >>> fn = lambda x: x.reshape(x.shape[0], -1) @ w
      >>> lam = lambda xg: xg[:, 0, 0, 0]                      # any per-example logit
      >>> x = jax.random.normal(jax.random.key(1), (5, 2, 4, 1))
      >>> y, weights = ej.lambda_equitune(fn, G, x, weight_fn=lam, return_weights=True)
      >>> y.shape, weights.shape, bool(jnp.allclose(weights.sum(1), 1.0))
      ((5, 3), (5, 2), True)

    References:
      Basu et al., "Efficient Equivariant Transfer Learning from Pretrained Models",
      NeurIPS 2023, https://arxiv.org/abs/2305.09900.
    """
    common.check_callable(fn, "fn")
    group = common.check_group(group)
    common.check_callable(weight_fn, "weight_fn", "Expected x_g -> logits of shape (B,).")
    log_weights(jnp.zeros(()), normalize)  # validates `normalize`
    orbit.check_exact(exact, chunk_size, group.order)
    if x is None:
        return common.as_transformation(lambda_equitune, fn, (group,), locals())
    transform, untransform = common.actions(group, in_action, out_action)
    return weighted_orbit_mean(
        fn,
        x,
        n=group.order,
        transform=transform,
        untransform=untransform,
        weight_fn=weight_fn,
        normalize=normalize,
        has_aux=has_aux,
        return_weights=return_weights,
        chunk_size=chunk_size,
        batching=batching,
        orbit_sharding=orbit_sharding,
        exact=exact,
    )


def weighted_orbit_mean(
    fn: Callable[..., PyTree],
    x: PyTree,
    *,
    n: int,
    transform: Callable[[Any, PyTree], PyTree],
    untransform: Callable[[Any, PyTree], PyTree],
    weight_fn: Callable[[PyTree], jax.Array] | None,
    normalize: Normalize,
    has_aux: bool,
    return_weights: bool,
    chunk_size: int | None,
    batching: orbit.Batching,
    orbit_sharding: jax.sharding.Sharding | None = None,
    exact: bool,
) -> PyTree:
    """The λ-weighted mean over ``n`` elements, shared by :func:`lambda_equitune` and
    :func:`equijax.canonical_lambda_equitune` (which pass their own ``transform`` and
    ``untransform``): ``weight_fn`` reads the features (``has_aux``) or the transformed input,
    ``None`` gives λ ≡ 1; the weights are :func:`log_weights` normalised over the elements by
    :func:`equijax._src.orbit.normalized_weights`. Returns the outputs, and the weights
    ``(B, n)`` if ``return_weights``.
    """

    def aux_fn(xg: PyTree, yg: PyTree, feats: PyTree) -> jax.Array:
        if weight_fn is None:
            return jnp.zeros(jax.tree.leaves(yg)[0].shape[:1])
        return log_weights(weight_fn(feats if has_aux else xg), normalize)

    y, logw = orbit.orbit_reduce(
        fn,
        x,
        n=n,
        transform=transform,
        untransform=untransform,
        reducer=orbit.softmax_reducer(exact=exact),
        aux_fn=aux_fn,
        aux_name="weight_fn",
        has_aux=has_aux,
        chunk_size=chunk_size,
        batching=batching,
        orbit_sharding=orbit_sharding,
        collect_aux=return_weights,
    )
    if return_weights:
        return y, orbit.normalized_weights(logw, axis=0, exact=exact).T
    return y
