"""Evaluation of a model over a group orbit, with chunking and sharding.

The engine behind every method: for element indices ``i`` in ``0 .. n - 1`` it builds the
transformed inputs ``x_i = transform(i, x)``, runs the model on them (``vmap`` over the
element axis, or folded into the batch), maps each output back with ``untransform(i, .)``
and folds the results into a reduction. A *reducer* is a monoid over chunks:

* ``summarize(chunk) -> partial`` reduces one chunk of elements,
* ``merge(earlier, later) -> partial`` combines two partials (associative),
* ``finalize(partial) -> result``.

With ``chunk_size=None`` the whole orbit is one chunk. With ``chunk_size=c`` the first chunk
holds ``n mod c`` elements (or ``c``) and the rest run under :func:`jax.lax.scan`, so peak
activation memory is that of ``c * batch`` examples, whatever the group order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any
Batching = Literal["vmap", "fold"]


class Chunk(NamedTuple):
    """The per-element results of one chunk of group elements.

    Attributes:
      index: element indices, shape ``(c,)`` int32.
      y: outputs mapped back to the original frame (``untransform``), leaves ``(c, B, ...)``.
      aux: per-element, per-example scalars (a loss or a weight logit), ``(c, B)``, or None.
    """

    index: jax.Array
    y: PyTree
    aux: jax.Array | None


class Reducer(NamedTuple):
    """A monoid over chunks of group elements (see module docstring)."""

    summarize: Callable[[Chunk], PyTree]
    merge: Callable[[PyTree, PyTree], PyTree]
    finalize: Callable[[PyTree], PyTree]


def validate_chunk_size(chunk_size: int | None, n: int) -> int:
    """Returns the effective chunk size, raising for invalid values."""
    if chunk_size is None:
        return n
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)):
        raise TypeError(f"chunk_size must be an int or None, got {type(chunk_size).__name__}.")
    if chunk_size < 1:
        raise ValueError(
            f"chunk_size must be a positive number of group elements per chunk, got {chunk_size}; "
            "use None to evaluate the whole orbit at once."
        )
    return min(int(chunk_size), n)


def _batch_size(x: PyTree, arg: str = "x") -> int:
    leaves = jax.tree.leaves(x)
    if not leaves:
        raise ValueError(f"{arg} must contain at least one array.")
    sizes = {jnp.shape(leaf)[0] if jnp.ndim(leaf) else None for leaf in leaves}
    if None in sizes or len(sizes) != 1:
        raise ValueError(
            f"every array in {arg} needs the same leading batch axis, got shapes "
            f"{[jnp.shape(leaf) for leaf in leaves]}; add a batch axis with x[None]."
        )
    return sizes.pop()


def _stack(trees: Sequence[PyTree]) -> PyTree:
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _unstack(tree: PyTree, c: int) -> list[PyTree]:
    return [jax.tree.map(lambda a, j=j: a[j], tree) for j in range(c)]


def _check_same_structure(before: PyTree, after: PyTree, what: str) -> None:
    sb = jax.tree.map(lambda a: (jnp.shape(a), jnp.result_type(a)), before)
    sa = jax.tree.map(lambda a: (jnp.shape(a), jnp.result_type(a)), after)
    if jax.tree.structure(before) != jax.tree.structure(after) or sb != sa:
        raise ValueError(
            f"{what} must return outputs of the same shape and dtype as its input "
            f"(got {sb} -> {sa}); an output action permutes or transforms, it does not reshape."
        )


def orbit_reduce(
    fn: Callable[[PyTree], PyTree],
    x: PyTree,
    *,
    n: int,
    transform: Callable[[Any, PyTree], PyTree],
    untransform: Callable[[Any, PyTree], PyTree],
    reducer: Reducer,
    aux_fn: Callable[[PyTree, PyTree, PyTree], jax.Array] | None = None,
    aux_name: str = "aux",
    has_aux: bool = False,
    chunk_size: int | None = None,
    batching: Batching = "vmap",
    orbit_sharding: jax.sharding.Sharding | None = None,
    collect_aux: bool = False,
) -> tuple[PyTree, jax.Array | None]:
    """Evaluates ``fn`` on the orbit and reduces it.

    Args:
      fn: batch -> batch of outputs (or ``(outputs, features)`` if ``has_aux``).
      x: the input batch (pytree, leading batch axis ``B``).
      n: number of elements.
      transform: ``(i, x) -> x_i``.
      untransform: ``(i, y) -> y`` back in the frame of ``x``.
      reducer: how to reduce the per-element results.
      aux_fn: ``(x_i, y_i, features_i) -> (B,)`` scalars per example, or None.
      aux_name: the user-facing name of the callable behind ``aux_fn``, for errors.
      has_aux: whether ``fn`` returns ``(outputs, features)``.
      chunk_size: elements per chunk (None: all at once).
      batching: ``"vmap"`` maps ``fn`` over the element axis; ``"fold"`` merges the element
        axis into the batch axis and calls ``fn`` once per chunk (needed when ``fn`` is a
        Flax linen module call inside another module, where ``jax.vmap`` cannot be used).
      orbit_sharding: optional sharding for the stacked transformed inputs ``(c, B, ...)``,
        e.g. ``NamedSharding(mesh, P("group", "batch"))``.
      collect_aux: also return the ``(n, B)`` aux values of every element.

    Returns:
      ``(result, aux)`` where ``aux`` is ``(n, B)`` if ``collect_aux`` else None.
    """
    if batching not in ("vmap", "fold"):
        raise ValueError(f"batching must be 'vmap' or 'fold', got {batching!r}.")
    c = validate_chunk_size(chunk_size, n)
    b = _batch_size(x)

    def run(idx: Sequence[Any], index_array: jax.Array) -> Chunk:
        xs = _stack([transform(i, x) for i in idx])
        if orbit_sharding is not None:
            xs = jax.tree.map(lambda a: jax.lax.with_sharding_constraint(a, orbit_sharding), xs)
        k = len(idx)
        if batching == "vmap":
            out = jax.vmap(fn)(xs)
        else:
            flat = jax.tree.map(lambda a: a.reshape((k * b, *a.shape[2:])), xs)
            out = fn(flat)
            out = jax.tree.map(lambda a: a.reshape((k, b, *a.shape[1:])), out)
        if has_aux:
            if not (isinstance(out, tuple) and len(out) == 2):
                raise ValueError("with has_aux=True, fn must return a pair (outputs, features).")
            ys, feats = out
        else:
            ys, feats = out, None
        for leaf in jax.tree.leaves(ys):
            if leaf.ndim < 2 or leaf.shape[1] != b:
                raise ValueError(
                    f"fn must map a batch of {b} examples to outputs with leading axis {b}, got "
                    f"an output of shape {leaf.shape[1:]}."
                )
        aux = None
        if aux_fn is not None:
            if batching == "vmap":
                aux = jax.vmap(aux_fn)(xs, ys, feats)
            else:
                fold = lambda t: jax.tree.map(lambda a: a.reshape((k * b, *a.shape[2:])), t)
                aux = aux_fn(fold(xs), fold(ys), fold(feats))
                aux = aux.reshape((k, b, *aux.shape[1:]))
            if aux.shape == (k, b, 1):
                aux = aux[..., 0]
            if aux.shape != (k, b):
                raise ValueError(
                    f"{aux_name} must return one scalar per example, shape ({b},), got shape "
                    f"{aux.shape[1:]}."
                )
        per = _unstack(ys, k)
        back = [untransform(i, yi) for i, yi in zip(idx, per, strict=True)]
        _check_same_structure(per[0], back[0], "out_action")
        return Chunk(index=index_array, y=_stack(back), aux=aux)

    first = n % c or c
    first_idx = tuple(range(first))
    chunk0 = run(first_idx, jnp.arange(first, dtype=jnp.int32))
    partial = reducer.summarize(chunk0)
    auxes = [chunk0.aux]
    rest = (n - first) // c
    if rest:
        index = jnp.arange(first, n, dtype=jnp.int32).reshape(rest, c)

        def body(carry: PyTree, idx: jax.Array) -> tuple[PyTree, Any]:
            chunk = run([idx[j] for j in range(c)], idx)
            return reducer.merge(carry, reducer.summarize(chunk)), chunk.aux

        partial, aux_rest = jax.lax.scan(body, partial, index)
        if collect_aux:
            auxes.append(aux_rest.reshape(rest * c, b))
    result = reducer.finalize(partial)
    if not collect_aux:
        return result, None
    return result, jnp.concatenate(auxes, axis=0)


# ---------------------------------------------------------------------------------------
# Reducers.
# ---------------------------------------------------------------------------------------


def mean_reducer(n: int) -> Reducer:
    """Arithmetic mean over the elements: ``1/n Σ_i y_i``."""
    return Reducer(
        summarize=lambda ch: jax.tree.map(lambda a: a.sum(axis=0), ch.y),
        merge=lambda p, q: jax.tree.map(jnp.add, p, q),
        finalize=lambda p: jax.tree.map(lambda a: a / n, p),
    )


def _select(chunk_y: PyTree, j: jax.Array) -> PyTree:
    """Picks ``chunk_y[j[b], b]`` for every example ``b``."""

    def pick(a: jax.Array) -> jax.Array:
        idx = j.reshape((1, -1) + (1,) * (a.ndim - 2))
        return jnp.take_along_axis(a, idx, axis=0)[0]

    return jax.tree.map(pick, chunk_y)


def argmin_reducer(ties: str = "average") -> Reducer:
    """Keeps, per example, the output of the element with the smallest aux.

    With ``ties="average"`` the outputs of all elements attaining the minimum (exactly) are
    averaged: if ``x`` is fixed by some element ``s`` (a non-trivial stabiliser), ``g`` and
    ``g s`` tie, and only their average keeps the result exactly equivariant. With
    ``ties="first"`` the lowest-index minimiser wins. The reported index is always the
    lowest-index minimiser. The partial is ``(loss, index, sum_y, count)``; the result is
    ``(y, index)``.
    """

    def summarize(ch: Chunk) -> PyTree:
        j = jnp.argmin(ch.aux, axis=0)
        loss = jnp.take_along_axis(ch.aux, j[None], axis=0)[0]
        if ties == "first":
            return loss, ch.index[j], _select(ch.y, j), jnp.ones_like(loss)
        hit = (ch.aux == loss[None]).astype(jnp.float32)

        def tied_sum(a: jax.Array) -> jax.Array:
            return jnp.einsum("cb,cb...->b...", hit.astype(a.dtype), a)

        return loss, ch.index[j], jax.tree.map(tied_sum, ch.y), hit.sum(axis=0)

    def merge(p: PyTree, q: PyTree) -> PyTree:
        lp, ip, yp, cp = p
        lq, iq, yq, cq = q
        take_q = lq < lp  # strict: ties keep the earlier (lower-index) element
        tie = (lq == lp) if ties == "average" else jnp.zeros_like(take_q)

        def comb(a: jax.Array, b: jax.Array) -> jax.Array:
            shape = (-1,) + (1,) * (a.ndim - 1)
            return jnp.where(take_q.reshape(shape), b, jnp.where(tie.reshape(shape), a + b, a))

        count = jnp.where(take_q, cq, jnp.where(tie, cp + cq, cp))
        return jnp.minimum(lp, lq), jnp.where(take_q, iq, ip), jax.tree.map(comb, yp, yq), count

    def finalize(p: PyTree) -> PyTree:
        _, index, y, count = p
        if ties == "first":
            return y, index
        return jax.tree.map(
            lambda a: a / count.reshape((-1,) + (1,) * (a.ndim - 1)).astype(a.dtype), y
        ), index

    if ties not in ("average", "first"):
        raise ValueError(f"ties must be 'average' or 'first', got {ties!r}.")
    return Reducer(summarize, merge, finalize)


def softmax_reducer() -> Reducer:
    """Softmax-weighted mean ``Σ_i softmax(aux)_i y_i`` computed online (log-sum-exp).

    Stable for equal or huge logits: never forms ``exp`` of a positive number.
    """

    def summarize(ch: Chunk) -> PyTree:
        m = ch.aux.max(axis=0)
        w = jnp.exp(ch.aux - m[None])

        def wsum(a: jax.Array) -> jax.Array:
            return jnp.einsum("cb,cb...->b...", w.astype(a.dtype), a)

        return m, w.sum(axis=0), jax.tree.map(wsum, ch.y)

    def merge(p: PyTree, q: PyTree) -> PyTree:
        (m1, s1, a1), (m2, s2, a2) = p, q
        m = jnp.maximum(m1, m2)
        e1, e2 = jnp.exp(m1 - m), jnp.exp(m2 - m)

        def comb(x1: jax.Array, x2: jax.Array) -> jax.Array:
            shape = (-1,) + (1,) * (x1.ndim - 1)
            return x1 * e1.reshape(shape).astype(x1.dtype) + x2 * e2.reshape(shape).astype(x2.dtype)

        return m, s1 * e1 + s2 * e2, jax.tree.map(comb, a1, a2)

    def finalize(p: PyTree) -> PyTree:
        _, s, acc = p
        return jax.tree.map(
            lambda a: a / s.reshape((-1,) + (1,) * (a.ndim - 1)).astype(a.dtype), acc
        )

    return Reducer(summarize, merge, finalize)


def first_reducer() -> Reducer:
    """The output of element 0 (the identity): ``y_0 = M(x)``."""
    return Reducer(
        summarize=lambda ch: jax.tree.map(lambda a: a[0], ch.y),
        merge=lambda p, q: p,
        finalize=lambda p: p,
    )


def pair_reducer(r1: Reducer, r2: Reducer) -> Reducer:
    """Runs two reducers in the same pass over the orbit."""
    return Reducer(
        summarize=lambda ch: (r1.summarize(ch), r2.summarize(ch)),
        merge=lambda p, q: (r1.merge(p[0], q[0]), r2.merge(p[1], q[1])),
        finalize=lambda p: (r1.finalize(p[0]), r2.finalize(p[1])),
    )
