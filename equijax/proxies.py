"""Proxy losses for :func:`equijax.equizero` (lower is better, one value per example)."""

from equijax._src.proxies import entropy, given, neg_max_probability, neg_max_score

__all__ = ["entropy", "given", "neg_max_probability", "neg_max_score"]
