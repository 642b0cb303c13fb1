"""Helpers every ``nullswap`` command shares: exit codes, logging, ``--set`` overrides.

Imports nothing from the command modules, so any of them can import it (no cycle).
"""
from __future__ import annotations

import argparse
import json
import logging

from ..errors import ConfigError

__all__ = ["EXIT_OK", "EXIT_FAILURES", "EXIT_USAGE", "EXIT_INTERRUPTED", "log", "add_verbosity",
           "add_overrides", "configure_logging", "parse_overrides", "add_level_argument", "resolve_level"]

EXIT_OK, EXIT_FAILURES, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

log = logging.getLogger("nullswap")


def add_verbosity(p: argparse.ArgumentParser, *, top_level: bool = False) -> None:
    """-v/-q. On a subcommand they default to SUPPRESS: absent there keeps the top-level value."""
    if top_level:
        p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
        p.add_argument("-q", "--quiet", action="store_true", help="only errors")
    else:
        p.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS, help="more logging")
        p.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="only errors")


def add_overrides(p: argparse.ArgumentParser, example: str) -> None:
    """``--set KEY=VALUE`` (repeatable); ``example`` must be a field the default model accepts."""
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help=f"override a model config field, e.g. --set {example} (repeatable)")


def configure_logging(verbose: int, quiet: bool) -> None:
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def parse_overrides(args) -> dict:
    """``--steps`` and ``--set KEY=VALUE`` (VALUE parsed as JSON when it can be) as kwargs."""
    out = {"steps": args.steps} if getattr(args, "steps", None) else {}
    for item in getattr(args, "overrides", []):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}", hint="e.g. --set threads=2")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def add_level_argument(parser) -> None:
    from ..levels import LEVELS

    parser.add_argument("--level", choices=list(LEVELS), default=None,
                        help="protection level: a measured strength of the default cloak (low 0.7, "
                             "mid 1.0 = default, high 2.0), or max: per-image PGD, seconds per face on "
                             "a CPU (figures in README 'Protection levels'); not with --strength")


def resolve_level(args) -> None:
    """Turn ``--level`` into the ``--strength`` (and, for "max", the ``--model`` and ``--set``
    overrides) it names: one code path after parsing. The user's own ``--set`` wins."""
    from ..errors import ConfigError
    from ..levels import get_level

    level = getattr(args, "level", None)
    if level is None:
        return
    if getattr(args, "strength", None) is not None:
        raise ConfigError("--level and --strength both set", hint="a level is a named strength: pass one")
    lv = get_level(level)
    args.strength = lv.strength
    if lv.model is not None:
        if getattr(args, "model", None) not in (None, lv.model):
            raise ConfigError(f"--level {level} runs model {lv.model!r}; --model {args.model!r} given too",
                              hint="drop --model, or pick a level of the default network")
        args.model = lv.model
        args.overrides = [f"{k}={json.dumps(v)}" for k, v in lv.overrides] + list(getattr(args, "overrides", []))
