"""equijax: equivariant transfer learning from pretrained models, in JAX.

Make any pretrained model ``fn`` equivariant (or invariant) to a finite group ``G``:

* :func:`equitune` — group averaging, ``1/|G| Σ_g g⁻¹ fn(g x)``;
* :func:`equizero` — the element minimising a proxy loss, ``g*⁻¹ fn(g* x)``;
* :func:`lambda_equitune` — averaging weighted by a learned positive λ;
* :func:`canonical_lambda_equitune` — λ-weighted averaging around an equivariant canonical
  pose, for continuous groups such as SO(2).

Reference: Basu et al., "Efficient Equivariant Transfer Learning from Pretrained Models",
NeurIPS 2023, https://arxiv.org/abs/2305.09900.
"""

from equijax import data, groups, models, nlg, nn, proxies, rl, testing
from equijax._src.canonical import canonical_lambda_equitune, so2_canonicalizer
from equijax._src.equitune import equitune
from equijax._src.equizero import equizero
from equijax._src.lambda_equitune import lambda_equitune, log_weights
from equijax._src.nn import LambdaNet
from equijax._src.sharding import orbit_sharding

__version__ = "0.1.0"

__all__ = [
    "LambdaNet",
    "__version__",
    "canonical_lambda_equitune",
    "data",
    "equitune",
    "equizero",
    "groups",
    "lambda_equitune",
    "log_weights",
    "models",
    "nlg",
    "nn",
    "orbit_sharding",
    "proxies",
    "rl",
    "so2_canonicalizer",
    "testing",
]
