"""The documentation site builds offline and renders what the docstrings say (issue 27).

* The docstrings' reST roles and maths are converted at build time (``docs/hooks/rest_roles.py``):
  unit tests of the conversion, then checks on the built HTML: no raw role or directive left, maths
  marked up for KaTeX, roles linked to equijax pages and, through the inventories kept in
  ``docs/inventories``, to the JAX / Flax / Optax / Orbax / NumPy / Python docs.
* The built site has no broken internal link (pages and anchors) and no missing image or asset.
* The landing page shows the README's quickstart block, character for character.
* The build needs no network: a dead proxy is set for the build's subprocess.
* ``@slow``: the full build executes the notebooks and their real outputs are on the pages.
"""

from __future__ import annotations

import html
import importlib.util
import os
import re
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# -- the conversion, without a build ----------------------------------------------------------
def _roles():
    pytest.importorskip("griffe")  # the [docs] extra; installed on CI
    return _load("equijax_docs_rest_roles", DOCS / "hooks" / "rest_roles.py")


def test_math_directive_becomes_a_display_block_at_its_indentation():
    roles = _roles()
    text = "Averages.\n\n.. math::\n\n    M_G(x) = \\frac{1}{|G|} \\sum_g M(g x)\n\nwhere g.\n"
    out = roles.convert_math(text)
    assert "$$\nM_G(x) = \\frac{1}{|G|} \\sum_g M(g x)\n$$" in out
    assert ".. math::" not in out and out.endswith("\nwhere g.\n")
    nested = "Args:\n    x: the input,\n\n        .. math:: y = 2 x\n\n    next line\n"
    out = roles.convert_math(nested)
    assert "        $$\n        y = 2 x\n        $$\n" in out and "    next line" in out
    assert (
        roles.convert_math("error :math:`\\mathbb E_S[M]` here") == "error $\\mathbb E_S[M]$ here"
    )


def test_roles_resolve_relative_names_and_external_projects():
    roles = _roles()
    import griffe

    package = griffe.load("equijax", search_paths=[str(ROOT)], resolve_aliases=False)
    ext = roles.RestRoles()
    collection = package.modules_collection
    obj = package["_src.sampled"]
    out = ext.rewrite(
        "See :func:`equitune`, :func:`~jax.jit`, :class:`np.ndarray`, :func:`no_such_name`.",
        obj,
        collection,
    )
    # relative name found by walking up to the package; external names keep their full path
    assert 'identifier="equijax._src.' in out or 'identifier="equijax.equitune"' in out
    assert '<autoref identifier="jax.jit" optional><code class="ej-ref">jit</code></autoref>' in out
    assert 'identifier="numpy.ndarray"' in out
    assert '<code class="ej-ref">no_such_name</code>' in out and ":func:" not in out
    assert any("no_such_name" in u for u in ext.unresolved)
    doctest = ">>> f = 1  # :func:`jax.jit` stays code\n"
    assert ext.rewrite(doctest, obj, collection) == doctest


def test_inventories_are_current_and_cover_the_external_names_of_the_docstrings():
    """Regenerating gives the committed bytes; every external role target has an entry."""
    pytest.importorskip("mkdocstrings")
    from mkdocstrings import Inventory

    make = _load("equijax_docs_make_inventories", DOCS / "inventories" / "make_inventories.py")
    names = set()
    for stem, (project, version, objects) in make.PROJECTS.items():
        path = DOCS / "inventories" / f"{stem}.inv"
        assert path.read_bytes() == make.inventory_bytes(project, version, objects), (
            f"{path} is stale: run python docs/inventories/make_inventories.py"
        )
        with path.open("rb") as f:
            names |= set(Inventory.parse_sphinx(f))
    roles = _roles()
    missing = set()
    for source in (ROOT / "equijax").rglob("*.py"):
        for match in roles._ROLE.finditer(source.read_text(encoding="utf-8")):
            target = match.group(2).lstrip("~").split("<")[-1].rstrip(">").removesuffix("()")
            external = roles._external_name(target)
            if external is not None and external not in names:
                missing.add(f"{source.relative_to(ROOT)}: {target}")
    assert not missing, f"add these to docs/inventories/make_inventories.py: {sorted(missing)}"


# -- the built site -------------------------------------------------------------------------------
def _build(site: Path, execute: bool) -> float:
    pytest.importorskip("mkdocstrings")  # the [docs] extra; installed on CI
    pytest.importorskip("material")
    env = dict(os.environ)
    env.update(
        EQUIJAX_DOCS_EXECUTE="1" if execute else "0",
        PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]),
        # Offline: any HTTP(S) request of the build would go to a closed local port and fail.
        HTTP_PROXY="http://127.0.0.1:9",
        HTTPS_PROXY="http://127.0.0.1:9",
        http_proxy="http://127.0.0.1:9",
        https_proxy="http://127.0.0.1:9",
        NO_MKDOCS_2_WARNING="1",
    )
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT, capture_output=True, text=True, timeout=1200, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return time.monotonic() - start


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("docs") / "site"
    _build(path, execute=False)
    return path


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.refs: list[tuple[str, str]] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        if tag == "a" and attrs.get("name"):
            self.ids.add(attrs["name"])
        for key in ("href", "src"):
            if attrs.get(key) and not (tag == "link" and attrs.get("rel") == "canonical"):
                self.refs.append((tag, attrs[key]))


def _parse(page: Path) -> _Links:
    parser = _Links()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


def _visible_text(page: Path) -> str:
    text = page.read_text(encoding="utf-8")
    text = re.sub(r"<(script|style)\b.*?</\1>", " ", text, flags=re.S)
    return html.unescape(re.sub(r"<[^>]+>", "", text))


_RAW_ROLE = re.compile(r":(?:py:)?(?:func|class|mod|meth|attr|data|obj|exc|math):`")
_RAW_DIRECTIVE = re.compile(r"^\s*\.\. [a-z-]+::", re.M)


def test_no_raw_rest_role_or_directive_in_any_page(site):
    found = {}
    for page in site.rglob("*.html"):
        text = _visible_text(page)
        hits = _RAW_ROLE.findall(text) + _RAW_DIRECTIVE.findall(text)
        if hits:
            found[str(page.relative_to(site))] = hits[:5]
    assert not found, f"raw reST in the built site: {found}"


def test_no_broken_internal_link_and_no_missing_image(site):
    pages = {p: _parse(p) for p in site.rglob("*.html")}
    broken = []
    for page, parsed in pages.items():
        for tag, ref in parsed.refs:
            parts = urlsplit(ref)
            if parts.scheme or parts.netloc or ref.startswith(("mailto:", "data:", "javascript:")):
                continue
            base = site if parts.path.startswith("/") else page.parent  # 404.html: from the root
            path = unquote(parts.path).lstrip("/")
            target = (base / path).resolve() if parts.path else page
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                broken.append(f"{page.relative_to(site)}: <{tag}> {ref}")
                continue
            if parts.fragment and target.suffix == ".html":
                ids = pages[target].ids if target in pages else _parse(target).ids
                if unquote(parts.fragment) not in ids:
                    broken.append(f"{page.relative_to(site)}: <{tag}> {ref} (no such anchor)")
    # fonts and images referenced by the stylesheets (KaTeX's fonts) are there too
    for css in site.rglob("*.css"):
        for ref in re.findall(r"url\(([^)\"']+)\)", css.read_text(encoding="utf-8")):
            if not urlsplit(ref).scheme and not ref.startswith("data:"):
                if not (css.parent / ref.split("#")[0].split("?")[0]).exists():
                    broken.append(f"{css.relative_to(site)}: url({ref})")
    assert not broken, f"{len(broken)} broken references: {broken[:20]}"


def test_equitune_entry_renders_maths_sections_and_links(site):
    page = (site / "api" / "core" / "index.html").read_text(encoding="utf-8")
    start = page.index('id="equijax.equitune"')
    entry = page[start : page.index('id="equijax.equizero"')]
    # the defining equation, marked up for KaTeX (arithmatex generic: \[ ... \])
    equation = r'class="arithmatex">\\\[\s*M_G\(x\) = \\frac\{1\}\{\|G\|\}'
    assert re.search(equation, entry), entry[:3000]
    # Google sections rendered as sections
    for section in ("Parameters:", "Returns:", "Raises:", "Examples:"):
        assert section in entry, section
    # roles became links: to JAX through the cached inventory, to equijax pages through autorefs
    assert 'href="https://docs.jax.dev/en/latest/_autosummary/jax.jit.html#jax.jit"' in entry
    assert re.search(
        r'<a class="autorefs autorefs-internal"[^>]*href="#equijax\.log_weights"[^>]*>'
        r'<code class="ej-ref">equijax.log_weights</code>',
        page,
    )  # lambda_equitune's docstring: :func:`equijax.log_weights`
    # the vendored KaTeX is loaded from the site itself, not from a CDN
    assert re.search(r'<script src="[./]*assets/katex/katex\.min\.js"', page)
    assert "cdn.jsdelivr" not in page and "unpkg.com" not in page


def test_roles_are_mostly_links(site):
    link = re.compile(r'<a class="autorefs[^"]*"[^>]*><code class="ej-ref">')
    linked = unlinked = 0
    for page in (site / "api").rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        found = len(link.findall(text))
        linked += found
        unlinked += text.count('<code class="ej-ref">') - found
    assert linked > 150 and unlinked < 0.2 * (linked + unlinked), (linked, unlinked)


def test_landing_page_shows_the_readme_quickstart(site):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("[start:quickstart]", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    text = _visible_text(site / "index.html")
    assert block.strip() in text
    for heading in ("Install", "Quickstart", "The guarantee", "Main results", "Where to go next"):
        assert heading in text, heading
    page = (site / "index.html").read_text(encoding="utf-8")
    assert 'src="img/continuous_rotations.png"' in page
    assert "pip install" in text


def test_notebook_pages_are_in_the_site(site):
    stems = (
        "quickstart", "equitune_pretrained_image_model", "nnx_training", "decode_your_own_model"
    )
    for stem in stems:
        page = site / "tutorials" / stem / "index.html"
        assert page.exists(), stem
        assert (site / "tutorials" / f"{stem}.ipynb").exists()  # the download link's target
    assert "ej.nnx.EquiTune" in _visible_text(site / "tutorials" / "nnx_training" / "index.html")


@pytest.mark.slow  # executes four notebooks: about a minute or more on 2 cores
def test_full_build_executes_the_notebooks(tmp_path):
    site = tmp_path / "site"
    seconds = _build(site, execute=True)
    quick = _visible_text(site / "tutorials" / "quickstart" / "index.html")
    assert "invariance error" in quick and "No network: skipping the CLIP cell." in quick
    assert "EquizeroLSTM" in quick
    image = _visible_text(site / "tutorials" / "equitune_pretrained_image_model" / "index.html")
    errors = dict(re.findall(r"(equitune|equizero)\s+max invariance error ([0-9.e+-]+)", image))
    assert errors and all(float(v) < 1e-5 for v in errors.values()), errors
    nnx_text = _visible_text(site / "tutorials" / "nnx_training" / "index.html")
    err = float(re.search(r"invariance error in eval mode: ([0-9.e+-]+)", nnx_text).group(1))
    assert err < 1e-5
    decode = _visible_text(site / "tutorials" / "decode_your_own_model" / "index.html")
    fair = dict(re.findall(r"(\w+)\s+fair for keys 0\.\.4: \[([A-Za-z, ]+)\]", decode))
    assert set(fair["pretrained"].split(", ")) == {"False"}, fair  # plain sampling is unfair
    assert {fair["equitune"], fair["equizero"]} == {", ".join(["True"] * 5)}, fair
    figures = sorted((site / "tutorials").rglob("*_files/*.png"))
    assert len(figures) >= 5, figures  # every plt.show() of the three notebooks
    assert all(f.stat().st_size > 1000 for f in figures)
    print(f"full docs build with executed notebooks: {seconds:.0f} s")


def test_pages_missing_from_the_nav_are_listed_under_more(tmp_path):
    """A docs page another change adds without a nav entry still gets a place in the navigation."""
    pytest.importorskip("mkdocs")
    from mkdocs.config import load_config
    from mkdocs.structure.files import get_files
    from mkdocs.structure.nav import get_navigation

    hooks = _load("equijax_docs_site_hooks", DOCS / "hooks" / "site.py")
    docs = tmp_path / "docs"
    docs.mkdir()
    for name in ("index.md", "listed.md", "new_page.md"):
        (docs / name).write_text(f"# {name}\n", encoding="utf-8")
    (tmp_path / "mkdocs.yml").write_text(
        "site_name: t\nnav:\n  - Home: index.md\n  - Listed: listed.md\n", encoding="utf-8"
    )
    config = load_config(str(tmp_path / "mkdocs.yml"))
    files = get_files(config)
    nav = hooks.on_nav(get_navigation(files, config), config=config, files=files)
    assert [item.title for item in nav.items][-1] == "More"
    assert [p.file.src_uri for p in nav.items[-1].children] == ["new_page.md"]
    assert nav.pages[-1].file.src_uri == "new_page.md"
