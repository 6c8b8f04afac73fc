"""The authors' PyTorch state dict -> :class:`GordonSeq2Seq` params, by a name-mapping table.

:data:`NAME_MAP` is a plain ``dict`` from the authors' tensor names (``encoder.rnn.weight_ih_l0``,
``decoder.attn_combine.weight``, ...) to where they go; every layout rule is the shared one of
:func:`equijax.models._convert.convert` (``linear``: ``weight (out, in)`` -> ``kernel (in, out)``;
``embedding``; ``param``: the tensor as it is, the recurrent weights stay in torch's
``(gates * H, in)`` layout). The authors' unused ``decoder.attn`` and
``encoder.semantic_embedding`` are dropped. Decoder names are the same for the three cells;
nothing is unpickled (the weights are read from safetensors).

Examples:
    >>> NAME_MAP["encoder.rnn.weight_hh_l0_reverse"]
    Target(kind='param', path=('encoder', 'bwd', 'w_hh'))
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from equijax.models import _convert, _hub
from equijax.models.gordon_seq2seq.config import GordonSeq2SeqConfig
from equijax.models.gordon_seq2seq.model import GordonSeq2Seq

__all__ = ["NAME_MAP", "convert_state_dict", "from_pretrained", "load_vocab"]

_T = _convert.Target


def _rnn(prefix: str, path: tuple[str, ...], suffix: str = "") -> dict[str, Any]:
    return {
        f"{prefix}.weight_ih_l0{suffix}": _T("param", (*path, "w_ih")),
        f"{prefix}.weight_hh_l0{suffix}": _T("param", (*path, "w_hh")),
        f"{prefix}.bias_ih_l0{suffix}": _T("param", (*path, "b_ih")),
        f"{prefix}.bias_hh_l0{suffix}": _T("param", (*path, "b_hh")),
    }


#: The authors' tensor name -> :class:`~equijax.models._convert.Target` (or ``DROP``).
NAME_MAP: dict[str, Any] = {
    "encoder.embedding.weight": _T("embedding", ("encoder", "embedding")),
    **_rnn("encoder.rnn", ("encoder", "fwd")),
    **_rnn("encoder.rnn", ("encoder", "bwd"), "_reverse"),
    "encoder.semantic_embedding.weight": _convert.DROP,  # unused by the authors' forward
    "decoder.embedding.weight": _T("embedding", ("decoder", "embedding")),
    **_rnn("decoder.rnn", ("decoder", "cell")),
    "decoder.attn_combine.weight": _T("linear", ("decoder", "attn_combine")),
    "decoder.attn_combine.bias": _T("linear", ("decoder", "attn_combine")),
    "decoder.out.weight": _T("linear", ("decoder", "out")),
    "decoder.out.bias": _T("linear", ("decoder", "out")),
    "decoder.attn.weight": _convert.DROP,  # unused by the authors' forward
    "decoder.attn.bias": _convert.DROP,
}


def convert_state_dict(state_dict: Mapping[str, np.ndarray]) -> dict[tuple[str, ...], np.ndarray]:
    """Maps the authors' tensors to param paths with :data:`NAME_MAP` (unknown names kept)."""
    return _convert.convert(state_dict, NAME_MAP.get, collections=False)


def load_vocab(path: str | os.PathLike) -> tuple[list[str], list[str]]:
    """The authors' ``vocab.json`` -> ``(input words, output words)`` in id order."""
    raw = json.loads(pathlib.Path(path).read_text())
    tables = []
    for key in ("input_index2word", "output_index2word"):
        if key not in raw:
            raise ValueError(f"{path} has no {key!r} table (keys: {sorted(raw)})")
        table = {int(k): v for k, v in raw[key].items()}
        if sorted(table) != list(range(len(table))):
            raise ValueError(f"{path}: {key} ids are not 0..{len(table) - 1}")
        tables.append([table[i] for i in range(len(table))])
    return tables[0], tables[1]


def _infer_cell(state_dict: Mapping[str, np.ndarray], hidden: int) -> str:
    gates = state_dict["encoder.rnn.weight_ih_l0"].shape[0] // hidden
    cells = {1: "rnn", 3: "gru", 4: "lstm"}
    if gates not in cells:
        raise ValueError(f"encoder.rnn.weight_ih_l0 has {gates} gate blocks; expected 1, 3 or 4")
    return cells[gates]


def from_pretrained(
    path: str | os.PathLike,
    *,
    vocab: str | os.PathLike | None = None,
    dropout: float = 0.1,
) -> tuple[GordonSeq2Seq, Any, tuple[list[str], list[str]] | None]:
    """Loads the authors' weights from a safetensors file (sizes and cell read from it).

    Args:
        path: the ``*.safetensors`` file (the authors' state dict, their names).
        vocab: the authors' ``vocab.json`` (SOS and EOS ids are read from it); ``None`` keeps
            SOS 0 / EOS 1, the authors' convention.
        dropout: decoder-embedding dropout rate of the returned model (training only).

    Returns:
        ``(model, params, (input words, output words) or None)``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointMismatchError: names or shapes that do not fit (all listed).
    """
    path = pathlib.Path(path)
    state = _hub.read_state_dict(path.parent, filenames=(path.name,))
    hidden = state["encoder.embedding.weight"].shape[1]
    words = load_vocab(vocab) if vocab is not None else None
    sos, eos = (0, 1) if words is None else (words[1].index("SOS"), words[1].index("EOS"))
    config = GordonSeq2SeqConfig(
        in_vocab_size=state["encoder.embedding.weight"].shape[0],
        out_vocab_size=state["decoder.out.weight"].shape[0],
        cell=_infer_cell(state, hidden),
        hidden=hidden,
        dropout=dropout,
        sos_id=sos,
        eos_id=eos,
    )
    model = GordonSeq2Seq(config)
    template = jax.eval_shape(model.init, jax.random.key(0))
    params = _hub.assign(template, convert_state_dict(state), context=str(path))
    return model, params, words
