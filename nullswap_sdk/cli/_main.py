"""``nullswap`` entry point: builds the parser from the command modules and dispatches."""
from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import NullSwapError
from ._common import EXIT_INTERRUPTED, EXIT_USAGE, add_verbosity, configure_logging, log

__all__ = ["main", "build_parser", "COMMANDS"]

# Subcommand → module of this package with ``add_parser(sub)`` and ``run(args) -> int``.
# Each module keeps its heavy imports inside ``run``, so building the parser stays light.
COMMANDS = {
    "cloak": "cloak",
    "reference": "reference",
    "eval": "eval",
    "info": "info",
    "export": "export",
    "compare": "compare",
    "cloak-video": "video",
    "serve": "serve",
}


def _module(command: str):
    return importlib.import_module(f"{__package__}.{COMMANDS[command]}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nullswap", description="Cloak identities in photos against face swapping.")
    add_verbosity(p, top_level=True)
    sub = p.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        _module(command).add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose, args.quiet)
    try:
        return _module(args.command).run(args)
    except NullSwapError as e:
        log.error("%s", e)
        return EXIT_USAGE
    except KeyboardInterrupt:
        log.error("interrupted; finished outputs are complete, partial ones were not written")
        return EXIT_INTERRUPTED
    except Exception as e:  # a bug, not a user error: one line, the traceback only with -vv
        log.error("unexpected %s: %s (run with -vv for the traceback, and please report it)",
                  type(e).__name__, e)
        log.debug("traceback", exc_info=True)
        return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
