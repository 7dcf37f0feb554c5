"""Read and write a user's own point clouds and meshes, with numpy-only parsers.

Point formats: ``.ply`` (ascii, binary little/big endian), ``.pcd`` (ascii, binary),
``.xyz`` / ``.txt`` / ``.csv`` / ``.pts`` (whitespace or comma separated), ``.npy`` / ``.npz``.
Mesh formats: ``.off``, ``.obj``, ``.stl`` (ascii and binary); meshes are sampled uniformly over
their surface (area-weighted triangles, uniform barycentric coordinates) and come back with the
face normals.

Every reader returns float32 ``(N, 3)`` (xyz) or ``(N, 6)`` (xyz + normals) arrays checked by
:func:`validate_points`.

Files are untrusted input: counts and sizes that a header declares (``.npy`` / ``.npz`` shapes,
PLY and PCD point counts, a compressed PCD's sizes) are checked against the file's size and
:data:`MAX_POINTS` before anything is allocated or inflated, so a tiny hostile file is a
``ValueError`` naming it rather than a ``MemoryError`` or minutes of work.
"""

from __future__ import annotations

import errno
import io
import math
import os
import re
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Any, BinaryIO, Callable, Dict, List, NamedTuple, Optional, Tuple, Union

import numpy as np
from numpy.typing import DTypeLike

from pointea.atomic import atomic_path

PathLike = Union[str, os.PathLike]

POINT_SUFFIXES = (".ply", ".pcd", ".xyz", ".txt", ".csv", ".pts", ".npy", ".npz")
MESH_SUFFIXES = (".off", ".obj", ".stl")
SUPPORTED_SUFFIXES = POINT_SUFFIXES + MESH_SUFFIXES
WRITE_SUFFIXES = (".ply", ".npy", ".npz", ".xyz", ".txt", ".csv")

# Text layouts by column count: x y z [nx ny nz] with an optional trailing integer label.
TEXT_LAYOUTS = {3: "x y z", 4: "x y z label", 6: "x y z nx ny nz", 7: "x y z nx ny nz label"}

#: Most points a file may declare (1.2 GB as float32 xyz); readers take ``max_points`` to go beyond.
MAX_POINTS = 100_000_000

# numpy's own bound on a .npy header it parses safely (``numpy.lib.format``'s max_header_size).
_MAX_NPY_HEADER = 10_000
# One 3-byte LZF back reference writes at most 264 bytes, so no LZF stream inflates further.
_LZF_MAX_RATIO = 88
# Zip members are inflated in pieces of this size into a buffer of exactly the declared size.
_CHUNK = 1 << 24

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}
_NORMAL_NAMES = (("nx", "ny", "nz"), ("normal_x", "normal_y", "normal_z"))
_FIELD_KIND = {"PLY": "PLY property", "PCD": "PCD field"}
# Per-point label fields of PLY / PCD files, matched case-insensitively, first match wins; each
# also under CloudCompare's "scalar_" prefix (it writes scalar fields as scalar_<Name>, e.g.
# scalar_Classification for a LAS classification, scalar_label).
LABEL_FIELDS = ("label", "labels", "class", "classification", "part")
_SCALAR_PREFIX = "scalar_"

Labels = Optional[np.ndarray]


class LabeledCloud(NamedTuple):
    """A cloud, its per-point labels (or None) and where the labels were found (or None)."""

    points: np.ndarray  # (N, 3) or (N, 6)
    labels: Labels  # (N,) int64
    label_source: Optional[str]  # e.g. "PLY property 'scalar_Classification'", "column 4"


# --------------------------------------------------------------------------- validation

def validate_points(points: np.ndarray, source: str, dtype: DTypeLike = np.float32) -> np.ndarray:
    """Check that ``points`` is a usable cloud and return it as a contiguous ``dtype`` array.

    Args:
        points: array ``(N, C)`` with ``C >= 3`` (xyz first).
        source: where the points came from (a file name), used in error messages.
        dtype: float32 (default) or float64.

    Raises:
        ValueError: not 2-D, fewer than 3 columns, zero points, NaN / inf values, or values
            beyond the float32 range.
    """
    points = np.asarray(points)
    if points.ndim != 2:
        raise ValueError(f"{source}: expected a 2-D array of points (N, C), got shape {points.shape}")
    if points.shape[1] < 3:
        raise ValueError(f"{source}: expected at least 3 columns (x y z), got {points.shape[1]}")
    if points.shape[0] == 0:
        raise ValueError(f"{source}: empty cloud (0 points)")
    if not np.issubdtype(points.dtype, np.number) or np.issubdtype(points.dtype, np.complexfloating):
        raise ValueError(f"{source}: expected real numbers, got dtype {points.dtype}")
    finite = np.isfinite(points).all(axis=1)
    if not finite.all():
        bad = int((~finite).sum())
        first = int(np.flatnonzero(~finite)[0])
        raise ValueError(
            f"{source}: {bad} of {len(points)} rows contain NaN or inf (first at row {first})"
        )
    with np.errstate(over="ignore"):  # values beyond float32 become inf, reported below
        out = np.ascontiguousarray(points, dtype=dtype)
    if not np.isfinite(out).all():
        raise ValueError(
            f"{source}: coordinates up to {np.abs(points).max():.3g} exceed the {out.dtype} range"
        )
    return out


def validate_labels(labels: np.ndarray, num_points: int, source: str) -> np.ndarray:
    """Check per-point labels against a cloud of ``num_points`` and return them as int64 ``(N,)``.

    ``(N, 1)`` columns are flattened; floats are accepted when they hold whole numbers (text files).

    Raises:
        ValueError: naming ``source``, when the count does not match or the values are not integers.
    """
    labels = np.asarray(labels)
    flat = labels.reshape(-1)
    if len(flat) != num_points or labels.ndim > 2 or (labels.ndim == 2 and labels.shape[1] != 1):
        raise ValueError(
            f"{source}: {len(flat)} labels for {num_points} points (expected shape ({num_points},), "
            f"got {labels.shape})"
        )
    if flat.dtype.kind == "f":
        if not np.isfinite(flat).all() or not (flat == np.round(flat)).all():
            raise ValueError(f"{source}: labels must be integers")
    elif flat.dtype.kind not in "iub":
        raise ValueError(f"{source}: labels must be integers, got dtype {flat.dtype}")
    return flat.astype(np.int64)


# --------------------------------------------------------------------------- public API

def read_point_cloud(
    path: PathLike,
    num_mesh_points: int = 10_000,
    seed: int = 0,
    dtype: DTypeLike = np.float32,
    max_points: int = MAX_POINTS,
) -> np.ndarray:
    """Read a point cloud (or sample a mesh) from ``path``.

    Text files (``.xyz`` ``.txt`` ``.csv`` ``.pts``) have 3 (x y z), 4 (x y z label), 6
    (x y z nx ny nz) or 7 (x y z nx ny nz label) columns; a label column must hold integers.

    Args:
        path: a file with one of :data:`SUPPORTED_SUFFIXES`.
        num_mesh_points: number of points sampled on the surface of a mesh file.
        seed: seed of the mesh surface sampling.
        dtype: float32, or float64 to keep the detail of clouds far from the origin (e.g. lidar
            in UTM coordinates, where float32 steps are about 0.5 m).
        max_points: a file whose header declares more points (``.npy``, ``.npz``, PLY, PCD) is
            refused before reading; raise it for bigger clouds.

    Returns:
        ``dtype`` ``(N, 3)``, or ``(N, 6)`` with normals (x y z nx ny nz) when the file has normals.
        Meshes always give ``(num_mesh_points, 6)`` with face normals.

    Raises:
        FileNotFoundError: ``path`` (or the target of the symbolic link ``path``) does not exist.
        ValueError: unknown suffix, symbolic link loop, malformed or truncated file, declared
            sizes the file cannot hold, more than ``max_points`` points, NaN values, empty cloud.
    """
    return _read(path, num_mesh_points, seed, dtype, max_points).points


def read_labeled_point_cloud(
    path: PathLike,
    num_mesh_points: int = 10_000,
    seed: int = 0,
    dtype: DTypeLike = np.float32,
    max_points: int = MAX_POINTS,
) -> Tuple[np.ndarray, Labels]:
    """Read a point cloud and its per-point labels when the file carries them.

    Labels come from a PLY vertex property or PCD field named ``label``, ``class``,
    ``classification``, ``part`` (any case, also CloudCompare's ``scalar_Classification`` /
    ``scalar_label``; see :data:`LABEL_FIELDS`), a text file's 4th column after xyz (exactly 4
    columns) or 7th after xyz + normals (exactly 7 columns), the same last column of an ``.npy``
    array when it holds whole numbers, or the ``labels`` array of an ``.npz``.

    Returns:
        ``(points, labels)``: points as in :func:`read_point_cloud`, labels int64 ``(N,)`` or None.
    """
    points, labels, _ = _read(path, num_mesh_points, seed, dtype, max_points)
    return points, labels


def read_labeled_cloud(
    path: PathLike,
    num_mesh_points: int = 10_000,
    seed: int = 0,
    dtype: DTypeLike = np.float32,
    max_points: int = MAX_POINTS,
) -> LabeledCloud:
    """:func:`read_labeled_point_cloud` plus where the labels came from.

    Label fields of PLY / PCD files are those of :data:`LABEL_FIELDS`, case-insensitive, also with
    CloudCompare's ``scalar_`` prefix (``scalar_Classification``, ``scalar_label``); a text or
    ``.npy`` table's last column when it has 4 or 7 columns (an ``.npy`` last column counts only
    when it holds whole numbers, so ``x y z intensity`` arrays stay unlabelled); an ``.npz``'s
    ``labels`` array.

    Returns:
        :class:`LabeledCloud` ``(points, labels, label_source)``; the source names the field,
        e.g. ``"PLY property 'scalar_Classification'"``, ``"column 4"`` or ``"'labels' array"``,
        so that files labelled in different ways can be told apart.
    """
    return _read(path, num_mesh_points, seed, dtype, max_points)


def label_field(names: List[str]) -> Optional[str]:
    """The per-point label field among a PLY / PCD file's field ``names``, or None (see
    :data:`LABEL_FIELDS`)."""
    lowered = {name.lower(): name for name in names}
    for wanted in LABEL_FIELDS:
        for candidate in (wanted, _SCALAR_PREFIX + wanted):
            if candidate in lowered:
                return lowered[candidate]
    return None


def write_point_cloud(
    path: PathLike,
    points: np.ndarray,
    colors: Optional[np.ndarray] = None,
    labels: Optional[np.ndarray] = None,
) -> None:
    """Write a point cloud atomically; the format follows the suffix.

    ``.ply``: binary little-endian, x y z float32, nx ny nz when ``points`` has 6 columns,
    red green blue uchar when ``colors`` is given (uint8, or floats in [0, 1]), ``label`` int32
    when ``labels`` is given. ``.npz`` stores ``points``, ``colors`` and ``labels`` arrays;
    ``.npy`` stores the points only; ``.xyz`` / ``.txt`` (spaces) and ``.csv`` (commas) store
    points with labels as the last column.

    Args:
        path: output file.
        points: ``(N, 3)`` or ``(N, 6)`` array.
        colors: optional ``(N, 3)`` uint8 or float in [0, 1].
        labels: optional ``(N,)`` integers.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in WRITE_SUFFIXES:
        raise ValueError(
            f"{path}: cannot write suffix {suffix!r}; supported: {', '.join(WRITE_SUFFIXES)}"
        )
    points = validate_points(points, str(path))
    if points.shape[1] not in (3, 6):
        raise ValueError(f"{path}: points must have 3 or 6 columns, got {points.shape[1]}")
    if labels is not None:
        labels = validate_labels(labels, len(points), str(path))
    if colors is not None:
        colors = _colors_to_uint8(colors, len(points), str(path))
        if suffix not in (".ply", ".npz"):
            raise ValueError(f"{path}: colors can only be written to .ply or .npz")
    if suffix == ".npy" and labels is not None:
        raise ValueError(f"{path}: .npy holds a single array; write labels to .ply or .npz")

    with atomic_path(path) as tmp:
        if suffix == ".ply":
            _write_ply(tmp, points, colors, labels)
        elif suffix == ".npy":
            with open(tmp, "wb") as handle:
                np.save(handle, points)
        elif suffix == ".npz":
            arrays = {"points": points}
            if colors is not None:
                arrays["colors"] = colors
            if labels is not None:
                arrays["labels"] = labels
            with open(tmp, "wb") as handle:
                np.savez(handle, **arrays)
        else:
            _write_text(tmp, points, labels, "," if suffix == ".csv" else " ")


def read_mesh(path: PathLike) -> Tuple[np.ndarray, np.ndarray]:
    """Read a triangle mesh from ``.off``, ``.obj`` or ``.stl``; polygons are fan-triangulated.

    Returns:
        ``(vertices, faces)``: float64 ``(V, 3)`` and int64 ``(F, 3)`` vertex indices.
    """
    path = _existing_file(path)
    suffix = path.suffix.lower()
    readers = {".off": _read_off, ".obj": _read_obj, ".stl": _read_stl}
    if suffix not in readers:
        raise ValueError(f"{path}: not a mesh suffix {suffix!r}; supported: {', '.join(MESH_SUFFIXES)}")
    vertices, faces = readers[suffix](path)
    if len(faces) and (faces.min() < 0 or faces.max() >= len(vertices)):
        raise ValueError(
            f"{path}: face vertex index out of range (mesh has {len(vertices)} vertices, "
            f"faces use {int(faces.min())}..{int(faces.max())})"
        )
    return vertices, faces


def sample_mesh_surface(
    vertices: np.ndarray, faces: np.ndarray, num_points: int, seed: int = 0, source: str = "mesh"
) -> np.ndarray:
    """Sample points uniformly over a triangle mesh surface.

    Triangles are drawn with probability proportional to their area, then a point uniformly
    inside each drawn triangle (reflected barycentric coordinates).

    Args:
        vertices: ``(V, 3)`` vertex positions.
        faces: ``(F, 3)`` vertex indices.
        num_points: number of samples.
        seed: numpy random seed.
        source: name used in error messages.

    Returns:
        float32 ``(num_points, 6)``: positions and unit face normals (right-hand winding).
    """
    if num_points <= 0:
        raise ValueError(f"{source}: num_points must be positive, got {num_points}")
    a, b, c = (vertices[faces[:, k]].astype(np.float64) for k in range(3))  # each (F, 3)
    cross = np.cross(b - a, c - a)
    double_area = np.linalg.norm(cross, axis=1)
    total = double_area.sum()
    if not np.isfinite(total) or total <= 0:
        raise ValueError(f"{source}: the mesh has no surface area (all {len(faces)} faces degenerate)")
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(faces), size=num_points, p=double_area / total)
    u, v = rng.random((2, num_points, 1))
    flip = (u + v) > 1.0
    u, v = np.where(flip, 1.0 - u, u), np.where(flip, 1.0 - v, v)
    ac, bc, cc = a[chosen], b[chosen], c[chosen]
    xyz = ac + u * (bc - ac) + v * (cc - ac)
    normals = cross[chosen] / double_area[chosen, None]
    return validate_points(np.concatenate([xyz, normals], axis=1), source)


# --------------------------------------------------------------------------- dispatch

def _existing_file(path: PathLike) -> Path:
    """``path`` as a Path once it is known to be a regular file (symbolic links followed)."""
    path = Path(path)
    try:
        path.stat()
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise ValueError(f"{path}: symbolic link loop (too many levels of symbolic links)") from None
        if path.is_symlink():
            raise FileNotFoundError(
                f"{path}: symbolic link to a missing target ({os.readlink(path)})"
            ) from None
        if isinstance(error, (FileNotFoundError, NotADirectoryError)):
            raise FileNotFoundError(f"No such point cloud file: {path}") from None
        raise ValueError(f"{path}: cannot access ({error.strerror})") from None
    if not path.is_file():
        raise ValueError(f"{path}: not a file")
    return path


def _read(
    path: PathLike, num_mesh_points: int, seed: int, dtype: DTypeLike, max_points: int
) -> LabeledCloud:
    path = _existing_file(path)
    suffix = path.suffix.lower()
    source = str(path)
    if suffix in MESH_SUFFIXES:
        vertices, faces = _parse(read_mesh, path)
        if len(faces) == 0:  # a mesh file holding vertices only is a point cloud
            return LabeledCloud(validate_points(vertices, source, dtype), None, None)
        sampled = sample_mesh_surface(vertices, faces, num_mesh_points, seed, source)
        return LabeledCloud(sampled.astype(dtype, copy=False), None, None)
    # Formats whose header declares a point count take the limit; text is bounded by its size.
    counted = {".ply": _read_ply, ".pcd": _read_pcd, ".npy": _read_npy, ".npz": _read_npz}
    if suffix in counted:
        points, labels, label_source = _parse(counted[suffix], path, max_points)
    elif suffix in (".xyz", ".txt", ".csv", ".pts"):
        points, labels, label_source = _parse(_read_text, path)
    else:
        raise ValueError(
            f"{path}: unsupported suffix {suffix!r}; supported: {', '.join(SUPPORTED_SUFFIXES)}"
        )
    points = validate_points(points, source, dtype)
    if labels is not None:
        labels = validate_labels(labels, len(points), source)
    return LabeledCloud(points, labels, label_source)


def _count(token: str, what: str, path: Path) -> int:
    """A header's element count: a non-negative integer."""
    try:
        value = int(token)
    except ValueError:
        raise ValueError(f"{path}: {what} count {token!r} is not an integer") from None
    if value < 0:
        raise ValueError(f"{path}: {what} count is negative ({value})")
    return value


def _check_limit(count: int, max_points: int, source: PathLike, what: str) -> None:
    """Refuse a declared point count above ``max_points`` before anything is allocated."""
    if count > max_points:
        raise ValueError(
            f"{source}: {what} declares {count} points, more than the limit of {max_points} "
            f"(pass max_points= to read bigger clouds)"
        )


def _parse(reader: Callable[..., Any], path: Path, *args: Any) -> Any:
    """Run a format reader; any parsing failure becomes a ValueError that names the file."""
    kind = path.suffix.lower().lstrip(".").upper()
    try:
        return reader(path, *args)
    except ValueError as error:  # includes UnicodeDecodeError
        if str(path) in str(error):
            raise
        raise ValueError(f"{path}: malformed {kind} file ({error})") from error
    except (IndexError, KeyError, TypeError, OverflowError, EOFError) as error:
        raise ValueError(f"{path}: malformed {kind} file ({type(error).__name__}: {error})") from error


def _columns(named: Dict[str, np.ndarray], source: str, kind: str) -> LabeledCloud:
    """Assemble ``(N, 3|6)`` points and optional labels from named columns (``kind``: PLY / PCD fields)."""
    missing = [name for name in ("x", "y", "z") if name not in named]
    if missing:
        raise ValueError(f"{source}: no {'/'.join(missing)} field; found {', '.join(named) or 'none'}")
    columns = [named["x"], named["y"], named["z"]]
    for names in _NORMAL_NAMES:
        if all(name in named for name in names):
            columns += [named[name] for name in names]
            break
    points = np.stack([np.asarray(c, dtype=np.float64) for c in columns], axis=1)
    label_name = label_field(list(named))
    if label_name is None:
        return LabeledCloud(points, None, None)
    return LabeledCloud(points, named[label_name], f"{kind} {label_name!r}")


def _read_binary_columns(
    path: Path, dtype: np.dtype, count: int, offset: int, fmt: str, records: str
) -> LabeledCloud:
    """``count`` records of ``dtype`` from byte ``offset`` on, as points and labels.

    ``fmt`` and ``records`` name the format and its records in the error of a truncated file,
    e.g. ``"PLY"`` and ``"vertices"``.
    """
    needed = offset + count * dtype.itemsize
    size = path.stat().st_size
    if size < needed:
        raise ValueError(
            f"{path}: truncated binary {fmt}, {count} {records} need {needed} bytes, file has {size}"
        )
    table = np.fromfile(path, dtype=dtype, count=count, offset=offset)
    return _columns({name: table[name] for name in dtype.names}, str(path), _FIELD_KIND[fmt])


# --------------------------------------------------------------------------- PLY

def _read_header(handle, path: Path, end: bytes, max_lines: int = 10_000) -> List[str]:
    lines = []
    for _ in range(max_lines):
        raw = handle.readline()
        if not raw:
            raise ValueError(f"{path}: header ended before {end.decode()!r} (truncated file?)")
        line = raw.decode("latin-1").strip()
        lines.append(line)
        if raw.strip() == end or line.startswith(end.decode()):
            return lines
    raise ValueError(f"{path}: no {end.decode()!r} within the first {max_lines} header lines")


def _read_ply(path: Path, max_points: int) -> LabeledCloud:
    with open(path, "rb") as handle:
        magic = handle.readline().strip()
        if magic != b"ply":
            raise ValueError(f"{path}: not a PLY file (first line {magic[:20]!r}, expected 'ply')")
        header = _read_header(handle, path, b"end_header")
        body_offset = handle.tell()
    fmt = None
    elements: List[Tuple[str, int, List[Tuple[str, str, Optional[str]]]]] = []
    for line in header:
        tokens = line.split()
        if not tokens or tokens[0] in ("comment", "obj_info", "end_header"):
            continue
        if tokens[0] == "format":
            fmt = tokens[1] if len(tokens) > 1 else ""
        elif tokens[0] == "element" and len(tokens) == 3:
            elements.append((tokens[1], _count(tokens[2], f"PLY element {tokens[1]!r}", path), []))
        elif tokens[0] == "property" and elements:
            if tokens[1] == "list" and len(tokens) == 5:
                elements[-1][2].append((tokens[4], tokens[3], tokens[2]))
            elif len(tokens) == 3:
                elements[-1][2].append((tokens[2], tokens[1], None))
            else:
                raise ValueError(f"{path}: malformed PLY header line {line!r}")
        else:
            raise ValueError(f"{path}: malformed PLY header line {line!r}")
    formats = ("ascii", "binary_little_endian", "binary_big_endian")
    if fmt not in formats:
        raise ValueError(f"{path}: unknown PLY format {fmt!r}; expected one of {', '.join(formats)}")
    names = [name for name, _, _ in elements]
    if "vertex" not in names:
        raise ValueError(f"{path}: PLY has no 'vertex' element (elements: {', '.join(names) or 'none'})")
    for _, _, props in elements:
        for name, dtype, count_type in props:
            if dtype not in _PLY_TYPES or (count_type is not None and count_type not in _PLY_TYPES):
                raise ValueError(f"{path}: unknown PLY property type in {name!r}")
    vertex_index = names.index("vertex")
    _, count, props = elements[vertex_index]
    if any(count_type is not None for _, _, count_type in props):
        raise ValueError(f"{path}: list properties on PLY vertices are not supported")
    prop_names = [name for name, _, _ in props]
    missing = [name for name in ("x", "y", "z") if name not in prop_names]
    if missing:
        raise ValueError(f"{path}: no {'/'.join(missing)} field; found {', '.join(prop_names) or 'none'}")
    _check_limit(count, max_points, path, "PLY")

    if fmt == "ascii":
        # Every value takes at least a digit and a separator, every earlier row a newline:
        # refuse counts the body cannot hold before reading it.
        skip = sum(n for _, n, _ in elements[:vertex_index])
        body = path.stat().st_size - body_offset
        if skip + 2 * count * len(props) - 1 > body:
            raise ValueError(
                f"{path}: truncated PLY, {count} vertices of {len(props)} values cannot fit in "
                f"{body} bytes of ascii data"
            )
        with open(path, "rb") as handle:
            handle.seek(body_offset)
            lines = handle.read().decode("latin-1").splitlines()
        rows = lines[skip: skip + count]
        if len(rows) < count:
            raise ValueError(f"{path}: truncated PLY, expected {count} vertices, found {len(rows)}")
        try:
            values = np.array(" ".join(rows).split(), dtype=np.float64)
        except ValueError as error:
            raise ValueError(f"{path}: malformed PLY vertex data ({error})") from None
        if values.size != count * len(props):
            raise ValueError(
                f"{path}: PLY vertex rows should have {len(props)} values each, "
                f"found {values.size} values for {count} rows"
            )
        table = values.reshape(count, len(props))
        named = {name: table[:, i] for i, (name, _, _) in enumerate(props)}
        return _columns(named, str(path), _FIELD_KIND["PLY"])

    endian = "<" if fmt == "binary_little_endian" else ">"
    offset = body_offset
    for name, n, element_props in elements[:vertex_index]:
        if any(count_type is not None for _, _, count_type in element_props):
            raise ValueError(f"{path}: PLY element {name!r} with list properties precedes 'vertex'")
        offset += n * sum(np.dtype(_PLY_TYPES[t]).itemsize for _, t, _ in element_props)
    dtype = np.dtype([(name, endian + _PLY_TYPES[t]) for name, t, _ in props])
    return _read_binary_columns(path, dtype, count, offset, "PLY", "vertices")


def _write_ply(path: Path, points: np.ndarray, colors: Optional[np.ndarray], labels: Optional[np.ndarray]) -> None:
    N = len(points)
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if points.shape[1] == 6:
        fields += [("nx", "<f4"), ("ny", "<f4"), ("nz", "<f4")]
    if colors is not None:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    if labels is not None:
        fields += [("label", "<i4")]
    table = np.empty(N, dtype=fields)
    for i, name in enumerate(("x", "y", "z", "nx", "ny", "nz")[: points.shape[1]]):
        table[name] = points[:, i]
    if colors is not None:
        table["red"], table["green"], table["blue"] = colors[:, 0], colors[:, 1], colors[:, 2]
    if labels is not None:
        table["label"] = labels
    ply_types = {"<f4": "float", "u1": "uchar", "<i4": "int"}
    header = ["ply", "format binary_little_endian 1.0", "comment written by pointea", f"element vertex {N}"]
    header += [f"property {ply_types[t]} {name}" for name, t in fields]
    header.append("end_header")
    with open(path, "wb") as handle:
        handle.write(("\n".join(header) + "\n").encode("ascii"))
        table.tofile(handle)


def _colors_to_uint8(colors: np.ndarray, num_points: int, source: str) -> np.ndarray:
    colors = np.asarray(colors)
    if colors.shape != (num_points, 3):
        raise ValueError(f"{source}: colors must have shape ({num_points}, 3), got {colors.shape}")
    if colors.dtype == np.uint8:
        return colors
    if colors.dtype.kind == "f":
        if not np.isfinite(colors).all() or colors.min() < 0 or colors.max() > 1:
            raise ValueError(f"{source}: float colors must lie in [0, 1]")
        return np.round(colors * 255).astype(np.uint8)
    raise ValueError(f"{source}: colors must be uint8 or floats in [0, 1], got dtype {colors.dtype}")


# --------------------------------------------------------------------------- PCD

_PCD_TYPES = {("F", 4): "f4", ("F", 8): "f8", ("I", 1): "i1", ("I", 2): "i2", ("I", 4): "i4",
              ("I", 8): "i8", ("U", 1): "u1", ("U", 2): "u2", ("U", 4): "u4", ("U", 8): "u8"}


def _read_pcd(path: Path, max_points: int) -> LabeledCloud:
    with open(path, "rb") as handle:
        header = _read_header(handle, path, b"DATA", max_lines=100)
        body_offset = handle.tell()
    meta: Dict[str, List[str]] = {}
    for line in header:
        tokens = line.split()
        if tokens and not tokens[0].startswith("#"):
            meta[tokens[0].upper()] = tokens[1:]
    for key in ("FIELDS", "SIZE", "TYPE", "DATA"):
        if key not in meta:
            raise ValueError(f"{path}: PCD header has no {key} line")
    fields, sizes, types = meta["FIELDS"], meta["SIZE"], meta["TYPE"]
    counts = meta.get("COUNT", ["1"] * len(fields))
    if not (len(fields) == len(sizes) == len(types) == len(counts)):
        raise ValueError(f"{path}: PCD FIELDS, SIZE, TYPE and COUNT have different lengths")
    if "POINTS" in meta:
        count = _count(meta["POINTS"][0], "PCD POINTS", path)
    else:
        count = _count(meta.get("WIDTH", ["0"])[0], "PCD WIDTH", path) * _count(
            meta.get("HEIGHT", ["1"])[0], "PCD HEIGHT", path)
    _check_limit(count, max_points, path, "PCD")
    dtype_fields = []
    for name, size, kind, n in zip(fields, sizes, types, counts):
        key = (kind.upper(), int(size))
        if key not in _PCD_TYPES:
            raise ValueError(f"{path}: unsupported PCD field type {kind}{size} for {name!r}")
        n = _count(n, f"PCD field {name!r}", path)
        dtype_fields.append((name, "<" + _PCD_TYPES[key]) if n == 1 else (name, "<" + _PCD_TYPES[key], (n,)))
    # Duplicate names (e.g. several "_" padding fields) would break the structured dtype.
    seen: Dict[str, int] = {}
    for i, field in enumerate(dtype_fields):
        name = field[0]
        if name in seen:
            dtype_fields[i] = (f"{name}_{i}",) + tuple(field[1:])
        seen[name] = i
    dtype = np.dtype(dtype_fields)
    data_kind = meta["DATA"][0].lower() if meta["DATA"] else ""

    if data_kind == "ascii":
        width = sum(int(n) for n in counts)
        # Every value takes at least a digit and a separator: refuse counts the body cannot hold.
        body = path.stat().st_size - body_offset
        if 2 * count * width - 1 > body:
            raise ValueError(
                f"{path}: truncated PCD, {count} points of {width} values cannot fit in {body} bytes "
                f"of ascii data"
            )
        with open(path, "rb") as handle:
            handle.seek(body_offset)
            text = handle.read().decode("latin-1")
        try:
            values = np.array(text.split(), dtype=np.float64)
        except ValueError as error:
            raise ValueError(f"{path}: malformed PCD ascii data ({error})") from None
        if values.size != count * width:
            raise ValueError(
                f"{path}: PCD declares {count} points of {width} values, found {values.size} values"
            )
        table = values.reshape(count, width)
        named, column = {}, 0
        for (name, *_), n in zip(dtype_fields, counts):
            named[name] = table[:, column]
            column += int(n)
        return _columns(named, str(path), _FIELD_KIND["PCD"])
    if data_kind == "binary":
        return _read_binary_columns(path, dtype, count, body_offset, "PCD", "points")
    if data_kind == "binary_compressed":
        return _columns(_read_pcd_compressed(path, body_offset, dtype, count), str(path), _FIELD_KIND["PCD"])
    raise ValueError(f"{path}: unknown PCD DATA {data_kind!r}; expected ascii, binary or binary_compressed")


def _read_pcd_compressed(path: Path, offset: int, dtype: np.dtype, count: int) -> Dict[str, np.ndarray]:
    """Decode ``DATA binary_compressed``: LZF-compressed, fields stored one after another.

    The two sizes before the data are checked against the header and the file before decoding.
    """
    available = path.stat().st_size - offset - 8
    with open(path, "rb") as handle:
        handle.seek(offset)
        sizes = np.frombuffer(handle.read(8), dtype="<u4")
        if len(sizes) < 2:
            raise ValueError(f"{path}: truncated compressed PCD")
        packed, unpacked = int(sizes[0]), int(sizes[1])
        if unpacked != count * dtype.itemsize:
            raise ValueError(
                f"{path}: compressed PCD declares {unpacked} uncompressed bytes, but {count} points "
                f"of {dtype.itemsize} bytes take {count * dtype.itemsize}"
            )
        if packed > available:
            raise ValueError(
                f"{path}: truncated compressed PCD, expected {packed} compressed bytes, file has {available}"
            )
        if unpacked > _LZF_MAX_RATIO * packed:
            raise ValueError(
                f"{path}: corrupt compressed PCD, {packed} compressed bytes cannot hold {unpacked} "
                f"(LZF expands at most {_LZF_MAX_RATIO}-fold)"
            )
        compressed = handle.read(packed)
    raw = _lzf_decompress(compressed, unpacked, path)
    named, start = {}, 0
    for name in dtype.names:
        field = dtype.fields[name][0]
        nbytes = field.itemsize * count
        named[name] = np.frombuffer(raw, dtype=field, count=count, offset=start)
        start += nbytes
    return named


def _lzf_decompress(data: bytes, size: int, path: Path) -> bytearray:
    """LZF-decode ``data`` into exactly ``size`` bytes; a stream that would write more is refused."""
    out = bytearray(size)
    i, o, n = 0, 0, len(data)
    while i < n:
        ctrl = data[i]
        i += 1
        if ctrl < 32:  # literal run of ctrl + 1 bytes
            length = ctrl + 1
            if i + length > n:
                raise ValueError(f"{path}: corrupt compressed PCD data (literal run past the end)")
            source = data[i: i + length]
            i += length
        else:  # back reference: length and distance into the output written so far
            length = ctrl >> 5
            if length == 7:
                if i >= n:
                    raise ValueError(f"{path}: corrupt compressed PCD data (back reference cut off)")
                length += data[i]
                i += 1
            if i >= n:
                raise ValueError(f"{path}: corrupt compressed PCD data (back reference cut off)")
            distance = ((ctrl & 0x1F) << 8) + data[i] + 1
            i += 1
            length += 2
            if distance > o:
                raise ValueError(f"{path}: corrupt compressed PCD data (back reference before the start)")
            if distance >= length:
                source = out[o - distance: o - distance + length]
            else:  # an overlapping copy repeats the last ``distance`` bytes
                source = (out[o - distance: o] * (length // distance + 1))[:length]
        if o + length > size:
            raise ValueError(
                f"{path}: corrupt compressed PCD data (inflates past its declared {size} bytes)"
            )
        out[o: o + length] = source
        o += length
    if o != size:
        raise ValueError(f"{path}: corrupt compressed PCD data ({o} bytes, expected {size})")
    return out


# --------------------------------------------------------------------------- text and numpy

_NUMBER = re.compile(r"^[\s,;]*[-+]?(\d|\.\d|nan|inf)", re.IGNORECASE)


def _read_text(path: Path) -> LabeledCloud:
    # Find the first content line (skipping blank and '#' lines); a non-numeric one is a header.
    header_rows, sample = 0, ""
    with open(path, "r", encoding="utf-8", errors="replace") as handle:
        for row, line in enumerate(handle):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if _NUMBER.match(line):
                sample = line
                break
            if header_rows:  # a second non-numeric line is not a header but bad data
                sample = line
                break
            header_rows = row + 1
    if not sample:
        raise ValueError(f"{path}: empty cloud (no data rows)")
    delimiter = "," if "," in sample else None
    try:
        with warnings.catch_warnings():  # an empty body is reported below, not as a warning
            warnings.simplefilter("ignore", UserWarning)
            table = np.loadtxt(path, delimiter=delimiter, comments="#", ndmin=2, dtype=np.float64,
                               skiprows=header_rows)
    except ValueError as error:
        reason = _first_bad_row(path, delimiter, header_rows) or str(error).splitlines()[0]
        raise ValueError(f"{path}: malformed rows: {reason}") from None
    if table.size == 0:
        raise ValueError(f"{path}: empty cloud (no data rows)")
    columns = table.shape[1]
    layouts = "; ".join(f"{n} ({layout})" for n, layout in TEXT_LAYOUTS.items())
    if columns not in TEXT_LAYOUTS:
        raise ValueError(f"{path}: rows have {columns} columns; expected {layouts}")
    width = 6 if columns >= 6 else 3
    points, labels = table[:, :width], None
    if columns == width:
        return LabeledCloud(points, None, None)
    if columns > width:
        labels = table[:, width]
        whole = np.isfinite(labels) & (labels == np.round(labels))
        if not whole.all():
            row = int(np.flatnonzero(~whole)[0])
            raise ValueError(
                f"{path}: column {columns} is a label and must hold integers, data row {row + 1} "
                f"has {labels[row]:g}; expected {layouts}"
            )
    return LabeledCloud(points, labels, f"column {columns}")


def _first_bad_row(path: Path, delimiter: Optional[str], header_rows: int) -> Optional[str]:
    """Where a text table goes wrong: the first line whose column count or value is off."""
    expected, first = 0, 0
    with open(path, "r", encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            values = line.split("#", 1)[0].strip()
            if number <= header_rows or not values:
                continue
            tokens = values.split(delimiter)
            for token in tokens:
                try:
                    float(token)
                except ValueError:
                    return f"line {number}: {token.strip()[:30]!r} is not a number"
            if not expected:
                expected, first = len(tokens), number
            elif len(tokens) != expected:
                return f"line {number} has {len(tokens)} columns, expected {expected} as on line {first}"
    return None


def _npy_header(stream: BinaryIO, size: int, source: str, max_points: int) -> Tuple[np.dtype, Tuple[int, ...], bool]:
    """Read and check a ``.npy`` header from ``stream``, which holds ``size`` bytes in all.

    Only the header bytes are read. The declared shape must fit ``max_points`` rows and exactly
    fill the bytes after the header, so nothing is allocated for sizes the file cannot back.

    Returns:
        ``(dtype, shape, fortran_order)``; ``stream`` is left at the first data byte.
    """
    try:
        version = np.lib.format.read_magic(stream)
    except ValueError:
        raise ValueError(
            f"{source}: not a NumPy array file of numbers (object/pickled arrays are not read)"
        ) from None
    if version not in ((1, 0), (2, 0), (3, 0)):
        raise ValueError(f"{source}: unsupported .npy format version {version[0]}.{version[1]}")
    # numpy would read whatever header length the file declares (up to 4 GB): check it first.
    width = 2 if version == (1, 0) else 4
    prefix = stream.read(width)
    length = int.from_bytes(prefix, "little")
    start = np.lib.format.MAGIC_LEN + width
    if len(prefix) < width or length > _MAX_NPY_HEADER or start + length > size:
        raise ValueError(f"{source}: truncated or oversized .npy header ({length} bytes declared)")
    header = io.BytesIO(prefix + stream.read(length))
    # Version 3.0 differs from 2.0 only by a utf-8 header, which matters for field names alone.
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    try:
        shape, fortran_order, dtype = read_header(header)
    except ValueError as error:
        raise ValueError(f"{source}: malformed .npy header ({error})") from None
    if dtype.hasobject or dtype.kind not in "biuf":
        raise ValueError(
            f"{source}: not a NumPy array file of numbers (dtype {dtype}; object/pickled arrays "
            f"are not read)"
        )
    _check_limit(shape[0] if shape else 1, max_points, source, ".npy header")
    needed, left = math.prod(shape) * dtype.itemsize, size - start - length
    if needed != left:
        raise ValueError(
            f"{source}: .npy header declares shape {shape} of {dtype} ({needed} bytes), but "
            f"{left} bytes follow the header"
        )
    return dtype, shape, fortran_order


def _read_npy(path: Path, max_points: int) -> LabeledCloud:
    with open(path, "rb") as handle:
        dtype, shape, fortran_order = _npy_header(handle, path.stat().st_size, str(path), max_points)
        flat = np.fromfile(handle, dtype=dtype, count=math.prod(shape))
    array = flat.reshape(shape, order="F" if fortran_order else "C")
    points = _point_columns(array, str(path))
    # the text layouts' rule: 4 or 7 columns end with a label, here only when it is one (whole numbers)
    if array.ndim == 2 and array.shape[1] in (4, 7):
        last = array[:, -1]
        if np.isfinite(last).all() and (last == np.round(last)).all():
            return LabeledCloud(points, last, f"column {array.shape[1]}")
    return LabeledCloud(points, None, None)


def _read_npz_member(archive: zipfile.ZipFile, name: str, path: Path, max_points: int) -> np.ndarray:
    """One ``.npy`` member, inflated into a buffer of exactly the size its headers declare.

    The zip entry's ``file_size`` bounds the header check, and the inflated bytes are counted so
    that a member never produces more than that, whatever its compressed stream holds.
    """
    info = archive.getinfo(name + ".npy")
    source = f"{path} (array {name!r})"
    with archive.open(info) as stream:
        dtype, shape, fortran_order = _npy_header(stream, info.file_size, source, max_points)
        buffer = bytearray(math.prod(shape) * dtype.itemsize)
        view, filled = memoryview(buffer), 0
        while filled < len(buffer):
            chunk = stream.read(min(_CHUNK, len(buffer) - filled))
            if not chunk:
                raise ValueError(f"{source}: truncated, {filled} of {len(buffer)} bytes")
            view[filled: filled + len(chunk)] = chunk
            filled += len(chunk)
    return np.frombuffer(buffer, dtype=dtype).reshape(shape, order="F" if fortran_order else "C")


def _read_npz(path: Path, max_points: int) -> LabeledCloud:
    try:
        with zipfile.ZipFile(path) as archive:
            # Only the arrays that make the cloud are inflated; np.savez names members "<key>.npy".
            names = [info.filename[:-4] for info in archive.infolist() if info.filename.endswith(".npy")]
            if "points" in names:
                points = _read_npz_member(archive, "points", path, max_points)
                if "normals" in names and points.ndim == 2 and points.shape[1] == 3:
                    normals = _read_npz_member(archive, "normals", path, max_points)
                    points = np.concatenate([points, normals], axis=1)
            elif len(names) == 1:
                points = _read_npz_member(archive, names[0], path, max_points)
            else:
                raise ValueError(
                    f"{path}: .npz has no 'points' array and "
                    + (f"several arrays ({', '.join(names)}); " if names else "no arrays at all; ")
                    + "name the cloud 'points'"
                )
            labels = _read_npz_member(archive, "labels", path, max_points) if "labels" in names else None
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, OSError) as error:
        raise ValueError(f"{path}: not a readable .npz file ({error})") from None
    return LabeledCloud(_point_columns(points, str(path)), labels, None if labels is None else "'labels' array")


def _point_columns(array: np.ndarray, source: str) -> np.ndarray:
    array = validate_points(array, source)
    return array[:, :6] if array.shape[1] >= 6 else array[:, :3]


def _write_text(path: Path, points: np.ndarray, labels: Labels, delimiter: str) -> None:
    columns = [points]
    fmt = ["%.7g"] * points.shape[1]
    if labels is not None:
        columns.append(labels[:, None].astype(np.float64))
        fmt.append("%d")
    np.savetxt(path, np.concatenate(columns, axis=1) if labels is not None else points,
               fmt=fmt, delimiter=delimiter)


# --------------------------------------------------------------------------- meshes

def _fan_triangulate(polygons: List[List[int]]) -> np.ndarray:
    triangles = [(p[0], p[k], p[k + 1]) for p in polygons for k in range(1, len(p) - 1)]
    return np.asarray(triangles, dtype=np.int64).reshape(-1, 3)


def _read_off(path: Path) -> Tuple[np.ndarray, np.ndarray]:
    with open(path, "r", encoding="latin-1") as handle:
        lines = [line.split("#", 1)[0].strip() for line in handle]
    lines = [line for line in lines if line]
    if not lines:
        raise ValueError(f"{path}: empty OFF file")
    keyword = re.match(r"^(ST)?(C)?(N)?(4)?OFF", lines[0])
    if keyword is None:
        raise ValueError(f"{path}: not an OFF file (first line {lines[0][:30]!r})")
    if keyword.group(4):
        raise ValueError(f"{path}: 4-D OFF files are not supported")
    rest = lines[0][keyword.end():].strip()  # ModelNet writes "OFF490 518 0" on one line
    if rest:
        counts_line, body = rest, lines[1:]
    elif len(lines) > 1:
        counts_line, body = lines[1], lines[2:]
    else:
        raise ValueError(f"{path}: OFF header has no vertex/face counts")
    try:
        counts = [int(token) for token in counts_line.split()[:3]]
        num_vertices, num_faces = counts[0], counts[1]
    except (ValueError, IndexError):
        raise ValueError(f"{path}: bad OFF counts line {counts_line!r}") from None
    if num_vertices < 0 or num_faces < 0:
        raise ValueError(f"{path}: negative count in the OFF counts line {counts_line!r}")
    if len(body) < num_vertices + num_faces:
        raise ValueError(
            f"{path}: truncated OFF, expected {num_vertices} vertex and {num_faces} face lines, "
            f"found {len(body)} lines"
        )
    try:
        vertices = np.array([line.split()[:3] for line in body[:num_vertices]], dtype=np.float64)
    except ValueError:
        raise ValueError(f"{path}: malformed OFF vertex lines") from None
    if vertices.shape != (num_vertices, 3) and num_vertices:
        raise ValueError(f"{path}: OFF vertex lines must have at least 3 coordinates")
    vertices = vertices.reshape(num_vertices, 3)
    face_lines = body[num_vertices: num_vertices + num_faces]
    try:
        return vertices, _off_faces(face_lines)
    except (ValueError, IndexError):
        raise ValueError(f"{path}: malformed OFF face lines") from None


def _off_faces(lines: List[str]) -> np.ndarray:
    if not lines:
        return np.zeros((0, 3), dtype=np.int64)
    tokens = [line.split() for line in lines]
    widths = {len(t) for t in tokens}
    if len(widths) == 1:  # fast path: every face has the same number of values
        values = np.array(tokens, dtype=np.float64)
        if not (values == np.round(values)).all():
            raise ValueError("non-integer face index")
        table = values.astype(np.int64)
        sides = table[:, 0]
        if sides[0] >= 3 and (sides == sides[0]).all() and table.shape[1] >= sides[0] + 1:
            polygon = table[:, 1: 1 + sides[0]]
            k = np.arange(1, polygon.shape[1] - 1)
            triangles = np.stack(
                [np.repeat(polygon[:, :1], len(k), 1), polygon[:, k], polygon[:, k + 1]], axis=2
            )
            return triangles.reshape(-1, 3)
    polygons = []
    for t in tokens:
        sides = int(t[0])
        if len(t) < sides + 1 or sides < 3:
            raise ValueError("bad face")
        polygons.append([int(v) for v in t[1: 1 + sides]])
    return _fan_triangulate(polygons)


def _read_obj(path: Path) -> Tuple[np.ndarray, np.ndarray]:
    vertices: List[List[str]] = []
    polygons: List[List[int]] = []
    with open(path, "r", encoding="latin-1") as handle:
        for number, line in enumerate(handle, start=1):
            tokens = line.split()
            if not tokens:
                continue
            if tokens[0] == "v":
                if len(tokens) < 4:
                    raise ValueError(f"{path}:{number}: vertex needs 3 coordinates: {line.strip()!r}")
                vertices.append(tokens[1:4])
            elif tokens[0] == "f":
                count = len(vertices)
                try:
                    indices = [int(token.split("/", 1)[0]) for token in tokens[1:]]
                except ValueError:
                    raise ValueError(f"{path}:{number}: malformed face {line.strip()!r}") from None
                if len(indices) < 3 or 0 in indices:
                    raise ValueError(f"{path}:{number}: malformed face {line.strip()!r}")
                # OBJ indices are 1-based; negative ones count back from the latest vertex.
                polygons.append([i - 1 if i > 0 else count + i for i in indices])
    try:
        array = np.array(vertices, dtype=np.float64).reshape(-1, 3)
    except ValueError:
        raise ValueError(f"{path}: malformed OBJ vertex coordinates") from None
    return array, _fan_triangulate(polygons)


def _read_stl(path: Path) -> Tuple[np.ndarray, np.ndarray]:
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(84)
    count = int(np.frombuffer(head[80:84], dtype="<u4")[0]) if len(head) == 84 else -1
    if count >= 0 and size == 84 + 50 * count:
        record = np.dtype([("normal", "<f4", (3,)), ("vertices", "<f4", (3, 3)), ("attr", "<u2")])
        table = np.fromfile(path, dtype=record, count=count, offset=84)
        return _unindexed_triangles(table["vertices"].astype(np.float64))
    if head.lstrip().lower().startswith(b"solid"):
        text = path.read_text(encoding="latin-1")
        tokens = np.array(text.split())
        at = np.flatnonzero(tokens == "vertex")
        if len(at) % 3 or (len(at) and at[-1] + 3 >= len(tokens)):
            raise ValueError(f"{path}: truncated ASCII STL ({len(at)} vertices is not a multiple of 3)")
        try:
            corners = tokens[at[:, None] + np.arange(1, 4)].astype(np.float64)
        except (ValueError, IndexError):
            raise ValueError(f"{path}: malformed ASCII STL vertex") from None
        return _unindexed_triangles(corners.reshape(-1, 3, 3))
    if count >= 0:
        raise ValueError(
            f"{path}: truncated binary STL, {count} triangles need {84 + 50 * count} bytes, file has {size}"
        )
    raise ValueError(f"{path}: not an STL file (too short for binary, no 'solid' keyword)")


def _unindexed_triangles(corners: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """``(F, 3, 3)`` triangle corners to vertices ``(3F, 3)`` and faces ``(F, 3)``."""
    F = len(corners)
    return corners.reshape(-1, 3), np.arange(3 * F, dtype=np.int64).reshape(F, 3)
