"""Flax (linen) shells: the λ network and drop-in symmetrized modules."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from equijax._src import common
from equijax._src.equitune import equitune
from equijax._src.equizero import equizero
from equijax._src.groups import FiniteGroup
from equijax._src.lambda_equitune import lambda_equitune


class LambdaNet(nn.Module):
    """The paper's λ network: a small MLP giving one weight logit per example.

    ``Dense(hidden) -> ReLU -> Dropout -> Dense(hidden) -> ReLU -> Dropout -> Dense(1)`` on
    (optionally L2-normalised, flattened) features. The authors' code has no ReLU after the
    second layer; ``paper_compatible=True`` drops it (two stacked linear maps). Positivity and
    normalisation over the group are applied by :func:`equijax.lambda_equitune`.

    Attributes:
      hidden: hidden width (paper: 100).
      dropout: dropout rate (paper: 0.5); active only when ``deterministic=False``.
      l2_normalize: L2-normalise the input features first (paper: yes, for CLIP features).
      paper_compatible: omit the second ReLU, as the reference code does.

    Examples:
      >>> import jax, jax.numpy as jnp, equijax as ej
      >>> net = ej.LambdaNet()
      >>> params = net.init(jax.random.key(0), jnp.ones((2, 512)))
      >>> net.apply(params, jnp.ones((2, 512))).shape
      (2,)
    """

    hidden: int = 100
    dropout: float = 0.5
    l2_normalize: bool = True
    paper_compatible: bool = False

    @nn.compact
    def __call__(self, features: jax.Array, *, deterministic: bool = True) -> jax.Array:
        h = features.reshape(features.shape[0], -1)
        if self.l2_normalize:
            h = h / jnp.maximum(jnp.linalg.norm(h, axis=-1, keepdims=True), 1e-12)
        h = nn.relu(nn.Dense(self.hidden)(h))
        h = nn.Dropout(self.dropout)(h, deterministic=deterministic)
        h = nn.Dense(self.hidden)(h)
        if not self.paper_compatible:
            h = nn.relu(h)
        h = nn.Dropout(self.dropout)(h, deterministic=deterministic)
        return nn.Dense(1)(h)[:, 0]


class EquiTune(nn.Module):
    """Wraps a Flax module ``M`` as ``x -> 1/|G| Σ_g g⁻¹ M(g x)`` (see :func:`equijax.equitune`).

    The group axis is folded into the batch (one call of ``module`` on ``|G| * B`` examples),
    so it nests in other linen modules. Avoid batch-coupled layers in training mode (e.g.
    BatchNorm updating statistics), which would see the whole orbit as one batch.

    Examples:
      >>> import jax, jax.numpy as jnp, flax.linen as nn, equijax as ej
      >>> model = ej.nn.EquiTune(nn.Dense(3), ej.groups.sign_flip([-1.0, -1.0]))
      >>> params = model.init(jax.random.key(0), jnp.ones((2, 2)))
      >>> y = model.apply(params, jnp.ones((2, 2)))
      >>> bool(jnp.allclose(y, model.apply(params, -jnp.ones((2, 2))), atol=1e-6))
      True
    """

    module: nn.Module
    group: FiniteGroup
    out_action: Any = None
    in_action: Any = None

    def __call__(self, x: jax.Array) -> jax.Array:
        return common.call_shell(equitune, self.module, self, x)


class EquiZero(nn.Module):
    """Wraps a Flax module with :func:`equijax.equizero` (straight-through optional)."""

    module: nn.Module
    group: FiniteGroup
    loss: Any
    out_action: Any = None
    in_action: Any = None
    straight_through: bool = False

    def __call__(self, x: jax.Array) -> jax.Array:
        return common.call_shell(
            equizero, self.module, self, x, loss=self.loss, straight_through=self.straight_through
        )


class LambdaEquiTune(nn.Module):
    """Wraps a Flax module with :func:`equijax.lambda_equitune` and its own :class:`LambdaNet`.

    λ reads the transformed input by default; if ``module`` returns ``(outputs, features)``
    set ``has_aux=True`` and λ reads the backbone's features instead.

    Examples:
      >>> import jax, jax.numpy as jnp, flax.linen as nn, equijax as ej
      >>> G = ej.groups.sign_flip([-1.0, 1.0])
      >>> model = ej.nn.LambdaEquiTune(nn.Dense(3), G, lambda_net=ej.LambdaNet(hidden=8))
      >>> params = model.init(jax.random.key(0), jnp.ones((2, 2)))
      >>> model.apply(params, jnp.ones((2, 2))).shape
      (2, 3)
    """

    module: nn.Module
    group: FiniteGroup
    lambda_net: nn.Module
    out_action: Any = None
    in_action: Any = None
    has_aux: bool = False
    normalize: str = "softmax"

    def __call__(self, x: jax.Array, *, deterministic: bool = True) -> jax.Array:
        return common.call_shell(
            lambda_equitune,
            self.module,
            self,
            x,
            weight_fn=lambda z: self.lambda_net(z, deterministic=deterministic),
            has_aux=self.has_aux,
            normalize=self.normalize,
        )
