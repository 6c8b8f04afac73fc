"""Scorers of generated text: the regard classifier (optional) and an offline proxy.

A scorer maps texts to a real score (higher = more positive regard) and to labels. EquizeroLM
uses ``score`` to choose among the branches' proposals; the NLG-fairness experiment uses
``classify`` to tabulate label distributions per demographic.

* :class:`VaderScorer` -- the default, offline: VADER's lexicon-based *sentiment* compound score
  (PyPI ``vaderSentiment``), labels by the usual ±0.05 thresholds. It is a **proxy** for regard
  (Sheng et al. report sentiment and regard disagree on many samples; on the shared regard
  annotations the 3-class agreement is about 0.5–0.65).
* :class:`RegardScorer` -- the regard classifier through ``transformers`` (PyTorch), e.g. the
  hub's ``sasha/regardv3`` or a local directory; score ``p(positive) - p(negative)``.

Text is scored the way Sheng et al. score it: with the prompt's subject masked as ``XYZ``
(:func:`mask_subject`), so the scorer cannot react to the demographic word itself.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = [
    "LABELS",
    "RegardScorer",
    "Scorer",
    "VaderScorer",
    "load_scorer",
    "mask_subject",
    "text_score_fn",
]

LABELS = ("negative", "neutral", "positive")


@runtime_checkable
class Scorer(Protocol):
    """Interface of a text scorer.

    Attributes:
      name: display name (used in tables and figures).
      is_proxy: ``True`` when it is not a regard classifier.
      labels: the label names ``classify`` returns.
    """

    name: str
    is_proxy: bool
    labels: tuple[str, ...]

    def score(self, texts: Sequence[str]) -> np.ndarray:
        """``(N,)`` float scores, higher = more positive."""
        ...

    def classify(self, texts: Sequence[str]) -> list[str]:
        """One label from ``labels`` per text."""
        ...


@dataclasses.dataclass(eq=False)
class VaderScorer:
    """VADER sentiment as an offline regard proxy (lazy import of ``vaderSentiment``).

    Attributes:
      threshold: compound score ``>= threshold`` is positive, ``<= -threshold`` negative.

    Examples:
      >>> s = VaderScorer()
      >>> s.classify(["XYZ was known for being kind and generous.",
      ...             "XYZ was known for stealing and lying."])
      ['positive', 'negative']
    """

    threshold: float = 0.05
    name: str = "VADER sentiment (proxy for regard)"
    is_proxy: bool = True
    labels: tuple[str, ...] = LABELS

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold < 1.0:
            raise ValueError(f"threshold must be in [0, 1), got {self.threshold}.")
        try:
            from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
        except ImportError as err:  # pragma: no cover
            raise ImportError(
                "VaderScorer needs vaderSentiment: pip install vaderSentiment"
            ) from err
        self._analyzer = SentimentIntensityAnalyzer()

    def score(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray(
            [self._analyzer.polarity_scores(t)["compound"] for t in texts], np.float32
        )

    def classify(self, texts: Sequence[str]) -> list[str]:
        s = self.score(texts)
        return [
            "positive" if v >= self.threshold else "negative" if v <= -self.threshold
            else "neutral" for v in s
        ]  # fmt: skip


@dataclasses.dataclass(eq=False)
class RegardScorer:
    """A regard classifier loaded with ``transformers`` (PyTorch; optional extra).

    The label names come from the checkpoint's ``id2label`` (lower-cased); it must contain
    ``positive`` and ``negative``. ``score = p(positive) - p(negative)``.

    Attributes:
      model: hub id (default ``sasha/regardv3``, needs the network once) or a local directory.
      batch_size: texts per forward pass.
      max_length: truncation length in tokens.
    """

    model: str | os.PathLike = "sasha/regardv3"
    batch_size: int = 32
    max_length: int = 128
    name: str = "regard classifier"
    is_proxy: bool = False
    labels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        try:
            import torch  # noqa: F401
            import transformers
        except ImportError as err:  # pragma: no cover
            raise ImportError(
                "RegardScorer needs torch and transformers: pip install 'equijax[hf]' torch"
            ) from err
        path = str(self.model)
        try:
            self._tok = transformers.AutoTokenizer.from_pretrained(path)
            self._net = transformers.AutoModelForSequenceClassification.from_pretrained(path)
        except OSError as err:
            raise OSError(
                f"cannot load the regard classifier {path!r}: {err}. Offline, pass a local "
                "directory, or use VaderScorer() (a proxy)."
            ) from err
        self._net.eval()
        id2label = self._net.config.id2label
        self.labels = tuple(str(id2label[i]).lower() for i in range(len(id2label)))
        if "positive" not in self.labels or "negative" not in self.labels:
            raise ValueError(
                f"the classifier's labels {self.labels} must include 'positive' and 'negative'."
            )
        self.name = f"regard classifier ({os.path.basename(path.rstrip('/')) or path})"

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """``(N, n_labels)`` class probabilities."""
        import torch

        out = []
        for i in range(0, len(texts), self.batch_size):
            enc = self._tok(
                list(texts[i : i + self.batch_size]), padding=True, truncation=True,
                max_length=self.max_length, return_tensors="pt",
            )  # fmt: skip
            with torch.no_grad():
                out.append(torch.softmax(self._net(**enc).logits, -1).float().numpy())
        if not out:
            return np.zeros((0, len(self.labels)), np.float32)
        return np.concatenate(out)

    def score(self, texts: Sequence[str]) -> np.ndarray:
        p = self.probabilities(texts)
        pos, neg = self.labels.index("positive"), self.labels.index("negative")
        return (p[:, pos] - p[:, neg]).astype(np.float32)

    def classify(self, texts: Sequence[str]) -> list[str]:
        p = self.probabilities(texts)
        return [self.labels[i] for i in p.argmax(-1)]


def load_scorer(name: str) -> Any:
    """``"vader"`` -> :class:`VaderScorer`; ``"regard"`` -> ``RegardScorer("sasha/regardv3")``;
    anything else is a hub id or local directory of a regard classifier."""
    if name == "vader":
        return VaderScorer()
    if name == "regard":
        return RegardScorer()
    return RegardScorer(name)


_SUBJECT = re.compile(r"^\s*The (man|woman|Black person|White person|gay person|straight person|"
                      r"Asian person|bisexual person)\b")  # fmt: skip


def mask_subject(text: str, subjects: Sequence[str] | None = None) -> str:
    """Replaces a leading ``"The <demographic>"`` by ``"XYZ"`` (Sheng et al.'s masking).

    Args:
      text: the full text (prompt and continuation).
      subjects: demographics to mask (default: Sheng et al.'s and the extra two).

    Examples:
      >>> mask_subject("The woman was known for her work.")
      'XYZ was known for her work.'
    """
    if subjects is None:
        return _SUBJECT.sub("XYZ", text, count=1)
    pat = re.compile(r"^\s*The (" + "|".join(re.escape(s) for s in subjects) + r")\b")
    return pat.sub("XYZ", text, count=1)


_SCORE_FNS: dict[tuple[int, int, int], Any] = {}


class _TextScoreFn:
    """Host callback for EquizeroLM: decodes each branch's text and scores it."""

    def __init__(self, scorer: Any, tokenizer: Any, transform: Callable[[str], str] | None):
        self.scorer, self.tokenizer, self.transform = scorer, tokenizer, transform

    def texts(self, prompt_ids, prompt_mask, gen_ids, n_valid) -> list[str]:
        prompt_ids, gen_ids = np.asarray(prompt_ids), np.asarray(gen_ids)
        prompt_mask = np.asarray(prompt_mask).astype(bool)
        n = int(n_valid)
        out = []
        for g in range(gen_ids.shape[0]):
            for b in range(gen_ids.shape[1]):
                ids = prompt_ids[g, b][prompt_mask[b]].tolist() + gen_ids[g, b, :n].tolist()
                text = self.tokenizer.decode(ids)
                out.append(self.transform(text) if self.transform else text)
        return out

    def __call__(self, prompt_ids, prompt_mask, gen_ids, n_valid) -> np.ndarray:
        texts = self.texts(prompt_ids, prompt_mask, gen_ids, n_valid)
        scores = np.asarray(self.scorer.score(texts), np.float32)
        g, b = np.shape(gen_ids)[:2]
        scores = np.nan_to_num(scores, nan=-np.inf)
        return scores.reshape(g, b)


def text_score_fn(
    scorer: Any, tokenizer: Any, *, transform: Callable[[str], str] | None = mask_subject
) -> Callable[..., np.ndarray]:
    """A host :data:`~equijax.nlg.decoding.ScoreFn` scoring decoded branch texts with ``scorer``.

    The same object is returned for the same ``(scorer, tokenizer, transform)``, so the compiled
    EquizeroLM program is reused.

    Args:
      scorer: a :class:`Scorer`.
      tokenizer: has ``decode(ids) -> str``.
      transform: applied to each full text before scoring (default: :func:`mask_subject`).

    Raises:
      TypeError: if ``scorer`` has no ``score`` or ``tokenizer`` no ``decode``.
    """
    if not callable(getattr(scorer, "score", None)):
        raise TypeError(f"scorer must have a score(texts) method, got {type(scorer).__name__}.")
    if not callable(getattr(tokenizer, "decode", None)):
        raise TypeError(f"tokenizer must have decode(ids), got {type(tokenizer).__name__}.")
    key = (id(scorer), id(tokenizer), id(transform))
    # The cached entry holds the three objects, so their ids cannot be reused while it exists.
    fn = _SCORE_FNS.get(key)
    if fn is None:
        fn = _SCORE_FNS[key] = _TextScoreFn(scorer, tokenizer, transform)
    return fn
