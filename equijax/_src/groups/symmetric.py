"""Groups too large to enumerate: the symmetric group S_n acting on an axis of a set.

:class:`SymmetricGroup` has no Cayley table (``|S_12| ≈ 4.8·10⁸``): an element is a
permutation *array* ``p`` of shape ``(n,)`` (or one per example, ``(B, n)``), drawn with
:meth:`SymmetricGroup.sample` and applied with :meth:`SymmetricGroup.act`. It is the group
behind :func:`equijax.sampled_equitune` and the sort frame of :func:`equijax.frame_average`
for point sets.

Conventions (consistent with :meth:`equijax.groups.PermutationGroup.act_axis`): ``p`` sends
the entry at position ``i`` to position ``p[i]``, i.e. ``(p·x)[p[i]] = x[i]``;
``compose(p, q) = p[q]`` is "apply ``q`` first", so ``act(p, act(q, x)) == act(compose(p, q), x)``.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

Strategy = Literal["iid", "without_replacement", "stratified"]
STRATEGIES: tuple[str, ...] = ("iid", "without_replacement", "stratified")

# Largest n whose full element table (n! rows) we build on request, and largest n whose order
# fits in int32 (for ranks: sampling without replacement).
_MAX_ENUMERATE = 9
_MAX_RANKED = 12


@functools.lru_cache(maxsize=4)
def _all_permutations(n: int) -> np.ndarray:
    return np.asarray(list(itertools.permutations(range(n))), dtype=np.int32).reshape(-1, n)


def _unrank(rank: jax.Array, n: int) -> jax.Array:
    """The permutation of lexicographic rank ``rank`` (Lehmer code), traceable; ``(n,)`` int32."""
    digits = []
    r = rank
    for k in range(n):
        f = math.factorial(n - 1 - k)
        digits.append(r // f)
        r = r % f
    available = jnp.ones((n,), bool)
    out = []
    for d in digits:
        # index of the d-th still-available value
        pos = jnp.cumsum(available.astype(jnp.int32)) - 1
        v = jnp.argmax(available & (pos == d)).astype(jnp.int32)
        out.append(v)
        available = available.at[v].set(False)
    return jnp.stack(out)


def _floyd_sample(key: jax.Array, population: int, k: int) -> jax.Array:
    """``k`` distinct integers in ``[0, population)``, uniformly (Floyd's algorithm), jittable."""
    keys = jax.random.split(key, k)

    def body(t, chosen):
        j = population - k + t
        cand = jax.random.randint(keys[t], (), 0, j + 1, dtype=jnp.int32)
        taken = jnp.any(chosen == cand)
        return chosen.at[t].set(jnp.where(taken, jnp.int32(j), cand))

    return jax.lax.fori_loop(0, k, body, jnp.full((k,), -1, jnp.int32))


def _random_perms(key: jax.Array, num: int, n: int) -> jax.Array:
    perm = lambda k: jax.random.permutation(k, n).astype(jnp.int32)
    return jax.vmap(perm)(jax.random.split(key, num))


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _sample(key: jax.Array, num: int, n: int, strategy: str) -> jax.Array:
    if strategy == "iid":
        return _random_perms(key, num, n)
    if strategy == "without_replacement":
        ranks = _floyd_sample(key, math.factorial(n), num)
        return jax.vmap(lambda r: _unrank(r, n))(ranks)
    # stratified over the right cosets {p : p[c] = 0}
    k1, k2 = jax.random.split(key)
    u = (jnp.arange(num) + jax.random.uniform(k1, (num,))) / num
    coset = jnp.minimum(jnp.floor(u * n).astype(jnp.int32), n - 1)

    def into_coset(p: jax.Array, c: jax.Array) -> jax.Array:
        a = jnp.argmin(p)  # the point currently sent to slot 0
        return p.at[a].set(p[c]).at[c].set(0)

    return jax.vmap(into_coset)(_random_perms(k2, num, n), coset)


@dataclasses.dataclass(frozen=True)
class SymmetricGroup:
    """The symmetric group S_n permuting axis ``axis`` of a batch, without a Cayley table.

    Elements are permutation arrays: ``(n,)`` (one element for the whole batch) or ``(B, n)``
    (one element per example, leading axis = the batch axis of ``x``). Hashable and compared
    by value, so it can be a static argument of :func:`jax.jit`.

    Attributes:
      n: size of the permuted axis (number of points of a set).
      axis: the permuted axis of the batched input (default 1: ``x`` is ``(B, n, ...)``).

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> G = SymmetricGroup(4)
      >>> G.order
      24
      >>> x = jnp.arange(8.0).reshape(1, 4, 2)
      >>> p = jnp.array([1, 2, 3, 0])                  # point i moves to slot p[i]
      >>> G.act(p, x)[0, :, 0].tolist()
      [6.0, 0.0, 2.0, 4.0]
      >>> q = G.sample(jax.random.key(0), 3)           # three random elements, (3, 4)
      >>> bool(jnp.array_equal(G.act(q[0], G.act(q[1], x)), G.act(G.compose(q[0], q[1]), x)))
      True
    """

    n: int
    axis: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.n, bool) or not isinstance(self.n, (int, np.integer)) or self.n < 1:
            raise ValueError(f"n must be a positive int (the set size), got {self.n!r}.")
        if isinstance(self.axis, bool) or not isinstance(self.axis, (int, np.integer)):
            raise TypeError(f"axis must be an int, got {type(self.axis).__name__}.")
        if self.axis == 0:
            raise ValueError("axis 0 is the batch axis; pass the set axis (e.g. axis=1).")

    @property
    def name(self) -> str:
        return f"S{self.n}"

    @property
    def order(self) -> int:
        """``n!`` (a Python int; may exceed int32)."""
        return math.factorial(self.n)

    # -- structure ----------------------------------------------------------------------
    def identity(self) -> jax.Array:
        """The identity permutation ``arange(n)``."""
        return jnp.arange(self.n, dtype=jnp.int32)

    def compose(self, p: ArrayLike, q: ArrayLike) -> jax.Array:
        """``p q`` (apply ``q`` first): ``(p q)[i] = p[q[i]]``; batched over leading axes."""
        p, q = jnp.asarray(p), jnp.asarray(q)
        p, q = jnp.broadcast_arrays(p, q)
        return jnp.take_along_axis(p, q, axis=-1)

    def inverse(self, p: ArrayLike) -> jax.Array:
        """``p⁻¹`` (batched over leading axes)."""
        return jnp.argsort(jnp.asarray(p), axis=-1).astype(jnp.int32)

    def elements(self) -> jax.Array:
        """All ``n!`` elements in lexicographic order, ``(n!, n)``; only for ``n <= 9``."""
        if self.n > _MAX_ENUMERATE:
            raise ValueError(
                f"S{self.n} has {self.order} elements, too many to list (limit: n <= "
                f"{_MAX_ENUMERATE}); use sample(...) / equijax.sampled_equitune instead."
            )
        return jnp.asarray(_all_permutations(self.n))

    # -- action -------------------------------------------------------------------------
    def act(self, p: ArrayLike, x: ArrayLike) -> jax.Array:
        """Permutes axis ``axis`` of ``x``: ``out[.., p[i], ..] = x[.., i, ..]``.

        Args:
          p: ``(n,)`` permutation, or ``(B, n)`` one per example (``B = x.shape[0]``).
          x: batched array with ``x.shape[axis] == n``.

        Returns:
          An array of the same shape and dtype as ``x``.
        """
        x = jnp.asarray(x)
        p = jnp.asarray(p)
        axis = self.axis if self.axis >= 0 else x.ndim + self.axis
        if not 0 < axis < x.ndim or x.shape[axis] != self.n:
            raise ValueError(
                f"{self.name} permutes axis {self.axis} of length {self.n}, got x with shape "
                f"{x.shape}; build SymmetricGroup(n, axis=...) for your layout."
            )
        if p.shape[-1:] != (self.n,) or p.ndim not in (1, 2):
            raise ValueError(
                f"a {self.name} element is an (n,) or (B, n) permutation array with n={self.n}, "
                f"got shape {p.shape}."
            )
        inv = self.inverse(p)
        if p.ndim == 1:
            return jnp.take(x, inv, axis=axis)
        if p.shape[0] != x.shape[0]:
            raise ValueError(
                f"per-example elements need p.shape[0] == batch size {x.shape[0]}, got {p.shape}."
            )
        shape = [1] * x.ndim
        shape[0], shape[axis] = x.shape[0], self.n
        idx = jnp.broadcast_to(inv.reshape(shape), x.shape[: axis + 1] + (1,) * (x.ndim - axis - 1))
        idx = jnp.broadcast_to(idx, x.shape)
        return jnp.take_along_axis(x, idx, axis=axis)

    # -- sampling -----------------------------------------------------------------------
    def sample(self, key: jax.Array, num: int, strategy: Strategy = "iid") -> jax.Array:
        """Draws ``num`` elements, ``(num, n)`` int32.

        Strategies (every one gives an unbiased group mean, see
        :func:`equijax.sampled_equitune`):

        * ``"iid"``: independent uniform permutations.
        * ``"without_replacement"``: ``num`` distinct uniform permutations (ranks drawn with
          Floyd's algorithm; needs ``n <= 12`` so that ``n!`` fits in int32 and
          ``num <= n!``).
        * ``"stratified"``: over the ``n`` right cosets ``{p : p[c] = 0}`` ("point ``c`` goes
          to slot 0"): sample ``j`` lies in coset ``⌊(j + U_j) n / num⌋`` and is uniform in it.
          With ``num`` a multiple of ``n`` every coset gets ``num / n`` samples.
        """
        if isinstance(num, bool) or not isinstance(num, (int, np.integer)) or num < 1:
            raise ValueError(f"num_samples must be a positive int, got {num!r}.")
        n = self.n
        if strategy == "without_replacement":
            if n > _MAX_RANKED:
                raise ValueError(
                    f"strategy='without_replacement' needs n <= {_MAX_RANKED} (ranks in int32), "
                    f"got n={n}; for S_{n} iid draws repeat an element with probability "
                    f"< num²/(2·{n}!), so use strategy='iid'."
                )
            if num > self.order:
                raise ValueError(
                    f"num_samples={num} exceeds |S{n}| = {self.order} distinct elements."
                )
        if strategy in STRATEGIES:
            return _sample(key, int(num), n, strategy)
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}.")
