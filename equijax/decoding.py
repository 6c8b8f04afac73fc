"""Equivariant greedy decoding and branch combination for autoregressive models.

A model is a step function ``step(params, state, token) -> (state, logits)``; a finite group
acts on inputs (every branch ``g`` encodes ``g·x``, :func:`branch_states`) and on the output
vocabulary (``group.act`` on ids, ``group.act_axis`` on logits).
:func:`equivariant_greedy_decode` decodes all branches of a batch in one jitted ``lax.scan``
with step-wise equitune, whole-sequence equitune (the paper's SCAN semantics is
``average="logprob", after_eos="zero"``), λ-equitune or equizero, and its tokens satisfy
``decode(g·x) == g·decode(x)`` exactly: every reduction over the group is order-independent.

For applications that evaluate the branches themselves (teacher-forced finetuning, cached
language models), the engine's reductions are exported too, with the same rules as
:func:`equijax.equitune` and friends: :func:`combine_branches` (mean or λ-weighted mean after
mapping back with ``g⁻¹``), :func:`select_branch` (equizero: NaN last, ties averaged),
:func:`log_mixture` (the equitune / λ mean of probabilities in log space),
:func:`normalized_weights` / :func:`log_normalized_weights` (the λ normalisation),
:func:`straight_through` and :func:`sorted_sum`.

Examples:
  >>> import jax, jax.numpy as jnp, equijax as ej
  >>> from equijax import decoding
  >>> G = ej.groups.permutation(5, [(3, 4)])
  >>> lp = jax.nn.log_softmax(jnp.array([[[0.0, 0, 0, 2, 0]], [[0.0, 0, 0, 0, 1]]]))
  >>> decoding.combine_branches(jnp.exp(lp), G).argmax(-1).tolist()   # g⁻¹-mapped mean
  [3]
"""

from equijax._src.decoding import (
    DecodeOutput,
    StepFn,
    branch_states,
    combine_branches,
    equivariant_greedy_decode,
    greedy_decode,
    select_branch,
    sorted_sum,
)
from equijax._src.orbit import (
    log_mixture,
    log_normalized_weights,
    normalized_weights,
    straight_through,
)

__all__ = [
    "DecodeOutput",
    "StepFn",
    "branch_states",
    "combine_branches",
    "equivariant_greedy_decode",
    "greedy_decode",
    "log_mixture",
    "log_normalized_weights",
    "normalized_weights",
    "select_branch",
    "sorted_sum",
    "straight_through",
]
