"""Demographic groups as permutation groups on GPT-2 token ids.

An *equality set* is a list of words that should be treated alike, e.g. ``[" man", " woman"]``.
Every set of a group must have the same size ``k``; the group is the cyclic group ``Z_k`` whose
generator moves word ``i`` of every set to word ``i + 1`` (for ``k = 2`` a swap). It acts on
token ids with :meth:`~equijax.groups.PermutationGroup.act` and on next-token logits with
:meth:`~equijax.groups.PermutationGroup.act_axis`.

The map from words to tokens is a true permutation of the vocabulary:

* every word must be a single BPE token (the reference code used only the first BPE piece of a
  multi-token word, so e.g. two words sharing a first piece collided); a word that is several
  tokens is rejected with a ``ValueError`` naming its pieces, or, with ``multi_token="skip"``,
  its whole set is left out and recorded in :attr:`DemographicGroup.skipped`;
* a token may appear in only one set, once (duplicates / overlapping sets raise ``ValueError``);
* leading-space and capitalisation variants (``" man"``, ``"man"``, ``" Man"``, ``"Man"``) are
  added as further cycles when every word of the set has that variant as a single token; a
  variant that is not single-token for every word of its set is skipped (and recorded).

*General words* (``he``, ``she``, ``his``, ``her``, ``him``) are not moved by the group; R-EquiLM
gives them the identity branch's logits (see :mod:`equijax.nlg.decoding`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np

from equijax._src.groups import PermutationGroup, permutation
from equijax.models.gpt2.tokenizer import bytes_to_unicode

__all__ = [
    "ATTRIBUTES",
    "DemographicGroup",
    "default_data_dir",
    "demographic_group",
    "gendered_word_sets",
    "load_word_lists",
    "prompts",
]

ATTRIBUTES = ("gender", "color", "sexuality")

#: Prompt subjects of Sheng et al. (2019) per attribute, in the order of the equality set.
_SUBJECTS = {
    "gender": ("man", "woman"),
    "color": ("Black person", "White person"),
    "sexuality": ("gay person", "straight person"),
}


@dataclasses.dataclass(frozen=True)
class DemographicGroup:
    """A demographic permutation group on a vocabulary, plus the general-word ids.

    Hashable and static (only Python ints and strings), so it can be a static argument of
    :func:`jax.jit`.

    Attributes:
      group: the :class:`~equijax.groups.PermutationGroup` on ``[0, vocab_size)``.
      words: the word strings of every cycle (one tuple per cycle, set order).
      cycles: the token ids of every cycle (parallel to ``words``).
      general_ids: token ids of the general words (fixed by the group).
      skipped: human-readable notes on variants / sets that were left out.
    """

    group: PermutationGroup
    words: tuple[tuple[str, ...], ...]
    cycles: tuple[tuple[int, ...], ...]
    general_ids: tuple[int, ...] = ()
    skipped: tuple[str, ...] = ()

    @property
    def order(self) -> int:
        """``|G|``."""
        return self.group.order

    @property
    def vocab_size(self) -> int:
        """Size of the vocabulary the group acts on."""
        return self.group.n

    def general_mask(self) -> np.ndarray:
        """``(vocab_size,)`` bool mask of the general words."""
        mask = np.zeros(self.vocab_size, bool)
        mask[list(self.general_ids)] = True
        return mask


# ------------------------------------------------------------------------------------------
# Tokenisation of single words.
# ------------------------------------------------------------------------------------------


def _byte_encoder() -> dict[int, str]:
    """GPT-2's reversible byte -> printable-unicode map (``" "`` -> ``"Ġ"``)."""
    return bytes_to_unicode()


def _encoder(tokenizer: Any) -> tuple[Callable[[str], list[int] | None], int]:
    """Returns ``(encode(word) -> ids or None if out of vocabulary, vocab_size)``."""
    if isinstance(tokenizer, Mapping):
        vocab = {str(k): int(v) for k, v in tokenizer.items()}
        if not vocab:
            raise ValueError("tokenizer: the vocabulary mapping is empty.")
        size = max(vocab.values()) + 1
        be = _byte_encoder()

        def encode_map(word: str) -> list[int] | None:
            piece = "".join(be[b] for b in word.encode("utf-8"))
            return [vocab[piece]] if piece in vocab else None

        return encode_map, size
    if hasattr(tokenizer, "encode"):
        size = len(tokenizer)
        unk = getattr(tokenizer, "unk_token_id", None)

        def encode_tok(word: str) -> list[int] | None:
            ids = list(tokenizer.encode(word, add_special_tokens=False))
            if not ids or (unk is not None and unk in ids):
                return None
            return ids

        return encode_tok, size
    raise TypeError(
        "tokenizer must be a tokenizer with .encode (e.g. equijax.models.gpt2.load_tokenizer(...)) "
        f"or a mapping from byte-level BPE strings to ids (encoder.json), got {type(tokenizer)}."
    )


def _variants(word: str) -> list[str]:
    """The word as given first, then leading-space and first-letter case variants."""
    core = word.strip()
    lead = word[: len(word) - len(word.lstrip())]
    cases = [core, core[:1].upper() + core[1:], core[:1].lower() + core[1:]]
    spaces = [lead, "" if lead else " "]
    out: list[str] = []
    for sp in spaces:
        for c in cases:
            v = sp + c
            if v not in out:
                out.append(v)
    return [word, *(v for v in out if v != word)]


def demographic_group(
    tokenizer: Any,
    equality_sets: Sequence[Sequence[str]],
    *,
    general_words: Sequence[str] = (),
    variants: bool = True,
    multi_token: Literal["error", "skip"] = "error",
    vocab_size: int | None = None,
    fixed_ids: Sequence[int] = (),
    name: str | None = None,
) -> DemographicGroup:
    """Builds the permutation group of a list of equality sets on a tokenizer's vocabulary.

    Args:
      tokenizer: a tokenizer with ``encode`` (e.g. from
        :func:`equijax.models.gpt2.load_tokenizer`), or a byte-level BPE vocabulary mapping
        (GPT-2's ``encoder.json``; words are looked up whole, ``" man"`` as ``"Ġman"``).
      equality_sets: sets of words of equal size ``k >= 2``, e.g. ``[[" man", " woman"]]``.
      general_words: words that stay fixed and that R-EquiLM takes from the identity branch
        (their variants are added too when ``variants``).
      variants: also add leading-space and capitalisation variants (each as its own cycle).
      multi_token: ``"error"`` rejects a word that is several tokens (or missing from the
        vocabulary); ``"skip"`` drops its whole set with a warning.
      vocab_size: size of the id space (default: the tokenizer's; pass the model's
        ``config.vocab_size`` if it differs).
      fixed_ids: ids that must not move (e.g. EOS / padding); checked.
      name: display name of the group.

    Returns:
      A :class:`DemographicGroup` of order ``k``.

    Raises:
      ValueError: for sets of unequal or too small size, words that are not a single token
        (``multi_token="error"``) or missing from the vocabulary, duplicate words / tokens
        (within or across sets), general words inside a set, or no set left.
      TypeError: for an unsupported ``tokenizer``.

    Examples:
      >>> vocab = {"Ġman": 0, "Ġwoman": 1, "man": 2, "woman": 3, "Ġhe": 4, "Ġshe": 5, "x": 6}
      >>> dg = demographic_group(vocab, [[" man", " woman"]], general_words=[" he", " she"])
      >>> dg.order, dg.cycles, dg.general_ids
      (2, ((0, 1), (2, 3)), (4, 5))
      >>> dg.group.act(1, [0, 2, 6]).tolist()
      [1, 3, 6]
    """
    if multi_token not in ("error", "skip"):
        raise ValueError(f"multi_token must be 'error' or 'skip', got {multi_token!r}.")
    sets = [tuple(s) for s in equality_sets]
    if not sets:
        raise ValueError("equality_sets must hold at least one set, e.g. [[' man', ' woman']].")
    for s in sets:
        if any(not isinstance(w, str) or not w.strip() for w in s):
            raise ValueError(f"equality set {list(s)} holds an empty or non-string word.")
    sizes = {len(s) for s in sets}
    if len(sizes) != 1 or min(sizes) < 2:
        raise ValueError(
            f"every equality set must have the same size >= 2 (the group is Z_k acting on all "
            f"sets at once), got sizes {sorted(len(s) for s in sets)}."
        )
    k = sizes.pop()
    seen_words: dict[str, int] = {}
    for i, s in enumerate(sets):
        for w in s:
            if w in seen_words:
                raise ValueError(
                    f"word {w!r} appears in equality sets {seen_words[w]} and {i} (or twice in "
                    "one); the sets must be disjoint for the map to be a permutation. Remove "
                    "the duplicate."
                )
            seen_words[w] = i
    encode, size = _encoder(tokenizer)
    n = int(vocab_size) if vocab_size is not None else size
    if n < size and not isinstance(tokenizer, Mapping):
        warnings.warn(f"vocab_size={n} is smaller than the tokenizer's {size} ids", stacklevel=2)

    skipped: list[str] = []
    used: dict[int, str] = {}
    cycles: list[tuple[int, ...]] = []
    words: list[tuple[str, ...]] = []

    def claim(ids: tuple[int, ...], ws: tuple[str, ...]) -> None:
        for t, w in zip(ids, ws, strict=True):
            if t in used:
                raise ValueError(
                    f"token {t} ({w!r}) is also the token of {used[t]!r}: the equality sets "
                    "overlap (or a word repeats), so the map is not a permutation. Remove one "
                    "of them."
                )
            if not 0 <= t < n:
                raise ValueError(f"token id {t} of {w!r} is outside vocab_size={n}.")
        for t, w in zip(ids, ws, strict=True):
            used[t] = w
        cycles.append(ids)
        words.append(ws)

    for s in sets:
        primary = [encode(w) for w in s]
        bad = [(w, p) for w, p in zip(s, primary, strict=True) if p is None or len(p) != 1]
        if bad:
            what = "; ".join(
                f"{w!r} is missing from the vocabulary" if p is None
                else f"{w!r} is {len(p)} tokens {p}" for w, p in bad
            )  # fmt: skip
            if multi_token == "error":
                raise ValueError(
                    f"equality set {list(s)}: {what}. Every word must be exactly one token so "
                    "that the group permutes the vocabulary; use single-token words (mind the "
                    "leading space), or multi_token='skip' to drop such sets."
                )
            skipped.append(f"set {list(s)}: {what}")
        else:
            claim(tuple(p[0] for p in primary), s)  # type: ignore[index]
        if not variants:
            continue
        forms = list(zip(*(_variants(w)[1:] for w in s), strict=True))
        for form in forms:
            enc = [encode(w) for w in form]
            if any(e is None or len(e) != 1 for e in enc):
                skipped.append(f"variant {list(form)}: not a single token for every word")
                continue
            ids = tuple(e[0] for e in enc)  # type: ignore[index]
            if len(set(ids)) != len(ids) or any(t in used for t in ids):
                skipped.append(f"variant {list(form)}: tokens already used")
                continue
            claim(ids, form)
    n_sets = sum(1 for x in skipped if x.startswith("set "))
    if n_sets:
        warnings.warn(
            f"{n_sets} equality sets are not single tokens in the form given and were skipped "
            "(their single-token variants were kept); see DemographicGroup.skipped.",
            stacklevel=2,
        )
    if not cycles:
        raise ValueError(
            "no equality set is left (all were skipped as multi-token); see the warnings."
        )

    gen_ids: list[int] = []
    for w in general_words:
        forms = _variants(w) if variants else [w]
        for j, f in enumerate(forms):
            enc = encode(f)
            if enc is None or len(enc) != 1:
                if j == 0:
                    raise ValueError(
                        f"general word {w!r} is not a single token ({enc}); use single-token "
                        "general words."
                    )
                continue
            t = enc[0]
            if t in used:
                raise ValueError(
                    f"general word {f!r} (token {t}) is also in an equality set "
                    f"({used[t]!r}); a word is either general or in an equality set."
                )
            if t not in gen_ids:
                gen_ids.append(t)
    group = permutation(n, [tuple(c) for c in cycles], name=name or "demographic")
    if group.order != k:  # pragma: no cover - guaranteed by the equal set sizes
        raise AssertionError(group.order)
    for t in fixed_ids:
        if t in used:
            raise ValueError(
                f"token {t} must stay fixed (EOS/padding) but is in an equality set as {used[t]!r}."
            )
    return DemographicGroup(
        group=group,
        words=tuple(words),
        cycles=tuple(cycles),
        general_ids=tuple(sorted(gen_ids)),
        skipped=tuple(skipped),
    )


# ------------------------------------------------------------------------------------------
# The shared word lists and prompts.
# ------------------------------------------------------------------------------------------


def default_data_dir() -> pathlib.Path:
    """``$EQUIJAX_SHARED_DATA/nlg_fairness``, else ``../shared/data/nlg_fairness`` of the repo."""
    root = os.environ.get("EQUIJAX_SHARED_DATA")
    base = pathlib.Path(root) if root else pathlib.Path(__file__).resolve().parents[3] / "shared"
    if not root:
        base = base / "data"
    return base / "nlg_fairness"


def load_word_lists(data_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Reads ``nlg_fairness_words.json`` (prompt format, contexts, equality sets, general words).

    Raises:
      FileNotFoundError: if the file is missing (pass ``data_dir``).
    """
    path = pathlib.Path(data_dir or default_data_dir()) / "nlg_fairness_words.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found; pass data_dir= (the folder nlg_fairness of the shared data) or "
            "set EQUIJAX_SHARED_DATA."
        )
    return json.loads(path.read_text())


def gendered_word_sets(
    data_dir: str | os.PathLike | None = None,
    *,
    small: bool = False,
    drop_conflicts: bool = False,
) -> list[list[str]]:
    """The long paired gendered word lists as equality sets ``[[" father", " mother"], ...]``.

    Lines pair by position; a leading space is added (GPT-2 word-start tokens). The source lists
    are not a permutation (e.g. ``his`` and ``him`` both pair with ``her``): such conflicts raise a
    ``ValueError`` unless ``drop_conflicts=True``, which drops every pair that shares a word with
    another pair (with a warning).

    Raises:
      ValueError: for lists of different lengths or conflicting pairs.
    """
    d = pathlib.Path(data_dir or default_data_dir()) / "fairness_words"
    suffix = "_small" if small else ""
    male = (d / f"male_words{suffix}.txt").read_text().splitlines()
    female = (d / f"female_words{suffix}.txt").read_text().splitlines()
    male = [w.strip() for w in male if w.strip()]
    female = [w.strip() for w in female if w.strip()]
    if len(male) != len(female):
        raise ValueError(f"gendered lists differ in length: {len(male)} vs {len(female)}.")
    pairs = [(m, f) for m, f in zip(male, female, strict=True) if m != f]
    counts: dict[str, int] = {}
    for p in pairs:
        for w in set(p):
            counts[w] = counts.get(w, 0) + 1
    bad = [p for p in pairs if any(counts[w] > 1 for w in p)]
    if bad:
        if not drop_conflicts:
            raise ValueError(
                f"the gendered lists are not a permutation: pairs {bad[:6]} share words. Pass "
                "drop_conflicts=True to drop them."
            )
        warnings.warn(f"dropping {len(bad)} conflicting gendered pairs: {bad}", stacklevel=2)
        pairs = [p for p in pairs if p not in bad]
    return [[" " + m, " " + f] for m, f in pairs]


def prompts(
    attribute: str,
    context_type: Literal["respect", "occupation"],
    data_dir: str | os.PathLike | None = None,
) -> dict[str, list[str]]:
    """Prompts ``"The {demographic} {context}"`` per demographic of ``attribute``.

    Returns:
      ``{demographic: [prompt per context]}``, demographics in equality-set order.

    Examples:
      >>> p = prompts("gender", "respect")
      >>> p["woman"][0]
      'The woman was known for'
    """
    if attribute not in _SUBJECTS:
        raise ValueError(f"attribute must be one of {ATTRIBUTES}, got {attribute!r}.")
    words = load_word_lists(data_dir)
    contexts = words["contexts"]
    if context_type not in contexts:
        raise ValueError(f"context_type must be one of {sorted(contexts)}, got {context_type!r}.")
    fmt = words["prompt_format"]
    return {
        subj: [fmt.format(demographic=subj, context=c) for c in contexts[context_type]]
        for subj in _SUBJECTS[attribute]
    }
