"""Tests for pointea.data.io: round-trips, real-format files, mesh sampling and bad input."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import tracemalloc
import zipfile
import zlib

import numpy as np
import pytest

from pointea.data.io import (
    MAX_POINTS,
    SUPPORTED_SUFFIXES,
    read_labeled_cloud,
    read_labeled_point_cloud,
    read_mesh,
    read_point_cloud,
    sample_mesh_surface,
    validate_points,
    validate_labels,
    write_point_cloud,
)

def _cloud(n: int = 200, normals: bool = False, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    xyz = rng.normal(size=(n, 3)).astype(np.float32)
    if not normals:
        return xyz
    nrm = rng.normal(size=(n, 3))
    nrm /= np.linalg.norm(nrm, axis=1, keepdims=True)
    return np.concatenate([xyz, nrm.astype(np.float32)], axis=1)


@pytest.fixture(scope="module")
def o3d():
    """Open3D, only to write reference files in the formats it produces."""
    try:
        import ctypes

        import libusb_package

        ctypes.CDLL(str(libusb_package.get_library_path()), mode=ctypes.RTLD_GLOBAL)
        import open3d
    except (ImportError, OSError) as error:
        pytest.skip(f"open3d not usable here: {error}")
    return open3d


# Unit cube [0, 1]^3 as 8 vertices and 6 quads (outward winding).
CUBE_VERTICES = np.array(
    [[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1], [1, 0, 1], [1, 1, 1], [0, 1, 1]], float
)
CUBE_QUADS = [[0, 3, 2, 1], [4, 5, 6, 7], [0, 1, 5, 4], [2, 3, 7, 6], [1, 2, 6, 5], [0, 4, 7, 3]]


def _check_box_sampling(points: np.ndarray, size=(1.0, 1.0, 1.0), outward: bool = True) -> None:
    """Points lie on the box surface, face counts follow face areas, normals are face normals."""
    size = np.asarray(size)
    xyz, normals = points[:, :3].astype(np.float64), points[:, 3:6]
    assert (xyz >= -1e-5).all() and (xyz <= size + 1e-5).all()
    on_face = (np.abs(xyz) < 1e-5) | (np.abs(xyz - size) < 1e-5)  # (N, 3)
    assert on_face.any(axis=1).all(), "a sample is off the surface"
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-5)
    # The normal is along the axis of the face the point lies on, pointing outwards.
    axis = np.abs(normals).argmax(axis=1)
    assert on_face[np.arange(len(xyz)), axis].all()
    if outward:
        sign = np.sign(normals[np.arange(len(xyz)), axis])
        at_max = np.abs(xyz[np.arange(len(xyz)), axis] - size[axis]) < 1e-5
        assert (sign[at_max] > 0).all() and (sign[~at_max] < 0).all()
    # Area-proportional: each pair of faces of one axis gets its share of the samples.
    areas = np.array([size[1] * size[2], size[0] * size[2], size[0] * size[1]])
    expected = areas / areas.sum() / 2  # per face
    N = len(points)
    for k in range(3):
        for at_max in (False, True):
            face = np.abs(xyz[:, k] - (size[k] if at_max else 0.0)) < 1e-5
            face &= axis == k
            share = face.sum() / N
            assert abs(share - expected[k]) < 4 * np.sqrt(expected[k] / N) + 1e-3, (k, at_max, share)


# --------------------------------------------------------------------------- validate_points

def test_validate_points_errors_name_source_and_problem():
    with pytest.raises(ValueError, match=r"src\.ply.*2-D"):
        validate_points(np.zeros(3), "src.ply")
    with pytest.raises(ValueError, match=r"src\.ply.*at least 3 columns"):
        validate_points(np.zeros((4, 2)), "src.ply")
    with pytest.raises(ValueError, match=r"src\.ply.*empty cloud"):
        validate_points(np.zeros((0, 3)), "src.ply")
    bad = np.zeros((10, 3))
    bad[2, 0], bad[7, 1] = np.nan, np.inf
    with pytest.raises(ValueError, match=r"src\.ply: 2 of 10 rows contain NaN or inf \(first at row 2\)"):
        validate_points(bad, "src.ply")
    out = validate_points(np.ones((4, 6), dtype=np.float64), "x")
    assert out.dtype == np.float32 and out.shape == (4, 6) and out.flags.c_contiguous
    with pytest.raises(ValueError, match=r"src\.ply: coordinates up to 3e\+39 exceed the float32 range"):
        validate_points(np.full((4, 3), 3e39), "src.ply")


def test_float64_reading_keeps_the_detail_of_far_off_clouds(tmp_path):
    cloud = _cloud(50).astype(np.float64) * 0.01 + [4.5e6, 5.3e6, 0.0]  # centimetre detail, UTM-sized
    np.savetxt(tmp_path / "utm.xyz", cloud, fmt="%.6f")
    precise = read_point_cloud(tmp_path / "utm.xyz", dtype=np.float64)
    assert precise.dtype == np.float64
    np.testing.assert_allclose(precise, cloud, rtol=0, atol=1e-6)
    coarse = read_point_cloud(tmp_path / "utm.xyz")
    assert coarse.dtype == np.float32 and len(np.unique(coarse[:, 0])) < len(np.unique(precise[:, 0]))


# --------------------------------------------------------------------------- round-trips

@pytest.mark.parametrize("suffix", [".ply", ".npy", ".npz", ".xyz", ".txt", ".csv"])
@pytest.mark.parametrize("normals", [False, True])
def test_write_read_round_trip(tmp_path, suffix, normals):
    points = _cloud(normals=normals)
    path = tmp_path / f"cloud{suffix}"
    write_point_cloud(path, points)
    back = read_point_cloud(path)
    assert back.dtype == np.float32 and back.shape == points.shape
    np.testing.assert_allclose(back, points, rtol=1e-6, atol=1e-6)
    assert list(tmp_path.iterdir()) == [path], "atomic write left a temporary file"


@pytest.mark.parametrize("suffix", [".ply", ".npz", ".xyz", ".csv"])
@pytest.mark.parametrize("normals", [False, True])
def test_labels_round_trip(tmp_path, suffix, normals):
    points = _cloud(normals=normals)
    labels = np.arange(len(points)) % 7
    path = tmp_path / f"cloud{suffix}"
    write_point_cloud(path, points, labels=labels)
    back, back_labels = read_labeled_point_cloud(path)
    np.testing.assert_allclose(back, points, rtol=1e-6, atol=1e-6)
    assert back_labels.dtype == np.int64
    np.testing.assert_array_equal(back_labels, labels)


def test_ply_colors_and_labels_header(tmp_path):
    points = _cloud(50, normals=True)
    colors = np.linspace(0, 1, 150).reshape(50, 3)
    path = tmp_path / "c.ply"
    write_point_cloud(path, points, colors=colors, labels=np.ones(50, int))
    header = path.read_bytes().split(b"end_header\n")[0].decode()
    assert "format binary_little_endian 1.0" in header
    for line in ("property float x", "property float nz", "property uchar red",
                 "property uchar blue", "property int label", "element vertex 50"):
        assert line in header
    body = path.read_bytes().split(b"end_header\n", 1)[1]
    assert len(body) == 50 * (6 * 4 + 3 + 4)
    table = np.frombuffer(body, dtype=[("p", "<f4", 6), ("c", "u1", 3), ("l", "<i4")])
    np.testing.assert_array_equal(table["c"], np.round(colors * 255).astype(np.uint8))
    np.testing.assert_array_equal(read_point_cloud(path), points)


def test_write_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match=r"out\.pcd.*supported: .ply"):
        write_point_cloud(tmp_path / "out.pcd", _cloud())
    with pytest.raises(ValueError, match="labels"):
        write_point_cloud(tmp_path / "out.npy", _cloud(), labels=np.zeros(200, int))
    with pytest.raises(ValueError, match=r"colors must have shape \(200, 3\)"):
        write_point_cloud(tmp_path / "out.ply", _cloud(), colors=np.zeros((3, 3), np.uint8))
    with pytest.raises(ValueError, match=r"3 labels for 200 points"):
        write_point_cloud(tmp_path / "out.ply", _cloud(), labels=np.zeros(3, int))
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- files as others write them

@pytest.mark.parametrize("suffix,kwargs", [
    (".ply", dict(write_ascii=True)),
    (".ply", dict(write_ascii=False)),
    (".pcd", dict(write_ascii=True)),
    (".pcd", dict(write_ascii=False)),
    (".pcd", dict(write_ascii=False, compressed=True)),
])
@pytest.mark.parametrize("normals", [False, True])
def test_reads_open3d_point_clouds(tmp_path, o3d, suffix, kwargs, normals):
    points = _cloud(500, normals=normals)
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points[:, :3].astype(np.float64)))
    if normals:
        cloud.normals = o3d.utility.Vector3dVector(points[:, 3:].astype(np.float64))
    path = tmp_path / f"o3d{suffix}"
    assert o3d.io.write_point_cloud(str(path), cloud, **kwargs)
    back = read_point_cloud(path)
    assert back.shape == points.shape
    np.testing.assert_allclose(back, points, atol=1e-5)


@pytest.mark.parametrize("suffix", [".off", ".obj", ".stl", ".ply"])
def test_reads_open3d_meshes(tmp_path, o3d, suffix):
    box = o3d.geometry.TriangleMesh.create_box(1.0, 2.0, 3.0)
    box.compute_triangle_normals()
    box.compute_vertex_normals()
    path = tmp_path / f"box{suffix}"
    assert o3d.io.write_triangle_mesh(str(path), box)
    points = read_point_cloud(path, num_mesh_points=6000)
    if suffix == ".ply":  # a PLY mesh is read as its vertices
        assert points.shape == (8, 6)
        return
    assert points.shape == (6000, 6)
    _check_box_sampling(points, size=(1.0, 2.0, 3.0))


def test_binary_big_endian_ply_with_extra_properties_and_faces(tmp_path):
    points = _cloud(20)
    header = (
        "ply\nformat binary_big_endian 1.0\ncomment made by hand\nobj_info test\n"
        "element vertex 20\nproperty double x\nproperty double y\nproperty double z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\nproperty ushort label\n"
        "element face 1\nproperty list uchar int vertex_indices\nend_header\n"
    )
    table = np.zeros(20, dtype=[("x", ">f8"), ("y", ">f8"), ("z", ">f8"), ("rgb", "u1", 3), ("l", ">u2")])
    table["x"], table["y"], table["z"] = points.T
    table["l"] = np.arange(20) + 300
    face = struct.pack(">Biii", 3, 0, 1, 2)
    path = tmp_path / "be.ply"
    path.write_bytes(header.encode() + table.tobytes() + face)
    back, labels = read_labeled_point_cloud(path)
    np.testing.assert_allclose(back, points, atol=1e-6)
    np.testing.assert_array_equal(labels, np.arange(20) + 300)


def test_ascii_ply_with_element_before_vertex_and_labels(tmp_path):
    path = tmp_path / "a.ply"
    path.write_text(
        "ply\nformat ascii 1.0\nelement camera 1\nproperty float fov\nelement vertex 3\n"
        "property float x\nproperty float y\nproperty float z\nproperty int label\nend_header\n"
        "60\n0 0 0 4\n1 0 0 5\n0 1 0 6\n"
    )
    points, labels = read_labeled_point_cloud(path)
    np.testing.assert_array_equal(points, [[0, 0, 0], [1, 0, 0], [0, 1, 0]])
    np.testing.assert_array_equal(labels, [4, 5, 6])


def test_pcd_ascii_with_label_field(tmp_path):
    path = tmp_path / "l.pcd"
    path.write_text(
        "# .PCD v0.7\nVERSION 0.7\nFIELDS x y z rgb label\nSIZE 4 4 4 4 4\nTYPE F F F F U\n"
        "COUNT 1 1 1 1 1\nWIDTH 2\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS 2\nDATA ascii\n"
        "1 2 3 0 7\n4 5 6 0 8\n"
    )
    points, labels = read_labeled_point_cloud(path)
    np.testing.assert_array_equal(points, [[1, 2, 3], [4, 5, 6]])
    np.testing.assert_array_equal(labels, [7, 8])


def test_text_variants(tmp_path):
    csv = tmp_path / "h.csv"
    csv.write_text("# exported\nx,y,z,nx,ny,nz\n1,2,3,0,0,1\n4,5,6,0,1,0\n")
    np.testing.assert_array_equal(read_point_cloud(csv), [[1, 2, 3, 0, 0, 1], [4, 5, 6, 0, 1, 0]])
    four = tmp_path / "l.txt"
    four.write_text("0 0 0 2\n1 1 1 3\n")
    points, labels = read_labeled_point_cloud(four)
    assert points.shape == (2, 3)
    np.testing.assert_array_equal(labels, [2, 3])
    seven = tmp_path / "l7.xyz"
    seven.write_text("0 0 0 0 0 1 5\n1 1 1 0 1 0 9\n")
    points, labels = read_labeled_point_cloud(seven)
    assert points.shape == (2, 6)
    np.testing.assert_array_equal(labels, [5, 9])
    long_preamble = tmp_path / "c.txt"
    long_preamble.write_text("# comment\n" * 80 + "\n1 2 3\n")
    np.testing.assert_array_equal(read_point_cloud(long_preamble), [[1, 2, 3]])


def test_npz_points_normals_and_single_array(tmp_path):
    points = _cloud(30, normals=True)
    path = tmp_path / "n.npz"
    np.savez(path, points=points[:, :3], normals=points[:, 3:], labels=np.arange(30))
    back, labels = read_labeled_point_cloud(path)
    np.testing.assert_array_equal(back, points)
    np.testing.assert_array_equal(labels, np.arange(30))
    single = tmp_path / "s.npz"
    np.savez(single, cloud=np.hstack([points, np.zeros((30, 2))]))
    np.testing.assert_array_equal(read_point_cloud(single), points)


# --------------------------------------------------------------------------- meshes

def test_off_glued_header_comments_and_quads(tmp_path):
    lines = ["OFF8 6 0   # ModelNet-style header", "# a comment line"]
    lines += [" ".join(map(str, v)) for v in CUBE_VERTICES]
    lines += ["4 " + " ".join(map(str, q)) for q in CUBE_QUADS]
    path = tmp_path / "cube.off"
    path.write_text("\n".join(lines) + "\n")
    vertices, faces = read_mesh(path)
    assert vertices.shape == (8, 3) and faces.shape == (12, 3)
    _check_box_sampling(read_point_cloud(path, num_mesh_points=12_000))


def test_off_mixed_polygons_and_separate_counts_line(tmp_path):
    # A square pyramid: one quad base and four triangles, counts on their own line.
    path = tmp_path / "pyr.off"
    path.write_text("OFF\n5 5 8\n0 0 0\n1 0 0\n1 1 0\n0 1 0\n0.5 0.5 1\n"
                    "4 0 3 2 1\n3 0 1 4\n3 1 2 4\n3 2 3 4\n3 3 0 4\n")
    vertices, faces = read_mesh(path)
    assert faces.shape == (6, 3)
    points = read_point_cloud(path, num_mesh_points=2000)
    assert points.shape == (2000, 6)
    assert (points[:, 2] >= -1e-6).all() and (points[:, 2] <= 1 + 1e-6).all()


def test_obj_slashes_and_negative_indices(tmp_path):
    lines = ["# cube", "o cube", "mtllib none.mtl"]
    lines += ["v " + " ".join(map(str, v)) for v in CUBE_VERTICES]
    lines += ["vt 0 0", "vn 0 0 1", "s off"]
    for i, quad in enumerate(CUBE_QUADS):
        if i % 2:  # negative indices count back from the last vertex
            tokens = [str(q - 8) for q in quad]
        else:
            tokens = [f"{q + 1}/1/1" for q in quad]
        lines.append("f " + " ".join(tokens))
    path = tmp_path / "cube.obj"
    path.write_text("\n".join(lines) + "\n")
    _check_box_sampling(read_point_cloud(path, num_mesh_points=12_000))


def _cube_triangles() -> np.ndarray:
    tris = [[q[0], q[k], q[k + 1]] for q in CUBE_QUADS for k in (1, 2)]
    return CUBE_VERTICES[np.array(tris)]  # (12, 3, 3)


def test_stl_binary_and_ascii(tmp_path):
    corners = _cube_triangles()
    record = np.zeros(12, dtype=[("n", "<f4", 3), ("v", "<f4", (3, 3)), ("a", "<u2")])
    record["v"] = corners
    binary = tmp_path / "cube_bin.stl"
    # A binary header that starts with "solid" must not fool the reader.
    binary.write_bytes(b"solid binary header".ljust(80, b" ") + struct.pack("<I", 12) + record.tobytes())
    _check_box_sampling(read_point_cloud(binary, num_mesh_points=12_000))

    lines = ["solid cube"]
    for tri in corners:
        lines += ["  facet normal 0 0 0", "    outer loop"]
        lines += [f"      vertex {x:e} {y:e} {z:e}" for x, y, z in tri]
        lines += ["    endloop", "  endfacet"]
    lines.append("endsolid cube")
    ascii_path = tmp_path / "cube_ascii.stl"
    ascii_path.write_text("\n".join(lines) + "\n")
    _check_box_sampling(read_point_cloud(ascii_path, num_mesh_points=12_000))
    np.testing.assert_array_equal(read_point_cloud(ascii_path, 500, seed=3),
                                  read_point_cloud(binary, 500, seed=3))


def test_sample_mesh_surface_is_uniform_inside_a_triangle():
    vertices = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], float)
    points = sample_mesh_surface(vertices, np.array([[0, 1, 2]]), 20_000, seed=1)
    x, y = points[:, 0], points[:, 1]
    assert (x >= 0).all() and (y >= 0).all() and (x + y <= 1 + 1e-6).all()
    # The centroid of a uniform triangle is the mean of its corners; the half below x + y = 1/2
    # holds 1/4 of the area.
    np.testing.assert_allclose([x.mean(), y.mean()], [1 / 3, 1 / 3], atol=0.01)
    assert abs(((x + y) < 0.5).mean() - 0.25) < 0.015
    np.testing.assert_allclose(points[:, 3:], np.tile([0, 0, 1], (20_000, 1)))


def test_mesh_sampling_is_seeded(tmp_path):
    path = tmp_path / "cube.off"
    path.write_text("OFF\n8 6 0\n" + "\n".join(" ".join(map(str, v)) for v in CUBE_VERTICES)
                    + "\n" + "\n".join("4 " + " ".join(map(str, q)) for q in CUBE_QUADS) + "\n")
    a, b = read_point_cloud(path, 100, seed=5), read_point_cloud(path, 100, seed=5)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, read_point_cloud(path, 100, seed=6))


# --------------------------------------------------------------------------- bad input

def test_missing_file_and_unknown_suffix(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.ply"):
        read_point_cloud(tmp_path / "nothere.ply")
    path = tmp_path / "cloud.las"
    path.write_bytes(b"LASF")
    with pytest.raises(ValueError, match=r"cloud\.las.*'\.las'.*supported: \.ply, \.pcd") as info:
        read_point_cloud(path)
    for suffix in SUPPORTED_SUFFIXES:
        assert suffix in str(info.value)


@pytest.mark.parametrize("content,message", [
    ("1 2 3 4 5\n6 7 8 9 10\n", r"5 columns; expected 3 \(x y z\)"),
    # Ragged and non-numeric rows: the file's own line number, not numpy's `usecols` advice.
    ("1 2 3\n4 5 6\n7 8\n", r"malformed rows: line 3 has 2 columns, expected 3 as on line 1$"),
    ("# scan\nx y z\n\n1 2 3\n4 5 6 7\n", r"malformed rows: line 5 has 4 columns, expected 3 as on line 4$"),
    ("1,2,3\n4,abc,6\n", r"malformed rows: line 2: 'abc' is not a number$"),
    # A 4th or 7th column is a label: it must hold integers, like any layout outside 3/4/6/7 fails.
    ("0 0 0 2\n1 1 1 0.25\n", r"column 4 is a label and must hold integers, data row 2 has 0.25; "
                                r"expected 3 \(x y z\); 4 \(x y z label\); 6 .*; 7 \(x y z nx ny nz label\)$"),
    ("0 0 0 0 0 1 1.5\n", r"column 7 is a label and must hold integers, data row 1 has 1.5"),
    ("0 0 0 nan\n", r"column 4 is a label and must hold integers, data row 1 has nan"),
    ("1 2 3\nnan 5 6\n7 8 9\n", r"1 of 3 rows contain NaN"),
    ("# nothing\n", r"empty cloud"),
    ("", r"empty cloud"),
    ("x y z\n", r"empty cloud"),
])
def test_bad_text_files(tmp_path, content, message):
    path = tmp_path / "bad.xyz"
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as info:
        read_point_cloud(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    assert "usecols" not in str(info.value)


@pytest.mark.parametrize("name, content", [
    ("short.ply", b"ply\nformat ascii 1.0\nelement vertex 1\nproperty\nend_header\n1 2 3\n"),
    ("count.ply", b"ply\nformat ascii 1.0\nelement vertex abc\nproperty float x\nend_header\n"),
    ("negative.ply", b"ply\nformat binary_little_endian 1.0\nelement vertex -1\nproperty float x\n"
                     b"property float y\nproperty float z\nend_header\n" + bytes(24)),
    ("fraction.off", b"OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 1.7\n"),
    ("negative.off", b"OFF\n-3 1 0\n0 0 0\n"),
    ("count.pcd", b"FIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nPOINTS abc\nDATA ascii\n1 2 3\n"),
    # binary_compressed: a back reference (control byte 0x20) whose offset byte is missing
    ("backref.pcd", b"FIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH 1\nHEIGHT 1\nPOINTS 1\n"
                    b"DATA binary_compressed\n" + struct.pack("<II", 1, 12) + b"\x20"),
])
def test_malformed_headers_and_data_name_the_file(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ValueError, match=rf"{name.replace('.', '[.]')}: .*(malformed|corrupt|truncated|count|negative)"):
        read_point_cloud(path)


def test_truncated_binary_files(tmp_path, o3d):
    points = _cloud(100, normals=True)
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points[:, :3].astype(np.float64)))
    for suffix in (".ply", ".pcd"):
        path = tmp_path / f"t{suffix}"
        o3d.io.write_point_cloud(str(path), cloud, write_ascii=False)
        path.write_bytes(path.read_bytes()[:-10])
        with pytest.raises(ValueError, match=rf"t\{suffix}: truncated binary"):
            read_point_cloud(path)
    stl = tmp_path / "t.stl"
    stl.write_bytes(b"\0" * 80 + struct.pack("<I", 12) + b"\0" * 100)
    with pytest.raises(ValueError, match=r"t\.stl: truncated binary STL, 12 triangles need 684 bytes"):
        read_point_cloud(stl)


def test_malformed_meshes(tmp_path):
    off = tmp_path / "short.off"
    off.write_text("OFF\n8 6 0\n0 0 0\n1 0 0\n")
    with pytest.raises(ValueError, match=r"short\.off: truncated OFF"):
        read_point_cloud(off)
    obj = tmp_path / "range.obj"
    obj.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 9\n")
    with pytest.raises(ValueError, match=r"range\.obj: face vertex index out of range"):
        read_point_cloud(obj)
    flat = tmp_path / "flat.obj"
    flat.write_text("v 0 0 0\nv 1 0 0\nv 2 0 0\nf 1 2 3\n")
    with pytest.raises(ValueError, match=r"flat\.obj: the mesh has no surface area"):
        read_point_cloud(flat)
    not_ply = tmp_path / "x.ply"
    not_ply.write_text("hello\n")
    with pytest.raises(ValueError, match=r"x\.ply: not a PLY file"):
        read_point_cloud(not_ply)


def test_vertex_only_mesh_file_is_a_point_cloud(tmp_path):
    path = tmp_path / "pts.obj"
    path.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\n")
    np.testing.assert_array_equal(read_point_cloud(path), [[0, 0, 0], [1, 0, 0], [0, 1, 0]])


def test_import_does_not_load_open3d_or_torch():
    code = "import sys, pointea.data.io, pointea.viz; print('open3d' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"


def test_dataset_classes_load_on_first_use():
    import pointea.data
    from pointea.data import SHAPENETPART_CATEGORY_PARTS, ModelNet40, SyntheticShapes

    assert ModelNet40.__module__ == "pointea.data.modelnet" and SyntheticShapes.__name__ == "SyntheticShapes"
    assert len(SHAPENETPART_CATEGORY_PARTS) == 16
    with pytest.raises(AttributeError, match="no attribute 'ModelNet41'"):
        getattr(pointea.data, "ModelNet41")


@pytest.mark.realdata("modelnet40_normal_resampled")
def test_reads_real_modelnet_text_file(shared_data):
    folder = shared_data / "modelnet40_normal_resampled"
    path = next(folder.glob("*/*_*.txt"))
    points = read_point_cloud(path)
    assert points.shape == (10_000, 6)
    np.testing.assert_allclose(np.linalg.norm(points[:, 3:], axis=1), 1.0, atol=1e-3)


def test_validate_labels_accepts_columns_and_whole_floats_and_names_the_source():
    np.testing.assert_array_equal(validate_labels(np.array([[1], [2], [0]]), 3, "a.txt"), [1, 2, 0])
    assert validate_labels(np.array([1.0, 2.0]), 2, "a.txt").dtype == np.int64
    with pytest.raises(ValueError, match=r"a\.txt: 2 labels for 3 points \(expected shape \(3,\), got \(2,\)\)"):
        validate_labels(np.array([1, 2]), 3, "a.txt")
    with pytest.raises(ValueError, match=r"a\.txt: 4 labels for 4 points .*got \(2, 2\)"):
        validate_labels(np.zeros((2, 2), dtype=np.int64), 4, "a.txt")
    with pytest.raises(ValueError, match=r"a\.txt: labels must be integers$"):
        validate_labels(np.array([0.5, 1.0]), 2, "a.txt")
    with pytest.raises(ValueError, match=r"a\.txt: labels must be integers, got dtype <U1"):
        validate_labels(np.array(["a", "b"]), 2, "a.txt")


# --------------------------------------------------------------------------- hostile files

def _refused_cheaply(path, match, reader=read_point_cloud, **kwargs) -> None:
    """``path`` is refused by a one-line ValueError naming it, before allocating what it claims."""
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=match) as info:
            reader(path, **kwargs)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message
    assert "allow_pickle" not in message and "usecols" not in message
    assert peak < 2 << 20, f"{peak} bytes allocated before refusing {path.name}"


def _npy_bytes(shape, descr: str = "<f4", data: bytes = b"") -> bytes:
    """A .npy header declaring ``shape``, followed by ``data`` whatever its length."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue() + data


def test_npy_declaring_more_than_the_file_holds_is_refused_before_allocating(tmp_path):
    huge = tmp_path / "huge.npy"
    huge.write_bytes(_npy_bytes((10**11, 3), data=bytes(64)))
    assert huge.stat().st_size == 192
    _refused_cheaply(huge, r"huge\.npy: \.npy header declares 100000000000 points, more than the limit "
                           r"of 100000000 \(pass max_points= to read bigger clouds\)$")
    short = tmp_path / "short.npy"
    short.write_bytes(_npy_bytes((1_000_000, 3), data=bytes(64)))
    _refused_cheaply(short, r"short\.npy: \.npy header declares shape \(1000000, 3\) of float32 "
                            r"\(12000000 bytes\), but 64 bytes follow the header$")
    header = tmp_path / "header.npy"  # a version 2.0 header claiming 4 GB of header text
    header.write_bytes(b"\x93NUMPY\x02\x00" + struct.pack("<I", 2**32 - 1) + b"{'descr'")
    _refused_cheaply(header, r"header\.npy: truncated or oversized \.npy header \(4294967295 bytes declared\)$")


@pytest.mark.parametrize("content", [
    b"this is no numpy file, and no pickle either",
    b"\x80\x04\x95",  # the start of a pickle
])
def test_garbage_npy_is_not_an_array_of_numbers(tmp_path, content):
    path = tmp_path / "x.npy"
    path.write_bytes(content)
    _refused_cheaply(path, r"x\.npy: not a NumPy array file of numbers \(object/pickled arrays are not read\)$")


def test_object_arrays_are_refused_without_suggesting_allow_pickle(tmp_path):
    objects = np.array([{"x": 1.0}, None], dtype=object)
    npy = tmp_path / "o.npy"
    np.save(npy, objects, allow_pickle=True)
    _refused_cheaply(npy, r"o\.npy: not a NumPy array file of numbers \(dtype object; object/pickled")
    npz = tmp_path / "o.npz"
    np.savez(npz, points=objects)
    _refused_cheaply(npz, r"o\.npz \(array 'points'\): not a NumPy array file of numbers \(dtype object")


def _zip_member(path, data: bytes, declared_size=None, name: str = "points.npy") -> None:
    """A deflated one-member zip; ``declared_size`` overwrites the size its central directory states
    (and the CRC, to that of the declared bytes, so that the lie is consistent)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, data)
    if declared_size is not None:
        raw = bytearray(path.read_bytes())
        at = raw.index(b"PK\x01\x02")  # central directory entry: CRC at +16, uncompressed size at +24
        raw[at + 16: at + 20] = struct.pack("<I", zlib.crc32(data[:declared_size]))
        raw[at + 24: at + 28] = struct.pack("<I", declared_size)
        path.write_bytes(bytes(raw))


def test_npz_bomb_is_refused_before_inflating(tmp_path):
    # A member whose header claims 125 M points (1.5 GB) in a file of a few hundred bytes.
    claim = tmp_path / "claim.npz"
    _zip_member(claim, _npy_bytes((125_000_000, 3), data=bytes(64)))
    _refused_cheaply(claim, r"claim\.npz \(array 'points'\): \.npy header declares 125000000 points, "
                            r"more than the limit of 100000000")
    # A real deflate bomb: 24 MB of zeros in about 24 kB, above the caller's limit.
    bomb = tmp_path / "bomb.npz"
    np.savez_compressed(bomb, points=np.zeros((2_000_000, 3), np.float32))
    assert bomb.stat().st_size < 100_000
    _refused_cheaply(bomb, r"bomb\.npz \(array 'points'\): .*declares 2000000 points, more than the limit of 1000000",
                     max_points=1_000_000)


def test_npz_member_sizes_must_match_the_zip_entry(tmp_path):
    header = _npy_bytes((1000, 3))
    data = _cloud(1000).tobytes()
    small = tmp_path / "small.npz"  # the zip entry claims less than the array needs
    _zip_member(small, header + data, declared_size=len(header) + 120)
    _refused_cheaply(small, r"small\.npz \(array 'points'\): .*\(12000 bytes\), but 120 bytes follow the header$")
    trailing = tmp_path / "trailing.npz"  # bytes beyond the declared array are not silently skipped
    _zip_member(trailing, header + data + bytes(1 << 20))
    _refused_cheaply(trailing, r"trailing\.npz \(array 'points'\): .*\(12000 bytes\), but 1060576 bytes follow")
    # The zip entry claims more than its stream inflates to: reading stops, nothing is invented.
    large = tmp_path / "large.npz"
    _zip_member(large, _npy_bytes((1000, 3)) + data[:120], declared_size=len(header) + len(data))
    with pytest.raises(ValueError, match=r"large\.npz"):
        read_point_cloud(large)
    honest = tmp_path / "honest.npz"
    _zip_member(honest, header + data)
    np.testing.assert_array_equal(read_point_cloud(honest), _cloud(1000))


def _compressed_pcd(points: int, packed: bytes, unpacked: int) -> bytes:
    header = ("VERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\n"
              f"WIDTH {points}\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS {points}\nDATA binary_compressed\n")
    return header.encode() + struct.pack("<II", len(packed), unpacked) + packed


# LZF: one zero byte as a literal, then back references of 264 bytes at distance 1 (3 bytes each).
_LZF_ZEROS = b"\x00\x00" + b"\xe0\xff\x00" * 20_000  # 60 kB inflating to 5.3 MB


def test_compressed_pcd_sizes_are_checked_before_decompressing(tmp_path):
    cases = {
        # the stream inflates far beyond the 12 bytes declared for one point: decoding stops there
        "overflow.pcd": (_compressed_pcd(1, _LZF_ZEROS, 12),
                         r"corrupt compressed PCD data \(inflates past its declared 12 bytes\)$"),
        "size.pcd": (_compressed_pcd(1, _LZF_ZEROS, 275_000_000),
                     r"compressed PCD declares 275000000 uncompressed bytes, but 1 points of 12 bytes take 12$"),
        "ratio.pcd": (_compressed_pcd(1_000_000, b"\x00\x00\xe0\xff\x00", 12_000_000),
                      r"corrupt compressed PCD, 5 compressed bytes cannot hold 12000000 "
                      r"\(LZF expands at most 88-fold\)$"),
        "packed.pcd": (_compressed_pcd(1, b"", 12)[:-8] + struct.pack("<II", 10**9, 12),
                       r"truncated compressed PCD, expected 1000000000 compressed bytes, file has 0$"),
        "limit.pcd": (_compressed_pcd(200_000_000, b"", 2_400_000_000),
                      r"PCD declares 200000000 points, more than the limit of 100000000"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        _refused_cheaply(path, rf"{name.replace('.', '[.]')}: {message}")


def test_compressed_pcd_overlapping_back_reference(tmp_path):
    # 1.0 as a 4-byte literal, then a back reference of 20 bytes at distance 4 repeating it.
    packed = b"\x03" + struct.pack("<f", 1.0) + b"\xe0\x0b\x03"
    path = tmp_path / "ones.pcd"
    path.write_bytes(_compressed_pcd(2, packed, 24))
    np.testing.assert_array_equal(read_point_cloud(path), np.ones((2, 3)))


_XYZ_PLY = "property float x\nproperty float y\nproperty float z\nend_header\n"
_XYZ_PCD = "FIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\n"


@pytest.mark.parametrize("name, content, message", [
    ("binary.ply", f"ply\nformat binary_little_endian 1.0\nelement vertex 50000000\n{_XYZ_PLY}".encode() + bytes(12),
     r"truncated binary PLY, 50000000 vertices need 600000\d+ bytes, file has \d+$"),
    ("before.ply", ("ply\nformat binary_little_endian 1.0\nelement junk 1000000000000\nproperty uchar a\n"
                    f"element vertex 1\n{_XYZ_PLY}").encode() + bytes(12),
     r"truncated binary PLY, 1 vertices need 1000000000\d+ bytes"),
    ("ascii.ply", f"ply\nformat ascii 1.0\nelement vertex 50000000\n{_XYZ_PLY}1 2 3\n".encode(),
     r"truncated PLY, 50000000 vertices of 3 values cannot fit in 6 bytes of ascii data$"),
    ("limit.ply", f"ply\nformat binary_big_endian 1.0\nelement vertex 100000000000\n{_XYZ_PLY}".encode(),
     r"PLY declares 100000000000 points, more than the limit of 100000000"),
    ("noxyz.ply", b"ply\nformat binary_little_endian 1.0\nelement vertex 100000\nend_header\n",
     r"no x/y/z field; found none$"),
    ("binary.pcd", f"{_XYZ_PCD}POINTS 50000000\nDATA binary\n".encode() + bytes(12),
     r"truncated binary PCD, 50000000 points need 600000\d\d\d bytes, file has \d+$"),
    ("wide.pcd", b"FIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 100000000\nPOINTS 1\nDATA binary\n" + bytes(12),
     r"truncated binary PCD, 1 points need 4000000\d+ bytes"),
    ("ascii.pcd", f"{_XYZ_PCD}POINTS 50000000\nDATA ascii\n1 2 3\n".encode(),
     r"truncated PCD, 50000000 points of 3 values cannot fit in 6 bytes of ascii data$"),
    ("grid.pcd", f"{_XYZ_PCD}WIDTH 1000000\nHEIGHT 1000000\nDATA binary\n".encode(),
     r"PCD declares 1000000000000 points, more than the limit"),
    ("counts.off", b"OFF\n50000000 1 0\n0 0 0\n", r"truncated OFF, expected 50000000 vertex and 1 face lines"),
    ("count.stl", bytes(80) + struct.pack("<I", 10**9) + bytes(50), r"truncated binary STL, 1000000000 triangles"),
])
def test_header_counts_the_file_cannot_hold(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    _refused_cheaply(path, rf"{name.replace('.', '[.]')}: {message}")


def test_max_points_is_a_limit_callers_can_raise(tmp_path):
    assert MAX_POINTS == 100_000_000
    cloud = _cloud(50)
    for suffix in (".npy", ".npz", ".ply"):
        path = tmp_path / f"c{suffix}"
        write_point_cloud(path, cloud)
        _refused_cheaply(path, rf"c\{suffix}.*: .*declares 50 points, more than the limit of 10 "
                               r"\(pass max_points= to read bigger clouds\)$", max_points=10)
        np.testing.assert_array_equal(read_point_cloud(path, max_points=50), cloud)


def test_symbolic_link_loops_and_dangling_links_say_so(tmp_path):
    self_loop = tmp_path / "self.ply"
    self_loop.symlink_to(self_loop.name)
    first, second = tmp_path / "a.ply", tmp_path / "b.ply"
    first.symlink_to(second)
    second.symlink_to(first)
    looping_dir = tmp_path / "dir"
    looping_dir.symlink_to(looping_dir.name)
    for path in (self_loop, first, looping_dir / "x.ply"):
        with pytest.raises(ValueError, match=r"symbolic link loop") as info:
            read_point_cloud(path)
        assert str(info.value).startswith(f"{path}: ")
    dangling = tmp_path / "gone.ply"
    dangling.symlink_to(tmp_path / "missing.ply")
    with pytest.raises(FileNotFoundError, match=r"gone\.ply: symbolic link to a missing target \(.*missing\.ply\)$"):
        read_point_cloud(dangling)


def _cloudcompare_ply(path, points, scalars):
    """A PLY as CloudCompare saves it: binary little endian, float xyz, uchar colours and every
    scalar field as ``property float scalar_<Name>``."""
    names = list(scalars)
    header = (
        "ply\nformat binary_little_endian 1.0\ncomment Created by CloudCompare v2.13.1\n"
        "comment Created 2026-11-30T04:00:00\nobj_info Generated by CloudCompare!\n"
        f"element vertex {len(points)}\nproperty float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\n"
        + "".join(f"property float scalar_{name}\n" for name in names) + "end_header\n"
    )
    table = np.zeros(len(points), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "u1", 3)]
                     + [(name, "<f4") for name in names])
    table["x"], table["y"], table["z"] = np.asarray(points, dtype=np.float32).T
    for name, values in scalars.items():
        table[name] = values
    path.write_bytes(header.encode() + table.tobytes())


def test_cloudcompare_scalar_classification_is_the_label(tmp_path):
    points = _cloud(40)
    classes = np.repeat([2, 5, 6, 9], 10)
    path = tmp_path / "scan.ply"
    _cloudcompare_ply(path, points, {"Intensity": np.linspace(0, 1, 40), "Classification": classes})
    cloud = read_labeled_cloud(path)
    np.testing.assert_allclose(cloud.points, points)
    np.testing.assert_array_equal(cloud.labels, classes)
    assert cloud.label_source == "PLY property 'scalar_Classification'"
    # the same field under CloudCompare's other spelling, and a plain scalar field is no label
    _cloudcompare_ply(path, points, {"label": classes})
    assert read_labeled_cloud(path).label_source == "PLY property 'scalar_label'"
    _cloudcompare_ply(path, points, {"Intensity": np.linspace(0, 1, 40)})
    assert read_labeled_cloud(path).labels is None


def test_open3d_style_ply_with_int_label_property(tmp_path):
    """Open3D's tensor PointCloud writes double xyz, normals, uchar colours and each extra
    attribute as a property of its own name."""
    points = _cloud(25, normals=True).astype(np.float64)
    header = (
        "ply\nformat binary_little_endian 1.0\ncomment Created by Open3D\nelement vertex 25\n"
        "property double x\nproperty double y\nproperty double z\nproperty double nx\n"
        "property double ny\nproperty double nz\nproperty uchar red\nproperty uchar green\n"
        "property uchar blue\nproperty int label\nend_header\n"
    )
    table = np.zeros(25, dtype=[(k, "<f8") for k in ("x", "y", "z", "nx", "ny", "nz")]
                     + [("rgb", "u1", 3), ("label", "<i4")])
    for i, k in enumerate(("x", "y", "z", "nx", "ny", "nz")):
        table[k] = points[:, i]
    table["label"] = np.arange(25) % 3
    path = tmp_path / "o3d.ply"
    path.write_bytes(header.encode() + table.tobytes())
    cloud = read_labeled_cloud(path, dtype=np.float64)
    np.testing.assert_array_equal(cloud.points, points)
    np.testing.assert_array_equal(cloud.labels, np.arange(25) % 3)
    assert cloud.label_source == "PLY property 'label'"


def test_label_sources_of_text_npy_and_npz(tmp_path):
    four = tmp_path / "a.xyz"
    four.write_text("0 0 0 2\n1 1 1 3\n")
    assert read_labeled_cloud(four).label_source == "column 4"
    assert read_labeled_cloud(tmp_path / "a.xyz").labels.tolist() == [2, 3]
    three = tmp_path / "b.xyz"
    three.write_text("0 0 0\n1 1 1\n")
    assert read_labeled_cloud(three).label_source is None
    # .npy follows the text rule when the last column holds whole numbers
    labelled = np.hstack([_cloud(10), np.arange(10)[:, None] % 4]).astype(np.float32)
    np.save(tmp_path / "l.npy", labelled)
    cloud = read_labeled_cloud(tmp_path / "l.npy")
    assert cloud.points.shape == (10, 3) and cloud.label_source == "column 4"
    np.testing.assert_array_equal(cloud.labels, np.arange(10) % 4)
    seven = np.hstack([_cloud(10, normals=True), np.ones((10, 1))])
    np.save(tmp_path / "l7.npy", seven)
    assert read_labeled_cloud(tmp_path / "l7.npy").points.shape == (10, 6)
    assert read_labeled_cloud(tmp_path / "l7.npy").label_source == "column 7"
    # x y z intensity: not a label
    np.save(tmp_path / "i.npy", np.hstack([_cloud(10), np.linspace(0, 1, 10)[:, None]]))
    assert read_labeled_point_cloud(tmp_path / "i.npy")[1] is None
    np.savez(tmp_path / "z.npz", points=_cloud(10), labels=np.arange(10))
    assert read_labeled_cloud(tmp_path / "z.npz").label_source == "'labels' array"


def test_pcd_classification_field_any_case(tmp_path):
    path = tmp_path / "c.pcd"
    path.write_text(
        "VERSION 0.7\nFIELDS x y z Classification\nSIZE 4 4 4 1\nTYPE F F F U\nCOUNT 1 1 1 1\n"
        "WIDTH 2\nHEIGHT 1\nPOINTS 2\nDATA ascii\n1 2 3 2\n4 5 6 6\n"
    )
    cloud = read_labeled_cloud(path)
    np.testing.assert_array_equal(cloud.labels, [2, 6])
    assert cloud.label_source == "PCD field 'Classification'"
