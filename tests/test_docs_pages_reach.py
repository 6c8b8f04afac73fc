"""The Python examples of the large-groups, NNX, continuous-rotations and decoding pages run."""

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.mark.slow  # end-to-end: tens of seconds on 2 cores
@pytest.mark.parametrize(
    "page", ["large_groups.md", "nnx.md", "continuous_rotations.md", "decoding.md"]
)
def test_docs_page_examples_run(page):
    src = (DOCS / page).read_text()
    blocks = re.findall(r"```python\n(.*?)```", src, re.S)
    assert blocks, f"{page} has no Python example"
    exec(compile("\n".join(blocks), page, "exec"), {})
