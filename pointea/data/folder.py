"""Datasets from a folder of the user's own point clouds: classes by folder, parts by label.

Classification (:class:`FolderClassification`): one folder per class, the class names are the
folder names (sorted), files in any format :func:`pointea.data.io.read_point_cloud` reads::

    DIR/<class>/<files>                      no split given: train / val / test carved per class
    DIR/<class>/{train,test}/<files>         ModelNet's layout
    DIR/{train,test}/<class>/<files>
    DIR/<class>/<files> + DIR/train.txt, DIR/test.txt (optional val.txt): one relative path a line

Part segmentation (:class:`FolderSegmentation`): clouds with per-point integer labels, from a PLY
vertex property or PCD field (``label``, ``class``, ``classification``, ``part``, CloudCompare's
``scalar_Classification`` / ``scalar_label``, ...), the last column of a 4- or 7-column
``.txt`` / ``.xyz`` / ``.csv`` / ``.npy`` table, or a sidecar ``NAME.seg`` / ``NAME.labels`` beside
``NAME.<ext>`` (one integer per line, as ShapeNetPart's ``.seg`` files). Part names come from an
optional ``DIR/labels.txt`` (line i names label i) or ``DIR/labels.yaml`` (a list, or a mapping
label -> name); without one, the labels found are the parts, named by their value. Splits as for
classification, with the clouds directly in the split folder (``DIR/{train,test}/<files>``: one
kind of object) or in category folders (``DIR/{train,test}/<category>/<files>``,
``DIR/<category>/<files>``): each category then gets the parts that occur in its clouds, the
category -> parts table the model restricts its predictions with, as for ShapeNetPart.

Labels are remapped to contiguous part ids 0..P-1 in the order of their values (the declared
list's order with a names file), so sparse values such as LAS classes 2, 5, 6 work.

Every cloud is read once into a cache (:mod:`pointea.data.cache`) holding ``num_points`` points
per cloud, chosen deterministically from its file name (all points plus repeats when shorter;
meshes are sampled on their surface), centred in float64 and scaled into the unit sphere.

:func:`inspect_folder` runs the same checks without training and reports every problem at once
(``pointea data DIR``); the datasets raise the first one with the same message.
"""

from __future__ import annotations

import logging
import os
import zlib
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from pointea.data.cache import cache_file, load_or_build
from pointea.data.io import LABEL_FIELDS, SUPPORTED_SUFFIXES, read_labeled_cloud, validate_labels
from pointea.data.layout import check_dataset_arguments, stratified_holdout

PathLike = Union[str, os.PathLike]
Item = Dict[str, torch.Tensor]
Transform = Callable[[Item], Item]

TASKS = ("classification", "segmentation")
SPLITS = ("train", "val", "trainval", "test")
SPLIT_FOLDERS = ("train", "val", "test")
LIST_FILES = {split: f"{split}.txt" for split in SPLIT_FOLDERS}
NAME_FILES = ("labels.txt", "labels.yaml", "labels.yml")
SIDECAR_SUFFIXES = (".seg", ".labels")
# files at the top of DIR that describe the dataset rather than hold a cloud
_RESERVED = set(LIST_FILES.values()) | set(NAME_FILES)
LAYOUTS = {
    "lists": "split list files (train.txt / val.txt / test.txt)",
    "split-folders": "DIR/{train,val,test}/...",
    "class-split": "DIR/<folder>/{train,val,test}/...",
    "carved": "no split given: train / val / test carved per class",
}
DEFAULT_VAL_FRACTION = 0.1
DEFAULT_TEST_FRACTION = 0.2
CACHE_ARRAYS = ("points", "parts", "values", "presence", "files")
# points a mesh is sampled with when inspected (the recipes' num_points)
INSPECT_POINTS = 1024

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- the folder index


@dataclass
class Entry:
    """One cloud file of the folder."""

    path: str  # relative to the root, '/'-separated
    split: Optional[str]  # "train" | "val" | "test", None when the split is carved
    group: Optional[str]  # its class (classification) or category (segmentation) folder


@dataclass
class FolderIndex:
    """The files of a folder dataset and the problems visible from file names alone."""

    root: Path
    layout: str
    entries: List[Entry]
    group_dirs: Dict[str, List[str]]  # group name -> its folders (relative), empty ones included
    problems: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)  # split lists naming absent files


def _cloud_files(root: Path, folder: str) -> List[str]:
    """Cloud files under ``root/folder``, recursively, relative to ``root``, sorted."""
    found = []
    top = root / folder if folder else root
    for current, dirs, files in os.walk(top):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        relative = Path(current).relative_to(root)
        for name in sorted(files):
            if name.startswith(".") or os.path.splitext(name)[1].lower() not in SUPPORTED_SUFFIXES:
                continue
            if relative == Path(".") and name in _RESERVED:
                continue
            found.append((relative / name).as_posix())
    return sorted(found)


def _group_of(path: str, base: str) -> Optional[str]:
    """The first folder of ``path`` below ``base`` (None for a file directly in ``base``)."""
    parts = Path(path).relative_to(base).parts if base else Path(path).parts
    return parts[0] if len(parts) > 1 else None


def _subfolders(folder: Path) -> List[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def scan_folder(root: PathLike) -> FolderIndex:
    """Find the layout and the cloud files of a folder dataset (nothing is read).

    Raises:
        FileNotFoundError: ``root`` is not a folder.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {root} (expected DIR/<class>/<files> or "
                                "DIR/{train,test}/...; see `pointea data --help`)")
    entries: List[Entry] = []
    group_dirs: Dict[str, List[str]] = {}
    problems: List[str] = []
    missing: List[str] = []
    lists = {split: root / name for split, name in LIST_FILES.items() if (root / name).is_file()}
    top = _subfolders(root)
    if lists:
        layout = "lists"
        seen: Dict[str, str] = {}
        for split, list_file in lists.items():
            lines = list_file.read_text(encoding="utf-8", errors="replace").splitlines()
            for number, line in enumerate(lines, start=1):
                name = line.strip().replace("\\", "/").removeprefix("./")
                if not name or name.startswith("#"):
                    continue
                if not (root / name).is_file():
                    missing.append(f"{list_file}: line {number} names {name}, which does not exist under {root}")
                    continue
                if name in seen:
                    problems.append(f"{list_file}: line {number} names {name}, already in {LIST_FILES[seen[name]]}")
                    continue
                seen[name] = split
                entries.append(Entry(name, split, _group_of(name, "")))
        for group in sorted({e.group for e in entries if e.group}):
            group_dirs[group] = [group]
    elif any((root / split).is_dir() for split in SPLIT_FOLDERS):
        layout = "split-folders"
        for split in SPLIT_FOLDERS:
            if not (root / split).is_dir():
                continue
            for group in _subfolders(root / split):
                group_dirs.setdefault(group, []).append(f"{split}/{group}")
            entries += [Entry(p, split, _group_of(p, split)) for p in _cloud_files(root, split)]
    elif any((root / name / split).is_dir() for name in top for split in SPLIT_FOLDERS):
        layout = "class-split"
        for group in top:
            group_dirs[group] = [group]
            for split in SPLIT_FOLDERS:
                if (root / group / split).is_dir():
                    entries += [Entry(p, split, group) for p in _cloud_files(root, f"{group}/{split}")]
    else:
        layout = "carved"
        for group in top:
            group_dirs[group] = [group]
        entries = [Entry(p, None, _group_of(p, "")) for p in _cloud_files(root, "")]
    return FolderIndex(root, layout, entries, group_dirs, problems, missing)


def folder_class_names(root: PathLike) -> Optional[List[str]]:
    """The class names of a classification folder from its folder names alone (None when
    ``root`` is not a folder), for checks before any cloud is read."""
    if not Path(root).expanduser().is_dir():
        return None
    return sorted({e.group for e in scan_folder(root).entries if e.group})


def _index_problems(index: FolderIndex, task: str) -> List[str]:
    """The problems of a folder for ``task`` seen from its file names (split lists included)."""
    root = index.root
    problems = list(index.missing) + list(index.problems)
    if not index.entries:
        problems.append(f"{root}: no point cloud files (looked for {', '.join(SUPPORTED_SUFFIXES)} in "
                        f"{LAYOUTS[index.layout]})")
        return problems
    loose = [e.path for e in index.entries if e.group is None]
    if task == "classification":
        if loose:
            problems.append(
                f"{root}: {len(loose)} cloud file(s) outside any class folder, e.g. {loose[0]}; "
                "classification expects one folder per class (DIR/<class>/<files>)"
            )
        counts = Counter(e.group for e in index.entries if e.group)
        training = Counter(e.group for e in index.entries if e.group and e.split in (None, "train", "val"))
        for group in sorted(set(index.group_dirs) | set(counts)):
            where = ", ".join(str(root / d) for d in index.group_dirs.get(group, [group]))
            if not counts[group]:
                problems.append(f"class {group!r} has no cloud files ({where})")
            elif not training[group]:
                problems.append(f"class {group!r} has no training clouds, only test ones ({where})")
        classes = sorted(counts)
        if len(classes) == 1:
            problems.append(f"{root}: only one class ({classes[0]!r}); classification needs at least two "
                            "class folders")
    elif loose and len(loose) < len(index.entries):
        grouped = next(e.path for e in index.entries if e.group is not None)
        problems.append(
            f"{root}: clouds both in category folders (e.g. {grouped}) and outside them (e.g. {loose[0]}); "
            "put every cloud in a category folder, or none"
        )
    return problems


# --------------------------------------------------------------------------- reading clouds


@dataclass
class CloudRecord:
    """One cloud read and resampled."""

    num_points: int  # points in the file
    points: np.ndarray  # (k, C) float32, unit sphere
    labels: Optional[np.ndarray]  # (k,) int64 raw label values, None when unlabelled
    values: Optional[np.ndarray]  # sorted unique raw label values of the whole cloud
    label_source: Optional[str]  # e.g. "PLY property 'scalar_Classification'", "sidecar .seg"


def sidecar_labels(path: Path) -> Optional[Path]:
    """The sidecar label file of cloud ``path`` (``NAME.seg`` or ``NAME.labels``), if any."""
    for suffix in SIDECAR_SUFFIXES:
        candidate = path.with_suffix(suffix)
        if candidate.is_file():
            return candidate
    return None


def _read_sidecar(path: Path, num_points: int, cloud: Path) -> np.ndarray:
    """One integer label per line; ValueError naming the file when malformed or miscounted."""
    tokens = path.read_text(encoding="utf-8", errors="replace").split()
    try:
        values = np.array(tokens, dtype=np.float64)
    except ValueError:
        bad = next(t for t in tokens if not _is_number(t))
        raise ValueError(f"{path}: label {bad[:30]!r} is not a number") from None
    if len(values) != num_points:
        raise ValueError(f"{path}: {len(values)} labels for the {num_points} points of {cloud.name}")
    return validate_labels(values, num_points, str(path))


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _source_kind(source: Optional[str]) -> Optional[str]:
    """Label sources compared across files: a table's last column is one source, 4 or 7 columns."""
    return "last column" if source and source.startswith("column") else source


def resample_indices(count: int, k: int, seed: int) -> np.ndarray:
    """``k`` indices into ``count`` points from ``seed``: a random subset, or every point plus
    random repeats when the cloud is shorter."""
    rng = np.random.default_rng(seed)
    if count >= k:
        return rng.choice(count, size=k, replace=False)
    return np.concatenate([rng.permutation(count), rng.integers(count, size=k - count)])


def read_cloud(root: Path, relative: str, num_points: int, use_normals: bool, labelled: bool) -> CloudRecord:
    """Read one cloud, resample it to ``num_points`` and scale it into the unit sphere.

    The choice of points depends only on the relative file name, so it is the same on every
    machine and every read.

    Raises:
        ValueError / FileNotFoundError: an unreadable file, naming it and the reason.
    """
    path = root / relative
    seed = zlib.crc32(relative.encode("utf-8"))
    # a mesh gives num_points surface samples (then all kept), a cloud its own points
    points, labels, source = read_labeled_cloud(path, num_mesh_points=num_points, seed=seed, dtype=np.float64)
    if labelled:
        sidecar = sidecar_labels(path)
        if sidecar is not None:
            labels, source = _read_sidecar(sidecar, len(points), path), f"sidecar {sidecar.suffix}"
    channels = 6 if use_normals else 3
    if points.shape[1] < channels:
        raise ValueError(f"{path}: use_normals=True but the cloud has no normals (x y z only); "
                         "pass use_normals=False (data.use_normals=false)")
    chosen = resample_indices(len(points), num_points, seed)
    sampled = points[chosen, :channels].copy()  # (k, C) float64
    xyz = sampled[:, :3]
    xyz -= xyz.mean(axis=0)  # in float64, so clouds far from the origin keep their detail
    radius = np.linalg.norm(xyz, axis=1).max()
    xyz /= radius if radius > 0 else 1.0
    values = None if labels is None or not labelled else np.unique(labels)
    return CloudRecord(len(points), sampled.astype(np.float32), None if values is None else labels[chosen],
                       values, source if labelled else None)


# --------------------------------------------------------------------------- part names


def read_part_names(root: Path) -> Tuple[Optional[Dict[int, str]], Optional[Path]]:
    """Declared parts: ``{label value: name}`` from ``labels.txt`` / ``labels.yaml``, or None.

    Raises:
        ValueError: a malformed names file, naming it.
    """
    for name in NAME_FILES:
        path = root / name
        if not path.is_file():
            continue
        if name == "labels.txt":
            lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
            while lines and not lines[-1]:
                lines.pop()
            if not lines or not all(lines):
                raise ValueError(f"{path}: expected one part name per line (line i names label i), "
                                 "without blank lines")
            return dict(enumerate(lines)), path
        import yaml

        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as error:
            raise ValueError(f"{path}: not valid YAML ({error})") from None
        if isinstance(raw, list) and raw:
            return {i: str(v) for i, v in enumerate(raw)}, path
        if isinstance(raw, dict) and raw and all(isinstance(k, int) and not isinstance(k, bool) for k in raw):
            return {int(k): str(v) for k, v in sorted(raw.items())}, path
        raise ValueError(f"{path}: expected a list of part names or a mapping label -> name "
                         "(e.g. {0: ground, 1: wall})")
    return None, None


# --------------------------------------------------------------------------- label checks


def _label_problems(index: FolderIndex, records: Dict[str, CloudRecord], declared: Optional[Dict[int, str]],
                    names_file: Optional[Path]) -> List[str]:
    """Mixed label sources, unlabelled clouds and labels outside the declared parts."""
    root = index.root
    readable = [e for e in index.entries if e.path in records]
    if not readable:
        return []
    by_source: Dict[Optional[str], List[str]] = {}
    for entry in readable:
        by_source.setdefault(_source_kind(records[entry.path].label_source), []).append(entry.path)
    unlabelled = by_source.pop(None, [])
    problems = []
    fields = ", ".join(LABEL_FIELDS)
    if not by_source:
        return [f"{root}: no per-point labels in any cloud; expected a PLY property or PCD field "
                f"({fields}, also as scalar_<Name>), a label column (4 or 7 columns) or a sidecar "
                f"NAME.seg / NAME.labels file"]
    if unlabelled:
        labelled = sum(len(paths) for paths in by_source.values())
        problems.append(f"{root}: mixed labels: {labelled} file(s) carry per-point labels, {len(unlabelled)} "
                        f"do not, e.g. {unlabelled[0]}; label every cloud")
    if len(by_source) > 1:
        described = "; ".join(f"{source} in {len(paths)} file(s), e.g. {paths[0]}" for source, paths in by_source.items())
        problems.append(f"{root}: mixed label sources: {described}; label every cloud the same way")
    if declared is not None:
        allowed = np.array(sorted(declared))
        for entry in readable:
            values = records[entry.path].values
            if values is None:
                continue
            outside = values[~np.isin(values, allowed)]
            if len(outside):
                problems.append(
                    f"{root / entry.path}: label {int(outside[0])} is not among the {len(allowed)} parts "
                    f"declared in {names_file.name} ({_describe_ids(allowed)})"
                )
    return problems


def _describe_ids(ids: np.ndarray) -> str:
    if len(ids) and (ids == np.arange(ids[0], ids[0] + len(ids))).all():
        return f"{int(ids[0])}..{int(ids[-1])}"
    return ", ".join(str(int(i)) for i in ids)


# --------------------------------------------------------------------------- splits


def split_mask(index: FolderIndex, groups: np.ndarray, split: str, val_fraction: float,
               test_fraction: float, seed: int) -> np.ndarray:
    """Which entries of ``index`` belong to ``split``.

    A folder without splits is carved per group (class or category): ``test_fraction`` of each
    to test, then ``val_fraction`` of the rest to val (:func:`stratified_holdout`, deterministic
    in ``seed``). A folder with splits but no val split gets val carved from train the same way.

    Args:
        groups: ``(M,)`` int group of every entry (the strata).

    Raises:
        FileNotFoundError: the folder has no ``split`` (e.g. no test folder or list).
    """
    splits = np.array([e.split or "" for e in index.entries])
    if index.layout == "carved":
        in_test = stratified_holdout(groups, test_fraction, seed)
        if split == "test":
            return in_test
        in_val = np.zeros(len(groups), dtype=bool)
        in_val[~in_test] = stratified_holdout(groups[~in_test], val_fraction, seed + 1)
    else:
        if split == "test":
            if not (splits == "test").any():
                where = "test.txt" if index.layout == "lists" else "test/ folder"
                raise FileNotFoundError(f"{index.root}: no test split (no {where} with clouds)")
            return splits == "test"
        if (splits == "val").any():
            in_val, in_test = splits == "val", splits == "test"
        else:
            in_test = splits == "test"
            in_val = np.zeros(len(groups), dtype=bool)
            trainval = splits == "train"
            in_val[trainval] = stratified_holdout(groups[trainval], val_fraction, seed)
    if split == "val":
        return in_val
    if split == "trainval":
        return ~in_test
    return ~in_test & ~in_val


# --------------------------------------------------------------------------- report


@dataclass
class FolderReport:
    """What :func:`inspect_folder` found: the task, names, counts and every problem."""

    root: str
    task: Optional[str]
    layout: str
    classes: List[str]  # classification: class names; segmentation: category names
    part_names: List[str]  # segmentation only
    category_parts: List[List[int]]  # segmentation only
    label_source: Optional[str]
    counts: Dict[str, Dict[str, int]]  # split -> {class or category: clouds}
    points_per_file: Dict[str, int]  # min, median, max
    failures: List[Dict[str, str]]  # {"file", "reason"} of every file that cannot be read
    problems: List[str]  # why the folder cannot be trained on (failures included)

    @property
    def ok(self) -> bool:
        """Whether the folder can be trained on."""
        return not self.problems

    def to_dict(self) -> Dict:
        return {**asdict(self), "ok": self.ok}

    def format(self) -> str:
        """The report as text, for ``pointea data``."""
        lines = [f"{self.root}: {self.task or 'unknown'} dataset, {LAYOUTS[self.layout]}"]
        what = "classes" if self.task == "classification" else "categories"
        if self.classes:
            lines.append(f"  {what} ({len(self.classes)}): {', '.join(self.classes)}")
        if self.task == "segmentation" and self.part_names:
            lines.append(f"  parts ({len(self.part_names)}): {', '.join(self.part_names)}"
                         + (f"  [labels from {self.label_source}]" if self.label_source else ""))
            if len(self.classes) > 1:
                for name, parts in zip(self.classes, self.category_parts):
                    lines.append(f"    {name}: {', '.join(self.part_names[p] for p in parts)}")
        for split, counts in self.counts.items():
            detail = ", ".join(f"{name} {n}" for name, n in counts.items())
            lines.append(f"  {split}: {sum(counts.values())} clouds" + (f" ({detail})" if detail else ""))
        if self.points_per_file:
            p = self.points_per_file
            lines.append(f"  points per file: min {p['min']}, median {p['median']}, max {p['max']}")
        for failure in self.failures:
            lines.append(f"  unreadable: {failure['reason']}")
        for problem in self.problems:
            if not any(problem == f["reason"] for f in self.failures):
                lines.append(f"  problem: {problem}")
        lines.append("  ready to train" if self.ok else f"  cannot train: {len(self.problems)} problem(s)")
        return "\n".join(lines)


def inspect_folder(root: PathLike, task: Optional[str] = None, val_fraction: float = DEFAULT_VAL_FRACTION,
                   test_fraction: float = DEFAULT_TEST_FRACTION, split_seed: int = 0) -> FolderReport:
    """Check a folder dataset before training: task, names, counts per split, unreadable files.

    Every file is read (nothing is cached). The problems are those training refuses, with the
    same messages.

    Args:
        root: the dataset folder.
        task: ``"classification"``, ``"segmentation"`` or None to detect it: segmentation when
            a ``labels.txt`` / ``labels.yaml`` exists or the readable clouds carry labels.
        val_fraction, test_fraction, split_seed: the carve, as in the datasets.

    Raises:
        FileNotFoundError: ``root`` is not a folder.
        ValueError: an unknown ``task``.
    """
    if task is not None and task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)} or None (detect); got {task!r}")
    index = scan_folder(root)
    records: Dict[str, CloudRecord] = {}
    failures = []
    for entry in index.entries:
        try:
            records[entry.path] = read_cloud(index.root, entry.path, INSPECT_POINTS, False, labelled=True)
        except (ValueError, OSError) as error:
            failures.append({"file": entry.path, "reason": str(error)})
    declared, names_file, name_problem = None, None, []
    try:
        declared, names_file = read_part_names(index.root)
    except ValueError as error:
        name_problem = [str(error)]
    if task is None:
        labelled = any(r.label_source for r in records.values())
        task = "segmentation" if names_file is not None or name_problem or labelled else "classification"
    problems = _index_problems(index, task) + name_problem + [f["reason"] for f in failures]
    if index.entries and len(failures) == len(index.entries):
        problems.append(f"{index.root}: none of the {len(index.entries)} cloud files can be read")
    readable = [e for e in index.entries if e.path in records]
    report = FolderReport(str(index.root), task, index.layout, [], [], [], None, {}, {}, failures, problems)
    if task == "segmentation":
        problems += _label_problems(index, records, declared, names_file)
        table = _part_table(index, readable, records, declared)
        report.classes, report.part_names, report.category_parts = table.categories, table.part_names, table.category_parts
        sources = {r.label_source for r in records.values() if r.label_source}
        report.label_source = ", ".join(sorted(sources)) or None
        group_of = table.category_of
    else:
        report.classes = sorted({e.group for e in index.entries if e.group})
        group_of = {e.path: e.group for e in index.entries if e.group}
    counted = [e for e in readable if e.path in group_of]
    if counted:
        names = sorted({group_of[e.path] for e in counted})
        groups = np.array([names.index(group_of[e.path]) for e in counted])
        sub = FolderIndex(index.root, index.layout, counted, index.group_dirs)
        for split in ("train", "val", "test"):
            try:
                mask = split_mask(sub, groups, split, val_fraction, test_fraction, split_seed)
            except FileNotFoundError:
                continue
            counts = Counter(names[g] for g in groups[mask])
            report.counts[split] = {name: counts[name] for name in names if counts[name]}
    sizes = [r.num_points for r in records.values()]
    if sizes:
        report.points_per_file = {"min": int(min(sizes)), "median": int(np.median(sizes)), "max": int(max(sizes))}
    return report


# --------------------------------------------------------------------------- part table


@dataclass
class PartTable:
    """Categories, parts and the category -> parts table of a segmentation folder."""

    categories: List[str]
    part_values: List[int]  # raw label value of each part id
    part_names: List[str]
    category_parts: List[List[int]]
    category_of: Dict[str, str]  # relative path -> category name


def _category_names(index: FolderIndex, entries: Sequence[Entry]) -> Dict[str, str]:
    single = index.root.resolve().name or "all"
    return {e.path: e.group or single for e in entries}


def _part_table(index: FolderIndex, entries: Sequence[Entry], records: Dict[str, CloudRecord],
                declared: Optional[Dict[int, str]]) -> PartTable:
    category_of = _category_names(index, entries)
    categories = sorted(set(category_of.values()))
    found = {cat: set() for cat in categories}
    for entry in entries:
        values = records[entry.path].values if entry.path in records else None
        if values is not None:
            found[category_of[entry.path]].update(int(v) for v in values)
    if declared is not None:
        part_values = sorted(declared)
        names = [declared[v] for v in part_values]
    else:
        part_values = sorted(set().union(*found.values()))
        names = [str(v) for v in part_values]
    position = {v: i for i, v in enumerate(part_values)}
    # A category holds the parts its clouds show: a part declared in labels.txt but never seen
    # would score IoU 1 in every cloud (absent from truth and prediction) and inflate mIoU.
    category_parts = [sorted(position[v] for v in found[cat] if v in position) for cat in categories]
    return PartTable(categories, part_values, names, category_parts, category_of)


# --------------------------------------------------------------------------- datasets


class _FolderDataset(Dataset):
    """Shared implementation of :class:`FolderClassification` and :class:`FolderSegmentation`."""

    task = "classification"

    def __init__(
        self,
        root: PathLike,
        split: str = "train",
        num_points: int = 1024,
        transform: Optional[Transform] = None,
        val_fraction: float = DEFAULT_VAL_FRACTION,
        test_fraction: float = DEFAULT_TEST_FRACTION,
        split_seed: int = 0,
        use_normals: bool = False,
        cache_dir: Optional[PathLike] = None,
    ) -> None:
        num_points = check_dataset_arguments(split, None, num_points, SPLITS, ())
        for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if not 0 <= value < 1:
                raise ValueError(f"{name} must be in [0, 1); got {value!r}")
        self.root = Path(root).expanduser()
        self.split, self.num_points, self.transform = split, num_points, transform
        self.use_normals, self.cache_dir = use_normals, cache_dir
        self.val_fraction, self.test_fraction, self.split_seed = val_fraction, test_fraction, split_seed
        self.in_channels = 6 if use_normals else 3

        index = scan_folder(self.root)
        self.layout = index.layout
        declared, names_file = read_part_names(self.root) if self.task == "segmentation" else (None, None)
        problems = _index_problems(index, self.task)
        if index.missing:
            raise FileNotFoundError(index.missing[0])
        if problems:
            raise ValueError(problems[0])
        labelled = self.task == "segmentation"
        sources = [e.path for e in index.entries]
        if labelled:
            sources += [sidecar.relative_to(self.root).as_posix() for sidecar in
                        (sidecar_labels(self.root / e.path) for e in index.entries) if sidecar is not None]
            sources += [names_file.name] if names_file is not None else []
        channels = "xyzn" if use_normals else "xyz"
        path = cache_file("folder", f"{self.task}-{num_points}pts-{channels}", self.root, sources,
                          {"task": self.task, "num_points": num_points, "use_normals": use_normals},
                          cache_dir)
        arrays = load_or_build(path, lambda: self._build(index, declared, names_file), CACHE_ARRAYS)
        files = arrays["files"].tolist()
        order = {e.path: i for i, e in enumerate(index.entries)}
        rows = np.array([order[f] for f in files], dtype=np.int64)  # cache row -> entry (the same order)

        if labelled:
            records = {f: CloudRecord(0, np.empty(0), None, arrays["values"][arrays["presence"][i]], "cached")
                       for i, f in enumerate(files)}
            table = _part_table(index, index.entries, records, declared)
            self.categories: List[str] = table.categories
            self.category_parts: List[List[int]] = table.category_parts
            self.part_names: List[str] = table.part_names
            self.part_values: List[int] = table.part_values
            self.num_parts = len(table.part_names)
            self.num_classes = len(self.categories)
            groups = np.array([self.categories.index(table.category_of[e.path]) for e in index.entries])
        else:
            self.classes: List[str] = sorted({e.group for e in index.entries})
            self.num_classes = len(self.classes)
            groups = np.array([self.classes.index(e.group) for e in index.entries])
        keep = split_mask(index, groups[rows], split, val_fraction, test_fraction, split_seed)
        if not keep.any():
            raise ValueError(f"{self.root}: the {split} split is empty ({len(files)} clouds, "
                             f"val_fraction={val_fraction}, test_fraction={test_fraction})")
        self.files: List[str] = [f for f, k in zip(files, keep) if k]
        self.points = torch.from_numpy(np.ascontiguousarray(arrays["points"][keep]))  # (M, num_points, C)
        self.labels = torch.from_numpy(groups[rows][keep].astype(np.int64))  # (M,) class / category
        if labelled:
            # raw label values -> part ids; every value is a part (checked when the cache was built)
            parts = np.searchsorted(np.asarray(self.part_values, dtype=np.int64), arrays["parts"][keep])
            self.parts = torch.from_numpy(parts.astype(np.int64))  # (M, num_points)

    def _build(self, index: FolderIndex, declared: Optional[Dict[int, str]],
               names_file: Optional[Path]) -> Dict[str, np.ndarray]:
        labelled = self.task == "segmentation"
        logger.info("%s: reading %d clouds from %s (cached afterwards)", type(self).__name__,
                    len(index.entries), self.root)
        records = {e.path: read_cloud(self.root, e.path, self.num_points, self.use_normals, labelled)
                   for e in index.entries}
        if labelled:
            problems = _label_problems(index, records, declared, names_file)
            if problems:
                raise ValueError(problems[0])
        files = [e.path for e in index.entries]
        points = np.stack([records[f].points for f in files])
        if not labelled:
            empty = np.zeros((len(files), 0), dtype=np.int64)
            return {"points": points, "parts": empty, "values": np.zeros(0, dtype=np.int64),
                    "presence": np.zeros((len(files), 0), dtype=bool), "files": np.array(files)}
        values = np.unique(np.concatenate([records[f].values for f in files]))
        presence = np.stack([np.isin(values, records[f].values) for f in files])
        parts = np.stack([records[f].labels for f in files]).astype(np.int64)
        return {"points": points, "parts": parts, "values": values, "presence": presence, "files": np.array(files)}

    def __len__(self) -> int:
        return len(self.files)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(split={self.split!r}, layout={self.layout!r}, clouds={len(self)}, "
                f"num_points={self.num_points}, use_normals={self.use_normals}, root={str(self.root)!r}, "
                f"transform={self.transform!r})")


class FolderClassification(_FolderDataset):
    """Classify the user's own clouds: ``DIR/<class>/<files>`` (see the module docstring).

    Args:
        root: the dataset folder.
        split: ``"train"``, ``"val"``, ``"trainval"`` or ``"test"``.
        num_points: points per cloud (chosen deterministically; short clouds repeat points).
        transform: callable on the item dict.
        val_fraction: share of each class's training clouds held out for ``"val"`` when the
            folder has no val split.
        test_fraction: share of each class carved out for ``"test"`` when the folder has no splits.
        split_seed: seed of those carves.
        use_normals: return ``x y z nx ny nz`` (C = 6); every file must have normals.
        cache_dir: folder for the processed cache (default ``$POINTEA_CACHE`` or ``~/.cache/pointea``).

    Attributes:
        classes (the folder names, sorted), num_classes, in_channels, layout, files,
        points ``(M, num_points, C)`` float32 in the unit sphere, labels ``(M,)`` int64.

    Items:
        ``{"points": (num_points, C) float32, "label": int64 scalar}`` after ``transform``.

    Raises:
        FileNotFoundError: ``root`` missing, a split list naming a missing file, or no such split.
        ValueError: a folder that cannot be trained on (one class, an empty class, unreadable
            files, ...), with the message ``pointea data DIR`` gives.
    """

    task = "classification"

    def __getitem__(self, index: int) -> Item:
        item = {"points": self.points[index], "label": self.labels[index]}
        return self.transform(item) if self.transform is not None else item


class FolderSegmentation(_FolderDataset):
    """Segment the user's own labelled clouds into parts (see the module docstring).

    Arguments as :class:`FolderClassification`.

    Attributes:
        categories (category folder names, or the root folder's name for one kind of object),
        category_parts, part_names, part_values (the label value of each part id), num_parts,
        num_classes (categories), in_channels, layout, files, points ``(M, num_points, C)``,
        labels ``(M,)`` category, parts ``(M, num_points)`` int64 part ids.

    Items:
        ``{"points": (num_points, C) float32, "category": int64 scalar, "parts": (num_points,) int64}``
        after ``transform``.
    """

    task = "segmentation"

    def __getitem__(self, index: int) -> Item:
        item = {"points": self.points[index], "category": self.labels[index], "parts": self.parts[index]}
        return self.transform(item) if self.transform is not None else item
