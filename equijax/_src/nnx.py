"""Flax NNX shells around the functional core (the implementation behind :mod:`equijax.nnx`).

``_Shell`` holds the model, the group and the actions, owns the NNX state of every callable
(:mod:`equijax._src.nnx_state`) and calls its method through
:func:`equijax._src.common.call_shell` with the group axis folded into the batch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from flax.core import unfreeze

from equijax._src import common, nnx_state
from equijax._src.equitune import equitune
from equijax._src.equizero import equizero
from equijax._src.groups import FiniteGroup
from equijax._src.lambda_equitune import lambda_equitune


def _check_model(model: Any) -> None:
    if not callable(model):
        raise TypeError(f"model must be a callable nnx.Module, got {type(model).__name__}.")


# The callables a shell may hold, in the order their NNX state is owned.
_ROLES = ("model", "lambda_net", "loss", "in_action", "out_action")
_METHODS = {"EquiTune": "equitune", "EquiZero": "equizero", "LambdaEquiTune": "lambda_equitune"}


class _Shell(nnx.Module):
    """What every shell holds: the model, the group and the actions. The group axis is folded
    into the batch (:func:`equijax._src.common.call_shell`): ``jax.vmap`` over a stateful
    module fails in training mode.

    **Owned state.** A callable that is not itself an ``nnx.Module`` (a closure, a bound
    method, a ``functools.partial``, a function using a module-level global) is searched for
    the NNX state it uses (:func:`equijax._src.nnx_state.find`); the shell holds that state
    (``_owned``), so ``nnx.state``, ``nnx.Optimizer`` and ``nnx.jit`` see it, and calls the
    callable rebound to the shell's copies (:func:`equijax._src.nnx_state.rebind`). A callable
    whose state the shell cannot own, or a shell holding no NNX state at all, is refused at
    construction.
    """

    def __init__(
        self,
        model: Any,
        group: FiniteGroup,
        in_action: Callable[[Any, Any], Any] | None,
        out_action: Callable[[Any, Any], Any] | None,
    ) -> None:
        _check_model(model)
        self.model = model
        self.group = group
        self.in_action = in_action
        self.out_action = out_action

    def _own(self) -> None:
        """Owns the NNX state of every callable (see the class docstring); called last in
        each shell's ``__init__``."""
        name = type(self).__name__
        owned = {}
        for role in _ROLES:
            obj = getattr(self, role, None)
            if obj is None or nnx.graph.is_graph_node(obj):
                continue
            found = nnx_state.find(obj)
            if found.hidden:
                raise TypeError(
                    f"{name}: {role} uses NNX state the shell cannot own, {found.hidden[0]}; make "
                    "that object an nnx.Module, or pass the module itself (or a closure / bound "
                    "method of it)."
                )
            if found.nodes:
                owned[role] = nnx.List(found.nodes)
        self._owned = nnx.Dict(owned)
        if not jax.tree.leaves(nnx.state(self)):
            raise TypeError(
                f"{name}: model holds no Flax NNX state (no nnx.Module, Variable or Rngs in it, "
                "its closure, bound instance, defaults or the globals it uses), so the shell "
                "would train nothing; pass the nnx.Module itself, or call "
                f"ej.{_METHODS.get(name, 'equitune')}(fn, G, x) for a stateless function."
            )

    def _use(self, role: str) -> Any:
        """The callable of ``role``, rebound to the state this shell holds now (under
        ``nnx.jit`` / ``nnx.value_and_grad`` these are the transform's copies)."""
        obj = getattr(self, role)
        if obj is None or role not in self._owned:
            return obj
        return nnx_state.rebind(obj, nnx_state.find(obj).nodes, list(self._owned[role]))

    def _call(self, method: Callable[..., Any], x: Any, **own: Any) -> Any:
        return common.call_shell(method, self._use("model"), _Actions(self), x, **own)


class _Actions:
    """The view of a shell :func:`equijax._src.common.call_shell` reads, with rebound actions."""

    def __init__(self, shell: _Shell) -> None:
        self.group = shell.group
        self.in_action = shell._use("in_action")
        self.out_action = shell._use("out_action")


class EquiTune(_Shell):
    r"""``x -> 1/|G| Σ_g g⁻¹ M(g x)`` for an NNX model ``M`` (see :func:`equijax.equitune`).

    Args:
      model: the NNX model, batch -> batch of outputs: an ``nnx.Module``, or a closure, bound
        method, ``functools.partial`` or function (globals included) over NNX modules, which
        the shell then owns (``nnx.state(shell)`` holds them).
      group: a finite group.
      in_action: ``(g, x) -> g x``; defaults to ``group.act``.
      out_action: ``(g, y) -> g y``; ``None`` for invariant outputs.

    Raises:
      TypeError: ``model`` is not callable, keeps NNX state where the shell cannot own it (an
        attribute of a plain object), or the shell would hold no NNX state at all.

    Examples:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> import equijax as ej
      >>> G = ej.groups.sign_flip([-1.0, -1.0])
      >>> model = ej.nnx.EquiTune(nnx.Linear(2, 3, rngs=nnx.Rngs(0)), G)
      >>> x = jnp.ones((4, 2))
      >>> bool(jnp.allclose(model(x), model(-x), atol=1e-6))
      True
    """

    def __init__(
        self,
        model: Any,
        group: FiniteGroup,
        *,
        in_action: Callable[[Any, Any], Any] | None = None,
        out_action: Callable[[Any, Any], Any] | None = None,
    ) -> None:
        super().__init__(model, group, in_action, out_action)
        self._own()

    def __call__(self, x: jax.Array) -> Any:
        return self._call(equitune, x)


class EquiZero(_Shell):
    """``g*⁻¹ M(g* x)`` with ``g*`` minimising ``loss`` (see :func:`equijax.equizero`).

    Args:
      model: the NNX model.
      group: a finite group.
      loss: ``y -> (B,)`` proxy loss, e.g. :func:`equijax.proxies.neg_max_probability`.
      in_action: as for :class:`EquiTune`.
      out_action: as for :class:`EquiTune`.
      straight_through: gradients of the equitune surrogate (for finetuning).

    Examples:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> import equijax as ej
      >>> model = ej.nnx.EquiZero(nnx.Linear(2, 3, rngs=nnx.Rngs(0)),
      ...                         ej.groups.sign_flip([-1.0, 1.0]), ej.proxies.entropy)
      >>> model(jnp.ones((4, 2))).shape
      (4, 3)
    """

    def __init__(
        self,
        model: Any,
        group: FiniteGroup,
        loss: Callable[[Any], jax.Array],
        *,
        in_action: Callable[[Any, Any], Any] | None = None,
        out_action: Callable[[Any, Any], Any] | None = None,
        straight_through: bool = True,
    ) -> None:
        super().__init__(model, group, in_action, out_action)
        self.loss = loss
        self.straight_through = straight_through
        self._own()

    def __call__(self, x: jax.Array) -> Any:
        return self._call(
            equizero, x, loss=self._use("loss"), straight_through=self.straight_through
        )


class LambdaNet(nnx.Module):
    """The paper's λ network in NNX (see :class:`equijax.LambdaNet`): one logit per example.

    ``Linear(hidden) -> ReLU -> Dropout -> Linear(hidden) -> ReLU -> Dropout -> Linear(1)`` on
    (optionally L2-normalised, flattened) features; dropout follows ``.train()``/``.eval()``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> import equijax as ej
      >>> lam = ej.nnx.LambdaNet(16, hidden=8, rngs=nnx.Rngs(0))
      >>> lam(jnp.ones((3, 16))).shape
      (3,)
    """

    def __init__(
        self,
        in_features: int,
        *,
        hidden: int = 100,
        dropout: float = 0.5,
        l2_normalize: bool = True,
        rngs: nnx.Rngs,
    ) -> None:
        self.l2_normalize = l2_normalize
        self.fc1 = nnx.Linear(in_features, hidden, rngs=rngs)
        self.fc2 = nnx.Linear(hidden, hidden, rngs=rngs)
        self.out = nnx.Linear(hidden, 1, rngs=rngs)
        self.drop = nnx.Dropout(dropout, rngs=rngs)

    def __call__(self, features: jax.Array) -> jax.Array:
        h = features.reshape(features.shape[0], -1)
        if self.l2_normalize:
            h = h / jnp.maximum(jnp.linalg.norm(h, axis=-1, keepdims=True), 1e-12)
        h = self.drop(nnx.relu(self.fc1(h)))
        h = self.drop(nnx.relu(self.fc2(h)))
        return self.out(h)[:, 0]


class LambdaEquiTune(_Shell):
    """λ-weighted group averaging (see :func:`equijax.lambda_equitune`) with an NNX λ network.

    Args:
      model: the NNX model; with ``has_aux=True`` it returns ``(outputs, features)`` and
        ``lambda_net`` reads the features, otherwise ``lambda_net`` reads ``g x``.
      group: a finite group.
      lambda_net: an NNX module mapping a batch to ``(B,)`` logits (e.g. :class:`LambdaNet`).
      in_action: as for :class:`EquiTune`.
      out_action: as for :class:`EquiTune`.
      has_aux: see ``model``.
      normalize: ``"softmax"`` or ``"positive"`` (see :func:`equijax.log_weights`).

    Examples:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> import equijax as ej
      >>> rngs = nnx.Rngs(0)
      >>> G = ej.groups.sign_flip([-1.0, 1.0])
      >>> model = ej.nnx.LambdaEquiTune(nnx.Linear(2, 3, rngs=rngs), G,
      ...                               ej.nnx.LambdaNet(2, hidden=8, rngs=rngs))
      >>> model(jnp.ones((4, 2))).shape
      (4, 3)
    """

    def __init__(
        self,
        model: Any,
        group: FiniteGroup,
        lambda_net: Any,
        *,
        in_action: Callable[[Any, Any], Any] | None = None,
        out_action: Callable[[Any, Any], Any] | None = None,
        has_aux: bool = False,
        normalize: str = "softmax",
    ) -> None:
        super().__init__(model, group, in_action, out_action)
        _check_model(lambda_net)
        self.lambda_net = lambda_net
        self.has_aux = has_aux
        self.normalize = normalize
        self._own()

    def __call__(self, x: jax.Array) -> Any:
        return self._call(
            lambda_equitune,
            x,
            weight_fn=self._use("lambda_net"),
            has_aux=self.has_aux,
            normalize=self.normalize,
        )


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if k in out and isinstance(v, dict) else v
    return out


def from_linen(
    module: Any,
    *args: Any,
    variables: Any = None,
    rngs: nnx.Rngs | None = None,
    **kwargs: Any,
) -> Any:
    """Wraps a Flax linen module (e.g. an ``equijax.models`` port) as an initialised NNX module.

    ``nnx.bridge.ToNNX(module, rngs=rngs)`` followed by ``nnx.bridge.lazy_init`` on the
    example inputs ``*args, **kwargs``. With ``variables`` (the linen ``{"params": ...,
    "batch_stats": ...}`` dict, e.g. from ``from_pretrained``) the NNX module is loaded with
    them, so it computes exactly ``module.apply(variables, *args)``.

    Args:
      module: a linen module.
      *args: example inputs for initialisation.
      variables: optional linen variables to load (every collection).
      rngs: NNX random streams (default ``nnx.Rngs(0)``).
      **kwargs: keyword example inputs.

    Returns:
      An ``nnx.Module`` (``nnx.bridge.ToNNX``); its linen collections are NNX variables
      (``params`` -> ``nnx.Param``, ``batch_stats`` -> ``nnx.BatchStat``).

    Examples:
      >>> import jax.numpy as jnp
      >>> import flax.linen as nn
      >>> from flax import nnx
      >>> import equijax as ej
      >>> dense = ej.nnx.from_linen(nn.Dense(3), jnp.ones((1, 2)), rngs=nnx.Rngs(0))
      >>> model = ej.nnx.EquiTune(dense, ej.groups.sign_flip([-1.0, -1.0]))
      >>> model(jnp.ones((4, 2))).shape
      (4, 3)
    """
    model = nnx.bridge.ToNNX(module, rngs=rngs if rngs is not None else nnx.Rngs(0))
    nnx.bridge.lazy_init(model, *args, **kwargs)
    if variables is not None:
        merged: dict = {}
        for tree in unfreeze(variables).values():
            merged = _merge(merged, tree)
        nnx.update(model, nnx.State(merged))
    return model
