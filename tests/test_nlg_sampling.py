"""The sampling path's fast pieces give exactly what the plain formulas give (fixed key)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from equijax.groups import permutation
from equijax.nlg import decoding


def test_noise_rewrites_only_moved_columns_exactly():
    v = 50
    G = permutation(v, [(3, 7), (10, 11, 12)])  # order 6; only 5 ids move
    key = jax.random.key(0)
    frames = jnp.array([[0, 1, 2, 3], [5, 4, 0, 1]], jnp.int32)  # (F=2, B=4)
    fast = jax.jit(lambda k, f: decoding._noise(G, k, f, v))(key, frames)
    n0 = jax.random.gumbel(key, (4, v), jnp.float32)
    for fi in range(2):
        for b in range(4):
            ref = G.act_axis(int(frames[fi, b]), n0[b])
            np.testing.assert_array_equal(np.asarray(fast[fi, b]), np.asarray(ref))
