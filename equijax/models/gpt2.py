"""GPT-2 (Hugging Face ``gpt2`` family) in Flax linen: LM head, KV cache and jitted generation.

A port of ``transformers``' ``GPT2LMHeadModel`` that loads HF checkpoints
(``model.safetensors``, sharded safetensors or ``flax_model.msgpack``; never pickles) and
exposes a pure, functional decoding API so that other code (e.g. EquiLM, which decodes the |G|
transformed contexts of a prompt in lock-step) can build on it.

Everything takes the (static, hashable) linen module ``model`` and the parameter pytree
``params`` explicitly, so ``jax.jit``, ``jax.grad`` and ``jax.vmap`` (e.g. over a group axis)
work without baking weights into the compiled program:

* ``logits = model.apply({"params": params}, input_ids, attention_mask=mask)[0]`` -- full
  forward pass; ``(B, T, V)`` float32 logits. Position ids default to
  ``cumsum(attention_mask) - 1`` so **left-padded** batches work.
* ``cache = init_cache(model, batch_size, max_length)`` -- an empty :class:`KVCache`
  (a pytree whose every leaf has a leading batch axis: keys/values ``(B, L, S, H, Dh)``, slot
  mask ``(B, S)``, write ``index`` and next ``position`` per row), so beams are reordered with
  ``jax.tree_util.tree_map(lambda a: a[idx], cache)``.
* ``logits, cache = prefill(model, params, input_ids, attention_mask, max_length=S)`` -- run
  the prompt (``(B, T)``, left-padded) and fill a fresh cache with room for ``S`` tokens.
* ``next_logits, cache = decode_step(model, params, cache, token_ids)`` -- feed one token per
  row (``(B,)``) and get the next-token logits ``(B, V)``. :func:`step_fn` wraps it as
  ``step(params, cache, token) -> (cache, logits)`` for :mod:`equijax`'s generic decoders.
* ``select_token(key, logits, strategy=..., top_k=..., top_p=..., temperature=...)`` -- greedy
  or top-k / top-p sampling of one token per row.
* ``generate(model, params, input_ids, key=..., max_new_tokens=..., strategy="greedy" |
  "sample" | "beam", ...)`` -- jitted decoding loop (``lax.scan``) returning
  ``(B, T + max_new_tokens)`` sequences; ``use_cache=False`` recomputes the full prefix each step
  (reference path, same tokens).

EquiLM-style decoding is one compiled program: ``jax.vmap`` ``prefill``/``decode_step`` (or
``generate``) over a leading group axis of transformed prompts.

Examples:
    >>> import jax, jax.numpy as jnp
    >>> cfg = GPT2Config(vocab_size=50, n_positions=16, n_embd=8, n_layer=1, n_head=2)
    >>> model = GPT2LMHeadModel(cfg)
    >>> ids = jnp.array([[1, 2, 3]])
    >>> params = jax.jit(model.init)(jax.random.key(0), ids)["params"]
    >>> logits, cache = prefill(model, params, ids, max_length=8)
    >>> next_logits, cache = decode_step(model, params, cache, jnp.argmax(logits[:, -1], -1))
    >>> next_logits.shape, cache.index.tolist()
    ((1, 50), [4])
    >>> out = generate(model, params, ids, max_new_tokens=4)
    >>> out.shape
    (1, 7)
"""

from __future__ import annotations

import dataclasses
import functools
import os
import pathlib
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from equijax.models import _convert, _hub
from equijax.models._activations import ACTIVATIONS, check_activation

__all__ = [
    "GPT2Config",
    "GPT2LMHeadModel",
    "KVCache",
    "convert_state_dict",
    "decode_step",
    "from_pretrained",
    "generate",
    "init_cache",
    "left_pad",
    "load_tokenizer",
    "prefill",
    "select_token",
    "sequence_log_prob",
    "step_fn",
    "top_k_threshold",
]

_STRATEGIES = ("greedy", "sample", "beam")


@dataclasses.dataclass(frozen=True)
class GPT2Config:
    """Static (hashable) GPT-2 hyper-parameters, mirroring HF ``GPT2Config``.

    Attributes:
        vocab_size: number of tokens (50257 for ``gpt2``).
        n_positions: size of the learned position table (maximum sequence length).
        n_embd: hidden size.
        n_layer: number of transformer blocks.
        n_head: attention heads (must divide ``n_embd``).
        n_inner: MLP width (``None`` means ``4 * n_embd``).
        activation_function: MLP activation (``"gelu_new"`` = tanh-approximated GELU).
        layer_norm_epsilon: LayerNorm epsilon.
        scale_attn_weights: divide attention scores by ``sqrt(head_dim)``.
        scale_attn_by_inverse_layer_idx: also divide by ``layer_idx + 1``.
        tie_word_embeddings: LM head shares the token embedding matrix.
        bos_token_id: beginning-of-sequence token.
        eos_token_id: end-of-sequence token.
    """

    vocab_size: int = 50257
    n_positions: int = 1024
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    n_inner: int | None = None
    activation_function: str = "gelu_new"
    layer_norm_epsilon: float = 1e-5
    scale_attn_weights: bool = True
    scale_attn_by_inverse_layer_idx: bool = False
    tie_word_embeddings: bool = True
    bos_token_id: int | None = 50256
    eos_token_id: int | None = 50256

    def __post_init__(self):
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} must be divisible by n_head={self.n_head}")
        check_activation(self.activation_function, "activation_function")
        for name in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @classmethod
    def from_hf(cls, config: Mapping[str, Any]) -> GPT2Config:
        """Build from a HF ``config.json`` dict (unknown keys are ignored).

        Raises:
            ValueError: for options this port does not implement (cross-attention).
        """
        if config.get("add_cross_attention"):
            raise ValueError("add_cross_attention=True (encoder-decoder GPT-2) is not supported")
        kwargs = {f.name: config[f.name] for f in dataclasses.fields(cls) if f.name in config}
        for name in ("bos_token_id", "eos_token_id"):
            if isinstance(kwargs.get(name), list):  # some configs list several ids
                kwargs[name] = kwargs[name][0] if kwargs[name] else None
        return cls(**kwargs)

    @property
    def head_dim(self) -> int:
        """Per-head width ``n_embd // n_head``."""
        return self.n_embd // self.n_head


@flax.struct.dataclass
class KVCache:
    """Functional key/value cache (a pytree; every leaf has a leading batch axis ``B``).

    Attributes:
        k: ``(B, n_layer, S, n_head, head_dim)`` cached keys.
        v: ``(B, n_layer, S, n_head, head_dim)`` cached values.
        mask: ``(B, S)`` bool, which slots hold real (non-padding) tokens.
        index: ``(B,)`` int32, the next slot to write; equal for every row (prompts are
            left-padded), row 0's value is used.
        position: ``(B,)`` int32, the next position id of each row.
    """

    k: jax.Array
    v: jax.Array
    mask: jax.Array
    index: jax.Array
    position: jax.Array

    @property
    def max_length(self) -> int:
        """Number of slots ``S``."""
        return self.k.shape[2]


class _Attention(nn.Module):
    config: GPT2Config
    layer_idx: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, allowed, k_cache, v_cache, index):
        # k_cache / v_cache: the whole (B, n_layer, S, H, Dh) cache (or None); this layer writes
        # its slice in place and returns the updated arrays.
        cfg = self.config
        kw = {"dtype": self.dtype, "param_dtype": self.param_dtype}
        b, t, _ = x.shape
        qkv = nn.Dense(3 * cfg.n_embd, name="c_attn", **kw)(x)
        q, k, v = jnp.split(qkv, 3, axis=-1)
        q, k, v = (a.reshape(b, t, cfg.n_head, cfg.head_dim) for a in (q, k, v))
        if k_cache is not None:
            start = (0, self.layer_idx, index, 0, 0)
            k_cache = jax.lax.dynamic_update_slice(k_cache, k[:, None].astype(k_cache.dtype), start)
            v_cache = jax.lax.dynamic_update_slice(v_cache, v[:, None].astype(v_cache.dtype), start)
            k, v = k_cache[:, self.layer_idx], v_cache[:, self.layer_idx]
        scale = 1.0
        if cfg.scale_attn_weights:
            scale /= float(cfg.head_dim) ** 0.5
        if cfg.scale_attn_by_inverse_layer_idx:
            scale /= float(self.layer_idx + 1)
        scores = jnp.einsum("bthd,bshd->bhts", q, k.astype(q.dtype)).astype(jnp.float32) * scale
        scores = jnp.where(allowed[:, None], scores, jnp.finfo(jnp.float32).min)
        weights = jax.nn.softmax(scores, axis=-1).astype(self.dtype)
        out = jnp.einsum("bhts,bshd->bthd", weights, v.astype(self.dtype))
        out = nn.Dense(cfg.n_embd, name="c_proj", **kw)(out.reshape(b, t, cfg.n_embd))
        return out, k_cache, v_cache


class _Block(nn.Module):
    config: GPT2Config
    layer_idx: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, allowed, k_cache, v_cache, index):
        cfg = self.config
        kw = {"dtype": self.dtype, "param_dtype": self.param_dtype}
        ln = functools.partial(nn.LayerNorm, epsilon=cfg.layer_norm_epsilon, **kw)
        attn = _Attention(cfg, self.layer_idx, name="attn", **kw)
        a, k, v = attn(ln(name="ln_1")(x), allowed, k_cache, v_cache, index)
        x = x + a
        return x + _MLP(cfg, name="mlp", **kw)(ln(name="ln_2")(x)), k, v


class _MLP(nn.Module):
    config: GPT2Config
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        cfg = self.config
        kw = {"dtype": self.dtype, "param_dtype": self.param_dtype}
        h = nn.Dense(cfg.n_inner or 4 * cfg.n_embd, name="c_fc", **kw)(x)
        return nn.Dense(cfg.n_embd, name="c_proj", **kw)(ACTIVATIONS[cfg.activation_function](h))


class GPT2LMHeadModel(nn.Module):
    """HF-compatible GPT-2 language model.

    Attributes:
        config: a :class:`GPT2Config`.
        dtype: computation dtype (logits are always returned in float32).
        param_dtype: parameter dtype used by ``init``.
    """

    config: GPT2Config
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self,
        input_ids: jax.Array,
        *,
        attention_mask: jax.Array | None = None,
        position_ids: jax.Array | None = None,
        cache: KVCache | None = None,
    ) -> tuple[jax.Array, KVCache | None]:
        """Forward pass, optionally reading and extending a KV cache.

        Args:
            input_ids: ``(B, T)`` int token ids in ``[0, vocab_size)``.
            attention_mask: ``(B, T)`` 1 for real tokens, 0 for (left) padding; default all 1.
            position_ids: ``(B, T)`` position ids; default ``cache.position + cumsum(mask) - 1``
                (``cumsum(mask) - 1`` without a cache), clipped at 0.
            cache: a :class:`KVCache` with room for ``T`` more tokens, or ``None``.

        Returns:
            ``(logits, cache)``: ``(B, T, vocab_size)`` float32 logits and the updated cache
            (``None`` when no cache was given).

        Raises:
            ValueError: for a wrong shape / dtype, ids outside the vocabulary (checked when the
                ids are concrete), or positions beyond ``n_positions``.
        """
        cfg = self.config
        _check_ids(input_ids, cfg, extra=0)
        kw = {"dtype": self.dtype, "param_dtype": self.param_dtype}
        b, t = input_ids.shape
        mask = (
            jnp.ones((b, t), bool) if attention_mask is None else jnp.asarray(attention_mask) != 0
        )
        if mask.shape != (b, t):
            raise ValueError(
                f"attention_mask must have the shape of input_ids {(b, t)}, got {mask.shape}"
            )
        if cache is None:
            start = jnp.zeros((b,), jnp.int32)
            index = jnp.zeros((), jnp.int32)
            slot_mask = mask
            s = t
        else:
            if cache.k.shape[0] != b:
                raise ValueError(f"cache batch size {cache.k.shape[0]} != input batch size {b}")
            start, index, s = cache.position, cache.index[0], cache.max_length
            if t > s:
                raise ValueError(f"{t} new tokens do not fit a cache of {s} slots")
            slot_mask = jax.lax.dynamic_update_slice(cache.mask, mask, (0, index))
        if position_ids is None:
            position_ids = start[:, None] + jnp.cumsum(mask, axis=1, dtype=jnp.int32) - 1
            position_ids = jnp.maximum(position_ids, 0)
        # query i (slot index + i) may attend key slot j iff j <= index + i and slot j is real
        q_slots = index + jnp.arange(t)
        allowed = (jnp.arange(s)[None, :] <= q_slots[:, None])[None] & slot_mask[:, None, :]

        wte = nn.Embed(cfg.vocab_size, cfg.n_embd, name="wte", **kw)
        wpe = nn.Embed(cfg.n_positions, cfg.n_embd, name="wpe", **kw)
        x = wte(input_ids) + wpe(position_ids)
        k_all = None if cache is None else cache.k
        v_all = None if cache is None else cache.v
        for i in range(cfg.n_layer):
            x, k_all, v_all = _Block(cfg, i, name=f"h_{i}", **kw)(x, allowed, k_all, v_all, index)
        x = nn.LayerNorm(epsilon=cfg.layer_norm_epsilon, name="ln_f", **kw)(x)
        if cfg.tie_word_embeddings:
            logits = wte.attend(x)
        else:
            logits = nn.Dense(cfg.vocab_size, use_bias=False, name="lm_head", **kw)(x)
        logits = logits.astype(jnp.float32)
        if cache is None:
            return logits, None
        new_cache = KVCache(
            k=k_all,
            v=v_all,
            mask=slot_mask,
            index=jnp.full((b,), index + t, jnp.int32),
            position=start + jnp.sum(mask, axis=1, dtype=jnp.int32),
        )
        return logits, new_cache


def _is_concrete(x: Any) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _check_ids(input_ids: Any, cfg: GPT2Config, *, extra: int) -> None:
    shape = np.shape(input_ids)
    if len(shape) != 2:
        raise ValueError(f"input_ids must have shape (batch, length), got shape {shape}")
    dtype = input_ids.dtype if hasattr(input_ids, "dtype") else np.asarray(input_ids).dtype
    if not jnp.issubdtype(dtype, jnp.integer):
        raise ValueError(f"input_ids must be integers, got dtype {dtype}")
    if shape[1] + extra > cfg.n_positions:
        what = f"prompt length {shape[1]}" + (f" + {extra} new tokens" if extra else "")
        raise ValueError(
            f"{what} exceeds the position table (n_positions={cfg.n_positions}); shorten the "
            "prompt or generate fewer tokens"
        )
    if _is_concrete(input_ids) and shape[0] * shape[1] > 0:
        arr = np.asarray(input_ids)
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi >= cfg.vocab_size:
            raise ValueError(
                f"input_ids must lie in [0, vocab_size={cfg.vocab_size}), got values in "
                f"[{lo}, {hi}]; was the prompt tokenised with a different vocabulary?"
            )


def init_cache(
    model: GPT2LMHeadModel, batch_size: int, max_length: int, dtype: Any = None
) -> KVCache:
    """An empty KV cache with ``max_length`` slots per row.

    Args:
        model: the GPT-2 module (for its config).
        batch_size: rows ``B``.
        max_length: slots ``S`` (prompt length + tokens to generate).
        dtype: cache dtype (default: the model's computation dtype).

    Returns:
        A :class:`KVCache` with zero keys/values, an all-False mask, ``index = 0``.

    Examples:
        >>> m = GPT2LMHeadModel(GPT2Config(vocab_size=10, n_positions=8, n_embd=4, n_layer=2,
        ...                                n_head=2))
        >>> init_cache(m, 3, 5).k.shape
        (3, 2, 5, 2, 2)
    """
    cfg = model.config
    if batch_size < 1 or max_length < 1:
        raise ValueError(
            f"batch_size and max_length must be >= 1, got {batch_size} and {max_length}"
        )
    shape = (batch_size, cfg.n_layer, max_length, cfg.n_head, cfg.head_dim)
    dt = dtype or model.dtype
    return KVCache(
        k=jnp.zeros(shape, dt),
        v=jnp.zeros(shape, dt),
        mask=jnp.zeros((batch_size, max_length), bool),
        index=jnp.zeros((batch_size,), jnp.int32),
        position=jnp.zeros((batch_size,), jnp.int32),
    )


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
    logits = _filter_logits(logits.astype(jnp.float32), top_k, top_p, temperature)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


def top_k_threshold(logits: jax.Array, k: int, *, chunk: int = 32) -> jax.Array:
    """The ``k``-th largest value of each row, ``jax.lax.top_k(logits, k)[0][..., -1]``, exactly.

    Two levels instead of one vocabulary-wide top-k (which XLA:CPU runs as a sort, about 0.9 s
    of CPU for 64 × 50,257 logits): the row is cut into chunks of ``chunk`` values, the ``k``
    chunks with the largest maxima are kept, and the ``k``-th largest of their ``k · chunk``
    values is the answer. It is exact: every chunk holding one of the row's ``k`` largest values
    either is among the kept chunks or has a maximum no larger than each kept chunk's, so the
    kept chunks hold at least ``k`` values ``>=`` the true ``k``-th largest, and never a larger
    ``k``-th one (about 30× faster at 64 × 50,257, k = 40).

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


def _filter_logits(logits, top_k, top_p, temperature):
    v = logits.shape[-1]
    logits = logits / temperature
    neg = jnp.finfo(logits.dtype).min
    if top_k is not None and top_k < v:
        kth = top_k_threshold(logits, top_k)[..., None]
        logits = jnp.where(logits < kth, neg, logits)
    if top_p is not None:
        sorted_logits = jnp.sort(logits, axis=-1)[..., ::-1]
        probs = jax.nn.softmax(sorted_logits, axis=-1)
        before = jnp.cumsum(probs, axis=-1) - probs  # mass of strictly more likely tokens
        keep = before < top_p  # always keeps the most likely token
        threshold = jnp.min(jnp.where(keep, sorted_logits, jnp.inf), axis=-1, keepdims=True)
        logits = jnp.where(logits < threshold, neg, logits)
    return logits


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


_PT_BLOCK = re.compile(r"^h\.(\d+)\.(.*)$")
_IGNORED = re.compile(r"^h\.\d+\.attn\.(bias|masked_bias)$")  # causal-mask buffers


def convert_state_dict(
    state_dict: Mapping[str, np.ndarray], config: GPT2Config
) -> dict[tuple[str, ...], np.ndarray]:
    """Map HF GPT-2 weight names/layouts (PyTorch or HF-Flax) to this port's param paths.

    ``transformer.`` prefixes are stripped; the causal-mask buffers ``attn.bias`` /
    ``attn.masked_bias`` are dropped, and so is ``lm_head.weight`` when the embeddings are tied.
    PyTorch ``Conv1D`` weights are already ``(in, out)``; HF-Flax ``kernel`` s are ``(out, in)`` and
    are transposed.

    Layout rules are the shared ones of :func:`equijax.models._convert.convert`.

    Returns:
        dict from param paths to arrays; unknown names are kept under their own name so that
        :func:`~equijax.models._hub.assign` reports them.
    """
    return _convert.convert(
        state_dict, functools.partial(_gpt2_rule, tied=config.tie_word_embeddings),
        collections=False,
    )  # fmt: skip


def _gpt2_rule(name: str, *, tied: bool) -> _convert.Target | str | None:
    """HF GPT-2 tensor name -> owning Flax module (see :mod:`equijax.models._convert`)."""
    key = name.removeprefix("transformer.")
    if _IGNORED.match(key):
        return _convert.DROP
    if key in ("lm_head.weight", "lm_head.kernel"):
        return _convert.DROP if tied else _convert.Target("linear", ("lm_head",))
    m = _PT_BLOCK.match(key)
    parts = (f"h_{m.group(1)}", *m.group(2).split(".")) if m else tuple(key.split("."))
    mods = parts[:-1]
    if not mods or (not m and parts[0] not in ("wte", "wpe", "ln_f")):
        return None
    if mods in (("wte",), ("wpe",)):
        return _convert.Target("embedding", mods)
    if mods[-1].startswith("ln_"):
        return _convert.Target("norm", mods)
    return _convert.Target("conv1d", mods)  # HF Conv1D: (in, out); HF-Flax kernel: (out, in)


def from_pretrained(
    name_or_path: str | os.PathLike,
    *,
    dtype: Any = None,
    compute_dtype: Any = None,
) -> tuple[GPT2LMHeadModel, Any]:
    """Load an HF GPT-2 checkpoint (hub id such as ``"gpt2"`` or a local directory).

    Args:
        name_or_path: hub id (``gpt2``, ``gpt2-medium``, ``distilgpt2``...) or a directory
            written by ``save_pretrained``.
        dtype: parameter and computation dtype (``None``: float32), as for every port (see
            :mod:`equijax.models`).
        compute_dtype: computation dtype if it should differ from ``dtype``; logits are float32.

    Returns:
        ``(model, params)``; ``model.apply({"params": params}, ids)`` or the step API above.

    Raises:
        OSError: if the id can be neither found locally nor downloaded.
        FileNotFoundError: if the directory holds no supported checkpoint file.
        CheckpointMismatchError: if the weights do not fit the config.
    """
    directory = _hub.resolve_pretrained(
        name_or_path,
        allow_patterns=["*.json", "*.safetensors", "*.msgpack", "merges.txt", "vocab.json"],
    )
    dtype = jnp.float32 if dtype is None else dtype
    config = GPT2Config.from_hf(_hub.read_config(directory))
    model = GPT2LMHeadModel(config, dtype=compute_dtype or dtype, param_dtype=dtype)
    state_dict = _hub.read_state_dict(directory)
    ids = jax.ShapeDtypeStruct((1, 1), jnp.int32)
    template = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), ids)["params"]
    params = _hub.assign(
        template, convert_state_dict(state_dict, config), dtype=dtype, context=str(directory)
    )
    return model, params


def load_tokenizer(name_or_path: str | os.PathLike):
    """Load the GPT-2 BPE tokenizer with ``transformers`` (lazy import).

    Accepts a hub id, a directory with ``vocab.json`` + ``merges.txt`` (or ``tokenizer.json``),
    or a directory with the original OpenAI files ``encoder.json`` + ``vocab.bpe`` (copied under
    the HF names into a temporary directory: constructing ``GPT2Tokenizer(vocab_file=...)``
    directly silently mis-tokenises in transformers 5).

    Returns:
        tokenizer (transformers.PreTrainedTokenizerFast): a fast tokenizer; ``pad_token`` is set
            to ``eos_token`` when missing.
    """
    try:
        import transformers
    except ImportError as err:  # pragma: no cover
        raise ImportError("load_tokenizer needs transformers: pip install transformers") from err
    directory = _hub.resolve_pretrained(
        name_or_path,
        allow_patterns=["*.json", "merges.txt", "vocab.bpe", "encoder.json", "tokenizer*"],
    )
    has_hf = (directory / "tokenizer.json").is_file() or (
        (directory / "vocab.json").is_file() and (directory / "merges.txt").is_file()
    )
    if has_hf:
        tok = transformers.AutoTokenizer.from_pretrained(str(directory))
    elif (directory / "encoder.json").is_file() and (directory / "vocab.bpe").is_file():
        with tempfile.TemporaryDirectory() as tmp:
            shutil.copy(directory / "encoder.json", pathlib.Path(tmp, "vocab.json"))
            shutil.copy(directory / "vocab.bpe", pathlib.Path(tmp, "merges.txt"))
            tok = transformers.GPT2TokenizerFast.from_pretrained(tmp)
    else:
        raise FileNotFoundError(
            f"no GPT-2 tokenizer files in {str(directory)!r}: expected tokenizer.json, "
            "vocab.json + merges.txt, or encoder.json + vocab.bpe"
        )
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok
