"""The API reference covers the public API and builds without warnings (issues 8 and 13).

Coverage rule (:func:`test_every_public_name_is_documented`): every name in the ``__all__`` of a
public module -- ``equijax`` and every submodule found by walking the package, skipping
``_``-prefixed modules (``equijax._src``, ``models._hub``, ...) -- has an entry in
``docs/api/*.md``. The entries are mkdocstrings directives ``::: <path>``; a directive documents

* ``<path>`` itself;
* if ``<path>`` is a module: ``<path>.<m>`` for each ``m`` of its ``members:`` option, or, with no
  ``members:`` option, for each ``m`` of the module's ``__all__`` (what mkdocstrings renders);
  ``members: false`` documents the module's docstring only. Submodules among the members count
  only with ``show_submodules: true`` (otherwise mkdocstrings does not render them).

A name ``n`` exported by module ``M`` counts as documented when some documented path ending in
``.n`` resolves to the very same object (so ``equijax.rl.dqn.train`` is covered by
``::: equijax.rl.train``: one entry per object, under its shortest public path). A submodule
exported in ``__all__`` counts as documented when the module itself or something under its path
is documented. Dunder names (``__version__``) are exempt. The strict build test then checks that
every documented path really is an anchor of the built site.
"""

import importlib
import os
import pkgutil
import re
import subprocess
import sys
import textwrap
import types
from functools import cache
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
API_DIR = ROOT / "docs" / "api"
_DIRECTIVE = re.compile(r"^:::\s+(\S+)\s*$")


def _import_root():
    sys.path.insert(0, str(ROOT))  # document the tree under test, not another install
    try:
        return importlib.import_module("equijax")
    finally:
        sys.path.pop(0)


@cache
def public_modules() -> tuple[types.ModuleType, ...]:
    """``equijax`` and every submodule without a ``_``-prefixed component."""
    root = _import_root()
    names = [root.__name__]
    for info in pkgutil.walk_packages(root.__path__, root.__name__ + "."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            names.append(info.name)
    return tuple(importlib.import_module(name) for name in sorted(names))


def resolve(path: str):
    """The object at dotted ``path``: the longest importable module prefix, then attributes."""
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(path)


def directives() -> list[tuple[str, str, dict]]:
    """``(page, path, options)`` for every ``::: path`` directive in ``docs/api/*.md``."""
    found = []
    for page in sorted(API_DIR.glob("*.md")):
        lines = page.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            match = _DIRECTIVE.match(line)
            if not match:
                continue
            block = []
            for following in lines[i + 1 :]:
                if following.strip() and not following.startswith((" ", "\t")):
                    break
                block.append(following)
            config = yaml.safe_load(textwrap.dedent("\n".join(block))) or {}
            found.append((page.name, match.group(1), config.get("options") or {}))
    return found


def documented_paths() -> set[str]:
    """Every dotted path that the API reference renders with its own heading."""
    paths = set()
    for _, path, options in directives():
        paths.add(path)
        obj = resolve(path)
        if not isinstance(obj, types.ModuleType):
            continue
        members = options.get("members")
        if members is None:
            members = getattr(obj, "__all__", [])
        for member in members or []:
            # mkdocstrings renders submodules only with `show_submodules: true`
            if options.get("show_submodules") or not isinstance(
                getattr(obj, member, None), types.ModuleType
            ):
                paths.add(f"{path}.{member}")
    return paths


def undocumented() -> tuple[list[str], int]:
    """The exported names with no API entry, and the number of exported names checked."""
    paths = documented_paths()
    by_name: dict[str, list[object]] = {}
    for path in paths:
        by_name.setdefault(path.rsplit(".", 1)[-1], []).append(resolve(path))
    missing, checked = [], 0
    for module in public_modules():
        for name in getattr(module, "__all__", []):
            if name.startswith("__") and name.endswith("__"):
                continue
            checked += 1
            obj = getattr(module, name)
            if isinstance(obj, types.ModuleType):
                ok = any(p == obj.__name__ or p.startswith(obj.__name__ + ".") for p in paths)
            else:
                ok = any(candidate is obj for candidate in by_name.get(name, []))
            if not ok:
                missing.append(f"{module.__name__}.{name}")
    return missing, checked


def test_every_api_directive_resolves():
    broken = []
    for page, path, _ in directives():
        try:
            resolve(path)
        except (ImportError, AttributeError):
            broken.append(f"{page}: ::: {path}")
    assert directives(), "no ::: directives found in docs/api/*.md"
    assert not broken, f"API reference entries that do not exist: {broken}"


def test_every_public_name_is_documented():
    missing, checked = undocumented()
    assert checked > 200, checked  # the walk found the sub-packages
    assert not missing, (
        f"{len(missing)} of {checked} names exported in a public __all__ have no entry in "
        f"docs/api/*.md (add `::: module.name`, or list it in a module directive's members): "
        f"{missing}"
    )


def test_the_coverage_rule_catches_a_missing_entry(monkeypatch):
    """The check is not vacuous: dropping one page's directives makes names undocumented."""
    kept = [d for d in directives() if d[0] != "rl.md"]
    monkeypatch.setattr(sys.modules[__name__], "directives", lambda: kept)
    missing, _ = undocumented()
    assert "equijax.rl.make_env" in missing
    assert "equijax.rl.envs.make_env" in missing


def test_every_docs_page_is_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text()
    pages = sorted(p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md"))
    missing = [p for p in pages if p not in nav]
    assert not missing, f"docs pages missing from mkdocs.yml nav: {missing}"


def test_mkdocs_build_strict(tmp_path):
    pytest.importorskip("mkdocstrings")  # the [docs] extra; installed on CI
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "EQUIJAX_DOCS_EXECUTE": "0"},  # notebooks: tests/test_docs_site.py
    )
    assert result.returncode == 0, result.stdout + result.stderr
    api = tmp_path / "site" / "api" / "core" / "index.html"
    assert "equitune" in api.read_text()
    # Every documented path is a heading of the built reference (the rule above is what renders).
    html = "\n".join(p.read_text() for p in (tmp_path / "site" / "api").rglob("*.html"))
    anchors = set(re.findall(r'id="(equijax[\w.]*)"', html))
    absent = sorted(documented_paths() - anchors)
    assert not absent, f"documented paths without a heading in the built site: {absent}"
