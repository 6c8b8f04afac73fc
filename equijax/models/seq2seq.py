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
* :func:`sequence_model` — the model as a :class:`~equijax.decoding.SequenceModel`
  (``prefill`` encodes the source and feeds the start token, ``step`` is one decoder step,
  ``teacher_force`` the training-time forward): every method of the sequence engine
  (:func:`equijax.decoding.decode`, :func:`equijax.decoding.method_log_probs`) works for it.
* :func:`encoder` / :func:`step_fn` — ``init(params, src) -> state`` and
  ``step(params, state, token) -> (state, logits)``.
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

import functools
from collections.abc import Callable
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from equijax._src import decoding, orbit, sequence

__all__ = [
    "Seq2Seq",
    "encoder",
    "equivariant_decode",
    "exact_match",
    "forward",
    "greedy_decode",
    "init_params",
    "lambda_weights",
    "make_train_step",
    "sequence_loss",
    "sequence_model",
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


@functools.lru_cache(maxsize=64)
def sequence_model(model: Seq2Seq, sos_id: int = 1) -> sequence.SequenceModel:
    """The model as a :class:`~equijax.decoding.SequenceModel` (the sequence engine's contract).

    ``prefill(params, src, mask)`` encodes the source (padding is ``model.pad_id``; ``mask`` is
    implied by it) and feeds ``sos_id``, returning the logits of the first output token;
    ``step`` is one deterministic decoder step; ``teacher_force(params, src, mask, tgt, rng)``
    is :func:`forward` with teacher forcing (dropout iff ``rng``), returning ``(logits,
    encoder features)`` for :func:`equijax.decoding.method_log_probs`. Cached per
    ``(model, sos_id)``: equal calls give the same object.

    Examples:
      >>> model = Seq2Seq(in_vocab_size=15, out_vocab_size=9, cell="gru", hidden=8)
      >>> params = init_params(model, jax.random.key(0))
      >>> sm = sequence_model(model)
      >>> src = jnp.array([[5, 11, 2, 0]])
      >>> cache, logits = sm.prefill(params, src, src != 0)
      >>> logits.shape
      (1, 9)
    """
    step = step_fn(model)

    def prefill(params: Any, ids: jax.Array, mask: jax.Array) -> tuple[Any, jax.Array]:
        del mask  # padding is model.pad_id
        state = model.apply(params, ids, method=Seq2Seq.encode)
        return step(params, state, jnp.full(ids.shape[:1], sos_id, jnp.int32))

    def teacher_force(params: Any, ids: jax.Array, mask: jax.Array, tgt: jax.Array,
                      rng: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:  # fmt: skip
        del mask
        logits = forward(model, params, ids, tgt, sos_id=sos_id, rng=rng, teacher_forcing=1.0)
        feats = model.apply(params, ids, method=Seq2Seq.encode)["features"]
        return logits, feats

    return sequence.SequenceModel(prefill, step, teacher_force=teacher_force)


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

    The sequence engine (:func:`equijax.decoding.decode`) on :func:`sequence_model`: branch
    ``g`` encodes ``in_group.act(g, src)`` and decodes in the output vocabulary acted on by
    ``out_group`` (same element indexing). For ``method="lambda_equitune"``,
    ``weight_fn(features (B, H)) -> (B,)`` gives λ logits from the encoder features of each
    branch (the old ``method="lambda"`` still works, with a ``FutureWarning``). ``after_eos``
    (``"equitune_sequence"`` only): ``"zero"`` for the authors' zero rows after a branch's EOS
    (the paper's row is ``average="logprob", after_eos="zero"``). ``proxy`` may be a callable
    ``fn(probs (B, T, V), valid (B, T)) -> (B,)``.

    Returns:
      A :class:`~equijax.decoding.DecodeOutput`; ``decode(g·x) == g·decode(x)`` exactly.
    """
    if in_group.order != out_group.order or in_group.table != out_group.table:
        raise ValueError(
            "in_group and out_group must be the same abstract group (equal Cayley tables), so "
            "that element g means the same thing on inputs and outputs."
        )
    method = sequence.canonical_method(method, methods=decoding.METHODS, stacklevel=3)
    weights = None
    if method == "lambda_equitune":
        if weight_fn is None:
            raise ValueError("method='lambda_equitune' needs weight_fn(features) -> (B,) λ logits.")
        weights = lambda cache: weight_fn(cache["features"])
    sequence._check_fixed(out_group, {"start_id": sos_id})
    custom = callable(proxy)
    if custom:
        fn = proxy
        proxy = lambda p: jax.vmap(fn)(p.probs, p.valid)
    out = sequence.decode(
        sequence_model(model, sos_id), params, src, src != model.pad_id, method=method,
        group=out_group, in_group=in_group, max_new_tokens=max_len, average=average,
        weights=weights, proxy=proxy, eos_id=eos_id, pad_id=pad_id, after_eos=after_eos,
        proxy_probs=custom,
    )  # fmt: skip
    if out.branch is None:
        return decoding.DecodeOutput(out.tokens, out.scores, out.lengths)
    return decoding.DecodeOutput(out.tokens, out.scores, out.lengths, out.branch[:, 0],
                                 out.proxy[0])  # fmt: skip
