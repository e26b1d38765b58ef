"""The ``drift`` command line: a thin layer over the library.

Each subcommand lives in its own module ``drift.cli.<name>`` exposing ``register(subparsers)``, which adds a
parser whose ``func`` takes the parsed namespace and returns an exit code. Errors drift raises on purpose
(:class:`~drift.errors.DriftError`) are printed as one clear message naming the error type, with exit code 2,
never a traceback (``-v`` adds the traceback).

Start-up is kept short: :func:`main` registers only the subcommand named on the command line (the others are
listed in ``drift --help`` by their one-line :data:`HELP`, without importing their modules), so ``drift --version``
and ``drift --help`` import no subcommand at all and ``drift fit --help`` imports only what ``fit``'s flags need.
No subcommand module imports torch or transformers at import time; its ``run`` function imports the heavy stages.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys
import traceback
from collections.abc import Iterable, Sequence

from drift import __version__
from drift.errors import DriftError

# Subcommand modules, in the order they appear in `drift --help`.
COMMANDS: tuple[str, ...] = ("collect", "score", "import", "fit", "schedule", "probe", "onset", "train", "report")
# Commands whose module name differs (``import`` is a Python keyword).
_MODULES: dict[str, str] = {"import": "ingest"}
# The one line `drift --help` shows for each command; each module's ``register`` passes it as the parser's help,
# so the listing needs no subcommand import.
HELP: dict[str, str] = {
    "collect": "sample student rollouts and score them with student and teacher",
    "score": "re-score existing rollouts (a drift dataset or a jsonl)",
    "import": "import per-token logs from slime, NeMo RL, TRL/verl/swift, vLLM or jsonl",
    "fit": "bin metrics by position, bootstrap intervals, fit decay curves, test direction",
    "schedule": "show, export and write token-weight schedules (IW-OPD, prefix masks, fitted curves)",
    "probe": "continuation probe: teacher/student accuracy from student prefixes, reliability AUROCs",
    "onset": "per rollout, the first position where it leaves the teacher's support (CUSUM, no oracle)",
    "train": "on-policy distillation with a token-weight schedule",
    "report": "one self-contained HTML report of a dataset (+ Markdown, PNG/SVG figures)",
}


def module_name(command: str) -> str:
    """The module that implements ``command`` (``drift.cli.<name>``)."""
    return f"drift.cli.{_MODULES.get(command, command)}"


def command_in(argv: Sequence[str]) -> str | None:
    """The subcommand ``argv`` names: its first word that is not an option, if that is a command, else None.

    The top-level options (``-h``, ``--version``, ``-v``) take no value, so the first other word is the command.
    """
    for word in argv:
        if word.startswith("-"):
            continue
        return word if word in COMMANDS else None
    return None


def build_parser(commands: Iterable[str] | None = None) -> argparse.ArgumentParser:
    """The top-level parser.

    Args:
        commands: the subcommands to register with all their flags (default: every available one). The others
            are added as bare entries carrying only their :data:`HELP` line, so ``drift --help`` lists them and a
            mistyped command gets the usual "invalid choice" message, without importing their modules.
    """
    full = set(COMMANDS if commands is None else commands)
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
        if name not in full:
            if importlib.util.find_spec(module_name(name)) is not None:  # a stage not built yet is not listed
                sub.add_parser(name, help=HELP[name], add_help=False)
            continue
        try:
            module = importlib.import_module(module_name(name))
        except ModuleNotFoundError as exc:  # a stage not built yet must not break the others
            if exc.name == module_name(name):
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``drift`` console script (and of ``python -m drift``)."""
    words = list(sys.argv[1:] if argv is None else argv)
    command = command_in(words)
    parser = build_parser(() if command is None else (command,))
    args = parser.parse_args(words)
    if args.command and not getattr(args, "func", None) and args.command != command:  # pragma: no cover
        parser = build_parser((args.command,))  # argparse chose a command our scan missed: register it
        args = parser.parse_args(words)
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
