"""Experiment configs: frozen dataclasses with presets, and the thin argparse layer over them.

Every experiment script describes one run by a frozen :func:`dataclasses.dataclass` (its
``Config``) with classmethod presets — at least ``paper()`` (the paper's budget) and
``quick()`` (a short CPU run) — in the habit of big_vision's ``get_config``. The command line
only chooses a preset and overrides fields:

* :func:`add_config_args` adds ``--preset`` (and ``--quick``, short for ``--preset quick``)
  and one ``--field-name`` flag per dataclass field, whose help shows the field's value under
  each preset once (``[paper: 3; quick: 1]``, or ``[default: 64]`` when all presets agree);
* :func:`config_from_args` builds ``getattr(Config, preset)(**overrides)`` from the parsed
  flags (only the flags the user gave override the preset);
* :func:`parse_config` is a script's whole command line in one call: ``(config, args)`` from
  ``argv``, with every ``ValueError`` of the config as a one-line usage error (exit code 2).

A field's help text lives in ``dataclasses.field(metadata={"help": ...})`` (:func:`setting`);
a ``Config.__post_init__`` checks names with :func:`check_choice`, and :func:`split_commas` /
:func:`new_spelling` read comma lists and earlier spellings of method names. Fields of type
``bool`` get ``--x / --no-x``; ``tuple[...]`` fields take one or more values; fields not
meant for the command line are named in ``skip``.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

PRESETS = ("paper", "quick")


# ----------------------------------------------------------------------------- config fields


def setting(default: Any, help: str) -> Any:
    """A ``Config`` field with its ``--help`` text (:func:`add_config_args` shows it)."""
    return dataclasses.field(default=default, metadata={"help": help})


def check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    """``ValueError`` naming the field, its flag and the choices unless ``value`` is allowed.

    ``value`` may be a tuple (a tuple field): then every element must be allowed, and one at least.
    """
    values = value if isinstance(value, tuple) else (value,)
    bad = [v for v in values if v not in allowed]
    if bad or not values:
        raise ValueError(f"unknown {name} {bad or value!r} (--{name.replace('_', '-')}); choose "
                         f"from {list(allowed)}")  # fmt: skip


def split_commas(values: Any) -> tuple[str, ...] | None:
    """``["a,b", "c"]`` -> ``("a", "b", "c")``: a tuple flag accepts ``a b`` and ``a,b`` alike."""
    if values is None:
        return None
    if isinstance(values, str):
        values = [values]
    return tuple(v.strip() for item in values for v in str(item).split(",") if v.strip())


def new_spelling(value: str, renames: dict[str, str], flag: str) -> str:
    """``value`` in this round's spelling; an old one warns (``FutureWarning``) naming the new."""
    if value in renames:
        warnings.warn(f"{flag} {value} is now spelled {renames[value]}; the old spelling will "
                      "be removed", FutureWarning, stacklevel=2)  # fmt: skip
        return renames[value]
    return value


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _scalar(tp: Any) -> tuple[Any, bool]:
    """(element type, is_tuple) of a field annotation; ``X | None`` counts as ``X``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return _scalar(args[0])
        return str, False
    if origin is tuple:
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        return (_scalar(args[0])[0] if args else str), True
    if tp in (int, float, str, bool, Path):
        return tp, False
    return str, False


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return " ".join(map(str, value)) if value else "()"
    return str(value)


def preset_values(cls: type, presets: tuple[str, ...], name: str, **required: Any) -> str:
    """``"paper: 3; quick: 1"`` (or ``"default: 3"`` when the presets agree) for field ``name``."""
    shown = []
    for p in presets:
        try:
            shown.append((p, _show(getattr(getattr(cls, p)(**required), name))))
        except (TypeError, ValueError):  # a preset that needs a required field
            return ""
    if len({v for _, v in shown}) == 1:
        return f"default: {shown[0][1]}"
    return "; ".join(f"{p}: {v}" for p, v in shown)


def add_config_args(
    parser: argparse.ArgumentParser,
    cls: type,
    presets: tuple[str, ...] = PRESETS,
    skip: tuple[str, ...] = (),
    required: dict[str, Any] | None = None,
) -> argparse.ArgumentParser:
    """Adds ``--preset``/``--quick`` and one override flag per field of ``cls`` to ``parser``.

    Args:
      parser: the script's parser.
      cls: a frozen dataclass with classmethod presets named in ``presets``.
      presets: the preset names; the first is the default preset.
      skip: fields without a flag (set by the script itself).
      required: example values of fields the presets need (only to render the help).
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"cls must be a dataclass, got {cls!r}.")
    parser.add_argument("--preset", choices=presets, default=None,
                        help=f"settings preset (default {presets[0]})")  # fmt: skip
    if "quick" in presets:
        parser.add_argument("--quick", action="store_true", help="short for --preset quick")
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip or not f.init:
            continue
        elem, is_tuple = _scalar(hints[f.name])
        values = preset_values(cls, presets, f.name, **(required or {}))
        text = f.metadata.get("help", "")
        help_ = f"{text} [{values}]" if values else text
        help_ = help_.replace("%", "%%")
        if elem is bool and not is_tuple:
            parser.add_argument(_flag(f.name), dest=f.name, default=None,
                                action=argparse.BooleanOptionalAction, help=help_)  # fmt: skip
        else:
            parser.add_argument(_flag(f.name), dest=f.name, default=None, type=elem,
                                nargs="+" if is_tuple else None, help=help_)  # fmt: skip
    return parser


def chosen_preset(args: argparse.Namespace, presets: tuple[str, ...] = PRESETS) -> str:
    """The preset the flags name (``--quick`` is ``--preset quick``)."""
    preset = getattr(args, "preset", None)
    if getattr(args, "quick", False):
        if preset not in (None, "quick"):
            raise ValueError(f"--quick contradicts --preset {preset}: pass one of them.")
        preset = "quick"
    return preset or presets[0]


def overrides(args: argparse.Namespace, cls: type, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The fields of ``cls`` that the user set on the command line."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.name in skip or not f.init:
            continue
        value = getattr(args, f.name, None)
        if value is not None:
            out[f.name] = tuple(value) if isinstance(value, list) else value
    return out


def config_from_args(
    args: argparse.Namespace,
    cls: type,
    presets: tuple[str, ...] = PRESETS,
    skip: tuple[str, ...] = (),
    **extra: Any,
) -> Any:
    """``getattr(cls, preset)(**extra, **overrides)`` from :func:`add_config_args` flags."""
    return getattr(cls, chosen_preset(args, presets))(**extra, **overrides(args, cls, skip))


def parse_config(
    cls: type,
    argv: list[str] | None,
    *,
    prog: str,
    description: str,
    presets: tuple[str, ...] = PRESETS,
    plain: Callable[[argparse.ArgumentParser], Any] | None = None,
    skip: tuple[str, ...] = (),
    required: dict[str, Any] | None = None,
    prepare: Callable[[argparse.Namespace], dict[str, Any]] | None = None,
) -> tuple[Any, argparse.Namespace]:
    """The run's config and the parsed flags.

    Args:
      cls: the script's frozen ``Config`` dataclass (presets named in ``presets``).
      argv: the command line (``None``: ``sys.argv[1:]``).
      prog: the script's name in messages (``python -m experiments.x``).
      description: the ``--help`` description.
      presets: the preset names; the first is the default.
      plain: adds the flags that are not config fields (``--out`` ...) to the parser.
      skip: config fields without an override flag.
      required: example values of fields every preset needs (to render ``--help``).
      prepare: called with the parsed flags before the config is built; returns keyword
        arguments for the preset (fields the script sets itself, e.g. from a plain flag) and may
        rewrite flags (e.g. old method names). A ``ValueError`` it raises is a usage error.

    Returns:
      ``(config, args)``: ``getattr(cls, preset)(**prepared, **overrides)`` and the namespace
      (with ``args.preset`` set to the chosen preset).
    """
    from experiments._cli import ArgumentParser

    parser = ArgumentParser(prog=prog, description=description)
    if plain is not None:
        plain(parser)
    add_config_args(parser, cls, presets, skip=skip, required=required)
    args = parser.parse_args(argv)
    try:
        extra = prepare(args) if prepare is not None else {}
        args.preset = chosen_preset(args, presets)
        config = getattr(cls, args.preset)(**extra, **overrides(args, cls, skip))
    except ValueError as err:
        parser.error(str(err))
    return config, args
