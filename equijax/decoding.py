"""The sequence engine: decoding and finetuning any autoregressive model, plain or equivariant.

A model meets a two-function contract, bundled as a :class:`SequenceModel`:
``prefill(params, ids, mask) -> (cache, logits)`` and ``step(params, cache, token) -> (cache,
logits)`` (the cache any pytree). :func:`decode` then runs every method (``"pretrained"``,
``"equitune"``, ``"lambda_equitune"``, ``"equitune_sequence"``, ``"equizero"`` with rounds and
roll-back, the relaxed ``"r_equitune"`` / ``"r_equizero"``) with every token choice (greedy, or
sampling with temperature / top-k / top-p and the noise in the prompt's canonical frame) in one
jitted program, with ``decode(g·x, key) == g·decode(x, key)`` token for token;
:func:`method_log_probs` is the teacher-forced objective for finetuning, evaluated by the orbit
engine (``chunk_size``, ``orbit_sharding``). Adapters: :func:`equijax.models.gpt2.sequence_model`,
:func:`equijax.models.seq2seq.sequence_model`; the guide ``docs/decoding.md`` plugs in a model
of your own.

The step-function form (:func:`equivariant_greedy_decode` over branch states built with
:func:`branch_states`) and the engine's reductions for applications that evaluate the branches
themselves are exported too, with the same rules as :func:`equijax.equitune` and friends:
:func:`combine_branches` (mean or λ-weighted mean after mapping back with ``g⁻¹``),
:func:`select_branch` (equizero: NaN last, ties averaged), :func:`log_mixture` (the equitune /
λ mean of probabilities in log space), :func:`normalized_weights` /
:func:`log_normalized_weights` (the λ normalisation), :func:`straight_through` and
:func:`sorted_sum`. :data:`METHODS` / :data:`RENAMED` / :func:`canonical_method` are the one
method-name table of every application.

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
from equijax._src.sequence import (
    METHODS,
    PROXIES,
    RENAMED,
    Decoded,
    Proposal,
    SequenceModel,
    canonical_method,
    decode,
    filter_logits,
    gumbel_in_frame,
    method_log_probs,
    renamed,
    teacher_forced,
)

__all__ = [
    "METHODS",
    "PROXIES",
    "RENAMED",
    "DecodeOutput",
    "Decoded",
    "Proposal",
    "SequenceModel",
    "StepFn",
    "branch_states",
    "canonical_method",
    "combine_branches",
    "decode",
    "equivariant_greedy_decode",
    "filter_logits",
    "greedy_decode",
    "gumbel_in_frame",
    "log_mixture",
    "log_normalized_weights",
    "method_log_probs",
    "normalized_weights",
    "renamed",
    "select_branch",
    "sorted_sum",
    "straight_through",
    "teacher_forced",
]
