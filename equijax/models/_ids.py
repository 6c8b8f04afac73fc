"""The token-id range check shared by the text ports (CLIP's text tower, GPT-2).

Examples:
    >>> check_id_range([[1, 2]], 3, name="ids", hint="retokenize.")
    >>> check_id_range([[1, 5]], 3, name="ids", hint="retokenize.")
    Traceback (most recent call last):
    ValueError: ids must lie in [0, vocab_size=3), got values in [1, 5]; retokenize.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

__all__ = ["check_id_range"]


def check_id_range(ids: Any, vocab_size: int, *, name: str, hint: str) -> None:
    """Raise ``ValueError`` if concrete token ids fall outside ``[0, vocab_size)``.

    Traced ids (inside ``jit``) cannot be inspected and pass; empty arrays pass.

    Args:
        ids: token ids (array-like or a tracer).
        vocab_size: number of embeddings of the model.
        name: the argument's name, for the message.
        hint: the likely cause / fix, appended to the message.
    """
    if isinstance(ids, jax.core.Tracer):
        return
    arr = np.asarray(ids)
    if not arr.size:
        return
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= vocab_size:
        raise ValueError(
            f"{name} must lie in [0, vocab_size={vocab_size}), got values in [{lo}, {hi}]; {hint}"
        )
