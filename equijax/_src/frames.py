"""Frame averaging (Puny et al., ICLR 2022): exact averaging over a small, input-dependent set.

A *frame* assigns to every input ``x`` a small set ``F(x)`` of group elements that bring ``x``
to a canonical form, with the equivariance property ``F(g x) = F(x) g⁻¹``. Averaging over it,

.. math::

    \\langle M \\rangle_F(x) = \\frac{1}{|F(x)|} \\sum_{h \\in F(x)} h^{-1} M(h x),

is exactly invariant/equivariant for any ``M`` at a cost of ``|F(x)|`` forward passes instead of
``|G|``. Built-in frames: the lexicographic sort of a point set (S_n), and the maximisers of a
fixed score over the orbit of an image (C4, D4 or any finite image group).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from equijax._src import common, orbit
from equijax._src.groups import FiniteGroup
from equijax._src.large_groups import SymmetricGroup

PyTree = Any


class Frame(NamedTuple):
    """The frame of a batch: ``F`` slots per example.

    Attributes:
      elements: group elements per example and slot, leaves ``(B, F, ...)`` (e.g. int32
        ``(B, F)`` indices of a finite group, or ``(B, F, n)`` permutations).
      weights: ``(B, F)`` non-negative weights; a slot with weight 0 is padding (its element
        must still be valid). Every example needs at least one positive weight.
    """

    elements: PyTree
    weights: jax.Array


class FrameSpec(NamedTuple):
    """A frame together with the action it needs (pass as ``frame=`` to :func:`frame_average`).

    Attributes:
      frame_fn: ``x -> Frame``.
      act: ``(elements (B, ...), x) -> x`` applying one element per example.
      inverse: ``elements -> elements`` (batched), used to map outputs back.
    """

    frame_fn: Callable[[PyTree], Frame]
    act: Callable[[Any, PyTree], PyTree]
    inverse: Callable[[Any], Any]


def frame_average(
    fn: Callable[..., PyTree],
    x: PyTree | None = None,
    *,
    frame: FrameSpec | None = None,
    frame_fn: Callable[[PyTree], Frame] | None = None,
    act: Callable[[Any, PyTree], PyTree] | None = None,
    inverse: Callable[[Any], Any] | None = None,
    out_action: Callable[[Any, PyTree], PyTree] | None = None,
    chunk_size: int | None = None,
    batching: orbit.Batching = None,
    return_frame: bool = False,
) -> PyTree:
    r"""Averages ``fn`` exactly over an equivariant frame (Puny et al. 2022).

    .. math::

        \langle M \rangle_F(x) = \frac{\sum_{h \in F(x)} w_h\, h^{-1} M(h x)}{\sum_h w_h}

    where ``frame_fn(x)`` returns the elements ``h`` that bring ``x`` to its canonical form
    (``h x`` canonical). If :math:`F(gx) = F(x)\,g^{-1}` (as sets, with equal weights), then
    every ``h' x'`` for ``x' = g x`` equals some ``h x`` **bitwise**, so the result is exactly
    invariant (and equivariant with ``out_action``, up to the summation order of tied slots).
    Cost: ``F`` forward passes (the number of slots) instead of ``|G|``.

    Args:
      fn: the model, batch -> batch of outputs.
      x: the input batch; if omitted, returns the transformed function.
      frame: a :class:`FrameSpec` bundling ``frame_fn``, ``act`` and ``inverse`` (e.g.
        :func:`equijax.frames.sort_frame` or :func:`equijax.frames.image_frame`).
      frame_fn: ``x -> Frame`` (elements ``(B, F, ...)``, weights ``(B, F)``).
      act: ``(elements (B, ...), x) -> x``, one element per example.
      inverse: batched inverse of elements; needed with ``out_action``.
      out_action: ``(elements (B, ...), y) -> y`` per example; ``None`` for invariant outputs.
      chunk_size: frame slots per chunk.
      batching: ``None`` (auto), ``"vmap"`` or ``"fold"`` (see :func:`equijax.equitune`).
      return_frame: also return the :class:`Frame`.

    Returns:
      The frame average (structure of ``fn(x)``), and the frame if ``return_frame``.

    Examples:
      >>> import jax, jax.numpy as jnp, equijax as ej
      >>> w = jax.random.normal(jax.random.key(0), (12,))
      >>> fn = lambda pts: pts.reshape(pts.shape[0], -1) @ w      # depends on point order
      >>> x = jax.random.normal(jax.random.key(1), (2, 6, 2))
      >>> spec = ej.frames.sort_frame(6)
      >>> y = ej.frame_average(fn, x, frame=spec)
      >>> p = jax.random.permutation(jax.random.key(2), 6)
      >>> bool((ej.frame_average(fn, ej.SymmetricGroup(6).act(p, x), frame=spec) == y).all())
      True

    References:
      Puny et al., "Frame Averaging for Invariant and Equivariant Network Design", ICLR 2022,
      https://arxiv.org/abs/2110.03336.
    """
    common.check_callable(fn, "fn")
    if frame is not None:
        if frame_fn is not None or act is not None or inverse is not None:
            raise ValueError("pass either frame=FrameSpec(...) or frame_fn/act/inverse, not both.")
        if not isinstance(frame, FrameSpec):
            raise TypeError(f"frame must be a FrameSpec, got {type(frame).__name__}.")
        frame_fn, act, inverse = frame
    common.check_callable(frame_fn, "frame_fn", "Expected x -> Frame(elements, weights).")
    common.check_callable(act, "act", "Expected (elements, x) -> x, one element per example.")
    if out_action is not None:
        common.check_callable(out_action, "out_action", "Expected (elements, y) -> y.")
        common.check_callable(inverse, "inverse", "out_action needs the inverse of elements.")
    if x is None:
        # the transformed function gets the unpacked frame_fn/act/inverse, not frame too
        return common.as_transformation(frame_average, fn, (), {**locals(), "frame": None})
    fr = frame_fn(x)
    if not isinstance(fr, Frame):
        fr = Frame(*fr)
    weights = jnp.asarray(fr.weights)
    b = orbit._batch_size(x)
    if weights.ndim != 2 or weights.shape[0] != b:
        raise ValueError(f"frame weights must have shape (B, F) with B={b}, got {weights.shape}.")
    if not isinstance(weights, jax.core.Tracer) and weights.size:
        w = np.asarray(weights)
        if not np.isfinite(w).all() or (w < 0).any() or not (w > 0).any(axis=1).all():
            raise ValueError(
                "frame weights must be finite and non-negative with at least one positive weight "
                "per example (a slot of weight 0 is padding); check frame_fn."
            )
    # the slots are the orbit engine's elements: (F, B, ...), one element per example
    slots = jax.tree.map(lambda e: jnp.moveaxis(e, 1, 0), jax.lax.stop_gradient(fr.elements))

    def untransform(h: Any, y: PyTree) -> PyTree:
        return y if out_action is None else out_action(inverse(h), y)

    reducer = orbit.weighted_mean_reducer(jax.lax.stop_gradient(weights))
    y, _ = orbit.orbit_reduce(fn, x, elements=slots, transform=act,
                              untransform=untransform, reducer=reducer,
                              chunk_size=chunk_size, batching=batching)  # fmt: skip
    return (y, fr) if return_frame else y


# ---------------------------------------------------------------------------------------
# Built-in frames.
# ---------------------------------------------------------------------------------------


def sort_frame(n: int, axis: int = 1) -> FrameSpec:
    r"""The S_n frame of point sets: the permutation that sorts the points lexicographically.

    For ``x`` of shape ``(B, n, ...)`` (set axis ``axis``), points are compared by their
    flattened features, first coordinate first (a stable lexicographic sort). The canonical
    form ``h x`` is the sorted set, which is the same array for every ordering of the input:
    ``frame_average`` over it is exactly S_n-invariant.

    **Ties.** If two points are identical, every sort that swaps them is also in the frame;
    they produce the very same canonical array, so invariant outputs are exact with the single
    (stable) sort returned here. Coordinates compare as numbers: ``-0.0`` ties with ``0.0`` and
    every NaN ties with every NaN, so the frame's ``act`` canonicalises them (``-0.0`` becomes
    ``0.0``, every NaN the standard NaN) and tied points give bitwise the same canonical
    array. For per-point (equivariant) outputs, the full frame average equals the single-sort
    output with the rows of tied points averaged: apply :func:`average_tied_points` to the
    result.

    Args:
      n: number of points.
      axis: the set axis of the batched input.

    Returns:
      A :class:`FrameSpec` with one slot per example (elements ``(B, 1, n)``).

    Examples:
      >>> import jax.numpy as jnp, equijax as ej
      >>> x = jnp.array([[[2.0, 0.0], [1.0, 5.0], [1.0, 3.0]]])
      >>> spec = ej.frames.sort_frame(3)
      >>> h = spec.frame_fn(x).elements[:, 0]
      >>> spec.act(h, x)[0].tolist()
      [[1.0, 3.0], [1.0, 5.0], [2.0, 0.0]]
    """
    group = SymmetricGroup(n, axis=axis)

    def frame_fn(x: ArrayLike) -> Frame:
        x = jnp.asarray(x)
        ax = axis if axis >= 0 else x.ndim + axis
        if not 0 < ax < x.ndim or x.shape[ax] != n:
            raise ValueError(
                f"sort_frame({n}, axis={axis}) needs x.shape[{axis}] == {n}, got shape {x.shape}."
            )
        pts = _points(x, ax, n)

        def order(p: jax.Array) -> jax.Array:
            keys = tuple(p[:, j] for j in reversed(range(p.shape[1])))
            return jnp.lexsort(keys) if keys else jnp.arange(n)

        o = jax.vmap(order)(jax.lax.stop_gradient(pts))
        h = group.inverse(o)  # (h x)[h[i]] = x[i] puts point o[r] at slot r
        return Frame(elements=h[:, None, :], weights=jnp.ones((x.shape[0], 1), jnp.float32))

    def act(h: jax.Array, x: ArrayLike) -> jax.Array:
        return group.act(h, _canonical_numbers(jnp.asarray(x)))

    return FrameSpec(frame_fn=frame_fn, act=act, inverse=group.inverse)


def _points(x: jax.Array, axis: int, n: int) -> jax.Array:
    """``(B, n, d)``: the points along ``axis`` with their features flattened (``B = 0`` too)."""
    moved = jnp.moveaxis(x, axis, 1)
    return moved.reshape(x.shape[0], n, math.prod(moved.shape[2:]))


def _canonical_numbers(x: jax.Array) -> jax.Array:
    """``-0.0 -> 0.0`` and every NaN -> the standard NaN (what compares equal is made equal)."""
    if not jnp.issubdtype(x.dtype, jnp.inexact):
        return x
    x = jnp.where(x == 0, jnp.zeros((), x.dtype), x)
    return jnp.where(jnp.isnan(x), jnp.full((), jnp.nan, x.dtype), x)


def average_tied_points(points: ArrayLike, y: ArrayLike, axis: int = 1) -> jax.Array:
    """Averages per-point outputs over identical points (the tie rule of :func:`sort_frame`).

    ``out[b, i] = mean_{j : points[b, j] == points[b, i]} y[b, j]`` along ``axis``, with the
    tie rule of the sort: coordinates compare as numbers (``-0.0 == 0.0``) and NaN ties with
    NaN, so a point with a NaN coordinate is tied with itself (its row is never ``0 / 0``).

    Examples:
      >>> import jax.numpy as jnp, equijax as ej
      >>> pts = jnp.array([[[1.0], [1.0], [2.0]]])
      >>> ej.frames.average_tied_points(pts, jnp.array([[0.0, 2.0, 5.0]])).tolist()
      [[1.0, 1.0, 5.0]]
    """
    points, y = jnp.asarray(points), jnp.asarray(y)
    n = points.shape[axis]
    if y.ndim < 2 or y.shape[0] != points.shape[0] or y.shape[axis] != n:
        raise ValueError(
            f"y must hold one row per point along axis {axis}: batch {points.shape[0]} and "
            f"{n} points, got points {points.shape} and y {y.shape}."
        )
    p = _points(points, axis if axis >= 0 else points.ndim + axis, n)
    a, b = p[:, :, None, :], p[:, None, :, :]
    equal = (
        (a == b) | (jnp.isnan(a) & jnp.isnan(b)) if jnp.issubdtype(p.dtype, jnp.inexact) else a == b
    )
    same = jnp.all(equal, axis=-1).astype(y.dtype)  # (B, n, n)
    yy = jnp.moveaxis(y, axis, 1)
    avg = jnp.einsum("bij,bj...->bi...", same, yy) / same.sum(-1).reshape(
        same.shape[:2] + (1,) * (yy.ndim - 2)
    )
    return jnp.moveaxis(avg, 1, axis)


def per_example_act(group: FiniteGroup) -> Callable[[jax.Array, PyTree], PyTree]:
    """``(g (B,), x (B, ...)) -> x`` applying ``group.act(g[b], x[b])`` to each example.

    Examples:
      >>> import jax.numpy as jnp, equijax as ej
      >>> act = ej.frames.per_example_act(ej.groups.rot90())
      >>> x = jnp.arange(8.0).reshape(2, 2, 2, 1)
      >>> act(jnp.array([0, 2]), x)[1, ..., 0].tolist()
      [[7.0, 6.0], [5.0, 4.0]]
    """
    common.check_group(group)

    def act(g: jax.Array, x: PyTree) -> PyTree:
        one = lambda gi, xi: jax.tree.map(lambda a: a[0], group.act(gi, jax.tree.map(
            lambda a: a[None], xi)))  # fmt: skip
        return jax.vmap(one)(jnp.asarray(g), x)

    return act


def _default_pattern(shape: tuple[int, ...]) -> np.ndarray:
    # A fixed generic weight pattern (no symmetry of the square), independent of any seed.
    rng = np.random.default_rng(20220101)
    return rng.standard_normal(shape).astype(np.float32)


def image_frame(
    group: FiniteGroup,
    *,
    score: Callable[[jax.Array], jax.Array] | None = None,
    max_size: int = 1,
) -> FrameSpec:
    r"""A frame for a finite image group (C4, D4, ...): the maximisers of a fixed score.

    .. math::

        F(x) = \operatorname{argmax}_{h \in G}\; s(h x)

    For ``x' = g x`` the scores of ``h' x'`` are those of ``h x`` with ``h' = h g^{-1}`` (the
    arrays are bitwise identical, group actions on pixels being permutations), so
    :math:`F(gx) = F(x)\,g^{-1}` and :func:`frame_average` is exact (for groups acting by
    pixel permutations; with interpolated rotations such as ``image_rotations(8)`` only up to
    interpolation error). The orbit is only *scored* (cheap); the model runs on ``max_size``
    slots.

    Ties: if ``x`` has a symmetry ``s`` (``s x == x``), ``h`` and ``h s`` tie and give the same
    canonical image, so invariant outputs stay exact with ``max_size=1``; slots beyond the
    first are used (weight 1) only for exact ties, which keeps equivariant outputs exact when
    the number of tied maximisers is at most ``max_size`` (``max_size=group.order`` is always
    exact). Unrelated images tying in score by coincidence is a measure-zero event for the
    default score, a fixed generic pixel pattern :math:`s(x) = \sum w \odot x`.

    Args:
      group: a finite group acting on image batches (e.g. ``ej.groups.rot90()``).
      score: ``images (B, H, W, C) -> (B,)`` scores; default: the fixed generic pattern.
      max_size: number of frame slots (model evaluations per example).

    Returns:
      A :class:`FrameSpec` (elements int32 ``(B, max_size)``).

    Examples:
      >>> import jax, jax.numpy as jnp, equijax as ej
      >>> G = ej.groups.dihedral()
      >>> w = jax.random.normal(jax.random.key(0), (5 * 5, 3))
      >>> fn = lambda im: im.reshape(im.shape[0], -1) @ w
      >>> x = jax.random.normal(jax.random.key(1), (2, 5, 5, 1))
      >>> spec = ej.frames.image_frame(G)
      >>> y = ej.frame_average(fn, x, frame=spec)
      >>> bool((ej.frame_average(fn, G.act(5, x), frame=spec) == y).all())
      True
    """
    group = common.check_group(group)
    if isinstance(max_size, bool) or not isinstance(max_size, (int, np.integer)):
        raise TypeError(f"max_size must be an int, got {type(max_size).__name__}.")
    if not 1 <= max_size <= group.order:
        raise ValueError(f"max_size must be in [1, {group.order}], got {max_size}.")
    if score is not None:
        common.check_callable(score, "score", "Expected images -> (B,) scores.")
    act = per_example_act(group)

    def frame_fn(x: ArrayLike) -> Frame:
        x = jax.lax.stop_gradient(jnp.asarray(x))
        if score is None:
            pattern = jnp.asarray(_default_pattern(x.shape[1:]))
            s_fn = lambda im: jnp.sum(im * pattern, axis=tuple(range(1, im.ndim)))
        else:
            s_fn = score
        scores = jnp.stack([s_fn(group.act(g, x)) for g in range(group.order)])  # (|G|, B)
        order = jnp.argsort(-scores, axis=0, stable=True)[:max_size]  # (F, B)
        top = jnp.take_along_axis(scores, order, axis=0)
        # slot 0 always counts (even for a NaN score); later slots only for exact ties
        tied = (top == top[:1]) | (jnp.isnan(top) & jnp.isnan(top[:1]))
        weights = tied.at[0].set(True).astype(jnp.float32)
        return Frame(elements=order.T.astype(jnp.int32), weights=weights.T)

    return FrameSpec(frame_fn=frame_fn, act=act, inverse=lambda g: group.inverse(g))


# ---------------------------------------------------------------------------------------
# The lexicographic frame of token sequences (sampling in a canonical frame).
# ---------------------------------------------------------------------------------------


def _lex_less(a: jax.Array, b: jax.Array) -> jax.Array:
    """Row-wise lexicographic ``a < b`` for ``(B, T)`` int arrays."""
    diff = a != b
    first = jnp.argmax(diff, axis=-1)
    av = jnp.take_along_axis(a, first[:, None], axis=-1)[:, 0]
    bv = jnp.take_along_axis(b, first[:, None], axis=-1)[:, 0]
    return diff.any(-1) & (av < bv)


def lexicographic_frame(group: FiniteGroup, ids: ArrayLike) -> jax.Array:
    r"""The canonical frame of token sequences: ``c(x) = argmin_h lex(h⁻¹·x)``.

    .. math::

        c(x) = \operatorname*{argmin}_{h \in G} \operatorname{lex}(h^{-1} \cdot x),
        \qquad c(g \cdot x) = g \cdot c(x)

    (the element that maps the lexicographically smallest member of the orbit of ``x`` to
    ``x``); the identity holds whenever no non-identity element fixes ``x``. Rows fixed by a
    non-identity element get the smallest minimising index. The sequence engine expresses its
    sampling noise and its equizero tie-break in this frame.

    Args:
      group: a finite group acting on ids with ``act`` (e.g. a permutation of a vocabulary).
      ids: ``(B, T)`` int sequences.

    Returns:
      ``(B,)`` int32 group elements.

    Examples:
      >>> from equijax.groups import permutation
      >>> G = permutation(4, [(0, 1)])
      >>> x = jnp.array([[1, 3], [0, 3], [2, 3]])
      >>> lexicographic_frame(G, x).tolist()
      [1, 0, 0]
      >>> lexicographic_frame(G, G.act(1, x)).tolist()
      [0, 1, 0]
    """
    ids = jnp.asarray(ids)
    best = ids
    index = jnp.zeros(ids.shape[:1], jnp.int32)
    for h in range(1, group.order):
        cand = group.act(group.inverse(h), ids)
        less = _lex_less(cand, best)
        best = jnp.where(less[:, None], cand, best)
        index = jnp.where(less, h, index)
    return index
