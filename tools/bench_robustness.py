"""Time ``pointea robustness``: the 35 ModelNet-C settings (7 corruptions x 5 levels) on a checkpoint.

Runs :func:`pointea.engine.robustness.robustness` once and reports, per corruption, the seconds
spent generating the corrupted clouds (all levels) and running the model on them, beside the
loading time, the clean pass and the whole run, with clouds per second over every setting.
``--baseline`` times the CE/mCE run (two models on the same clouds). Prints a table and writes
JSON with ``--out``.

    python tools/bench_robustness.py --checkpoint runs/cls --data-root data --out bench_robustness.json
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Dict, List, Optional

import torch

from pointea.atomic import atomic_write_text
from pointea.commands import positive_int
from pointea.tables import markdown_table
from pointea.data.corruptions import CORRUPTIONS, LEVELS
from pointea.engine.robustness import robustness


def run(args: argparse.Namespace) -> Dict[str, Any]:
    return robustness(args.checkpoint, data_root=args.data_root, split=args.split, dataset=args.dataset,
                      corruptions=args.corruptions, levels=args.levels or range(LEVELS), seed=args.seed,
                      batch_size=args.batch_size, device=args.device, baseline=args.baseline)


def rows(result: Dict[str, Any]) -> List[Dict[str, Any]]:
    """One row per corruption, then the clean pass, the loading and the whole run."""
    timing = result["timing"]
    table = [{"what": name, "corrupt_s": timing[name]["corrupt"], "evaluate_s": timing[name]["evaluate"],
              "seconds": timing[name]["corrupt"] + timing[name]["evaluate"], "settings": len(result["levels"]),
              "accuracy": result["corruption_accuracy"][name]} for name in result["corruptions"]]
    table.append({"what": "clean", "corrupt_s": None, "evaluate_s": timing["clean"], "seconds": timing["clean"],
                  "settings": 1, "accuracy": result["clean_accuracy"]})
    table.append({"what": "setup", "corrupt_s": None, "evaluate_s": None, "seconds": timing["setup"],
                  "settings": 0, "accuracy": None})
    settings = sum(row["settings"] for row in table[:-2])
    table.append({"what": "total", "corrupt_s": sum(r["corrupt_s"] or 0 for r in table),
                  "evaluate_s": sum(r["evaluate_s"] or 0 for r in table), "seconds": result["seconds"],
                  "settings": settings, "accuracy": result["mean_corrupted_accuracy"]})
    clouds = result["num_samples"]
    for row in table:
        row["clouds_per_s"] = clouds * row["settings"] / row["seconds"] if row["settings"] and row["seconds"] else None
    return table


def format_table(table: List[Dict[str, Any]]) -> str:
    def cell(value: Any, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    header = ("what", "settings", "corrupt s", "evaluate s", "seconds", "clouds/s", "OA")
    lines = [header] + [
        (r["what"], str(r["settings"]), cell(r["corrupt_s"], ".3f"), cell(r["evaluate_s"], ".3f"),
         f"{r['seconds']:.3f}", cell(r["clouds_per_s"], ",.1f"), cell(r["accuracy"], ".2f"))
        for r in table
    ]
    return markdown_table(lines[0], lines[1:])


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="pointea-cls-modelnet40-cpu", metavar="CKPT",
                        help="checkpoint, run folder or shipped weights name (default pointea-cls-modelnet40-cpu)")
    parser.add_argument("--data-root", metavar="DIR", help="dataset folder (not needed for synthetic)")
    parser.add_argument("--dataset", help="dataset (default: the checkpoint's)")
    parser.add_argument("--split", default="test", help="split (default test)")
    parser.add_argument("--baseline", metavar="CKPT", help="also run a baseline on the same clouds (CE, mCE)")
    parser.add_argument("--corruptions", nargs="+", choices=list(CORRUPTIONS), metavar="NAME",
                        help="corruptions (default all seven)")
    parser.add_argument("--levels", nargs="+", type=int, choices=range(LEVELS), metavar="L",
                        help="levels (default all five)")
    parser.add_argument("--seed", type=int, default=0, metavar="N", help="corruption seed (default 0)")
    parser.add_argument("--batch-size", type=positive_int, default=32, metavar="N", help="clouds per batch (default 32)")
    parser.add_argument("--device", default="auto", metavar="DEVICE", help="auto (default), cpu, cuda or cuda:K")
    parser.add_argument("--threads", type=positive_int, metavar="N", help="torch threads (default: torch's)")
    parser.add_argument("--out", metavar="JSON", help="also write the results as JSON here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        result = run(args)
    except (FileNotFoundError, ValueError) as error:
        print(f"bench_robustness: error: {error}", file=sys.stderr)
        return 2
    table = rows(result)
    print(f"{result['dataset']} {result['split']}: {result['num_samples']} clouds x {table[-1]['settings']} settings, "
          f"{result['num_points']} points, device {args.device}, {torch.get_num_threads()} threads")
    print(format_table(table))
    if args.out:
        settings = {k: v for k, v in vars(args).items() if k != "out"}
        record = {**settings, "torch_threads": torch.get_num_threads(), "num_samples": result["num_samples"],
                  "results": table, "robustness": result}
        atomic_write_text(args.out, json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
