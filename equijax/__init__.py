"""equijax: equivariant transfer learning from pretrained models, in JAX.

Make any pretrained model ``fn`` equivariant (or invariant) to a finite group ``G``:

* :func:`equitune` — group averaging, ``1/|G| Σ_g g⁻¹ fn(g x)``;
* :func:`equizero` — the element minimising a proxy loss, ``g*⁻¹ fn(g* x)``;
* :func:`lambda_equitune` — averaging weighted by a learned positive λ;
* :func:`canonical_lambda_equitune` — λ-weighted averaging around an equivariant canonical
  pose, for continuous groups such as SO(2);
* :func:`sampled_equitune` and :func:`frame_average` — for groups too large to enumerate.

Layout: the engine (``equijax._src``) first, then its faces (:mod:`equijax.groups`,
:mod:`equijax.testing`, :mod:`equijax.proxies`, :mod:`equijax.decoding`, :mod:`equijax.nn`,
:mod:`equijax.nnx`, ...), then the applications (:mod:`equijax.models`, :mod:`equijax.data`,
:mod:`equijax.rl`, :mod:`equijax.nlg`), which build on the engine and never on this package.

Reference: Basu et al., "Efficient Equivariant Transfer Learning from Pretrained Models",
NeurIPS 2023, https://arxiv.org/abs/2305.09900.
"""

# isort: off
# The engine first: every method, then the faces that re-export it, then the applications.
from equijax._src.canonical import canonical_lambda_equitune, so2_canonicalizer
from equijax._src.equitune import equitune
from equijax._src.equizero import equizero
from equijax._src.frames import frame_average
from equijax._src.groups import SymmetricGroup
from equijax._src.lambda_equitune import lambda_equitune, log_weights
from equijax._src.nn import LambdaNet
from equijax._src.sampled import sample_elements, sampled_equitune
from equijax._src.sharding import orbit_sharding

from equijax import groups, proxies, testing  # faces of the engine
from equijax import decoding, frames, nn, nnx, rotations, training

from equijax import data, models, nlg, rl  # applications
# isort: on

__version__ = "0.1.0"

__all__ = [
    "LambdaNet",
    "SymmetricGroup",
    "__version__",
    "canonical_lambda_equitune",
    "data",
    "decoding",
    "equitune",
    "equizero",
    "frame_average",
    "frames",
    "groups",
    "lambda_equitune",
    "log_weights",
    "models",
    "nlg",
    "nn",
    "nnx",
    "orbit_sharding",
    "proxies",
    "rl",
    "rotations",
    "sample_elements",
    "sampled_equitune",
    "so2_canonicalizer",
    "testing",
    "training",
]
