"""Equitune: group averaging of a pretrained model (Basu et al., AAAI 2023)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

from equijax._src import common, orbit
from equijax._src.groups import FiniteGroup

PyTree = Any


def equitune(
    fn: Callable[..., PyTree],
    group: FiniteGroup,
    x: PyTree | None = None,
    *,
    in_action: Callable[[Any, PyTree], PyTree] | None = None,
    out_action: Callable[[Any, PyTree], PyTree] | None = None,
    chunk_size: int | None = None,
    batching: orbit.Batching = None,
    orbit_sharding: jax.sharding.Sharding | None = None,
    exact: bool = False,
) -> PyTree:
    r"""Makes ``fn`` equivariant (or invariant) by averaging over the group.

    .. math::

        M_G(x) = \frac{1}{|G|} \sum_{g \in G} g^{-1} M(g x)

    The transformed inputs are stacked on a new element axis and ``fn`` is ``vmap``-ed over
    it, so the whole transform -> forward -> invert -> mean pipeline is one XLA program under
    :func:`jax.jit` and is differentiable.

    Args:
      fn: the model, mapping a batch ``x`` (leading axis ``B``) to a batch of outputs.
      group: a finite group.
      x: the input batch. If omitted, returns the transformed function instead:
        ``equitune(fn, G)(*args, x)`` calls ``fn(*args, g x)``, passing leading arguments
        (e.g. parameters) through unchanged.
      in_action: ``(g, x) -> g x``; defaults to ``group.act``.
      out_action: ``(g, y) -> g y`` on outputs; ``None`` for invariant outputs. Outputs are
        mapped back with :math:`g^{-1}`.
      chunk_size: number of group elements evaluated at once (peak memory ~ ``chunk_size * B``
        examples); ``None`` evaluates the whole orbit. Any value in ``[1, |G|]`` works.
      batching: ``None`` (default, auto), ``"vmap"`` or ``"fold"``. ``"fold"`` merges the
        element axis into the batch and calls ``fn`` once on ``|G|·B`` examples; use it when
        ``fn`` cannot be ``vmap``-ed (e.g. a Flax linen submodule call). Auto picks ``"fold"``
        when ``fn`` holds Flax NNX state (an ``nnx.Module``, a bound method or
        ``functools.partial`` of one, or a closure over one), so stateful layers train under
        ``nnx.jit``; BatchNorm statistics then cover the ``|G|·B`` transformed examples.
        Otherwise ``"vmap"``.
      orbit_sharding: optional :class:`jax.sharding.Sharding` of the stacked transformed
        inputs, shape ``(elements, B, ...)``, to spread the orbit over devices.
      exact: reduce with an order-independent (sorted) sum, so that the output is bitwise
        equivariant under :func:`jax.jit`: ``f(g x) == g f(x)`` exactly whenever the model
        gives bit-identical outputs on bit-identical inputs. Needs the whole orbit at once
        (``chunk_size=None``). The default sums in element order and is equivariant up to
        float round-off (a few ulps of the largest term).

    Returns:
      The averaged outputs, same structure and shapes as ``fn(x)``.

    Raises:
      TypeError: if ``fn``/``group``/actions have the wrong type.
      ValueError: for an invalid ``chunk_size`` (or any ``chunk_size < |G|`` with
        ``exact=True``), a shape-changing ``out_action`` or an ``fn``
        that does not keep the batch axis.

    Examples:
      >>> import jax, jax.numpy as jnp, equijax as ej
      >>> G = ej.groups.rot90()
      >>> w = jax.random.normal(jax.random.key(0), (4 * 4 * 1, 3))
      >>> fn = lambda x: x.reshape(x.shape[0], -1) @ w          # not invariant
      >>> x = jax.random.normal(jax.random.key(1), (2, 4, 4, 1))
      >>> y = ej.equitune(fn, G, x)
      >>> bool(jnp.allclose(y, ej.equitune(fn, G, G.act(1, x)), atol=1e-5))
      True

    References:
      Basu et al., "Equi-Tuning: Group Equivariant Fine-Tuning of Pretrained Models",
      AAAI 2023, https://arxiv.org/abs/2210.06475.
    """
    common.check_callable(fn, "fn")
    group = common.check_group(group)
    n = group.order
    orbit.check_exact(exact, chunk_size, n)
    if x is None:
        return common.as_transformation(equitune, fn, (group,), locals())
    transform, untransform = common.actions(group, in_action, out_action)
    y, _ = orbit.orbit_reduce(
        fn,
        x,
        n=n,
        transform=transform,
        untransform=untransform,
        reducer=orbit.mean_reducer(n, exact=exact),
        chunk_size=chunk_size,
        batching=batching,
        orbit_sharding=orbit_sharding,
    )
    return y
