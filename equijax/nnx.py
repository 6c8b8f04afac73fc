"""Flax NNX shells around the functional core: ``EquiTune``, ``EquiZero``, ``LambdaEquiTune``.

Each shell wraps any ``nnx.Module`` (or a closure, bound method, ``functools.partial`` or
function over NNX modules, including module-level globals: the shell then owns those modules;
a callable whose state it cannot own, or no NNX state at all, is refused with a ``TypeError``)
and is itself an ``nnx.Module``: train it with ``nnx.jit`` + ``nnx.value_and_grad`` and an
``nnx.Optimizer``, switch modes with ``.train()`` / ``.eval()``. The group axis is folded
into the batch (one call of the wrapped model on ``|G| · B`` examples), so stateful layers
work in training mode: BatchNorm statistics then cover the ``|G| · B`` transformed examples,
and Dropout draws one mask per transformed example. In eval mode the output is exactly
invariant/equivariant.

Linen ports (``equijax.models``) are used from NNX code through Flax's bridge:
:func:`from_linen` wraps a linen module with ``nnx.bridge.ToNNX`` and initialises it.
"""

from equijax._src.nnx import EquiTune, EquiZero, LambdaEquiTune, LambdaNet, from_linen

__all__ = ["EquiTune", "EquiZero", "LambdaEquiTune", "LambdaNet", "from_linen"]
