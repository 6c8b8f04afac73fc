"""The sampling path's fast pieces give exactly what the plain formulas give (fixed key)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from equijax import decoding
from equijax.groups import permutation
from equijax.models import gpt2


def test_noise_rewrites_only_moved_columns_exactly():
    v = 50
    G = permutation(v, [(3, 7), (10, 11, 12)])  # order 6; only 5 ids move
    key = jax.random.key(0)
    frames = jnp.array([[0, 1, 2, 3], [5, 4, 0, 1]], jnp.int32)  # (F=2, B=4)
    fast = jax.jit(lambda k, f: decoding.gumbel_in_frame(G, k, f, v))(key, frames)
    n0 = jax.random.gumbel(key, (4, v), jnp.float32)
    for fi in range(2):
        for b in range(4):
            ref = G.act_axis(int(frames[fi, b]), n0[b])
            np.testing.assert_array_equal(np.asarray(fast[fi, b]), np.asarray(ref))


@pytest.mark.parametrize("shape", [(4, 50257), (2, 3, 1000), (5, 100)])
@pytest.mark.parametrize("k", [1, 7, 40])
def test_top_k_threshold_equals_lax_top_k(shape, k):
    x = jax.random.normal(jax.random.key(k), shape)
    # ties, -inf entries and a row of equal values
    x = x.at[..., :50].set(jnp.round(x[..., :50])).at[..., 60:70].set(-jnp.inf)
    x = x.at[0].set(1.0)
    fast = jax.jit(lambda a: gpt2.top_k_threshold(a, k))(x)
    ref = jax.lax.top_k(x, k)[0][..., -1]
    np.testing.assert_array_equal(np.asarray(fast), np.asarray(ref))


def test_sampled_tokens_unchanged_by_the_fast_filter():
    # the filtered logits (top-k mask) equal the vocabulary-wide top_k version bit for bit
    x = jax.random.normal(jax.random.key(3), (3, 5000)) * 4
    kth = jax.lax.top_k(x, 40)[0][..., -1:]
    ref = jnp.where(x < kth, -jnp.inf, x)
    np.testing.assert_array_equal(
        np.asarray(decoding.filter_logits(x, top_k=40, temperature=jnp.float32(1.0))),
        np.asarray(ref),
    )
