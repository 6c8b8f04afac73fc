"""experiments.scan: Config presets, the command line, the canonical method names, the ablation."""

from __future__ import annotations

import dataclasses
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from equijax.data import scan as scan_data
from equijax.models import seq2seq as s2s
from experiments import scan as exp


def test_quick_preset_keeps_the_quick_budgets_and_scaled_finetuning_lr():
    q = exp.parse_args(["--quick"])
    assert q == exp.Config.quick(jobs=q.jobs)
    assert (q.cells, q.seeds, q.pretrain_examples, q.lambda_steps) == (("lstm",), (0,), 160_000, 60)
    assert (q.finetune_steps, q.finetune_batch) == (40, 64)
    # the paper's lr times the batch (the same float operation as before the Config refactor)
    assert q.finetune_lrs == {"add_jump": 1e-5 * 64, "around_right": 2e-5 * 64}
    assert exp.parse_args(["--quick", "--finetune-batch", "8"]).finetune_lrs["add_jump"] == 8e-5
    assert set(exp.parse_args(["--quick", "--finetune-lr", "3e-4"]).finetune_lrs.values()) == {
        3e-4
    }


def test_paper_preset_is_the_papers_protocol():
    p = exp.parse_args([])
    assert p == exp.parse_args(["--preset", "paper"])
    assert (p.cells, p.seeds, p.pretrain_examples) == (("lstm", "gru", "rnn"), (0, 1, 2), 200_000)
    assert (p.lambda_steps, p.finetune_steps, p.finetune_batch) == (1000, 10_000, 1)
    assert p.finetune_lrs == {"add_jump": 1e-5, "around_right": 2e-5}


def test_help_shows_each_preset_value_once(capsys):
    with pytest.raises(SystemExit):
        exp.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "[paper: 200000; quick: 160000]" in text
    assert "[paper: 1; quick: 64]" in text
    assert text.count("[paper: 10000; quick: 40]") == 1
    assert "--ablation" in text and "--no-resume" in text


def test_bad_values_are_refused_on_the_command_line():
    for argv in (["--cells", "transformer"], ["--splits", "length"], ["--jobs", "0"],
                 ["--pretrain-examples", "0"], ["--quick", "--preset", "paper"]):  # fmt: skip
        with pytest.raises(SystemExit):
            exp.parse_args(argv)


def test_checkpoint_fingerprint_covers_the_pretraining_settings_only():
    data = exp.SplitData("add_jump", (), (), (), None, None)
    model = s2s.Seq2Seq(len(scan_data.input_vocab()), len(scan_data.output_vocab()))
    q = exp.Config.quick()
    base = exp.pretrain_settings(model, data, 0, q)
    assert base["pretrain_examples"] == 160_000 and base["lr"] == 3e-3
    # finetuning, λ, evaluation and runtime fields do not shape the pretrained model
    same = dataclasses.replace(q, finetune_steps=3, lambda_steps=1, eval_batch=7, jobs=1)
    assert exp.pretrain_settings(model, data, 0, same) == base
    other = dataclasses.replace(q, pretrain_examples=320_000)
    assert exp.pretrain_settings(model, data, 0, other) != base


def test_rows_use_the_canonical_method_names():
    keys = [k for k, _, _ in exp.ZERO_SHOT] + [k for k, _, _, _ in exp.FINETUNE]
    assert keys == ["pretrained", "equitune", "equitune_sequence", "equitune_sequence_prob",
                    "equizero", "equizero_entropy", "lambda_equitune", "finetuned_equitune",
                    "finetuned_equizero", "finetuned_lambda_equitune"]  # fmt: skip
    assert set(keys) == set(exp.LABELS)
    assert dict((k, kw) for k, _, kw in exp.ABLATION)["equitune_sequence"] == dict(
        method="equitune_sequence", average="logprob", after_eos="zero"
    )


@pytest.mark.slow  # > 20 s on 2 cores; CI runs the slow suite too
def test_old_method_and_proxy_spellings_warn_and_decode_the_same():
    model = s2s.Seq2Seq(len(scan_data.input_vocab()), len(scan_data.output_vocab()), hidden=8)
    params = s2s.init_params(model, jax.random.key(0))
    pairs = [("jump twice", "I_JUMP I_JUMP"), ("walk left", "I_TURN_LEFT I_WALK")]
    src, _ = scan_data.encode(pairs)
    g_in, g_out = scan_data.groups("verb")
    w = lambda f: f[:, 0]
    run = lambda **kw: s2s.equivariant_decode(model, params, jnp.asarray(src), g_in, g_out,
                                              max_len=6, **kw).tokens  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        new_l = run(method="lambda_equitune", weight_fn=w)
        new_z = run(method="equizero", proxy="neg_max_probability")
    with pytest.warns(FutureWarning, match="lambda_equitune"):
        old_l = run(method="lambda", weight_fn=w)
    with pytest.warns(FutureWarning, match="neg_max_probability"):
        old_z = run(method="equizero", proxy="max_prob")
    np.testing.assert_array_equal(np.asarray(old_l), np.asarray(new_l))
    np.testing.assert_array_equal(np.asarray(old_z), np.asarray(new_z))
    with pytest.warns(FutureWarning, match="lambda_equitune"):
        assert exp._canonical_kind("lambda") == "lambda_equitune"


def test_ablation_report_has_one_row_per_variant_and_budget_columns():
    s = exp.Config.quick(splits=("add_jump",))
    accs = {"val": 0.5, "test": 0.25}
    res = {"add_jump": {"lstm": {"0": {str(n): {k: accs for k, _, _ in exp.ABLATION}
                                       for n in (160_000, 320_000)}}}}  # fmt: skip
    md = exp.write_ablation(res, s)
    assert "Add Jump 160k test" in md and "Add Jump 320k test" in md
    for key, _, _ in exp.ABLATION:
        assert f"`{key}`" in md
    assert md.count("| 50.0 | 25.0 | 50.0 | 25.0 |") == len(exp.ABLATION)


@pytest.mark.slow  # 8 seq2seq decoder compilations: 7.5 min on a 2-core machine at load ~15
def test_ablation_decodes_resume_the_trained_models(tmp_path):
    full = exp.load_split("around_right", 0.1)
    data = dataclasses.replace(
        full, train=tuple(a[:200] for a in full.train), val=tuple(a[:16] for a in full.val),
        test=tuple(a[:16] for a in full.test),
    )  # fmt: skip
    s = exp.Config.quick(splits=("around_right",), pretrain_examples=32, batch_size=16,
                         ablation_pretrain_examples=64, eval_batch=32, out=tmp_path)  # fmt: skip
    first = exp.run_ablation(data, "rnn", 0, s)
    assert set(first) == {"32", "64"}
    assert first["64"]["pretrain"]["steps"] == 4 and not first["64"]["pretrain"]["resumed"]
    assert (tmp_path / "checkpoints" / "around_right-rnn-s0-examples64").is_dir()
    again = exp.run_ablation(data, "rnn", 0, s)  # decode-only: both models resumed
    for n in ("32", "64"):
        assert again[n]["pretrain"]["resumed"] and again[n]["pretrain"]["seconds"] == 0.0
        for key, _, _ in exp.ABLATION:
            assert again[n][key]["test"] == first[n][key]["test"]
