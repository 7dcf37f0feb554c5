"""Prediction throughput on a folder of files: reading alone, then ``predict_files`` one cloud per
forward pass against batches.

Writes ``--files`` synthetic clouds (random points on a sphere, ``--points`` each, no real data)
in ``--format`` into a temporary folder, then measures files/s of

* read: ``read_point_cloud(path, dtype=float64)`` on every file in turn, as predict reads them;
* predict, batch 1: ``predict_files`` with ``batch_size=1`` (the model called once per file);
* predict, batch B: ``predict_files`` with ``--batch-size`` (default: predict's default).

The model is a randomly initialized ``--preset`` classifier (weights do not change the cost) fed
``--num-points`` points. Each figure is the best of ``--repeats``. Prints a table and writes
JSON with ``--out``.

    python tools/bench_predict.py --files 908 --format .txt --out bench_predict.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import torch

from pointea.atomic import atomic_write_text
from pointea.commands import positive_int
from pointea.tables import markdown_table
from pointea.data.io import WRITE_SUFFIXES, read_point_cloud, write_point_cloud
from pointea.engine.predict import DEFAULT_BATCH_SIZE, predict_files
from pointea.engine.checkpoint import load_model
from pointea.models import build_model


def write_clouds(folder: Path, count: int, points: int, suffix: str, seed: int = 0) -> List[Path]:
    """``count`` clouds of ``points`` random points on the unit sphere, as ``cloud_NNNNN<suffix>``."""
    rng = np.random.default_rng(seed)
    paths = []
    for index in range(count):
        xyz = rng.normal(size=(points, 3))
        xyz /= np.linalg.norm(xyz, axis=1, keepdims=True)
        path = folder / f"cloud_{index:05d}{suffix}"
        write_point_cloud(path, xyz.astype(np.float32))
        paths.append(path)
    return paths


def _best_seconds(run: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def run(args: argparse.Namespace) -> List[Dict[str, object]]:
    torch.manual_seed(0)
    if args.checkpoint:  # real weights, e.g. the shipped classifier a user would predict with
        model, meta = load_model(args.checkpoint)
        meta = {**meta, "num_points": args.num_points or meta.get("num_points")}
    else:
        model = build_model(args.preset, num_classes=args.classes).eval()
        meta = {"classes": [f"class{i}" for i in range(args.classes)], "num_points": args.num_points or 1024}
    with tempfile.TemporaryDirectory(prefix="pointea-bench-predict-") as folder:
        paths = write_clouds(Path(folder), args.files, args.points, args.format)

        def read_all() -> None:
            for path in paths:
                read_point_cloud(path, dtype=np.float64)

        def predict(batch_size: int) -> Callable[[], object]:
            return lambda: predict_files([folder], (model, meta), batch_size=batch_size, progress=False)

        jobs = [("read", None, read_all), ("predict", 1, predict(1)),
                ("predict", args.batch_size, predict(args.batch_size))]
        rows = []
        for what, batch_size, job in jobs:
            seconds = _best_seconds(job, args.repeats)
            rows.append({"what": what, "batch_size": batch_size, "seconds": seconds,
                         "files_per_s": args.files / seconds})
    return rows


def format_table(rows: List[Dict[str, object]]) -> str:
    header = ("what", "batch", "seconds", "files/s")
    lines = [header] + [
        (r["what"], "-" if r["batch_size"] is None else str(r["batch_size"]), f"{r['seconds']:.3f}",
         f"{r['files_per_s']:,.1f}")
        for r in rows
    ]
    return markdown_table(lines[0], lines[1:])


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=positive_int, default=908, metavar="N", help="clouds to write (default 908)")
    parser.add_argument("--points", type=positive_int, default=2048, metavar="N", help="points per file (default 2048)")
    parser.add_argument("--format", default=".txt", choices=WRITE_SUFFIXES, help="file format (default .txt)")
    parser.add_argument("--preset", default="pointea-cls", help="model preset (default pointea-cls)")
    parser.add_argument("--checkpoint", metavar="CKPT",
                        help="use this checkpoint, run folder or shipped weights name instead of --preset")
    parser.add_argument("--classes", type=positive_int, default=10, metavar="N", help="model classes (default 10)")
    parser.add_argument("--num-points", type=positive_int, metavar="N",
                        help="points fed to the model (default: the checkpoint's, else 1024)")
    parser.add_argument("--batch-size", type=positive_int, default=DEFAULT_BATCH_SIZE, metavar="N",
                        help=f"the batched run's batch size (default {DEFAULT_BATCH_SIZE}, predict's default)")
    parser.add_argument("--repeats", type=positive_int, default=1, metavar="N", help="best of this many (default 1)")
    parser.add_argument("--threads", type=positive_int, metavar="N", help="torch threads (default: torch's)")
    parser.add_argument("--out", metavar="JSON", help="also write the results as JSON here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = run(args)
    print(format_table(rows))
    if args.out:
        settings = {k: v for k, v in vars(args).items() if k != "out"}
        record = {**settings, "torch_threads": torch.get_num_threads(), "results": rows}
        atomic_write_text(args.out, json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
