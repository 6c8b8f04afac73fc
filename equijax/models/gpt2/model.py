"""GPT-2 modules: the static config, the functional KV cache and the linen LM head model.

A port of ``transformers``' ``GPT2LMHeadModel``; see :mod:`equijax.models.gpt2` for the
decoding API built on it.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from equijax.models._activations import ACTIVATIONS, check_activation
from equijax.models._ids import check_id_range

__all__ = ["GPT2Config", "GPT2LMHeadModel", "KVCache", "init_cache"]


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


class _Part(nn.Module):
    """The fields every GPT-2 sub-module shares: config, block index and the two dtypes."""

    config: GPT2Config
    layer_idx: int = 0
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @property
    def kw(self) -> dict[str, Any]:
        """``dtype`` / ``param_dtype`` keyword arguments for the layers it builds."""
        return {"dtype": self.dtype, "param_dtype": self.param_dtype}


class _Attention(_Part):
    @nn.compact
    def __call__(self, x, allowed, k_cache, v_cache, index):
        # k_cache / v_cache: the whole (B, n_layer, S, H, Dh) cache (or None); this layer writes
        # its slice in place and returns the updated arrays.
        cfg, kw = self.config, self.kw
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


class _Block(_Part):
    @nn.compact
    def __call__(self, x, allowed, k_cache, v_cache, index):
        cfg, kw = self.config, self.kw
        ln = functools.partial(nn.LayerNorm, epsilon=cfg.layer_norm_epsilon, **kw)
        attn = _Attention(cfg, self.layer_idx, name="attn", **kw)
        a, k, v = attn(ln(name="ln_1")(x), allowed, k_cache, v_cache, index)
        x = x + a
        return x + _MLP(cfg, name="mlp", **kw)(ln(name="ln_2")(x)), k, v


class _MLP(_Part):
    @nn.compact
    def __call__(self, x):
        cfg, kw = self.config, self.kw
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
    check_id_range(
        input_ids, cfg.vocab_size, name="input_ids",
        hint="was the prompt tokenised with a different vocabulary?",
    )  # fmt: skip


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
