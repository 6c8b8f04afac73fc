r"""The sequence engine: one decoder for every method and token choice, over any model.

**The model contract.** An autoregressive model is a :class:`SequenceModel`, a small bundle of
pure functions (the way optax bundles ``(init, update)``):

* ``prefill(params, ids, mask) -> (cache, logits)``: ``ids`` ``(B, T)`` int32 prompt (or
  source) tokens, ``mask`` ``(B, T)`` bool (``False`` marks padding), ``logits`` ``(B, V)``
  for the first new token. An encoder–decoder encodes the source here and returns the logits of
  the first output token (after its start token).
* ``step(params, cache, token) -> (cache, logits)``: feeds ``token`` ``(B,)`` int32, returns
  the logits ``(B, V)`` of the next one. ``cache`` is any pytree (a KV cache, an RNN carry).
* optional ``extend(params, cache, tokens) -> (cache, logits)``: feeds ``(B, L)`` tokens at
  once (a multi-token forward); default: ``L`` calls of ``step``.
* optional ``teacher_force(params, ids, mask, targets, rng) -> logits (B, L, V)`` or
  ``(logits, features)``: the logits of every target position given the gold history;
  default: ``prefill`` then ``step`` over ``targets[:, :-1]`` (``rng`` is unused there).

**The group.** A finite group acts on the output vocabulary (``group.act`` on ids,
``group.act_axis`` on logits) and on the prompt (``in_group.act``, default ``group``; the two
must index the same abstract elements). Branch ``g`` decodes ``g·x``; a token ``y`` chosen in
the frame of ``x`` is fed to branch ``g`` as ``g·y``.

**Methods** (:data:`METHODS`; ``l_g`` are the next-token values of branch ``g``):

* ``"pretrained"``: the model alone.
* ``"equitune"``: step-wise, ``1/|G| Σ_g g⁻¹ l_g`` (``average`` chooses probabilities,
  log-probabilities or logits); ``"lambda_equitune"``: ``Σ_g λ_g g⁻¹ l_g / Σ_g λ_g``;
  ``"r_equitune"``: the tokens of ``keep_identity`` take the identity branch's values.
* ``"equitune_sequence"``: every branch decodes on its own, then the mapped-back per-step
  distributions are averaged (``average="logprob", after_eos="zero"`` is the paper's SCAN row).
* ``"equizero"``: rounds of ``chunk_tokens`` tokens: every branch proposes a chunk from its own
  logits, a proxy loss rates every branch, the branch ``g*`` with the lowest loss wins and
  ``g*⁻¹·chunk_{g*}`` is appended; every branch is rolled back to the round start (its cache
  is a value) and fed ``g·chunk``. One round of ``max_new_tokens`` is the paper's SCAN
  equizero. ``"r_equizero"``: as ``"equizero"`` with the identity branch's values on
  ``keep_identity``.

**Token choice.** Greedy (``key=None``) or sampling (``key``) from
``softmax(filter(logits) / temperature)`` with top-k / top-p (:func:`filter_logits`, the one
token filter), by the Gumbel-max trick with the noise expressed in the prompt's canonical frame
``c(x)`` (:func:`equijax._src.frames.lexicographic_frame`): ``noise(x) = act_axis(c(x), n₀)``.
Since ``c(g·x) = g·c(x)`` the noise moves with the prompt, so

.. math::

    \mathrm{decode}(g \cdot x, \mathrm{key}) = g \cdot \mathrm{decode}(x, \mathrm{key})

token for token, for every method (equizero ties go to the smallest ``h·c(x)``), whenever no
non-identity element fixes the prompt. Every reduction over the group is the orbit engine's
(:mod:`equijax._src.orbit`): order-independent sums, the λ normalisation, the NaN-last argmin.

**The teacher-forced objective.** :func:`method_log_probs` evaluates the method's
log-probabilities of gold targets through :func:`equijax._src.orbit.orbit_reduce` (so
``chunk_size`` and ``orbit_sharding`` work for sequence finetuning too): equitune is the log of
the mean of the branch probabilities, λ-equitune its λ-weighted version, equizero the selected
branch with the straight-through gradient of the equitune mean.

Examples:
  >>> import jax, jax.numpy as jnp
  >>> from equijax._src.groups import permutation
  >>> G = permutation(6, [(3, 4)])             # swap tokens 3 and 4
  >>> W = jax.random.normal(jax.random.key(0), (6, 6))
  >>> def prefill(params, ids, mask):          # a toy bigram "language model"
  ...     return ids[:, -1], params[ids[:, -1]]
  >>> def step(params, cache, token):
  ...     return token, params[token]
  >>> model = SequenceModel(prefill, step)
  >>> x = jnp.array([[1, 3, 5]])
  >>> out = decode(model, W, x, method="equitune", group=G, max_new_tokens=4,
  ...              key=jax.random.key(1))
  >>> out_g = decode(model, W, G.act(1, x), method="equitune", group=G, max_new_tokens=4,
  ...                key=jax.random.key(1))
  >>> bool((out_g.tokens == G.act(1, out.tokens)).all())
  True
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from equijax._src import orbit
from equijax._src.frames import lexicographic_frame

PyTree = Any
Params = Any

__all__ = [
    "METHODS",
    "PROXIES",
    "RENAMED",
    "Decoded",
    "Proposal",
    "SequenceModel",
    "canonical_method",
    "canonical_proxy",
    "decode",
    "filter_logits",
    "method_log_probs",
    "renamed",
    "teacher_forced",
    "top_k_threshold",
]


# ------------------------------------------------------------------------------------------
# The method-name table (one for every application) and the rename helper.
# ------------------------------------------------------------------------------------------

#: Every sequence method, in the library's spelling.
METHODS = (
    "pretrained",
    "equitune",
    "equitune_sequence",
    "lambda_equitune",
    "equizero",
    "r_equitune",
    "r_equizero",
)
#: Built-in equizero proxies (lower is better).
PROXIES = ("neg_max_probability", "entropy")
#: Spellings of earlier versions and the name each now has (accepted with a FutureWarning).
RENAMED = {
    "lambda": "lambda_equitune",
    "gpt2": "pretrained",
    "equilm": "equitune",
    "r-equilm": "r_equitune",
    "r-equizero": "r_equizero",
    "max_prob": "neg_max_probability",
}


def renamed(value: Any, *, what: str = "method", table: dict | None = None,
            stacklevel: int = 2) -> Any:  # fmt: skip
    """``value`` in this round's spelling; an old spelling gives a :class:`FutureWarning`.

    Examples:
      >>> import warnings
      >>> with warnings.catch_warnings(record=True) as caught:
      ...     warnings.simplefilter("always")
      ...     renamed("equilm")
      'equitune'
      >>> str(caught[0].message)
      "method='equilm' is renamed 'equitune'; the old spelling will be removed."
    """
    table = RENAMED if table is None else table
    if isinstance(value, str) and value in table:
        new = table[value]
        warnings.warn(f"{what}={value!r} is renamed {new!r}; the old spelling will be removed.",
                      FutureWarning, stacklevel=stacklevel + 1)  # fmt: skip
        return new
    return value


def canonical_method(method: str, *, methods: tuple[str, ...] = METHODS,
                     stacklevel: int = 2) -> str:  # fmt: skip
    """The library's name of a method (old spellings warned); raises for unknown names.

    Args:
      method: a name in ``methods`` or an old spelling in :data:`RENAMED`.
      methods: the names the caller accepts (default: :data:`METHODS`).
      stacklevel: passed to :func:`warnings.warn` (2: the caller of this function).

    Raises:
      ValueError: for a name not in ``methods`` (the message lists them).

    Examples:
      >>> canonical_method("r_equitune")
      'r_equitune'
    """
    method = renamed(method, stacklevel=stacklevel + 1)
    if method not in methods:
        raise ValueError(f"method must be one of {tuple(methods)}, got {method!r}.")
    return method


def canonical_proxy(proxy: Any, *, stacklevel: int = 2) -> Any:
    """``proxy`` in this round's spelling (``"max_prob"`` -> ``"neg_max_probability"``)."""
    return renamed(proxy, what="proxy", stacklevel=stacklevel + 1)


# ------------------------------------------------------------------------------------------
# The contract and the results.
# ------------------------------------------------------------------------------------------


class SequenceModel(NamedTuple):
    """An autoregressive model as pure functions (see the module docstring for the contract).

    Attributes:
      prefill: ``(params, ids (B, T), mask (B, T)) -> (cache, logits (B, V))``.
      step: ``(params, cache, token (B,)) -> (cache, logits (B, V))``.
      extend: optional ``(params, cache, tokens (B, L)) -> (cache, logits (B, V))``.
      teacher_force: optional ``(params, ids, mask, targets (B, L), rng) -> logits (B, L, V)``
        (or ``(logits, features)``).
    """

    prefill: Callable[[Params, jax.Array, jax.Array], tuple[PyTree, jax.Array]]
    step: Callable[[Params, PyTree, jax.Array], tuple[PyTree, jax.Array]]
    extend: Callable[[Params, PyTree, jax.Array], tuple[PyTree, jax.Array]] | None = None
    teacher_force: Callable[..., Any] | None = None


class Decoded(NamedTuple):
    """Result of :func:`decode`.

    Attributes:
      tokens: ``(B, n)`` int32 new tokens; after the first ``eos_id`` (kept), ``pad_id``.
      scores: ``(B, n)`` float32 probability of each emitted token under the distribution it
        was chosen from (0 after EOS).
      lengths: ``(B,)`` int32 tokens up to and including the first EOS (``n`` without one).
      frame: ``(B,)`` int32 canonical frame ``c(x)`` of each prompt (0 without a group).
      branch: ``(B, R)`` int32 element chosen in every round (equizero methods), else None.
      proxy: ``(R, |G|, B)`` proxy loss of every branch in every round (equizero), else None.
      probs: ``(B, n, V)`` step distributions of the chosen branch (one-round equizero with a
        built-in proxy), else None.
    """

    tokens: jax.Array
    scores: jax.Array
    lengths: jax.Array
    frame: jax.Array
    branch: jax.Array | None = None
    proxy: jax.Array | None = None
    probs: jax.Array | None = None


class Proposal(NamedTuple):
    """What an equizero proxy sees in one round; every field has a leading group axis.

    Attributes:
      prompt: ``(|G|, B, T)`` the branch prompts ``g·x``.
      mask: ``(B, T)`` the prompt mask.
      tokens: ``(|G|, B, L)`` every branch's text so far in its own frame: ``g·(chosen
        tokens)`` followed by this round's chunk (positions from ``n_valid`` on are filler).
      n_valid: ``()`` int32 number of real tokens in ``tokens``.
      probs: ``(|G|, B, m, V)`` the chunk's step distributions (None for a callable proxy
        unless ``need_probs``).
      valid: ``(|G|, B, m)`` bool: chunk steps up to and including the branch's own EOS.
    """

    prompt: jax.Array
    mask: jax.Array
    tokens: jax.Array
    n_valid: jax.Array
    probs: jax.Array | None
    valid: jax.Array


# ------------------------------------------------------------------------------------------
# The one token filter and the noise in a frame.
# ------------------------------------------------------------------------------------------


def top_k_threshold(logits: jax.Array, k: int, *, chunk: int = 32) -> jax.Array:
    """The ``k``-th largest value of each row, ``jax.lax.top_k(logits, k)[0][..., -1]``, exactly.

    Two levels instead of one vocabulary-wide top-k (which XLA:CPU runs as a sort): the row is
    cut into chunks of ``chunk`` values, the ``k`` chunks with the largest maxima are kept, and
    the ``k``-th largest of their ``k · chunk`` values is the answer. Exact: every chunk holding
    one of the row's ``k`` largest values either is kept or has a maximum no larger than each
    kept chunk's.

    Args:
      logits: ``(..., V)`` floats.
      k: ``1 <= k <= V``.
      chunk: chunk length (static).

    Returns:
      ``(...,)`` the ``k``-th largest value of each row.

    Examples:
      >>> x = jax.random.normal(jax.random.key(0), (3, 1000))
      >>> bool((top_k_threshold(x, 7) == jax.lax.top_k(x, 7)[0][:, -1]).all())
      True
    """
    v = logits.shape[-1]
    r = -(-v // chunk)
    if k > r or k * chunk >= v:
        return jax.lax.top_k(logits, k)[0][..., -1]
    lead = logits.shape[:-1]
    pad = [(0, 0)] * len(lead) + [(0, r * chunk - v)]
    blocks = jnp.pad(logits, pad, constant_values=-jnp.inf).reshape(*lead, r, chunk)
    _, best = jax.lax.top_k(jnp.max(blocks, axis=-1), k)  # the k chunks with the largest maxima
    cand = jnp.take_along_axis(blocks, best[..., None], axis=-2).reshape(*lead, k * chunk)
    return jax.lax.top_k(cand, k)[0][..., -1]


def filter_logits(
    logits: jax.Array,
    *,
    top_k: int | None = None,
    top_p: jax.Array | float | None = None,
    temperature: jax.Array | float = 1.0,
) -> jax.Array:
    r"""The token filter: ``logits / temperature``, then top-k, then top-p (nucleus).

    Filtered tokens get ``-inf``: sampling ``argmax(filtered + Gumbel noise)`` (or
    ``jax.random.categorical``) draws from ``softmax(logits / T)`` restricted to the ``top_k``
    largest logits and then to the smallest set of tokens whose probability reaches ``top_p``
    (the most likely token is always kept).

    Args:
      logits: ``(..., V)``.
      top_k: keep the ``top_k`` largest (None: all).
      top_p: nucleus threshold in ``(0, 1]`` (None: no nucleus filtering).
      temperature: ``> 0``.

    Returns:
      ``(..., V)`` float32 filtered logits.

    Examples:
      >>> filter_logits(jnp.array([0.0, 2.0, 1.0]), top_k=2).tolist()
      [-inf, 2.0, 1.0]
    """
    logits = logits.astype(jnp.float32) / temperature
    v = logits.shape[-1]
    if top_k is not None and top_k < v:
        kth = top_k_threshold(logits, top_k)[..., None]  # exact, not a vocabulary-wide sort
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if top_p is not None:
        sorted_logits = jnp.sort(logits, axis=-1)[..., ::-1]
        probs = jax.nn.softmax(sorted_logits, axis=-1)
        before = jnp.cumsum(probs, axis=-1) - probs  # mass of strictly more likely tokens
        keep = before < top_p  # always keeps the most likely token
        threshold = jnp.min(jnp.where(keep, sorted_logits, jnp.inf), axis=-1, keepdims=True)
        logits = jnp.where(logits < threshold, -jnp.inf, logits)
    return logits


@functools.lru_cache(maxsize=32)
def _moved_columns(group: Any, v: int) -> tuple[np.ndarray, np.ndarray]:
    """``(moved, src)``: the ids some element moves, and ``src[g, i]`` with
    ``act_axis(g, x)[..., moved[i]] == x[..., src[g, i]]`` (static, from the group)."""
    iota = np.arange(v)
    with jax.ensure_compile_time_eval():  # called while tracing: compute concretely
        table = np.stack([np.asarray(group.act_axis(g, iota)) for g in range(group.order)])
    moved = np.flatnonzero((table != iota).any(axis=0))
    return moved, table[:, moved].astype(np.int32)


def gumbel_in_frame(group: Any, key: jax.Array, frames: jax.Array, v: int) -> jax.Array:
    """Gumbel noise ``act_axis(frame, n₀)`` with ``n₀`` ``(B, V)`` shared by all frames.

    Only the columns some element moves are rewritten (the same values as
    ``act_axis(frame, n₀)``, at a cost independent of ``V``).

    Args:
      group: acts on the vocabulary (``act_axis``), or None (the noise is ``n₀``).
      key: PRNG key.
      frames: ``(..., B)`` int32 elements.
      v: vocabulary size.

    Returns:
      ``(..., B, V)`` float32.
    """
    b = frames.shape[-1]
    n0 = jax.random.gumbel(key, (b, v), jnp.float32)
    if group is None:
        return jnp.broadcast_to(n0, (*frames.shape, v))
    moved, src = _moved_columns(group, v)
    if moved.size == 0:
        return jnp.broadcast_to(n0, (*frames.shape, v))
    flat = frames.reshape(-1, b)  # (F, B)
    cols = jnp.take(jnp.asarray(src), flat, axis=0)  # (F, B, M) source columns of moved ids
    vals = jnp.take_along_axis(n0[None], cols, axis=-1)  # (F, B, M)
    out = jnp.broadcast_to(n0, (flat.shape[0], b, v)).at[:, :, moved].set(vals)
    return out.reshape(*frames.shape, v)


# ------------------------------------------------------------------------------------------
# Group plumbing (the orbit of a token batch, mapping back).
# ------------------------------------------------------------------------------------------


def _elements(group: Any) -> jax.Array:
    return jnp.arange(1 if group is None else group.order, dtype=jnp.int32)


def _orbit(group: Any, x: jax.Array) -> jax.Array:
    """``(|G|, *x.shape)``: ``g·x`` for every ``g`` (``x[None]`` without a group)."""
    if group is None:
        return x[None]
    return jax.vmap(lambda g: group.act(g, x))(_elements(group))


def combine(values: jax.Array, group: Any, weights: jax.Array | None = None) -> jax.Array:
    """``Σ_g w_g act_axis(g⁻¹, values[g]) / Σ_g w_g`` over the leading group axis, exactly
    order-independent (the engine's :func:`~equijax._src.orbit.group_mean`, ``exact=True``).

    Args:
      values: ``(|G|, B, ..., V)``.
      group: acts on the last axis with ``act_axis`` (None: ``values[0]``).
      weights: optional ``(B, |G|)`` non-negative weights.

    Returns:
      ``(B, ..., V)``.
    """
    if group is None:
        return values[0]
    n = group.order
    if values.shape[0] != n:
        raise ValueError(
            f"branch values must have a leading group axis of length |G| = {n}, got shape "
            f"{values.shape}."
        )
    back = jax.vmap(lambda g, v: group.act_axis(group.inverse(g), v, axis=-1))(
        _elements(group), values
    )
    if weights is None:
        return orbit.group_sum(back, 0, exact=True) / n
    w = jnp.asarray(weights, back.dtype).T  # (|G|, B)
    if w.shape != back.shape[:2]:
        raise ValueError(
            f"weights must have shape (B, |G|) = {back.shape[1::-1]}, got {weights.shape}."
        )
    return orbit.group_mean(back, w, exact=True)


def _check_fixed(group: Any, ids: dict[str, int | None]) -> None:
    ids = {k: v for k, v in ids.items() if v is not None}
    if group is None or not ids:
        return
    with jax.ensure_compile_time_eval():
        arr = jnp.asarray(list(ids.values()), jnp.int32)
        for g in range(group.order):
            moved = np.asarray(group.act(g, arr)) != np.asarray(arr)
            if moved.any():
                bad = [k for k, m in zip(ids, moved, strict=True) if m]
                raise ValueError(
                    f"group element {g} of {getattr(group, 'name', group)} moves {bad}; the "
                    "start/eos/pad tokens must be fixed by every group element."
                )


def _proxy_loss(proxy: str, probs: jax.Array, valid: jax.Array) -> jax.Array:
    """(B, T, V) probs, (B, T) validity -> (B,) built-in proxy loss (lower = more confident)."""
    v = valid.astype(probs.dtype)
    denom = jnp.maximum(v.sum(-1), 1.0)
    if proxy == "neg_max_probability":
        return -(probs.max(-1) * v).sum(-1) / denom
    ent = -jnp.sum(jnp.where(probs > 0, probs * jnp.log(probs), 0.0), -1)
    return (ent * v).sum(-1) / denom


def _cut_at_eos(toks, scores, eos_id, pad_id):
    n = toks.shape[-1]
    if eos_id is None:
        return toks, scores, jnp.full(toks.shape[:-1], n, jnp.int32)
    is_eos = toks == eos_id
    after = (jnp.cumsum(is_eos, -1) - is_eos) > 0  # strictly after the first EOS
    toks = jnp.where(after, pad_id, toks)
    scores = jnp.where(after, 0.0, scores)
    return toks, scores, (~after).sum(-1).astype(jnp.int32)


# ------------------------------------------------------------------------------------------
# The decoder.
# ------------------------------------------------------------------------------------------


class _Plan(NamedTuple):
    """Static options of one decode (hashable)."""

    method: str
    n: int
    m: int
    average: str
    sampling: bool
    top_k: int | None
    use_top_p: bool
    eos_id: int | None
    pad_id: int
    after_eos: str
    relaxed: bool


def _feed_all(model: SequenceModel, params: Params, cache: PyTree, tokens: jax.Array):
    """Feeds ``(|G|, B, L)`` tokens to every branch: ``extend`` or ``L`` steps."""
    if model.extend is not None:
        return jax.vmap(lambda c, t: model.extend(params, c, t))(cache, tokens)

    def one(c, tok):
        c, lg = jax.vmap(lambda cc, t: model.step(params, cc, t))(c, tok)
        return c, lg

    cache, lgs = jax.lax.scan(one, cache, jnp.moveaxis(tokens, -1, 0))
    return cache, lgs[-1]


def decode_branches(
    model: SequenceModel,
    params: Params,
    cache: PyTree,
    logits: jax.Array,
    group: Any,
    plan: _Plan,
    *,
    frame: jax.Array | None,
    key: jax.Array | None = None,
    temperature: jax.Array | float = 1.0,
    top_p: jax.Array | float | None = None,
    weights: jax.Array | None = None,
    keep_identity: jax.Array | None = None,
    proxy: str | Callable[[Proposal], jax.Array] = "neg_max_probability",
    prompt: jax.Array | None = None,
    mask: jax.Array | None = None,
    need_probs: bool = False,
) -> Decoded:
    """The engine's core on already-prefilled branches (``cache``/``logits`` with a leading
    group axis, branch ``g`` having seen ``g·x``). ``frame=None`` breaks equizero ties by the
    element index (no prompt to take a frame of; greedy only)."""
    n_el = 1 if group is None else group.order
    gs = _elements(group)
    b, v = logits.shape[1], logits.shape[2]
    if frame is None:
        tie = jnp.broadcast_to(gs[:, None], (n_el, b))
        frame_out = jnp.zeros((b,), jnp.int32)
    else:
        tie = frame[None] if group is None else jax.vmap(lambda g: group.compose(g, frame))(gs)
        frame_out = frame
    fr = frame_out
    top_p_val = top_p if plan.use_top_p else None
    eos, pad = plan.eos_id, plan.pad_id

    def noisy(lg, k, frames):  # lg (..., B, V) logits, frames (..., B)
        filt = filter_logits(lg, top_k=plan.top_k, top_p=top_p_val, temperature=temperature)
        return jnp.argmax(filt + gumbel_in_frame(group, k, frames, v), -1).astype(jnp.int32)

    def finish(tok, score, done):
        tok = jnp.where(done, pad, tok)
        score = jnp.where(done, 0.0, score)
        new_done = done | (tok == eos) if eos is not None else done
        return tok, score, new_done

    def steps(body, carry, keys, length):
        if keys is None:
            return jax.lax.scan(lambda c, _: body(c, None), carry, None, length=length)
        return jax.lax.scan(body, carry, keys)

    def split(k, num):
        return None if k is None else jax.random.split(k, num)

    done0 = jnp.zeros((b,), bool)

    if plan.method in ("pretrained", "equitune", "lambda_equitune", "r_equitune"):
        # Step-wise: combine the branches' values at every step, one token for all.
        def comb_of(lg):
            lg = lg.astype(jnp.float32)
            vals = {"prob": jax.nn.softmax, "logprob": jax.nn.log_softmax}.get(
                plan.average, lambda a: a
            )(lg)
            c = combine(vals, group, weights)
            if plan.relaxed and keep_identity is not None:
                c = jnp.where(keep_identity, vals[0], c)
            return c

        def pick(lg, k, done):
            c = comb_of(lg)
            if plan.sampling:
                as_logits = jnp.log(c) if plan.average == "prob" else c
                tok = noisy(as_logits, k, fr)
            else:
                tok = jnp.argmax(c, -1).astype(jnp.int32)
            sc = jnp.take_along_axis(c, tok[:, None], -1)[:, 0]
            if plan.average == "logprob":
                sc = jnp.exp(sc)
            elif plan.average == "logit":
                sc = jnp.take_along_axis(jax.nn.softmax(c, -1), tok[:, None], -1)[:, 0]
            return finish(tok, sc, done)

        def body(carry, k):
            lg, cache, done = carry
            tok, sc, new_done = pick(lg, k, done)
            cache, lg = jax.vmap(lambda c, t: model.step(params, c, t))(cache, _orbit(group, tok))
            return (lg, cache, new_done), (tok, sc)

        keys = split(key, plan.n)
        (lg, _, done), (toks, scs) = steps(
            body, (logits, cache, done0), None if keys is None else keys[:-1], plan.n - 1
        )
        last, last_sc, _ = pick(lg, None if keys is None else keys[-1], done)
        toks = jnp.concatenate([toks.T, last[:, None]], axis=1)
        scs = jnp.concatenate([scs.T, last_sc[:, None]], axis=1)
        toks, scs, lengths = _cut_at_eos(toks, scs, eos, pad)
        return Decoded(toks, scs, lengths, frame_out)

    need_probs = need_probs or plan.method == "equitune_sequence" or isinstance(proxy, str)

    def propose(lg, cache, done, ks, m):
        """Every branch decodes ``m`` tokens on its own (its own frame ``tie``)."""
        done_g = jnp.broadcast_to(done, (n_el, b))

        def emit(lg, k, done_g):
            if plan.relaxed and keep_identity is not None:
                lg = jnp.where(keep_identity, lg[:1], lg)
            p = jax.nn.softmax(lg.astype(jnp.float32), -1)
            tok = noisy(lg, k, tie) if plan.sampling else jnp.argmax(p, -1).astype(jnp.int32)
            sc = jnp.take_along_axis(p, tok[..., None], -1)[..., 0]
            tok, sc, new_done = finish(tok, sc, done_g)
            return tok, sc, (p if need_probs else None), done_g, new_done

        def body(carry, k):
            lg, cache, done_g = carry
            tok, sc, p, before, done_g = emit(lg, k, done_g)
            cache, lg = jax.vmap(lambda c, t: model.step(params, c, t))(cache, tok)
            return (lg, cache, done_g), (tok, sc, p, before)

        (lg, cache, done_g), (toks, scs, ps, befores) = steps(
            body, (lg, cache, done_g), None if ks is None else ks[:-1], m - 1
        )
        tok, sc, p, before, _ = emit(lg, None if ks is None else ks[-1], done_g)
        cat = lambda a, z: jnp.concatenate([jnp.moveaxis(a, 0, 2), z[:, :, None]], 2)
        probs = None if not need_probs else cat(ps, p)
        return cat(toks, tok), cat(scs, sc), probs, ~cat(befores, before)

    if plan.method == "equitune_sequence":
        kp, kc = (None, None) if key is None else tuple(jax.random.split(key))
        _, _, probs, valid = propose(logits, cache, done0, split(kp, plan.n), plan.n)
        if plan.average == "prob":
            vals = probs
        else:
            vals = jnp.log(jnp.maximum(probs, 1e-30))
        if plan.after_eos == "zero":  # a branch's rows after its own EOS are 0
            vals = jnp.where(valid[..., None], vals, 0.0)
        c = combine(vals, group)  # (B, n, V)
        if plan.sampling:
            as_logits = jnp.log(c) if plan.average == "prob" else c
            ks = jax.random.split(kc, plan.n)
            tok = jax.vmap(lambda cc, k: noisy(cc, k, fr), in_axes=(1, 0), out_axes=1)(
                as_logits, ks
            )
        else:
            tok = jnp.argmax(c, -1).astype(jnp.int32)
        sc = jnp.take_along_axis(c, tok[..., None], -1)[..., 0]
        if plan.average == "logprob":
            sc = jnp.exp(sc)
        toks, scs, lengths = _cut_at_eos(tok, sc, eos, pad)
        return Decoded(toks, scs, lengths, frame_out)

    # equizero / r_equizero: rounds of m tokens, roll back, feed the chosen chunk.
    m, n = plan.m, plan.n
    rounds = math.ceil(n / m)
    total = rounds * m

    def round_fn(carry, r, feed):
        lg, cache, gen, scores, done, key = carry
        ks = None
        if plan.sampling:
            key, kr = jax.random.split(key)
            ks = jax.random.split(kr, m)
        chunk, sc, probs, valid = propose(lg, cache, done, ks, m)
        gen_g = jax.lax.dynamic_update_slice(_orbit(group, gen), chunk, (0, 0, r * m))
        if isinstance(proxy, str):
            loss = jax.vmap(lambda p, vv: _proxy_loss(proxy, p, vv))(probs, valid)
        else:
            loss = proxy(Proposal(prompt, mask, gen_g, jnp.int32((r + 1) * m), probs, valid))
        _, kstar = orbit.argmin_ties(loss, 0, tie_key=tie)  # (B,): NaN last, ties by frame
        picked = jnp.take_along_axis(chunk, kstar[None, :, None], axis=0)[0]  # (B, m)
        chosen = (
            picked
            if group is None
            else jax.vmap(lambda k, c: group.act(group.inverse(k), c))(kstar, picked)
        )
        sc_sel = jnp.take_along_axis(sc, kstar[None, :, None], axis=0)[0]
        gen = jax.lax.dynamic_update_slice(gen, chosen, (0, r * m))
        scores = jax.lax.dynamic_update_slice(scores, sc_sel, (0, r * m))
        if eos is not None:
            done = done | (chosen == eos).any(-1)
        if feed:  # roll every branch back to the round start and feed it g·chosen
            cache, lg = _feed_all(model, params, cache, _orbit(group, chosen))
            return (lg, cache, gen, scores, done, key), (kstar, loss)
        return (lg, cache, gen, scores, done, key), (kstar, loss, probs)

    gen0 = jnp.zeros((b, total), jnp.int32)
    carry = (logits, cache, gen0, jnp.zeros((b, total), jnp.float32), done0, key)
    probs_sel = None
    if rounds == 1:
        carry, (kstar, loss, probs) = round_fn(carry, 0, feed=False)
        branches, losses = kstar[:, None], loss[None]
        if probs is not None:
            probs_sel = jnp.take_along_axis(probs, kstar[None, :, None, None], axis=0)[0]
    else:
        carry, (kstar, loss) = jax.lax.scan(
            functools.partial(round_fn, feed=True), carry, jnp.arange(rounds)
        )
        branches, losses = kstar.T, loss
    gen, scores = carry[2][:, :n], carry[3][:, :n]
    toks, scs, lengths = _cut_at_eos(gen, scores, eos, pad)
    return Decoded(toks, scs, lengths, frame_out, branches, losses, probs_sel)


def make_plan(method: str, *, n: int, chunk_tokens: int | None, average: str, sampling: bool,
              top_k: int | None, use_top_p: bool, eos_id: int | None, pad_id: int,
              after_eos: str, group: Any, weights: Any, stacklevel: int = 3) -> _Plan:  # fmt: skip
    """Validates the static options of a decode and bundles them (hashable)."""
    method = canonical_method(method, stacklevel=stacklevel)
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise ValueError(f"max_new_tokens must be a positive int, got {n!r}.")
    if average not in ("prob", "logprob", "logit"):
        raise ValueError(f"average must be 'prob', 'logprob' or 'logit', got {average!r}.")
    if after_eos not in ("model", "zero"):
        raise ValueError(f"after_eos must be 'model' or 'zero', got {after_eos!r}.")
    if after_eos != "model" and method != "equitune_sequence":
        raise ValueError(
            f"after_eos applies to method='equitune_sequence' (independent branches), not "
            f"{method!r}; the step-wise methods stop every branch at the combined EOS."
        )
    if method == "equitune_sequence" and average == "logit":
        raise ValueError("method='equitune_sequence' averages distributions: average='prob' or "
                         "'logprob'.")  # fmt: skip
    if method != "pretrained" and group is None:
        raise ValueError(f"method={method!r} needs group= (the group acting on the tokens).")
    if method == "lambda_equitune" and weights is None:
        raise ValueError(
            "method='lambda_equitune' needs weights= ((B, |G|) positive weights, or a callable "
            "cache -> (B,) λ logits evaluated on every branch after prefill)."
        )
    if method != "lambda_equitune" and weights is not None:
        raise ValueError(f"weights are only used by method='lambda_equitune', not {method!r}.")
    if top_k is not None and (not isinstance(top_k, (int, np.integer)) or top_k < 1):
        raise ValueError(f"top_k must be a positive int or None, got {top_k!r}.")
    m = n if chunk_tokens is None else chunk_tokens
    if not isinstance(m, (int, np.integer)) or isinstance(m, bool) or m < 1:
        raise ValueError(f"chunk_tokens must be a positive int or None, got {chunk_tokens!r}.")
    return _Plan(method, int(n), int(min(m, n) if chunk_tokens is None else m), average,
                 bool(sampling), top_k, bool(use_top_p), eos_id, int(pad_id), after_eos,
                 method.startswith("r_"))  # fmt: skip


def decode(
    model: SequenceModel,
    params: Params,
    ids: jax.Array,
    mask: jax.Array | None = None,
    *,
    method: str = "pretrained",
    group: Any = None,
    in_group: Any = None,
    max_new_tokens: int,
    key: jax.Array | None = None,
    temperature: float | jax.Array = 1.0,
    top_k: int | None = None,
    top_p: float | jax.Array | None = None,
    average: Literal["prob", "logprob", "logit"] = "prob",
    weights: jax.Array | Callable[[PyTree], jax.Array] | None = None,
    keep_identity: jax.Array | None = None,
    proxy: str | Callable[[Proposal], jax.Array] = "neg_max_probability",
    chunk_tokens: int | None = None,
    eos_id: int | None = None,
    pad_id: int = 0,
    after_eos: Literal["model", "zero"] = "model",
    proxy_probs: bool = False,
) -> Decoded:
    r"""Decodes ``max_new_tokens`` tokens with any method and token choice (module docstring).

    One ``lax.scan`` over the steps (equizero: over rounds, each a scan over its tokens),
    ``jax.vmap``-ed over the group; wrap the call in :func:`jax.jit` (every option but the
    arrays is static).

    Args:
      model: a :class:`SequenceModel`.
      params: its parameters.
      ids: ``(B, T)`` int prompts (or sources).
      mask: ``(B, T)`` bool, ``False`` marks padding (default: all True).
      method: one of :data:`METHODS` (old spellings: a :class:`FutureWarning`).
      group: acts on the output vocabulary (``act``, ``act_axis``, ``inverse``, ``compose``).
      in_group: acts on ``ids`` (default ``group``); same element indexing as ``group``.
      max_new_tokens: tokens to decode (EOS included).
      key: PRNG key: sample; ``None``: greedy.
      temperature: sampling temperature (> 0).
      top_k: sampling: keep the ``top_k`` most likely tokens.
      top_p: sampling: nucleus threshold.
      average: what the step-wise methods (and ``"equitune_sequence"``) average:
        ``"prob"``, ``"logprob"`` or ``"logit"``.
      weights: ``"lambda_equitune"``: ``(B, |G|)`` positive weights, or ``fn(cache) -> (B,)``
        λ logits of one branch after prefill (normalised over the group by the engine).
      keep_identity: relaxed methods: ``(V,)`` bool, tokens that take the identity branch's
        values.
      proxy: equizero: ``"neg_max_probability"``, ``"entropy"`` or ``fn(Proposal) -> (|G|, B)``
        losses (lower wins).
      chunk_tokens: equizero: tokens per round (default: one round of ``max_new_tokens``).
      eos_id: end token (None: never stop); after it ``pad_id``.
      pad_id: filler after EOS.
      after_eos: ``"equitune_sequence"``: ``"zero"`` gives a branch rows of 0 after its EOS.
      proxy_probs: a callable ``proxy`` reads :attr:`Proposal.probs` (``(|G|, B, m, V)``
        floats in memory; off by default, built-in proxies always have them).

    Returns:
      A :class:`Decoded`.

    Raises:
      ValueError: for unknown options, missing weights / group, bad shapes, or special tokens
        moved by the group.
    """
    plan = make_plan(method, n=max_new_tokens, chunk_tokens=chunk_tokens, average=average,
                     sampling=key is not None, top_k=top_k, use_top_p=top_p is not None,
                     eos_id=eos_id, pad_id=pad_id, after_eos=after_eos, group=group,
                     weights=weights)  # fmt: skip
    if plan.method == "pretrained":
        group = in_group = None
    in_group = group if in_group is None else in_group
    if group is not None and in_group.order != group.order:
        raise ValueError(f"in_group has {in_group.order} elements but group has {group.order}; "
                         "they must index the same abstract group.")  # fmt: skip
    if proxy not in PROXIES and not callable(proxy):
        proxy = canonical_proxy(proxy, stacklevel=3)
        if proxy not in PROXIES:
            raise ValueError(f"proxy must be one of {PROXIES} or a callable, got {proxy!r}.")
    ids = jnp.asarray(ids)
    if ids.ndim != 2:
        raise ValueError(f"ids must be (batch, length), got shape {ids.shape}.")
    mask = jnp.ones(ids.shape, bool) if mask is None else jnp.asarray(mask).astype(bool)
    if mask.shape != ids.shape:
        raise ValueError(f"mask must have the shape of ids {ids.shape}, got {mask.shape}.")
    _check_fixed(group, {"eos_id": eos_id, "pad_id": pad_id if eos_id is not None else None})
    ids_g = _orbit(in_group, ids.astype(jnp.int32))
    frame = (
        jnp.zeros(ids.shape[:1], jnp.int32)
        if in_group is None
        else lexicographic_frame(in_group, ids.astype(jnp.int32))
    )
    cache, logits = jax.vmap(lambda i: model.prefill(params, i, mask))(ids_g)
    if callable(weights):
        lam = jax.vmap(weights)(cache)  # (|G|, B) λ logits
        weights = orbit.normalized_weights(lam, axis=0, exact=True).T
    elif weights is not None:
        weights = jnp.asarray(weights)
        if weights.shape != (ids.shape[0], group.order):
            raise ValueError(f"weights must have shape (B, |G|) = {(ids.shape[0], group.order)}"
                             f", got {weights.shape}.")  # fmt: skip
    return decode_branches(
        model, params, cache, logits, group, plan, frame=frame, key=key,
        temperature=temperature, top_p=top_p, weights=weights,
        keep_identity=None if keep_identity is None else jnp.asarray(keep_identity, bool),
        proxy=proxy, prompt=ids_g, mask=mask, need_probs=proxy_probs,
    )  # fmt: skip


# ------------------------------------------------------------------------------------------
# The teacher-forced objective.
# ------------------------------------------------------------------------------------------


def teacher_forced(model: SequenceModel) -> Callable[..., Any]:
    """``fn(params, ids, mask, targets, rng) -> logits (B, L, V)`` of every target position.

    ``model.teacher_force`` if the model has one, else ``prefill`` then ``step`` over
    ``targets[:, :-1]`` (``rng`` unused).
    """
    if model.teacher_force is not None:
        return model.teacher_force

    def run(params, ids, mask, targets, rng=None):
        del rng
        cache, lg = model.prefill(params, ids, mask)

        def body(cache, tok):
            cache, nxt = model.step(params, cache, tok)
            return cache, nxt

        _, rest = jax.lax.scan(body, cache, targets[:, :-1].T)
        return jnp.concatenate([lg[:, None], jnp.swapaxes(rest, 0, 1)], axis=1)

    return run


def _log_mixture_reducer(weighted: bool = False) -> orbit.Reducer:
    """``log Σ_g w_g exp(y_g)`` with ``w = normalized_weights(aux)`` (``weighted``) or uniform,
    chunk by chunk: the partial is ``(mixture over the chunk, logsumexp of its logits)``."""

    def summarize(ch: orbit.Chunk):
        if not weighted:
            c = jax.tree.leaves(ch.y)[0].shape[0]
            mix = jax.tree.map(orbit.log_mixture, ch.y)
            z = jnp.full(jax.tree.leaves(ch.y)[0].shape[1:2], jnp.log(float(c)))
            return mix, z
        lw = orbit.log_normalized_weights(ch.aux, axis=0)
        mix = jax.tree.map(lambda a: orbit.log_mixture(a, lw), ch.y)
        return mix, jax.scipy.special.logsumexp(jnp.where(jnp.isnan(ch.aux), -jnp.inf, ch.aux), 0)

    def merge(p, q):
        (m1, z1), (m2, z2) = p, q
        z = jnp.logaddexp(z1, z2)

        def comb(a, c):
            e1 = (z1 - z).reshape(z.shape + (1,) * (a.ndim - 1))
            e2 = (z2 - z).reshape(z.shape + (1,) * (c.ndim - 1))
            return jnp.logaddexp(a + e1, c + e2)

        return jax.tree.map(comb, m1, m2), z

    return orbit.Reducer(summarize, merge, lambda p: p[0])


def method_log_probs(
    fn: Callable[..., Any],
    params: Params,
    ids: jax.Array,
    mask: jax.Array,
    targets: jax.Array,
    *,
    method: str,
    group: Any,
    in_group: Any = None,
    rng: jax.Array | None = None,
    weight_fn: Callable[[jax.Array, jax.Array | None], jax.Array] | None = None,
    weight_rng: jax.Array | None = None,
    pad_id: int = 0,
    chunk_size: int | None = None,
    orbit_sharding: jax.sharding.Sharding | None = None,
    batching: orbit.Batching = None,
) -> jax.Array:
    r"""The method's log-probabilities of gold targets (the finetuning objective).

    Branch ``g`` is fed ``g·ids`` and the gold history ``g·targets``; its log-softmax rows are
    mapped back with ``g⁻¹``:  ``ℓ_g = g⁻¹ log p(· | g·x, g·y_{<t})``. Then

    * ``"equitune"``: ``log 1/|G| Σ_g exp ℓ_g`` (the log of the mean of probabilities);
    * ``"lambda_equitune"``: ``log Σ_g λ_g exp ℓ_g``, ``λ = softmax_g(weight_fn(features_g))``;
    * ``"equizero"``: the rows of the branch with the highest mean top-1 probability over the
      non-padding targets, with the straight-through gradient of the equitune mixture.

    Evaluated by :func:`equijax._src.orbit.orbit_reduce`: ``chunk_size`` bounds memory,
    ``orbit_sharding`` shards the branches. Per-branch randomness (dropout) is carried with the
    elements: branch ``g`` gets ``jax.random.split(rng, |G|)[g]``.

    Args:
      fn: ``fn(params, ids, mask, targets, rng) -> logits (B, L, V)`` or ``(logits,
        features)`` (e.g. :func:`teacher_forced` of a :class:`SequenceModel`).
      params: its parameters.
      ids: ``(B, T)`` sources / prompts; mask: ``(B, T)`` bool.
      targets: ``(B, L)`` gold tokens (``pad_id`` marks padding).
      method: ``"equitune"``, ``"lambda_equitune"`` or ``"equizero"``.
      group: acts on the target vocabulary; in_group: on ``ids`` (default ``group``).
      rng: optional PRNG key of ``fn`` (split over the branches).
      weight_fn: ``"lambda_equitune"``: ``(features (B, H), rng) -> (B,)`` λ logits.
      weight_rng: optional PRNG key of ``weight_fn`` (split over the branches).
      pad_id: target padding id.
      chunk_size: branches per chunk (None: all).
      orbit_sharding: sharding of the stacked branch inputs.
      batching: ``"vmap"``, ``"fold"`` or None (auto).

    Returns:
      ``(B, L, V)`` log-probabilities.
    """
    method = canonical_method(method, methods=("equitune", "lambda_equitune", "equizero"),
                              stacklevel=3)  # fmt: skip
    in_group = group if in_group is None else in_group
    n = group.order
    if method == "lambda_equitune" and weight_fn is None:
        raise ValueError("method='lambda_equitune' needs weight_fn(features, rng) -> (B,) logits.")
    if (rng is not None or weight_rng is not None) and batching == "fold":
        raise ValueError("per-branch rng / weight_rng need batching='vmap' (or None).")
    keys = None if rng is None else jax.random.split(rng, n)
    wkeys = None if weight_rng is None else jax.random.split(weight_rng, n)

    def transform(g, x):  # branch inputs; the element rides along as a (B,) column
        src, msk, tgt = x
        return in_group.act(g, src), msk, group.act(g, tgt), jnp.full(src.shape[:1], g)

    def run(x):
        src, msk, tgt, g = x
        out = fn(params, src, msk, tgt, None if keys is None else keys[g[0]])
        logits, feats = out if isinstance(out, tuple) else (out, None)
        return jax.nn.log_softmax(logits.astype(jnp.float32), -1), feats

    def untransform(g, y):
        return group.act_axis(group.inverse(g), y, axis=-1)

    valid = (targets != pad_id).astype(jnp.float32)

    def conf_loss(x, y, feats):  # minus the mean top-1 probability (max is g-invariant)
        del x, feats
        return -(jnp.exp(y.max(-1)) * valid).sum(-1) / jnp.maximum(valid.sum(-1), 1.0)

    def lam_logits(x, y, feats):
        del y
        return weight_fn(feats, None if wkeys is None else wkeys[x[3][0]])

    x = (jnp.asarray(ids), jnp.asarray(mask).astype(bool), jnp.asarray(targets))
    el = jnp.arange(n, dtype=jnp.int32)
    common = dict(elements=el, transform=transform, untransform=untransform, has_aux=True,
                  chunk_size=chunk_size, batching=batching,
                  orbit_sharding=orbit_sharding)  # fmt: skip
    if method == "equitune":
        out, _ = orbit.orbit_reduce(run, x, reducer=_log_mixture_reducer(), **common)
        return out
    if method == "lambda_equitune":
        out, _ = orbit.orbit_reduce(run, x, reducer=_log_mixture_reducer(weighted=True),
                                    aux_fn=lam_logits,
                                    aux_name="weight_fn", **common)  # fmt: skip
        return out
    exact = chunk_size is None or orbit.validate_chunk_size(chunk_size, n) >= n
    reducer = orbit.pair_reducer(orbit.argmin_reducer("average", exact=exact),
                                 _log_mixture_reducer())  # fmt: skip
    ((sel, _), mix), _ = orbit.orbit_reduce(run, x, reducer=reducer, aux_fn=conf_loss,
                                            aux_name="proxy", **common)  # fmt: skip
    return orbit.straight_through(sel, mix)
