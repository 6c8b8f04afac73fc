"""The authors' SCAN seq2seq (a fork of Gordon et al.'s ``perm_equivariant_seq2seq``).

Not :class:`equijax.models.seq2seq.Seq2Seq` (equijax's own variant): here the encoder
directions are concatenated, the decoder is twice as wide and starts from both final states,
attention is a plain dot product with the *previous* decoder state, the cell input is
``relu(Linear([embedding; context]))``, the logits are ``Linear(new state)`` and dropout acts on
the decoder embedding only. It loads the authors' trained weights (:func:`from_pretrained`) and
decodes them token for token as their code does.

* :class:`GordonSeq2SeqConfig`, :class:`GordonSeq2Seq` (``init``, ``prefill``, ``step``,
  ``encode``, ``sequence_nll``, ``example_loss``, ``greedy``), :func:`paper_optimizer` --
  :mod:`~equijax.models.gordon_seq2seq.model`;
* :data:`NAME_MAP`, :func:`convert_state_dict`, :func:`from_pretrained`, :func:`load_vocab` --
  :mod:`~equijax.models.gordon_seq2seq.convert`.
"""

from equijax.models.gordon_seq2seq.config import GordonSeq2SeqConfig
from equijax.models.gordon_seq2seq.convert import (
    NAME_MAP,
    convert_state_dict,
    from_pretrained,
    load_vocab,
)
from equijax.models.gordon_seq2seq.model import GordonSeq2Seq, cell_step, paper_optimizer

__all__ = [
    "NAME_MAP",
    "GordonSeq2Seq",
    "GordonSeq2SeqConfig",
    "cell_step",
    "convert_state_dict",
    "from_pretrained",
    "load_vocab",
    "paper_optimizer",
]
