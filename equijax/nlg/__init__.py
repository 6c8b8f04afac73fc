"""Group-theoretic fairness in GPT-2 text generation (EquiLM, R-EquiLM, EquizeroLM, R-EquizeroLM).

* :mod:`equijax.nlg.groups` -- demographic groups as permutation groups on token ids;
* :mod:`equijax.nlg.decoding` -- cached, jitted, group-fair sampling;
* :mod:`equijax.nlg.scorers` -- the regard classifier (optional) and an offline proxy.
"""

from equijax.nlg.decoding import (
    METHODS,
    RENAMED,
    Generation,
    canonical_frame,
    canonical_method,
    combined_logits,
    generate_text,
    sample,
)
from equijax.nlg.groups import (
    ATTRIBUTES,
    DemographicGroup,
    demographic_group,
    gendered_word_sets,
    load_word_lists,
    prompts,
)
from equijax.nlg.scorers import (
    RegardScorer,
    Scorer,
    VaderScorer,
    load_scorer,
    mask_subject,
    text_score_fn,
)

__all__ = [
    "ATTRIBUTES",
    "METHODS",
    "RENAMED",
    "DemographicGroup",
    "Generation",
    "RegardScorer",
    "Scorer",
    "VaderScorer",
    "canonical_frame",
    "canonical_method",
    "combined_logits",
    "demographic_group",
    "gendered_word_sets",
    "generate_text",
    "load_scorer",
    "load_word_lists",
    "mask_subject",
    "prompts",
    "sample",
    "text_score_fn",
]
