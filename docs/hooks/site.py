"""mkdocs hooks of the equijax site: offline inventories, executed notebooks, a tolerant nav.

* **Inventories.** ``docs/inventories/*.inv`` (small Sphinx inventories kept in the repository,
  see ``docs/inventories/make_inventories.py``) are registered with autorefs, so docstring roles
  such as ``:func:`jax.jit``` link to the JAX / Flax / Optax / Orbax / NumPy / Python docs without
  downloading anything at build time.
* **Notebooks.** Every ``docs/tutorials/*.ipynb`` and the Colab quickstart
  (``experiments/colab_quickstart.ipynb``) is executed with nbclient when the site is built and
  rendered as a Markdown page (``tutorials/<name>.md``) with its real outputs: text, tables and
  figures (PNG files beside the page). A failing cell fails the build. ``EQUIJAX_DOCS_EXECUTE=0``
  renders the notebooks without running them (a quick preview; the outputs are then absent).
* **Nav.** A page under ``docs/`` that ``mkdocs.yml``'s ``nav`` does not list is still reachable:
  it is appended to a final "More" section instead of being left out of the navigation.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files
from mkdocs.structure.nav import Navigation, Section

log = logging.getLogger("mkdocs.hooks.equijax")

# Base URL of each project's documentation; the inventories' URIs are relative to them.
INVENTORIES = {
    "python": "https://docs.python.org/3/",
    "jax": "https://docs.jax.dev/en/latest/",
    "flax": "https://flax.readthedocs.io/en/latest/",
    "optax": "https://optax.readthedocs.io/en/latest/",
    "orbax": "https://orbax.readthedocs.io/en/latest/",
    "numpy": "https://numpy.org/doc/stable/",
}

# Notebooks outside docs/ rendered as tutorial pages: repository path -> page stem.
EXTRA_NOTEBOOKS = {"experiments/colab_quickstart.ipynb": "quickstart"}
# Environment of the kernel that executes the notebooks: offline, short SCAN run, one CPU device.
KERNEL_ENV = {
    "HF_HUB_OFFLINE": "1",
    "EQUIJAX_NB_SCAN_STEPS": "200",
    "XLA_FLAGS": "",
    "JAX_PLATFORMS": "cpu",
    "TF_CPP_MIN_LOG_LEVEL": "3",
}
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_cache: dict[str, tuple[str, dict[str, bytes]]] = {}


def _root(config: Any) -> Path:
    return Path(config.config_file_path).resolve().parent


# -- inventories ---------------------------------------------------------------------------------
def on_env(env: Any, config: Any, files: Files, **kwargs: Any) -> Any:
    """Registers the cached inventories with autorefs (before autorefs resolves references)."""
    from mkdocstrings import Inventory

    autorefs = config.plugins.get("autorefs")
    if autorefs is None:
        return env
    folder = _root(config) / "docs" / "inventories"
    for stem, base in INVENTORIES.items():
        path = folder / f"{stem}.inv"
        if not path.exists():
            log.warning("inventory %s is missing: run docs/inventories/make_inventories.py", path)
            continue
        with path.open("rb") as f:
            for name, item in Inventory.parse_sphinx(f).items():
                autorefs.register_url(name, base + item.uri)
    return env


# -- notebooks -----------------------------------------------------------------------------------
def _text_block(text: str) -> str:
    text = _ANSI.sub("", text).rstrip("\n")
    fence = "````" if "```" in text else "```"
    return f'<div class="nb-output" markdown>\n\n{fence}text\n{text}\n{fence}\n\n</div>\n'


def _execute(nb: Any, root: Path, execute: bool) -> None:
    if not execute:
        return
    import nbclient

    env = dict(os.environ)
    env.update(KERNEL_ENV)
    # The kernel imports the tree being documented, not another install of equijax.
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.pop("MPLBACKEND", None)  # the kernel's inline backend shows the figures
    with tempfile.TemporaryDirectory() as cwd:
        client = nbclient.NotebookClient(
            nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": cwd}}
        )
        # nbclient passes extra keyword arguments to the kernel manager's start_kernel.
        client.execute(env=env)


def render_notebook(
    path: Path, stem: str, root: Path, execute: bool
) -> tuple[str, dict[str, bytes]]:
    """``(markdown, {image name: PNG bytes})`` of the notebook at ``path``, executed if asked."""
    import nbformat

    raw = path.read_bytes()
    key = hashlib.sha256(raw + json.dumps([execute, KERNEL_ENV]).encode()).hexdigest()
    if key in _cache:
        return _cache[key]
    nb = nbformat.reads(raw.decode(), as_version=4)
    _execute(nb, root, execute)
    images: dict[str, bytes] = {}
    parts: list[str] = []
    for index, cell in enumerate(nb.cells):
        source = cell.source.rstrip()
        if cell.cell_type == "markdown":
            parts.append(source + "\n")
            continue
        if cell.cell_type != "code" or not source:
            continue
        parts.append(f"```python\n{source}\n```\n")
        for j, out in enumerate(cell.get("outputs", [])):
            kind = out.get("output_type")
            if kind == "stream":
                parts.append(_text_block(out.get("text", "")))
            elif kind == "error":  # only with allow_errors; keep it visible
                parts.append(_text_block("\n".join(out.get("traceback", []))))
            elif kind in ("display_data", "execute_result"):
                data = out.get("data", {})
                if "image/png" in data:
                    name = f"{stem}_files/cell{index}_{j}.png"
                    images[name] = base64.b64decode(data["image/png"])
                    parts.append(f"![output of cell {index}]({name}){{ .nb-figure }}\n")
                elif "text/html" in data:
                    parts.append(f'<div class="nb-output">\n{data["text/html"]}\n</div>\n')
                elif "text/plain" in data:
                    parts.append(_text_block(data["text/plain"]))
    source_name = f"{stem}.ipynb"
    note = (
        f'\n<p class="nb-source">This page is the notebook <a href="../{source_name}" download>'
        f"<code>{source_name}</code></a>, "
        + ("executed when the site was built." if execute else "shown without outputs.")
        + "</p>\n"
    )
    result = ("\n".join(parts) + note, images)
    _cache[key] = result
    return result


def _notebooks(config: Any) -> dict[str, Path]:
    root = _root(config)
    found = {stem: root / src for src, stem in EXTRA_NOTEBOOKS.items()}
    for path in sorted((root / "docs" / "tutorials").glob("*.ipynb")):
        found[path.stem] = path
    return found


def on_files(files: Files, config: Any, **kwargs: Any) -> Files:
    """Adds ``tutorials/<name>.md`` (and its figures) for every notebook."""
    execute = os.environ.get("EQUIJAX_DOCS_EXECUTE", "1") != "0"
    root = _root(config)
    for stem, path in _notebooks(config).items():
        log.info(
            "rendering notebook %s (%s)", path.name, "executing" if execute else "no execution"
        )
        markdown, images = render_notebook(path, stem, root, execute)
        files.append(File.generated(config, f"tutorials/{stem}.md", content=markdown))
        for name, data in images.items():
            files.append(File.generated(config, f"tutorials/{name}", content=data))
        if not path.is_relative_to(Path(config.docs_dir).resolve()):  # offer the source too
            files.append(
                File.generated(config, f"tutorials/{stem}.ipynb", content=path.read_bytes())
            )
    return files


# -- nav -----------------------------------------------------------------------------------------
def on_nav(nav: Navigation, config: Any, files: Files, **kwargs: Any) -> Navigation:
    """Pages the nav does not list go to a final "More" section (new pages stay reachable)."""
    listed = {id(page) for page in nav.pages}
    extra = [
        f.page
        for f in files.documentation_pages()
        if f.page is not None and id(f.page) not in listed and f.src_uri != "index.md"
    ]
    if extra:
        section = Section("More", extra)
        for page in extra:
            page.parent = section
        nav.items.append(section)
        nav.pages.extend(extra)
        log.info(
            "pages not in mkdocs.yml's nav, listed under More: %s", [p.file.src_uri for p in extra]
        )
    return nav


if __name__ == "__main__":  # pragma: no cover - a manual preview of one notebook page
    md, imgs = render_notebook(Path(sys.argv[1]), Path(sys.argv[1]).stem, Path.cwd(), True)
    print(md, file=sys.stdout)
