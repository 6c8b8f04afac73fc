"""Finite groups and their actions.

Every finite group is a hashable, immutable description: its elements are the integers
``0 .. order - 1`` (``0`` is the identity), its multiplication is a Cayley table, and its
``act(g, x)`` applies element ``g`` to an array. ``g`` may be a Python ``int`` (fast static
path: no gather, no switch) or a traced integer scalar (inside ``jit``/``vmap``/``scan``).

Element indices: a Python ``int`` outside ``[0, order)`` raises ``ValueError``; a ``float``,
``bool`` or non-integer array raises ``TypeError``. An integer *array* index (traced or not)
is taken modulo ``order`` by ``act``, ``compose`` and ``inverse`` of every group (an
out-of-range traced value cannot raise, and modulo is the one choice that keeps
``act(g, act(h, x)) == act(compose(g, h), x)``).

Permutation groups are stored as their permutations plus a Cayley table built with numpy
(``O(|G|²)`` memory, no ``|G|³`` associativity check: permutations compose associatively). The
practical limit is set by the ``|G|²`` table: S7 (order 5040, a 25M-entry table) builds in a
few seconds within about 1 GiB; S8 (40,320) would need a 1.6G-entry table and is out of reach.

Groups compare and hash by value, so rebuilding a group never triggers recompilation when
it is passed as a static argument of :func:`jax.jit`.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

Element = int | jax.Array

_MAX_ORDER = 100_000


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


# ----------------------------------------------------------------------------------------
# Image groups (rotations by multiples of 90 degrees and true mirror flips).
# ----------------------------------------------------------------------------------------


def _d4_mul(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    # Element (k, f) acts as x -> rot^k(flip^f(x)), flip = mirror of the width axis.
    # flip rot^k = rot^{-k} flip, so (k1,f1)(k2,f2) = (k1 + (-1)^f1 k2, f1 xor f2).
    (k1, f1), (k2, f2) = a, b
    return ((k1 + (k2 if f1 == 0 else -k2)) % 4, f1 ^ f2)


@dataclasses.dataclass(frozen=True)
class ImageGroup(FiniteGroup):
    """A subgroup of D4 acting on the two spatial axes of image batches.

    Element ``(k, f)`` maps an image to ``rot90^k(mirror^f(image))``: first a true mirror
    (reversal of the width axis) if ``f == 1``, then ``k`` counter-clockwise quarter turns.
    ``mirror`` is a reflection, not a 180-degree rotation.

    Attributes:
      elements: the ``(k, f)`` pairs, identity first.
      layout: ``"NHWC"`` (spatial axes ``-3, -2``) or ``"NCHW"`` (spatial axes ``-2, -1``).
    """

    elements: tuple[tuple[int, int], ...] = ()
    layout: Literal["NHWC", "NCHW"] = "NHWC"

    @property
    def spatial_axes(self) -> tuple[int, int]:
        return (-3, -2) if self.layout == "NHWC" else (-2, -1)

    def _validate(self, x: jax.Array) -> None:
        if x.ndim < 4:
            raise ValueError(
                f"{self.name} acts on batched images of layout {self.layout} (rank >= 4), got x "
                f"with shape {x.shape}; add a batch axis (x[None]) or a channel axis."
            )
        h, w = (x.shape[a] for a in self.spatial_axes)
        rotates = any(k % 2 == 1 for k, _ in self.elements)
        if rotates and h != w:
            raise ValueError(
                f"{self.name} contains quarter turns, which need square images, got x with "
                f"spatial shape ({h}, {w}); crop or pad x to a square first."
            )

    def _apply(self, elem: tuple[int, int], x: jax.Array) -> jax.Array:
        k, f = elem
        ah, aw = self.spatial_axes
        if f:
            x = jnp.flip(x, axis=aw)
        return jnp.rot90(x, k, axes=(ah, aw)) if k else x

    def act(self, g: Element, x: ArrayLike) -> jax.Array:
        """Applies element ``g`` to a batch of images ``x`` of shape ``(..., H, W, C)``.

        Args:
          g: element index (int or traced int scalar).
          x: images in the group's layout, rank >= 4.

        Returns:
          The transformed images, same shape as ``x``.

        Examples:
          >>> import jax.numpy as jnp, equijax as ej
          >>> G = ej.groups.rot90()
          >>> x = jnp.arange(4.0).reshape(1, 2, 2, 1)
          >>> G.act(1, x)[0, ..., 0].tolist()
          [[1.0, 3.0], [0.0, 2.0]]
        """
        x = jnp.asarray(x)
        self._validate(x)
        branches = [lambda x, e=e: self._apply(e, x) for e in self.elements]
        return self._switch(g, branches, x)


def _image_group(name: str, elements: Sequence[tuple[int, int]], layout: str) -> ImageGroup:
    if layout not in ("NHWC", "NCHW"):
        raise ValueError(f"layout must be 'NHWC' or 'NCHW', got {layout!r}.")
    elements = tuple(elements)
    table = _table_from_elements(elements, _d4_mul)
    return ImageGroup(name=name, table=table, elements=elements, layout=layout)


def rot90(layout: Literal["NHWC", "NCHW"] = "NHWC") -> ImageGroup:
    """C4: rotations of square images by multiples of 90 degrees (element k = k quarter turns).

    Examples:
      >>> import equijax as ej
      >>> ej.groups.rot90().order
      4
    """
    return _image_group("rot90", [(k, 0) for k in range(4)], layout)


def rot180(layout: Literal["NHWC", "NCHW"] = "NHWC") -> ImageGroup:
    """C2: the identity and the 180-degree rotation (works on non-square images)."""
    return _image_group("rot180", [(0, 0), (2, 0)], layout)


def hflip(layout: Literal["NHWC", "NCHW"] = "NHWC") -> ImageGroup:
    """Z2: the identity and the horizontal mirror (left-right reversal of the width axis)."""
    return _image_group("hflip", [(0, 0), (0, 1)], layout)


def vflip(layout: Literal["NHWC", "NCHW"] = "NHWC") -> ImageGroup:
    """Z2: the identity and the vertical mirror (up-down reversal of the height axis).

    The vertical mirror is ``rot90^2 ∘ hflip``; element 1 is stored as ``(2, 1)``.
    """
    return _image_group("vflip", [(0, 0), (2, 1)], layout)


def dihedral(layout: Literal["NHWC", "NCHW"] = "NHWC") -> ImageGroup:
    """D4: the 8 symmetries of the square, elements ``(k, f)`` ordered ``k + 4 f``.

    Examples:
      >>> import equijax as ej
      >>> G = ej.groups.dihedral()
      >>> G.order, G.compose(4, 4)
      (8, 0)
    """
    return _image_group("dihedral", [(k, f) for f in range(2) for k in range(4)], layout)


# ----------------------------------------------------------------------------------------
# Permutation groups on a finite index set (token ids, actions, vocabulary axes).
# ----------------------------------------------------------------------------------------


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


def _check_n(n: int) -> int:
    if not _is_static_int(n) or n < 1:
        raise ValueError(f"n must be a positive int (the size of the index set), got {n!r}.")
    return int(n)


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


# ----------------------------------------------------------------------------------------
# Direct products.
# ----------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------
# Linear actions on vectors.
# ----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SignFlipGroup(FiniteGroup):
    """Z2 acting on the last axis by ``x -> x * signs`` (a diagonal reflection).

    Example: CartPole's reflection ``s -> -s`` is ``sign_flip([-1, -1, -1, -1])``.
    """

    signs: tuple[float, ...] = ()

    def act(self, g: Element, x: ArrayLike) -> jax.Array:
        x = jnp.asarray(x)
        if x.ndim == 0 or x.shape[-1] != len(self.signs):
            raise ValueError(
                f"sign_flip with {len(self.signs)} signs acts on arrays whose last axis has "
                f"length {len(self.signs)}, got x with shape {x.shape}."
            )
        signs = jnp.asarray(self.signs, dtype=x.dtype)
        g = self._check_index(g)
        if isinstance(g, int):
            return x * signs if g else x
        return jnp.where(g == 1, x * signs, x)


def sign_flip(signs: Sequence[float], *, name: str = "sign_flip") -> SignFlipGroup:
    """Z2 whose non-identity element multiplies the last axis by ``signs`` (entries ±1).

    Examples:
      >>> import jax.numpy as jnp, equijax as ej
      >>> ej.groups.sign_flip([1, -1]).act(1, jnp.array([2.0, 3.0])).tolist()
      [2.0, -3.0]
    """
    signs = tuple(float(s) for s in signs)
    if not signs or any(s not in (1.0, -1.0) for s in signs):
        raise ValueError(f"signs must be a non-empty sequence of ±1, got {signs}.")
    if all(s == 1.0 for s in signs):
        raise ValueError("signs are all +1: that is the trivial action; flip at least one entry.")
    return SignFlipGroup(name=name, table=((0, 1), (1, 0)), signs=signs)


def _rotate(theta: jax.Array, x: jax.Array) -> jax.Array:
    if x.ndim == 0 or x.shape[-1] != 2:
        raise ValueError(
            f"rotations act on 2-D vectors (last axis of length 2), got shape {x.shape}."
        )
    theta = jnp.asarray(theta, dtype=x.dtype)
    extra = x.ndim - 1 - theta.ndim
    if extra < 0 or x.shape[: theta.ndim] != theta.shape:
        raise ValueError(
            f"angles of shape {theta.shape} must be a prefix of the vector batch shape "
            f"{x.shape[:-1]} (one angle per example, or a scalar)."
        )
    theta = theta.reshape(theta.shape + (1,) * extra)
    c, s = jnp.cos(theta), jnp.sin(theta)
    return jnp.stack([c * x[..., 0] - s * x[..., 1], s * x[..., 0] + c * x[..., 1]], axis=-1)


@dataclasses.dataclass(frozen=True)
class VectorRotationGroup(FiniteGroup):
    """C_n: rotations of 2-D vectors (last axis of length 2) by ``2 pi k / n``."""

    def angle(self, g: Element) -> jax.Array:
        g = self._check_index(g)
        return 2.0 * jnp.pi * jnp.asarray(g, jnp.float32) / self.order

    def act(self, g: Element, x: ArrayLike) -> jax.Array:
        return _rotate(self.angle(g), jnp.asarray(x))


def cyclic(n: int) -> VectorRotationGroup:
    """C_n acting on 2-D vectors by rotations through multiples of ``2 pi / n``.

    Examples:
      >>> import jax.numpy as jnp, equijax as ej
      >>> v = ej.groups.cyclic(4).act(1, jnp.array([1.0, 0.0]))
      >>> bool(jnp.allclose(v, jnp.array([0.0, 1.0]), atol=1e-6))
      True
    """
    n = _check_n(n)
    table = tuple(tuple((a + b) % n for b in range(n)) for a in range(n))
    return VectorRotationGroup(name=f"C{n}", table=table)


class AngleLaw:
    """The group law of SO(2) on angles (radians): ``compose`` adds, ``inverse`` negates, the
    identity is 0. Shared by :class:`SO2` (on vectors) and ``ImageRotation`` (on images), which
    add their own ``act``."""

    @staticmethod
    def compose(a: ArrayLike, b: ArrayLike) -> jax.Array:
        return jnp.asarray(a) + jnp.asarray(b)

    @staticmethod
    def inverse(a: ArrayLike) -> jax.Array:
        return -jnp.asarray(a)

    @staticmethod
    def identity() -> jax.Array:
        return jnp.zeros(())


@dataclasses.dataclass(frozen=True)
class SO2(AngleLaw):
    """The continuous rotation group SO(2) acting on 2-D vectors; elements are angles (radians).

    ``act(theta, x)`` rotates the vectors ``x[..., :]`` (last axis of length 2) by ``theta``,
    a scalar or one angle per example (a prefix of ``x.shape[:-1]``). Used by
    :func:`equijax.canonical_lambda_equitune`.

    Examples:
      >>> import jax.numpy as jnp, equijax as ej
      >>> G = ej.groups.SO2()
      >>> v = G.act(jnp.pi / 2, jnp.array([1.0, 0.0]))
      >>> bool(jnp.allclose(v, jnp.array([0.0, 1.0]), atol=1e-6))
      True
    """

    name: str = "SO2"

    def act(self, theta: ArrayLike, x: ArrayLike) -> jax.Array:
        return _rotate(jnp.asarray(theta), jnp.asarray(x))
