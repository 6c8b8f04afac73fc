"""Argument handling shared by the symmetrization methods."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from equijax._src import orbit
from equijax._src.groups import FiniteGroup

PyTree = Any
Action = Callable[[Any, PyTree], PyTree]


def check_callable(obj: Any, arg: str, hint: str = "") -> None:
    if not callable(obj):
        raise TypeError(f"{arg} must be callable, got {type(obj).__name__}. {hint}".rstrip())


def check_group(group: Any) -> FiniteGroup:
    if not isinstance(group, FiniteGroup):
        raise TypeError(
            f"group must be an equijax FiniteGroup (e.g. ej.groups.rot90()), got "
            f"{type(group).__name__}."
        )
    return group


def actions(
    group: FiniteGroup, in_action: Action | None, out_action: Action | None
) -> tuple[Action, Action]:
    """Returns ``(transform, untransform)`` for a finite group: ``g x`` and ``g⁻¹ y``."""
    if in_action is not None:
        check_callable(in_action, "in_action", "Expected (g, x) -> x.")
    if out_action is not None:
        check_callable(
            out_action, "out_action", "Expected (g, y) -> y, or None for invariant outputs."
        )
    act_in = in_action if in_action is not None else group.act

    def untransform(g: Any, y: PyTree) -> PyTree:
        if out_action is None:
            return y
        return out_action(group.inverse(g), y)

    return act_in, untransform


_TRANSFORMED_SIGNATURE = inspect.Signature(
    [inspect.Parameter("args", inspect.Parameter.VAR_POSITIONAL)]
)


def as_transformation(
    method: Callable[..., Any], fn: Callable[..., Any], args: tuple, arguments: Mapping[str, Any]
):
    """The transformation form: returns ``f(*a)`` symmetrizing ``fn`` in its last argument.

    ``fn(*params, x)`` becomes ``f(*params, x)``; every argument but the last is passed to
    ``fn`` unchanged (e.g. Flax parameters), so one compiled program serves every update.
    ``f`` calls ``method(..., x, **kwargs)`` with every keyword-only argument of ``method``,
    read from ``arguments`` (the method's ``locals()``), so a new keyword of a method reaches
    its transformation form without being listed again.
    The returned function has its own name (``equitune(fn_name)``), signature ``(*args)`` and
    docstring: it is not ``fn`` (no :func:`functools.wraps`); ``__wrapped__`` is not set, so
    :func:`inspect.signature` does not report ``fn``'s parameters.
    """
    kwargs = {
        name: arguments[name]
        for name, p in inspect.signature(method).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }
    method_name = method.__name__
    fn_name = getattr(fn, "__name__", None) or type(fn).__name__
    fn_qualname = getattr(fn, "__qualname__", None) or fn_name

    def transformed(*a: Any) -> Any:
        if not a:
            raise TypeError("the symmetrized function needs at least the input argument x.")
        *rest, x = a
        return method(lambda xx: fn(*rest, xx), *args, x, **kwargs)

    transformed.__name__ = f"{method_name}({fn_name})"
    transformed.__qualname__ = f"{method_name}({fn_qualname})"
    transformed.__module__ = method.__module__
    transformed.__doc__ = (
        f"``{fn_name}`` symmetrized by :func:`equijax.{method_name}`.\n\n"
        "Call as ``f(*leading, x)``: the leading arguments (e.g. parameters) are passed to the "
        "model unchanged and ``x`` (the last argument) is the input batch."
    )
    transformed.__signature__ = _TRANSFORMED_SIGNATURE  # type: ignore[attr-defined]
    return transformed


def call_shell(method: Callable[..., Any], model: Any, shell: Any, x: PyTree, **own: Any) -> Any:
    """How every Flax shell (``equijax.nn``, ``equijax.nnx``) calls its method.

    ``method(model, shell.group, x, in_action=..., out_action=..., batching="fold", **own)``:
    the shell's group and actions, and the group axis folded into the batch (one call of the
    model on ``|G| * B`` examples, so linen submodules nest and stateful NNX layers train);
    ``own`` holds the method's own keywords (``loss``, ``weight_fn``, ...).
    """
    return method(
        model,
        shell.group,
        x,
        in_action=shell.in_action,
        out_action=shell.out_action,
        batching="fold",
        **own,
    )


straight_through = orbit.straight_through
