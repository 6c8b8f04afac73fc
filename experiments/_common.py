"""The command line of an experiment script, from its ``Config`` (not an experiment itself).

Every script describes one run by a frozen ``Config`` dataclass with presets
(:mod:`experiments._config`); its command line only picks a preset and overrides fields, plus a
few plain flags that do not shape results (``--out``, ``--no-resume``, ``--data-dir`` ...).
:func:`parse_config` is that command line in one call: ``(config, args)`` from ``argv``, with
every ``ValueError`` of the config (a bad value or combination) as a one-line usage error
(exit code 2). The field and name helpers it works with are in :mod:`experiments._cli`
(``setting``, ``check_choice``, ``split_commas``, ``new_spelling``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from experiments._cli import ArgumentParser
from experiments._config import PRESETS, add_config_args, chosen_preset, overrides


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
