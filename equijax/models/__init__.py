"""Flax ports of pretrained models, loading Hugging Face / OpenCLIP checkpoints.

Each family lives in its own module and exposes ``from_pretrained(name_or_path)`` returning a
model object with a pure ``apply(params, inputs)``-style path plus the parameter pytree:

* :mod:`equijax.models.clip` — CLIP ViT (text + vision towers, zero-shot classifier builder);
* :mod:`equijax.models.clip_resnet` — CLIP ModifiedResNet (RN50, RN101) from OpenCLIP files;
* :mod:`equijax.models.resnet` — Hugging Face ``microsoft/resnet-*``;
* :mod:`equijax.models.gpt2` — GPT-2 with KV cache and jitted generation;
* :mod:`equijax.models.seq2seq` — the SCAN encoder-decoder RNN/GRU/LSTM (trained here);
* :mod:`equijax.models.small_cnn` — the small CNN of the offline rotated-digits experiment;
* :mod:`equijax.models.preprocess` — numpy/JAX image preprocessing.

Checkpoint helpers (safetensors / msgpack reading, orbax save and restore) are re-exported
here. Loading never unpickles.
"""

from equijax.models import (
    clip,
    clip_resnet,
    gpt2,
    preprocess,
    resnet,
    seq2seq,
    small_cnn,
)
from equijax.models._hub import (
    CheckpointMismatchError,
    read_config,
    read_state_dict,
    resolve_pretrained,
    restore_params,
    save_params,
)

__all__ = [
    "CheckpointMismatchError",
    "clip",
    "clip_resnet",
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
