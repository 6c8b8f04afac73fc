"""GPT-2 decoding: prefill / one cached step, token selection, jitted generation, scoring.

Pure functions of the static module ``model`` and its parameter pytree ``params`` (the contents
of ``variables["params"]``), so ``jax.jit`` / ``jax.vmap`` compose with them.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from equijax._src.sequence import SequenceModel, filter_logits, top_k_threshold
from equijax.models.gpt2.model import GPT2LMHeadModel, KVCache, _check_ids, _is_concrete, init_cache

__all__ = [
    "decode_step",
    "generate",
    "left_pad",
    "prefill",
    "select_token",
    "sequence_log_prob",
    "sequence_model",
    "step_fn",
    "top_k_threshold",
]

_STRATEGIES = ("greedy", "sample", "beam")


def prefill(
    model: GPT2LMHeadModel,
    params: Any,
    input_ids: jax.Array,
    attention_mask: jax.Array | None = None,
    *,
    max_length: int,
) -> tuple[jax.Array, KVCache]:
    """Run a (left-padded) prompt and return its logits and a filled KV cache.

    Args:
        model: the GPT-2 module.
        params: its parameters (``variables["params"]``).
        input_ids: ``(B, T)`` prompt ids, left-padded if rows differ in length.
        attention_mask: ``(B, T)``; 0 marks padding. Default: no padding.
        max_length: total cache slots (``T`` + tokens to decode later); ``<= n_positions``.

    Returns:
        ``(logits, cache)`` with ``(B, T, V)`` float32 logits; ``logits[:, -1]`` predicts the
        first new token of every row (prompts are left-padded).

    Raises:
        ValueError: if ``max_length < T`` or ``max_length > n_positions`` or ids are invalid.
    """
    t = np.shape(input_ids)[-1]
    _check_ids(input_ids, model.config, extra=max_length - t)
    if max_length < t:
        raise ValueError(f"max_length={max_length} is shorter than the prompt ({t} tokens)")
    return _prefill_jit(model, params, input_ids, attention_mask, max_length=max_length)


@functools.partial(jax.jit, static_argnums=(0,), static_argnames=("max_length",))
def _prefill_jit(model, params, input_ids, attention_mask, *, max_length):
    cache = init_cache(model, input_ids.shape[0], max_length)
    return model.apply({"params": params}, input_ids, attention_mask=attention_mask, cache=cache)


def decode_step(
    model: GPT2LMHeadModel, params: Any, cache: KVCache, token_ids: jax.Array
) -> tuple[jax.Array, KVCache]:
    """Feed one token per row and return next-token logits.

    Args:
        model: the GPT-2 module.
        params: its parameters.
        cache: the cache from :func:`prefill` / a previous step (must have a free slot).
        token_ids: ``(B,)`` int ids.

    Returns:
        ``(next_logits, cache)``: ``(B, V)`` float32 logits and the extended cache.
    """
    if np.ndim(token_ids) != 1:
        raise ValueError(f"token_ids must have shape (batch,), got {np.shape(token_ids)}")
    return _decode_jit(model, params, cache, token_ids)


@functools.partial(jax.jit, static_argnums=(0,))
def _decode_jit(model, params, cache, token_ids):
    logits, cache = model.apply({"params": params}, token_ids[:, None], cache=cache)
    return logits[:, 0], cache


def step_fn(model: GPT2LMHeadModel):
    """``decode_step`` as ``step(params, cache, token_ids) -> (cache, logits)``.

    The signature of the step functions taken by equijax's generic autoregressive decoders
    (:mod:`equijax._src.decoding`); vmap it over a group axis of caches for EquiLM-style decoding.

    Examples:
        >>> from equijax.models.gpt2 import GPT2Config
        >>> m = GPT2LMHeadModel(GPT2Config(vocab_size=10, n_positions=8, n_embd=4, n_layer=1,
        ...                                n_head=2))
        >>> params = jax.jit(m.init)(jax.random.key(0), jnp.zeros((1, 1), jnp.int32))["params"]
        >>> cache, logits = step_fn(m)(params, init_cache(m, 1, 4), jnp.array([3]))
        >>> logits.shape, cache.index.tolist()
        ((1, 10), [1])
    """

    def step(params: Any, cache: KVCache, token_ids: jax.Array) -> tuple[KVCache, jax.Array]:
        logits, cache = decode_step(model, params, cache, token_ids)
        return cache, logits

    return step


@functools.lru_cache(maxsize=64)
def sequence_model(model: GPT2LMHeadModel, max_length: int) -> SequenceModel:
    """GPT-2 as a :class:`~equijax.decoding.SequenceModel` (the sequence engine's contract).

    ``prefill(params, ids, mask)`` runs the left-padded prompt into a KV cache of
    ``max_length`` slots and returns the next-token logits ``(B, V)``; ``step`` feeds one
    token; ``extend`` feeds ``(B, L)`` tokens in one multi-token forward pass (equizero's
    roll-back). Cached per ``(model, max_length)``, so equal calls give the same (hashable)
    object and jitted callers compile once.

    Args:
        model: the GPT-2 module.
        max_length: cache slots (prompt length + tokens to decode); ``<= n_positions``.

    Examples:
        >>> from equijax.models.gpt2 import GPT2Config
        >>> m = GPT2LMHeadModel(GPT2Config(vocab_size=10, n_positions=8, n_embd=4, n_layer=1,
        ...                                n_head=2))
        >>> params = jax.jit(m.init)(jax.random.key(0), jnp.zeros((1, 1), jnp.int32))["params"]
        >>> sm = sequence_model(m, 6)
        >>> cache, logits = sm.prefill(params, jnp.array([[3, 4]]), jnp.ones((1, 2), bool))
        >>> logits.shape, sm.step(params, cache, jnp.array([5]))[1].shape
        ((1, 10), (1, 10))
    """

    def prefill_fn(params: Any, ids: jax.Array, mask: jax.Array) -> tuple[KVCache, jax.Array]:
        logits, cache = prefill(model, params, ids, mask, max_length=max_length)
        return cache, logits[:, -1]

    def step(params: Any, cache: KVCache, token: jax.Array) -> tuple[KVCache, jax.Array]:
        logits, cache = decode_step(model, params, cache, token)
        return cache, logits

    def extend(params: Any, cache: KVCache, tokens: jax.Array) -> tuple[KVCache, jax.Array]:
        logits, cache = model.apply({"params": params}, tokens, cache=cache)
        return cache, logits[:, -1]

    return SequenceModel(prefill_fn, step, extend)


def select_token(
    key: jax.Array | None,
    logits: jax.Array,
    *,
    strategy: str = "greedy",
    top_k: int | None = None,
    top_p: float | None = None,
    temperature: float = 1.0,
) -> jax.Array:
    """Pick one token per row from ``(B, V)`` logits: argmax, or sample after top-k / top-p.

    Sampling draws from ``softmax(logits / temperature)`` restricted to the ``top_k`` largest
    logits and then to the smallest set of tokens whose probability reaches ``top_p`` (nucleus).

    Args:
        key: PRNG key (required for ``strategy="sample"``).
        logits: ``(..., V)`` logits.
        strategy: ``"greedy"`` or ``"sample"``.
        top_k: keep only the ``top_k`` most likely tokens (``None``: all).
        top_p: nucleus threshold in ``(0, 1]`` (``None``: no nucleus filtering).
        temperature: softmax temperature (> 0).

    Returns:
        ``(...,)`` int32 token ids.

    Examples:
        >>> select_token(None, jnp.array([[0.0, 2.0, 1.0]]))
        Array([1], dtype=int32)
        >>> int(select_token(jax.random.key(0), jnp.array([[0.0, 2.0, 1.0]]), strategy="sample",
        ...                  top_k=1)[0])
        1
    """
    if strategy == "greedy":
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    if strategy != "sample":
        raise ValueError(f"strategy must be 'greedy' or 'sample' here, got {strategy!r}")
    if key is None:
        raise ValueError("strategy='sample' needs an explicit PRNG key: key=jax.random.key(seed)")
    logits = filter_logits(logits, top_k=top_k, top_p=top_p, temperature=temperature)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


def _validate_generate(model, input_ids, attention_mask, key, max_new_tokens, strategy, top_k,
                       top_p, temperature, num_beams):  # fmt: skip
    cfg = model.config
    if not isinstance(model, GPT2LMHeadModel):
        raise TypeError(f"model must be a GPT2LMHeadModel, got {type(model).__name__}")
    if strategy not in _STRATEGIES:
        raise ValueError(f"strategy must be one of {_STRATEGIES}, got {strategy!r}")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
    _check_ids(input_ids, cfg, extra=max_new_tokens)
    if attention_mask is not None and np.shape(attention_mask) != np.shape(input_ids):
        raise ValueError(
            f"attention_mask must have the shape of input_ids {np.shape(input_ids)}, got "
            f"{np.shape(attention_mask)}"
        )
    if attention_mask is not None and _is_concrete(attention_mask):
        m = np.asarray(attention_mask)
        if m.size and not np.all(m[:, -1]):
            raise ValueError(
                "prompts must be left-padded (attention_mask[:, -1] must be 1); see left_pad()"
            )
    if strategy == "sample" and key is None:
        raise ValueError("strategy='sample' needs an explicit PRNG key: key=jax.random.key(seed)")
    if top_k is not None and (not isinstance(top_k, int) or not 1 <= top_k):
        raise ValueError(f"top_k must be a positive int or None, got {top_k!r}")
    if top_p is not None and not 0.0 < float(top_p) <= 1.0:
        raise ValueError(f"top_p must be in (0, 1] or None, got {top_p!r}")
    if not float(temperature) > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    if strategy == "beam" and (not isinstance(num_beams, int) or num_beams < 1):
        raise ValueError(f"num_beams must be a positive int for beam search, got {num_beams!r}")


def generate(
    model: GPT2LMHeadModel,
    params: Any,
    input_ids: jax.Array,
    *,
    max_new_tokens: int,
    key: jax.Array | None = None,
    strategy: str = "greedy",
    top_k: int | None = None,
    top_p: float | None = None,
    temperature: float = 1.0,
    num_beams: int = 4,
    length_penalty: float = 1.0,
    attention_mask: jax.Array | None = None,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
    use_cache: bool = True,
) -> jax.Array:
    """Jitted autoregressive generation (greedy, top-k / top-p sampling, or beam search).

    The loop is a ``lax.scan`` inside one ``jax.jit``; it can itself be ``jax.vmap``-ed (e.g.
    over a group axis of transformed prompts). Rows that emit ``eos_token_id`` are padded with
    ``pad_token_id`` afterwards.

    Beam search keeps the ``num_beams`` highest cumulative log-probability continuations per row
    (finished beams are extended by ``pad_token_id`` at no cost) and returns the beam with the
    best ``log p / length ** length_penalty``; with no EOS this is HF's beam search.

    Args:
        model: the GPT-2 module.
        params: its parameters.
        input_ids: ``(B, T)`` prompts, left-padded (see :func:`left_pad`).
        max_new_tokens: tokens to generate (static); ``T + max_new_tokens <= n_positions``.
        key: PRNG key, required for ``strategy="sample"``.
        strategy: ``"greedy"``, ``"sample"`` or ``"beam"``.
        top_k: sampling: keep the ``top_k`` most likely tokens.
        top_p: sampling: nucleus threshold.
        temperature: sampling temperature.
        num_beams: beam width for ``strategy="beam"``.
        length_penalty: beam search: final scores are ``log p / length ** length_penalty``.
        attention_mask: ``(B, T)``, 0 marks left padding.
        eos_token_id: stop token (``None``: never stop early; pass ``model.config.eos_token_id``
            to stop at GPT-2's ``<|endoftext|>``).
        pad_token_id: filler after EOS (default ``eos_token_id``, else 0).
        use_cache: ``False`` recomputes the whole prefix at every step (slow reference path).

    Returns:
        ``(B, T + max_new_tokens)`` int32 sequences (prompt followed by the new tokens).

    Raises:
        ValueError: for bad ids / lengths / options (messages name the argument).
    """
    _validate_generate(model, input_ids, attention_mask, key, max_new_tokens, strategy, top_k,
                       top_p, temperature, num_beams)  # fmt: skip
    input_ids = jnp.asarray(input_ids, jnp.int32)
    if attention_mask is None:
        mask = jnp.ones(input_ids.shape, bool)
    else:
        mask = jnp.asarray(attention_mask) != 0
    if key is None:
        key = jax.random.key(0)  # unused by greedy / beam search
    if pad_token_id is None:
        pad_token_id = eos_token_id if eos_token_id is not None else 0
    return _generate_jit(
        model, params, input_ids, mask, key, jnp.float32(temperature),
        jnp.float32(1.0 if top_p is None else top_p),
        max_new_tokens=max_new_tokens, strategy=strategy, top_k=top_k, use_top_p=top_p is not None,
        num_beams=num_beams, length_penalty=float(length_penalty), eos_token_id=eos_token_id,
        pad_token_id=int(pad_token_id), use_cache=use_cache,
    )  # fmt: skip


@functools.partial(
    jax.jit,
    static_argnums=(0,),
    static_argnames=("max_new_tokens", "strategy", "top_k", "use_top_p", "num_beams",
                     "length_penalty", "eos_token_id", "pad_token_id", "use_cache"),
)  # fmt: skip
def _generate_jit(model, params, input_ids, mask, key, temperature, top_p, *, max_new_tokens,
                  strategy, top_k, use_top_p, num_beams, length_penalty, eos_token_id,
                  pad_token_id, use_cache):  # fmt: skip
    if strategy == "beam":
        return _beam_search(model, params, input_ids, mask, max_new_tokens, num_beams,
                            length_penalty, eos_token_id, pad_token_id, use_cache)  # fmt: skip
    b, t = input_ids.shape
    n = max_new_tokens

    def choose(k, logits):
        nucleus = top_p if use_top_p else None
        return select_token(
            k, logits, strategy=strategy, top_k=top_k, top_p=nucleus, temperature=temperature
        )

    def finish(tok, done):
        tok = jnp.where(done, pad_token_id, tok)
        if eos_token_id is not None:
            done = done | (tok == eos_token_id)
        return tok, done

    keys = jax.random.split(key, n)
    done0 = jnp.zeros((b,), bool)
    if use_cache:
        logits, cache = prefill(model, params, input_ids, mask, max_length=t + n)

        def body(carry, k):
            next_logits, cache, done = carry
            tok, done = finish(choose(k, next_logits), done)
            next_logits, cache = decode_step(model, params, cache, tok)
            return (next_logits, cache, done), tok

        (last_logits, _, done), toks = jax.lax.scan(body, (logits[:, -1], cache, done0), keys[:-1])
        last, _ = finish(choose(keys[-1], last_logits), done)
        new = jnp.concatenate([toks.T, last[:, None]], axis=1) if n > 1 else last[:, None]
        return jnp.concatenate([input_ids, new], axis=1)

    # reference path without a cache: recompute the full (fixed-size, right-padded) buffer
    ids = jnp.concatenate([input_ids, jnp.full((b, n), pad_token_id, jnp.int32)], axis=1)
    buf_mask = jnp.concatenate([mask, jnp.zeros((b, n), bool)], axis=1)

    def body_nc(carry, xs):
        ids, buf_mask, done = carry
        i, k = xs
        logits, _ = model.apply({"params": params}, ids, attention_mask=buf_mask)
        step_logits = jax.lax.dynamic_index_in_dim(logits, t + i - 1, axis=1, keepdims=False)
        tok, done = finish(choose(k, step_logits), done)
        ids = jax.lax.dynamic_update_slice(ids, tok[:, None], (0, t + i))
        buf_mask = jax.lax.dynamic_update_slice(buf_mask, jnp.ones((b, 1), bool), (0, t + i))
        return (ids, buf_mask, done), None

    (ids, _, _), _ = jax.lax.scan(body_nc, (ids, buf_mask, done0), (jnp.arange(n), keys))
    return ids


def _beam_search(model, params, input_ids, mask, n, num_beams, length_penalty, eos, pad,
                 use_cache):  # fmt: skip
    b, t = input_ids.shape
    kb = num_beams
    v = model.config.vocab_size
    ids_rep = jnp.repeat(input_ids, kb, axis=0)
    mask_rep = jnp.repeat(mask, kb, axis=0)

    if use_cache:
        logits, state = prefill(model, params, ids_rep, mask_rep, max_length=t + n)
        logp = jax.nn.log_softmax(logits[:, -1])

        def step(state, tok, i):
            del i
            next_logits, state = decode_step(model, params, state, tok)
            return jax.nn.log_softmax(next_logits), state

    else:
        state = (
            jnp.concatenate([ids_rep, jnp.full((b * kb, n), pad, jnp.int32)], axis=1),
            jnp.concatenate([mask_rep, jnp.zeros((b * kb, n), bool)], axis=1),
        )
        logits, _ = model.apply({"params": params}, ids_rep, attention_mask=mask_rep)
        logp = jax.nn.log_softmax(logits[:, -1])

        def step(state, tok, i):
            ids, m = state
            ids = jax.lax.dynamic_update_slice(ids, tok[:, None], (0, t + i))
            m = jax.lax.dynamic_update_slice(m, jnp.ones((b * kb, 1), bool), (0, t + i))
            lg, _ = model.apply({"params": params}, ids, attention_mask=m)
            lg = jax.lax.dynamic_index_in_dim(lg, t + i, axis=1, keepdims=False)
            return jax.nn.log_softmax(lg), (ids, m)

    def reorder(state, flat_idx):  # every state leaf has a leading (batch * beam) axis
        return jax.tree_util.tree_map(lambda a: jnp.take(a, flat_idx, axis=0), state)

    neg = jnp.float32(-1e30)
    scores = jnp.where(jnp.arange(kb) == 0, 0.0, neg)[None].repeat(b, 0)  # (B, K)
    seqs = jnp.full((b, kb, n), pad, jnp.int32)
    done = jnp.zeros((b, kb), bool)
    lengths = jnp.zeros((b, kb), jnp.int32)
    pad_row = jnp.where(jnp.arange(v) == pad, 0.0, neg)  # finished beams: pad at no cost

    def select(carry, i):
        logp, state, scores, seqs, done, lengths = carry
        lp = logp.reshape(b, kb, v)
        lp = jnp.where(done[..., None], pad_row, lp)
        cand = (scores[..., None] + lp).reshape(b, kb * v)
        top_scores, top_idx = jax.lax.top_k(cand, kb)
        beam, tok = top_idx // v, (top_idx % v).astype(jnp.int32)
        seqs = jnp.take_along_axis(seqs, beam[..., None], axis=1)
        seqs = jax.lax.dynamic_update_slice(seqs, tok[..., None], (0, 0, i))
        prev_done = jnp.take_along_axis(done, beam, axis=1)
        lengths = jnp.take_along_axis(lengths, beam, axis=1) + (~prev_done).astype(jnp.int32)
        done = prev_done | (tok == eos) if eos is not None else prev_done
        flat = (jnp.arange(b)[:, None] * kb + beam).reshape(-1)
        return (logp, reorder(state, flat), top_scores, seqs, done, lengths), tok

    def body(carry, i):
        carry, tok = select(carry, i)
        logp, state, *rest = carry
        logp, state = step(state, tok.reshape(-1), i)
        return (logp, state, *rest), None

    carry = (logp, state, scores, seqs, done, lengths)
    if n > 1:
        carry, _ = jax.lax.scan(body, carry, jnp.arange(n - 1))
    carry, _ = select(carry, n - 1)
    _, _, scores, seqs, _, lengths = carry
    final = scores / jnp.maximum(lengths, 1).astype(jnp.float32) ** length_penalty
    best = jnp.argmax(final, axis=1)
    new = jnp.take_along_axis(seqs, best[:, None, None], axis=1)[:, 0]
    return jnp.concatenate([input_ids, new], axis=1)


def sequence_log_prob(
    model: GPT2LMHeadModel, params: Any, sequences: jax.Array, prompt_length: int,
    attention_mask: jax.Array | None = None,
) -> jax.Array:  # fmt: skip
    """Sum of log-probabilities of ``sequences[:, prompt_length:]`` given the prompt.

    Args:
        model: the GPT-2 module.
        params: its parameters.
        sequences: ``(B, T)`` ids (prompt followed by continuation).
        prompt_length: number of leading prompt tokens (``>= 1``).
        attention_mask: ``(B, T)`` mask (0 for left padding).

    Returns:
        ``(B,)`` float32 log-probabilities.
    """
    if prompt_length < 1:
        raise ValueError(f"prompt_length must be >= 1, got {prompt_length}")
    logits, _ = model.apply({"params": params}, sequences, attention_mask=attention_mask)
    logp = jax.nn.log_softmax(logits[:, prompt_length - 1 : -1])
    tgt = sequences[:, prompt_length:]
    return jnp.sum(jnp.take_along_axis(logp, tgt[..., None], axis=-1)[..., 0], axis=-1)


def left_pad(
    sequences: Sequence[Sequence[int]], pad_token_id: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Left-pad token id lists into ``(input_ids, attention_mask)`` arrays for batched decoding.

    Examples:
        >>> ids, mask = left_pad([[5, 6, 7], [8]], pad_token_id=0)
        >>> ids.tolist(), mask.tolist()
        ([[5, 6, 7], [0, 0, 8]], [[1, 1, 1], [0, 0, 1]])
    """
    if not sequences or any(len(s) == 0 for s in sequences):
        raise ValueError("sequences must be a non-empty list of non-empty token id lists")
    width = max(len(s) for s in sequences)
    ids = np.full((len(sequences), width), pad_token_id, np.int32)
    mask = np.zeros((len(sequences), width), np.int32)
    for i, s in enumerate(sequences):
        ids[i, width - len(s) :] = s
        mask[i, width - len(s) :] = 1
    return ids, mask
