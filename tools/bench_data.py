"""Dataset loading throughput: cold (cache build) and warm construction, and one epoch of batches.

For every dataset and layout found under ``--root`` it measures

* cold: construction with a fresh, empty cache folder (parse the sources, write the cache);
* warm: construction again with that cache in place (best of ``--repeats``, as the epochs);
* epoch (tensors): one shuffled pass over the in-memory tensors in batches (``points[idx]``),
  what a training loop that batches the dataset tensors itself pays per epoch;
* epoch (DataLoader): one shuffled pass through ``torch.utils.data.DataLoader`` (single
  process, default collate) over ``__getitem__``.

No augmentation is applied, so the numbers are the loading cost alone. The operating system's
file cache is not dropped between runs: "cold" means an empty pointea cache, not a cold disk.

Example::

    python tools/bench_data.py --root ../shared/data --out bench_data.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch
from torch.utils.data import DataLoader

from pointea.atomic import atomic_write_text
from pointea.tables import markdown_table
from pointea.data.modelnet import LAYOUTS as MODELNET_LAYOUTS
from pointea.data.modelnet import ModelNet10, ModelNet40
from pointea.data.shapenetpart import LAYOUTS as SHAPENETPART_LAYOUTS
from pointea.data.shapenetpart import ShapeNetPart

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data"


def _timed(make: Callable[[], object]):
    start = time.perf_counter()
    value = make()
    return value, time.perf_counter() - start


def _tensor_epoch(dataset, batch_size: int) -> float:
    """Seconds for one shuffled pass over ``dataset.points`` in batches (fixed-size datasets)."""
    start = time.perf_counter()
    order = torch.randperm(len(dataset))
    for batch in order.split(batch_size):
        # index_select: advanced indexing (points[batch]) is several times slower on a busy CPU
        dataset.points.index_select(0, batch), dataset.labels.index_select(0, batch)  # (B, N, C), (B,)
    return time.perf_counter() - start


def _loader_epoch(dataset, batch_size: int) -> float:
    start = time.perf_counter()
    for _ in DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=0):
        pass
    return time.perf_counter() - start


def bench_one(name: str, factory: Callable[..., object], layout: str, split: str, root: Path,
              batch_size: int, repeats: int) -> Optional[Dict[str, object]]:
    """One row of the table, or None when the layout is absent; warm and epoch times: best of ``repeats``."""
    with tempfile.TemporaryDirectory(prefix="pointea-bench-") as cache_dir:
        try:
            dataset, cold = _timed(lambda: factory(root, split=split, layout=layout, cache_dir=cache_dir))
        except FileNotFoundError:
            return None
        warm = min(_timed(lambda: factory(root, split=split, layout=layout, cache_dir=cache_dir))[1]
                   for _ in range(repeats))
        shapes = len(dataset)
        row = {
            "dataset": name, "layout": layout, "split": split, "shapes": shapes,
            "cold_s": cold, "cold_shapes_per_s": shapes / cold,
            "warm_s": warm, "warm_shapes_per_s": shapes / warm,
            "epoch_loader_s": min(_loader_epoch(dataset, batch_size) for _ in range(repeats)),
        }
        if isinstance(dataset, (ModelNet40, ModelNet10)):
            row["epoch_tensors_s"] = min(_tensor_epoch(dataset, batch_size) for _ in range(repeats))
        row["epoch_loader_shapes_per_s"] = shapes / row["epoch_loader_s"]
        return row


def run(root: Path, batch_size: int, repeats: int = 3) -> List[Dict[str, object]]:
    rows = []
    jobs = [("ModelNet40", ModelNet40, layout, "trainval") for layout in MODELNET_LAYOUTS]
    jobs += [("ModelNet10", ModelNet10, layout, "trainval") for layout in MODELNET_LAYOUTS]
    jobs += [("ShapeNetPart", ShapeNetPart, layout, "train") for layout in SHAPENETPART_LAYOUTS]
    for name, factory, layout, split in jobs:
        row = bench_one(name, factory, layout, split, root, batch_size, repeats)
        if row is not None:
            rows.append(row)
    return rows


def format_table(rows: List[Dict[str, object]]) -> str:
    header = ("dataset", "layout", "split", "shapes", "cold s", "cold shapes/s", "warm s",
              "warm shapes/s", "epoch tensors s", "epoch DataLoader s")
    lines = [header]
    for r in rows:
        tensors = r.get("epoch_tensors_s")
        lines.append((
            r["dataset"], r["layout"], r["split"], f"{r['shapes']:,}", f"{r['cold_s']:.2f}",
            f"{r['cold_shapes_per_s']:,.0f}", f"{r['warm_s']:.3f}", f"{r['warm_shapes_per_s']:,.0f}",
            "-" if tensors is None else f"{tensors:.3f}", f"{r['epoch_loader_s']:.3f}",
        ))
    return markdown_table(lines[0], lines[1:])


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="data folder (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="warm and epoch timings: best of this many")
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    if not args.root.is_dir():
        print(f"data root not found: {args.root}", file=sys.stderr)
        return 1
    rows = run(args.root, args.batch_size, args.repeats)
    if not rows:
        print(f"no dataset layout found under {args.root}", file=sys.stderr)
        return 1
    print(format_table(rows))
    if args.out:
        record = {"root": str(args.root), "batch_size": args.batch_size, "repeats": args.repeats,
                  "torch_threads": torch.get_num_threads(), "results": rows}
        atomic_write_text(args.out, json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
