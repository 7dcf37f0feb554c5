"""One module per ``pointea`` subcommand, each with ``add_parser(subparsers)`` and ``run(args)``."""

import argparse


def positive_int(text: str) -> int:
    """``argparse`` type for counts that must be at least 1 (points, batch size, top-k)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value
