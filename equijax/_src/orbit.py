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

Every symmetrization in equijax (the four methods, equivariant decoding, SCAN finetuning, the
NLG samplers) reduces over the group with the rules defined once here: the λ normalisation
(:func:`normalized_weights`), the straight-through estimator (:func:`straight_through`), the tie
and NaN rules of the argmin (:func:`argmin_ties`), and the order-independent sum
(:func:`group_sum`, used by every reducer with ``exact=True``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from equijax._src import nnx_state

PyTree = Any
Batching = Literal["vmap", "fold"] | None


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


def check_exact(exact: bool, chunk_size: int | None, n: int) -> bool:
    """Validates ``exact``: it needs the whole orbit in one chunk."""
    if not isinstance(exact, (bool, np.bool_)):
        raise TypeError(f"exact must be a bool, got {type(exact).__name__}.")
    if exact and chunk_size is not None and validate_chunk_size(chunk_size, n) < n:
        raise ValueError(
            f"exact=True reduces the whole orbit at once (an order-independent sorted sum), but "
            f"chunk_size={chunk_size} splits the {n} elements into chunks; pass chunk_size=None "
            "(or >= |G|), or exact=False for the chunked reduction (equivariant up to round-off)."
        )
    return bool(exact)


def _holds_nnx_state(obj: Any) -> bool:
    """Whether ``obj`` is, or uses, Flax NNX state (stateful under ``jax.vmap``): an
    ``nnx.Module`` / ``Variable`` / ``Rngs``, reached through a bound method, a partial, a
    closure, a default or a module-level global (see :mod:`equijax._src.nnx_state`)."""
    return nnx_state.holds_state(obj)


def resolve_batching(batching: Batching, fn: Callable[..., Any]) -> Literal["vmap", "fold"]:
    """``None`` (auto): ``"fold"`` if ``fn`` holds NNX state, else ``"vmap"``."""
    if batching is None:
        return "fold" if _holds_nnx_state(fn) else "vmap"
    if batching not in ("vmap", "fold"):
        raise ValueError(f"batching must be None, 'vmap' or 'fold', got {batching!r}.")
    return batching


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


def _batch_message(b: int, shape: tuple[int, ...]) -> str:
    """The one message for a model whose output has no batch axis of the input's size."""
    return (
        f"fn must map a batch of {b} examples to outputs with leading axis {b}, got an output "
        f"of shape {tuple(shape)}."
    )


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
    n: int | None = None,
    elements: PyTree | None = None,
    transform: Callable[[Any, PyTree], PyTree],
    untransform: Callable[[Any, PyTree], PyTree],
    reducer: Reducer,
    aux_fn: Callable[[PyTree, PyTree, PyTree], jax.Array] | None = None,
    aux_name: str = "aux",
    has_aux: bool = False,
    chunk_size: int | None = None,
    batching: Batching = None,
    orbit_sharding: jax.sharding.Sharding | None = None,
    collect_aux: bool = False,
) -> tuple[PyTree, jax.Array | None]:
    """Evaluates ``fn`` on the orbit and reduces it.

    Args:
      fn: batch -> batch of outputs (or ``(outputs, features)`` if ``has_aux``).
      x: the input batch (pytree, leading batch axis ``B``).
      n: number of elements, indexed ``0 .. n - 1`` (Python ints in the first chunk, traced
        int32 in the scanned chunks); or pass ``elements``.
      elements: the elements themselves, a pytree with a leading axis of length ``n`` (indices,
        permutation arrays, sampled rotations, ``(element, PRNG key)`` pairs...);
        ``transform`` / ``untransform`` then receive one element (the pytree sliced at ``i``).
      transform: ``(i, x) -> x_i`` (``i`` an index or an element).
      untransform: ``(i, y) -> y`` back in the frame of ``x``.
      reducer: how to reduce the per-element results.
      aux_fn: ``(x_i, y_i, features_i) -> (B,)`` scalars per example, or None.
      aux_name: the user-facing name of the callable behind ``aux_fn``, for errors.
      has_aux: whether ``fn`` returns ``(outputs, features)``.
      chunk_size: elements per chunk (None: all at once).
      batching: ``"vmap"`` maps ``fn`` over the element axis; ``"fold"`` merges the element
        axis into the batch axis and calls ``fn`` once per chunk (needed when ``fn`` is a
        Flax linen module call inside another module, where ``jax.vmap`` cannot be used, or
        a stateful Flax NNX module); ``None`` picks ``"fold"`` when ``fn`` holds NNX state
        (see :func:`resolve_batching`), else ``"vmap"``.
      orbit_sharding: optional sharding for the stacked transformed inputs ``(c, B, ...)``,
        e.g. ``NamedSharding(mesh, P("group", "batch"))``.
      collect_aux: also return the ``(n, B)`` aux values of every element.

    Returns:
      ``(result, aux)`` where ``aux`` is ``(n, B)`` if ``collect_aux`` else None.
    """
    batching = resolve_batching(batching, fn)
    if elements is not None:
        sizes = {jnp.shape(e)[0] for e in jax.tree.leaves(elements)}
        if len(sizes) != 1:
            raise ValueError(
                "elements must be a pytree of arrays with one leading element axis, got leaves "
                f"of shapes {[jnp.shape(e) for e in jax.tree.leaves(elements)]}."
            )
        k = sizes.pop()
        if n is not None and n != k:
            raise ValueError(f"n={n} but elements has {k} entries; pass one of them.")
        n = k
    if n is None or n < 1:
        raise ValueError(f"orbit_reduce needs n >= 1 or a non-empty elements pytree, got n={n}.")
    c = validate_chunk_size(chunk_size, n)
    b = _batch_size(x)
    # an empty batch leaves NNX state (BatchNorm statistics of 0 examples are NaN) unchanged
    restore = nnx_state.keep_state((fn, aux_fn)) if b == 0 else lambda: None

    def run(idx: Any, index_array: jax.Array, fn: Callable = fn, aux_fn: Any = aux_fn) -> Chunk:
        """``idx``: a list of indices, or (``elements=``) a stacked chunk of elements, whose
        transforms are ``jax.vmap``-ed (trace size independent of the chunk size)."""
        if elements is None:
            xs = _stack([transform(i, x) for i in idx])
        else:
            xs = jax.vmap(lambda e: transform(e, x))(idx)
        if orbit_sharding is not None:
            xs = jax.tree.map(lambda a: jax.lax.with_sharding_constraint(a, orbit_sharding), xs)
        k = index_array.shape[0]
        if batching == "vmap":
            out = jax.vmap(fn)(xs)
        else:
            flat = jax.tree.map(lambda a: a.reshape((k * b, *a.shape[2:])), xs)
            out = fn(flat)
            for leaf in jax.tree.leaves(out):  # the vmap path's message, before any reshape
                if jnp.ndim(leaf) < 1 or jnp.shape(leaf)[0] != k * b:
                    raise ValueError(_batch_message(k * b, jnp.shape(leaf)))
            out = jax.tree.map(lambda a: a.reshape((k, b, *a.shape[1:])), out)
        if has_aux:
            if not (isinstance(out, tuple) and len(out) == 2):
                raise ValueError("with has_aux=True, fn must return a pair (outputs, features).")
            ys, feats = out
        else:
            ys, feats = out, None
        for leaf in jax.tree.leaves(ys):
            if leaf.ndim < 2 or leaf.shape[1] != b:
                raise ValueError(_batch_message(b, leaf.shape[1:]))
        aux = None
        if aux_fn is not None:
            if batching == "vmap":
                aux = jax.vmap(aux_fn)(xs, ys, feats)
            else:
                fold = lambda t: jax.tree.map(lambda a: a.reshape((k * b, *a.shape[2:])), t)
                aux = jnp.asarray(aux_fn(fold(xs), fold(ys), fold(feats)))
                if aux.ndim < 1 or aux.shape[0] != k * b:
                    raise ValueError(
                        f"{aux_name} must return one scalar per example, shape ({k * b},), got "
                        f"shape {aux.shape}."
                    )
                aux = aux.reshape((k, b, *aux.shape[1:]))
            if aux.shape == (k, b, 1):
                aux = aux[..., 0]
            if aux.shape != (k, b):
                raise ValueError(
                    f"{aux_name} must return one scalar per example, shape ({b},), got shape "
                    f"{aux.shape[1:]}."
                )
        if elements is None:
            per = _unstack(ys, k)
            back = [untransform(i, yi) for i, yi in zip(idx, per, strict=True)]
            _check_same_structure(per[0], back[0], "out_action")
            return Chunk(index=index_array, y=_stack(back), aux=aux)
        stacked = jax.vmap(untransform)(idx, ys)
        _check_same_structure(ys, stacked, "out_action")
        return Chunk(index=index_array, y=stacked, aux=aux)

    first = n % c or c
    if elements is None:
        first_idx: Any = tuple(range(first))
    else:
        first_idx = jax.tree.map(lambda e: e[:first], elements)
    chunk0 = run(first_idx, jnp.arange(first, dtype=jnp.int32))
    partial = reducer.summarize(chunk0)
    auxes = [chunk0.aux]
    rest = (n - first) // c
    if rest:
        index = jnp.arange(first, n, dtype=jnp.int32).reshape(rest, c)
        chunked = (
            None
            if elements is None
            else jax.tree.map(lambda e: e[first:].reshape(rest, c, *e.shape[1:]), elements)
        )

        def body(fs: tuple, carry: PyTree, xs: Any) -> tuple[PyTree, Any]:
            idx, els = xs
            chunk = run([idx[j] for j in range(c)] if els is None else els, idx, *fs)
            return reducer.merge(carry, reducer.summarize(chunk)), chunk.aux

        # the NNX state of fn and aux_fn (e.g. a λ network) is carried through the scan
        partial, aux_rest = nnx_state.scan((fn, aux_fn), body, partial, (index, chunked))
        if collect_aux:
            auxes.append(aux_rest.reshape(rest * c, b))
    result = reducer.finalize(partial)
    restore()
    if not collect_aux:
        return result, None
    return result, jnp.concatenate(auxes, axis=0)


# ---------------------------------------------------------------------------------------
# The rules, each written once (documented in docs/concepts.md, "The rules").
# ---------------------------------------------------------------------------------------


def _bcast(v: jax.Array, a: jax.Array) -> jax.Array:
    """Reshapes a ``(c, B)`` or ``(B,)`` array to broadcast against ``a`` (``(c, B, ...)``)."""
    return v.reshape(v.shape + (1,) * (a.ndim - v.ndim))


def group_sum(x: jax.Array, axis: int = 0, *, exact: bool = False) -> jax.Array:
    """Sum over the group axis; with ``exact=True`` bit-identical under any permutation of it.

    Floating-point addition is commutative but not associative, so summing the same terms in
    another order can change the last bits. ``exact=True`` sorts the terms along ``axis``
    first: the result then depends only on the multiset of terms (the order of a sorted list is
    unique up to equal values, and ``+0.0``/``-0.0`` add to the same result in any order).

    Examples:
      >>> import jax.numpy as jnp
      >>> x = jnp.array([1e8, 1.0, -1e8, 1.0], jnp.float32)
      >>> bool(group_sum(x, exact=True) == group_sum(x[::-1], exact=True))
      True
    """
    x = jnp.asarray(x)
    # Two terms need no sort: a + b == b + a bitwise (IEEE addition is commutative), and the
    # sort of a vocabulary-sized |G| = 2 axis would dominate, e.g., an EquiLM sampling step.
    if exact and jnp.issubdtype(x.dtype, jnp.inexact) and x.shape[axis] > 2:
        x = jnp.sort(x, axis=axis)
    return jnp.sum(x, axis=axis)


def nan_last(loss: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The NaN rule for losses: ``(is_nan, key)`` ranked lexicographically, NaN last.

    A NaN loss ranks after every number (including ``+inf``), so it is chosen only if every
    element's loss is NaN. ``key`` is the loss with NaN replaced by ``+inf``.
    """
    bad = jnp.isnan(loss)
    return bad, jnp.where(bad, jnp.inf, loss)


def _masked_logits(logits: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The NaN/-inf rule for weight logits: ``(masked, logits)``; NaN counts as ``-inf``.

    ``optimization_barrier`` materialises the logits once, so that the maximum and the
    differences below read the same rounded values (XLA may otherwise fuse ``c * z - max``
    into an FMA whose unrounded result differs from the rounded maximum by an ulp of ``c z``,
    which ``exp`` turns into ``inf`` for logits of size 1e10).
    """
    logits = jax.lax.optimization_barrier(jnp.asarray(logits))
    masked = jnp.isnan(logits) | (logits == -jnp.inf)
    return masked, jnp.where(masked, -jnp.inf, logits)


def _exp_shifted(logits: jax.Array, m: jax.Array) -> jax.Array:
    """``exp(logits - m)`` for ``m >= logits``; 0 where ``logits == -inf``; never NaN/inf."""
    safe_m = jnp.where(jnp.isfinite(m), m, 0.0)
    d = jnp.minimum(logits - safe_m, 0.0)
    return jnp.where(logits == -jnp.inf, 0.0, jnp.exp(d))


def normalized_weights(logits: ArrayLike, axis: int = 0, *, exact: bool = False) -> jax.Array:
    r"""The λ normalisation: ``softmax`` over the group axis, finite for any logits.

    .. math::

        w_g = \frac{e^{\ell_g - m}}{\sum_h e^{\ell_h - m}}, \qquad m = \max_h \ell_h

    Rules: finite logits of any spread (1e30 included) give finite weights summing to 1;
    ``-inf`` (and NaN) logits mask their element (weight exactly 0); if every element is masked
    the weights are uniform (the example falls back to plain equitune). With ``exact=True`` the
    normaliser is an order-independent sum (:func:`group_sum`).

    Examples:
      >>> import jax.numpy as jnp
      >>> normalized_weights(jnp.array([0.0, 1e30, -jnp.inf])).tolist()
      [0.0, 1.0, 0.0]
      >>> normalized_weights(jnp.array([-jnp.inf, -jnp.inf])).tolist()
      [0.5, 0.5]
    """
    masked, logits = _masked_logits(jnp.moveaxis(jnp.asarray(logits), axis, 0))
    m = logits.max(axis=0)
    e = _exp_shifted(logits, m[None])
    e = jnp.where(jnp.isneginf(m)[None], 1.0, e)  # all masked: uniform
    del masked
    w = e / group_sum(e, 0, exact=exact)[None]
    return jnp.moveaxis(w, 0, axis)


def log_normalized_weights(logits: ArrayLike, axis: int = 0) -> jax.Array:
    """``log`` of :func:`normalized_weights` (a masked element gets ``-inf``), with the
    gradient of :func:`jax.nn.log_softmax`; for mixtures computed in log space.

    Examples:
      >>> import jax.numpy as jnp
      >>> log_normalized_weights(jnp.array([0.0, 0.0, -jnp.inf])).tolist()[:2]
      [-0.6931471824645996, -0.6931471824645996]
    """
    logits = jnp.moveaxis(jnp.asarray(logits), axis, 0)
    masked, logits = _masked_logits(logits)
    all_masked = masked.all(axis=0)
    logits = jnp.where(all_masked[None], 0.0, logits)  # every element masked: uniform
    out = jax.nn.log_softmax(logits, axis=0)
    return jnp.moveaxis(out, 0, axis)


def log_mixture(
    log_values: jax.Array, log_weights: jax.Array | None = None, axis: int = 0
) -> jax.Array:
    r"""A mixture over the group in log space: ``log Σ_g w_g exp(v_g)`` (``w ≡ 1/|G|`` if None).

    This is the equitune mean of probabilities (or, with :func:`log_normalized_weights`, the
    λ-weighted mean) for models that output log-probabilities, without leaving log space.
    ``log_weights`` broadcasts against ``log_values`` from the left (``(|G|, B)`` against
    ``(|G|, B, ..., V)``).
    """
    log_values = jnp.moveaxis(jnp.asarray(log_values), axis, 0)
    n = log_values.shape[0]
    if log_weights is None:
        return jax.scipy.special.logsumexp(log_values, axis=0) - jnp.log(float(n))
    lw = jnp.moveaxis(jnp.asarray(log_weights), axis, 0)
    return jax.scipy.special.logsumexp(log_values + _bcast(lw, log_values), axis=0)


def group_mean(
    values: jax.Array,
    weights: jax.Array | None = None,
    *,
    exact: bool = False,
) -> jax.Array:
    """``Σ_g w_g v_g / Σ_g w_g`` over the leading group axis (the plain mean if ``weights`` is
    None). ``weights`` ``(|G|, B)`` are non-negative, not necessarily normalised; a term with
    weight 0 is never read (even if it is NaN). With ``exact=True`` both sums are
    order-independent (:func:`group_sum`).
    """
    values = jnp.asarray(values)
    if weights is None:
        return group_sum(values, 0, exact=exact) / values.shape[0]
    w = _bcast(jnp.asarray(weights, values.dtype), values)
    terms = jnp.where(w > 0, w * values, jnp.zeros((), values.dtype))
    return group_sum(terms, 0, exact=exact) / group_sum(w, 0, exact=exact)


def reduce_stacked(reducer: Reducer, y: PyTree, aux: jax.Array | None = None) -> PyTree:
    """Applies a reducer to already-evaluated branches: ``y`` leaves ``(|G|, B, ...)``.

    For applications that run the model on the orbit themselves (teacher-forced decoders,
    cached language models): the reduction, tie and NaN rules are the engine's.
    """
    n = jax.tree.leaves(y)[0].shape[0]
    chunk = Chunk(index=jnp.arange(n, dtype=jnp.int32), y=y, aux=aux)
    return reducer.finalize(reducer.summarize(chunk))


def straight_through(value: PyTree, surrogate: PyTree) -> PyTree:
    """The straight-through estimator: forward exactly ``value``, backward ``d surrogate``.

    ``out = sg(value) + (surrogate - sg(surrogate))``; in the forward pass the bracket is
    exactly 0 for finite surrogates, so ``out`` equals ``value`` bit for bit.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> jax.grad(lambda t: straight_through(jnp.round(t), 3 * t))(0.3).tolist()
      3.0
    """
    sg = jax.lax.stop_gradient
    return jax.tree.map(lambda v, s: sg(v) + (s - sg(s)), value, surrogate)


def argmin_ties(
    loss: jax.Array, axis: int = 0, *, tie_key: jax.Array | None = None
) -> tuple[jax.Array, jax.Array]:
    """The tie and NaN rules of equizero over a group axis: ``(hit, first)``.

    ``hit`` marks every element attaining the minimum exactly (NaN ranks last, so NaN elements
    are hits only if every loss is NaN); ``first`` is the minimiser with the smallest
    ``tie_key`` (default: the element index, i.e. the lowest-index minimiser). Tied outputs
    are averaged by :func:`argmin_reducer` (``ties="average"``); where outputs cannot be
    averaged (decoded tokens), an equivariant ``tie_key`` (e.g. the element composed with a
    canonical frame of the input) keeps the selection equivariant.

    Examples:
      >>> import jax.numpy as jnp
      >>> hit, first = argmin_ties(jnp.array([jnp.nan, 1.0, 1.0, 2.0]))
      >>> hit.tolist(), int(first)
      ([False, True, True, False], 1)
    """
    loss = jnp.moveaxis(jnp.asarray(loss), axis, 0)
    bad, key = nan_last(loss)
    all_bad = bad.all(axis=0)
    best = jnp.where(all_bad, jnp.inf, jnp.where(bad, jnp.inf, key).min(axis=0))
    hit = jnp.where(all_bad[None], True, (~bad) & (key == best[None]))
    if tie_key is None:
        first = jnp.argmax(hit, axis=0).astype(jnp.int32)
    else:
        tk = jnp.moveaxis(jnp.asarray(tie_key), axis, 0)
        big = jnp.iinfo(jnp.int32).max
        first = jnp.argmin(jnp.where(hit, tk.astype(jnp.int32), big), axis=0).astype(jnp.int32)
    return jnp.moveaxis(hit, 0, axis), first


# ---------------------------------------------------------------------------------------
# Reducers.
# ---------------------------------------------------------------------------------------


def mean_reducer(n: int, *, exact: bool = False) -> Reducer:
    """Arithmetic mean over the elements: ``1/n Σ_i y_i`` (sorted sum with ``exact=True``)."""
    return Reducer(
        summarize=lambda ch: jax.tree.map(lambda a: group_sum(a, 0, exact=exact), ch.y),
        merge=lambda p, q: jax.tree.map(jnp.add, p, q),
        finalize=lambda p: jax.tree.map(lambda a: a / n, p),
    )


def weighted_mean_reducer(weights: jax.Array, *, exact: bool = False) -> Reducer:
    """``Σ_i w_i y_i / Σ_i w_i`` with per-example weights ``weights`` ``(B, n)`` of the elements
    (read by chunk index); a term with weight 0 is never read. ``exact=True``: order-independent
    sums within a chunk (:func:`group_sum`)."""

    def summarize(ch: Chunk) -> PyTree:
        w = jnp.take(weights, ch.index, axis=1).T  # (c, B)

        def wsum(a: jax.Array) -> jax.Array:
            ww = _bcast(w, a).astype(a.dtype)
            return group_sum(jnp.where(ww > 0, a * ww, jnp.zeros((), a.dtype)), 0, exact=exact)

        return jax.tree.map(wsum, ch.y), group_sum(w, 0, exact=exact)

    def merge(p: PyTree, q: PyTree) -> PyTree:
        return jax.tree.map(jnp.add, p[0], q[0]), p[1] + q[1]

    def finalize(p: PyTree) -> PyTree:
        acc, total = p
        return jax.tree.map(lambda a: a / _bcast(total, a).astype(a.dtype), acc)

    return Reducer(summarize, merge, finalize)


def _select(chunk_y: PyTree, j: jax.Array) -> PyTree:
    """Picks ``chunk_y[j[b], b]`` for every example ``b``."""

    def pick(a: jax.Array) -> jax.Array:
        idx = j.reshape((1, -1) + (1,) * (a.ndim - 2))
        return jnp.take_along_axis(a, idx, axis=0)[0]

    return jax.tree.map(pick, chunk_y)


def argmin_reducer(ties: str = "average", *, exact: bool = False) -> Reducer:
    """Keeps, per example, the output of the element with the smallest aux (a proxy loss).

    Rules (see :func:`argmin_ties`): a NaN loss ranks last, so it is chosen only if every
    element's loss is NaN, whatever the chunking. With ``ties="average"`` the outputs of all
    elements attaining the minimum exactly are averaged: if ``x`` is fixed by some element
    ``s`` (a non-trivial stabiliser), ``g`` and ``g s`` tie, and only their average keeps the
    result exactly equivariant. With ``ties="first"`` the lowest-index minimiser wins. The
    reported index is always the lowest-index minimiser. The partial is
    ``(nan, loss, index, sum_y, count)``; the result is ``(y, index)``.
    """
    if ties not in ("average", "first"):
        raise ValueError(f"ties must be 'average' or 'first', got {ties!r}.")

    def summarize(ch: Chunk) -> PyTree:
        hit, j = argmin_ties(ch.aux, 0)
        bad, key = nan_last(ch.aux)
        nan = jnp.take_along_axis(bad, j[None], axis=0)[0]
        loss = jnp.take_along_axis(key, j[None], axis=0)[0]
        if ties == "first":
            return nan, loss, ch.index[j], _select(ch.y, j), jnp.ones(loss.shape, jnp.int32)

        def tied_sum(a: jax.Array) -> jax.Array:
            return group_sum(jnp.where(_bcast(hit, a), a, jnp.zeros((), a.dtype)), 0, exact=exact)

        return nan, loss, ch.index[j], jax.tree.map(tied_sum, ch.y), hit.sum(0, dtype=jnp.int32)

    def merge(p: PyTree, q: PyTree) -> PyTree:
        np_, lp, ip, yp, cp = p
        nq, lq, iq, yq, cq = q
        # lexicographic (nan, loss): strict less keeps the earlier (lower-index) element on ties
        take_q = (np_ & ~nq) | ((np_ == nq) & (lq < lp))
        same = (np_ == nq) & (lq == lp)
        tie = same if ties == "average" else jnp.zeros_like(take_q)

        def comb(a: jax.Array, b: jax.Array) -> jax.Array:
            return jnp.where(_bcast(take_q, a), b, jnp.where(_bcast(tie, a), a + b, a))

        count = jnp.where(take_q, cq, jnp.where(tie, cp + cq, cp))
        return (
            jnp.where(take_q, nq, np_),
            jnp.where(take_q, lq, lp),
            jnp.where(take_q, iq, ip),
            jax.tree.map(comb, yp, yq),
            count,
        )

    def finalize(p: PyTree) -> PyTree:
        _, _, index, y, count = p
        if ties == "first":
            return y, index
        return jax.tree.map(lambda a: a / _bcast(count, a).astype(a.dtype), y), index

    return Reducer(summarize, merge, finalize)


def softmax_reducer(*, exact: bool = False) -> Reducer:
    """Softmax-weighted mean ``Σ_i softmax(aux)_i y_i`` computed online (log-sum-exp).

    Follows :func:`normalized_weights`: finite for any finite logits (any spread), ``-inf`` or
    NaN logits mask their element (its output is never read, even if it is NaN), and an
    example whose every element is masked gets the plain mean, the same for every chunking.
    The partial is ``(m, s, acc, count_masked, acc_masked)``.
    """

    def summarize(ch: Chunk) -> PyTree:
        masked, logits = _masked_logits(ch.aux)
        m = logits.max(axis=0)
        w = _exp_shifted(logits, m[None])

        def wsum(a: jax.Array) -> jax.Array:
            wa = _bcast(w, a).astype(a.dtype)
            return group_sum(jnp.where(wa > 0, wa * a, jnp.zeros((), a.dtype)), 0, exact=exact)

        def msum(a: jax.Array) -> jax.Array:
            return group_sum(
                jnp.where(_bcast(masked, a), a, jnp.zeros((), a.dtype)), 0, exact=exact
            )

        return (
            m,
            group_sum(w, 0, exact=exact),
            jax.tree.map(wsum, ch.y),
            masked.sum(0, dtype=jnp.int32),
            jax.tree.map(msum, ch.y),
        )

    def merge(p: PyTree, q: PyTree) -> PyTree:
        (m1, s1, a1, c1, b1), (m2, s2, a2, c2, b2) = p, q
        m = jnp.maximum(m1, m2)
        e1, e2 = _exp_shifted(m1, m), _exp_shifted(m2, m)

        def comb(x1: jax.Array, x2: jax.Array) -> jax.Array:
            f1, f2 = _bcast(e1, x1).astype(x1.dtype), _bcast(e2, x2).astype(x2.dtype)
            z = jnp.zeros((), x1.dtype)
            return jnp.where(f1 > 0, x1 * f1, z) + jnp.where(f2 > 0, x2 * f2, z)

        return (
            m,
            s1 * e1 + s2 * e2,
            jax.tree.map(comb, a1, a2),
            c1 + c2,
            jax.tree.map(jnp.add, b1, b2),
        )

    def finalize(p: PyTree) -> PyTree:
        m, s, acc, cm, accm = p
        none = jnp.isneginf(m)  # every element masked: plain mean over the orbit

        def fin(a: jax.Array, b: jax.Array) -> jax.Array:
            s_ = _bcast(jnp.where(none, 1.0, s), a).astype(a.dtype)
            c_ = _bcast(jnp.maximum(cm, 1), b).astype(b.dtype)
            return jnp.where(_bcast(none, a), b / c_, a / s_)

        return jax.tree.map(fin, acc, accm)

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
