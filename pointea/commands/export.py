"""``pointea export``: TorchScript and ONNX files of a checkpoint, checked against PyTorch."""

from __future__ import annotations

import argparse
import sys

from pointea.commands import positive_int

EPILOG = """\
examples:
  # TorchScript and ONNX, each checked against PyTorch on a fresh input
  pointea export --checkpoint runs/cls/checkpoints/best.pt --out-dir exported
  # ONNX only, for 2,048-point clouds
  pointea export --checkpoint best.pt --out-dir exported --format onnx --num-points 2048

The graphs take points (batch, N, C) float32 (and category (batch,) int64 for part segmentation)
and return raw logits. The batch axis is dynamic, N is fixed. A JSON file beside them records the
inputs, outputs and class names. The exit status is 1 when an export differs from PyTorch by more
than 1e-4.
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "export",
        help="export a checkpoint to TorchScript and ONNX",
        description="Export the model of a checkpoint to TorchScript and ONNX and verify both.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG,
    )
    parser.add_argument("--checkpoint", required=True, metavar="CKPT", help="checkpoint file (.pt)")
    parser.add_argument("--out-dir", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--format", dest="formats", action="append", choices=("torchscript", "onnx"),
                        help="format to write (repeatable; default: both)")
    parser.add_argument("--num-points", type=positive_int, metavar="N", help="points per cloud (default: the checkpoint's)")
    parser.add_argument("--name", help="base name of the files (default: the checkpoint's)")
    return parser


def run(args: argparse.Namespace) -> int:
    from pointea.engine.export import FORMATS, TOLERANCE, export_model

    try:
        result = export_model(args.checkpoint, args.out_dir, formats=args.formats or FORMATS,
                              num_points=args.num_points, name=args.name)
    except (FileNotFoundError, ValueError, ImportError) as error:
        print(f"pointea export: error: {error}", file=sys.stderr)
        return 2
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
