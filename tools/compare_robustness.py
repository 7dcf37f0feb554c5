"""Compare models under corruption: one table from several ``pointea robustness`` JSON files.

Each file holds one model's clean OA and OA per corruption and level on the same generated
clouds (same dataset, split, points, seed and levels: checked, a mismatch names both files).
The table gives, per model, the clean OA, the mean OA over all corrupted settings, OA_c per
corruption (the mean over its levels) and, against the model named with ``--baseline``, the
corruption error ``CE = (100 - OA_c) / (100 - OA_c of the baseline)`` averaged into mCE, and the
relative mCE (ModelNet-C's definitions, :func:`pointea.engine.robustness.corruption_errors`).
The clouds are the same for every model, so this equals running ``pointea robustness
--baseline`` for each pair. ``--plot`` draws OA against severity, one panel per corruption and
one line per model.

    pointea robustness --checkpoint runs/ea --data-root DATA --split val --out ea.json   # one per model
    python tools/compare_robustness.py ea=ea.json sa=sa.json pointnet=pointnet.json \\
        --baseline pointnet --out robustness_table.json --plot robustness.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from pointea.atomic import atomic_path, atomic_write_text
from pointea.engine.robustness import corruption_errors
from pointea.tables import markdown_table

# what must agree between files for their accuracies to come from the same clouds
SAME_CLOUDS = ("dataset", "split", "num_points", "num_samples", "levels", "seed")
REQUIRED = SAME_CLOUDS + ("clean_accuracy", "mean_corrupted_accuracy", "corruption_accuracy", "corruptions")


def parse_entry(entry: str) -> Tuple[str, Path]:
    """``NAME=PATH`` or ``PATH`` (named after the file's stem) -> (name, path)."""
    name, sep, path = entry.partition("=")
    return (name, Path(path)) if sep and name else (Path(entry).stem, Path(entry))


def load_result(path: Path) -> Dict[str, Any]:
    """A robustness JSON, checked for the keys the table needs."""
    try:
        result = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file (write it with `pointea robustness --out {path}`)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not a robustness JSON file ({error})") from None
    missing = [key for key in REQUIRED if not isinstance(result, dict) or key not in result]
    if missing:
        raise ValueError(f"{path}: not a `pointea robustness` result (missing {', '.join(missing)})")
    return result


def check_same_clouds(results: Dict[str, Dict[str, Any]], paths: Dict[str, Path]) -> None:
    """Raise ValueError naming both files when two results were not measured on the same clouds."""
    (first, reference), *others = results.items()
    for name, result in others:
        for key in SAME_CLOUDS:
            if result[key] != reference[key]:
                raise ValueError(f"{paths[name]} and {paths[first]} were measured on different clouds: "
                                 f"{key} {result[key]!r} vs {reference[key]!r}")
        if list(result["corruption_accuracy"]) != list(reference["corruption_accuracy"]):
            raise ValueError(f"{paths[name]} and {paths[first]} cover different corruptions: "
                             f"{', '.join(result['corruption_accuracy'])} vs "
                             f"{', '.join(reference['corruption_accuracy'])}")


def compare(results: Dict[str, Dict[str, Any]], baseline: Optional[str] = None) -> List[Dict[str, Any]]:
    """One row per model: clean, mean corrupted, OA_c per corruption and, with a baseline, CE and mCE."""
    rows = []
    for name, result in results.items():
        row = {"model": name, "checkpoint": result.get("checkpoint"), "clean_accuracy": result["clean_accuracy"],
               "mean_corrupted_accuracy": result["mean_corrupted_accuracy"],
               "corruption_accuracy": dict(result["corruption_accuracy"])}
        if baseline is not None:
            row.update(corruption_errors(result, results[baseline]))
        rows.append(row)
    return rows


def format_table(rows: Sequence[Dict[str, Any]], baseline: Optional[str] = None) -> str:
    corruptions = list(rows[0]["corruption_accuracy"])
    header = ["model", "clean OA", "mean corrupted OA", *corruptions] + (["mCE", "RmCE"] if baseline else [])
    body = []
    for row in rows:
        cells = [row["model"], f"{row['clean_accuracy']:.2f}", f"{row['mean_corrupted_accuracy']:.2f}"]
        cells += [f"{row['corruption_accuracy'][name]:.2f}" for name in corruptions]
        if baseline:
            cells += ["–" if row[key] is None else f"{row[key]:.3f}" for key in ("mce", "rmce")]
        body.append(cells)
    return markdown_table(header, body)


def plot_comparison(results: Dict[str, Dict[str, Any]], path: Path) -> Path:
    """OA against severity level, one panel per corruption, one line per model (PNG, atomic)."""
    from matplotlib.figure import Figure

    from pointea.plots import DPI

    reference = next(iter(results.values()))
    corruptions = list(reference["corruptions"])
    columns = 4
    rows = -(-(len(corruptions) + 1) // columns)  # one panel more for the legend
    figure = Figure(figsize=(3.0 * columns, 2.5 * rows), dpi=DPI)
    panels = figure.subplots(rows, columns, sharex=True, sharey=True, squeeze=False).ravel()
    for panel, corruption in zip(panels, corruptions):
        for name, result in results.items():
            per_level = result["corruptions"][corruption]
            levels = sorted(per_level, key=int)
            panel.plot([int(level) for level in levels], [per_level[level] for level in levels], "-o",
                       markersize=3, label=f"{name} (clean {result['clean_accuracy']:.1f})")
        panel.set_title(corruption, fontsize=9)
        panel.set_xticks([int(level) for level in sorted(reference["corruptions"][corruption], key=int)])
        panel.grid(alpha=0.3)
    for panel in panels[len(corruptions):]:
        panel.axis("off")
    handles, labels = panels[0].get_legend_handles_labels()
    panels[len(corruptions)].legend(handles, labels, fontsize=8, loc="center")
    figure.supxlabel("severity level", fontsize=9)
    figure.supylabel("overall accuracy (%)", fontsize=9)
    figure.suptitle(f"{reference['dataset']} {reference['split']}, {reference['num_samples']} clouds: "
                    "OA under each corruption", fontsize=10)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    return path


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+", metavar="[NAME=]JSON", help="`pointea robustness --out` files")
    parser.add_argument("--baseline", metavar="NAME", help="the model CE and mCE are relative to")
    parser.add_argument("--out", type=Path, metavar="JSON", help="also write the table as JSON here")
    parser.add_argument("--plot", type=Path, metavar="PNG", help="also draw OA against severity per corruption here")
    args = parser.parse_args(argv)

    paths: Dict[str, Path] = {}
    for entry in args.results:
        name, path = parse_entry(entry)
        if name in paths:
            parser.error(f"two results named {name!r}: name them NAME=PATH")
        paths[name] = path
    if args.baseline is not None and args.baseline not in paths:
        parser.error(f"--baseline {args.baseline!r} is none of the results ({', '.join(paths)})")
    try:
        results = {name: load_result(path) for name, path in paths.items()}
        check_same_clouds(results, paths)
    except (OSError, ValueError) as error:
        parser.exit(1, f"error: {error}\n")
    rows = compare(results, args.baseline)
    print(format_table(rows, args.baseline))
    if args.out:
        reference = next(iter(results.values()))
        payload = {"baseline": args.baseline, **{key: reference[key] for key in SAME_CLOUDS},
                   "generated_by": reference.get("generated_by"), "rows": rows}
        atomic_write_text(args.out, json.dumps(payload, indent=2))
    if args.plot:
        plot_comparison(results, args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
