"""CLIP's byte-level BPE tokenizer: vocabulary files, loading, and OpenAI-identical ids."""

from __future__ import annotations

import os
import pathlib
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from equijax.models import _hub
from equijax.models._bpe import bytes_to_unicode

__all__ = ["load_tokenizer", "tokenize", "write_bpe_vocab", "write_tokenizer_files"]


def write_tokenizer_files(bpe_path: str | os.PathLike, directory: str | os.PathLike) -> None:
    """Write a Hugging Face CLIP tokenizer directory from OpenAI's ``bpe_simple_vocab_16e6.txt.gz``.

    Produces ``vocab.json`` (49,408 entries: 256 byte symbols, their ``</w>`` forms, 48,894
    merges and the two special tokens, in OpenAI's order), ``merges.txt`` and
    ``tokenizer_config.json``, loadable with ``transformers.CLIPTokenizer.from_pretrained``
    (``CLIPTokenizer(vocab_file=...)`` silently mis-tokenizes in transformers 5).

    Args:
        bpe_path: path to ``bpe_simple_vocab_16e6.txt.gz`` (shipped e.g. in ``open-clip-torch``).
        directory: output directory (created if needed).
    """
    import gzip

    lines = gzip.open(bpe_path, "rt", encoding="utf-8").read().split("\n")
    write_bpe_vocab(lines[1 : 49152 - 256 - 2 + 1], directory)


def write_bpe_vocab(merges: Sequence[str], directory: str | os.PathLike) -> None:
    """Write ``vocab.json`` / ``merges.txt`` / ``tokenizer_config.json`` for a CLIP-style BPE.

    The vocabulary is CLIP's byte-level scheme, in OpenAI's order: the 256 byte symbols, their
    ``</w>`` (end-of-word) forms, one token per merge (the merged pair) and
    ``<|startoftext|>``, ``<|endoftext|>`` (the largest id). Any list of merges gives a working
    tokenizer: with OpenAI's 48,894 merges it is CLIP's; with a handful (as in
    :func:`equijax.models.testing.write_tiny_clip_tokenizer`) a small offline test vocabulary.

    Args:
        merges: merge rules ``"a b"`` in priority order (each merges two existing symbols).
        directory: output directory (created if needed).

    Raises:
        ValueError: a merge is not two space-separated symbols.

    Examples:
        >>> import tempfile, json, pathlib
        >>> with tempfile.TemporaryDirectory() as d:
        ...     write_bpe_vocab(["c a", "ca t</w>"], d)
        ...     vocab = json.loads((pathlib.Path(d) / "vocab.json").read_text(encoding="utf-8"))
        >>> len(vocab), vocab["cat</w>"], vocab["<|endoftext|>"]
        (516, 513, 515)
    """
    import json

    merges = [m for m in merges if m]
    bad = [m for m in merges if len(m.split()) != 2]
    if bad:
        raise ValueError(f"merges must be 'left right' pairs; bad entries: {bad[:3]}")
    byte_symbols = list(bytes_to_unicode().values())
    vocab = byte_symbols + [s + "</w>" for s in byte_symbols]
    vocab += ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    out = pathlib.Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(
        json.dumps({tok: i for i, tok in enumerate(vocab)}, ensure_ascii=False), encoding="utf-8"
    )
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    config = {
        "tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
        "do_lower_case": True, "clean_up_tokenization_spaces": False,
    }  # fmt: skip
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=1), encoding="utf-8")


def load_tokenizer(name_or_path: str | os.PathLike = "openai/clip-vit-base-patch32") -> Any:
    """Load the CLIP BPE tokenizer through ``transformers`` from a directory or hub id.

    The directory needs ``vocab.json`` + ``merges.txt`` (as in ``openai/clip-vit-*`` repos, or as
    written by :func:`write_tokenizer_files`). A hub id is fetched with ``huggingface_hub``
    (tokenizer files only).

    Args:
        name_or_path: tokenizer directory or hub id.

    Returns:
        A ``transformers`` CLIP tokenizer.

    Raises:
        FileNotFoundError: the directory has no ``vocab.json`` / ``merges.txt``.
    """
    from transformers import AutoTokenizer, CLIPTokenizer

    directory = _hub.resolve_pretrained(
        name_or_path,
        allow_patterns=["vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json",
                        "special_tokens_map.json"],
    )  # fmt: skip
    directory = pathlib.Path(directory)
    if (directory / "tokenizer.json").is_file():
        return AutoTokenizer.from_pretrained(directory)
    if not ((directory / "vocab.json").is_file() and (directory / "merges.txt").is_file()):
        raise FileNotFoundError(
            f"{str(directory)!r} has no vocab.json/merges.txt; pass a CLIP tokenizer directory or "
            "build one with write_tokenizer_files(bpe_simple_vocab_16e6.txt.gz, directory)"
        )
    return CLIPTokenizer.from_pretrained(directory)


def _basic_clean(text: str) -> str:
    """OpenAI CLIP's text cleaning: ``ftfy.fix_text`` (if installed) and HTML unescaping."""
    import html

    try:
        import ftfy
    except ImportError:  # pragma: no cover - ftfy is part of the hf extra
        if not text.isascii():
            warnings.warn(
                "ftfy is not installed, so non-ASCII text is not normalised the way OpenAI's CLIP "
                "tokenizer does (e.g. curly quotes); `pip install ftfy` for identical ids",
                stacklevel=3,
            )
    else:
        text = ftfy.fix_text(text)
    return html.unescape(html.unescape(text)).strip()


def tokenize(
    tokenizer: Any,
    texts: str | Sequence[str],
    context_length: int = 77,
    *,
    pad_id: int = 0,
    clean: bool = True,
) -> np.ndarray:
    """Tokenize texts to a padded ``(N, context_length)`` int32 id array, as OpenAI's CLIP does.

    Each row is ``<|startoftext|> ... <|endoftext|>`` followed by ``pad_id``; over-long texts are
    truncated keeping the end-of-text token. With ``clean=True`` the text is first cleaned like
    OpenAI's tokenizer (``ftfy.fix_text``, HTML unescaping), which ``transformers``' CLIP
    tokenizer does not do; the ids then equal ``clip.tokenize`` / ``open_clip.tokenize``.

    Args:
        tokenizer: a ``transformers`` CLIP tokenizer (:func:`load_tokenizer`), or any callable
            ``list[str] -> (N, context_length) ids`` (used as is).
        texts: one string or a sequence of strings.
        context_length: padded length (77 for the released CLIP models).
        pad_id: padding id (0 as in OpenAI's ``clip.tokenize``; the pooled token is the first
            end-of-text, so padding does not change the embeddings).
        clean: apply OpenAI's text cleaning first.

    Returns:
        ``(N, context_length)`` int32 ids.

    Examples:
        >>> tokenize(lambda texts: [[49406, 320, 49407, 0]] * len(texts), ["a"], 4).tolist()
        [[49406, 320, 49407, 0]]
    """
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    if not all(isinstance(t, str) for t in texts):
        raise TypeError("texts must be a string or a sequence of strings")
    if context_length < 2:
        raise ValueError(f"context_length={context_length} must be >= 2")
    if hasattr(tokenizer, "pad_token_id") and hasattr(tokenizer, "batch_decode"):
        if clean:
            texts = [_basic_clean(t) for t in texts]
        enc = tokenizer(
            texts, padding="max_length", max_length=context_length, truncation=True,
            return_tensors="np", return_attention_mask=True,
        )  # fmt: skip
        ids = np.asarray(enc["input_ids"], np.int32)
        return np.where(np.asarray(enc["attention_mask"]) > 0, ids, np.int32(pad_id))
    ids = np.asarray(tokenizer(texts), np.int32)
    if ids.ndim != 2 or ids.shape[1] != context_length:
        raise ValueError(
            f"tokenizer returned shape {ids.shape}, expected ({len(texts)}, {context_length})"
        )
    return ids
