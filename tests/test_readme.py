"""README stays true: its quickstart runs, and CI runs exactly its test command."""

import contextlib
import io
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _block_after(heading: str, lang: str) -> str:
    section = README.split(heading, 1)[1]
    return re.search(rf"```{lang}\n(.*?)```", section, re.S).group(1)


def test_quickstart_runs_and_makes_the_model_invariant():
    out = io.StringIO()
    namespace: dict = {}
    with contextlib.redirect_stdout(out):
        code = compile(_block_after("## Quickstart", "python"), "README quickstart", "exec")
        exec(code, namespace)
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


@pytest.mark.slow  # end-to-end, > 20 s on 2 cores; CI runs the slow suite too
def test_hub_models_block_runs_with_local_checkpoints(tmp_path):
    """The README's hub example, with tiny random local checkpoints in place of the hub ids."""
    import numpy as np
    import torch
    import transformers

    from equijax.models.testing import write_tiny_random_clip, write_tiny_random_gpt2

    torch.manual_seed(0)
    clip_dir = write_tiny_random_clip(tmp_path / "clip")
    gpt2_dir = write_tiny_random_gpt2(tmp_path / "gpt2")
    resnet_dir = tmp_path / "resnet"
    transformers.ResNetForImageClassification(transformers.ResNetConfig(
        embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="bottleneck",
        num_labels=5,
    )).eval().save_pretrained(resnet_dir)  # fmt: skip

    code = _block_after("## Pretrained models from the Hugging Face hub", "python")
    for hub_id, local in [("openai/clip-vit-base-patch32", clip_dir),
                          ("microsoft/resnet-50", resnet_dir), ("gpt2", gpt2_dir)]:
        assert f'"{hub_id}"' in code
        code = code.replace(f'"{hub_id}"', repr(str(local)))
    code = code.replace("(2, 224, 224, 3)", "(2, 64, 64, 3)")  # tiny models, small images
    namespace: dict = {}
    exec(compile(code, "README hub models", "exec"), namespace)
    assert namespace["clip_logits"].shape == (2, 3)
    assert namespace["resnet_logits"].shape == (2, 5)
    texts = namespace["texts"]
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    assert np.all(np.isfinite(np.asarray(namespace["resnet_logits"])))
    # the README's CLIP classifier really is invariant: rerun it on rotated images
    ns = namespace
    rotated = ns["G"].act(1, ns["images"])
    again = ns["ej"].equizero(lambda y: ns["model"].zero_shot_logits(ns["params"], y, ns["W"]),
                              ns["G"], rotated, loss=ns["ej"].proxies.neg_max_probability)
    np.testing.assert_allclose(np.asarray(again), np.asarray(ns["clip_logits"]), atol=1e-4)
