"""equijax.training.ensemble: vmapped members equal members trained alone; resumable fit."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from equijax.data import scan
from equijax.models import gordon_seq2seq as gs
from equijax.training import SettingsMismatchError, ensemble

L = 8  # target length kept (short commands only)


def _data(split: str, rows: int):
    train, _ = scan.split(split)
    short = [ex for ex in train if len(ex[1].split()) < L][:rows]
    src, tgt = scan.encode(short, max_output_len=L)
    return {"src": src, "src_mask": src != 0, "tgt": tgt, "tgt_mask": tgt != 0}


@pytest.fixture(scope="module")
def setup():
    iv, ov = scan.input_vocab(), scan.output_vocab()
    cfg = gs.GordonSeq2SeqConfig(len(iv), len(ov), cell="lstm", hidden=4,
                                 sos_id=ov.sos_id, eos_id=ov.eos_id)  # fmt: skip
    model = gs.GordonSeq2Seq(cfg)
    opt = gs.paper_optimizer(1e-2)
    # Three members: two splits of different sizes (padded to a common length), two seeds.
    parts = [_data("add_jump", 40), _data("around_right", 30), _data("add_jump", 40)]
    n = jnp.array([40, 30, 40])
    data = jax.tree_util.tree_map(
        lambda *a: np.stack([np.pad(x, [(0, 40 - len(x))] + [(0, 0)] * (x.ndim - 1)) for x in a]),
        *parts,
    )
    state = ensemble.init_members(model.init, opt, seeds=[0, 1, 2])
    return model, opt, data, n, state


def test_vmapped_members_equal_members_trained_alone(setup):
    model, opt, data, n, state = setup
    # Vmapped in two chunks of 6; each member alone in one chunk of 12 (so this also checks
    # that chunk boundaries do not change a run), alone with length buckets (which must not
    # change results either: a member's bucket differs alone and among others).
    vm = ensemble.train_chunk(model.example_loss, opt, 6)
    mid, l1 = vm(state, data, n, 0)
    out, l2 = vm(mid, data, n, 6)
    losses = np.concatenate([l1, l2])
    alone = ensemble.train_chunk(model.example_loss, opt, 12, vmap=False, buckets=(4, L),
                                 length_fn=model.target_length)  # fmt: skip
    take = lambda tree, m: jax.tree_util.tree_map(lambda a: a[m], tree)
    for m in (0, 1):
        one, one_losses = alone(take(state, m), take(data, m), n[m], 0)
        np.testing.assert_allclose(one_losses, losses[:, m], rtol=2e-5, atol=1e-5)
        got = jax.tree_util.tree_leaves(take(out["params"], m))
        for a, b in zip(jax.tree_util.tree_leaves(one["params"]), got, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    # Members really differ (own seeds, own data orders).
    assert not np.allclose(losses[:, 0], losses[:, 2])


@pytest.mark.slow  # ~30-60 s of compilation on 2 cores
def test_fit_keeps_best_and_resumes_honestly(setup, tmp_path):
    model, opt, data, n, state = setup
    calls = []

    def evaluate(params):
        calls.append(1)
        if len(calls) == 2 and fail:
            raise KeyboardInterrupt  # an interruption after the first chunk's checkpoint
        return -jnp.arange(3.0) * len(calls)  # member 0 always 0: best stays at chunk 1

    # members="scan": the members one after the other in one program; the best-validation
    # bookkeeping and the resume do not depend on it.
    kw = dict(loss_fn=model.example_loss, optimizer=opt, iterations=12, chunk=6,
              evaluate=evaluate, progress=False, members="scan")  # fmt: skip
    fail = True
    with pytest.raises(KeyboardInterrupt):
        ensemble.fit(tmp_path / "run", {"what": "test"}, state, data, n, **kw)
    fail = False
    resumed, hist = ensemble.fit(tmp_path / "run", {"what": "test"}, state, data, n, **kw)
    assert [c["step"] for c in hist["chunks"]] == [6, 12]
    calls.clear()
    straight, _ = ensemble.fit(tmp_path / "fresh", {"what": "test"}, state, data, n, **kw)
    for a, b in zip(jax.tree_util.tree_leaves(resumed), jax.tree_util.tree_leaves(straight),
                    strict=True):  # fmt: skip
        np.testing.assert_array_equal(a, b)
    assert resumed["best_step"].tolist() == [6, 6, 6]
    # Members in sequence (scan) end where the vmapped members end.
    vm = ensemble.train_chunk(model.example_loss, opt, 6)
    ref, _ = vm(*vm(state, data, n, 0)[:1], data, n, 6)
    got = jax.tree_util.tree_leaves(straight["state"]["params"])
    for a, b in zip(jax.tree_util.tree_leaves(ref["params"]), got, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    with pytest.raises(SettingsMismatchError, match="chunk"):
        ensemble.fit(tmp_path / "run", {"what": "test"}, state, data, n, **{**kw, "chunk": 4})
