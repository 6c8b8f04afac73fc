"""The transformation form ``method(fn, ...)`` forwards every keyword argument of the method."""

import jax
import jax.numpy as jnp
import numpy as np

import equijax as ej


def _fn(x):
    return jnp.tanh(x.reshape(x.shape[0], -1) @ jnp.arange(1.0, 9.0).reshape(8, 1))


def _check_same(direct, transformed):
    jax.tree.map(np.testing.assert_array_equal, direct, transformed)


def test_transformation_form_forwards_non_default_keywords_of_every_method():
    x = jax.random.normal(jax.random.key(0), (3, 4, 2))
    G = ej.groups.sign_flip([-1.0, 1.0])
    flip = lambda g, y: y  # an output action that is not None, for the invariant outputs here
    cases = [
        (ej.equitune, (G,), dict(out_action=flip, chunk_size=1, batching="fold")),
        (
            ej.equizero,
            (G,),
            dict(loss=lambda y: y[:, 0], return_index=True, ties="first", straight_through=True),
        ),
        (
            ej.lambda_equitune,
            (G,),
            dict(weight_fn=lambda xg: xg[:, 0, 0], return_weights=True, normalize="positive"),
        ),
        (
            ej.canonical_lambda_equitune,
            (),
            dict(canonicalizer=lambda p: jnp.zeros(p.shape[0]), thetas=[0.0, 1.0], exact=True),
        ),
        (ej.frame_average, (), dict(frame=ej.frames.sort_frame(4), return_frame=True)),
        (
            ej.sampled_equitune,
            (ej.SymmetricGroup(4),),
            dict(key=jax.random.key(1), num_samples=5, strategy="stratified", return_stderr=True),
        ),
    ]
    for method, args, kwargs in cases:
        _check_same(method(_fn, *args, x, **kwargs), method(_fn, *args, **kwargs)(x))

