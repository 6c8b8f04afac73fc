"""Group-fair GPT-2 sampling: EquiLM, R-EquiLM, EquizeroLM and R-EquizeroLM.

All methods run the library's sequence engine (:func:`equijax.decoding.decode`) on GPT-2's
adapter (:func:`equijax.models.gpt2.sequence_model`): the ``|G|`` transformed prompts ``g·x``
decode in lock-step with GPT-2's KV cache, ``jax.vmap``-ed over the group and batched over
samples, inside one jitted program; this module adds GPT-2's validation, the demographic group
and the host scorer. ``G`` is a permutation group of token ids (see :mod:`equijax.nlg.groups`); it
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
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from equijax._src import sequence as engine
from equijax._src.frames import lexicographic_frame
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
#: R-EquizeroLM); a subset of :data:`equijax.decoding.METHODS`.
METHODS = ("pretrained", "equitune", "r_equitune", "equizero", "r_equizero")
#: Spellings of earlier versions and the method each now names (accepted with a FutureWarning);
#: the part of the library's one table (:data:`equijax.decoding.RENAMED`) that names these.
RENAMED = {old: new for old, new in engine.RENAMED.items() if new in METHODS}

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


#: The frame ``c(x) = argmin_h lex(h⁻¹·x)`` (:func:`equijax.frames.lexicographic_frame`).
canonical_frame = lexicographic_frame


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
    mean = engine.combine(branch_logits, group)
    if general_mask is not None:
        mean = jnp.where(general_mask, branch_logits[0], mean)
    return mean


@functools.partial(
    jax.jit,
    static_argnums=(0,),
    static_argnames=("group", "method", "n", "m", "top_k", "score_fn"),
)
def _program(sm, params, ids, mask, key, temperature, keep, *, group, method, n, m, top_k,
             score_fn):  # fmt: skip
    proxy: Any = "neg_max_probability"
    if score_fn is not None:
        b = ids.shape[0]

        def proxy(p: engine.Proposal) -> jax.Array:  # the scorer's text score, higher is better
            shape = jax.ShapeDtypeStruct((group.order, b), jnp.float32)
            return -jax.pure_callback(score_fn, shape, p.prompt, p.mask, p.tokens, p.n_valid)

    out = engine.decode(
        sm, params, ids, mask, method=method, group=group, max_new_tokens=n, key=key,
        temperature=temperature, top_k=top_k, average="logit",
        keep_identity=keep if method.startswith("r_") else None, proxy=proxy,
        chunk_tokens=m if method in ("equizero", "r_equizero") else None,
    )  # fmt: skip
    return out.tokens, out.frame, out.branch


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
    """:func:`equijax.decoding.canonical_method` restricted to the sampling :data:`METHODS`
    (old spellings such as ``"equilm"`` give a :class:`FutureWarning`).

    Examples:
      >>> canonical_method("r_equizero")
      'r_equizero'
    """
    return engine.canonical_method(method, methods=METHODS, stacklevel=stacklevel + 1)


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
    if equizero and (score_fn is None or not callable(score_fn)):
        raise ValueError(
            f"method={method!r} needs score_fn= (e.g. equijax.nlg.scorers.text_score_fn(scorer, "
            "tokenizer))."
        )
    new, frame, branches = _program(
        gpt2.sequence_model(model, ids.shape[1] + room), params, ids_j, jnp.asarray(mask), key,
        jnp.float32(temperature), jnp.asarray(general), group=perm, method=method,
        n=max_new_tokens, m=beam_tokens, top_k=top_k, score_fn=score_fn if equizero else None,
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
