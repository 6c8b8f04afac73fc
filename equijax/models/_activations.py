"""The one activation table of the model ports (names as in ``transformers``' ``ACT2FN``).

Examples:
    >>> import jax.numpy as jnp
    >>> float(activation("relu")(jnp.array(-1.0)))
    0.0
    >>> activation("mish")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ValueError: hidden_act='mish' is not supported; use one of [...]
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

__all__ = ["ACTIVATIONS", "activation", "check_activation"]


def _quick_gelu(x: jax.Array) -> jax.Array:
    return x * jax.nn.sigmoid(1.702 * x)


def _gelu_tanh(x: jax.Array) -> jax.Array:
    return jax.nn.gelu(x, approximate=True)


def _gelu(x: jax.Array) -> jax.Array:
    return jax.nn.gelu(x, approximate=False)


ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "gelu": _gelu,
    "gelu_fast": _gelu_tanh,
    "gelu_new": _gelu_tanh,
    "gelu_pytorch_tanh": _gelu_tanh,
    "leaky_relu": jax.nn.leaky_relu,
    "quick_gelu": _quick_gelu,
    "relu": jax.nn.relu,
    "sigmoid": jax.nn.sigmoid,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "tanh": jnp.tanh,
}


def check_activation(name: str, arg: str = "hidden_act") -> None:
    """Raise ``ValueError`` naming ``arg`` unless ``name`` is in :data:`ACTIVATIONS`."""
    if name not in ACTIVATIONS:
        raise ValueError(f"{arg}={name!r} is not supported; use one of {sorted(ACTIVATIONS)}")


def activation(name: str, arg: str = "hidden_act") -> Callable[[jax.Array], jax.Array]:
    """The activation function called ``name`` (``ValueError`` naming ``arg`` if unknown)."""
    check_activation(name, arg)
    return ACTIVATIONS[name]
