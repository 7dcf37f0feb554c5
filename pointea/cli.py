"""Command-line interface: ``pointea <command> ...``.

Each subcommand lives in ``pointea/commands/<name>.py`` with ``add_parser(subparsers)`` and
``run(args) -> int``; this module only assembles them. Heavy imports happen inside ``run``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional, Sequence

from pointea import __version__
from pointea.engine.allocator import configure_allocator

COMMANDS = ("train", "eval", "predict", "export", "models", "download", "viz", "data", "robustness")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pointea",
        description="Deep learning on point clouds with external attention.",
        epilog="Run 'pointea <command> --help' for the options and examples of each command.",
    )
    parser.add_argument("--version", action="version", version=f"pointea {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="<command>")
    for name in COMMANDS:
        module = importlib.import_module(f"pointea.commands.{name}")
        sub = module.add_parser(subparsers)
        sub.set_defaults(handler=module.run)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    configure_allocator()
    try:
        return int(args.handler(args) or 0)
    except OSError as error:  # an output path that is a folder, a full disk, no permission, ...
        print(f"pointea {args.command}: error: {describe_os_error(error)}", file=sys.stderr)
        return 1


def describe_os_error(error: OSError) -> str:
    """``error`` as one line without Python's ``[Errno N]`` prefix, e.g. ``out: Permission denied``."""
    if type(error).__str__ is not OSError.__str__ or not error.strerror:
        return str(error)  # a message of its own (pointea's WriteError, or OSError("text"))
    names = [str(name) for name in (error.filename, error.filename2) if name is not None]
    return f"{' -> '.join(names)}: {error.strerror}" if names else error.strerror


if __name__ == "__main__":
    sys.exit(main())
