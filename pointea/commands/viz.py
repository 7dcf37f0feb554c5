"""``pointea viz``: look at clouds, labels and predictions (PNG, window or HTML page) and plot runs."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from pointea.commands import positive_int
from pointea.commands.robustness import CORRUPTION_NAMES
from pointea.data.catalog import DATASETS, get_spec
from pointea.data.orientation import UP_AXES, dataset_up_axis, find_layout, guess_up_axis, to_y_up

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "trainval", "test")

EPILOG = """\
examples:
  # a file, coloured by its labels when it has them (e.g. a prediction of 'pointea predict')
  pointea viz cloud.ply --out cloud.png
  # predict with a checkpoint first, then draw prediction (and ground truth when the file has labels)
  pointea viz shape.txt --checkpoint runs/partseg/checkpoints/best.pt --category Chair --out pred.png
  # a dataset item: ground truth, or ground truth | prediction | errors with --checkpoint
  pointea viz --dataset synthetic --split test --index 100 --out chair.png
  pointea viz --dataset modelnet40 --data-root data --split train --index 12 --out shape.png
  # a gallery: 16 shapes spread over the split, captioned with prediction and truth
  pointea viz --dataset modelnet40 --data-root data --split val --count 16 --checkpoint best.pt --out gallery.png
  # an interactive page that opens in any browser (no server, no Open3D)
  pointea viz --dataset synthetic --index 100 --html chair.html
  # a ModelNet-C corruption of an item, as 'pointea robustness' evaluates it (seed 0)
  pointea viz --dataset synthetic --index 100 --corruption dropout_local --level 4 --out holes.png
  # an interactive Open3D window (needs a display)
  pointea viz cloud.ply --show
  # a file whose up axis is z (without --up it comes from the dataset, the checkpoint's training
  # data, or a guess from the cloud; stderr says which)
  pointea viz scan.pcd --up z --out scan.png
  # training curves of a run, and the confusion matrix of an evaluation
  pointea viz --curves runs/cls --out curves.png
  pointea viz --confusion runs/cls/test.json --out confusion.png
"""


@dataclass
class Names:
    """Names shared by the items of one call (any may be unknown), and the dataset's up axis."""

    classes: Optional[List[str]] = None  # class or category names
    part_names: Optional[List[str]] = None
    up: Optional[str] = None  # known for dataset items
    up_source: str = ""  # where ``up`` comes from, for the log line


@dataclass
class Item:
    """One cloud to draw, with whatever labels are known.

    ``label`` is the class (classification) or category (segmentation) index.
    """

    points: np.ndarray  # (N, C)
    name: str
    label: Optional[int] = None
    parts: Optional[np.ndarray] = None  # (N,) ground truth or labels read from a file
    pred_label: Optional[int] = None
    pred_probability: Optional[float] = None  # of pred_label
    pred_parts: Optional[np.ndarray] = None
    index: Optional[int] = None  # in its dataset split


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "viz",
        help="render clouds, labels and predictions to PNG, a window or an HTML page",
        description=(
            "Draw point clouds coloured by part (stable colours, legend of part names), ground truth "
            "beside prediction with the wrong points highlighted, galleries of many shapes, or plots "
            "of a run. PNGs render headless (no display needed); --show opens an Open3D window; "
            "--html writes a self-contained interactive page."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG,
    )
    source = parser.add_argument_group("input")
    source.add_argument("paths", nargs="*", metavar="PATH",
                        help="point cloud files (.ply .pcd .xyz .txt .csv .pts .npy .npz, meshes .off .obj .stl)")
    source.add_argument("--dataset", choices=list(DATASETS), help="draw items of a dataset instead of files")
    source.add_argument("--data-root", metavar="DIR", help="dataset folder (not needed for generated datasets)")
    source.add_argument("--split", default="test", choices=SPLITS, help="dataset split (default: test)")
    source.add_argument("--index", type=int, nargs="+", metavar="I", help="dataset item(s) (default: 0)")
    source.add_argument("--count", type=positive_int, metavar="N",
                        help="a gallery of N items spread evenly over the split (datasets are sorted by class)")
    source.add_argument("--num-points", type=positive_int, metavar="N",
                        help="points per dataset cloud (default: the checkpoint's, else the dataset's)")
    source.add_argument("--checkpoint", metavar="CKPT", help="predict with this checkpoint before drawing")
    source.add_argument("--corruption", choices=CORRUPTION_NAMES, metavar="NAME",
                        help="apply a ModelNet-C corruption first, seeded as 'pointea robustness' does "
                             f"with seed 0; dataset clouds then default to 1024 points "
                             f"({', '.join(CORRUPTION_NAMES)})")
    source.add_argument("--level", type=int, choices=range(5), metavar="L",
                        help="severity level 0-4 of --corruption (default 2)")
    source.add_argument("--category", metavar="NAME",
                        help="category of the files for a segmentation checkpoint (e.g. Chair)")
    source.add_argument("--device", default="auto", metavar="DEVICE",
                        help="device for --checkpoint: auto (default), cpu, cuda or cuda:N")

    output = parser.add_argument_group("output")
    output.add_argument("--out", metavar="PNG", help="write a PNG (rendered offscreen, no display needed)")
    output.add_argument("--html", metavar="HTML", help="write a self-contained interactive HTML page")
    output.add_argument("--show", action="store_true", help="open an interactive Open3D window")
    output.add_argument("--curves", metavar="DIR", help="plot the training curves of a run folder")
    output.add_argument("--confusion", metavar="JSON",
                        help="plot the confusion matrix of an evaluation's metrics JSON")

    view = parser.add_argument_group("view")
    view.add_argument("--title", help="caption above the image (default: the item's name)")
    view.add_argument("--no-errors", dest="errors", action="store_false",
                      help="leave out the view of wrongly labelled points")
    view.add_argument("--columns", type=positive_int, metavar="N", help="gallery columns (default: about square)")
    view.add_argument("--width", type=positive_int, metavar="N",
                      help="image width in pixels (default: 800, 1200 for several views)")
    view.add_argument("--height", type=positive_int, metavar="N",
                      help="image height in pixels (default: 600, or fitted to the views)")
    view.add_argument("--point-size", type=float, help="point size in pixels (default: 3, 2 in galleries)")
    view.add_argument("--azimuth", type=float, default=30.0, help="degrees around the up axis (default: 30)")
    view.add_argument("--elevation", type=float, default=20.0, help="degrees above the horizon (default: 20)")
    view.add_argument("--zoom", type=float, default=1.0,
                      help="camera distance relative to the one that fits the whole cloud in view with a "
                           "margin; smaller is closer (default: 1)")
    view.add_argument("--up", choices=UP_AXES,
                      help="up axis of the clouds (default: the dataset's, else that of the checkpoint's "
                           "training data, else guessed from each cloud)")
    return parser


def run(args: argparse.Namespace) -> int:
    from pointea.viz import VisualizationError

    try:
        if args.curves or args.confusion:
            return _plot(args)
        return _draw(args)
    except (ValueError, FileNotFoundError, VisualizationError) as error:
        print(f"pointea viz: error: {error}", file=sys.stderr)
        return 2


# --------------------------------------------------------------------------------------------
# Plots


def _plot(args: argparse.Namespace) -> int:
    from pointea import plots

    if args.curves and args.confusion:
        raise ValueError("give --curves or --confusion, not both")
    if args.curves:
        run_dir = Path(args.curves)
        if not run_dir.is_dir():
            raise FileNotFoundError(f"run folder not found: {run_dir}")
        written = plots.plot_training_curves(run_dir, args.out)
    else:
        if not args.out:
            raise ValueError("--confusion needs --out PNG")
        matrix, names, columns = _read_confusion(Path(args.confusion))
        written = plots.plot_confusion_matrix(matrix, names, args.out, column_names=columns)
    print(f"wrote {written}")
    return 0


def _read_confusion(path: Path):
    if not path.is_file():
        raise FileNotFoundError(f"metrics file not found: {path}")
    try:
        metrics = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from error
    if isinstance(metrics, dict) and "confusion_matrix" not in metrics and isinstance(metrics.get("metrics"), dict):
        metrics = metrics["metrics"]
    if not isinstance(metrics, dict) or "confusion_matrix" not in metrics:
        raise ValueError(f"{path} holds no 'confusion_matrix' (write one with 'pointea eval --out' "
                         "on a classification checkpoint)")
    try:
        matrix = np.asarray(metrics["confusion_matrix"], dtype=np.float64)
    except (TypeError, ValueError):
        matrix = None
    # a by-name evaluation on a subset of the model's classes adds an "other" column
    columns = metrics.get("confusion_columns")
    width = len(columns) if isinstance(columns, list) else len(matrix) if matrix is not None else 0
    if matrix is None or matrix.ndim != 2 or matrix.shape[1] != width or not 0 < matrix.shape[0] <= width:
        raise ValueError(f"{path}: 'confusion_matrix' must be a table of counts, square or with the "
                         "columns 'confusion_columns' names")
    names = metrics.get("classes") or [str(i) for i in range(len(matrix))]
    return matrix, list(names), columns if isinstance(columns, list) else None


# --------------------------------------------------------------------------------------------
# Clouds


def _draw(args: argparse.Namespace) -> int:
    from pointea import viz

    outputs = [args.out, args.html, args.show]
    if not any(outputs):
        if not viz.has_display():
            raise ValueError("no output chosen and no display for a window: give --out image.png "
                             "(renders headless), --html page.html or --show")
        args.show = True
    if args.out and Path(args.out).suffix.lower() != ".png":
        raise ValueError(f"--out must name a .png file, got {args.out}")
    if args.paths and args.dataset:
        raise ValueError("give PATHs or --dataset, not both")
    if args.index and args.count:
        raise ValueError("give --index or --count, not both")
    if args.level is not None and not args.corruption:
        raise ValueError("--level is the severity of a corruption: give --corruption NAME too")
    if not args.paths and not args.dataset:
        raise ValueError("nothing to draw: give point cloud files, --dataset NAME, --curves DIR "
                         "or --confusion JSON")

    model = None
    if args.checkpoint:
        from pointea.engine.checkpoint import load_model

        model, meta = load_model(args.checkpoint, device=args.device)
        logger.info("loaded %s (%s)", args.checkpoint, meta.get("task"))
    else:
        meta = {}
    if args.dataset:
        items, names = _dataset_items(args, meta)
    else:
        items, names = _file_items(args, meta)
    if args.corruption:
        _corrupt(items, args)
    if model is not None:
        _predict(model, meta, items)
    if args.html and len(items) != 1:  # checked before anything is written
        raise ValueError(f"--html draws one cloud, got {len(items)}; choose one file or one --index")
    args.up = _up_axis(args, names, meta, items)
    camera = viz.Camera(azimuth=args.azimuth, elevation=args.elevation, zoom=args.zoom, up=args.up)

    if args.out:
        image = _render(items, names, args, camera, task=meta.get("task"))
        viz.save_png(args.out, image)
        print(f"wrote {args.out} ({image.shape[1]}x{image.shape[0]})")
    if args.html:
        _write_html(items, names, args)
        print(f"wrote {args.html}")
    if args.show:
        _show(items, names, args, camera)
    return 0


def _dataset_items(args: argparse.Namespace, meta: Dict[str, Any]):
    from pointea.engine.evaluate import build_dataset

    spec = get_spec(args.dataset)
    if spec.needs_root and not args.data_root:
        generated = ", ".join(name for name, other in DATASETS.items() if not other.needs_root)
        raise ValueError(f"--dataset {args.dataset} needs --data-root DIR (only {generated} need none)")
    num_points = args.num_points or (1024 if args.corruption else meta.get("num_points"))  # ModelNet-C's size
    if num_points is None and spec.default_num_points is not None:
        # generated clouds cost nothing to make denser, and read better so
        num_points = spec.default_num_points * (1 if spec.needs_root else 2)
    dataset = build_dataset(args.dataset, args.split, args.data_root, num_points=num_points,
                            use_normals=int(meta.get("in_channels", 3)) >= 6)
    size = len(dataset)
    if args.count is not None:
        indices = sorted(set(np.linspace(0, size - 1, min(args.count, size)).round().astype(int).tolist()))
    else:
        indices = args.index or [0]
    for index in indices:
        if not 0 <= index < size:
            raise ValueError(f"index {index} is out of range: {args.dataset} {args.split} has {size} "
                             f"items (0..{size - 1})")
    classes = getattr(dataset, "categories", None) or getattr(dataset, "classes", None)
    trained_on = meta.get("categories") or meta.get("classes")
    if trained_on and classes and list(trained_on) != list(classes):
        raise ValueError(f"the checkpoint knows {len(trained_on)} classes ({', '.join(trained_on[:4])}, ...) but "
                         f"{args.dataset} has {len(classes)} ({', '.join(list(classes)[:4])}, ...)")
    layout = getattr(dataset, "layout", None)
    names = Names(list(classes) if classes else None, list(getattr(dataset, "part_names", None) or []) or None,
                  up=dataset_up_axis(args.dataset, layout),
                  up_source=f"from the dataset {args.dataset}" + (f", {layout} layout" if layout else ""))
    items = []
    for index in indices:
        sample = dataset[index]
        label = sample.get("label", sample.get("category"))
        parts = sample.get("parts")
        items.append(Item(
            points=np.asarray(sample["points"], dtype=np.float32),
            name=f"{args.dataset} {args.split} #{index}",
            index=index,
            label=int(label) if label is not None else None,
            parts=np.asarray(parts, dtype=np.int64) if parts is not None else None,
        ))
    return items, names


def _corrupt(items: List[Item], args: argparse.Namespace) -> None:
    """Replace each cloud by its corruption, seeded by the item's index as 'pointea robustness' seeds it."""
    from pointea.data.corruptions import corrupt_cloud

    for position, item in enumerate(items):
        if item.points.shape[1] != 3:
            raise ValueError(f"--corruption applies to xyz clouds; {item.name} has {item.points.shape[1]} channels")
        xyz = item.points
        if item.index is None:  # a file: the corruptions' parameters are for clouds on the unit sphere
            xyz = xyz - xyz.mean(axis=0)
            xyz = xyz / max(float(np.linalg.norm(xyz, axis=1).max()), 1e-12)
        index = position if item.index is None else item.index
        level = 2 if args.level is None else args.level
        item.points = corrupt_cloud(xyz, args.corruption, level, (0, index))
        if item.parts is not None and len(item.parts) != len(item.points):
            item.parts = None  # dropped or added points: the labels no longer match
        item.name += f" ({args.corruption} L{level})"


def _file_items(args: argparse.Namespace, meta: Dict[str, Any]):
    from pointea.data.io import read_labeled_point_cloud

    names = Names(meta.get("classes") or meta.get("categories"), meta.get("part_names"))
    category = None
    if args.category is not None:
        categories = meta.get("categories")
        if not categories:
            raise ValueError("--category needs a part segmentation --checkpoint, whose categories it names")
        lowered = [name.lower() for name in categories]
        if args.category.lower() not in lowered:
            raise ValueError(f"unknown category {args.category!r}; choose one of: {', '.join(categories)}")
        category = lowered.index(args.category.lower())
    items = []
    for path in args.paths:
        points, labels = read_labeled_point_cloud(path)
        if labels is not None:
            labels = _file_parts(path, labels, meta)
        items.append(Item(points=points, name=Path(path).name, label=category, parts=labels))
    return items, names


def _file_parts(path: str, labels: np.ndarray, meta: Dict[str, Any]) -> np.ndarray:
    """A file's labels (the values the checkpoint's training files used, e.g. LAS classes 2, 5,
    6, as a ``.parts.ply`` of pointea predict holds them too) as the checkpoint's part ids, so that
    they compare with its predictions; other values become -1 (drawn grey, counted wrong)."""
    from pointea.engine.predict import values_to_parts

    parts, unknown = values_to_parts(labels, meta)
    if unknown:
        logger.warning("%s: label(s) %s are none of the checkpoint's parts (%s); drawn unlabelled", path,
                       ", ".join(map(str, unknown[:10])), ", ".join(map(str, meta["part_values"])))
    return parts


def _predict(model, meta: Dict[str, Any], items: List[Item]) -> None:
    """Fill ``pred_label`` / ``pred_parts`` of each item as ``pointea predict`` would predict them."""
    from pointea.engine.predict import predict_points
    from pointea.engine.tasks import task_for

    categories = meta.get("categories") or []
    segmentation = task_for(model).uses_category
    for item in items:
        if not segmentation:
            best = predict_points(item.points, model, meta, topk=1)["predictions"][0]
            item.pred_label, item.pred_probability = int(best["index"]), float(best["probability"])
            continue
        if item.label is None and len(categories) == 1:
            item.label = 0  # a model of one kind of object (a folder without categories) needs no name
        if item.label is None:
            raise ValueError(f"segmenting {item.name} needs its category: pass --category NAME "
                             f"(one of {', '.join(categories)})")
        category = categories[item.label] if item.label < len(categories) else str(item.label)
        item.pred_parts = predict_points(item.points, model, meta, category=category)["labels"]


def _up_axis(args: argparse.Namespace, names: Names, meta: Dict[str, Any], items: List[Item]) -> str:
    """The up axis to draw with, said on stderr with its source.

    In order: ``--up``, the dataset's, the checkpoint's training data's, a guess from the clouds.
    When the guesses for several files differ, each cloud is turned so that its up is y.
    """
    if args.up:
        up, source = args.up, "from --up"
    elif names.up:
        up, source = names.up, names.up_source
    else:
        up, source = _checkpoint_up_axis(meta)
    if up is None:
        guesses = [guess_up_axis(item.points) for item in items]
        if len({axis for axis, _ in guesses}) > 1:
            for item, (axis, _) in zip(items, guesses):
                item.points = to_y_up(item.points, axis).astype(np.float32)
            up = "y"
            source = ("guessed per cloud, each turned to y: "
                      + ", ".join(f"{item.name} {axis}" for item, (axis, _) in zip(items, guesses)))
        else:
            up = guesses[0][0]
            source = guesses[0][1] + (f"; {source}" if source else "")
    print(f"up axis: {up} ({source})", file=sys.stderr)
    return up


def _checkpoint_up_axis(meta: Dict[str, Any]) -> Tuple[Optional[str], str]:
    """``(axis or None, reason)`` from the training data a checkpoint records: the up axis saved
    with it, else the dataset's, looking up the layout under the recorded data root when needed
    (checkpoints written before the up axis was saved)."""
    name = meta.get("name")
    recorded = meta.get("up_axis")
    if recorded in UP_AXES:
        return recorded, "from the checkpoint" + (f", trained on {name}" if name else "")
    if not name:
        return None, ""
    data = meta.get("config", {}).get("data") or {}
    layout = meta.get("layout") or data.get("layout")
    root = data.get("root")
    if layout is None and root and dataset_up_axis(name) is None:
        layout = find_layout(name, root)
    up = dataset_up_axis(name, layout)
    if up is None and not _layout_dependent(name):
        return None, f"the checkpoint's training data {name} has no known up axis"
    if up is None:
        where = f"at {root}" if root else "(no data root recorded)"
        return None, f"the layout of the checkpoint's training data {name} is unknown: not found {where}"
    return up, f"from the checkpoint's training data {name}" + (f", {layout} layout" if layout else "")


def _layout_dependent(name: str) -> bool:
    """Whether dataset ``name``'s up axis depends on its on-disk layout (ModelNet's does)."""
    from pointea.data.catalog import DATASETS

    spec = DATASETS.get(name)
    return spec is not None and isinstance(spec.up_axis, Mapping)


def _name(names: Optional[List[str]], index: Optional[int]) -> Optional[str]:
    if index is None:
        return None
    return names[index] if names and 0 <= index < len(names) else f"class {index}"


def _render(items: List[Item], names: Names, args: argparse.Namespace, camera, task: Optional[str]) -> np.ndarray:
    from pointea import viz

    segmentation = any(item.parts is not None or item.pred_parts is not None for item in items)
    classification = task == "classification" or not segmentation
    gallery = len(items) > 1
    point_size = args.point_size or (2.0 if gallery else 3.0)
    common = dict(point_size=point_size, camera=camera)
    if gallery:
        width = args.width or 1200
        if classification:
            samples = [viz.ClassificationSample(item.points, item.label, item.pred_label) for item in items]
            return viz.view_classification_gallery(samples, names.classes or _numbered(items), ncols=args.columns,
                                                   title=args.title, width=width, height=args.height, **common)
        samples = [viz.SegmentationSample(item.points, _labels_or_none(item),
                                          item.pred_parts if item.parts is not None else None, item.label)
                   for item in items]
        return viz.view_segmentation_gallery(samples, category_names=names.classes, ncols=args.columns,
                                             errors=args.errors, title=args.title, width=width,
                                             height=args.height, **common)
    item = items[0]
    title = args.title if args.title is not None else _title(item, names)
    if not classification and item.parts is not None and item.pred_parts is not None:
        return viz.view_comparison(item.points, item.parts, item.pred_parts, part_names=names.part_names,
                                   title=title, errors=args.errors, width=args.width or 1200,
                                   height=args.height or 450, **common)
    width, height = args.width or 800, args.height or 600
    if classification and item.pred_label is not None:
        return viz.view_classification(item.points, true_name=_name(names.classes, item.label),
                                       pred_name=_name(names.classes, item.pred_label), title=title,
                                       width=width, height=height, **common)
    parts = item.pred_parts if item.pred_parts is not None else item.parts
    return viz.view_parts(item.points, parts, part_names=names.part_names, title=title, width=width,
                          height=height, **common)


def _labels_or_none(item: Item) -> np.ndarray:
    """The item's labels, predicted ones when it has no others, else -1 (drawn grey, unlabelled)."""
    for labels in (item.parts, item.pred_parts):
        if labels is not None:
            return labels
    return np.full(len(item.points), -1, dtype=np.int64)


def _numbered(items: List[Item]) -> List[str]:
    count = 1 + max([i for item in items for i in (item.label, item.pred_label) if i is not None] or [0])
    return [f"class {i}" for i in range(count)]


def _title(item: Item, names: Names) -> str:
    """The item's name and known class, and what was predicted, e.g.
    "chair.ply — predicted: chair (97.3 %)"."""
    label = _name(names.classes, item.label)
    title = f"{label} ({item.name})" if label else item.name
    if item.pred_label is not None:
        probability = f" ({100 * item.pred_probability:.1f} %)" if item.pred_probability is not None else ""
        title += f" \u2014 predicted: {_name(names.classes, item.pred_label)}{probability}"
    elif item.pred_parts is not None:
        title += " \u2014 ground truth and predicted parts" if item.parts is not None else " \u2014 predicted parts"
    return title


def _write_html(items: List[Item], names: Names, args: argparse.Namespace) -> None:
    from pointea.html_viewer import write_html

    item = items[0]
    title = args.title if args.title is not None else _title(item, names)
    labels, pred = item.parts, item.pred_parts
    if labels is None:
        labels, pred = pred, None
    write_html(args.html, item.points, labels, pred_labels=pred, label_names=names.part_names, title=title,
               point_size=args.point_size or 3.0, up=args.up)


def _show(items: List[Item], names: Names, args: argparse.Namespace, camera) -> None:
    from pointea import viz
    from pointea.palette import part_colors

    clouds = []
    for item in items:
        for labels in (item.parts, item.pred_parts):
            if labels is not None:
                clouds.append((item.points, part_colors(labels)))
        if item.parts is not None and item.pred_parts is not None:
            wrong = item.parts != item.pred_parts
            clouds.append((item.points, viz.error_colors(wrong)))
        if item.parts is None and item.pred_parts is None:
            clouds.append((item.points, None))
        label = _name(names.classes, item.pred_label if item.pred_label is not None else item.label)
        print(f"{item.name}: {label or ''}")
    legend = sorted({int(k) for item in items for labels in (item.parts, item.pred_parts)
                     if labels is not None for k in np.unique(labels)})
    for key in legend:
        name = names.part_names[key] if names.part_names and key < len(names.part_names) else f"label {key}"
        print(f"  part {key}: {name}")
    viz.show(clouds, title=args.title or items[0].name, width=args.width or 1024, height=args.height or 768,
             point_size=args.point_size or 3.0, camera=camera)
