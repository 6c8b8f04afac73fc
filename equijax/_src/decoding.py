"""Greedy decoding, plain and group-equivariant, over any autoregressive step function.

The model is given as a step function ``step(params, state, token) -> (state, logits)``: ``state``
is any pytree whose leaves have a leading batch axis ``B``, ``token`` is ``(B,)`` int ids and
``logits`` is ``(B, V)``. A finite group acts on inputs (the caller encodes ``g·x`` for every
``g``; see :func:`branch_states`) and on the output vocabulary through ``group.act(g, ids)`` and
``group.act_axis(g, logits, axis=-1)`` (e.g. a :class:`~equijax.groups.PermutationGroup`). The
group axis is ``jax.vmap``-ed; the batch axis lives inside the step function. Every decoder is one
jitted ``lax.scan`` over ``max_len`` steps for the whole batch.

Methods of :func:`equivariant_greedy_decode` (``y_t`` is the emitted token, ``p_g`` the next-token
distribution of branch ``g``, which is fed its own transformed history ``g·y_{<t}``):

* ``"equitune"`` (step-wise, the principled equitune for autoregressive decoding):
  ``y_t = argmax_v 1/|G| Σ_g [g⁻¹ p_g]_v``. ``average="prob"`` (default) averages probabilities,
  i.e. eq. (1) of Basu et al. applied to the model's output distribution (a mixture, itself a
  distribution); ``average="logprob"`` averages log-probabilities (a normalised-up-to-a-constant
  product of experts; what the authors' SCAN code does). Both are equivariant.
* ``"equitune_sequence"``: the whole-sequence variant: every branch decodes ``g·x`` greedily on
  its own, then ``y_t = argmax_v`` of the average of the mapped-back per-step distributions (cut
  at the first EOS). The paper's (authors') semantics is ``average="logprob"`` with
  ``after_eos="zero"``: the mean of the branches' log-softmax rows, where a branch's rows after
  its own EOS are 0 (the reference code's zero-initialised buffer). ``after_eos="model"`` keeps
  the rows the model produces after EOS instead; ``average="prob"`` is the probability mixture.
* ``"lambda_equitune"``: step-wise like ``"equitune"`` but weighted: ``Σ_g λ_g [g⁻¹ p_g] / Σ_g λ_g``
  with given positive per-branch weights ``λ`` (e.g. ``softmax_g`` of a λ network's logits on
  the branch encodings, which makes the weights move with the input).
* ``"equizero"``: one ``g`` per sequence: every branch decodes greedily on its own, a proxy loss
  of the decoded branch is computed (``"neg_max_probability"``: minus the mean top-1
  probability over the emitted tokens incl. EOS; ``"entropy"``: the mean entropy of the step
  distributions, computed from probabilities), ``g* = argmin_g`` and the output is
  ``g*⁻¹ · y^{(g*)}``.

Exact equivariance (``decode(g·x) == g·decode(x)``, token for token) needs the reduction over the
group to give bit-identical results when its terms are permuted. Floating-point addition is not
associative, so for ``|G| > 2`` summing the same terms in another order can change the last bit
and flip an argmax between near-tied tokens. The group reductions here therefore sort the terms
along the group axis before summing: the sum of a sorted list depends only on the multiset of
terms. (For ``|G| = 2`` a sum is already order-independent since ``a + b == b + a``.) The
``equizero`` argmin ties are broken by the lowest proxy value's first index, which is exact
unless two branches have bit-identical proxies but different outputs — possible only when
``g·x == x`` for some ``g`` whose action changes the decoded tokens, a case in which no
deterministic selection can be equivariant.

The tokens ``start_id``, ``eos_id`` and ``pad_id`` must be fixed by every group element.

All reductions over the group go through the engine (:mod:`equijax._src.orbit`): the sorted sum
is :func:`~equijax._src.orbit.group_sum` with ``exact=True``, λ weights are normalised by
:func:`~equijax._src.orbit.group_mean`, and equizero's argmin follows the engine's NaN rule (a
NaN proxy ranks last) with the lowest index among exact ties.

Examples:
  >>> import jax, jax.numpy as jnp
  >>> from equijax._src.groups import permutation
  >>> G = permutation(5, [(3, 4)])             # swap tokens 3 and 4; 0 pad, 1 start, 2 eos
  >>> W = jax.random.normal(jax.random.key(0), (5, 5))
  >>> def step(params, state, token):         # a toy "language model": next logits from token
  ...     return state, params[token] + state
  >>> x = jnp.array([[0.0, 0.0, -1.0, 2.0, 0.0]])  # per-example bias = the "input"
  >>> states = branch_states(lambda p, x: x, W, x, G.act_axis)
  >>> out = equivariant_greedy_decode(step, W, states, G, method="equitune", max_len=4,
  ...                                 start_id=1, eos_id=2)
  >>> out_g = equivariant_greedy_decode(step, W, branch_states(lambda p, x: x, W,
  ...     G.act_axis(1, x), G.act_axis), G, method="equitune", max_len=4, start_id=1, eos_id=2)
  >>> bool((out_g.tokens == G.act(1, out.tokens)).all())
  True
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from equijax._src import orbit

StepFn = Callable[[Any, Any, jax.Array], tuple[Any, jax.Array]]
Method = Literal["equitune", "equitune_sequence", "lambda_equitune", "equizero"]
METHODS = ("equitune", "equitune_sequence", "lambda_equitune", "equizero")
PROXIES = ("neg_max_probability", "entropy")
# Old spellings still accepted (with a FutureWarning naming the new one).
_OLD_METHODS = {"lambda": "lambda_equitune"}
_OLD_PROXIES = {"max_prob": "neg_max_probability"}


def _renamed(value: Any, old: dict[str, str], what: str) -> Any:
    if isinstance(value, str) and value in old:
        warnings.warn(
            f"{what}={value!r} is renamed {what}={old[value]!r}; the old spelling will be removed.",
            FutureWarning,
            stacklevel=4,
        )
        return old[value]
    return value


def canonical_method(method: str) -> str:
    """``method`` in this round's spelling (``"lambda"`` -> ``"lambda_equitune"``, warned)."""
    return _renamed(method, _OLD_METHODS, "method")


def canonical_proxy(proxy: Any) -> Any:
    """``proxy`` in this round's spelling (``"max_prob"`` -> ``"neg_max_probability"``, warned)."""
    return _renamed(proxy, _OLD_PROXIES, "proxy")


AfterEos = Literal["model", "zero"]


class DecodeOutput(NamedTuple):
    """Result of a greedy decode.

    Attributes:
      tokens: (B, T) int32 ids; the first EOS is kept, PAD after it.
      scores: (B, T) float: the (combined) probability of each emitted token, 0 after EOS.
      lengths: (B,) int32 number of emitted tokens incl. EOS (``T`` if no EOS).
      branch: (B,) int32 chosen group element (``equizero``), else ``None``.
      proxy: (|G|, B) proxy loss of every branch (``equizero``), else ``None``.
    """

    tokens: jax.Array
    scores: jax.Array
    lengths: jax.Array
    branch: jax.Array | None = None
    proxy: jax.Array | None = None


def sorted_sum(x: jax.Array, axis: int = 0) -> jax.Array:
    """Sum along ``axis`` that is bit-identical under any permutation of that axis.

    Sorting first makes the result a function of the multiset of terms (floating-point addition
    is commutative but not associative).

    Examples:
      >>> x = jnp.array([1e8, 1.0, -1e8, 1.0], jnp.float32)
      >>> bool(sorted_sum(x) == sorted_sum(x[::-1]))
      True
    """
    return orbit.group_sum(x, axis, exact=True)


def branch_states(
    init: Callable[[Any, jax.Array], Any],
    params: Any,
    x: jax.Array,
    in_action: Callable[[Any, jax.Array], jax.Array],
    order: int | None = None,
) -> Any:
    """Encodes every transformed input: ``states[g] = init(params, in_action(g, x))``.

    Args:
      init: the encoder, ``init(params, x) -> state`` (batch axis inside).
      params: model parameters.
      x: the batch of inputs.
      in_action: ``(g, x) -> g·x`` (e.g. ``G_in.act`` for token ids); a group with ``.act`` and
        ``.order`` may be passed instead.
      order: ``|G|``; taken from ``in_action.__self__.order`` for bound group methods.

    Returns:
      The state pytree with a leading group axis of length ``|G|``.
    """
    if hasattr(in_action, "act") and hasattr(in_action, "order"):
        order, in_action = in_action.order, in_action.act  # type: ignore[union-attr]
    if order is None:
        order = getattr(getattr(in_action, "__self__", None), "order", None)
    if order is None:
        raise ValueError("pass order=|G| (cannot infer it from in_action).")
    gs = jnp.arange(order, dtype=jnp.int32)
    return jax.vmap(lambda g: init(params, in_action(g, x)))(gs)


def _check_fixed(group: Any, ids: dict[str, int]) -> None:
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


def _batch_size(state: Any) -> int:
    leaves = jax.tree_util.tree_leaves(state)
    if not leaves:
        raise ValueError("state has no array leaves; pass batch_size=.")
    return leaves[0].shape[0]


def greedy_decode(
    step: StepFn,
    params: Any,
    state: Any,
    *,
    max_len: int,
    start_id: int,
    eos_id: int,
    pad_id: int = 0,
    batch_size: int | None = None,
    return_probs: bool = False,
) -> DecodeOutput | tuple[DecodeOutput, jax.Array]:
    """Greedy decoding of a whole batch as one ``lax.scan`` of ``max_len`` steps.

    Args:
      step: ``step(params, state, token) -> (state, logits)``.
      params: model parameters.
      state: initial decoder state (leading batch axis on every leaf).
      max_len: number of steps (output length, EOS included).
      start_id: first input token.
      eos_id: end token; after it the output is ``pad_id``.
      pad_id: padding token.
      batch_size: ``B`` (default: leading size of the first state leaf).
      return_probs: also return the per-step distributions ``(B, T, V)``.

    Returns:
      A :class:`DecodeOutput` (and the probabilities if ``return_probs``).
    """
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}.")
    b = batch_size or _batch_size(state)

    def body(carry, _):
        state, prev, done = carry
        state, logits = step(params, state, prev)
        probs = jax.nn.softmax(logits.astype(jnp.float32), -1)
        tok = jnp.argmax(probs, -1).astype(jnp.int32)
        score = jnp.max(probs, -1)
        tok = jnp.where(done, pad_id, tok)
        score = jnp.where(done, 0.0, score)
        new_done = done | (tok == eos_id)
        return (state, tok, new_done), (tok, score, probs, done)

    init = (state, jnp.full((b,), start_id, jnp.int32), jnp.zeros((b,), bool))
    _, (toks, scores, probs, was_done) = jax.lax.scan(body, init, None, length=max_len)
    toks, scores = toks.T, scores.T
    lengths = (~was_done).sum(0).astype(jnp.int32)
    out = DecodeOutput(toks, scores, lengths)
    if return_probs:
        return out, jnp.swapaxes(probs, 0, 1)
    return out


def combine_branches(
    branch_values: jax.Array,
    group: Any,
    *,
    weights: jax.Array | None = None,
    axis: int = -1,
) -> jax.Array:
    """Maps each branch back with ``g⁻¹`` and takes the (weighted) mean over the group axis.

    ``out = Σ_g w_g · act_axis(g⁻¹, values[g]) / Σ_g w_g`` with an order-independent (sorted)
    sum; ``w ≡ 1`` gives the plain mean. Used by the decoders and for finetuning with
    teacher forcing.

    Args:
      branch_values: ``(|G|, B, ..., V)`` per-branch probabilities / log-probs / logits.
      group: acts on the vocabulary axis with ``act_axis``.
      weights: optional ``(B, |G|)`` non-negative per-branch weights.
      axis: the vocabulary axis of one branch's values.

    Returns:
      ``(B, ..., V)``.
    """
    n = group.order
    if branch_values.shape[0] != n:
        raise ValueError(
            f"branch_values must have a leading group axis of length |G| = {n}, got shape "
            f"{branch_values.shape}."
        )
    gs = jnp.arange(n, dtype=jnp.int32)
    back = jax.vmap(lambda g, v: group.act_axis(group.inverse(g), v, axis=axis))(gs, branch_values)
    if weights is None:
        return sorted_sum(back, axis=0) / n
    w = jnp.asarray(weights, back.dtype).T  # (|G|, B)
    if w.shape != back.shape[:2]:
        raise ValueError(
            f"weights must have shape (B, |G|) = {back.shape[1::-1]}, got {weights.shape}."
        )
    return orbit.group_mean(back, w, exact=True)


def select_branch(
    branch_values: Any,
    loss: jax.Array,
    *,
    ties: Literal["average", "first"] = "average",
    exact: bool = True,
) -> tuple[Any, jax.Array]:
    """Equizero over already-evaluated branches: the values of the branch with the lowest loss.

    The engine's rules: a NaN loss ranks last; ``ties="average"`` averages the values of all
    branches that attain the minimum exactly (order-independently with ``exact=True``);
    ``ties="first"`` keeps the lowest index.

    Args:
      branch_values: pytree with leaves ``(|G|, B, ...)`` (already mapped back with ``g⁻¹``).
      loss: ``(|G|, B)`` proxy losses.
      ties: ``"average"`` or ``"first"``.
      exact: order-independent sums for the tie average.

    Returns:
      ``(values (B, ...), index (B,))``, the index being the lowest-index minimiser.

    Examples:
      >>> v = jnp.array([[1.0], [2.0], [3.0]])
      >>> y, i = select_branch(v, jnp.array([[0.5], [jnp.nan], [0.5]]))
      >>> y.tolist(), i.tolist()
      ([2.0], [0])
    """
    return orbit.reduce_stacked(orbit.argmin_reducer(ties, exact=exact), branch_values, loss)


def _proxy_loss(proxy: str | Callable, probs: jax.Array, valid: jax.Array) -> jax.Array:
    """(B, T, V) probs, (B, T) validity -> (B,) proxy loss (lower = more confident)."""
    if callable(proxy):
        return proxy(probs, valid)
    v = valid.astype(probs.dtype)
    denom = jnp.maximum(v.sum(-1), 1.0)
    if proxy == "neg_max_probability":
        return -(probs.max(-1) * v).sum(-1) / denom
    if proxy == "entropy":
        ent = -jnp.sum(jnp.where(probs > 0, probs * jnp.log(probs), 0.0), -1)
        return (ent * v).sum(-1) / denom
    raise ValueError(
        f"proxy must be 'neg_max_probability', 'entropy' or a callable, got {proxy!r}."
    )


def _cut_at_eos(toks: jax.Array, scores: jax.Array, eos_id: int, pad_id: int):
    is_eos = toks == eos_id
    after = (jnp.cumsum(is_eos, -1) - is_eos) > 0  # strictly after the first EOS
    toks = jnp.where(after, pad_id, toks)
    scores = jnp.where(after, 0.0, scores)
    return toks, scores, (~after).sum(-1).astype(jnp.int32)


def equivariant_greedy_decode(
    step: StepFn,
    params: Any,
    states: Any,
    group: Any,
    *,
    method: Method = "equitune",
    max_len: int,
    start_id: int,
    eos_id: int,
    pad_id: int = 0,
    weights: jax.Array | None = None,
    average: Literal["prob", "logprob"] = "prob",
    proxy: str | Callable[[jax.Array, jax.Array], jax.Array] = "neg_max_probability",
    batch_size: int | None = None,
    after_eos: AfterEos = "model",
) -> DecodeOutput:
    """Group-equivariant greedy decoding (see the module docstring for the methods).

    Args:
      step: ``step(params, state, token) -> (state, logits)``.
      params: model parameters (shared by all branches).
      states: per-branch initial states with a leading group axis, ``states[g]`` encoding
        ``g·x`` (see :func:`branch_states`).
      group: acts on output ids (``act``) and on the vocabulary axis (``act_axis``); element
        ``g`` must be the same abstract element that produced ``states[g]``.
      method: ``"equitune"``, ``"equitune_sequence"``, ``"lambda_equitune"`` or ``"equizero"``
        (the old ``"lambda"`` is accepted with a ``FutureWarning``).
      max_len: output length (EOS included).
      start_id: the start token, fixed by the group.
      eos_id: the end-of-sequence token, fixed by the group.
      pad_id: the padding token, fixed by the group.
      weights: ``(B, |G|)`` positive weights λ(g·x) for ``"lambda_equitune"``.
      average: ``"prob"`` or ``"logprob"``: what the step-wise methods average.
      proxy: equizero proxy loss: ``"neg_max_probability"``, ``"entropy"`` or
        ``fn(probs (B, T, V), valid (B, T)) -> (B,)``; the branch with the lowest loss wins
        (the old ``"max_prob"`` is accepted with a ``FutureWarning``).
      batch_size: ``B`` (default from the state).
      after_eos: ``"equitune_sequence"`` only: what a branch contributes after its own EOS:
        ``"model"`` (default) the model's own per-step values (it keeps decoding pad tokens);
        ``"zero"`` rows of 0 (log-prob 0 with ``average="logprob"``), as the authors' SCAN code
        does. The paper's row is ``average="logprob", after_eos="zero"``.

    Returns:
      A :class:`DecodeOutput` whose ``tokens`` satisfy ``decode(g·x) == g·decode(x)``.

    Raises:
      ValueError: for an unknown method/average/after_eos, missing or misshapen weights, or
        special tokens moved by the group.
    """
    method = canonical_method(method)
    proxy = canonical_proxy(proxy)
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}.")
    if average not in ("prob", "logprob"):
        raise ValueError(f"average must be 'prob' or 'logprob', got {average!r}.")
    if after_eos not in ("model", "zero"):
        raise ValueError(f"after_eos must be 'model' or 'zero', got {after_eos!r}.")
    if after_eos != "model" and method != "equitune_sequence":
        raise ValueError(
            f"after_eos applies to method='equitune_sequence' (independent branches), not "
            f"{method!r}; the step-wise methods stop every branch at the combined EOS."
        )
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}.")
    _check_fixed(group, {"start_id": start_id, "eos_id": eos_id, "pad_id": pad_id})
    n = group.order
    lead = jax.tree_util.tree_leaves(states)[0].shape
    if lead[0] != n:
        raise ValueError(
            f"states must have a leading group axis of length |G| = {n}, got leaf shape {lead}; "
            "build them with branch_states(...)."
        )
    b = batch_size or lead[1]
    gs = jnp.arange(n, dtype=jnp.int32)
    if method == "lambda_equitune":
        if weights is None:
            raise ValueError(
                "method='lambda_equitune' needs weights=(B, |G|) positive per-branch weights."
            )
        weights = jnp.asarray(weights)
        if weights.shape != (b, n):
            raise ValueError(f"weights must have shape (B, |G|) = {(b, n)}, got {weights.shape}.")
    elif weights is not None:
        raise ValueError(f"weights are only used by method='lambda_equitune', not {method!r}.")

    if method in ("equitune", "lambda_equitune"):
        w = weights if method == "lambda_equitune" else None

        def body(carry, _):
            states, prev, done = carry
            toks_g = jax.vmap(lambda g: group.act(g, prev))(gs)
            states, logits = jax.vmap(step, in_axes=(None, 0, 0))(params, states, toks_g)
            logits = logits.astype(jnp.float32)
            if average == "prob":
                vals = jax.nn.softmax(logits, -1)
            else:
                vals = jax.nn.log_softmax(logits, -1)
            comb = combine_branches(vals, group, weights=w)
            tok = jnp.argmax(comb, -1).astype(jnp.int32)
            score = jnp.take_along_axis(comb, tok[:, None], -1)[:, 0]
            if average == "logprob":
                score = jnp.exp(score)
            tok = jnp.where(done, pad_id, tok)
            score = jnp.where(done, 0.0, score)
            return (states, tok, done | (tok == eos_id)), (tok, score, done)

        init = (states, jnp.full((b,), start_id, jnp.int32), jnp.zeros((b,), bool))
        _, (toks, scores, was_done) = jax.lax.scan(body, init, None, length=max_len)
        return DecodeOutput(toks.T, scores.T, (~was_done).sum(0).astype(jnp.int32))

    # Independent branches.
    outs, probs = jax.vmap(
        lambda s: greedy_decode(
            step,
            params,
            s,
            max_len=max_len,
            start_id=start_id,
            eos_id=eos_id,
            pad_id=pad_id,
            batch_size=b,
            return_probs=True,
        )
    )(states)
    if method == "equitune_sequence":
        vals = probs if average == "prob" else jnp.log(jnp.maximum(probs, 1e-30))
        if after_eos == "zero":  # a branch's rows strictly after its own EOS are 0
            t_idx = jnp.arange(max_len)
            live = t_idx[None, None, :] < outs.lengths[..., None]  # (|G|, B, T)
            vals = jnp.where(live[..., None], vals, 0.0)
        comb = combine_branches(vals, group)  # (B, T, V)
        tok = jnp.argmax(comb, -1).astype(jnp.int32)
        score = jnp.take_along_axis(comb, tok[..., None], -1)[..., 0]
        if average == "logprob":
            score = jnp.exp(score)
        toks, scores, lengths = _cut_at_eos(tok, score, eos_id, pad_id)
        return DecodeOutput(toks, scores, lengths)

    # equizero
    t_idx = jnp.arange(max_len)
    valid = t_idx[None, None, :] < outs.lengths[..., None]  # (|G|, B, T)
    loss = jax.vmap(lambda p, v: _proxy_loss(proxy, p, v))(probs, valid)  # (|G|, B)
    _, best = orbit.argmin_ties(loss, 0)  # (B,): NaN last, lowest index among exact ties
    sel = lambda a: jnp.take_along_axis(a, best[None, :, None], 0)[0]
    toks_sel, scores_sel = sel(outs.tokens), sel(outs.scores)
    toks = jax.vmap(lambda g, t: group.act(group.inverse(g), t))(best, toks_sel)
    lengths = jnp.take_along_axis(outs.lengths, best[None], 0)[0]
    return DecodeOutput(toks, scores_sel, lengths, branch=best, proxy=loss)
