"""The base of every finite group: element indices, Cayley tables and :class:`FiniteGroup`.

Every finite group is a hashable, immutable description: its elements are the integers
``0 .. order - 1`` (``0`` is the identity), its multiplication is a Cayley table, and its
``act(g, x)`` applies element ``g`` to an array. ``g`` may be a Python ``int`` (fast static
path: no gather, no switch) or a traced integer scalar (inside ``jit``/``vmap``/``scan``).

Element indices: a Python ``int`` outside ``[0, order)`` raises ``ValueError``; a ``float``,
``bool`` or non-integer array raises ``TypeError``. An integer *array* index (traced or not)
is taken modulo ``order`` by ``act``, ``compose`` and ``inverse`` of every group (an
out-of-range traced value cannot raise, and modulo is the one choice that keeps
``act(g, act(h, x)) == act(compose(g, h), x)``).

Groups compare and hash by value, so rebuilding a group never triggers recompilation when
it is passed as a static argument of :func:`jax.jit`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Element = int | jax.Array


def _is_static_int(g: Any) -> bool:
    return isinstance(g, (int, np.integer)) and not isinstance(g, (bool, np.bool_))


def _element(g: Any, n: int, name: str, arg: str = "g") -> int | jax.Array:
    """Validates an element index: a checked Python int, or an int32 array taken mod ``n``."""
    if _is_static_int(g):
        if not 0 <= int(g) < n:
            raise ValueError(
                f"group element index {arg}={g} is out of range for {name} of order {n}; use an "
                f"integer in [0, {n})."
            )
        return int(g)
    if isinstance(g, (bool, np.bool_, float, complex, np.floating)):
        raise TypeError(
            f"group element index {arg} must be an int in [0, {n}) (or an integer array), got "
            f"{type(g).__name__} {g!r}."
        )
    if not hasattr(g, "dtype"):
        raise TypeError(
            f"group element index {arg} must be an int or an integer array, got {type(g).__name__}."
        )
    if not jnp.issubdtype(g.dtype, jnp.integer):
        raise TypeError(
            f"group element index {arg} must have an integer dtype, got {g.dtype}; cast with "
            ".astype(jnp.int32) (a float or bool index is not a group element)."
        )
    return jnp.remainder(jnp.asarray(g, jnp.int32), n)


def _as_table_tuple(arr: np.ndarray) -> tuple[tuple[int, ...], ...]:
    """A Cayley table as tuples of shared Python ints (8 bytes per entry, not 36)."""
    ints = list(range(arr.shape[1]))
    get = ints.__getitem__
    return tuple(tuple(map(get, row.tolist())) for row in arr)


def _check_table(table: np.ndarray, name: str, associativity: bool = True) -> None:
    """Validates a Cayley table: identity 0, closure, inverses and (optionally) associativity.

    Memory is ``O(n²)``: associativity is checked one left factor at a time (``n³`` work, so
    for ``n > 512`` a fixed sample of 512 left factors is checked).
    """
    n = table.shape[0]
    if table.ndim != 2 or table.shape != (n, n):
        raise ValueError(f"{name}: Cayley table must be square, got shape {table.shape}.")
    if n == 0:
        raise ValueError(f"{name}: a group needs at least the identity.")
    if table.min() < 0 or table.max() >= n:
        raise ValueError(f"{name}: Cayley table entries must lie in [0, {n}).")
    ar = np.arange(n)
    if not (np.array_equal(table[0], ar) and np.array_equal(table[:, 0], ar)):
        raise ValueError(f"{name}: element 0 must be the identity (row and column 0 = arange).")
    if not (np.sort(table, axis=1) == ar[None]).all():
        raise ValueError(f"{name}: Cayley table rows must be permutations (Latin square).")
    if not associativity:
        return
    rows = ar if n <= 512 else np.random.default_rng(0).choice(n, 512, replace=False)
    for a in rows:
        # (a b) c == a (b c) for all b, c
        if not np.array_equal(table[table[a]], table[a][table]):
            raise ValueError(f"{name}: Cayley table is not associative.")


@dataclasses.dataclass(frozen=True)
class FiniteGroup:
    """A finite group given by its Cayley table, with an action on arrays.

    Elements are the indices ``0 .. order - 1``; ``0`` is the identity and
    ``compose(g, h)`` is the element of the product :math:`g h` (apply ``h`` first).
    Subclasses implement :meth:`act`; the action must satisfy
    ``act(g, act(h, x)) == act(compose(g, h), x)``.

    Attributes:
      name: a short human-readable name.
      table: the Cayley table as a tuple of tuples, ``table[g][h] = g h``.
    """

    name: str
    table: tuple[tuple[int, ...], ...] = dataclasses.field(repr=False)

    def __post_init__(self) -> None:
        _check_table(self._table_np, self.name)

    # -- structure --------------------------------------------------------------------------
    @functools.cached_property
    def _table_np(self) -> np.ndarray:
        return np.asarray(self.table, dtype=np.int32)

    @property
    def order(self) -> int:
        """The number of elements :math:`|G|`."""
        return len(self.table)

    @functools.cached_property
    def inverses(self) -> tuple[int, ...]:
        """``inverses[g]`` is the index of :math:`g^{-1}`."""
        return tuple(np.argmin(self._table_np, axis=1).tolist())

    def compose(self, g: Element, h: Element) -> Element:
        """Index of the product :math:`g h` (``h`` acts first). Traceable.

        Python ints are checked (``ValueError`` out of range); integer arrays are taken modulo
        ``order`` and may have any (broadcastable) shapes.
        """
        g = _element(g, self.order, self.name, "g")
        h = _element(h, self.order, self.name, "h")
        if isinstance(g, int) and isinstance(h, int):
            return self.table[g][h]
        return jnp.asarray(self._table_np)[g, h]

    def inverse(self, g: Element) -> Element:
        """Index of :math:`g^{-1}`. Traceable (integer arrays are taken modulo ``order``)."""
        g = _element(g, self.order, self.name)
        if isinstance(g, int):
            return self.inverses[g]
        return jnp.asarray(np.asarray(self.inverses, np.int32))[g]

    def _check_index(self, g: Any) -> int | jax.Array:
        return _element(g, self.order, self.name)

    # -- action -----------------------------------------------------------------------------
    def act(self, g: Element, x: Any) -> Any:
        """Applies element ``g`` to ``x``. Subclasses override this."""
        raise NotImplementedError(
            f"{type(self).__name__} has no action on arrays; pass `in_action=` / `out_action=` "
            "to the method, or use a group with an action (rot90, permutation, sign_flip, ...)."
        )

    def _switch(self, g: Element, branches: Sequence[Callable[[Any], Any]], x: Any) -> Any:
        """Static dispatch for a Python int, ``lax.switch`` (index mod order) for an array."""
        g = self._check_index(g)
        if isinstance(g, int):
            return branches[g](x)
        if jnp.ndim(g) != 0:
            raise ValueError(
                f"act needs one element index (a scalar), got shape {jnp.shape(g)}; jax.vmap over "
                "the indices for several elements."
            )
        return jax.lax.switch(g, list(branches), x)


def _table_from_elements(elements: Sequence[Any], mul: Callable[[Any, Any], Any]) -> tuple:
    index = {e: i for i, e in enumerate(elements)}
    rows = []
    for a in elements:
        row = []
        for b in elements:
            c = mul(a, b)
            if c not in index:
                raise ValueError(
                    f"the elements are not closed under composition: {a} * {b} = {c} is not among "
                    "them; pass all elements, or build the group with `generated(...)`."
                )
            row.append(index[c])
        rows.append(tuple(row))
    return tuple(rows)


def _check_n(n: int) -> int:
    if not _is_static_int(n) or n < 1:
        raise ValueError(f"n must be a positive int (the size of the index set), got {n!r}.")
    return int(n)
