"""Equizero: choose the group element that minimises a proxy loss (Basu et al., NeurIPS 2023)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import jax

from equijax._src import common, orbit
from equijax._src.groups import FiniteGroup

PyTree = Any


def equizero(
    fn: Callable[..., PyTree],
    group: FiniteGroup,
    x: PyTree | None = None,
    *,
    loss: Callable[[PyTree], jax.Array],
    in_action: Callable[[Any, PyTree], PyTree] | None = None,
    out_action: Callable[[Any, PyTree], PyTree] | None = None,
    chunk_size: int | None = None,
    return_index: bool = False,
    straight_through: bool = False,
    surrogate: Literal["equitune", "identity"] = "equitune",
    ties: Literal["average", "first"] = "average",
    batching: orbit.Batching = None,
    orbit_sharding: jax.sharding.Sharding | None = None,
    exact: bool = False,
) -> PyTree:
    r"""Picks, per example, the group element whose output has the lowest proxy loss.

    .. math::

        g^*(x) = \operatorname{argmin}_{g \in G} \, l(M(g x)), \qquad
        M^0_G(x) = g^{*-1} M(g^* x)

    The loss reads the raw output ``M(g x)``; the result is equivariant for any loss. Exact
    ties are resolved deterministically: by default the outputs of all minimisers are averaged
    (``ties="average"``). Ties are not rare: if ``x`` is fixed by an element ``s`` (a token
    sequence without the swapped words, a symmetric image), ``g`` and ``g s`` have identical
    losses, and averaging their outputs is what keeps the result exactly equivariant.
    ``ties="first"`` keeps the lowest-index minimiser instead (the identity first). A NaN loss
    ranks last: an element with a NaN loss is chosen only if every element's loss is NaN (then
    all tie), the same for every ``chunk_size``.

    For finetuning, ``straight_through=True`` returns exactly ``M^0_G(x)`` in the forward pass
    with the gradient of a surrogate: the equitune mean (default, which the paper found
    better) or the identity branch ``M(x)`` (``surrogate="identity"``):
    ``out = sg(M^0_G) + (S - sg(S))``. Both come from the same single pass over the orbit.

    Args:
      fn: the model, batch -> batch of outputs.
      group: a finite group.
      x: the input batch; if omitted, returns the transformed function (see
        :func:`equijax.equitune`).
      loss: ``loss(y)`` maps a batch of one element's raw outputs to per-example losses of
        shape ``(B,)``. Ready-made: :mod:`equijax.proxies` (negative max probability for
        classifiers, i.e. argmax of confidence; entropy; negative max score).
      in_action: ``(g, x) -> g x``; defaults to ``group.act``.
      out_action: ``(g, y) -> g y``; ``None`` for invariant outputs.
      chunk_size: group elements per chunk (bounded memory); ``None`` for all at once.
      return_index: also return the chosen element per example, int32 ``(B,)``.
      straight_through: use the straight-through estimator for gradients.
      surrogate: ``"equitune"`` or ``"identity"``: the gradient path with ``straight_through``.
      ties: ``"average"`` (default) or ``"first"``, see above. The returned index is always
        the lowest-index minimiser.
      batching: ``None`` (auto), ``"vmap"`` or ``"fold"`` (see :func:`equijax.equitune`).
      orbit_sharding: optional sharding of the stacked transformed inputs.
      exact: average tied outputs (and the straight-through surrogate mean) with an
        order-independent sum, for bitwise equivariance under ``jit`` (see
        :func:`equijax.equitune`); needs ``chunk_size=None`` and ``ties="average"``.

    Returns:
      The selected outputs (structure of ``fn(x)``), and the indices ``(B,)`` if
      ``return_index``.

    Raises:
      TypeError: if ``loss`` is not callable.
      ValueError: if ``loss`` does not return shape ``(B,)``, ``surrogate``/``ties`` is unknown,
        or ``exact=True`` is combined with chunking or ``ties="first"``.

    Examples:
      >>> import jax, jax.numpy as jnp, equijax as ej
      >>> G = ej.groups.rot90()
      >>> w = jax.random.normal(jax.random.key(0), (16, 5))
      >>> fn = lambda x: x.reshape(x.shape[0], -1) @ w
      >>> x = jax.random.normal(jax.random.key(1), (3, 4, 4, 1))
      >>> y, g = ej.equizero(fn, G, x, loss=ej.proxies.neg_max_probability, return_index=True)
      >>> y.shape, g.shape
      ((3, 5), (3,))

    References:
      Basu et al., "Efficient Equivariant Transfer Learning from Pretrained Models",
      NeurIPS 2023, https://arxiv.org/abs/2305.09900.
    """
    common.check_callable(fn, "fn")
    group = common.check_group(group)
    common.check_callable(loss, "loss", "Expected y -> per-example losses of shape (B,).")
    if surrogate not in ("equitune", "identity"):
        raise ValueError(f"surrogate must be 'equitune' or 'identity', got {surrogate!r}.")
    n = group.order
    reducer = orbit.argmin_reducer(ties)  # validates `ties`
    if orbit.check_exact(exact, chunk_size, n) and ties != "average":
        raise ValueError(
            "exact=True needs ties='average': picking the lowest-index minimiser among exact ties "
            "depends on the element order, so it is not equivariant on inputs with a stabiliser."
        )
    if x is None:
        return common.as_transformation(equizero, fn, (group,), locals())
    transform, untransform = common.actions(group, in_action, out_action)
    reducer = orbit.argmin_reducer(ties, exact=exact)
    if straight_through:
        second = (
            orbit.mean_reducer(n, exact=exact) if surrogate == "equitune" else orbit.first_reducer()
        )
        reducer = orbit.pair_reducer(reducer, second)
    out, _ = orbit.orbit_reduce(
        fn,
        x,
        n=n,
        transform=transform,
        untransform=untransform,
        reducer=reducer,
        aux_fn=lambda xg, yg, feats: loss(yg),
        aux_name="loss",
        chunk_size=chunk_size,
        batching=batching,
        orbit_sharding=orbit_sharding,
    )
    if straight_through:
        (y, index), surrogate_value = out
        y = common.straight_through(y, surrogate_value)
    else:
        y, index = out
    return (y, index) if return_index else y
