"""``pointea predict``: classify or segment your own point cloud files with a checkpoint."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List

from pointea.commands import add_checkpoint_argument, add_device_argument, positive_int

DEFAULT_BATCH_SIZE = 32  # as pointea.engine.predict.DEFAULT_BATCH_SIZE (not imported: keeps --help fast)

EPILOG = """\
examples:
  # top-5 classes of a few files (any of .ply .pcd .xyz .txt .csv .pts .npy .npz .off .obj .stl)
  pointea predict scan.ply chair.off --checkpoint runs/cls/checkpoints/best.pt
  # every cloud under a folder (recursively), results saved as JSON keyed by file
  pointea predict scans/ --checkpoint best.pt --out predictions.json
  # only the best class of each file
  pointea predict scans/ --checkpoint best.pt --topk 1
  # part segmentation of a chair scan: coloured PLY files (with a 'label' property) in out/
  pointea predict chair_scan.pcd --checkpoint runs/partseg/checkpoints/best.pt --category Chair --out-dir out

Clouds are centred, scaled into the unit sphere and resampled to the checkpoint's point count
(fixed seed: the same file always gives the same answer). Segmentation labels are predicted at
the sampled points and carried to every original point by nearest neighbour. Files are read
in the background and predicted in batches (--batch-size; the answers do not depend on it). A
file that cannot be read is reported and the others are still predicted; the exit status is
then 1. A degenerate cloud (fewer than 3 distinct positions, e.g. one point or identical points)
is predicted with a warning after its result line (and under "warning" in --out); so are
warnings from reading a file. The exit status stays 0 for them.
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "predict",
        help="predict classes or parts of point cloud files",
        description="Classify point cloud files, or segment them into the parts of a given category.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG,
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="point cloud files or folders")
    add_checkpoint_argument(parser)
    parser.add_argument("--topk", type=positive_int, default=5, metavar="N",
                        help="classes to report per file (default 5)")
    parser.add_argument("--out", metavar="JSON", help="write the results as JSON keyed by file")
    parser.add_argument("--category", metavar="NAME", help="object category (part segmentation, e.g. Chair)")
    parser.add_argument("--out-dir", metavar="DIR", help="folder for the coloured PLY files of a segmentation")
    parser.add_argument("--num-points", type=positive_int, metavar="N",
                        help="points fed to the model (default: the checkpoint's)")
    parser.add_argument("--batch-size", type=positive_int, default=DEFAULT_BATCH_SIZE, metavar="N",
                        help=f"clouds per forward pass (default {DEFAULT_BATCH_SIZE})")
    add_device_argument(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    import logging

    from pointea.atomic import atomic_write_text
    from pointea.engine.checkpoint import load_model
    from pointea.engine.device import resolve_device
    from pointea.engine.predict import predict_files
    from pointea.engine.tasks import task_for

    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=logging.WARNING, format="%(message)s")
        # warnings about a file are printed after its result line instead
        root.handlers[0].addFilter(lambda record: not getattr(record, "pointea_file_warning", False))
    try:
        if args.out and Path(args.out).is_dir():
            raise ValueError(f"--out {args.out} is a folder; give a JSON file name")
        device = resolve_device(args.device)
        loaded = load_model(args.checkpoint, device=device)
        if task_for(loaded[0]).uses_category and args.out_dir is None:
            raise ValueError("part segmentation writes coloured PLY files: give --out-dir DIR")
        results = predict_files(args.paths, loaded, topk=args.topk, device=device,
                                num_points=args.num_points, category=args.category, out_dir=args.out_dir,
                                batch_size=args.batch_size)
    except (FileNotFoundError, ValueError) as error:
        print(f"pointea predict: error: {error}", file=sys.stderr)
        return 2

    for result in results:
        print(describe(result))
    if args.out:
        atomic_write_text(args.out, json.dumps(to_json(results), indent=2) + "\n")
        print(f"wrote {args.out}")
    failures = sum("error" in result for result in results)
    if failures:
        print(f"pointea predict: {failures} of {len(results)} files failed", file=sys.stderr)
        return 1
    return 0


def describe(result: Dict[str, Any]) -> str:
    """One line per file for the terminal, naming the file once, then its warning if any."""
    file = result["file"]
    if "error" in result:
        error = result["error"]
        if error.startswith(f"{file}: "):
            line = f"{file}: ERROR {error[len(file) + 2:]}"
        else:
            line = f"ERROR {error}" if file in error else f"{file}: ERROR {error}"
    elif "predictions" in result:
        ranked = ", ".join(f"{p['class']} {100 * p['probability']:.1f}%" for p in result["predictions"])
        line = f"{file}: {ranked}"
    else:
        parts = ", ".join(f"{name} {count}" for name, count in result["part_counts"].items())
        where = f" -> {result['output']}" if "output" in result else ""
        line = f"{file} ({result['category']}, {result['num_points']} points): {parts}{where}"
    return line + (f"\n  warning: {result['warning']}" if "warning" in result else "")


def to_json(results: List[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """Results keyed by file; per-point label arrays stay in the PLY files."""
    return {r["file"]: {k: v for k, v in r.items() if k not in ("file", "labels")} for r in results}
