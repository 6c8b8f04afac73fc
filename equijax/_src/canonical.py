"""Canonical-λ-equitune for continuous groups (Basu et al. 2023, eqs. 5-6; Kaba et al. 2022)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from equijax._src import common, orbit
from equijax._src.groups import SO2
from equijax._src.lambda_equitune import Normalize, log_weights, weighted_orbit_mean

PyTree = Any


def so2_canonicalizer(
    points: ArrayLike, weight_fn: Callable[[jax.Array], jax.Array] | None = None
) -> jax.Array:
    r"""An SO(2)-equivariant canonicalizer for 2-D point sets: the angle of a weighted mean.

    .. math::

        h(x) = \operatorname{atan2}\Big(\sum_i w(\lVert x_i \rVert)\, x_i\Big)

    Rotating every point by :math:`\phi` rotates the weighted mean by :math:`\phi`, so
    :math:`h(R_\phi x) = \phi + h(x)` (mod :math:`2\pi`): ``h`` is equivariant. The weights read
    only rotation-invariant norms; ``weight_fn`` (default: the norm itself) may be learned.

    Args:
      points: ``(B, N, 2)`` point sets.
      weight_fn: maps norms ``(B, N)`` to weights ``(B, N)``.

    Returns:
      Angles ``(B,)`` in radians.

    Examples:
      >>> import jax.numpy as jnp, equijax as ej
      >>> x = jnp.array([[[0.0, 2.0], [0.0, 1.0]]])
      >>> round(float(ej.so2_canonicalizer(x)[0]), 4)
      1.5708
    """
    points = jnp.asarray(points)
    if points.ndim != 3 or points.shape[-1] != 2:
        raise ValueError(f"points must have shape (B, N, 2), got {points.shape}.")
    norms = jnp.linalg.norm(points, axis=-1)
    w = norms if weight_fn is None else weight_fn(norms)
    mean = jnp.einsum("bn,bnd->bd", w, points)
    return jnp.arctan2(mean[:, 1], mean[:, 0])


def canonical_lambda_equitune(
    fn: Callable[..., PyTree],
    x: PyTree | None = None,
    *,
    canonicalizer: Callable[[PyTree], jax.Array],
    thetas: Sequence[float] | ArrayLike,
    weight_fn: Callable[[PyTree], jax.Array] | None = None,
    group: Any = None,
    in_action: Callable[[Any, PyTree], PyTree] | None = None,
    out_action: Callable[[Any, PyTree], PyTree] | None = None,
    normalize: Normalize = "softmax",
    theta_inverse: bool = True,
    chunk_size: int | None = None,
    return_weights: bool = False,
    has_aux: bool = False,
    batching: orbit.Batching = None,
    exact: bool = False,
) -> PyTree:
    r"""λ-equitune around the canonical pose, for continuous groups such as SO(2).

    With an equivariant canonicalizer :math:`h(gx) = g\,h(x)` and a finite set
    :math:`\Theta = \{\theta_1, \dots, \theta_k\}` of group elements:

    .. math::

        M(x) = \frac{\sum_{\theta \in \Theta} \lambda(\theta h(x)^{-1} x)\;
               h(x)\,\theta^{-1}\, M(\theta h(x)^{-1} x)}
              {\sum_{\theta \in \Theta} \lambda(\theta h(x)^{-1} x)}

    Every input :math:`\theta h(x)^{-1} x` is invariant, so the result is exactly equivariant
    (invariant with ``out_action=None``) for any λ and any ``M``. The paper prints the
    equivariant form with :math:`h(x)` but without :math:`\theta^{-1}` on the output; that
    form is also equivariant but maps each branch's output to a different frame.
    ``theta_inverse=False`` gives the printed form; the default maps every branch back to the
    frame of ``x``, which makes the method λ-equitune over Θ on the canonicalised input.

    Args:
      fn: the model, batch -> batch of outputs.
      x: input batch; if omitted, returns the transformed function.
      canonicalizer: ``x -> h(x)``, one group element (angle) per example, shape ``(B,)``.
      thetas: the finite set Θ (angles for SO(2)), static.
      weight_fn: ``x_theta -> (B,)`` logits for λ; ``None`` means λ ≡ 1 (plain averaging).
      group: the continuous group (``compose``, ``inverse``, ``act``); ``None`` means SO(2).
      in_action: ``(angles, x) -> x`` with per-example angles; defaults to ``group.act``.
      out_action: ``(angles, y) -> y``; ``None`` for invariant outputs.
      normalize: ``"softmax"`` or ``"positive"`` (see :func:`equijax.log_weights`).
      theta_inverse: apply :math:`\theta^{-1}` to outputs (default) or not (paper as printed).
      chunk_size: elements of Θ per chunk.
      return_weights: also return weights ``(B, k)``.
      has_aux: ``fn`` returns ``(outputs, features)`` and ``weight_fn`` reads the features.
      batching: ``None`` (auto), ``"vmap"`` or ``"fold"`` (see :func:`equijax.equitune`).
      exact: order-independent (sorted) sums over Θ (see :func:`equijax.lambda_equitune`);
        needs ``chunk_size=None``. The canonicalised inputs of ``g x`` and ``x`` agree only up
        to the round-off of ``h`` and of the rotation, so for SO(2) this removes the reduction's
        share of the error, not all of it.

    Returns:
      Outputs of ``fn``'s structure (and weights if ``return_weights``).

    Examples:
      >>> import jax, jax.numpy as jnp, equijax as ej
      >>> w = jax.random.normal(jax.random.key(0), (6, 2))
      >>> fn = lambda p: p.reshape(p.shape[0], -1) @ w          # (B, 3, 2) -> (B, 2) vectors
      >>> x = jax.random.normal(jax.random.key(1), (4, 3, 2))
      >>> f = lambda p: ej.canonical_lambda_equitune(
      ...     fn, p, canonicalizer=ej.so2_canonicalizer, thetas=[0.0, jnp.pi / 2],
      ...     out_action=ej.groups.SO2().act)
      >>> R = ej.groups.SO2()
      >>> bool(jnp.allclose(f(R.act(0.7, x)), R.act(0.7, f(x)), atol=1e-4))
      True
    """
    common.check_callable(fn, "fn")
    common.check_callable(canonicalizer, "canonicalizer", "Expected x -> (B,) group elements.")
    if weight_fn is not None:
        common.check_callable(weight_fn, "weight_fn", "Expected x -> (B,) logits.")
    thetas_arr = jnp.asarray(thetas, dtype=jnp.float32)
    if thetas_arr.ndim != 1 or thetas_arr.shape[0] < 1:
        raise ValueError(
            f"thetas must be a non-empty 1-D sequence of elements, got shape {thetas_arr.shape}."
        )
    log_weights(jnp.zeros(()), normalize)
    orbit.check_exact(exact, chunk_size, int(thetas_arr.shape[0]))
    if x is None:
        return common.as_transformation(canonical_lambda_equitune, fn, (), locals())
    group = SO2() if group is None else group
    act_in = in_action if in_action is not None else group.act
    h = jnp.asarray(canonicalizer(x))
    h_inv = group.inverse(h)

    def transform(i: Any, xx: PyTree) -> PyTree:
        return act_in(group.compose(thetas_arr[i], h_inv), xx)

    def untransform(i: Any, y: PyTree) -> PyTree:
        if out_action is None:
            return y
        g = group.compose(h, group.inverse(thetas_arr[i])) if theta_inverse else h
        return out_action(g, y)

    return weighted_orbit_mean(
        fn,
        x,
        n=int(thetas_arr.shape[0]),
        transform=transform,
        untransform=untransform,
        weight_fn=weight_fn,
        normalize=normalize,
        has_aux=has_aux,
        return_weights=return_weights,
        chunk_size=chunk_size,
        batching=batching,
        exact=exact,
    )
