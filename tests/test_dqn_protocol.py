"""experiments.dqn: --protocol paper, paired confidence intervals over seeds, orderings."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from scipy import stats

from experiments import dqn as exp


def test_paired_ci_matches_scipy_t_interval():
    a = np.array([1.0, 2.5, 0.7, 3.1, 2.2])
    b = np.array([0.4, 1.0, 0.9, 2.0, 1.1])
    d = a - b
    low, high = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
    ci = exp.paired_ci(a, b)
    assert ci["n"] == 5
    assert math.isclose(ci["mean"], d.mean(), rel_tol=1e-12)
    assert math.isclose(ci["low"], low, rel_tol=1e-10)
    assert math.isclose(ci["high"], high, rel_tol=1e-10)
    # by hand: t_{0.975,4} = 2.7764...
    half = 2.7764451051977987 * d.std(ddof=1) / math.sqrt(5)
    assert math.isclose(ci["high"] - ci["mean"], half, rel_tol=1e-9)
    # a − b and b − a give mirrored intervals
    ci_rev = exp.paired_ci(b, a)
    assert math.isclose(ci_rev["low"], -ci["high"]) and math.isclose(ci_rev["high"], -ci["low"])


def test_paired_ci_support_and_edge_cases():
    assert exp.paired_ci([2.0, 2.1, 2.2], [1.0, 1.0, 1.1])["supported"] == ">"
    assert exp.paired_ci([1.0, 1.0, 1.1], [2.0, 2.1, 2.2])["supported"] == "<"
    assert exp.paired_ci([1.0, 2.0, 0.0], [1.0, 1.0, 1.0])["supported"] == "="
    one = exp.paired_ci([1.0], [0.0])
    assert one["supported"] is None and math.isnan(one["low"])
    with pytest.raises(ValueError, match="equal-length"):
        exp.paired_ci([[1.0]], [[0.0]])


def test_pairwise_and_supported_orderings():
    methods = {
        "pretrained": {"per_seed": [0.0, 0.1, 0.0]},
        "equitune": {"per_seed": [1.0, 1.1, 1.05]},
        "equizero": {"per_seed": [1.0, 1.2, 0.9]},
    }
    pairs = exp.pairwise(methods)
    assert [(p["a"], p["b"]) for p in pairs] == [
        ("pretrained", "equitune"),
        ("pretrained", "equizero"),
        ("equitune", "equizero"),
    ]
    sup = exp.supported_orderings(pairs)
    assert sup == ["equitune > pretrained", "equizero > pretrained"]


def test_markdown_contains_intervals():
    methods = {
        m: {
            "per_seed": list(v),
            "mean": float(np.mean(v)),
            "std_over_seeds": 0.1,
            "gain_over_pretrained": 0.0,
            "gain_std_over_seeds": 0.0,
            "seeds_better_than_pretrained": 0,
            "value_overestimation": 0.0,
        }
        for m, v in {
            "pretrained": [0.0, 0.1, 0.0],
            "equitune": [1.0, 1.1, 1.05],
            "equizero": [1.0, 1.2, 0.9],
        }.items()
    }
    pairs = exp.pairwise(methods)
    res = {
        "config": {"env": "gridworld", "seeds": 3, "episodes": 4, "steps": 100, "lr": 1e-4},
        "methods": methods,
        "ordering": ["equitune", "equizero", "pretrained"],
        "paper_order_holds": False,
        "confidence": 0.95,
        "pairwise": pairs,
        "supported_orderings": exp.supported_orderings(pairs),
        "paper_order_supported": False,
    }
    md = exp._markdown(res)
    p = pairs[0]
    assert f"[{p['low']:+.3f}, {p['high']:+.3f}]" in md
    assert "Equitune > Pretrained" in md and "neither (CI contains 0)" in md


def test_paper_protocol_rejects_budget_overrides(capsys):
    for extra, needle in (
        (["--quick"], "drop --quick / --steps"),
        (["--preset", "quick"], "drop --quick / --steps"),
        (["--steps", "1000"], "fixes the budget, lr and seeds"),
        (["--seeds", "3"], "fixes the budget, lr and seeds"),
        (["--lr", "1e-3"], "fixes the budget, lr and seeds"),
        (["--lambda-steps", "5"], "no λ-equitune row: drop --lambda-steps"),
    ):
        with pytest.raises(SystemExit):
            exp.parse_args(["--env", "gridworld", "--protocol", "paper", *extra])
        assert needle in capsys.readouterr().err
    cfg, args = exp.parse_args(["--env", "gridworld", "--protocol", "paper"])
    assert cfg.protocol == "paper" and cfg.seeds == exp.PAPER_SEEDS and args.preset == "paper"
    assert cfg == exp.parse_args(["--env", "gridworld", "--preset", "paper"])[0]
    assert cfg.episodes == exp.PAPER_EPISODES and cfg.methods == exp.PAPER_METHODS
    with pytest.raises(ValueError, match="fixes the budget"):  # the library path checks too
        exp.Config.paper("gridworld", lr=1e-3)


@pytest.mark.parametrize("env", ["gridworld", "cartpole", "acrobot"])
def test_presets_keep_the_budgets_of_the_flags_they_replace(env):
    default, _ = exp.parse_args(["--env", env])
    quick, _ = exp.parse_args(["--env", env, "--quick"])
    also_quick, _ = exp.parse_args(["--env", env, "--protocol", "default", "--quick"])
    assert (default.steps, default.episodes, default.lambda_steps) == (exp.PAPER_STEPS[env], 200,
                                                                       2000)  # fmt: skip
    assert (quick.steps, quick.episodes, quick.lambda_steps) == (exp.QUICK_STEPS[env], 50, 500)
    assert quick == also_quick and default.protocol == quick.protocol == "default"
    assert default.lr == exp.PAPER_LR and default.seeds == exp.PAPER_SEEDS
    assert "lambda_equitune" in default.methods
    over, _ = exp.parse_args(["--env", env, "--quick", "--steps", "400", "--seeds", "2"])
    assert (over.steps, over.seeds, over.episodes) == (400, 2, 50)


def test_checkpoint_fingerprint_covers_pretraining_not_evaluation():
    base = exp.Config.default("gridworld")
    fp = base.checkpoint_settings()
    assert fp["env"] == "gridworld" and fp["seeds"] == list(range(5))
    assert fp["dqn"]["total_steps"] == 100_000 and fp["dqn"]["learning_rate"] == 1e-4
    for change in ({"lr": 3e-4}, {"steps": 400}, {"seeds": 2}, {"num_envs": 2}):
        assert dataclasses.replace(base, **change).checkpoint_settings() != fp, change
    for change in ({"episodes": 3}, {"lambda_steps": 10}):
        assert dataclasses.replace(base, **change).checkpoint_settings() == fp, change
    # the paper protocol pretrains the very same networks: its checkpoints are shared
    assert exp.Config.paper("gridworld").checkpoint_settings() == fp


def test_help_shows_each_preset_value_once(capsys):
    with pytest.raises(SystemExit):
        exp.parse_args(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "[default: 200; paper: 100; quick: 50]" in out  # --episodes
    assert "[default: 100000; paper: 100000; quick: 30000]" in out  # --steps (gridworld)
    assert "--protocol" in out and "--chunks" in out


@pytest.mark.slow  # jit compilation of four methods: ~60 s on a loaded 2-core machine
def test_tiny_end_to_end_writes_intervals(tmp_path):
    pytest.importorskip("gymnax")
    res = exp.main(
        [
            "--env",
            "gridworld",
            "--steps",
            "400",
            "--seeds",
            "2",
            "--episodes",
            "3",
            "--lambda-steps",
            "10",
            "--chunks",
            "1",
            "--out",
            str(tmp_path),
        ]
    )
    saved = json.loads((tmp_path / "gridworld" / "results.json").read_text())
    assert len(saved["pairwise"]) == 6  # 4 methods → 6 pairs
    for p in saved["pairwise"]:
        assert p["low"] <= p["mean"] <= p["high"] and p["n"] == 2
    assert saved["config"]["protocol"] == "default"
    assert "95 % CI" in (tmp_path / "gridworld" / "results.md").read_text()
    assert res["supported_orderings"] == saved["supported_orderings"]


@pytest.mark.slow  # jit compilation: ~40 s on a loaded 2-core machine
def test_tiny_paper_protocol_is_zero_shot_without_lambda(tmp_path, monkeypatch):
    pytest.importorskip("gymnax")
    monkeypatch.setitem(exp.PAPER_STEPS, "gridworld", 400)  # tiny budget, paper protocol
    res = exp.main(["--env", "gridworld", "--protocol", "paper", "--episodes", "3",
                    "--chunks", "1", "--out", str(tmp_path)])  # fmt: skip
    assert tuple(res["methods"]) == exp.PAPER_METHODS and res["config"]["seeds"] == 5
    assert res["lambda_td_loss_first_last"] is None
    assert [(p["a"], p["b"]) for p in res["pairwise"]] == [
        ("pretrained", "equitune"),
        ("pretrained", "equizero"),
        ("equitune", "equizero"),
    ]
    md = (tmp_path / "gridworld" / "results.md").read_text()
    assert "λ-equitune" not in md and "Equitune − Equizero" in md
