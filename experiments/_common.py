"""The command line of an experiment script, from its ``Config`` (not an experiment itself).

Every script describes one run by a frozen ``Config`` dataclass with presets
(:mod:`experiments._config`); its command line only picks a preset and overrides fields, plus a
few plain flags that do not shape results (``--out``, ``--no-resume``, ``--data-dir`` ...).

* :func:`parse_config` — ``(config, args)`` from ``argv``: the preset flags and one override flag
  per field, the script's plain flags, and every ``ValueError`` of the config (a bad value or
  combination) as a one-line usage error (exit code 2).
* :func:`rename_methods` — method names of earlier versions mapped to this round's spelling,
  with a :class:`FutureWarning` naming the new one.
* :func:`tfds_split` — a tfds split that must already be prepared (never a download).
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from experiments._cli import ArgumentParser, require_tfds
from experiments._config import PRESETS, add_config_args, chosen_preset, overrides


def rename_methods(
    names: Iterable[str], renamed: Mapping[str, str], flag: str = "--methods"
) -> tuple[str, ...]:
    """``names`` with every old spelling in ``renamed`` replaced by its new one (FutureWarning).

    Examples:
      >>> import warnings
      >>> with warnings.catch_warnings(record=True) as caught:
      ...     warnings.simplefilter("always")
      ...     rename_methods(["vanilla", "equitune"], {"vanilla": "pretrained"})
      ('pretrained', 'equitune')
      >>> str(caught[0].message)
      "--methods vanilla is now spelled 'pretrained'; the old spelling will be removed."
    """
    out = []
    for name in names:
        if name in renamed:
            warnings.warn(f"{flag} {name} is now spelled {renamed[name]!r}; the old spelling will "
                          "be removed.", FutureWarning, stacklevel=2)  # fmt: skip
            name = renamed[name]
        out.append(name)
    return tuple(out)


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


def tfds_split(name: str, split: str, data_dir: Any, offline_fix: str) -> Any:
    """The source of a *prepared* tfds split (:func:`equijax.data.images.tfds_source`).

    Raises :class:`~experiments._cli.ScriptError` naming ``--data-dir`` and ``offline_fix`` when
    the dataset is not prepared in ``data_dir`` (checked first: tfds would start a download).
    """
    from equijax.data import images

    require_tfds(name, data_dir, offline_fix)
    return images.tfds_source(name, split, data_dir=data_dir)
