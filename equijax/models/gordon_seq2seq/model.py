r"""The authors' SCAN seq2seq as pure functions of a params pytree (cells in torch's layout).

Encoder (no dropout): embedding ``E_in`` (V_in, H), one bidirectional layer of ``cell``; the two
directions' outputs are concatenated, ``o_t = [f_t; b_t]`` (B, T, 2H), and so are their final
states, ``s_0 = [f_final; b_final]`` (for an LSTM, ``h`` and ``c`` each).

Decoder (width D = 2H), one step for previous token ``y`` and state ``s`` (``h`` its output part):

.. math::

    e = \mathrm{dropout}(E_{out}[y]),\quad
    a = \mathrm{softmax}_t(h \cdot o_t),\quad c = \textstyle\sum_t a_t o_t,\\
    u = \mathrm{relu}(W_c [e; c] + b_c),\quad s' = \mathrm{cell}(u, s),\quad
    \ell = W_o h' + b_o .

Attention uses the *previous* state and no learned matrix. Padding (``mask`` False) is skipped by
both encoder directions and masked out of the attention, so a padded batch decodes like each
command alone. The contract used by decoders:

* ``prefill(params, ids, mask) -> (cache, logits)``: encodes ``ids`` (B, T) and returns the
  logits (B, V) of the first output token (the step fed ``sos_id``);
* ``step(params, cache, token) -> (cache, logits)``: one decoder step on ``token`` (B,).

Examples:
    >>> import jax, jax.numpy as jnp
    >>> from equijax.models.gordon_seq2seq import GordonSeq2Seq, GordonSeq2SeqConfig
    >>> model = GordonSeq2Seq(GordonSeq2SeqConfig(15, 8, cell="lstm", hidden=8))
    >>> params = model.init(jax.random.key(0))
    >>> ids = jnp.array([[2, 5, 1]]); mask = jnp.ones((1, 3), bool)
    >>> cache, logits = model.prefill(params, ids, mask)
    >>> cache, logits = model.step(params, cache, logits.argmax(-1))
    >>> logits.shape, cache["h"].shape
    ((1, 8), (1, 16))
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp

from equijax.models.gordon_seq2seq.config import CELLS, GordonSeq2SeqConfig

__all__ = ["GordonSeq2Seq", "cell_step", "paper_optimizer"]

Params = Any
Cache = dict[str, jax.Array]


def cell_step(kind: str, p: dict[str, jax.Array], x: jax.Array, state: Cache) -> Cache:
    """One step of a torch ``RNN`` / ``GRU`` / ``LSTM`` cell (weights ``(G*H, in)``, torch order).

    ``state`` is ``{"h": (B, H)}`` (and ``"c"`` for an LSTM); returns the new state. For the GRU
    the reset gate multiplies ``W_hn h + b_hn`` (torch's convention).
    """
    gi = x @ p["w_ih"].T + p["b_ih"]
    gh = state["h"] @ p["w_hh"].T + p["b_hh"]
    if kind == "rnn":
        return {"h": jnp.tanh(gi + gh)}
    if kind == "gru":
        ir, iz, in_ = jnp.split(gi, 3, -1)
        hr, hz, hn = jnp.split(gh, 3, -1)
        r, z = jax.nn.sigmoid(ir + hr), jax.nn.sigmoid(iz + hz)
        n = jnp.tanh(in_ + r * hn)
        return {"h": (1.0 - z) * n + z * state["h"]}
    i, f, g, o = jnp.split(gi + gh, 4, -1)
    c = jax.nn.sigmoid(f) * state["c"] + jax.nn.sigmoid(i) * jnp.tanh(g)
    return {"h": jax.nn.sigmoid(o) * jnp.tanh(c), "c": c}


def _uniform(key: jax.Array, shape: tuple[int, ...], bound: float) -> jax.Array:
    return jax.random.uniform(key, shape, jnp.float32, -bound, bound)


@dataclasses.dataclass(frozen=True)
class GordonSeq2Seq:
    """The authors' SCAN encoder-decoder (hashable; parameters are passed explicitly).

    Attributes:
        config: a :class:`~equijax.models.gordon_seq2seq.GordonSeq2SeqConfig`.
    """

    config: GordonSeq2SeqConfig

    # ---------------------------------------------------------------- parameters
    def init(self, key: jax.Array) -> Params:
        """Fresh parameters with torch's default initialisation.

        Embeddings ``N(0, 1)``; recurrent weights and biases ``U(±1/sqrt(width))``; linear
        layers ``U(±1/sqrt(fan_in))`` (kernels stored ``(in, out)``).
        """
        c = self.config
        h, d, g = c.hidden, c.decoder_width, CELLS[c.cell]
        keys = iter(jax.random.split(key, 24))

        def rnn(width: int, inp: int) -> dict[str, jax.Array]:
            b = 1.0 / math.sqrt(width)
            return {
                "w_ih": _uniform(next(keys), (g * width, inp), b),
                "w_hh": _uniform(next(keys), (g * width, width), b),
                "b_ih": _uniform(next(keys), (g * width,), b),
                "b_hh": _uniform(next(keys), (g * width,), b),
            }

        def linear(inp: int, out: int) -> dict[str, jax.Array]:
            b = 1.0 / math.sqrt(inp)
            return {"kernel": _uniform(next(keys), (inp, out), b),
                    "bias": _uniform(next(keys), (out,), b)}  # fmt: skip

        return {
            "encoder": {
                "embedding": {"embedding": jax.random.normal(next(keys), (c.in_vocab_size, h))},
                "fwd": rnn(h, h),
                "bwd": rnn(h, h),
            },
            "decoder": {
                "embedding": {"embedding": jax.random.normal(next(keys), (c.out_vocab_size, d))},
                "attn_combine": linear(2 * d, d),
                "cell": rnn(d, d),
                "out": linear(d, c.out_vocab_size),
            },
        }

    # ---------------------------------------------------------------- encoder
    def encode(self, params: Params, ids: jax.Array, mask: jax.Array) -> Cache:
        """Encodes ``ids`` (B, T) with ``mask`` (B, T) bool into the decoder's initial cache.

        Returns ``{"h", ("c",) "enc", "mask"}``: the decoder state (B, 2H), the encoder outputs
        (B, T, 2H) (zero at padding) and the mask. ``mask`` must be a prefix (padding at the end).
        """
        kind, p = self.config.cell, params["encoder"]
        ids = jnp.asarray(ids)
        mask = jnp.asarray(mask, bool)
        if ids.ndim != 2 or mask.shape != ids.shape:
            raise ValueError(f"ids and mask must both be (B, T); got {ids.shape} and {mask.shape}")
        x = jnp.swapaxes(p["embedding"]["embedding"][ids], 0, 1)  # (T, B, H)
        m = jnp.swapaxes(mask, 0, 1)[..., None]  # (T, B, 1)
        b, hid = ids.shape[0], self.config.hidden
        zero = {"h": jnp.zeros((b, hid), x.dtype)}
        if kind == "lstm":
            zero["c"] = jnp.zeros((b, hid), x.dtype)

        def run(cell_p: dict, reverse: bool) -> tuple[Cache, jax.Array]:
            def body(state, xs):
                xt, mt = xs
                new = cell_step(kind, cell_p, xt, state)
                state = jax.tree_util.tree_map(lambda n, o: jnp.where(mt, n, o), new, state)
                return state, jnp.where(mt, new["h"], 0.0)

            return jax.lax.scan(body, zero, (x, m), reverse=reverse)

        fin_f, out_f = run(p["fwd"], reverse=False)
        fin_b, out_b = run(p["bwd"], reverse=True)
        enc = jnp.swapaxes(jnp.concatenate([out_f, out_b], -1), 0, 1)  # (B, T, 2H)
        cache = {k: jnp.concatenate([fin_f[k], fin_b[k]], -1) for k in fin_f}
        return {**cache, "enc": enc, "mask": mask}

    # ---------------------------------------------------------------- decoder
    def step(
        self,
        params: Params,
        cache: Cache,
        token: jax.Array,
        *,
        dropout_key: jax.Array | None = None,
    ) -> tuple[Cache, jax.Array]:
        """One decoder step on ``token`` (B,) -> ``(cache, logits (B, V))``.

        Dropout on the token embedding is active iff ``dropout_key`` is given.
        """
        c, p = self.config, params["decoder"]
        e = p["embedding"]["embedding"][token]
        if dropout_key is not None and c.dropout > 0.0:
            keep = jax.random.bernoulli(dropout_key, 1.0 - c.dropout, e.shape)
            e = jnp.where(keep, e / (1.0 - c.dropout), 0.0)
        enc, mask = cache["enc"], cache["mask"]
        scores = jnp.einsum("bd,btd->bt", cache["h"], enc)
        scores = jnp.where(mask, scores, -jnp.inf)
        attn = jax.nn.softmax(scores, -1)
        ctx = jnp.einsum("bt,btd->bd", attn, enc)
        lin = p["attn_combine"]
        u = jax.nn.relu(jnp.concatenate([e, ctx], -1) @ lin["kernel"] + lin["bias"])
        state = {k: cache[k] for k in ("h", "c") if k in cache}
        new = cell_step(c.cell, p["cell"], u, state)
        logits = new["h"] @ p["out"]["kernel"] + p["out"]["bias"]
        return {**cache, **new}, logits

    def prefill(self, params: Params, ids: jax.Array, mask: jax.Array) -> tuple[Cache, jax.Array]:
        """Encodes the source and runs the first decoder step (on ``sos_id``).

        Returns ``(cache, logits (B, V))`` of the first output token.
        """
        cache = self.encode(params, ids, mask)
        sos = jnp.full((ids.shape[0],), self.config.sos_id, jnp.int32)
        return self.step(params, cache, sos)

    def decoder_init(self, pad_id: int):
        """``init(params, src) -> cache`` for :mod:`equijax.decoding` (mask = ``src != pad_id``).

        The decoding engine then feeds ``sos_id`` itself through :meth:`step`.
        """

        def init(params: Params, src: jax.Array) -> Cache:
            return self.encode(params, src, src != pad_id)

        return init

    # ---------------------------------------------------------------- training
    def sequence_nll(
        self,
        params: Params,
        ids: jax.Array,
        mask: jax.Array,
        tgt: jax.Array,
        tgt_mask: jax.Array,
        *,
        teacher_forcing: jax.Array,
        dropout_key: jax.Array | None = None,
    ) -> jax.Array:
        """Summed NLL (B,) of targets ``tgt`` (B, L) (EOS included, ``tgt_mask`` marks them).

        The authors' training loss: with ``teacher_forcing`` (B,) bool the gold previous token is
        fed; otherwise the model's own argmax, and the sum stops after its first predicted EOS.
        """
        c = self.config
        cache = self.encode(params, ids, mask)
        b, length = tgt.shape
        tgt_mask = jnp.asarray(tgt_mask, bool)
        gold_prev = jnp.concatenate([jnp.full((b, 1), c.sos_id, tgt.dtype), tgt[:, :-1]], 1)
        # Step t's dropout key is fold_in(key, t): the draws do not depend on the scan length,
        # so a target truncated after its last valid step gives the same loss and gradients.
        steps = jnp.arange(length, dtype=jnp.uint32)
        keys = (
            jax.vmap(lambda t: jax.random.fold_in(dropout_key, t))(steps)
            if dropout_key is not None
            else None
        )

        def body(carry, xs):
            cache, prev, alive, total = carry
            gold_in, gold, valid, key = xs
            tok = jnp.where(teacher_forcing, gold_in, prev)
            cache, logits = self.step(params, cache, tok, dropout_key=key)
            logp = jax.nn.log_softmax(logits, -1)
            nll = -jnp.take_along_axis(logp, gold[:, None], -1)[:, 0]
            live = alive & valid
            total = total + jnp.where(live, nll, 0.0)
            pred = jnp.argmax(logits, -1).astype(tgt.dtype)
            alive = alive & (teacher_forcing | (pred != c.eos_id))
            return (cache, pred, alive, total), None

        xs = (gold_prev.T, tgt.T, tgt_mask.T, keys)  # keys None: no dropout (an empty pytree)
        init = (cache, gold_prev[:, 0], jnp.ones((b,), bool), jnp.zeros((b,), jnp.float32))
        (_, _, _, total), _ = jax.lax.scan(body, init, xs)
        return total

    def example_loss(
        self, params: Params, example: dict[str, jax.Array], key: jax.Array,
        length: int | None = None, *, teacher_forcing: float = 0.5,
    ) -> jax.Array:  # fmt: skip
        """The authors' training loss of ONE example (no batch axis): summed NLL.

        ``example`` holds ``src`` (T,), ``tgt`` (L,) (EOS included) and their masks
        ``src_mask`` / ``tgt_mask``; ``key`` draws the teacher-forcing coin (probability
        ``teacher_forcing``) and the dropout masks. Use with
        :func:`equijax.training.ensemble.train_chunk`; ``length`` (static) keeps the first
        ``length`` target positions (at least the example's own length,
        :meth:`target_length`): the result does not change.
        """
        if length is not None:
            example = {**example, "tgt": example["tgt"][:length],
                       "tgt_mask": example["tgt_mask"][:length]}  # fmt: skip
        k_tf, k_drop = jax.random.split(key)
        tf = jax.random.uniform(k_tf, (1,)) < teacher_forcing
        return self.sequence_nll(
            params, example["src"][None], example["src_mask"][None], example["tgt"][None],
            example["tgt_mask"][None], teacher_forcing=tf, dropout_key=k_drop,
        )[0]  # fmt: skip

    @staticmethod
    def target_length(example: dict[str, jax.Array]) -> jax.Array:
        """Valid target positions of one example (``length_fn`` of the ensemble trainer)."""
        return example["tgt_mask"].sum().astype(jnp.int32)

    def greedy(
        self, params: Params, ids: jax.Array, mask: jax.Array, *, max_len: int, pad_id: int = 0
    ) -> jax.Array:
        """Greedy decoding (B, max_len) ids, EOS included, ``pad_id`` after it."""
        eos = self.config.eos_id

        def body(carry, _):
            cache, logits, done = carry
            tok = jnp.argmax(logits, -1).astype(jnp.int32)
            out = jnp.where(done, pad_id, tok)
            cache, logits = self.step(params, cache, tok)
            return (cache, logits, done | (tok == eos)), out

        cache, logits = self.prefill(params, ids, mask)
        init = (cache, logits, jnp.zeros((ids.shape[0],), bool))
        _, toks = jax.lax.scan(body, init, None, length=max_len)
        return toks.T


def paper_optimizer(learning_rate: float = 1e-4, clip_norm: float = 5.0):
    """The authors' optimiser: gradient-norm clipping ``clip_norm`` per module, then Adam.

    The encoder's and the decoder's gradients are clipped separately (torch's
    ``clip_grad_norm_`` on each), then one Adam step (equal to their two Adam optimisers, Adam
    being element-wise).
    """
    import optax

    from equijax.training.ensemble import clip_by_module_norm

    return optax.chain(clip_by_module_norm(clip_norm), optax.adam(learning_rate))
