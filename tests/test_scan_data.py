"""SCAN data: grammar, published splits, encoding, groups, bad input."""

from __future__ import annotations

import collections
import os
from pathlib import Path

import numpy as np
import pytest

from equijax.data import scan

SHARED = Path(
    os.environ.get("EQUIJAX_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
SCAN_DIR = SHARED / "scan"
PUBLISHED = {
    "add_jump": ("add_prim_split/tasks_train_addprim_jump.txt",
                 "add_prim_split/tasks_test_addprim_jump.txt"),
    "around_right": ("template_split/tasks_train_template_around_right.txt",
                     "template_split/tasks_test_template_around_right.txt"),
}
needs_data = pytest.mark.skipif(not SCAN_DIR.exists(), reason=f"{SCAN_DIR} not present")


def test_all_examples_count_and_unique():
    ex = scan.all_examples()
    assert len(ex) == 20910
    assert len({c for c, _ in ex}) == 20910


@needs_data
def test_all_examples_equal_published_tasks_file():
    ref = scan.load_file(SCAN_DIR / "tasks.txt")
    assert collections.Counter(ref) == collections.Counter(scan.all_examples())


@needs_data
@pytest.mark.parametrize("name", scan.SPLITS)
def test_split_equals_published_files_as_multisets(name):
    train, test = scan.split(name)
    ref_train = scan.load_file(SCAN_DIR / PUBLISHED[name][0])
    ref_test = scan.load_file(SCAN_DIR / PUBLISHED[name][1])
    assert collections.Counter(train) == collections.Counter(ref_train)
    assert collections.Counter(test) == collections.Counter(ref_test)


def test_split_add_jump_structure():
    train, test = scan.split("add_jump")
    assert len(train) == 14670 and len(test) == 7706
    assert all("jump" in c.split() for c, _ in test)
    assert sum(c == "jump" for c, _ in train) == scan.JUMP_REPEATS
    assert all(c == "jump" or "jump" not in c.split() for c, _ in train)


def test_split_around_right_structure():
    train, test = scan.split("around_right")
    assert len(train) == 15225 and len(test) == 4476
    assert all("around right" in c for c, _ in test)
    assert not any("around right" in c for c, _ in train)


@pytest.mark.parametrize(
    ("command", "actions"),
    [
        ("jump", "I_JUMP"),
        ("turn left", "I_TURN_LEFT"),
        ("walk opposite left", "I_TURN_LEFT I_TURN_LEFT I_WALK"),
        ("turn around right", "I_TURN_RIGHT I_TURN_RIGHT I_TURN_RIGHT I_TURN_RIGHT"),
        ("look twice after run right", "I_TURN_RIGHT I_RUN I_LOOK I_LOOK"),
        ("look twice and run right", "I_LOOK I_LOOK I_TURN_RIGHT I_RUN"),
    ],
)
def test_interpret_known_commands(command, actions):
    assert scan.interpret(command) == actions


@pytest.mark.parametrize(
    ("command", "match"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("jump fly", "outside the SCAN vocabulary"),
        ("turn", "not a SCAN verb phrase"),
        ("jump twice twice", "not a SCAN verb phrase"),
    ],
)
def test_interpret_bad_commands_raise(command, match):
    with pytest.raises(ValueError, match=match):
        scan.interpret(command)


def test_split_unknown_name_raises():
    with pytest.raises(ValueError, match="unknown SCAN split"):
        scan.split("length")


def test_encode_roundtrip_and_padding():
    _, test = scan.split("add_jump")
    src, tgt = scan.encode(test)
    assert src.shape == (7706, scan.MAX_INPUT_LEN) and tgt.shape == (7706, scan.MAX_OUTPUT_LEN)
    assert scan.decode_ids(tgt) == [a for _, a in test]
    ov = scan.output_vocab()
    lengths = (tgt != ov.pad_id).sum(1)
    # exactly one EOS, at the last non-pad position
    assert (tgt[np.arange(len(tgt)), lengths - 1] == ov.eos_id).all()
    assert ((tgt == ov.eos_id).sum(1) == 1).all()


def test_encode_bad_input_raises():
    with pytest.raises(ValueError, match="empty"):
        scan.encode([])
    with pytest.raises(ValueError, match="outside the SCAN vocabulary"):
        scan.encode([("jump fly", "I_JUMP")])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        scan.encode([("jump", "I_FLY")])
    with pytest.raises(ValueError, match="max_output_len"):
        scan.encode([("jump around left thrice", scan.interpret("jump around left thrice"))],
                    max_output_len=10)
    with pytest.raises(ValueError, match="max_input_len"):
        scan.encode([("jump twice and run twice", "I_JUMP")], max_input_len=3)


def test_load_file_reports_bad_line(tmp_path):
    p = tmp_path / "bad.txt"
    p.write_text("IN: jump OUT: I_JUMP\nnot a scan line\n")
    with pytest.raises(ValueError, match=":2:"):
        scan.load_file(p)
    p.write_text("IN: jump OUT: I_JUMP\n\nIN: walk OUT: I_WALK\n")
    assert scan.load_file(p) == [("jump", "I_JUMP"), ("walk", "I_WALK")]


def test_train_val_split_disjoint_and_keeps_repeats():
    train, _ = scan.split("add_jump")
    tr, va = scan.train_val_split(train, val_fraction=0.1, seed=3)
    assert len(tr) + len(va) == len(train)
    assert not set(tr) & set(va)
    assert sum(c == "jump" for c, _ in tr) == scan.JUMP_REPEATS


def test_batches_cover_epoch():
    src, tgt = scan.encode(scan.split("around_right")[1][:103])
    seen = np.concatenate([b[0] for b in scan.batches((src, tgt), 10, drop_last=False)])
    assert len(seen) == 103
    assert sorted(map(tuple, seen.tolist())) == sorted(map(tuple, src.tolist()))


@pytest.mark.parametrize("name", ["verb", "direction", "verb4"])
def test_groups_share_cayley_table_and_map_data(name):
    g_in, g_out = scan.groups(name)
    assert g_in.table == g_out.table
    # The group maps (command, actions) pairs to valid pairs: g·actions == interpret(g·command).
    iv, ov = scan.input_vocab(), scan.output_vocab()
    ex = scan.all_examples()[::97]
    src, tgt = scan.encode(ex)
    for g in range(g_in.order):
        gs, gt = np.asarray(g_in.act(g, src)), np.asarray(g_out.act(g, tgt))
        for row_s, row_t in zip(gs, gt, strict=True):
            cmd = " ".join(iv.tokens[i] for i in row_s if i > iv.eos_id)
            assert scan.decode_ids(row_t[None], ov)[0] == scan.interpret(cmd)


def test_groups_unknown_name_raises():
    with pytest.raises(ValueError, match="unknown SCAN group"):
        scan.groups("colour")
