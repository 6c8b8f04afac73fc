"""Griffe extension: render the reST markup of equijax's docstrings in the mkdocs site.

equijax's docstrings are Google style (``Args:``, ``Returns:``, ``Raises:``, ``Examples:`` sections,
which mkdocstrings already renders as sections) but use Sphinx cross-reference roles and the maths
directive inside the prose. Rather than rewriting every docstring (churn for every contributor) this
extension rewrites the *text griffe loaded*, once the whole package is loaded and before
mkdocstrings parses it:

* ``:func:`x```, ``:class:`x```, ``:mod:`x```, ``:meth:`x```, ``:attr:`x```, ``:data:`x```,
  ``:obj:`x```, ``:exc:`x``` (with Sphinx's ``~`` short form and ``title <target>`` form) become
  optional autorefs (``<autoref identifier=... optional>``). A name is resolved like Sphinx does:
  absolute, then relative to the object, its class, its module and the packages above, then under
  ``equijax``; equijax objects link to their API entry, ``jax`` / ``flax`` / ``optax`` / ``orbax``
  / ``numpy`` / standard-library names to those projects' pages through the object inventories in
  ``docs/inventories`` (loaded by ``docs/hooks/site.py``). A name no page documents stays as code.
* ``:math:`...``` becomes inline ``$...$`` and ``.. math::`` (one-line or indented block) becomes a
  ``$$ ... $$`` block; pymdownx.arithmatex and the vendored KaTeX render both.
"""

from __future__ import annotations

import html
import re
import textwrap
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(func|class|mod|meth|attr|data|obj|exc|const):`([^`]+)`")
_MATH_ROLE = re.compile(r":math:`([^`]+)`")
_MATH_DIRECTIVE = re.compile(r"^(?P<indent>[ \t]*)\.\. math::[ \t]*(?P<inline>.*)$")

# Names written with their usual import alias in the docstrings.
_ALIASES = {
    "np": "numpy",
    "jnp": "jax.numpy",
    "nnx": "flax.nnx",
    "linen": "flax.linen",
    "ocp": "orbax.checkpoint",
}
# Top-level names resolved through an external inventory instead of the equijax tree.
EXTERNAL_ROOTS = frozenset(
    {
        "jax", "flax", "optax", "orbax", "numpy", "chex", "functools", "warnings", "inspect",
        "pathlib", "importlib", "typing", "dataclasses", "collections", "logging", "json",
        "os", "re", "itertools", "contextlib", "abc", "enum",
        "ValueError", "TypeError", "KeyError", "RuntimeError", "FutureWarning",
        "DeprecationWarning", "UserWarning", "NotImplementedError", "FileNotFoundError",
        "OSError", "IndexError", "AttributeError", "ImportError", "int", "float", "str",
        "bool", "tuple", "list", "dict", "bytes", "callable", "object", "Exception",
    }
)  # fmt: skip


def _external_name(target: str) -> str | None:
    head, _, rest = target.partition(".")
    head = _ALIASES.get(head, head)
    if head.split(".")[0] not in EXTERNAL_ROOTS:
        return None
    return f"{head}.{rest}" if rest else head


def convert_math(text: str) -> str:
    """``:math:`` roles and ``.. math::`` directives as arithmatex ``$`` / ``$$`` maths."""
    text = _MATH_ROLE.sub(lambda m: f"${m.group(1).strip()}$", text)
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        match = _MATH_DIRECTIVE.match(lines[i])
        if not match:
            out.append(lines[i])
            i += 1
            continue
        indent = match["indent"]
        body = [match["inline"]] if match["inline"].strip() else []
        i += 1
        block: list[str] = []
        while i < len(lines) and (
            not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > len(indent)
        ):
            block.append(lines[i])
            i += 1
        while block and not block[-1].strip():  # trailing blank lines belong to the text
            block.pop()
            i -= 1
        body += textwrap.dedent("\n".join(block)).strip("\n").split("\n") if block else []
        body = [line for line in body if line.strip()]
        if out and out[-1].strip():
            out.append("")
        out.append(f"{indent}$$")
        out.extend(f"{indent}{line.rstrip()}" for line in body)
        out.append(f"{indent}$$")
        if i < len(lines) and lines[i].strip():
            out.append("")
    return "\n".join(out)


class RestRoles(griffe.Extension):
    """Rewrites reST roles and maths in every docstring of the ``equijax`` package (see module)."""

    def __init__(self, package: str = "equijax") -> None:
        super().__init__()
        self.package = package
        self.unresolved: set[str] = set()

    # -- name resolution -------------------------------------------------------------------------
    def _lookup(self, collection: Any, path: str) -> griffe.Object | griffe.Alias | None:
        try:
            obj = collection[path]
        except Exception:  # KeyError, AliasResolutionError, ...
            return None
        return obj

    def _canonical(self, obj: griffe.Object | griffe.Alias) -> str:
        try:
            return obj.canonical_path
        except Exception:
            return obj.path

    def resolve(self, target: str, obj: griffe.Object, collection: Any) -> tuple[str, str] | None:
        """``(identifier, fallback)`` autorefs identifiers for ``target`` seen from ``obj``."""
        target = target.strip().lstrip("~.").removesuffix("()")
        if not target or "{" in target:
            return None
        external = _external_name(target)
        if external is not None:
            return external, external
        candidates = []
        if target == self.package or target.startswith(self.package + "."):
            candidates.append(target)
        scope: Any = obj
        while scope is not None:
            candidates.append(f"{scope.path}.{target}")
            scope = scope.parent
        candidates.append(f"{self.package}.{target}")
        for path in candidates:
            found = self._lookup(collection, path)
            if found is not None:
                canonical = self._canonical(found)
                if found.is_module and canonical.count(".") > 1:
                    # a module without an entry of its own is usually documented on its
                    # package's page: fall back to the package's entry
                    return canonical, canonical.rsplit(".", 1)[0]
                return canonical, found.path
        self.unresolved.add(f"{obj.path}: {target}")
        return None

    # -- rewriting -------------------------------------------------------------------------------
    def rewrite(self, text: str, obj: griffe.Object, collection: Any) -> str:
        def role(match: re.Match[str]) -> str:
            body = match.group(2)
            title, target = body, body
            if body.endswith(">") and "<" in body:
                title, _, target = body[:-1].rpartition("<")
                title = title.strip()
            elif body.startswith("~"):
                target = body[1:]
                title = target.rsplit(".", 1)[-1]
            code = f'<code class="ej-ref">{html.escape(title.strip())}</code>'
            resolved = self.resolve(target, obj, collection)
            if resolved is None:
                return code
            identifier, fallback = resolved
            slug = f' slug="{fallback}"' if fallback != identifier else ""
            return f'<autoref identifier="{identifier}"{slug} optional>{code}</autoref>'

        def role_outside_doctest(match: re.Match[str]) -> str:
            line_start = match.string.rfind("\n", 0, match.start()) + 1
            if match.string[line_start:].lstrip().startswith((">>>", "... ")):
                return match.group(0)  # doctest lines are code: left as written
            return role(match)

        return _ROLE.sub(role_outside_doctest, convert_math(text))

    def _walk(self, obj: griffe.Object, collection: Any, seen: set[str]) -> None:
        if obj.path in seen:
            return
        seen.add(obj.path)
        if obj.docstring is not None:
            obj.docstring.value = self.rewrite(obj.docstring.value, obj, collection)
        for member in list(obj.members.values()):
            if member.is_alias:
                continue
            self._walk(member, collection, seen)

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        if pkg.path != self.package:
            return
        self._walk(pkg, loader.modules_collection, set())
