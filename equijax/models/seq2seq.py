"""equijax's own seq2seq RNN / GRU / LSTM (bidirectional encoder, Luong attention decoder).

This is NOT the equizero paper's SCAN architecture; that one (the authors' fork of Gordon et
al.'s ``perm_equivariant_seq2seq``, which loads their trained weights) is
:mod:`equijax.models.gordon_seq2seq`. This variant: one layer, hidden size 64, bidirectional
encoder whose two directions' outputs and final carries are *summed* (width 64), Luong "general"
attention (a learned matrix) from the new decoder state after the cell step, input feeding
(``[embedding; previous context]``, zero context at step 1), logits
``Linear(dropout(tanh(Linear([h; context]))))`` and dropout 0.1 on both embeddings and on the
attentional hidden state. :class:`Seq2Seq` is a thin Flax shell with two methods, ``encode`` and
``decode_step``; everything else is a pure function of ``params``:

* :func:`init_params` — initial parameters.
* :func:`encoder` / :func:`step_fn` — ``init(params, src) -> state`` and
  ``step(params, state, token) -> (state, logits)``, the interface of
  :mod:`equijax.decoding` (plain and equivariant greedy decoding of a whole batch as one
  jitted ``lax.scan``).
* :func:`forward` — teacher-forced (or scheduled free-running) logits for training.
* :func:`sequence_loss` / :func:`make_train_step` — masked cross-entropy and an optax step.
* :func:`greedy_decode` — plain greedy decoding; :func:`exact_match` — the SCAN metric.

Examples:
  >>> import jax, jax.numpy as jnp
  >>> model = Seq2Seq(in_vocab_size=15, out_vocab_size=9, cell="lstm")
  >>> params = init_params(model, jax.random.key(0))
  >>> src = jnp.array([[5, 11, 1, 0, 0]])  # "jump twice <eos> <pad> <pad>" (ids)
  >>> greedy_decode(model, params, src, max_len=6).shape
  (1, 6)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from equijax._src import decoding, orbit

__all__ = [
    "Seq2Seq",
    "branch_log_probs",
    "encoder",
    "equivariant_decode",
    "exact_match",
    "forward",
    "greedy_decode",
    "init_params",
    "lambda_weights",
    "make_train_step",
    "sequence_loss",
    "step_fn",
]

CellKind = Literal["lstm", "gru", "rnn"]
_CELLS = {"lstm": nn.LSTMCell, "gru": nn.GRUCell, "rnn": nn.SimpleCell}


def _tree_add(a: Any, b: Any) -> Any:
    return jax.tree_util.tree_map(jnp.add, a, b)


class Seq2Seq(nn.Module):
    """Bidirectional-encoder, attention-decoder recurrent seq2seq model.

    Attributes:
      in_vocab_size: number of input ids (id ``pad_id`` is padding).
      out_vocab_size: number of output ids.
      cell: ``"lstm"``, ``"gru"`` or ``"rnn"`` (Elman, tanh).
      hidden: hidden size (64 in the paper).
      dropout: dropout rate (0.1 in the paper).
      pad_id: input padding id (masked out of the encoder and of attention).
    """

    in_vocab_size: int
    out_vocab_size: int
    cell: CellKind = "lstm"
    hidden: int = 64
    dropout: float = 0.1
    pad_id: int = 0

    def setup(self) -> None:
        if self.cell not in _CELLS:
            raise ValueError(f"cell must be one of {list(_CELLS)}, got {self.cell!r}.")
        cell = _CELLS[self.cell]
        h = self.hidden
        self.src_embed = nn.Embed(self.in_vocab_size, h)
        self.tgt_embed = nn.Embed(self.out_vocab_size, h)
        self.encoder = nn.Bidirectional(
            nn.RNN(cell(h)), nn.RNN(cell(h)), return_carry=True, merge_fn=jnp.add
        )
        self.dec_cell = cell(h)
        self.attn = nn.Dense(h, use_bias=False)
        self.combine = nn.Dense(h)
        self.out = nn.Dense(self.out_vocab_size)
        self.drop = nn.Dropout(self.dropout)

    def encode(self, src: jax.Array, deterministic: bool = True) -> dict[str, Any]:
        """Encodes ``src`` (B, S) int ids into the decoder's initial state (a dict pytree).

        The state holds the decoder carry (sum of both directions' final carries), the
        previous attention context, the encoder outputs (B, S, H), the source mask (B, S) and
        ``features`` (B, H): mean of the encoder outputs over non-padding positions (input of
        the λ network in λ-equitune).
        """
        mask = src != self.pad_id
        lengths = mask.sum(-1).astype(jnp.int32)
        emb = self.drop(self.src_embed(src), deterministic=deterministic)
        (carry_f, carry_b), outs = self.encoder(emb, seq_lengths=lengths)
        outs = outs * mask[..., None]
        feats = outs.sum(1) / jnp.maximum(lengths, 1)[:, None].astype(outs.dtype)
        return {
            "carry": _tree_add(carry_f, carry_b),
            "ctx": jnp.zeros((src.shape[0], self.hidden), outs.dtype),
            "enc": outs,
            "mask": mask,
            "features": feats,
        }

    def decode_step(
        self, state: dict[str, Any], token: jax.Array, deterministic: bool = True
    ) -> tuple[dict[str, Any], jax.Array]:
        """One decoder step: previous tokens (B,) -> (new state, next-token logits (B, V))."""
        emb = self.drop(self.tgt_embed(token), deterministic=deterministic)
        carry, h = self.dec_cell(state["carry"], jnp.concatenate([emb, state["ctx"]], -1))
        scores = jnp.einsum("bd,bsd->bs", self.attn(h), state["enc"])
        scores = jnp.where(state["mask"], scores, jnp.finfo(scores.dtype).min)
        ctx = jnp.einsum("bs,bsd->bd", jax.nn.softmax(scores, -1), state["enc"])
        o = jnp.tanh(self.combine(jnp.concatenate([h, ctx], -1)))
        logits = self.out(self.drop(o, deterministic=deterministic))
        return {**state, "carry": carry, "ctx": ctx}, logits

    def __call__(self, src: jax.Array, token: jax.Array, deterministic: bool = True) -> jax.Array:
        """Encodes ``src`` and runs one decoder step on ``token`` (used for initialisation)."""
        return self.decode_step(self.encode(src, deterministic), token, deterministic)[1]


def init_params(model: Seq2Seq, rng: jax.Array, src_len: int = 10) -> Any:
    """Initial parameters of ``model`` (a pytree)."""
    src = jnp.ones((1, src_len), jnp.int32)
    return model.init(rng, src, jnp.zeros((1,), jnp.int32))


def encoder(model: Seq2Seq) -> Callable[[Any, jax.Array], dict[str, Any]]:
    """``init(params, src) -> state``: deterministic encoding (evaluation)."""

    def init(params: Any, src: jax.Array) -> dict[str, Any]:
        return model.apply(params, src, method=Seq2Seq.encode)

    return init


def step_fn(model: Seq2Seq) -> decoding.StepFn:
    """``step(params, state, token) -> (state, logits)``: a deterministic decoder step."""

    def step(params: Any, state: Any, token: jax.Array) -> tuple[Any, jax.Array]:
        return model.apply(params, state, token, method=Seq2Seq.decode_step)

    return step


def forward(
    model: Seq2Seq,
    params: Any,
    src: jax.Array,
    tgt: jax.Array,
    *,
    sos_id: int,
    rng: jax.Array | None = None,
    teacher_forcing: float = 1.0,
) -> jax.Array:
    """Training-time logits (B, T, V) for targets ``tgt`` (B, T), as one ``lax.scan``.

    Each sequence is teacher-forced (fed the gold previous token) with probability
    ``teacher_forcing``, otherwise decoded free-running from its own argmax (the reference's
    per-sequence coin, ratio 0.5). Dropout is active iff ``rng`` is given.
    """
    deterministic = rng is None
    if rng is None:
        rng = jax.random.key(0)
    r_enc, r_tf, r_dec = jax.random.split(rng, 3)
    state = model.apply(params, src, deterministic, method=Seq2Seq.encode, rngs={"dropout": r_enc})
    b, t = tgt.shape
    gold_prev = jnp.concatenate([jnp.full((b, 1), sos_id, tgt.dtype), tgt[:, :-1]], 1)
    tf = jax.random.uniform(r_tf, (b,)) < teacher_forcing

    def body(carry, xs):
        state, prev = carry
        gold, r = xs
        tok = jnp.where(tf, gold, prev)
        state, logits = model.apply(
            params, state, tok, deterministic, method=Seq2Seq.decode_step, rngs={"dropout": r}
        )
        return (state, jnp.argmax(logits, -1).astype(tgt.dtype)), logits

    xs = (gold_prev.T, jax.random.split(r_dec, t))
    _, logits = jax.lax.scan(body, (state, gold_prev[:, 0]), xs)
    return jnp.swapaxes(logits, 0, 1)


def sequence_loss(logits: jax.Array, tgt: jax.Array, pad_id: int = 0) -> jax.Array:
    """Mean token cross-entropy over non-padding target positions (EOS included)."""
    mask = (tgt != pad_id).astype(logits.dtype)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, tgt)
    return (ce * mask).sum() / jnp.maximum(mask.sum(), 1.0)


def make_train_step(
    model: Seq2Seq,
    optimizer: optax.GradientTransformation,
    *,
    sos_id: int,
    pad_id: int = 0,
    teacher_forcing: float = 0.5,
) -> Callable[..., tuple[Any, Any, jax.Array]]:
    """A jitted ``train_step(params, opt_state, src, tgt, rng) -> (params, opt_state, loss)``."""

    def loss_fn(params, src, tgt, rng):
        logits = forward(
            model, params, src, tgt, sos_id=sos_id, rng=rng, teacher_forcing=teacher_forcing
        )
        return sequence_loss(logits, tgt, pad_id)

    @jax.jit
    def train_step(params, opt_state, src, tgt, rng):
        loss, grads = jax.value_and_grad(loss_fn)(params, src, tgt, rng)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return train_step


def greedy_decode(
    model: Seq2Seq,
    params: Any,
    src: jax.Array,
    *,
    max_len: int = 50,
    sos_id: int = 1,
    eos_id: int = 2,
    pad_id: int = 0,
) -> jax.Array:
    """Plain greedy decoding of a batch: (B, S) ids -> (B, max_len) ids, PAD after EOS."""
    state = encoder(model)(params, src)
    out = decoding.greedy_decode(
        step_fn(model),
        params,
        state,
        batch_size=src.shape[0],
        max_len=max_len,
        start_id=sos_id,
        eos_id=eos_id,
        pad_id=pad_id,
    )
    return out.tokens


def exact_match(pred: jax.Array, tgt: jax.Array) -> jax.Array:
    """Per-example exact match (B,) bool of two (B, T) id arrays (PAD after EOS in both)."""
    t = min(pred.shape[1], tgt.shape[1])
    same = (pred[:, :t] == tgt[:, :t]).all(-1)
    # Anything beyond the common length must be padding in both.
    rest_p = (pred[:, t:] == 0).all(-1) if pred.shape[1] > t else True
    rest_t = (tgt[:, t:] == 0).all(-1) if tgt.shape[1] > t else True
    return same & rest_p & rest_t


def lambda_weights(weight_fn: Callable[[jax.Array], jax.Array], states: Any) -> jax.Array:
    """Normalised per-branch weights ``(B, |G|)`` from a λ network on the branch encodings.

    ``w = softmax_g(l_g)`` with ``l_g = weight_fn(features of g·x)``, by the engine's λ
    normalisation (:func:`equijax._src.orbit.normalized_weights`, order-independent sum):
    finite for any finite logits, ``-inf`` masks a branch, all masked gives uniform weights.
    """
    logits = jax.vmap(weight_fn)(states["features"])  # (|G|, B)
    return orbit.normalized_weights(logits, axis=0, exact=True).T


def equivariant_decode(
    model: Seq2Seq,
    params: Any,
    src: jax.Array,
    in_group: Any,
    out_group: Any,
    *,
    method: decoding.Method = "equitune",
    max_len: int = 50,
    sos_id: int = 1,
    eos_id: int = 2,
    pad_id: int = 0,
    weight_fn: Callable[[jax.Array], jax.Array] | None = None,
    average: Literal["prob", "logprob"] = "prob",
    proxy: str | Callable = "neg_max_probability",
    after_eos: decoding.AfterEos = "model",
) -> decoding.DecodeOutput:
    """Group-equivariant greedy decoding of a batch with a seq2seq model.

    Branch ``g`` encodes ``in_group.act(g, src)`` and decodes in the output vocabulary acted on
    by ``out_group`` (same element indexing); see
    :func:`equijax.decoding.equivariant_greedy_decode` for the methods. For
    ``method="lambda_equitune"``, ``weight_fn(features (B, H)) -> (B,)`` gives λ logits from the
    encoder features of each branch (the old ``method="lambda"`` still works, with a
    ``FutureWarning``). ``after_eos`` (``"equitune_sequence"`` only): ``"zero"`` for the
    authors' zero rows after a branch's EOS (the paper's row is ``average="logprob",
    after_eos="zero"``).

    Returns:
      A :class:`~equijax.decoding.DecodeOutput`; ``decode(g·x) == g·decode(x)`` exactly.
    """
    if in_group.order != out_group.order or in_group.table != out_group.table:
        raise ValueError(
            "in_group and out_group must be the same abstract group (equal Cayley tables), so "
            "that element g means the same thing on inputs and outputs."
        )
    method = decoding.canonical_method(method)
    states = decoding.branch_states(encoder(model), params, src, in_group)
    weights = None
    if method == "lambda_equitune":
        if weight_fn is None:
            raise ValueError("method='lambda_equitune' needs weight_fn(features) -> (B,) λ logits.")
        weights = lambda_weights(weight_fn, states)
    return decoding.equivariant_greedy_decode(
        step_fn(model),
        params,
        states,
        out_group,
        method=method,
        max_len=max_len,
        start_id=sos_id,
        eos_id=eos_id,
        pad_id=pad_id,
        weights=weights,
        average=average,
        proxy=proxy,
        batch_size=src.shape[0],
        after_eos=after_eos,
    )


def branch_log_probs(
    model: Seq2Seq,
    params: Any,
    src: jax.Array,
    tgt: jax.Array,
    in_group: Any,
    out_group: Any,
    *,
    sos_id: int,
    rng: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Teacher-forced, mapped-back log-probs of every branch (for equivariant finetuning).

    Branch ``g`` is fed ``g·src`` and the gold history ``g·tgt``; its log-probs are mapped back
    with ``g⁻¹`` on the vocabulary axis.

    Returns:
      ``(log_probs (|G|, B, T, V), features (|G|, B, H))``.
    """
    gs = jnp.arange(in_group.order, dtype=jnp.int32)
    rngs = jax.random.split(rng, in_group.order) if rng is not None else None

    def one(g, r):
        s, t = in_group.act(g, src), out_group.act(g, tgt)
        logits = forward(model, params, s, t, sos_id=sos_id, rng=r, teacher_forcing=1.0)
        lp = jax.nn.log_softmax(logits.astype(jnp.float32), -1)
        feats = model.apply(params, s, method=Seq2Seq.encode)["features"]
        return out_group.act_axis(out_group.inverse(g), lp, axis=-1), feats

    if rngs is None:
        return jax.vmap(lambda g: one(g, None))(gs)
    return jax.vmap(one)(gs, rngs)
