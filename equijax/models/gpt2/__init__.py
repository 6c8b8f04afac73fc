"""GPT-2 (Hugging Face ``gpt2`` family) in Flax linen: LM head, KV cache and jitted generation.

A port of ``transformers``' ``GPT2LMHeadModel`` that loads HF checkpoints
(``model.safetensors``, sharded safetensors or ``flax_model.msgpack``; never pickles) and
exposes a pure, functional decoding API so that other code (e.g. EquiLM, which decodes the |G|
transformed contexts of a prompt in lock-step) can build on it.

``model, variables = from_pretrained("gpt2")`` follows the contract of every family
(:mod:`equijax.models`): ``variables = {"params": params}``. Everything below takes the
(static, hashable) linen module ``model`` and the parameter pytree ``params =
variables["params"]`` explicitly, so ``jax.jit``, ``jax.grad`` and ``jax.vmap`` (e.g. over a
group axis) work without baking weights into the compiled program:

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

The package reads like the family it ports: :mod:`~equijax.models.gpt2.model` (config, KV
cache, module), :mod:`~equijax.models.gpt2.generation` (the decoding functions above),
:mod:`~equijax.models.gpt2.convert` (the HF name-mapping rule and :func:`from_pretrained`) and
:mod:`~equijax.models.gpt2.tokenizer` (:func:`load_tokenizer`); every name is importable from
``equijax.models.gpt2``.

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

from equijax.models.gpt2 import convert, generation, model, tokenizer
from equijax.models.gpt2.convert import *  # noqa: F403
from equijax.models.gpt2.generation import *  # noqa: F403
from equijax.models.gpt2.model import *  # noqa: F403
from equijax.models.gpt2.tokenizer import *  # noqa: F403

__all__ = [*model.__all__, *generation.__all__, *convert.__all__, *tokenizer.__all__]
