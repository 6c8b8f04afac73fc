"""Permutation groups on a finite index set (token ids, actions, vocabulary axes).

Permutation groups are stored as their permutations plus a Cayley table built with numpy
(``O(|G|²)`` memory, no ``|G|³`` associativity check: permutations compose associatively). The
practical limit is set by the ``|G|²`` table: S7 (order 5040, a 25M-entry table) builds in a
few seconds within about 1 GiB; S8 (40,320) would need a 1.6G-entry table and is out of reach
(:class:`~equijax._src.groups.symmetric.SymmetricGroup` handles S_n without a table).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from equijax._src.groups.base import (
    Element,
    FiniteGroup,
    _as_table_tuple,
    _check_n,
    _is_static_int,
)

_MAX_ORDER = 100_000


def _perm_mul(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    # (a b)(i) = a(b(i)): apply b first.
    return tuple(a[i] for i in b)


@dataclasses.dataclass(frozen=True)
class PermutationGroup(FiniteGroup):
    """A group of permutations of ``{0, ..., n - 1}``.

    Element ``g`` is the permutation ``perms[g]`` (``perms[g][i]`` is the image of ``i``). It
    acts on integer id arrays by relabelling each id (``act``), and on an axis of a float
    array whose entries are indexed by ids (``act_axis``), consistently:
    ``act_axis(g, one_hot(ids)) == one_hot(act(g, ids))``.

    Attributes:
      n: the size of the index set.
      perms: the permutations, identity first.
    """

    n: int = 0
    perms: tuple[tuple[int, ...], ...] = dataclasses.field(default=(), repr=False)

    def __post_init__(self) -> None:
        prebuilt = _PREBUILT.pop(id(self.table), None)
        if prebuilt is not None and prebuilt[0] is self.table:
            # built by this module from these perms: only cache the numpy table
            self.__dict__["_table_np"] = prebuilt[1]
            return
        perms = self._perms_np
        if perms.ndim != 2 or perms.shape != (len(self.table), self.n):
            raise ValueError(
                f"{self.name}: perms must be {len(self.table)} permutations of length n={self.n}, "
                f"got shape {perms.shape}."
            )
        if not (np.sort(perms, axis=1) == np.arange(self.n)[None]).all():
            raise ValueError(f"{self.name}: every element of perms must be a permutation.")
        # The table must be the composition table of perms (this implies closure, identity 0,
        # inverses; associativity holds for any set of permutations, so it is not re-checked).
        expected = _perm_table(perms, self.name)
        if not np.array_equal(expected, self._table_np):
            raise ValueError(f"{self.name}: table is not the composition table of perms.")

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if type(other) is not type(self):
            return NotImplemented
        return (self.name, self.n, self.perms) == (other.name, other.n, other.perms)  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        # the table is a function of perms: hash the small part, once
        h = self.__dict__.get("_hash")
        if h is None:
            h = hash((type(self).__name__, self.name, self.n, self.perms))
            self.__dict__["_hash"] = h
        return h

    @functools.cached_property
    def _perms_np(self) -> np.ndarray:
        return np.asarray(self.perms, dtype=np.int32).reshape(len(self.perms), self.n)

    @functools.cached_property
    def _inv_perms_np(self) -> np.ndarray:
        return np.argsort(self._perms_np, axis=1).astype(np.int32)

    @property
    def support(self) -> tuple[int, ...]:
        """Indices moved by some element."""
        moved = (self._perms_np != np.arange(self.n)[None]).any(axis=0)
        return tuple(np.flatnonzero(moved).tolist())

    def _table_array(self, g: Element, inverse: bool = False) -> jax.Array:
        perms = self._inv_perms_np if inverse else self._perms_np
        g = self._check_index(g)
        if isinstance(g, int):
            return jnp.asarray(perms[g])
        return jnp.asarray(perms)[g]

    def act(self, g: Element, x: ArrayLike) -> jax.Array:
        """Relabels integer ids: ``out[...] = perms[g][x[...]]``.

        Ids outside ``[0, n)``: a concrete ``x`` raises; under ``jit`` (a traced ``x``) the
        permutation is extended by the identity, so such ids come back unchanged.

        Args:
          g: element index (int or traced int scalar, taken modulo the order).
          x: integer array of ids in ``[0, n)`` (any shape).

        Returns:
          An integer array of the same shape and dtype.

        Raises:
          TypeError: if ``x`` is not an integer array.
          ValueError: if a concrete ``x`` holds ids outside ``[0, n)``.

        Examples:
          >>> import jax.numpy as jnp, equijax as ej
          >>> P = ej.groups.permutation(5, [(0, 1, 2)])
          >>> P.act(1, jnp.array([0, 1, 2, 3])).tolist()
          [1, 2, 0, 3]
        """
        x = jnp.asarray(x)
        if not jnp.issubdtype(x.dtype, jnp.integer):
            raise TypeError(
                f"{self.name}.act relabels integer ids, got x of dtype {x.dtype}; use "
                "act_axis(g, y, axis=...) to permute an axis of a float array."
            )
        if not isinstance(x, jax.core.Tracer) and x.size:
            concrete = np.asarray(x)
            lo, hi = int(concrete.min()), int(concrete.max())
            if lo < 0 or hi >= self.n:
                raise ValueError(
                    f"ids must lie in [0, {self.n}) for {self.name}, got values in [{lo}, {hi}]; "
                    f"build the group with permutation(n, ...) where n covers every id."
                )
        inside = (x >= 0) & (x < self.n)
        safe = jnp.where(inside, x, 0)
        return jnp.where(inside, jnp.take(self._table_array(g), safe, axis=0).astype(x.dtype), x)

    def act_axis(self, g: Element, y: ArrayLike, axis: int = -1) -> jax.Array:
        """Permutes ``y`` along ``axis``: ``out[..., perms[g][i], ...] = y[..., i, ...]``.

        Args:
          g: element index (int or traced int scalar, taken modulo the order).
          y: array whose ``axis`` has length ``n`` (e.g. logits over a vocabulary).
          axis: the axis indexed by ids, an int in ``[-y.ndim, y.ndim)``.

        Returns:
          An array of the same shape and dtype.

        Examples:
          >>> import jax, jax.numpy as jnp, equijax as ej
          >>> P = ej.groups.permutation(4, [(0, 3)])
          >>> ids = jnp.array([0, 2])
          >>> lhs = P.act_axis(1, jax.nn.one_hot(ids, 4))
          >>> bool((lhs == jax.nn.one_hot(P.act(1, ids), 4)).all())
          True
        """
        y = jnp.asarray(y)
        if not _is_static_int(axis):
            raise TypeError(f"axis must be an int, got {type(axis).__name__} {axis!r}.")
        if not -y.ndim <= axis < y.ndim:
            raise ValueError(
                f"axis={axis} is out of range for y of shape {y.shape} (rank {y.ndim}); pass the "
                "axis that is indexed by ids, in [-y.ndim, y.ndim)."
            )
        if y.shape[axis] != self.n:
            raise ValueError(
                f"act_axis needs y.shape[{axis}] == n == {self.n}, got y with shape {y.shape}; "
                "pass the axis that is indexed by ids."
            )
        return jnp.take(y, self._table_array(g, inverse=True), axis=axis)


def _perm_from_cycles(n: int, cycles: Sequence[Sequence[int]]) -> tuple[int, ...]:
    perm = list(range(n))
    seen: set[int] = set()
    for cycle in cycles:
        for c in cycle:
            if not _is_static_int(c):
                raise TypeError(
                    f"cycle indices must be ints, got {type(c).__name__} {c!r} in cycle "
                    f"{tuple(cycle)}."
                )
        cycle = [int(c) for c in cycle]
        if len(cycle) < 2:
            raise ValueError(f"each cycle needs at least two indices, got {cycle}.")
        for c in cycle:
            if not 0 <= c < n:
                raise ValueError(
                    f"cycle index {c} is out of range for n={n}; use indices in [0, n)."
                )
            if c in seen:
                raise ValueError(
                    f"index {c} appears in more than one cycle (or twice in one); cycles must be "
                    "disjoint. For the group generated by overlapping permutations use generated()."
                )
            seen.add(c)
        for a, b in zip(cycle, cycle[1:] + cycle[:1], strict=True):
            perm[a] = b
    return tuple(perm)


def _closure(generators: Sequence[tuple[int, ...]], n: int) -> list[tuple[int, ...]]:
    identity = tuple(range(n))
    elements = [identity]
    seen = {identity}
    frontier = [identity]
    while frontier:
        new = []
        for a in frontier:
            for s in generators:
                c = _perm_mul(s, a)
                if c not in seen:
                    seen.add(c)
                    elements.append(c)
                    new.append(c)
                    if len(elements) > _MAX_ORDER:
                        raise ValueError(
                            f"the generated group has more than {_MAX_ORDER} elements; "
                            "equijax handles groups you can enumerate."
                        )
        frontier = new
    return elements


def permutation(
    n: int, cycles: Sequence[Sequence[int]], *, name: str | None = None
) -> PermutationGroup:
    """The cyclic group generated by one permutation given as disjoint cycles.

    ``permutation(15, [(2, 10)])`` swaps ids 2 and 10 (order 2); ``permutation(5, [(0, 1, 2)])``
    is the cyclic group of order 3; several disjoint cycles generate the group of the single
    permutation that applies them all at once (order = lcm of the cycle lengths). Element ``k``
    is the generator applied ``k`` times.

    Args:
      n: size of the index set (e.g. a vocabulary size).
      cycles: disjoint cycles ``(a, b, c)`` meaning ``a -> b -> c -> a``.
      name: optional display name.

    Returns:
      A :class:`PermutationGroup`.

    Raises:
      ValueError: for indices outside ``[0, n)``, overlapping cycles or an empty cycle list.

    Examples:
      >>> import equijax as ej
      >>> ej.groups.permutation(5, [(0, 1, 2)]).order
      3
    """
    n = _check_n(n)
    if not cycles:
        raise ValueError("cycles must name at least one cycle, e.g. [(2, 10)].")
    gen = _perm_from_cycles(n, cycles)
    length = math.lcm(*(len(c) for c in cycles))
    perms = [tuple(range(n))]
    for _ in range(length - 1):
        perms.append(_perm_mul(gen, perms[-1]))
    return _permutation_group_from(perms, n, name or f"permutation{tuple(map(tuple, cycles))}")


def _perm_table(perms: np.ndarray, name: str = "group") -> np.ndarray:
    """The composition table ``table[a, b] = index of perms[a] ∘ perms[b]``; ``O(|G|²)`` memory.

    Raises ``ValueError`` if the set is not closed under composition. Only the support (ids
    moved by some element) is compared, and each permutation is encoded as one integer when
    the support is small, so S7 takes seconds.
    """
    order = perms.shape[0]
    moved = np.flatnonzero((perms != np.arange(perms.shape[1])[None]).any(axis=0))
    if moved.size == 0:
        return np.zeros((order, order), np.int32)
    sub = perms[:, moved]  # (order, s): images of the support (support maps to itself)
    local = np.searchsorted(moved, sub).astype(np.int64)  # relabel to 0..s-1
    s = moved.size
    if s * math.log2(max(s, 2)) < 62:
        radix = s ** np.arange(s, dtype=np.int64)

        def encode(rows: np.ndarray) -> np.ndarray:
            return rows @ radix
    else:
        radix = None

        def encode(rows: np.ndarray) -> np.ndarray:
            return np.asarray([r.tobytes() for r in rows], dtype=object)

    codes = encode(local)
    dense = None
    if radix is not None:
        sorter = np.argsort(codes, kind="stable")
        sorted_codes = codes[sorter]
        if np.any(sorted_codes[1:] == sorted_codes[:-1]):
            raise ValueError(f"{name}: duplicate permutations.")
        if s**s <= 1 << 25:  # a dense lookup table (at most 128 MiB) beats searchsorted
            dense = np.full(s**s, -1, np.int32)
            dense[codes] = np.arange(order, dtype=np.int32)
    else:
        lookup = {c: i for i, c in enumerate(codes)}
        if len(lookup) != order:
            raise ValueError(f"{name}: duplicate permutations.")
    table = np.empty((order, order), np.int32)
    for a in range(order):
        composed = local[a][local]  # (order, s): perms[a] ∘ perms[b] on the support
        c = encode(composed)
        if dense is not None:
            idx = dense[c]
            found = idx >= 0
        elif radix is not None:
            pos = np.clip(np.searchsorted(sorted_codes, c), 0, order - 1)
            found = sorted_codes[pos] == c
            idx = sorter[pos]
        else:
            got = [lookup.get(ci, -1) for ci in c]
            idx = np.asarray(got, np.int64)
            found = idx >= 0
        if not found.all():
            b = int(np.flatnonzero(~found)[0])
            raise ValueError(
                f"the elements are not closed under composition: {tuple(perms[a].tolist())} * "
                f"{tuple(perms[b].tolist())} is not among them; pass all elements, or build the "
                "group with `generated(...)`."
            )
        table[a] = idx
    return table


def _permutation_group_from(
    perms: Sequence[tuple[int, ...]], n: int, name: str
) -> PermutationGroup:
    arr = np.asarray(perms, dtype=np.int32).reshape(len(perms), n)
    return _trusted_permutation_group(name, _perm_table(arr, name), n, tuple(map(tuple, perms)))


# Tables built here from their perms skip re-validation in PermutationGroup.__post_init__.
_PREBUILT: dict[int, tuple[Any, np.ndarray]] = {}


def _trusted_permutation_group(
    name: str, table_np: np.ndarray, n: int, perms: tuple[tuple[int, ...], ...]
) -> PermutationGroup:
    table = _as_table_tuple(table_np)
    _PREBUILT[id(table)] = (table, table_np)
    try:
        return PermutationGroup(name=name, table=table, n=n, perms=perms)
    finally:
        _PREBUILT.pop(id(table), None)


def _as_perm(p: Sequence[int], n: int | None) -> tuple[int, ...]:
    for i in p:
        if not _is_static_int(i):
            raise TypeError(f"permutation entries must be ints, got {type(i).__name__} {i!r}.")
    p = tuple(int(i) for i in p)
    if n is not None and len(p) != n:
        raise ValueError(f"every permutation must have length n={n}, got one of length {len(p)}.")
    if sorted(p) != list(range(len(p))):
        raise ValueError(f"{p} is not a permutation of range({len(p)}).")
    return p


def permutation_group(
    elements: Sequence[Sequence[int]], *, name: str = "permutation_group"
) -> PermutationGroup:
    """A permutation group from an explicit list of all its elements (checked for closure).

    Args:
      elements: permutations in one-line notation (``p[i]`` is the image of ``i``); must contain
        the identity and be closed under composition. The identity is moved to index 0.
      name: display name.

    Raises:
      ValueError: if an element is not a permutation, or the set is not closed (the message
        names a product that is missing; use :func:`generated` to take the closure).

    Examples:
      >>> import equijax as ej
      >>> ej.groups.permutation_group([(0, 1, 2), (1, 0, 2)]).order
      2
    """
    if not elements:
        raise ValueError("elements must contain at least the identity permutation.")
    perms = [_as_perm(p, None) for p in elements]
    n = len(perms[0])
    perms = [_as_perm(p, n) for p in perms]
    identity = tuple(range(n))
    if identity not in perms:
        raise ValueError("elements must contain the identity permutation.")
    if len(set(perms)) != len(perms):
        raise ValueError("elements contains duplicate permutations.")
    perms = [identity] + [p for p in perms if p != identity]
    return _permutation_group_from(perms, n, name)


def generated(generators: Sequence[Sequence[int]], *, name: str = "generated") -> PermutationGroup:
    """The permutation group generated by ``generators`` (closure by breadth-first search).

    Examples:
      >>> import equijax as ej
      >>> # a 4-cycle and a reflection of a square's corners generate D4 (order 8)
      >>> ej.groups.generated([(1, 2, 3, 0), (3, 2, 1, 0)]).order
      8
    """
    if not generators:
        raise ValueError("generators must contain at least one permutation.")
    gens = [_as_perm(p, None) for p in generators]
    n = len(gens[0])
    gens = [_as_perm(p, n) for p in gens]
    return _permutation_group_from(_closure(gens, n), n, name)
