"""The shape of equijax.models: no import circle, the loading sequence written once, one
``from_pretrained`` for either CLIP checkpoint format, and the old CLIP ResNet names kept."""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
MODELS = ROOT / "equijax" / "models"


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    """module -> equijax.models modules it imports, at module level or inside functions."""
    modules = {_module_name(p): p for p in MODELS.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                # `from pkg import sub` imports the submodule when there is one
                subs = [f"{node.module}.{a.name}" for a in node.names]
                targets = [s for s in subs if s in modules] or [node.module]
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_models_have_no_import_circle():
    graph = _import_graph()
    assert "equijax.models.clip.resnet" in graph["equijax.models.clip"]
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])
    # the checker sees a circle: the former clip face -> zoo -> clip_resnet -> clip face
    bad = {k: set(v) for k, v in graph.items()}
    bad["equijax.models.clip.zoo"].add("equijax.models.clip_resnet")
    bad["equijax.models.clip_resnet"].add("equijax.models.clip")
    assert _cycle(bad) is not None


_SEQUENCE_STEPS = {"resolve_pretrained", "read_config", "read_state_dict", "assign"}


@pytest.mark.parametrize(
    "path", ["resnet/convert.py", "clip/convert.py", "gpt2/convert.py", "clip_resnet.py"]
)
def test_family_loaders_leave_the_loading_sequence_to_the_port_layer(path):
    """resolve -> config -> build -> read -> assign lives once, in _load.load_pretrained."""
    tree = ast.parse((MODELS / path).read_text(encoding="utf-8"))
    called = {
        node.func.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
    }
    repeated = called & _SEQUENCE_STEPS
    if path == "resnet/convert.py":  # load_variables(model, state_dict) assigns a given state dict
        repeated -= {"assign"}
    assert not repeated, f"{path} repeats steps of _load.load_pretrained: {sorted(repeated)}"


def test_clip_from_pretrained_reads_both_checkpoint_formats(tmp_path):
    from equijax.models import clip, clip_resnet
    from equijax.models import testing as tiny

    rn_dir = tiny.write_tiny_random_clip_resnet(tmp_path / "rn")
    model, variables = clip.from_pretrained(rn_dir)
    assert isinstance(model, clip.CLIPResNet) and sorted(variables) == ["batch_stats", "params"]
    assert clip.from_pretrained(rn_dir, quick_gelu=False)[0].config.text.hidden_act == "gelu"
    assert clip.is_open_clip(rn_dir) and not clip.is_open_clip(tmp_path)
    # the former module's names are the package's
    assert clip_resnet.CLIPResNet is clip.CLIPResNet
    assert clip_resnet.from_pretrained is clip.from_open_clip
    assert clip_resnet.open_clip_to_flax is clip.open_clip_to_flax
    with pytest.raises(ValueError, match="OpenCLIP"):
        clip.from_pretrained(tmp_path / "missing-vit", quick_gelu=True)
