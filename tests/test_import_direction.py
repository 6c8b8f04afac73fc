"""Import direction: the library never imports its own top-level package; scripts and tests use
the public faces, never ``equijax._src``."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Files allowed to break the rule for now; each must still violate it (so that an entry is
# removed as soon as its file is fixed). Empty: every module follows the rule.
KNOWN_TOP_LEVEL_IMPORTS: set[str] = set()


def _imports(path: Path) -> list[tuple[int, str, tuple[str, ...]]]:
    """(line, module, names) of every import statement (``import m`` gives names ``()``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name, ()) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module, tuple(a.name for a in node.names)))
    return out


def _py_files(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def _top_level_imports(path: Path) -> list[str]:
    bad = []
    for line, module, names in _imports(path):
        if module == "equijax":  # `import equijax [as ej]` or `from equijax import x`
            what = f"from equijax import {', '.join(names)}" if names else "import equijax"
            bad.append(f"{path.relative_to(ROOT)}:{line}: {what}")
    return bad


def test_library_never_imports_the_top_level_package():
    bad, known = [], set()
    for path in _py_files("equijax"):
        rel = path.relative_to(ROOT).as_posix()
        if rel == "equijax/__init__.py":
            continue
        found = _top_level_imports(path)
        if rel in KNOWN_TOP_LEVEL_IMPORTS:
            if found:
                known.add(rel)
            continue
        bad += found
    assert not bad, (
        "modules under equijax/ must import what they use from its own module "
        "(e.g. `from equijax.groups import rot90`, `from equijax._src import orbit`), never "
        "the top-level package:\n" + "\n".join(bad)
    )
    stale = KNOWN_TOP_LEVEL_IMPORTS - known
    assert not stale, f"fixed, remove from KNOWN_TOP_LEVEL_IMPORTS: {sorted(stale)}"


def test_engine_imports_nothing_above_it():
    bad = []
    for path in _py_files("equijax/_src"):
        for line, module, _ in _imports(path):
            if module.startswith("equijax") and not module.startswith("equijax._src"):
                bad.append(f"{path.relative_to(ROOT)}:{line}: {module}")
    assert not bad, "equijax/_src imports nothing above it:\n" + "\n".join(bad)


def test_scripts_and_tests_use_public_faces():
    bad = []
    for folder in ("experiments", "benchmarks", "tests"):
        for path in _py_files(folder):
            for line, module, names in _imports(path):
                if module.startswith("equijax._src") or (module == "equijax" and "_src" in names):
                    bad.append(f"{path.relative_to(ROOT)}:{line}: {module}")
    assert not bad, (
        "experiments, benchmarks and tests import the public modules (equijax, "
        "equijax.groups, equijax.decoding, ...), not equijax._src:\n" + "\n".join(bad)
    )


def test_the_checker_sees_violations(tmp_path):
    f = tmp_path / "m.py"
    f.write_text(
        "import equijax as ej\nfrom equijax import groups\nfrom equijax.groups import rot90\n"
    )
    global ROOT
    old, ROOT = ROOT, tmp_path
    try:
        assert len(_top_level_imports(f)) == 2
    finally:
        ROOT = old


def test_top_level_package_imports_the_engine_before_the_applications():
    """``equijax/__init__.py``: methods from ``_src`` first, then faces, then applications."""
    order = [module if module != "equijax" else f"equijax.{names[0]}"
             for _, module, names in _imports(ROOT / "equijax" / "__init__.py")]
    apps = ("equijax.data", "equijax.models", "equijax.nlg", "equijax.rl")
    first_app = min(i for i, m in enumerate(order) if m.startswith(apps))
    last_engine = max(i for i, m in enumerate(order) if m.startswith("equijax._src"))
    assert last_engine < first_app, order
