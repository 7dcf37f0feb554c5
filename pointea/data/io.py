"""Read and write a user's own point clouds and meshes, with numpy-only parsers.

Point formats: ``.ply`` (ascii, binary little/big endian), ``.pcd`` (ascii, binary),
``.xyz`` / ``.txt`` / ``.csv`` / ``.pts`` (whitespace or comma separated), ``.npy`` / ``.npz``.
Mesh formats: ``.off``, ``.obj``, ``.stl`` (ascii and binary); meshes are sampled uniformly over
their surface (area-weighted triangles, uniform barycentric coordinates) and come back with the
face normals.

Every reader returns float32 ``(N, 3)`` (xyz) or ``(N, 6)`` (xyz + normals) arrays checked by
:func:`validate_points`.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

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

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}
_NORMAL_NAMES = (("nx", "ny", "nz"), ("normal_x", "normal_y", "normal_z"))
_LABEL_NAMES = ("label", "labels", "class", "part", "scalar_label")

logger = logging.getLogger(__name__)

Labels = Optional[np.ndarray]


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
    path: PathLike, num_mesh_points: int = 10_000, seed: int = 0, dtype: DTypeLike = np.float32
) -> np.ndarray:
    """Read a point cloud (or sample a mesh) from ``path``.

    Args:
        path: a file with one of :data:`SUPPORTED_SUFFIXES`.
        num_mesh_points: number of points sampled on the surface of a mesh file.
        seed: seed of the mesh surface sampling.
        dtype: float32, or float64 to keep the detail of clouds far from the origin (e.g. lidar
            in UTM coordinates, where float32 steps are about 0.5 m).

    Returns:
        ``dtype`` ``(N, 3)``, or ``(N, 6)`` with normals (x y z nx ny nz) when the file has normals.
        Meshes always give ``(num_mesh_points, 6)`` with face normals.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: unknown suffix, malformed or truncated file, NaN values, empty cloud.
    """
    points, _ = _read(path, num_mesh_points, seed, dtype)
    return points


def read_labeled_point_cloud(
    path: PathLike, num_mesh_points: int = 10_000, seed: int = 0, dtype: DTypeLike = np.float32
) -> Tuple[np.ndarray, Labels]:
    """Read a point cloud and its per-point labels when the file carries them.

    Labels come from a PLY vertex property ``label``, a PCD field ``label``, a text file's 4th
    column after xyz (exactly 4 columns) or 7th after xyz + normals (exactly 7 columns), or the
    ``labels`` array of an ``.npz``.

    Returns:
        ``(points, labels)``: points as in :func:`read_point_cloud`, labels int64 ``(N,)`` or None.
    """
    return _read(path, num_mesh_points, seed, dtype)


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
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"No such point cloud file: {path}")
    if not path.is_file():
        raise ValueError(f"{path}: not a file")
    return path


def _read(path: PathLike, num_mesh_points: int, seed: int, dtype: DTypeLike) -> Tuple[np.ndarray, Labels]:
    path = _existing_file(path)
    suffix = path.suffix.lower()
    source = str(path)
    if suffix in MESH_SUFFIXES:
        vertices, faces = _parse(read_mesh, path)
        if len(faces) == 0:  # a mesh file holding vertices only is a point cloud
            return validate_points(vertices, source, dtype), None
        return sample_mesh_surface(vertices, faces, num_mesh_points, seed, source).astype(dtype, copy=False), None
    readers = {
        ".ply": _read_ply, ".pcd": _read_pcd, ".npy": _read_npy, ".npz": _read_npz,
        ".xyz": _read_text, ".txt": _read_text, ".csv": _read_text, ".pts": _read_text,
    }
    if suffix not in readers:
        raise ValueError(
            f"{path}: unsupported suffix {suffix!r}; supported: {', '.join(SUPPORTED_SUFFIXES)}"
        )
    points, labels = _parse(readers[suffix], path)
    points = validate_points(points, source, dtype)
    if labels is not None:
        labels = validate_labels(labels, len(points), source)
    return points, labels


def _count(token: str, what: str, path: Path) -> int:
    """A header's element count: a non-negative integer."""
    try:
        value = int(token)
    except ValueError:
        raise ValueError(f"{path}: {what} count {token!r} is not an integer") from None
    if value < 0:
        raise ValueError(f"{path}: {what} count is negative ({value})")
    return value


def _parse(reader: Callable[[Path], Any], path: Path) -> Any:
    """Run a format reader; any parsing failure becomes a ValueError that names the file."""
    kind = path.suffix.lower().lstrip(".").upper()
    try:
        return reader(path)
    except ValueError as error:  # includes UnicodeDecodeError
        if str(path) in str(error):
            raise
        raise ValueError(f"{path}: malformed {kind} file ({error})") from error
    except (IndexError, KeyError, TypeError, OverflowError, EOFError) as error:
        raise ValueError(f"{path}: malformed {kind} file ({type(error).__name__}: {error})") from error


def _columns(named: Dict[str, np.ndarray], source: str) -> Tuple[np.ndarray, Labels]:
    """Assemble ``(N, 3|6)`` points and optional labels from named columns (PLY / PCD fields)."""
    missing = [name for name in ("x", "y", "z") if name not in named]
    if missing:
        raise ValueError(f"{source}: no {'/'.join(missing)} field; found {', '.join(named) or 'none'}")
    columns = [named["x"], named["y"], named["z"]]
    for names in _NORMAL_NAMES:
        if all(name in named for name in names):
            columns += [named[name] for name in names]
            break
    points = np.stack([np.asarray(c, dtype=np.float64) for c in columns], axis=1)
    label_name = next((name for name in _LABEL_NAMES if name in named), None)
    labels = named[label_name] if label_name else None
    return points, labels


def _read_binary_columns(
    path: Path, dtype: np.dtype, count: int, offset: int, fmt: str, records: str
) -> Tuple[np.ndarray, Labels]:
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
    return _columns({name: table[name] for name in dtype.names}, str(path))


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


def _read_ply(path: Path) -> Tuple[np.ndarray, Labels]:
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

    if fmt == "ascii":
        with open(path, "rb") as handle:
            handle.seek(body_offset)
            lines = handle.read().decode("latin-1").splitlines()
        skip = sum(n for _, n, _ in elements[:vertex_index])
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
        return _columns(named, str(path))

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


def _read_pcd(path: Path) -> Tuple[np.ndarray, Labels]:
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
    dtype_fields = []
    for name, size, kind, n in zip(fields, sizes, types, counts):
        key = (kind.upper(), int(size))
        if key not in _PCD_TYPES:
            raise ValueError(f"{path}: unsupported PCD field type {kind}{size} for {name!r}")
        n = int(n)
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
        with open(path, "rb") as handle:
            handle.seek(body_offset)
            text = handle.read().decode("latin-1")
        width = sum(int(n) for n in counts)
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
        return _columns(named, str(path))
    if data_kind == "binary":
        return _read_binary_columns(path, dtype, count, body_offset, "PCD", "points")
    if data_kind == "binary_compressed":
        return _columns(_read_pcd_compressed(path, body_offset, dtype, count), str(path))
    raise ValueError(f"{path}: unknown PCD DATA {data_kind!r}; expected ascii, binary or binary_compressed")


def _read_pcd_compressed(path: Path, offset: int, dtype: np.dtype, count: int) -> Dict[str, np.ndarray]:
    """Decode ``DATA binary_compressed``: LZF-compressed, fields stored one after another."""
    with open(path, "rb") as handle:
        handle.seek(offset)
        sizes = np.frombuffer(handle.read(8), dtype="<u4")
        if len(sizes) < 2:
            raise ValueError(f"{path}: truncated compressed PCD")
        compressed = handle.read(int(sizes[0]))
    if len(compressed) < sizes[0]:
        raise ValueError(f"{path}: truncated compressed PCD, expected {sizes[0]} compressed bytes")
    raw = _lzf_decompress(compressed, int(sizes[1]), path)
    named, start = {}, 0
    for name in dtype.names:
        field = dtype.fields[name][0]
        nbytes = field.itemsize * count
        named[name] = np.frombuffer(raw, dtype=field, count=count, offset=start)
        start += nbytes
    return named


def _lzf_decompress(data: bytes, size: int, path: Path) -> bytes:
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        ctrl = data[i]
        i += 1
        if ctrl < 32:  # literal run of ctrl + 1 bytes
            out += data[i: i + ctrl + 1]
            i += ctrl + 1
        else:  # back reference
            length = ctrl >> 5
            if length == 7:
                length += data[i]
                i += 1
            ref = len(out) - ((ctrl & 0x1F) << 8) - data[i] - 1
            i += 1
            length += 2
            if ref < 0:
                raise ValueError(f"{path}: corrupt compressed PCD data")
            if ref + length <= len(out):
                out += out[ref: ref + length]
            else:  # overlapping copy repeats the pattern
                for k in range(length):
                    out.append(out[ref + k])
    if len(out) != size:
        raise ValueError(f"{path}: corrupt compressed PCD data ({len(out)} bytes, expected {size})")
    return bytes(out)


# --------------------------------------------------------------------------- text and numpy

_NUMBER = re.compile(r"^[\s,;]*[-+]?(\d|\.\d|nan|inf)", re.IGNORECASE)


def _read_text(path: Path) -> Tuple[np.ndarray, Labels]:
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
        raise ValueError(f"{path}: malformed rows: {error}") from None
    if table.size == 0:
        raise ValueError(f"{path}: empty cloud (no data rows)")
    columns = table.shape[1]
    if columns not in TEXT_LAYOUTS:
        layouts = "; ".join(f"{n} ({layout})" for n, layout in TEXT_LAYOUTS.items())
        raise ValueError(f"{path}: rows have {columns} columns; expected {layouts}")
    width = 6 if columns >= 6 else 3
    points, labels = table[:, :width], None
    if columns > width:
        extra = table[:, width]
        if np.isfinite(extra).all() and (extra == np.round(extra)).all():
            labels = extra
        else:
            logger.warning("%s: last column is not integer, ignored as a label", path)
    return points, labels


def _read_npy(path: Path) -> Tuple[np.ndarray, Labels]:
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise ValueError(f"{path}: not a readable .npy file ({error})") from None
    return _point_columns(array, str(path)), None


def _read_npz(path: Path) -> Tuple[np.ndarray, Labels]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (ValueError, OSError, EOFError) as error:
        raise ValueError(f"{path}: not a readable .npz file ({error})") from None
    if "points" in arrays:
        points = arrays["points"]
        if "normals" in arrays and np.ndim(points) == 2 and points.shape[1] == 3:
            points = np.concatenate([points, arrays["normals"]], axis=1)
    elif len(arrays) == 1:
        points = next(iter(arrays.values()))
    else:
        raise ValueError(
            f"{path}: .npz has no 'points' array and "
            + (f"several arrays ({', '.join(arrays)}); " if arrays else "no arrays at all; ")
            + "name the cloud 'points'"
        )
    labels = arrays.get("labels")
    return _point_columns(points, str(path)), labels


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
