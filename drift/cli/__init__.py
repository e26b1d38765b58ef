"""The ``drift`` command line: a thin layer over the library.

Each subcommand lives in its own module ``drift.cli.<name>`` exposing ``register(subparsers)``, which adds a
parser whose ``func`` takes the parsed namespace and returns an exit code. Errors drift raises on purpose
(:class:`~drift.errors.DriftError`) are printed as one clear message naming the error type, with exit code 2,
never a traceback (``-v`` adds the traceback).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback
from collections.abc import Sequence

from drift import __version__
from drift.errors import DriftError

# Subcommand modules, in the order they appear in `drift --help`.
COMMANDS: tuple[str, ...] = ("collect", "score", "import", "fit", "schedule", "probe", "train", "report")
# Commands whose module name differs (``import`` is a Python keyword).
_MODULES: dict[str, str] = {"import": "ingest"}


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every available subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="drift",
        description="Measure position-dependent supervision drift in on-policy distillation.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run `drift COMMAND --help` for the flags of one command.",
    )
    parser.add_argument("--version", action="version", version=f"drift {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"drift.cli.{_MODULES.get(name, name)}")
        except ModuleNotFoundError as exc:  # a stage not built yet must not break the others
            if exc.name == f"drift.cli.{_MODULES.get(name, name)}":
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``drift`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(int(args.verbose), 2) if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except DriftError as exc:
        if args.verbose:
            traceback.print_exc()
        print(f"drift {args.command}: error ({type(exc).__name__}): {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"drift {args.command}: interrupted; rerun with --if-exists resume to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
