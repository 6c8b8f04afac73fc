"""Monte-Carlo group averaging for groups too large to enumerate."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from equijax._src import common, orbit
from equijax._src.groups import FiniteGroup
from equijax._src.large_groups import STRATEGIES, Strategy, SymmetricGroup

PyTree = Any


def _check_num(num_samples: Any) -> int:
    if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)):
        raise TypeError(f"num_samples must be an int, got {type(num_samples).__name__}.")
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}.")
    return int(num_samples)


def sample_elements(
    group: Any, key: jax.Array, num_samples: int, strategy: Strategy = "iid"
) -> jax.Array:
    """Draws ``num_samples`` group elements (leading axis ``num_samples``).

    Works for a :class:`equijax.groups.FiniteGroup` (elements are int32 indices) and for any
    group with a ``sample(key, num, strategy)`` method, such as
    :class:`equijax.SymmetricGroup` (elements are permutation arrays).

    Strategies for a finite group: ``"iid"`` (uniform indices), ``"without_replacement"``
    (distinct uniform indices), ``"stratified"`` (one index uniform in each of ``num_samples``
    equal slices of the index range ``[0, |G|)``).

    Examples:
      >>> import jax, equijax as ej
      >>> G = ej.groups.dihedral()
      >>> ej.sample_elements(G, jax.random.key(0), 8, "without_replacement").shape
      (8,)
    """
    num = _check_num(num_samples)
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}.")
    if isinstance(group, FiniteGroup):
        order = group.order
        if strategy == "iid":
            return jax.random.randint(key, (num,), 0, order, dtype=jnp.int32)
        if strategy == "without_replacement":
            if num > order:
                raise ValueError(
                    f"num_samples={num} exceeds the {order} distinct elements of {group.name}; "
                    "use equijax.equitune for the exact average."
                )
            return jax.random.choice(key, order, (num,), replace=False).astype(jnp.int32)
        u = (jnp.arange(num) + jax.random.uniform(key, (num,))) / num
        return jnp.minimum(jnp.floor(u * order).astype(jnp.int32), order - 1)
    if not callable(getattr(group, "sample", None)):
        raise TypeError(
            f"group must be an equijax FiniteGroup or have a sample(key, num, strategy) method "
            f"(e.g. equijax.SymmetricGroup(n)), got {type(group).__name__}."
        )
    return group.sample(key, num, strategy)


def _check_elements(group: Any, elements: Any) -> PyTree:
    """``elements=`` as arrays with a leading element axis: a Python list / tuple / numpy array
    becomes one array; finite-group indices must be a 1-D integer array, permutations of
    :class:`SymmetricGroup` an ``(k, n)`` integer array."""
    if isinstance(elements, (list, tuple, np.ndarray)) or np.isscalar(elements):
        try:
            elements = jnp.asarray(elements)
        except (TypeError, ValueError) as err:
            raise TypeError(
                f"elements must be an array of group elements (leading axis k), got "
                f"{type(elements).__name__} that is not one array: {err}"
            ) from err
    leaves = jax.tree.leaves(elements)
    if not leaves or not all(hasattr(a, "shape") and a.ndim >= 1 for a in leaves):
        raise ValueError(
            "elements must have a leading element axis (k, ...), e.g. jnp.arange(G.order) for "
            "every element of a finite group."
        )
    k = leaves[0].shape[0]
    if k == 0 or any(a.shape[0] != k for a in leaves):
        raise ValueError(
            f"elements must hold at least one element, with the same leading axis in every "
            f"array, got shapes {[a.shape for a in leaves]}."
        )
    if isinstance(group, FiniteGroup | SymmetricGroup):
        (a,) = leaves
        want = (k,) if isinstance(group, FiniteGroup) else (k, group.n)
        what = (
            "element indices (k,)"
            if isinstance(group, FiniteGroup)
            else f"permutations (k, {group.n})"
        )
        if a.shape != want or not jnp.issubdtype(a.dtype, jnp.integer):
            raise TypeError(
                f"elements of {group.name} must be integer {what}, got {a.dtype} of shape "
                f"{a.shape}; e.g. jnp.arange(G.order) for a finite group, G.elements() for "
                "SymmetricGroup(n <= 9)."
            )
    return elements


def _welford_reducer() -> orbit.Reducer:
    """Running (count, mean, M2) over elements; a chunk's leaves are ``(c, B, ...)``."""

    def summarize(ch: orbit.Chunk) -> PyTree:
        count = jnp.asarray(ch.index.shape[0], jnp.float32)
        mean = jax.tree.map(lambda a: a.mean(axis=0), ch.y)
        m2 = jax.tree.map(lambda a, m: jnp.square(a - m[None]).sum(axis=0), ch.y, mean)
        return count, mean, m2

    def merge(p: PyTree, q: PyTree) -> PyTree:
        (na, ma, sa), (nb, mb, sb) = p, q
        n = na + nb
        delta = jax.tree.map(jnp.subtract, mb, ma)
        mean = jax.tree.map(lambda m, d: m + d * (nb / n).astype(d.dtype), ma, delta)
        m2 = jax.tree.map(
            lambda s1, s2, d: s1 + s2 + jnp.square(d) * (na * nb / n).astype(d.dtype),
            sa,
            sb,
            delta,
        )
        return n, mean, m2

    return orbit.Reducer(summarize=summarize, merge=merge, finalize=lambda p: p)


def average_over_elements(
    fn: Callable[[PyTree], PyTree],
    x: PyTree,
    elements: PyTree,
    *,
    act: Callable[[Any, PyTree], PyTree],
    untransform: Callable[[Any, PyTree], PyTree],
    chunk_size: int | None = None,
    batching: orbit.Batching = None,
) -> tuple[jax.Array, PyTree, PyTree]:
    """Mean and sum of squared deviations of ``untransform(g, fn(act(g, x)))`` over ``elements``.

    The elements are the orbit engine's (:func:`equijax._src.orbit.orbit_reduce` with
    ``elements=``): blocks of ``chunk_size`` elements are folded into the batch (one call of
    ``fn`` on ``chunk_size * B`` examples per block) and run under ``lax.scan``, so tracing cost
    does not grow with the number of elements and peak memory is that of ``chunk_size * B``
    examples.

    Returns:
      ``(count, mean, m2)`` with ``mean``/``m2`` shaped like ``fn(x)``.
    """
    k = int(jax.tree.leaves(elements)[0].shape[0])
    c = orbit.validate_chunk_size(chunk_size, k)
    del batching  # a block of elements is always folded into the batch: one call of fn
    partial, _ = orbit.orbit_reduce(
        fn,
        x,
        elements=elements,
        transform=act,
        untransform=untransform,
        reducer=_welford_reducer(),
        chunk_size=c,
        batching="fold",
    )
    return partial


def sampled_equitune(
    fn: Callable[..., PyTree],
    group: Any,
    x: PyTree | None = None,
    *,
    key: jax.Array | None = None,
    num_samples: int | None = None,
    strategy: Strategy = "iid",
    elements: PyTree | None = None,
    in_action: Callable[[Any, PyTree], PyTree] | None = None,
    out_action: Callable[[Any, PyTree], PyTree] | None = None,
    chunk_size: int | None = None,
    batching: orbit.Batching = None,
    return_stderr: bool = False,
) -> PyTree:
    r"""Monte-Carlo equitune: averages over ``num_samples`` random group elements.

    .. math::

        \hat M_S(x) = \frac{1}{k} \sum_{j=1}^{k} g_j^{-1} M(g_j x),
        \qquad S = (g_1, \dots, g_k) \sim \mathrm{strategy}(\mathrm{key})

    **Unbiased.** Every strategy gives :math:`\mathbb E_S[\hat M_S(x)] = M_G(x)`, the exact
    equitune output, for every ``x``; with ``"iid"`` the error is
    :math:`O(\sigma(x)/\sqrt{k})`.

    **What holds for a fixed key.** The estimator is *not* exactly equivariant for a fixed
    key. Writing :math:`Sh = (g_1 h, \dots, g_k h)`, for every ``h``:

    .. math::

        \hat M_S(h x) = h\, \hat M_{S h}(x)

    i.e. the same key evaluated at ``h x`` is ``h`` applied to the average over the
    right-translated sample set. Since ``"iid"`` and ``"without_replacement"`` samples have a
    right-invariant law (:math:`Sh \overset{d}{=} S`), the estimator is **equivariant in
    distribution**: :math:`\hat M_S(hx) \overset{d}{=} h \hat M_S(x)`. ``"stratified"`` on
    :class:`equijax.SymmetricGroup` stratifies over right cosets, which right translation
    permutes, so the same holds when ``num_samples`` is a multiple of ``n``; stratified index
    slices of a finite group are only unbiased.

    Args:
      fn: the model, batch -> batch of outputs (pytree).
      group: a :class:`equijax.groups.FiniteGroup` or a large group with ``sample``/``act``/
        ``inverse`` such as :class:`equijax.SymmetricGroup`.
      x: the input batch; if omitted, returns the transformed function ``f(*args, x)``
        (leading arguments, e.g. parameters, pass through to ``fn``; the key is fixed).
      key: PRNG key for the draw (required unless ``elements`` is given).
      num_samples: number ``k`` of elements drawn.
      strategy: ``"iid"`` (default), ``"without_replacement"`` or ``"stratified"`` (see
        :func:`equijax.sample_elements`); the last two usually reduce the variance.
      elements: use these elements (leading axis ``k``; an array, or a Python list / tuple /
        numpy array of them) instead of drawing: integer indices ``(k,)`` for a finite group
        (``jnp.arange(G.order)`` gives the exact average over all of ``G``), permutations
        ``(k, n)`` for :class:`equijax.SymmetricGroup` (``SymmetricGroup(8).elements()``
        gives the exact average over all of S_8).
      in_action: ``(g, x) -> g x``; defaults to ``group.act``.
      out_action: ``(g, y) -> g y``; ``None`` for invariant outputs.
      chunk_size: elements evaluated per call of ``fn`` (one call on ``chunk_size * B``
        examples per step of a ``lax.scan``); peak memory ~ ``chunk_size * B`` examples.
        ``None``: all ``k`` at once.
      batching: ``None`` (auto, as in :func:`equijax.equitune`), ``"vmap"`` or ``"fold"``
        for the (single-element) scan over blocks; the elements of a block are always folded
        into the batch.
      return_stderr: also return the estimated standard error of the estimate, per example
        and per output entry (same structure as the output):
        :math:`\sqrt{s^2/k \cdot (1 - k/|G|)}` with the sample variance :math:`s^2` (the
        finite-population factor only for ``"without_replacement"``; for ``"stratified"``
        the i.i.d. formula, usually conservative). Needs ``k >= 2``.

    Returns:
      The estimate (structure of ``fn(x)``), and the standard error if ``return_stderr``.

    Raises:
      TypeError: for a group without ``sample``, a non-int ``num_samples``, or ``elements``
        that are not integer indices / permutations of ``group``.
      ValueError: missing ``key``/``num_samples``, an unknown strategy, or
        ``return_stderr`` with one sample.

    Examples:
      >>> import jax, jax.numpy as jnp, equijax as ej
      >>> G = ej.SymmetricGroup(10)                          # 3.6 million elements
      >>> w = jax.random.normal(jax.random.key(0), (20,))
      >>> fn = lambda pts: jnp.tanh(pts.reshape(pts.shape[0], -1) @ w)   # order-dependent
      >>> x = jax.random.normal(jax.random.key(1), (3, 10, 2))
      >>> y, se = ej.sampled_equitune(fn, G, x, key=jax.random.key(2), num_samples=256,
      ...                             return_stderr=True)
      >>> y.shape, se.shape, bool((se > 0).all() & (se < 0.1).all())
      ((3,), (3,), True)

    References:
      Murphy et al., "Janossy Pooling", ICLR 2019 (sampled permutation averaging);
      Basu et al., "Equi-Tuning", AAAI 2023, https://arxiv.org/abs/2210.06475.
    """
    common.check_callable(fn, "fn")
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}.")
    if elements is None:
        if key is None:
            raise ValueError("key is required: pass key=jax.random.key(...) (or elements=...).")
        _check_num(num_samples)
    if x is None:
        return common.as_transformation(sampled_equitune, fn, (group,), locals())
    if in_action is not None:
        common.check_callable(in_action, "in_action", "Expected (g, x) -> x.")
    if out_action is not None:
        common.check_callable(out_action, "out_action", "Expected (g, y) -> y, or None.")
    if elements is None:
        elements = sample_elements(group, key, num_samples, strategy)
    else:
        if not isinstance(group, FiniteGroup | SymmetricGroup) and not hasattr(group, "inverse"):
            raise TypeError(f"group must have an inverse method, got {type(group).__name__}.")
        elements = _check_elements(group, elements)
    act = in_action if in_action is not None else group.act

    def untransform(g: Any, y: PyTree) -> PyTree:
        return y if out_action is None else out_action(group.inverse(g), y)

    count, mean, m2 = average_over_elements(
        fn, x, elements, act=act, untransform=untransform, chunk_size=chunk_size, batching=batching
    )
    if not return_stderr:
        return mean
    k = int(jax.tree.leaves(elements)[0].shape[0])
    if k < 2:
        raise ValueError("return_stderr needs num_samples >= 2 to estimate a variance.")
    fpc = 1.0 - k / group.order if strategy == "without_replacement" else 1.0
    stderr = jax.tree.map(lambda s: jnp.sqrt(jnp.maximum(s, 0) / (count - 1) / k * fpc), m2)
    return mean, stderr
