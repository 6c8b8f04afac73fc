"""Interrupted and repeated runs: equijax.training checkpoints and the experiments that use them.

Interruptions are simulated by removing the newest checkpoint steps (as if the run had been
killed after an earlier chunk) and rerunning; corruption by truncating a file of the newest step.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from equijax.training import (
    CheckpointError,
    SettingsMismatchError,
    canonical_json,
    resume_or_start,
    settings_fingerprint,
)


def _steps(d: Path) -> list[int]:
    return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit())


def _truncate_newest(d: Path) -> int:
    newest = _steps(d)[-1]
    files = [Path(r) / f for r, _, fs in os.walk(d / str(newest) / "state") for f in fs
             if f == "_METADATA"]  # fmt: skip
    assert files
    for f in files:
        f.write_bytes(f.read_bytes()[:7])
    return newest


def _train(d: Path, settings: dict, upto: int, **kw):
    """A toy 'training': state w = step, history = [1..step]; stops after step ``upto``."""
    with resume_or_start(d, settings, {"w": jnp.zeros(3)}, **kw) as run:
        for s in range(run.step + 1, upto + 1):
            run.history.append(s)
            run.save(s, {"w": jnp.full(3, float(s))}, run.history)
        return run


# ----------------------------------------------------------------------------- library


def test_fingerprint_is_canonical_and_sensitive():
    a = {"lr": 1e-4, "cells": ("lstm", "gru"), "out": {"nested": Path("x")}}
    b = {"out": {"nested": "x"}, "cells": ["lstm", "gru"], "lr": 0.0001}
    assert canonical_json(a) == canonical_json(b)
    assert settings_fingerprint(a) == settings_fingerprint(b)
    assert settings_fingerprint({**a, "lr": 1e-3}) != settings_fingerprint(a)
    with pytest.raises(TypeError, match=r"settings\.f"):
        settings_fingerprint({"f": object()})


def test_resume_continues_with_whole_history(tmp_path, caplog):
    d = tmp_path / "ck"
    _train(d, {"lr": 0.1}, upto=2)
    with caplog.at_level("INFO", logger="equijax.training"):
        run = _train(d, {"lr": 0.1}, upto=5)
    assert "resumed from step 2" in caplog.text
    assert run.history == [1, 2, 3, 4, 5] and _steps(d) == [4, 5]  # two newest kept
    with resume_or_start(d, {"lr": 0.1}, {"w": jnp.zeros(3)}) as again:
        assert again.resumed and again.step == 5 and again.history == [1, 2, 3, 4, 5]
        np.testing.assert_array_equal(again.state["w"], np.full(3, 5.0))


def test_other_settings_are_refused_naming_the_difference(tmp_path):
    d = tmp_path / "ck"
    _train(d, {"lr": 0.1, "steps": 3}, upto=1)
    with pytest.raises(SettingsMismatchError, match=r"lr: 0\.1 -> 0\.2.*--out") as err:
        resume_or_start(d, {"lr": 0.2, "steps": 3}, {"w": jnp.zeros(3)}, hint="use --out")
    assert err.value.differences == {"lr": (0.1, 0.2)}
    assert _steps(d) == [1]  # nothing touched


def test_no_resume_moves_the_old_run_aside(tmp_path):
    d = tmp_path / "ck"
    _train(d, {"lr": 0.1}, upto=2)
    run = _train(d, {"lr": 0.2}, upto=1, resume=False)
    assert not run.resumed and run.history == [1]
    (old,) = tmp_path.glob("ck.replaced-*")
    assert _steps(old) == [1, 2]  # the previous run is kept, not deleted
    assert json.loads((old / "equijax_run.json").read_text())["settings"] == {"lr": 0.1}


def test_foreign_directory_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(CheckpointError, match="refusing to write"):
        resume_or_start(tmp_path, {"lr": 0.1}, {"w": jnp.zeros(3)}, resume=False)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_corrupt_newest_step_falls_back_with_a_warning(tmp_path):
    d = tmp_path / "ck"
    _train(d, {"lr": 0.1}, upto=3)
    bad = _truncate_newest(d)
    msg = rf"cannot read checkpoint .*{bad} \(file .*_METADATA\).*resumed from step 2"
    with pytest.warns(RuntimeWarning, match=msg):
        run = _train(d, {"lr": 0.1}, upto=2)
    assert run.step == 2 and run.history == [1, 2] and run.skipped_steps == [3]
    assert _steps(d / "_unreadable") == [] and len(list((d / "_unreadable").iterdir())) == 1
    run = _train(d, {"lr": 0.1}, upto=4)  # the run continues and saves over the old step 3
    assert run.history == [1, 2, 3, 4]


def test_all_steps_unreadable_raises_naming_the_step(tmp_path):
    d = tmp_path / "ck"
    _train(d, {"lr": 0.1}, upto=1)
    _truncate_newest(d)
    with pytest.raises(CheckpointError, match=rf"{d / '1'} \(file .*_METADATA\).*--no-resume"):
        resume_or_start(d, {"lr": 0.1}, {"w": jnp.zeros(3)}, hint="pass --no-resume")
    _train(tmp_path / "ck2", {"a": 1}, upto=1)
    with pytest.raises(CheckpointError, match=r"ck2/1: .*shape"):
        resume_or_start(tmp_path / "ck2", {"a": 1}, {"w": jnp.zeros(4)})


# ----------------------------------------------------------------------------- DQN


gymnax = pytest.importorskip("gymnax")


@pytest.fixture(scope="module")
def tiny_dqn():
    from equijax.rl import DQNConfig, make_env

    env, params = make_env("gridworld", size=3)
    cfg = DQNConfig(total_steps=400, num_envs=4, learning_starts=40, buffer_size=400,
                    target_update_interval=80, batch_size=8)  # fmt: skip
    return env, params, cfg


@pytest.mark.slow  # one DQN compilation: ~20 s on a quiet 2-core machine
def test_dqn_interrupted_run_matches_uninterrupted(tiny_dqn, tmp_path):
    from experiments import dqn

    env, params, cfg = tiny_dqn
    settings = {"experiment": "test", "cfg": cfg}
    kw = dict(num_chunks=4, settings=settings, desc="t", resume=True)
    full, hist_full, resumed = dqn.pretrain(env, params, cfg, [0, 1], directory=tmp_path / "a",
                                            **kw)
    assert resumed is None and len(hist_full) == 4
    # Interrupted after chunk 2: the newer steps never reached the disk.
    d = tmp_path / "b"
    dqn.pretrain(env, params, cfg, [0, 1], directory=d, **kw)
    for s in _steps(d)[-1:]:
        shutil.rmtree(d / str(s))
    state, hist, resumed = dqn.pretrain(env, params, cfg, [0, 1], directory=d, **kw)
    assert resumed == 75 and len(hist) == 4  # the history covers the whole run
    assert json.dumps(hist) == json.dumps(hist_full)
    for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(state), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_dqn_rerun_with_other_settings_exits_2_with_one_line(tmp_path, capsys):
    from experiments import dqn

    d = tmp_path / "gridworld" / "checkpoints"
    with resume_or_start(d, {"experiment": "dqn", "env": "gridworld", "lr": "other"}, {}):
        pass
    with pytest.raises(SystemExit) as exit_info:
        dqn.main(["--env", "gridworld", "--seeds", "1", "--steps", "400", "--chunks", "2",
                  "--out", str(tmp_path)])  # fmt: skip
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "other settings" in err and "--out" in err and "--no-resume" in err


# ----------------------------------------------------------------------------- SCAN


@pytest.mark.slow  # seq2seq compilations: ~20 s on a quiet 2-core machine
def test_scan_pretraining_resumes_exactly_and_checks_settings(tmp_path):
    import dataclasses

    from equijax.data import scan as scan_data
    from equijax.models import seq2seq as s2s
    from experiments import scan

    s = scan.parse_args(["--quick", "--pretrain-examples", "96", "--batch-size", "16",
                         "--out", str(tmp_path)])  # fmt: skip
    full = scan.load_split("add_jump", s.val_fraction)
    data = dataclasses.replace(full, train=tuple(a[:200] for a in full.train))
    model = s2s.Seq2Seq(len(scan_data.input_vocab()), len(scan_data.output_vocab()),
                        cell="rnn", hidden=8)  # fmt: skip
    p_full, info = scan.pretrain(model, data, 0, s, tmp_path / "a")
    assert info["resumed_from_step"] is None and [h["step"] for h in info["history"]] == [
        1, 2, 3, 4, 5, 6]  # fmt: skip
    d = tmp_path / "b"
    scan.pretrain(model, data, 0, s, d)
    shutil.rmtree(d / "6")  # interrupted after step 5
    p_res, info2 = scan.pretrain(model, data, 0, s, d)
    assert info2["resumed_from_step"] == 5 and info2["history"] == info["history"]
    for a, b in zip(jax.tree.leaves(p_full), jax.tree.leaves(p_res), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert _steps(d) == [5, 6]  # keeps more than one checkpoint
    other = dataclasses.replace(s, lr=s.lr / 2)
    with pytest.raises(SettingsMismatchError, match="lr"):
        scan.pretrain(model, data, 0, other, d)


def _refused(main, argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "other settings" in err and "--out" in err and "--no-resume" in err, err


def test_scan_and_cnn_refuse_checkpoints_of_other_settings(tmp_path, capsys):
    from experiments import cnn_rot90, scan

    other = {"experiment": "other"}
    with resume_or_start(tmp_path / "scan" / "checkpoints" / "around_right-lstm-s0", other, {}):
        pass
    _refused(scan.main, ["--quick", "--splits", "around_right", "--out", str(tmp_path / "scan")],
             capsys)  # fmt: skip
    pytest.importorskip("mlxtend")
    with resume_or_start(tmp_path / "cnn" / "checkpoints" / "pretrain", other, {}):
        pass
    _refused(cnn_rot90.main, ["--quick", "--out", str(tmp_path / "cnn")], capsys)
