"""One module per ``pointea`` subcommand, each with ``add_parser(subparsers)`` and ``run(args)``.

Options shared by several commands are added by the helpers below, so that every command spells
them alike: ``--device DEVICE`` (default auto), ``--checkpoint CKPT``, ``--data-root DIR``.
Counts take the metavar ``N``, folders ``DIR``, output files their format (``JSON``, ``PNG``).
"""

import argparse

# argparse's common base of parsers and argument groups: the helpers accept either
ArgumentContainer = argparse._ActionsContainer


def positive_int(text: str) -> int:
    """``argparse`` type for counts that must be at least 1 (points, batch size, top-k)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_device_argument(
    parser: ArgumentContainer, help: str = "auto (default), cpu, cuda or cuda:K"
) -> argparse.Action:
    """``--device DEVICE``, default ``auto`` (CUDA when available, else the CPU)."""
    return parser.add_argument("--device", default="auto", metavar="DEVICE", help=help)


def add_checkpoint_argument(
    parser: ArgumentContainer, required: bool = True, help: str = "checkpoint file (.pt)"
) -> argparse.Action:
    """``--checkpoint CKPT``."""
    return parser.add_argument("--checkpoint", required=required, metavar="CKPT", help=help)


def add_data_root_argument(
    parser: ArgumentContainer, help: str = "dataset folder (not needed for the synthetic dataset)"
) -> argparse.Action:
    """``--data-root DIR``."""
    return parser.add_argument("--data-root", metavar="DIR", help=help)
