"""Equivariance checks for any callable, built on chex."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np

from equijax._src import common
from equijax._src.groups import FiniteGroup

PyTree = Any


def _pairs(fn, group, x, in_action, out_action, elements):
    group = common.check_group(group)
    common.check_callable(fn, "fn")
    act_in = in_action if in_action is not None else group.act
    y = fn(x)
    elems = range(group.order) if elements is None else elements
    for g in elems:
        lhs = fn(act_in(g, x))
        rhs = y if out_action is None else out_action(g, y)
        yield g, lhs, rhs


def equivariance_error(
    fn: Callable[[PyTree], PyTree],
    group: FiniteGroup,
    x: PyTree,
    *,
    in_action: Callable[[Any, PyTree], PyTree] | None = None,
    out_action: Callable[[Any, PyTree], PyTree] | None = None,
    elements: Sequence[int] | None = None,
    relative: bool = False,
) -> float:
    r"""The largest deviation from equivariance over the group (0.0 for an exact model).

    .. math::

        \max_{g} \max \lvert f(g x) - g f(x) \rvert

    With ``relative=True`` each deviation is divided by ``max |f(x)|`` (so values near float32
    epsilon, ~1e-7 to 1e-6, mean "equivariant up to round-off"; values of order 1 mean broken).

    A NaN is never hidden: if either side holds a NaN the result is ``nan`` (an infinity on
    one side only gives ``inf``; equal infinities count as a match).

    Args:
      fn: batch -> batch of outputs.
      group: the group.
      x: a batch of inputs.
      in_action: ``(g, x) -> g x``; defaults to ``group.act``.
      out_action: ``(g, y) -> g y``; ``None`` checks invariance.
      elements: element indices to check (default: all).
      relative: divide by the output scale.

    Returns:
      A Python float.

    Examples:
      >>> import jax.numpy as jnp, equijax as ej
      >>> G = ej.groups.rot90()
      >>> x = jnp.arange(32.0).reshape(2, 4, 4, 1)
      >>> ej.testing.equivariance_error(lambda x: x.sum((1, 2, 3)), G, x)
      0.0
    """
    worst = 0.0
    scale = None
    for _, lhs, rhs in _pairs(fn, group, x, in_action, out_action, elements):
        for a, b in zip(jax.tree.leaves(lhs), jax.tree.leaves(rhs), strict=True):
            a = np.asarray(a, dtype=np.float64)
            b = np.asarray(b, dtype=np.float64)
            if a.shape != b.shape:
                raise ValueError(f"f(g x) has shape {a.shape} but g f(x) has shape {b.shape}.")
            if a.size:
                if np.isnan(a).any() or np.isnan(b).any():
                    return float("nan")
                same = a == b  # equal infinities match
                with np.errstate(invalid="ignore"):
                    diff = np.where(same, 0.0, np.abs(a - b))
                worst = max(worst, float(np.max(diff)))
                if relative:
                    finite = np.abs(b[np.isfinite(b)])
                    scale = max(scale or 0.0, float(finite.max()) if finite.size else 0.0)
    if relative:
        return worst / max(scale or 0.0, np.finfo(np.float32).tiny)
    return worst


def assert_equivariant(
    fn: Callable[[PyTree], PyTree],
    group: FiniteGroup,
    x: PyTree,
    *,
    in_action: Callable[[Any, PyTree], PyTree] | None = None,
    out_action: Callable[[Any, PyTree], PyTree] | None = None,
    elements: Sequence[int] | None = None,
    atol: float = 1e-5,
    rtol: float = 1e-5,
    allow_nan: bool = False,
) -> None:
    """Asserts ``fn(g x) == g fn(x)`` for every element (integer outputs must match exactly).

    Tolerances: float32 models usually pass with ``atol=rtol=1e-5`` when exact up to
    round-off; deep networks summed over many elements may need ``1e-4``. For a model made
    bitwise equivariant (``exact=True`` of the methods) pass ``atol=rtol=0``.

    A NaN in either side fails the check, even where both sides agree: a model that returns NaN
    is not shown equivariant by it. ``allow_nan=True`` accepts NaN where both sides have NaN at
    the same positions (a NaN on one side only still fails).

    Raises:
      AssertionError: naming the first failing element and the mismatch.

    Examples:
      >>> import jax.numpy as jnp, equijax as ej
      >>> G = ej.groups.rot90()
      >>> x = jnp.arange(9.0).reshape(1, 3, 3, 1)
      >>> ej.testing.assert_equivariant(lambda x: 2 * x, G, x, out_action=G.act)
    """
    kind = "invariance" if out_action is None else "equivariance"
    for g, lhs, rhs in _pairs(fn, group, x, in_action, out_action, elements):
        for a, b in zip(jax.tree.leaves(lhs), jax.tree.leaves(rhs), strict=True):
            na, nb = np.isnan(np.asarray(a, np.float64)), np.isnan(np.asarray(b, np.float64))
            if not (na.any() or nb.any()):
                continue
            if not allow_nan:
                raise AssertionError(
                    f"{kind} check for group element g={g} of {group.name}: the outputs contain "
                    f"NaN ({int(na.sum())} in f(g x), {int(nb.sum())} in g f(x)); a NaN output "
                    "is not equivariant evidence. Pass allow_nan=True to accept NaNs that agree."
                )
            if na.shape != nb.shape or not np.array_equal(na, nb):
                raise AssertionError(
                    f"{kind} fails for group element g={g} of {group.name}: NaN positions differ "
                    "between f(g x) and g f(x)."
                )
        try:
            chex.assert_trees_all_equal_shapes_and_dtypes(lhs, rhs)
            ints = [jnp.issubdtype(jnp.result_type(a), jnp.integer) for a in jax.tree.leaves(lhs)]
            if all(ints):
                chex.assert_trees_all_equal(lhs, rhs)
            else:
                chex.assert_trees_all_close(lhs, rhs, atol=atol, rtol=rtol)
        except AssertionError as e:
            raise AssertionError(
                f"{kind} fails for group element g={g} of {group.name}: {e}"
            ) from None


def assert_invariant(
    fn: Callable[[PyTree], PyTree],
    group: FiniteGroup,
    x: PyTree,
    *,
    in_action: Callable[[Any, PyTree], PyTree] | None = None,
    elements: Sequence[int] | None = None,
    atol: float = 1e-5,
    rtol: float = 1e-5,
    allow_nan: bool = False,
) -> None:
    """Asserts ``fn(g x) == fn(x)`` for every element; see :func:`assert_equivariant`.

    Examples:
      >>> import jax.numpy as jnp, equijax as ej
      >>> x = jnp.arange(96.0).reshape(2, 4, 4, 3)
      >>> ej.testing.assert_invariant(lambda x: x.mean((1, 2)), ej.groups.dihedral(), x)
    """
    assert_equivariant(
        fn,
        group,
        x,
        in_action=in_action,
        out_action=None,
        elements=elements,
        atol=atol,
        rtol=rtol,
        allow_nan=allow_nan,
    )
