"""``pointea data``: check a folder of your own clouds before training on it."""

from __future__ import annotations

import argparse
import json
import sys

DESCRIPTION = """\
Summarise a folder of your own point clouds: the task it suits (classification by class
folders, or part segmentation by per-point labels), the classes or parts, clouds per split and
class, points per file, and every file that cannot be read with the reason. Exits 1 when the
folder cannot be trained on, naming each problem as training would.
"""

EPILOG = """\
layouts (classification: one folder per class; segmentation: clouds with per-point labels):
  DIR/<class>/<files>                    no split: 20% of each class carved for test, and
                                         --val-fraction of the rest for val
  DIR/<class>/{train,test}/<files>       DIR/{train,test}/<class>/<files>
  DIR/{train,test}/<files>               segmentation of one kind of object
  DIR/{train,test}/<category>/<files>    segmentation, each category its own parts
  DIR/train.txt, DIR/test.txt [val.txt]  split lists, one relative path a line

Per-point labels: a PLY property or PCD field (label, class, classification, part, also
CloudCompare's scalar_Classification / scalar_label), the last of 4 or 7 columns of
.txt/.xyz/.csv/.npy, or a sidecar NAME.seg / NAME.labels (one integer a line). Part names from
DIR/labels.txt (line i names label i) or DIR/labels.yaml ({2: ground, 5: tree} or a list).

examples:
  pointea data ~/scans
  pointea data ~/scans --task segmentation --json
  pointea train --config folder-cls --data-root ~/scans --run-dir runs/scans
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "data",
        help="check a folder of your own clouds before training (task, classes, counts, bad files)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("root", metavar="DIR", help="the dataset folder")
    parser.add_argument("--task", choices=("classification", "segmentation"),
                        help="the task to check for (default: detected from the files)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--val-fraction", type=float, default=0.1, metavar="F",
                        help="share of each class's training clouds held out for validation when "
                             "the folder has no val split (default: %(default)s, as data.val_fraction)")
    return parser


def run(args: argparse.Namespace) -> int:
    from pointea.data.folder import inspect_folder

    try:
        report = inspect_folder(args.root, task=args.task, val_fraction=args.val_fraction)
    except (FileNotFoundError, ValueError) as error:
        print(f"pointea data: error: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report.format())
    if not report.ok:
        more = f" (and {len(report.problems) - 1} more, listed above)" if len(report.problems) > 1 else ""
        print(f"pointea data: error: {report.problems[0]}{more}", file=sys.stderr)
    return 0 if report.ok else 1
