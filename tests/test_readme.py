"""README stays true: its quickstart runs, and CI runs exactly its test command."""

import contextlib
import io
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _block_after(heading: str, lang: str) -> str:
    section = README.split(heading, 1)[1]
    return re.search(rf"```{lang}\n(.*?)```", section, re.S).group(1)


def test_quickstart_runs_and_makes_the_model_invariant():
    out = io.StringIO()
    namespace: dict = {}
    with contextlib.redirect_stdout(out):
        exec(compile(_block_after("## Quickstart", "python"), "README quickstart", "exec"), namespace)
    before, after = (float(v) for v in out.getvalue().split("->"))
    assert before > 1e-2 and after < 1e-4
    assert namespace["g_star"].shape == (4,)


def test_ci_runs_the_readme_test_command():
    commands = _block_after("## Set up, run, test", "bash").splitlines()
    test_cmd = next(c.split("#")[0].strip() for c in commands if "pytest" in c)
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_cmd in [line.strip() for line in ci]
    install = next(c.split("#")[0].strip() for c in commands if c.startswith("pip install"))
    assert install.replace("pip install", "python -m pip install") in [line.strip() for line in ci]
