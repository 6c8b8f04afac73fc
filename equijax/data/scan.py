"""SCAN (Lake & Baroni, 2018), generated from its grammar: no download, no data files.

The whole dataset is every command of a small grammar (20,910 commands)::

    C -> S | S and S | S after S
    S -> V | V twice | V thrice
    V -> D[1] opposite D[2] | D[1] around D[2] | D | U
    D -> U left | U right | turn left | turn right
    U -> walk | look | run | jump

Commands are interpreted into action sequences (``I_WALK``, ``I_TURN_LEFT``, ...) exactly as in
the published files. :func:`split` derives the two splits used by the equizero paper so that they
equal the published files as multisets:

* ``"add_jump"`` (``add_prim_split/tasks_{train,test}_addprim_jump.txt``): test = every command
  that contains ``jump`` except ``jump`` itself (7,706); train = every other command plus the
  primitive ``jump -> I_JUMP`` repeated to 1,467 lines (14,670 lines in all).
* ``"around_right"`` (``template_split/tasks_{train,test}_template_around_right.txt``): test =
  every command containing ``<verb> around right`` with a primitive verb and no
  ``turn around right`` (4,476); train = every command without ``around right`` (15,225).
  Commands containing ``turn around right`` (1,209) are in neither published file, so they are
  in neither split here.

The module also encodes examples into padded id arrays (:func:`encode`), holds out a validation
part of a training list (:func:`train_val_split`), batches arrays (:func:`batches`) and builds
the symmetry groups of the paper (:func:`groups`), acting on input-word ids and on output-action
ids with the same element indexing.

Examples:
  >>> from equijax.data import scan
  >>> train, test = scan.split("add_jump")
  >>> len(train), len(test)
  (14670, 7706)
  >>> scan.interpret("jump around left after walk")
  'I_WALK I_TURN_LEFT I_JUMP I_TURN_LEFT I_JUMP I_TURN_LEFT I_JUMP I_TURN_LEFT I_JUMP'
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    from equijax._src.groups import PermutationGroup

__all__ = [
    "ACTIONS",
    "MAX_INPUT_LEN",
    "MAX_OUTPUT_LEN",
    "PRIMITIVES",
    "SPLITS",
    "WORDS",
    "Vocab",
    "all_examples",
    "batches",
    "decode_ids",
    "encode",
    "groups",
    "input_vocab",
    "interpret",
    "load_file",
    "output_vocab",
    "split",
    "train_val_split",
]

PRIMITIVES: tuple[str, ...] = ("walk", "look", "run", "jump")
WORDS: tuple[str, ...] = (
    "walk", "look", "run", "jump", "turn", "left", "right",
    "opposite", "around", "twice", "thrice", "and", "after",
)  # fmt: skip
ACTIONS: tuple[str, ...] = ("I_WALK", "I_LOOK", "I_RUN", "I_JUMP", "I_TURN_LEFT", "I_TURN_RIGHT")
SPLITS: tuple[str, ...] = ("add_jump", "around_right")
#: Longest command (9 words) + EOS.
MAX_INPUT_LEN = 10
#: Longest action sequence (48 actions) + EOS.
MAX_OUTPUT_LEN = 50
#: Number of copies of ``jump -> I_JUMP`` in the published add-jump train file.
JUMP_REPEATS = 1467

PAD, EOS_IN = "<pad>", "<eos>"
SOS, EOS = "<sos>", "<eos>"

_LINE = re.compile(r"^IN: (.*) OUT: (.*)$")


# --------------------------------------------------------------------------------------------
# Grammar and interpretation.
# --------------------------------------------------------------------------------------------


def _verb_phrases() -> list[str]:
    """All 34 phrases V, in a fixed order."""
    out = list(PRIMITIVES)
    for u in (*PRIMITIVES, "turn"):
        for d in ("left", "right"):
            out.append(f"{u} {d}")
    for u in (*PRIMITIVES, "turn"):
        for kind in ("opposite", "around"):
            for d in ("left", "right"):
                out.append(f"{u} {kind} {d}")
    return out


def _interpret_v(words: Sequence[str], command: str) -> list[str]:
    n = len(words)
    if n == 1 and words[0] in PRIMITIVES:
        return [f"I_{words[0].upper()}"]
    if n in (2, 3) and words[0] in (*PRIMITIVES, "turn") and words[-1] in ("left", "right"):
        turn = f"I_TURN_{words[-1].upper()}"
        act = [] if words[0] == "turn" else [f"I_{words[0].upper()}"]
        if n == 2:
            return [turn, *act]
        if words[1] == "opposite":
            return [turn, turn, *act]
        if words[1] == "around":
            return [turn, *act] * 4
    raise ValueError(
        f"command {command!r}: {' '.join(words)!r} is not a SCAN verb phrase (expected e.g. "
        "'jump', 'walk left', 'turn around right', 'run opposite left')."
    )


def _interpret_s(words: Sequence[str], command: str) -> list[str]:
    if words and words[-1] in ("twice", "thrice"):
        reps = 2 if words[-1] == "twice" else 3
        return _interpret_v(words[:-1], command) * reps
    return _interpret_v(words, command)


def interpret(command: str) -> str:
    """Interprets a SCAN command into its action sequence (the published semantics).

    Args:
      command: words separated by single spaces, e.g. ``"jump twice after walk left"``.

    Returns:
      The actions separated by spaces, e.g. ``"I_TURN_LEFT I_WALK I_JUMP I_JUMP"``.

    Raises:
      TypeError: if ``command`` is not a string.
      ValueError: if the command is empty, uses words outside the SCAN vocabulary, or is not
        generated by the grammar.

    Examples:
      >>> interpret("run opposite right twice")
      'I_TURN_RIGHT I_TURN_RIGHT I_RUN I_TURN_RIGHT I_TURN_RIGHT I_RUN'
    """
    words = _check_command(command)
    for conj in ("and", "after"):
        if conj in words:
            i = words.index(conj)
            left, right = _interpret_s(words[:i], command), _interpret_s(words[i + 1 :], command)
            return " ".join(left + right if conj == "and" else right + left)
    return " ".join(_interpret_s(words, command))


def _check_command(command: str) -> list[str]:
    if not isinstance(command, str):
        raise TypeError(f"command must be a str, got {type(command).__name__}.")
    words = command.split()
    if not words:
        raise ValueError("command is empty; pass SCAN words such as 'jump twice'.")
    unknown = sorted({w for w in words if w not in WORDS})
    if unknown:
        raise ValueError(
            f"command {command!r} contains words outside the SCAN vocabulary: {unknown}; "
            f"allowed words are {list(WORDS)}."
        )
    return words


@functools.cache
def _all_examples() -> tuple[tuple[str, str], ...]:
    singles = []
    for v in _verb_phrases():
        singles += [v, f"{v} twice", f"{v} thrice"]
    commands = list(singles)
    for conj in ("and", "after"):
        commands += [f"{a} {conj} {b}" for a in singles for b in singles]
    return tuple((c, interpret(c)) for c in commands)


def all_examples() -> list[tuple[str, str]]:
    """Every SCAN command (20,910) with its actions, in a fixed generation order.

    Examples:
      >>> ex = all_examples()
      >>> len(ex), ex[0]
      (20910, ('walk', 'I_WALK'))
    """
    return list(_all_examples())


def _has_word(command: str, word: str) -> bool:
    return word in command.split()


Pairs = list[tuple[str, str]]


def split(name: Literal["add_jump", "around_right"]) -> tuple[Pairs, Pairs]:
    """The published SCAN split ``name`` as ``(train, test)`` lists of ``(command, actions)``.

    Args:
      name: ``"add_jump"`` (add-primitive "jump") or ``"around_right"`` (template "around right").

    Returns:
      ``(train, test)``; each equals the published file as a multiset of lines (order differs).

    Raises:
      ValueError: for an unknown split name.

    Examples:
      >>> train, test = split("around_right")
      >>> len(train), len(test), test[0][0]
      (15225, 4476, 'walk around right')
    """
    if name not in SPLITS:
        raise ValueError(f"unknown SCAN split {name!r}; use one of {list(SPLITS)}.")
    examples = _all_examples()
    if name == "add_jump":
        test = [e for e in examples if _has_word(e[0], "jump") and e[0] != "jump"]
        train = [e for e in examples if not _has_word(e[0], "jump")]
        train += [("jump", "I_JUMP")] * JUMP_REPEATS
        return train, test
    prim_around_right = re.compile(r"\b(walk|look|run|jump) around right\b")
    test = [
        e for e in examples if prim_around_right.search(e[0]) and "turn around right" not in e[0]
    ]
    train = [e for e in examples if "around right" not in e[0]]
    return train, test


def load_file(path: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """Reads a SCAN-format text file (lines ``IN: <command> OUT: <actions>``).

    Args:
      path: the file.

    Returns:
      The ``(command, actions)`` pairs, one per line, in file order (blank lines are skipped).

    Raises:
      ValueError: naming the line number of any line that does not match the format.
    """
    out = []
    with open(path, encoding="ascii") as f:
        for i, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            m = _LINE.match(line)
            if m is None:
                raise ValueError(
                    f"{path}:{i}: expected 'IN: <command> OUT: <actions>', got {line!r}."
                )
            out.append((m.group(1), m.group(2)))
    return out


# --------------------------------------------------------------------------------------------
# Vocabularies and encoding.
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Vocab:
    """A token <-> id table (hashable; id 0 is padding).

    Attributes:
      tokens: the tokens in id order.
      pad_id: id of the padding token.
      eos_id: id of the end-of-sequence token.
      sos_id: id of the start-of-sequence token, or ``None`` (input vocabulary).
    """

    tokens: tuple[str, ...]
    pad_id: int = 0
    eos_id: int = 1
    sos_id: int | None = None

    def __len__(self) -> int:
        return len(self.tokens)

    @functools.cached_property
    def index(self) -> dict[str, int]:
        return {t: i for i, t in enumerate(self.tokens)}

    def ids(self, text: str, *, what: str = "sequence") -> list[int]:
        """Ids of the space-separated ``text`` (no EOS). Raises ``ValueError`` on unknown tokens."""
        toks = text.split()
        unknown = sorted({t for t in toks if t not in self.index or t in (PAD, EOS, SOS)})
        if unknown:
            raise ValueError(
                f"{what} {text!r} has tokens outside the vocabulary: {unknown}; allowed: "
                f"{[t for t in self.tokens if t not in (PAD, EOS, SOS)]}."
            )
        return [self.index[t] for t in toks]


def input_vocab() -> Vocab:
    """Input vocabulary: ``<pad>`` (0), ``<eos>`` (1), then the 13 SCAN words."""
    return Vocab(tokens=(PAD, EOS_IN, *WORDS), pad_id=0, eos_id=1)


def output_vocab() -> Vocab:
    """Output vocabulary: ``<pad>`` (0), ``<sos>`` (1), ``<eos>`` (2), then the 6 actions."""
    return Vocab(tokens=(PAD, SOS, EOS, *ACTIONS), pad_id=0, eos_id=2, sos_id=1)


def encode(
    examples: Sequence[tuple[str, str]],
    *,
    in_vocab: Vocab | None = None,
    out_vocab: Vocab | None = None,
    max_input_len: int = MAX_INPUT_LEN,
    max_output_len: int = MAX_OUTPUT_LEN,
) -> tuple[np.ndarray, np.ndarray]:
    """Encodes ``(command, actions)`` pairs into padded int32 id arrays, EOS appended.

    Args:
      examples: the pairs.
      in_vocab: input vocabulary (default :func:`input_vocab`).
      out_vocab: output vocabulary (default :func:`output_vocab`).
      max_input_len: padded input length (incl. EOS).
      max_output_len: padded output length (incl. EOS); 50 fits every SCAN target.

    Returns:
      ``(src, tgt)`` of shapes ``(N, max_input_len)`` and ``(N, max_output_len)``.

    Raises:
      ValueError: for an empty list, an empty command, unknown words/actions, or a sequence that
        does not fit (nothing is silently truncated or dropped).

    Examples:
      >>> src, tgt = encode([("jump twice", "I_JUMP I_JUMP")])
      >>> src[0, :3].tolist(), tgt[0, :3].tolist()
      ([5, 11, 1], [6, 6, 2])
    """
    in_vocab = in_vocab or input_vocab()
    out_vocab = out_vocab or output_vocab()
    if len(examples) == 0:
        raise ValueError("examples is empty; pass at least one (command, actions) pair.")
    src = np.full((len(examples), max_input_len), in_vocab.pad_id, np.int32)
    tgt = np.full((len(examples), max_output_len), out_vocab.pad_id, np.int32)
    for i, ex in enumerate(examples):
        if not (isinstance(ex, (tuple, list)) and len(ex) == 2):
            raise TypeError(f"examples[{i}] must be a (command, actions) pair, got {ex!r}.")
        command, actions = ex
        _check_command(command)
        s = [*in_vocab.ids(command, what="command"), in_vocab.eos_id]
        t = [*out_vocab.ids(actions, what="actions"), out_vocab.eos_id]
        if len(s) > max_input_len:
            raise ValueError(
                f"command {command!r} has {len(s) - 1} words, more than max_input_len - 1 = "
                f"{max_input_len - 1}; raise max_input_len."
            )
        if len(t) > max_output_len:
            raise ValueError(
                f"actions for {command!r} have {len(t) - 1} tokens, more than max_output_len - 1 "
                f"= {max_output_len - 1}; raise max_output_len."
            )
        src[i, : len(s)] = s
        tgt[i, : len(t)] = t
    return src, tgt


def decode_ids(ids: np.ndarray, vocab: Vocab | None = None) -> list[str]:
    """Turns output id rows back into action strings (up to the first EOS; PAD/SOS dropped).

    Examples:
      >>> decode_ids(np.array([[6, 6, 2, 0]]))
      ['I_JUMP I_JUMP']
    """
    vocab = vocab or output_vocab()
    out = []
    for row in np.asarray(ids):
        toks = []
        for i in row.tolist():
            if i == vocab.eos_id:
                break
            if i not in (vocab.pad_id, vocab.sos_id):
                toks.append(vocab.tokens[i])
        out.append(" ".join(toks))
    return out


def train_val_split(
    examples: Sequence[tuple[str, str]], *, val_fraction: float = 0.1, seed: int = 0
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Holds out a validation part of a training list.

    Only commands that occur once are eligible for validation, so repeated primitives (the
    1,467 copies of ``jump`` in add-jump) stay in training and no command is in both parts.

    Args:
      examples: the training pairs.
      val_fraction: fraction of all lines to hold out, in ``(0, 1)``.
      seed: shuffling seed.

    Returns:
      ``(train, val)``.

    Examples:
      >>> tr, va = train_val_split(split("add_jump")[0], val_fraction=0.1)
      >>> len(tr) + len(va), len(va), ("jump", "I_JUMP") in va
      (14670, 1467, False)
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}.")
    counts: dict[tuple[str, str], int] = {}
    for ex in examples:
        counts[tuple(ex)] = counts.get(tuple(ex), 0) + 1
    single = [i for i, ex in enumerate(examples) if counts[tuple(ex)] == 1]
    n_val = round(val_fraction * len(examples))
    if n_val > len(single):
        raise ValueError(f"val_fraction={val_fraction} asks for more lines than unique commands.")
    rng = np.random.default_rng(seed)
    val_idx = set(rng.permutation(single)[:n_val].tolist())
    train = [tuple(ex) for i, ex in enumerate(examples) if i not in val_idx]
    val = [tuple(examples[i]) for i in sorted(val_idx)]
    return train, val


def batches(
    arrays: Sequence[np.ndarray], batch_size: int, *, seed: int | None = 0, drop_last: bool = True
) -> Iterator[tuple[np.ndarray, ...]]:
    """Yields minibatches of aligned arrays for one epoch (shuffled unless ``seed is None``).

    Examples:
      >>> src, tgt = encode(split("add_jump")[1][:10])
      >>> [b[0].shape for b in batches((src, tgt), 4)]
      [(4, 10), (4, 10)]
    """
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise ValueError("arrays must have the same length along axis 0.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}.")
    order = np.arange(n) if seed is None else np.random.default_rng(seed).permutation(n)
    stop = n - n % batch_size if drop_last else n
    for i in range(0, stop, batch_size):
        idx = order[i : i + batch_size]
        yield tuple(a[idx] for a in arrays)


# --------------------------------------------------------------------------------------------
# Symmetry groups (one abstract group acting on both vocabularies).
# --------------------------------------------------------------------------------------------

_GROUP_CYCLES = {
    "verb": ((("jump", "run"),), (("I_JUMP", "I_RUN"),)),
    "direction": ((("left", "right"),), (("I_TURN_LEFT", "I_TURN_RIGHT"),)),
    "verb4": (
        (("jump", "run", "walk", "look"),),
        (("I_JUMP", "I_RUN", "I_WALK", "I_LOOK"),),
    ),
}

#: The group the paper uses for each split.
SPLIT_GROUP = {"add_jump": "verb", "around_right": "direction"}


def groups(
    name: Literal["verb", "direction", "verb4"],
    in_vocab: Vocab | None = None,
    out_vocab: Vocab | None = None,
) -> tuple[PermutationGroup, PermutationGroup]:
    """The input-side and output-side permutation groups of one abstract SCAN symmetry group.

    ``"verb"``: ``jump <-> run`` / ``I_JUMP <-> I_RUN`` (Add Jump); ``"direction"``:
    ``left <-> right`` / ``I_TURN_LEFT <-> I_TURN_RIGHT`` (Around Right); ``"verb4"``: the
    4-cycle ``jump -> run -> walk -> look`` on words and actions (Gordon et al.). Both groups are
    built with the same cycle structure, so element ``g`` means the same abstract element on both
    sides (their Cayley tables are equal; this is checked).

    Args:
      name: the group.
      in_vocab: input vocabulary (default :func:`input_vocab`).
      out_vocab: output vocabulary (default :func:`output_vocab`).

    Returns:
      ``(G_in, G_out)``: the permutation groups on input ids and on output ids.

    Examples:
      >>> G_in, G_out = groups("verb")
      >>> G_in.order, G_in.table == G_out.table
      (2, True)
    """
    from equijax._src.groups import permutation

    if name not in _GROUP_CYCLES:
        raise ValueError(f"unknown SCAN group {name!r}; use one of {list(_GROUP_CYCLES)}.")
    in_vocab = in_vocab or input_vocab()
    out_vocab = out_vocab or output_vocab()
    in_cycles, out_cycles = _GROUP_CYCLES[name]
    g_in = permutation(
        len(in_vocab), [[in_vocab.index[w] for w in c] for c in in_cycles], name=f"scan_{name}_in"
    )
    g_out = permutation(
        len(out_vocab),
        [[out_vocab.index[w] for w in c] for c in out_cycles],
        name=f"scan_{name}_out",
    )
    if g_in.table != g_out.table:  # pragma: no cover - guaranteed by the shared cycle structure
        raise AssertionError("input and output groups must have the same Cayley table.")
    return g_in, g_out
