r"""Many independent models trained in one compiled program (``vmap`` over models).

Training one example per iteration (batch 1) on a CPU is per-kernel overhead; ``M`` models
trained side by side pay it once. Every member ``m`` has its own parameters, optimiser state,
data (its own split, padded to a common length) and PRNG key; iteration ``t`` of member ``m``
draws everything from ``fold_in(key_m, t)``:

.. math::

    k_{idx}, k_{loss} = \mathrm{split}(\mathrm{fold\_in}(k_m, t)),\quad
    i \sim U\{0, \dots, n_m - 1\},\quad
    \theta_m \leftarrow \mathrm{opt}(\nabla_\theta\, \mathrm{loss}(\theta_m, x_{m,i}, k_{loss})).

(one example drawn uniformly with replacement per iteration, as the SCAN authors do), so a
member's trajectory depends only on its own key and data: it equals the same model trained
alone (:func:`train_chunk` with ``vmap=False``), and a run cut into chunks of any size (or
interrupted and resumed) equals one uninterrupted run. ``lax.scan`` runs many iterations per
compiled call.

* :func:`init_members` -- the stacked initial state of ``M`` members;
* :func:`train_chunk` -- ``(state, data, n, start) -> (state, losses (iters, M))``, jitted;
* :func:`clip_by_module_norm` -- gradient-norm clipping per top-level module (torch's
  ``clip_grad_norm_`` called once per module);
* :func:`fit` -- the loop: chunks, best-validation parameters per member, a resumable
  :class:`~equijax.training.Run` checkpoint after every chunk, a tqdm bar with model-iterations/s
  and ETA.

Examples:
    >>> import jax, jax.numpy as jnp, optax
    >>> from equijax.training import ensemble
    >>> loss = lambda p, x, key: ((p["w"] * x["a"] - x["b"]) ** 2).sum()
    >>> init = lambda key: {"w": jnp.zeros(())}
    >>> opt = optax.sgd(0.1)
    >>> state = ensemble.init_members(init, opt, seeds=[0, 1])
    >>> data = {"a": jnp.ones((2, 3)), "b": jnp.array([[1.0, 1, 1], [2, 2, 2]])}
    >>> step = ensemble.train_chunk(loss, opt, iterations=50)
    >>> state, losses = step(state, data, jnp.array([3, 3]), 0)
    >>> [round(float(w), 3) for w in state["params"]["w"]]
    [1.0, 2.0]
"""

from __future__ import annotations

import functools
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax

from equijax.training.checkpoint import resume_or_start
from equijax.training.parallel import data_mesh, is_main_process, replicate

__all__ = ["clip_by_module_norm", "fit", "init_members", "train_chunk"]

logger = logging.getLogger(__name__)

PyTree = Any
LossFn = Callable[[PyTree, PyTree, jax.Array], jax.Array]


def clip_by_module_norm(max_norm: float, eps: float = 1e-6) -> optax.GradientTransformation:
    """Clips each top-level module's gradient to global norm ``max_norm`` (torch's rule).

    For every key ``k`` of the gradient dict, ``g_k <- g_k * min(1, max_norm / (||g_k|| + eps))``
    (``torch.nn.utils.clip_grad_norm_`` applied to each module separately).

    Examples:
        >>> import jax.numpy as jnp
        >>> clip = clip_by_module_norm(1.0)
        >>> g = {"enc": {"w": jnp.array([3.0, 4.0])}, "dec": {"w": jnp.array([0.3, 0.4])}}
        >>> out, _ = clip.update(g, clip.init(g))
        >>> [round(float(x), 3) for x in (*out["enc"]["w"], *out["dec"]["w"])]
        [0.6, 0.8, 0.3, 0.4]
    """
    if not max_norm > 0:
        raise ValueError(f"max_norm must be > 0, got {max_norm!r}")

    def update(updates, state, params=None):
        del params
        if not isinstance(updates, Mapping):
            raise TypeError("clip_by_module_norm needs a dict of modules at the top level")
        out = {}
        for k, g in updates.items():
            coef = jnp.minimum(1.0, max_norm / (optax.tree.norm(g) + eps))
            out[k] = jax.tree_util.tree_map(lambda x, c=coef: x * c.astype(x.dtype), g)
        return out, state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def init_members(
    init_fn: Callable[[jax.Array], PyTree],
    optimizer: optax.GradientTransformation,
    seeds: Sequence[int],
) -> PyTree:
    """Stacked initial state of ``len(seeds)`` members (leading axis = member).

    Member ``m`` is initialised with ``init_fn(split(key(seeds[m]))[0])`` and trains with the
    key data of ``split(key(seeds[m]))[1]``; the state is ``{"params", "opt", "key"}``
    (``key`` as raw ``uint32`` key data, so it checkpoints like any array).
    """
    if len(seeds) == 0:
        raise ValueError("seeds is empty; give one seed per member")

    def one(seed):
        k_init, k_train = jax.random.split(jax.random.key(seed))
        params = init_fn(k_init)
        return {
            "params": params,
            "opt": optimizer.init(params),
            "key": jax.random.key_data(k_train),
        }

    return jax.jit(jax.vmap(one))(jnp.asarray(list(seeds), jnp.uint32))


def _draw(member: PyTree, data: PyTree, n: jax.Array, t: jax.Array):
    """Member's example and loss key of iteration ``t``."""
    key = jax.random.fold_in(jax.random.wrap_key_data(member["key"]), t)
    k_idx, k_loss = jax.random.split(key)
    i = jax.random.randint(k_idx, (), 0, n)
    return jax.tree_util.tree_map(lambda a: a[i], data), k_loss


def _update(loss_fn: LossFn, optimizer: optax.GradientTransformation):
    def update(member: PyTree, example: PyTree, key: jax.Array):
        loss, grads = jax.value_and_grad(loss_fn)(member["params"], example, key)
        updates, opt = optimizer.update(grads, member["opt"], member["params"])
        params = optax.apply_updates(member["params"], updates)
        return {"params": params, "opt": opt, "key": member["key"]}, loss

    return update


@functools.lru_cache(maxsize=32)
def train_chunk(
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    iterations: int,
    *,
    vmap: bool = True,
    buckets: tuple[int, ...] | None = None,
    length_fn: Callable[[PyTree], jax.Array] | None = None,
    members: Literal["vmap", "scan"] = "vmap",
) -> Callable[[PyTree, PyTree, jax.Array, int], tuple[PyTree, jax.Array]]:
    """A jitted ``chunk(state, data, n, start) -> (state, losses)`` of ``iterations`` iterations.

    Args:
        loss_fn: ``loss(params, example, key) -> scalar`` for one model and one example
            (``example`` is ``data`` indexed at one row); with ``buckets``,
            ``loss(params, example, key, length)`` with a static ``length``.
        optimizer: the optax optimiser of every member.
        iterations: iterations per call (one ``lax.scan``).
        vmap: ``True``: ``state`` / ``data`` / ``n`` have a leading member axis (``data`` leaves
            ``(M, N, ...)``, ``n`` ``(M,)``: member ``m`` draws from its first ``n[m]`` rows) and
            losses are ``(iterations, M)``; ``False``: one member, no such axis.
        buckets: ascending static lengths (the last one must fit every example). Each iteration
            runs ``loss`` with the smallest bucket ``>= length_fn(example)`` (the largest over
            the members' examples when vmapped) through ``lax.switch``, so short examples do
            not pay for the longest one. ``loss`` must not depend on the bucket beyond the
            example's own length; then results equal the unbucketed ones.
        length_fn: ``example -> int32`` length needed by an example (with ``buckets``).
        members: with a member axis (``vmap=True``), ``"vmap"`` steps all members together
            (batched kernels; with ``buckets`` the longest member sets the length) and ``"scan"``
            runs them one after the other inside the same compiled call (``lax.scan`` over
            members; each member at its own bucket). Results are the same.

    Returns:
        The chunk function; ``start`` is the index of its first iteration. Cached: equal
        arguments (hashable ``loss_fn`` and ``optimizer``) give the same compiled function.
    """
    if not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"iterations must be a positive int, got {iterations!r}")
    if (buckets is None) != (length_fn is None):
        raise ValueError("buckets and length_fn go together: pass both or neither")
    if buckets is not None and (not buckets or list(buckets) != sorted(set(buckets))):
        raise ValueError(f"buckets must be non-empty, ascending and distinct, got {buckets!r}")
    if members not in ("vmap", "scan"):
        raise ValueError(f"members must be 'vmap' or 'scan', got {members!r}")
    if vmap and members == "scan":
        single = train_chunk.__wrapped__(loss_fn, optimizer, iterations, vmap=False,
                                         buckets=buckets, length_fn=length_fn)  # fmt: skip

        @jax.jit
        def chunk_scan(state, data, n, start):
            def one(_, xs):
                return None, single(*xs, start)

            _, (state, losses) = jax.lax.scan(one, None, (state, data, n))
            return state, losses.T

        return chunk_scan
    draw = jax.vmap(_draw, in_axes=(0, 0, 0, None)) if vmap else _draw
    if buckets is None:
        updates = [_update(loss_fn, optimizer)]
    else:
        updates = [_update(functools.partial(loss_fn, length=b), optimizer) for b in buckets]
    if vmap:
        updates = [jax.vmap(u) for u in updates]

    @jax.jit
    def chunk(state, data, n, start):
        def body(state, t):
            example, key = draw(state, data, n, t)
            if buckets is None:
                return updates[0](state, example, key)
            need = jnp.max(jax.vmap(length_fn)(example) if vmap else length_fn(example))
            which = jnp.searchsorted(jnp.asarray(buckets), need)
            which = jnp.minimum(which, len(buckets) - 1)
            return jax.lax.switch(which, updates, state, example, key)

        ts = jnp.asarray(start, jnp.int32) + jnp.arange(iterations, dtype=jnp.int32)
        return jax.lax.scan(body, state, ts)

    return chunk


def _pick(better: jax.Array, new: jax.Array, old: jax.Array) -> jax.Array:
    return jnp.where(better.reshape(better.shape + (1,) * (new.ndim - 1)), new, old)


def _progress(total: int, initial: int, desc: str, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        return None
    return tqdm(total=total, initial=initial, desc=desc, unit="model-it", unit_scale=True,
                mininterval=2.0, smoothing=0.1)  # fmt: skip


def fit(
    directory: str | os.PathLike,
    settings: Mapping[str, Any],
    state: PyTree,
    data: PyTree,
    n: jax.Array,
    *,
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    iterations: int,
    chunk: int,
    evaluate: Callable[[PyTree], jax.Array] | None = None,
    resume: bool = True,
    progress: bool = True,
    desc: str = "train",
    buckets: tuple[int, ...] | None = None,
    length_fn: Callable[[PyTree], jax.Array] | None = None,
    members: Literal["vmap", "scan"] = "vmap",
) -> tuple[PyTree, dict[str, Any]]:
    """Trains ``M`` members for ``iterations`` iterations, checkpointing after every chunk.

    With several processes (``jax.distributed``) the state, data and ``n`` are replicated over
    all devices of all hosts (:func:`~equijax.training.replicate`): every process computes the
    same members (the member axis is not split), and orbax saves the replicated checkpoint once
    and restores it onto the same global shardings. ``evaluate`` then receives global
    replicated parameters and the result holds global replicated arrays
    (``np.asarray`` reads them on any process).

    After every ``chunk`` iterations (and at the end) ``evaluate(params) -> scores (M,)`` (the
    members' validation scores, higher is better) is called on the stacked parameters; each
    member keeps the parameters of its best score (the first one on ties). The run lives in
    ``directory`` (:func:`~equijax.training.resume_or_start`): a rerun with the same ``settings``
    resumes from the last chunk, other settings are refused.

    Args:
        directory: checkpoint directory of the run.
        settings: everything that shapes the result (JSON-like); ``iterations`` and ``chunk``
            are added to it.
        state: :func:`init_members` output (used for a fresh run).
        data: the members' data (leaves ``(M, N, ...)``).
        n: the members' row counts ``(M,)``.
        loss_fn: as for :func:`train_chunk`.
        optimizer: as for :func:`train_chunk`.
        iterations: total iterations per member.
        chunk: iterations per compiled call, validation and checkpoint.
        evaluate: validation scores of stacked params, or ``None`` (keep the last params).
        resume: ``False`` starts fresh (an old run directory is moved aside, never deleted).
        progress: show a tqdm bar (model-iterations/s and ETA; process 0 only).
        desc: the bar's label.
        buckets: as for :func:`train_chunk` (speed only: results do not change).
        length_fn: as for :func:`train_chunk`.
        members: as for :func:`train_chunk` (speed only).

    Returns:
        ``(result, history)``: ``result`` is ``{"state", "best_params", "best_score",
        "best_step"}``; ``history`` is ``{"chunks": [...], "model_iterations_per_second": r}``,
        one record per chunk of the whole run (``step``, mean ``loss`` per member, ``score``,
        ``seconds``, validation included) and this call's rate without its first chunk
        (compilation), NaN if it trained nothing.
    """
    if not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be a positive int, got {chunk!r}")
    if not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"iterations must be a positive int, got {iterations!r}")
    n = jnp.asarray(n, jnp.int32)
    count = int(n.shape[0])
    best = {
        "best_params": state["params"],
        "best_score": jnp.full((count,), -jnp.inf, jnp.float32),
        "best_step": jnp.zeros((count,), jnp.int32),
    }
    init = {"state": state, **best}
    if jax.process_count() > 1:  # every process trains every member on the replicated state
        mesh = data_mesh()
        init, data, n = replicate(init, mesh), replicate(data, mesh), replicate(n, mesh)
    settings = {**settings, "iterations": iterations, "chunk": chunk}
    run = resume_or_start(directory, settings, init, resume=resume,
                          hint="pass resume=False (--fresh) to start over")  # fmt: skip
    result, history = run.state, list(run.history)
    done = run.step
    steps = {size: None for size in {chunk, iterations % chunk} if size}
    bar = _progress(count * iterations, count * done, desc, progress and is_main_process())
    timed: list[tuple[int, float]] = []  # (iterations, seconds) of this call's chunks
    try:
        while done < iterations:
            size = min(chunk, iterations - done)
            if steps.get(size) is None:
                steps[size] = train_chunk(
                    loss_fn, optimizer, size, buckets=buckets, length_fn=length_fn, members=members
                )
            t0 = time.perf_counter()
            new_state, losses = steps[size](result["state"], data, n, done)
            losses = np.asarray(losses)
            done += size
            record: dict[str, Any] = {"step": done, "loss": losses.mean(0).tolist()}
            if evaluate is not None:
                scores = jnp.asarray(evaluate(new_state["params"]), jnp.float32)
                better = scores > result["best_score"]
                result = {
                    "best_params": jax.tree_util.tree_map(
                        functools.partial(_pick, better), new_state["params"], result["best_params"]
                    ),
                    "best_score": jnp.where(better, scores, result["best_score"]),
                    "best_step": jnp.where(better, done, result["best_step"]),
                }
                record["score"] = np.asarray(scores).tolist()
            else:
                result = {**result, "best_params": new_state["params"]}
            result = {**result, "state": new_state}
            record["seconds"] = time.perf_counter() - t0
            timed.append((size, record["seconds"]))
            history.append(record)
            run.save(done, result, history)
            if bar is not None:
                bar.update(count * size)
                bar.set_postfix(loss=f"{float(losses.mean()):.3f}")
    finally:
        run.close()
        if bar is not None:
            bar.close()
    steady = timed[1:] or timed  # the first chunk of a call includes compilation
    its, secs = sum(t[0] for t in steady), sum(t[1] for t in steady)
    rate = count * its / secs if secs > 0 else math.nan
    logger.info("%s: %d members x %d iterations (%.1f model-it/s)", desc, count, done, rate)
    return result, {"chunks": history, "model_iterations_per_second": rate}
