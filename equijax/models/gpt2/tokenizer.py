"""The GPT-2 BPE tokenizer (through ``transformers``, imported lazily)."""

from __future__ import annotations

import os
import pathlib
import shutil
import tempfile

from equijax.models import _hub
from equijax.models._bpe import bytes_to_unicode

__all__ = ["bytes_to_unicode", "load_tokenizer"]


def load_tokenizer(name_or_path: str | os.PathLike):
    """Load the GPT-2 BPE tokenizer with ``transformers`` (lazy import).

    Accepts a hub id, a directory with ``vocab.json`` + ``merges.txt`` (or ``tokenizer.json``),
    or a directory with the original OpenAI files ``encoder.json`` + ``vocab.bpe`` (copied under
    the HF names into a temporary directory: constructing ``GPT2Tokenizer(vocab_file=...)``
    directly silently mis-tokenises in transformers 5).

    Returns:
        tokenizer (transformers.PreTrainedTokenizerFast): a fast tokenizer; ``pad_token`` is set
            to ``eos_token`` when missing.
    """
    try:
        import transformers
    except ImportError as err:  # pragma: no cover
        raise ImportError("load_tokenizer needs transformers: pip install transformers") from err
    directory = _hub.resolve_pretrained(
        name_or_path,
        allow_patterns=["*.json", "merges.txt", "vocab.bpe", "encoder.json", "tokenizer*"],
    )
    has_hf = (directory / "tokenizer.json").is_file() or (
        (directory / "vocab.json").is_file() and (directory / "merges.txt").is_file()
    )
    if has_hf:
        tok = transformers.AutoTokenizer.from_pretrained(str(directory))
    elif (directory / "encoder.json").is_file() and (directory / "vocab.bpe").is_file():
        with tempfile.TemporaryDirectory() as tmp:
            shutil.copy(directory / "encoder.json", pathlib.Path(tmp, "vocab.json"))
            shutil.copy(directory / "vocab.bpe", pathlib.Path(tmp, "merges.txt"))
            tok = transformers.GPT2TokenizerFast.from_pretrained(tmp)
    else:
        raise FileNotFoundError(
            f"no GPT-2 tokenizer files in {str(directory)!r}: expected tokenizer.json, "
            "vocab.json + merges.txt, or encoder.json + vocab.bpe"
        )
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok
