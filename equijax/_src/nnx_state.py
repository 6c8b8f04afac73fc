"""The Flax NNX state a callable uses: found, owned, rebound, and carried through ``lax.scan``.

A callable "uses" NNX state when it is an NNX graph node (an ``nnx.Module``, ``nnx.Rngs`` or
``nnx.Variable``) or reaches one through a bound method's instance, a ``functools.partial``'s
arguments, a function's closure cells, defaults or the module-level globals its code loads
(a script or a notebook), or lists / tuples / dicts of these. :func:`find` lists those graph
nodes in a fixed order; :func:`rebind` rebuilds the callable with each of them replaced (new
closure cells, a copy of the globals dict, a new bound method or partial), so that the same
code runs on other copies of the state: the copies ``nnx.jit`` / ``nnx.value_and_grad`` make,
or the copies merged inside a ``lax.scan`` body (:func:`scan`). State hidden inside another
kind of object (an attribute of a plain Python object) cannot be rebound; :func:`find` reports
where it is, so callers can refuse it.

flax is never imported here: without ``flax.nnx`` in ``sys.modules`` no NNX state exists.
"""

from __future__ import annotations

import dis
import functools
import itertools
import sys
import types
from collections.abc import Callable
from typing import Any, NamedTuple

_MAX_DEPTH = 6
_MAX_ITEMS = 32
# Functions of these packages are not searched through their globals (their closures are).
_LIBRARIES = frozenset(
    {"jax", "jaxlib", "flax", "numpy", "optax", "orbax", "chex", "equijax", "scipy", "functools"}
)
_LEAVES = (str, bytes, int, float, complex, bool, type(None), types.ModuleType, type)


def _nnx() -> Any:
    return sys.modules.get("flax.nnx")


class Found(NamedTuple):
    """What :func:`find` found: ``nodes`` (rebindable, unique, in a fixed order) and ``hidden``
    (descriptions of graph nodes inside objects that cannot be rebound)."""

    nodes: list[Any]
    hidden: list[str]


@functools.lru_cache(maxsize=1024)
def _global_names(code: types.CodeType) -> tuple[str, ...]:
    """The global names ``code`` (and the code nested in it) loads."""
    names: list[str] = []
    for ins in dis.get_instructions(code):
        if ins.opname in ("LOAD_GLOBAL", "LOAD_NAME") and ins.argval not in names:
            names.append(ins.argval)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names.extend(n for n in _global_names(const) if n not in names)
    return tuple(names)


def _library_function(fn: types.FunctionType) -> bool:
    module = getattr(fn, "__module__", None) or ""
    return module.split(".")[0] in _LIBRARIES


def _is_array(obj: Any) -> bool:
    return hasattr(obj, "shape") and hasattr(obj, "dtype") and not callable(obj)


def _globals_of(fn: types.FunctionType) -> list[tuple[str, Any]]:
    if _library_function(fn):
        return []
    g = fn.__globals__
    return [(name, g[name]) for name in _global_names(fn.__code__) if name in g]


def _cells(fn: types.FunctionType) -> list[tuple[str, Any]]:
    out = []
    for name, cell in zip(fn.__code__.co_freevars, fn.__closure__ or (), strict=False):
        try:
            out.append((name, cell.cell_contents))
        except ValueError:  # an empty cell
            continue
    return out


def find(obj: Any) -> Found:
    """The NNX graph nodes ``obj`` uses (see the module docstring), and the hidden ones.

    Examples:
      >>> import functools
      >>> from flax import nnx
      >>> lin = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
      >>> fn = functools.partial(lambda m, z: m(z), lin)
      >>> found = find(fn)
      >>> found.nodes[0] is lin, found.hidden
      (True, [])
      >>> twin = nnx.clone(lin)
      >>> find(rebind(fn, found.nodes, [twin])).nodes[0] is twin
      True
    """
    nnx = _nnx()
    found = Found([], [])
    if nnx is None:
        return found
    is_node = nnx.graph.is_graph_node
    seen_nodes: set[int] = set()
    visited: set[int] = set()

    def visit(o: Any, where: str, depth: int) -> None:
        if depth > _MAX_DEPTH or isinstance(o, _LEAVES) or _is_array(o):
            return
        if is_node(o):
            if id(o) not in seen_nodes:
                seen_nodes.add(id(o))
                found.nodes.append(o)
            return
        if id(o) in visited:
            return
        visited.add(id(o))
        d = depth + 1
        if type(o) in (list, tuple):
            for i, v in enumerate(o[:_MAX_ITEMS]):
                visit(v, f"{where}[{i}]", d)
        elif type(o) is dict:
            for k, v in itertools.islice(o.items(), _MAX_ITEMS):
                visit(v, f"{where}[{k!r}]", d)
        elif isinstance(o, functools.partial):
            visit(o.func, f"{where}.func", d)
            for i, v in enumerate(o.args):
                visit(v, f"{where}.args[{i}]", d)
            for k, v in o.keywords.items():
                visit(v, f"{where}.keywords[{k!r}]", d)
        elif isinstance(o, types.MethodType):
            visit(o.__self__, f"{where}.__self__", d)
            visit(o.__func__, where, d)
        elif isinstance(o, types.FunctionType):
            for name, v in _cells(o):
                visit(v, f"{where} (closure variable {name!r})", d)
            for i, v in enumerate(o.__defaults__ or ()):
                visit(v, f"{where} (default {i})", d)
            for k, v in (o.__kwdefaults__ or {}).items():
                visit(v, f"{where} (default {k!r})", d)
            for name, v in _globals_of(o):
                visit(v, f"{where} (global {name!r})", d)
        else:
            try:
                attrs = vars(o)
            except TypeError:
                return
            for k, v in itertools.islice(attrs.items(), _MAX_ITEMS):
                if is_node(v):
                    found.hidden.append(f"{where}.{k} (an attribute of a {type(o).__name__})")

    visit(obj, getattr(obj, "__qualname__", None) or type(obj).__name__, 0)
    return found


def holds_state(obj: Any) -> bool:
    """Whether ``obj`` uses any NNX state (rebindable or not)."""
    found = find(obj)
    return bool(found.nodes or found.hidden)


def rebind(obj: Any, nodes: list[Any], replacements: list[Any]) -> Any:
    """``obj`` with each of ``nodes`` (from :func:`find`) replaced by the matching replacement.

    Objects that do not reach a replaced node are returned as they are; functions are rebuilt
    with new closure cells and, if a global changes, a shallow copy of their globals dict.
    """
    if len(nodes) != len(replacements):
        raise ValueError(
            f"the callable now uses {len(nodes)} NNX objects, not the {len(replacements)} it "
            "used when the shell was built (was a global reassigned?); build the shell again."
        )
    table = {id(a): b for a, b in zip(nodes, replacements, strict=True) if a is not b}
    if not table:
        return obj
    nnx = _nnx()
    is_node = nnx.graph.is_graph_node
    memo: dict[int, Any] = {}

    def go(o: Any, depth: int) -> Any:
        if depth > _MAX_DEPTH or isinstance(o, _LEAVES) or _is_array(o):
            return o
        if is_node(o):
            return table.get(id(o), o)
        if id(o) in memo:
            return memo[id(o)]
        memo[id(o)] = o  # cycles keep the original
        d = depth + 1
        new = o
        if type(o) in (list, tuple):
            items = [go(v, d) for v in o[:_MAX_ITEMS]]
            if any(a is not b for a, b in zip(items, o, strict=False)):
                new = type(o)([*items, *o[_MAX_ITEMS:]])
        elif type(o) is dict:
            keys = list(itertools.islice(o, _MAX_ITEMS))
            vals = {k: go(o[k], d) for k in keys}
            if any(vals[k] is not o[k] for k in keys):
                new = {**o, **vals}
        elif isinstance(o, functools.partial):
            func = go(o.func, d)
            args = [go(v, d) for v in o.args]
            kw = {k: go(v, d) for k, v in o.keywords.items()}
            changed = func is not o.func or any(
                a is not b for a, b in zip(args, o.args, strict=True)
            )
            if changed or any(kw[k] is not o.keywords[k] for k in kw):
                new = functools.partial(func, *args, **kw)
        elif isinstance(o, types.MethodType):
            owner, func = go(o.__self__, d), go(o.__func__, d)
            if owner is not o.__self__ or func is not o.__func__:
                new = types.MethodType(func, owner)
        elif isinstance(o, types.FunctionType):
            new = _rebind_function(o, lambda v: go(v, d))
        memo[id(o)] = new
        return new

    return go(obj, 0)


def _rebind_function(fn: types.FunctionType, go: Callable[[Any], Any]) -> types.FunctionType:
    cells = fn.__closure__ or ()
    contents = dict(_cells(fn))
    new_contents = {name: go(v) for name, v in contents.items()}
    defaults = tuple(go(v) for v in fn.__defaults__ or ()) or None
    kwdefaults = {k: go(v) for k, v in (fn.__kwdefaults__ or {}).items()} or None
    new_globals = {name: go(v) for name, v in _globals_of(fn)}
    globals_changed = any(new_globals[k] is not fn.__globals__[k] for k in new_globals)
    cells_changed = any(new_contents[k] is not contents[k] for k in contents)
    defaults_changed = defaults is not None and any(
        a is not b for a, b in zip(defaults, fn.__defaults__, strict=True)
    )
    kw_changed = kwdefaults is not None and any(
        kwdefaults[k] is not fn.__kwdefaults__[k] for k in kwdefaults
    )
    if not (globals_changed or cells_changed or defaults_changed or kw_changed):
        return fn
    g = fn.__globals__
    if globals_changed:
        g = dict(fn.__globals__)
        g.update(new_globals)
    closure = None
    if cells:
        closure = tuple(
            types.CellType(new_contents[name]) if name in new_contents else cell
            for name, cell in zip(fn.__code__.co_freevars, cells, strict=True)
        )
    new = types.FunctionType(fn.__code__, g, fn.__name__, defaults, closure)
    new.__kwdefaults__ = kwdefaults
    new.__qualname__ = fn.__qualname__
    new.__module__ = fn.__module__
    new.__doc__ = fn.__doc__
    new.__dict__.update(fn.__dict__)
    return new


def scan(
    fn: Any,
    body: Callable[[Any, Any, Any], tuple[Any, Any]],
    init: Any,
    xs: Any,
) -> tuple[Any, Any]:
    """``jax.lax.scan`` of ``body(f, carry, x)``, where ``f`` is ``fn`` on the NNX state it
    uses, carried through the loop.

    Without NNX state this is ``lax.scan(lambda c, x: body(fn, c, x), init, xs)``. With it, the
    state other than ``nnx.Param`` (BatchNorm statistics, RNG counts, ...) is split off, carried
    through the scan, merged into fresh copies inside each step (``fn`` rebound to them, see
    :func:`rebind`), and written back to the original objects after the loop, in step order: a
    stateful module inside a ``lax.scan`` would otherwise raise ``TraceContextError``.
    """
    import jax

    found = find(fn)
    if not found.nodes:
        return jax.lax.scan(lambda c, x: body(fn, c, x), init, xs)
    nnx = _nnx()
    nodes = found.nodes
    graphdef, params, rest = nnx.split(nodes, nnx.Param, ...)

    def step(carry: Any, x: Any) -> tuple[Any, Any]:
        inner, state = carry
        copies = nnx.merge(graphdef, params, state)
        out, y = body(rebind(fn, nodes, list(copies)), inner, x)
        return (out, nnx.state(copies, nnx.Not(nnx.Param))), y

    (final, state), ys = jax.lax.scan(step, (init, rest), xs)
    nnx.update(nodes, state)
    return final, ys


def keep_state(fn: Any) -> Callable[[], None]:
    """Snapshots the non-parameter NNX state ``fn`` uses; the returned function restores it.

    Used for an empty batch: BatchNorm statistics of zero examples are NaN, and an empty batch
    must leave the model as it was.
    """
    found = find(fn)
    if not found.nodes:
        return lambda: None
    nnx = _nnx()
    nodes = found.nodes
    import jax

    saved = jax.tree.map(lambda a: a, nnx.state(nodes, nnx.Not(nnx.Param)))  # new Variables
    return lambda: nnx.update(nodes, saved)
