"""Direct products of finite groups."""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any

import numpy as np

from equijax._src.groups.base import Element, FiniteGroup, _as_table_tuple
from equijax._src.groups.permutations import PermutationGroup, _trusted_permutation_group


@dataclasses.dataclass(frozen=True)
class ProductGroup(FiniteGroup):
    """Direct product ``G1 × G2 × ...``; element ``g`` has mixed-radix digits ``(g1, g2, ...)``.

    It acts by applying each factor's action in turn (last factor first). This is a group
    action only when the factors' actions commute (e.g. they move disjoint sets of ids, or
    act on different axes); :func:`product` checks this for permutation groups.
    """

    factors: tuple[FiniteGroup, ...] = ()

    def digits(self, g: Element) -> tuple[Element, ...]:
        """The factor indices of ``g`` (traceable; an array index is taken modulo the order)."""
        g = self._check_index(g)
        out = []
        for f in reversed(self.factors):
            out.append(g % f.order)
            g = g // f.order
        return tuple(reversed(out))

    def act(self, g: Element, x: Any) -> Any:
        for f, d in reversed(list(zip(self.factors, self.digits(g), strict=True))):
            x = f.act(d, x)
        return x

    def act_axis(self, g: Element, y: Any, axis: int = -1) -> Any:
        for f, d in reversed(list(zip(self.factors, self.digits(g), strict=True))):
            y = f.act_axis(d, y, axis=axis)  # type: ignore[attr-defined]
        return y


def product(*factors: FiniteGroup, name: str | None = None) -> FiniteGroup:
    """Direct product of groups.

    For permutation groups on the same index set, the result is again a
    :class:`PermutationGroup` (element ``g`` applies all factors' permutations); the factors'
    elements must commute, otherwise a ``ValueError`` suggests :func:`generated`. For other
    groups a :class:`ProductGroup` applies the factors' actions in turn.

    Examples:
      >>> import equijax as ej
      >>> verbs = ej.groups.permutation(6, [(0, 1)])
      >>> sides = ej.groups.permutation(6, [(2, 3)])
      >>> ej.groups.product(verbs, sides).order
      4
    """
    if len(factors) < 2:
        raise ValueError("product needs at least two groups.")
    for f in factors:
        if not isinstance(f, FiniteGroup):
            raise TypeError(
                f"product factors must be FiniteGroup instances, got {type(f).__name__}."
            )
    orders = [f.order for f in factors]
    total = math.prod(orders)
    # mixed-radix digits of every element (last factor fastest), O(|G| k) memory
    digits = np.stack(np.unravel_index(np.arange(total), orders), axis=1).astype(np.int64)
    strides = np.asarray([math.prod(orders[i + 1 :]) for i in range(len(orders))], np.int64)
    table_np = np.zeros((total, total), np.int32)
    for i, f in enumerate(factors):
        t = f._table_np
        d = digits[:, i]
        table_np += (t[d[:, None], d[None, :]] * strides[i]).astype(np.int32)
    name = name or " × ".join(f.name for f in factors)
    if all(isinstance(f, PermutationGroup) for f in factors):
        ns = {f.n for f in factors}  # type: ignore[attr-defined]
        if len(ns) == 1:
            n = ns.pop()
            for f1, f2 in itertools.combinations(factors, 2):
                p, q = f1._perms_np, f2._perms_np  # type: ignore[attr-defined]
                # p[i] ∘ q[j] == q[j] ∘ p[i] for all i, j (one factor at a time: O(|f2| n) memory)
                for pi in p:
                    if not np.array_equal(pi[q], q[:, pi]):
                        raise ValueError(
                            f"the elements of {f1.name} and {f2.name} do not commute, so "
                            "their direct product does not act on the same ids; use "
                            "generated(...) for the group they generate."
                        )
            perms = np.tile(np.arange(n, dtype=np.int32), (total, 1))
            for i, f in enumerate(factors):
                fp = f._perms_np[digits[:, i]]  # type: ignore[attr-defined]
                perms = np.take_along_axis(fp, perms, axis=1)  # apply perms first, then f
            if len({row.tobytes() for row in perms}) != total:
                raise ValueError(
                    "the factors share non-identity elements, so the direct product does not act "
                    "faithfully; use generated(...) instead."
                )
            return _trusted_permutation_group(name, table_np, n, tuple(map(tuple, perms.tolist())))
    table = _as_table_tuple(table_np)
    return ProductGroup(name=name, table=table, factors=tuple(factors))
