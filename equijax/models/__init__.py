"""Flax ports of pretrained models, loading Hugging Face / OpenCLIP checkpoints.

Where things live (every family has one shape; see docs/adding_a_model_family.md):

* :mod:`equijax.models.clip` -- CLIP: ``model`` (ViT towers and the functional shell
  :class:`~equijax.models.clip.CLIPBase`), ``resnet`` (the ModifiedResNet towers RN50, RN101),
  ``convert`` (Hugging Face ``CLIPModel`` and OpenCLIP name mappings), ``tokenizer``, ``zoo``;
* :mod:`equijax.models.resnet` -- Hugging Face ``microsoft/resnet-*`` (``model`` / ``convert``);
* :mod:`equijax.models.gpt2` -- GPT-2 (``model`` / ``generation`` / ``convert`` / ``tokenizer``)
  with KV cache and jitted generation;
* :mod:`equijax.models.seq2seq` -- equijax's own SCAN encoder-decoder RNN/GRU/LSTM (not the
  paper's architecture);
* :mod:`equijax.models.gordon_seq2seq` -- the authors' SCAN seq2seq (Gordon et al.'s fork); loads
  their trained weights;
* :mod:`equijax.models.small_cnn` -- the small CNN of the offline rotated-digits experiment;
* :mod:`equijax.models.preprocess` -- numpy/JAX image preprocessing;
* :mod:`equijax.models.testing` -- test checkpoint writers: tiny random checkpoints in the real
  formats (tests, doctests, ``tiny-random`` smoke runs); not imported by this face;
* :mod:`equijax.models.clip_resnet` -- the former home of CLIP ResNet, its names kept;
* the port layer, one job a module: ``_load`` (the loading sequence resolve -> config -> build
  -> read -> assign, written once; a family supplies a ``Family`` of hooks), ``_hub`` (locate and
  read checkpoint files -- safetensors, sharded indexes, HF-Flax ``flax_model.msgpack``, never
  pickle), ``_convert`` (the one PyTorch / HF-Flax -> Flax converter, each family supplying only
  a name-mapping ``rule``, and ``assign`` with its name and shape checks), ``_orbax`` (saving
  and restoring finetuned parameters, on :mod:`equijax.training.checkpoint`), ``_bpe`` (byte
  tables of the BPE tokenizers) and ``_activations`` (the one activation table).

The ``from_pretrained`` contract, the same for every family::

    model, variables = <family>.from_pretrained(name_or_path, *, dtype=None, ...)

* ``name_or_path``: a Hugging Face hub id (downloaded with ``huggingface_hub``, honouring its cache
  and ``HF_HUB_OFFLINE``) or a local directory written by ``save_pretrained`` / OpenCLIP.
* ``dtype``: ``None`` means float32 parameters and float32 computation; any other dtype (e.g.
  ``jnp.bfloat16``) casts the floating parameters to it and computes in it. (ResNet and GPT-2
  also take ``compute_dtype`` to compute in another dtype than the parameters are stored in.)
* Returns ``(model, variables)``: ``model`` is static and hashable (a config-carrying functional
  object for CLIP, a linen module for ResNet and GPT-2), and ``variables`` is the Flax variables
  dict -- ``{"params": ...}``, plus ``"batch_stats"`` for batch-norm models. (GPT-2's decoding
  functions take ``variables["params"]``.)
* Raises ``FileNotFoundError`` (no config or weights; the message lists what the directory holds),
  ``OSError`` (not local and the download failed) or :class:`CheckpointMismatchError` (names or
  shapes that do not fit; every one listed, unknown ones in the checkpoint's own words).
"""

from equijax.models import (
    clip,
    clip_resnet,
    gordon_seq2seq,
    gpt2,
    preprocess,
    resnet,
    seq2seq,
    small_cnn,
)
from equijax.models._convert import CheckpointMismatchError
from equijax.models._hub import read_config, read_state_dict, resolve_pretrained
from equijax.models._orbax import restore_params, save_params

__all__ = [
    "CheckpointMismatchError",
    "clip",
    "clip_resnet",
    "gordon_seq2seq",
    "gpt2",
    "preprocess",
    "read_config",
    "read_state_dict",
    "resnet",
    "resolve_pretrained",
    "restore_params",
    "save_params",
    "seq2seq",
    "small_cnn",
]
