"""Configuration of the authors' SCAN seq2seq (Gordon et al.'s ``perm_equivariant_seq2seq``)."""

from __future__ import annotations

import dataclasses
from typing import Literal

__all__ = ["GordonSeq2SeqConfig"]

CellKind = Literal["rnn", "gru", "lstm"]
#: Gates per cell, in torch's stacking order (rnn: h; gru: r, z, n; lstm: i, f, g, o).
CELLS: dict[str, int] = {"rnn": 1, "gru": 3, "lstm": 4}


@dataclasses.dataclass(frozen=True)
class GordonSeq2SeqConfig:
    """Sizes and token ids of the authors' SCAN model (static and hashable).

    Attributes:
        in_vocab_size: input vocabulary size (the command words, EOS and anything else).
        out_vocab_size: output vocabulary size (logits width).
        cell: ``"rnn"`` (tanh), ``"gru"`` or ``"lstm"``; one layer in the encoder and decoder.
        hidden: encoder width per direction (64 in the paper); the decoder is ``2 * hidden``.
        dropout: dropout rate on the decoder's input embedding (the only dropout; 0.1).
        sos_id: output id fed at the first decoder step.
        eos_id: output id that ends a sequence.

    Examples:
        >>> GordonSeq2SeqConfig(15, 8, cell="rnn").decoder_width
        128
    """

    in_vocab_size: int
    out_vocab_size: int
    cell: CellKind = "lstm"
    hidden: int = 64
    dropout: float = 0.1
    sos_id: int = 0
    eos_id: int = 1

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {sorted(CELLS)}, got {self.cell!r}")
        for name in ("in_vocab_size", "out_vocab_size", "hidden"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        for name in ("sos_id", "eos_id"):
            value = getattr(self, name)
            if not 0 <= value < self.out_vocab_size:
                raise ValueError(
                    f"{name}={value} is not an output id (out_vocab_size={self.out_vocab_size})"
                )

    @property
    def decoder_width(self) -> int:
        """Decoder state width: the two encoder directions concatenated."""
        return 2 * self.hidden
