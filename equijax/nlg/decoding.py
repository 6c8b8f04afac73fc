"""Group-fair GPT-2 sampling: EquiLM, R-EquiLM, EquizeroLM and R-EquizeroLM.

All methods decode the ``|G|`` transformed prompts ``g·x`` in lock-step with GPT-2's KV cache
(:mod:`equijax.models.gpt2`), ``jax.vmap``-ed over the group and batched over samples, inside
one jitted program. ``G`` is a permutation group of token ids (see :mod:`equijax.nlg.groups`); it
acts on ids with ``act`` and on next-token logits with ``act_axis``. Let ``l_g`` be the next-token
logits of branch ``g`` (which has seen ``g·context``). The ``method`` names (:data:`METHODS`) are
the library's method names; the paper's model names are in brackets:

* ``"pretrained"`` (GPT2): plain top-k sampling from ``l_e`` (no group).
* ``"equitune"`` (EquiLM): sample from ``l = 1/|G| Σ_g g⁻¹ l_g`` at every step (step-wise
  equitune of the logits); the sampled token ``y`` is fed to branch ``g`` as ``g·y``.
* ``"r_equitune"`` (R-EquiLM): as ``"equitune"`` but the *general words* (he, she, his, her,
  him) take the identity branch's logits: ``l[v] = l_e[v]`` for general ``v``.
* ``"equizero"`` (EquizeroLM): every branch ``g`` samples a chunk of ``m`` tokens (default 5)
  from its own logits ``l_g``; a scorer rates each branch's own text ``g·context ⊕ chunk_g``; the
  branch ``g*`` with the highest score wins and ``g*⁻¹·chunk_{g*}`` is appended to the context;
  repeat until ``max_new_tokens`` (the paper: 15). Before the next round every branch's cache is
  rolled back to the round start and fed ``g·(chosen chunk)`` in one multi-token forward pass.
* ``"r_equizero"`` (R-EquizeroLM): as ``"equizero"`` but in every branch the general words take
  the identity branch's logits at the same step.

The spellings of earlier versions (``"gpt2"``, ``"equilm"``, ``"r-equilm"``, ``"r-equizero"``)
still work and raise a :class:`FutureWarning` naming the new one (:data:`RENAMED`).

**Exact fairness with the same PRNG key.** Sampling uses the Gumbel-max trick with the noise
expressed in a *canonical frame* of the prompt: ``c(x) = argmin_h lex(h⁻¹·x)`` (the element that
maps the lexicographically smallest member of the orbit of ``x`` to ``x``), so
``c(g·x) = g·c(x)`` whenever no non-identity element fixes ``x``. The noise for ``x`` is
``act_axis(c(x), n₀)`` with ``n₀`` i.i.d. Gumbel, itself i.i.d. Gumbel, so every token is an exact
sample from ``softmax(filtered logits / T)``. Because ``l(g·x) = g·l(x)`` (EquiLM) and the noise is
also carried along, ``sample(g·x, key) == g·sample(x, key)`` token for token. For EquizeroLM, branch
``h`` of ``g·x`` sees exactly what branch ``hg`` of ``x`` sees (same input, same noise frame
``h·c(g·x) = hg·c(x)``), hence the same score; ties between scores are broken by the smallest
``h·c(x)``, which is also consistent (the engine's argmin with a tie key; a NaN score ranks
last). So EquizeroLM is equivariant for *any* deterministic
scorer. (If some ``g ≠ e`` fixes the prompt, e.g. a prompt without demographic words, no
deterministic sampler can be equivariant unless it never emits a moved token; the frame is then
the identity.) The averaging over the group uses an order-independent (sorted) sum, so the
identity is exact in floating point.

R-EquiLM's relaxed property: for non-general tokens the combined logits are equivariant,
``l(g·x)[g·v] = l(x)[v]``, and for general tokens ``l(x)[v] = l_e(x)[v]``.

Examples:
  >>> import jax, jax.numpy as jnp
  >>> from equijax.models import gpt2
  >>> from equijax.nlg.groups import demographic_group
  >>> vocab = {chr(97 + i): i for i in range(20)}   # toy vocabulary; "a" <-> "b" is the group
  >>> dg = demographic_group(vocab, [["a", "b"]], variants=False)
  >>> cfg = gpt2.GPT2Config(vocab_size=20, n_positions=16, n_embd=8, n_layer=1, n_head=2)
  >>> model = gpt2.GPT2LMHeadModel(cfg)
  >>> params = model.init(jax.random.key(0), jnp.zeros((1, 1), jnp.int32))["params"]
  >>> x = jnp.array([[0, 5, 6]])                    # "a f g"
  >>> out = sample(model, params, x, method="equitune", group=dg, key=jax.random.key(1),
  ...              max_new_tokens=6, top_k=5)
  >>> out_g = sample(model, params, dg.group.act(1, x), method="equitune", group=dg,
  ...                key=jax.random.key(1), max_new_tokens=6, top_k=5)
  >>> bool((out_g.tokens == dg.group.act(1, out.tokens)).all())
  True
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from equijax._src import orbit
from equijax._src.decoding import combine_branches
from equijax._src.groups import PermutationGroup
from equijax.models import gpt2
from equijax.nlg.groups import DemographicGroup

__all__ = [
    "METHODS",
    "RENAMED",
    "Generation",
    "ScoreFn",
    "canonical_frame",
    "canonical_method",
    "combined_logits",
    "generate_text",
    "sample",
]

#: The sampling methods, in the library's spelling (paper: GPT2, EquiLM, R-EquiLM, EquizeroLM,
#: R-EquizeroLM).
METHODS = ("pretrained", "equitune", "r_equitune", "equizero", "r_equizero")
#: Spellings of earlier versions and the method each now names (accepted with a FutureWarning).
RENAMED = {
    "gpt2": "pretrained",
    "equilm": "equitune",
    "r-equilm": "r_equitune",
    "r-equizero": "r_equizero",
}

#: Host scorer used by EquizeroLM: ``(prompt_ids (G, B, T), prompt_mask (B, T),
#: gen_ids (G, B, L), n_valid ()) -> (G, B)`` scores (higher is better); only the first
#: ``n_valid`` generated tokens are real.
ScoreFn = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


class Generation(NamedTuple):
    """Result of :func:`sample`.

    Attributes:
      tokens: ``(B, T + n)`` int32: the (left-padded) prompt followed by ``n`` new tokens.
      new_tokens: ``(B, n)`` int32 new tokens.
      frame: ``(B,)`` int32 canonical frame ``c(x)`` of each prompt (0 without a group).
      branch: ``(B, R)`` int32 chosen element per round (equizero methods), else ``None``.
    """

    tokens: jax.Array
    new_tokens: jax.Array
    frame: jax.Array
    branch: jax.Array | None = None


# ------------------------------------------------------------------------------------------
# Building blocks.
# ------------------------------------------------------------------------------------------


def _lex_less(a: jax.Array, b: jax.Array) -> jax.Array:
    """Row-wise lexicographic ``a < b`` for ``(B, T)`` int arrays."""
    diff = a != b
    first = jnp.argmax(diff, axis=-1)
    av = jnp.take_along_axis(a, first[:, None], axis=-1)[:, 0]
    bv = jnp.take_along_axis(b, first[:, None], axis=-1)[:, 0]
    return diff.any(-1) & (av < bv)


def canonical_frame(group: PermutationGroup, ids: jax.Array) -> jax.Array:
    """The frame ``c(x) = argmin_h lex(h⁻¹·x)`` of each row; ``c(g·x) = g·c(x)``.

    Rows fixed by a non-identity element get the smallest minimising index.

    Args:
      group: a permutation group acting on ids.
      ids: ``(B, T)`` int prompts.

    Returns:
      ``(B,)`` int32 group elements.

    Examples:
      >>> from equijax.groups import permutation
      >>> G = permutation(4, [(0, 1)])
      >>> x = jnp.array([[1, 3], [0, 3], [2, 3]])
      >>> canonical_frame(G, x).tolist()
      [1, 0, 0]
      >>> canonical_frame(G, G.act(1, x)).tolist()
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


def _filter(logits: jax.Array, top_k: int | None, temperature: jax.Array) -> jax.Array:
    logits = logits.astype(jnp.float32) / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = gpt2.top_k_threshold(logits, top_k)[..., None]  # exact, not a vocabulary-wide sort
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    return logits


def _noise(group: PermutationGroup | None, key: jax.Array, frames: jax.Array, v: int) -> jax.Array:
    """Gumbel noise ``act_axis(frame, n0)`` with ``n0`` shared by all frames; ``(*frames, V)``.

    The permutation moves only a few ids (the group's words), so instead of a vocabulary-sized
    gather per row only those columns are rewritten: the same values as
    ``act_axis(frame, n0)``, at a cost independent of ``V``.
    """
    b = frames.shape[-1]
    n0 = jax.random.gumbel(key, (b, v), jnp.float32)
    if group is None:
        return jnp.broadcast_to(n0, (*frames.shape, v))
    moved, src = _moved_columns(group, v)
    if moved.size == 0:
        return jnp.broadcast_to(n0, (*frames.shape, v))
    flat = frames.reshape(-1, b)  # (F, B)
    # act_axis(c, n0)[:, i] == n0[:, src[c, i]]; src[c, i] == i outside ``moved``
    cols = jnp.take(jnp.asarray(src), flat, axis=0)  # (F, B, M) source columns of moved ids
    vals = jnp.take_along_axis(n0[None], cols, axis=-1)  # (F, B, M)
    out = jnp.broadcast_to(n0, (flat.shape[0], b, v)).at[:, :, moved].set(vals)
    return out.reshape(*frames.shape, v)


@functools.lru_cache(maxsize=32)
def _moved_columns(group: PermutationGroup, v: int) -> tuple[np.ndarray, np.ndarray]:
    """``(moved, src)``: the ids some element moves, and ``src[g, i]`` with
    ``act_axis(g, x)[..., moved[i]] == x[..., src[g, i]]`` (static, from the group)."""
    iota = np.arange(v)
    with jax.ensure_compile_time_eval():  # called while tracing: compute concretely
        table = np.stack([np.asarray(group.act_axis(g, iota)) for g in range(group.order)])
    moved = np.flatnonzero((table != iota).any(axis=0))
    return moved, table[:, moved].astype(np.int32)


def combined_logits(
    group: PermutationGroup, branch_logits: jax.Array, general_mask: jax.Array | None = None
) -> jax.Array:
    """EquiLM's next-token logits ``1/|G| Σ_g g⁻¹ l_g`` (R-EquiLM with ``general_mask``).

    Args:
      group: the permutation group on the vocabulary.
      branch_logits: ``(|G|, B, V)`` logits of the branches ``g·context`` (branch 0 = identity).
      general_mask: optional ``(V,)`` bool; those tokens take the identity branch's logits.

    Returns:
      ``(B, V)`` combined logits.

    Examples:
      >>> from equijax.groups import permutation
      >>> G = permutation(3, [(0, 1)])
      >>> l = jnp.array([[[1.0, 0.0, 5.0]], [[3.0, 2.0, 7.0]]])
      >>> combined_logits(G, l).tolist()
      [[1.5, 1.5, 6.0]]
      >>> combined_logits(G, l, jnp.array([False, False, True])).tolist()
      [[1.5, 1.5, 5.0]]
    """
    mean = combine_branches(branch_logits, group, axis=-1)
    if general_mask is not None:
        mean = jnp.where(general_mask, branch_logits[0], mean)
    return mean


# ------------------------------------------------------------------------------------------
# The jitted programs.
# ------------------------------------------------------------------------------------------


def _acts(group: PermutationGroup | None, x: jax.Array) -> jax.Array:
    """``(|G|, *x.shape)``: ``g·x`` for every ``g``."""
    if group is None:
        return x[None]
    gs = jnp.arange(group.order, dtype=jnp.int32)
    return jax.vmap(lambda g: group.act(g, x))(gs)


@functools.partial(jax.jit, static_argnums=(0,), static_argnames=("group", "n", "top_k", "relaxed"))
def _equitune_program(model, params, ids, mask, key, temperature, general_mask, *, group, n, top_k,
                    relaxed):  # fmt: skip
    b, t = ids.shape
    v = model.config.vocab_size
    ids_g = _acts(group, ids)  # (G, B, T)
    frame = jnp.zeros((b,), jnp.int32) if group is None else canonical_frame(group, ids)
    logits, cache = jax.vmap(lambda i: gpt2.prefill(model, params, i, mask, max_length=t + n))(
        ids_g
    )
    keys = jax.random.split(key, n)

    def choose(k, last):
        if group is None:
            lg = last[0]
        else:
            lg = combined_logits(group, last, general_mask if relaxed else None)
        noise = _noise(group, k, frame, v)
        return jnp.argmax(_filter(lg, top_k, temperature) + noise, axis=-1).astype(jnp.int32)

    def body(carry, k):
        last, cache = carry
        tok = choose(k, last)
        last, cache = jax.vmap(lambda c, tk: gpt2.decode_step(model, params, c, tk))(
            cache, _acts(group, tok)
        )
        return (last, cache), tok

    (last, _), toks = jax.lax.scan(body, (logits[:, :, -1], cache), keys[:-1])
    final = choose(keys[-1], last)
    new = jnp.concatenate([toks.T, final[:, None]], axis=1) if n > 1 else final[:, None]
    return new, frame


@functools.partial(
    jax.jit,
    static_argnums=(0,),
    static_argnames=("group", "n", "m", "top_k", "relaxed", "score_fn"),
)
def _equizero_program(model, params, ids, mask, key, temperature, general_mask, *, group, n, m,
                      top_k, relaxed, score_fn):  # fmt: skip
    b, t = ids.shape
    v = model.config.vocab_size
    order = group.order
    gs = jnp.arange(order, dtype=jnp.int32)
    rounds = math.ceil(n / m)
    total = rounds * m
    ids_g = _acts(group, ids)
    frame = canonical_frame(group, ids)
    bframe = jax.vmap(lambda g: group.compose(g, frame))(gs)  # (G, B): frame of branch g
    logits, cache = jax.vmap(lambda i: gpt2.prefill(model, params, i, mask, max_length=t + total))(
        ids_g
    )

    def sample_branches(k, last):
        lg = jnp.where(general_mask, last[:1], last) if relaxed else last
        noise = _noise(group, k, bframe, v)
        return jnp.argmax(_filter(lg, top_k, temperature) + noise, axis=-1).astype(jnp.int32)

    def round_fn(carry, r):
        last, cache, gen, key = carry
        key, kr = jax.random.split(key)
        ks = jax.random.split(kr, m)

        def prop(c, kk):
            last_c, cache_c = c
            tok = sample_branches(kk, last_c)  # (G, B)
            last_c, cache_c = jax.vmap(lambda cc, tk: gpt2.decode_step(model, params, cc, tk))(
                cache_c, tok
            )
            return (last_c, cache_c), tok

        if m > 1:
            (last_p, _), toks = jax.lax.scan(prop, (last, cache), ks[:-1])
            chunk = jnp.concatenate(
                [jnp.moveaxis(toks, 0, -1), sample_branches(ks[-1], last_p)[..., None]], -1
            )
        else:
            chunk = sample_branches(ks[0], last)[..., None]  # (G, B, m)
        gen_g = jax.lax.dynamic_update_slice(_acts(group, gen), chunk, (0, 0, r * m))
        scores = jax.pure_callback(
            score_fn, jax.ShapeDtypeStruct((order, b), jnp.float32), ids_g, mask, gen_g,
            (r + 1) * m,
        )  # fmt: skip
        # the engine's argmin rules on -score: NaN last; exact ties by the smallest frame h·c(x)
        _, kstar = orbit.argmin_ties(-scores, 0, tie_key=bframe)  # (B,)
        picked = jnp.take_along_axis(chunk, kstar[None, :, None], axis=0)[0]  # (B, m)
        chosen = jax.vmap(lambda k, c: group.act(group.inverse(k), c))(kstar, picked)
        gen = jax.lax.dynamic_update_slice(gen, chosen, (0, r * m))
        # roll every branch back to the round start and feed it g·chosen in one pass
        lg, cache = jax.vmap(lambda cc, f: model.apply({"params": params}, f, cache=cc))(
            cache, _acts(group, chosen)
        )
        return (lg[:, :, -1], cache, gen, key), kstar

    gen0 = jnp.zeros((b, total), jnp.int32)
    (_, _, gen, _), branches = jax.lax.scan(
        round_fn, (logits[:, :, -1], cache, gen0, key), jnp.arange(rounds)
    )
    return gen[:, :n], frame, branches.T


# ------------------------------------------------------------------------------------------
# Public API.
# ------------------------------------------------------------------------------------------


def _as_group(group: Any) -> tuple[PermutationGroup | None, tuple[int, ...]]:
    if group is None:
        return None, ()
    if isinstance(group, DemographicGroup):
        return group.group, group.general_ids
    if isinstance(group, PermutationGroup):
        return group, ()
    raise TypeError(
        "group must be a DemographicGroup (equijax.nlg.demographic_group) or a "
        f"PermutationGroup on token ids, got {type(group).__name__}."
    )


def canonical_method(method: str, *, stacklevel: int = 2) -> str:
    """The library's name of a sampling method; an old spelling gives a :class:`FutureWarning`.

    Args:
      method: a name in :data:`METHODS`, or an old spelling in :data:`RENAMED`.
      stacklevel: passed to :func:`warnings.warn` (2: the caller of this function).

    Returns:
      The name in :data:`METHODS`.

    Raises:
      ValueError: for an unknown name (the message lists :data:`METHODS`).

    Examples:
      >>> canonical_method("r_equitune")
      'r_equitune'
      >>> import warnings
      >>> with warnings.catch_warnings(record=True) as caught:
      ...     warnings.simplefilter("always")
      ...     canonical_method("equilm")
      'equitune'
      >>> str(caught[0].message)
      "method='equilm' is renamed 'equitune'; the old spelling will be removed."
    """
    if method in RENAMED:
        new = RENAMED[method]
        warnings.warn(f"method={method!r} is renamed {new!r}; the old spelling will be removed.",
                      FutureWarning, stacklevel=stacklevel + 1)  # fmt: skip
        return new
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    return method


def sample(
    model: gpt2.GPT2LMHeadModel,
    params: Any,
    input_ids: Any,
    attention_mask: Any = None,
    *,
    method: str = "equitune",
    group: DemographicGroup | PermutationGroup | None = None,
    key: jax.Array,
    max_new_tokens: int = 15,
    top_k: int | None = 40,
    temperature: float = 1.0,
    beam_tokens: int = 5,
    score_fn: ScoreFn | None = None,
    general_ids: Sequence[int] | None = None,
) -> Generation:
    """Samples continuations with GPT-2, plain or group-fair (see the module docstring).

    Args:
      model: the GPT-2 module (:mod:`equijax.models.gpt2`).
      params: its parameters.
      input_ids: ``(B, T)`` prompt ids, left-padded (:func:`equijax.models.gpt2.left_pad`).
      attention_mask: ``(B, T)``, 0 marks left padding (default: none).
      method: one of :data:`METHODS`: ``"pretrained"``, ``"equitune"``, ``"r_equitune"``,
        ``"equizero"``, ``"r_equizero"`` (old spellings such as ``"equilm"``: a
        :class:`FutureWarning`, see :func:`canonical_method`).
      group: a :class:`~equijax.nlg.groups.DemographicGroup` (carries the general words) or a
        :class:`~equijax.groups.PermutationGroup` on token ids; not used by ``"pretrained"``.
      key: PRNG key; the same key gives the same noise, in the prompt's canonical frame.
      max_new_tokens: tokens to generate (the paper: 15).
      top_k: sample among the ``top_k`` most likely tokens (``None``: all).
      temperature: softmax temperature (> 0).
      beam_tokens: equizero: tokens each branch proposes per round (the paper: 5).
      score_fn: equizero: host scorer (:data:`ScoreFn`), e.g. from
        :func:`equijax.nlg.scorers.text_score_fn`; must be a hashable, reused object (it is a
        static argument of the compiled program).
      general_ids: relaxed methods: token ids that take the identity branch's logits (default:
        ``group.general_ids``).

    Returns:
      A :class:`Generation`.

    Raises:
      ValueError: for an unknown method, an empty prompt, a prompt plus new tokens longer than
        the context window, a group on another vocabulary size, padding tokens moved by the
        group, or a missing ``score_fn``.
      TypeError: for an unsupported ``group``.
    """
    method = canonical_method(method, stacklevel=3)
    perm, default_general = _as_group(group)
    if method != "pretrained" and perm is None:
        raise ValueError(f"method={method!r} needs group= (e.g. equijax.nlg.demographic_group).")
    if method == "pretrained":
        perm = None
    cfg = model.config
    ids = np.asarray(input_ids)
    if ids.ndim == 1:
        raise ValueError(
            f"input_ids must be (batch, length), got shape {ids.shape}; use input_ids[None]."
        )
    if ids.ndim != 2 or ids.shape[0] == 0 or ids.shape[1] == 0:
        raise ValueError(
            f"input_ids must be a non-empty (batch, length) array, got shape {ids.shape}: "
            "empty prompts cannot be continued (start them with at least one token)."
        )
    if not np.issubdtype(ids.dtype, np.integer):
        raise TypeError(f"input_ids must be integer token ids, got dtype {ids.dtype}.")
    mask = np.ones(ids.shape, bool) if attention_mask is None else np.asarray(attention_mask) != 0
    if mask.shape != ids.shape:
        raise ValueError(f"attention_mask must have shape {ids.shape}, got {mask.shape}.")
    if not mask.any(axis=1).all():
        raise ValueError("a prompt is empty (its attention_mask is all 0); give every row a token.")
    if not mask[:, -1].all():
        raise ValueError("prompts must be left-padded (attention_mask[:, -1] must be 1).")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}.")
    if not isinstance(beam_tokens, int) or beam_tokens < 1:
        raise ValueError(f"beam_tokens must be a positive int, got {beam_tokens!r}.")
    equizero = method in ("equizero", "r_equizero")
    room = math.ceil(max_new_tokens / beam_tokens) * beam_tokens if equizero else max_new_tokens
    if ids.shape[1] + room > cfg.n_positions:
        raise ValueError(
            f"the prompt ({ids.shape[1]} tokens incl. padding) plus {room} new tokens exceeds "
            f"the context window n_positions={cfg.n_positions}; shorten the prompt or generate "
            "fewer tokens."
        )
    if ids.min() < 0 or ids.max() >= cfg.vocab_size:
        raise ValueError(
            f"input_ids must lie in [0, {cfg.vocab_size}), got [{ids.min()}, {ids.max()}]."
        )
    if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be a positive int or None, got {top_k!r}.")
    if not float(temperature) > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}.")
    general = np.zeros(cfg.vocab_size, bool)
    if perm is not None:
        if perm.n != cfg.vocab_size:
            raise ValueError(
                f"the group acts on {perm.n} ids but the model has vocab_size={cfg.vocab_size}; "
                "build the group with vocab_size=model.config.vocab_size."
            )
        pads = ids[~mask]
        for g in range(1, perm.order):
            if pads.size and not np.array_equal(np.asarray(perm.act(g, pads)), pads):
                raise ValueError("the padding token is moved by the group; pad with a fixed id.")
        gen_ids = default_general if general_ids is None else tuple(general_ids)
        if gen_ids:
            general[np.asarray(gen_ids, np.int64)] = True
    ids_j = jnp.asarray(ids, jnp.int32)
    mask_j = jnp.asarray(mask)
    temp = jnp.float32(temperature)
    relaxed = method.startswith("r_")
    if not equizero:
        new, frame = _equitune_program(
            model, params, ids_j, mask_j, key, temp, jnp.asarray(general),
            group=perm, n=max_new_tokens, top_k=top_k, relaxed=relaxed,
        )  # fmt: skip
        return Generation(jnp.concatenate([ids_j, new], axis=1), new, frame)
    if score_fn is None or not callable(score_fn):
        raise ValueError(
            f"method={method!r} needs score_fn= (e.g. equijax.nlg.scorers.text_score_fn(scorer, "
            "tokenizer))."
        )
    new, frame, branches = _equizero_program(
        model, params, ids_j, mask_j, key, temp, jnp.asarray(general),
        group=perm, n=max_new_tokens, m=beam_tokens, top_k=top_k, relaxed=relaxed,
        score_fn=score_fn,
    )  # fmt: skip
    return Generation(jnp.concatenate([ids_j, new], axis=1), new, frame, branches)


def generate_text(
    model: gpt2.GPT2LMHeadModel,
    params: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    key: jax.Array,
    **kwargs: Any,
) -> list[str]:
    """Tokenises ``prompts``, left-pads them, calls :func:`sample` and decodes the continuations.

    Args:
      model: the GPT-2 module.
      params: its parameters.
      tokenizer: the GPT-2 tokenizer (``encode``/``decode``, ``eos_token_id``).
      prompts: non-empty strings.
      key: PRNG key.
      **kwargs: passed to :func:`sample` (``method``, ``group``, ``max_new_tokens``...).

    Returns:
      The continuation text of every prompt (without the prompt).

    Raises:
      ValueError: for an empty list or an empty prompt string.
    """
    if isinstance(prompts, str) or not prompts:
        raise ValueError("prompts must be a non-empty list of strings.")
    rows = []
    for p in prompts:
        if not isinstance(p, str) or not p.strip():
            raise ValueError(f"every prompt must be a non-empty string, got {p!r}.")
        rows.append(tokenizer.encode(p, add_special_tokens=False))
    pad = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    ids, mask = gpt2.left_pad(rows, pad_token_id=pad)
    out = sample(model, params, ids, mask, key=key, **kwargs)
    new = np.asarray(out.new_tokens)
    return [tokenizer.decode(row.tolist()) for row in new]
