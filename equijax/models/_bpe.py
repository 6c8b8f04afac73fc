"""The byte tables of byte-level BPE tokenizers (GPT-2, CLIP).

Examples:
    >>> bytes_to_unicode()[ord("a")]
    'a'
"""

from __future__ import annotations

import functools

__all__ = ["bytes_to_unicode"]


@functools.lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """The byte -> printable-unicode map of GPT-2 / CLIP byte-level BPE (``" "`` -> ``"Ġ"``).

    Examples:
        >>> bytes_to_unicode()[ord(" ")], len(bytes_to_unicode())
        ('Ġ', 256)
    """
    bs = list(range(ord("!"), ord("~") + 1))
    bs += list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))
