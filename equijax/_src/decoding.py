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

These step-function decoders are the pre-encoded form of the sequence engine
(:mod:`equijax._src.sequence`): they run its one decoder on branch states built by the caller.
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

from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp

from equijax._src import orbit, sequence
from equijax._src.sequence import PROXIES, canonical_method, canonical_proxy

StepFn = Callable[[Any, Any, jax.Array], tuple[Any, jax.Array]]
Method = Literal["equitune", "equitune_sequence", "lambda_equitune", "equizero"]
METHODS = ("equitune", "equitune_sequence", "lambda_equitune", "equizero")
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


def _batch_size(state: Any) -> int:
    leaves = jax.tree_util.tree_leaves(state)
    if not leaves:
        raise ValueError("state has no array leaves; pass batch_size=.")
    return leaves[0].shape[0]


def _first_step(step: StepFn, params: Any, states: Any, start_id: int, b: int):
    """Feeds the start token to every branch: the prefill of a step-function model."""
    start = jnp.full((b,), start_id, jnp.int32)
    return jax.vmap(lambda s: step(params, s, start))(states)


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
    states = jax.tree.map(lambda a: a[None], state)
    cache, logits = _first_step(step, params, states, start_id, b)
    model = sequence.SequenceModel(prefill=None, step=step)
    # one branch decoded on its own: the engine's independent-branch path (|G| = 1)
    plan = sequence._Plan("equizero", max_len, max_len, "prob", False, None, False, eos_id,
                          pad_id, "model", False)  # fmt: skip
    out = sequence.decode_branches(model, params, cache, logits, None, plan, frame=None)
    res = DecodeOutput(out.tokens, out.scores, out.lengths)
    return (res, out.probs) if return_probs else res


def combine_branches(
    branch_values: jax.Array,
    group: Any,
    *,
    weights: jax.Array | None = None,
    axis: int = -1,
) -> jax.Array:
    """Maps each branch back with ``g⁻¹`` and takes the (weighted) mean over the group axis.

    ``out = Σ_g w_g · act_axis(g⁻¹, values[g]) / Σ_g w_g`` with an order-independent (sorted)
    sum; ``w ≡ 1`` gives the plain mean (the engine's :func:`equijax._src.sequence.combine`).

    Args:
      branch_values: ``(|G|, B, ..., V)`` per-branch probabilities / log-probs / logits.
      group: acts on the vocabulary axis with ``act_axis``.
      weights: optional ``(B, |G|)`` non-negative per-branch weights.
      axis: the vocabulary axis of one branch's values.

    Returns:
      ``(B, ..., V)``.
    """
    moved = jnp.moveaxis(branch_values, axis if axis < 0 else axis + 1, -1)
    out = sequence.combine(moved, group, weights)
    return jnp.moveaxis(out, -1, axis)


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

    The sequence engine's decoder (:func:`equijax._src.sequence.decode`) on branch states the
    caller encoded; equizero ties go to the lowest index (there is no prompt to take a
    canonical frame of; use :func:`equijax.decoding.decode` for that).

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
    method = canonical_method(method, methods=METHODS, stacklevel=3)
    proxy = canonical_proxy(proxy, stacklevel=3)
    if average not in ("prob", "logprob"):
        raise ValueError(f"average must be 'prob' or 'logprob', got {average!r}.")
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}.")
    plan = sequence.make_plan(method, n=max_len, chunk_tokens=None, average=average,
                              sampling=False, top_k=None, use_top_p=False, eos_id=eos_id,
                              pad_id=pad_id, after_eos=after_eos, group=group, weights=weights,
                              stacklevel=4)  # fmt: skip
    sequence._check_fixed(group, {"start_id": start_id, "eos_id": eos_id, "pad_id": pad_id})
    if isinstance(proxy, str) and proxy not in PROXIES:
        raise ValueError(
            f"proxy must be 'neg_max_probability', 'entropy' or a callable, got {proxy!r}."
        )
    n = group.order
    lead = jax.tree_util.tree_leaves(states)[0].shape
    if lead[0] != n:
        raise ValueError(
            f"states must have a leading group axis of length |G| = {n}, got leaf shape {lead}; "
            "build them with branch_states(...)."
        )
    b = batch_size or lead[1]
    if weights is not None:
        weights = jnp.asarray(weights)
        if weights.shape != (b, n):
            raise ValueError(f"weights must have shape (B, |G|) = {(b, n)}, got {weights.shape}.")
    if callable(proxy):
        fn = proxy
        proxy = lambda p: jax.vmap(fn)(p.probs, p.valid)
    cache, logits = _first_step(step, params, states, start_id, b)
    out = sequence.decode_branches(
        sequence.SequenceModel(prefill=None, step=step), params, cache, logits, group, plan,
        frame=None, weights=weights, proxy=proxy, need_probs=True,
    )  # fmt: skip
    if out.branch is None:
        return DecodeOutput(out.tokens, out.scores, out.lengths)
    return DecodeOutput(out.tokens, out.scores, out.lengths, out.branch[:, 0], out.proxy[0])
