"""experiments.scan_paper: flags, and the tiny preset end to end (slow)."""

from __future__ import annotations

import json

import pytest

from experiments import scan_paper


def test_flags_and_presets():
    s, args = scan_paper.parse_config(
        scan_paper.Config, ["--preset", "tiny", "--cells", "lstm,gru", "rnn"],
        prog=scan_paper.PROG, description="", presets=scan_paper.PRESETS,
        plain=scan_paper._plain, prepare=scan_paper._prepare,
    )  # fmt: skip
    assert s.cells == ("lstm", "gru", "rnn") and s.iterations == 60 and not args.fresh
    paper = scan_paper.Config.paper()
    assert (paper.iterations, paper.lr, paper.seeds, paper.cells) == (200_000, 1e-4, (0, 1, 2),
                                                                       ("lstm",))  # fmt: skip
    assert paper.splits == ("add_jump", "around_right") and paper.val_fraction == 0.2
    with pytest.raises(ValueError, match="--cells"):
        scan_paper.Config(cells=("transformer",))


@pytest.mark.slow
def test_tiny_preset_end_to_end_and_resume(tmp_path):
    out = tmp_path / "run"
    first = scan_paper.main(["--preset", "tiny", "--out", str(out)])
    stored = json.loads((out / "results.json").read_text())
    res = stored["results"]["lstm"]
    for split in ("add_jump", "around_right"):
        for key, _, _ in scan_paper.METHODS:
            for part in ("val", "test"):
                vals = res[split][key][part]
                assert len(vals) == 2 and all(0.0 <= v <= 100.0 for v in vals)
    assert "| Add Jump | EquiLSTM (whole-seq., paper) |" in (out / "results.md").read_text()
    assert all(1 <= s <= 60 for s in stored["best_step"]["lstm"])
    # A rerun resumes the finished run (no training) and reproduces the table.
    again = scan_paper.main(["--preset", "tiny", "--out", str(out)])
    assert again["results"] == first["results"]
    # Other settings on the same directory are refused (exit code 2), not silently reused.
    with pytest.raises(SystemExit) as err:
        scan_paper.main(["--preset", "tiny", "--out", str(out), "--lr", "0.001"])
    assert err.value.code == 2
