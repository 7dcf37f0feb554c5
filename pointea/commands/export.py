"""``pointea export``: TorchScript and ONNX files of a checkpoint, checked against PyTorch."""

from __future__ import annotations

import argparse
import sys

from pointea.commands import add_checkpoint_argument, positive_int

FORMATS = ("torchscript", "onnx")  # pointea.engine.export.FORMATS, kept here so --help imports no torch

EPILOG = """\
examples:
  # TorchScript and ONNX, each checked against PyTorch on a fresh input
  pointea export --checkpoint runs/cls/checkpoints/best.pt --out-dir exported
  # the shipped weights, TorchScript only (needs nothing beyond torch)
  pointea export --checkpoint pointea-cls-modelnet40-cpu --out-dir exported --format torchscript
  # ONNX only, for 2,048-point clouds
  pointea export --checkpoint runs/cls --out-dir exported --format onnx --num-points 2048

The graphs take points (batch, N, C) float32 (and category (batch,) int64 for part segmentation)
and return raw logits. The batch axis is dynamic, N is fixed. A JSON file beside them records the
inputs, outputs and class names. ONNX needs the export extra: pip install "pointea[export]";
without it, --format all writes TorchScript and says ONNX was skipped. The exit status is 1 when
an export differs from PyTorch by more than 1e-4.
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "export",
        help="export a checkpoint to TorchScript and ONNX",
        description="Export the model of a checkpoint to TorchScript and ONNX and verify both.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG,
    )
    add_checkpoint_argument(parser, help="checkpoint file, run folder or shipped weights name")
    parser.add_argument("--out-dir", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--format", choices=("all", *FORMATS), default="all",
                        help="all (default: TorchScript, and ONNX when its packages are installed), torchscript or onnx")
    parser.add_argument("--num-points", type=positive_int, metavar="N", help="points per cloud (default: the checkpoint's)")
    parser.add_argument("--name", metavar="NAME", help="base name of the files (default: the checkpoint's)")
    return parser


def run(args: argparse.Namespace) -> int:
    from pointea.engine.export import TOLERANCE, export_model

    try:
        result = export_model(args.checkpoint, args.out_dir, formats=args.format,
                              num_points=args.num_points, name=args.name)
    except ImportError as error:
        print(f"pointea export: error: {error} (or --format torchscript)", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as error:
        print(f"pointea export: error: {error}", file=sys.stderr)
        return 2
    for fmt, reason in result.get("skipped", {}).items():
        print(f"{fmt}: skipped: {reason} (or --format torchscript)")
    failed = False
    for fmt in FORMATS:
        if fmt in result:
            entry = result[fmt]
            if "error" in entry:
                print(f"{fmt}: FAILED to export: {entry['error']}")
            elif "max_abs_diff" in entry:
                verdict = "ok" if entry["ok"] else f"FAILED (tolerance {TOLERANCE:.0e})"
                print(f"{fmt}: {entry['path']}  max |diff| vs PyTorch {entry['max_abs_diff']:.2e}  {verdict}")
            failed |= not entry["ok"]
    print(f"metadata: {result['metadata']}")
    return 1 if failed else 0
