"""Tests for pointea.data.cache: cache folder resolution, keys, atomic array files."""

import errno
import os
from pathlib import Path

import numpy as np
import pytest

from pointea.data import cache
from pointea.data.cache import (
    cache_file,
    default_cache_dir,
    load_arrays,
    load_or_build,
    save_arrays,
    sources_fingerprint,
)


def _files_under(folder: Path):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


@pytest.fixture
def source_root(tmp_path):
    root = tmp_path / "data"
    (root / "a").mkdir(parents=True)
    (root / "a" / "one.txt").write_text("1 2 3\n")
    (root / "a" / "two.txt").write_text("4 5 6\n")
    return root


def test_default_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("POINTEA_CACHE", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("POINTEA_CACHE")
    assert default_cache_dir() == tmp_path / "xdg" / "pointea"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "pointea"


def test_cache_file_name_is_readable_and_stable(source_root, tmp_path):
    sources = ["a/one.txt", "a/two.txt"]
    options = {"split": "train", "num_points": 1024}
    first = cache_file("modelnet40", "text-train-1024pts-xyz", source_root, sources, options, tmp_path / "c")
    again = cache_file("modelnet40", "text-train-1024pts-xyz", source_root, sources, options, tmp_path / "c")
    assert first == again
    assert first.parent == tmp_path / "c" / "modelnet40"
    assert first.name.startswith("text-train-1024pts-xyz-") and first.suffix == ".npz"


def test_cache_key_changes_with_sources_and_options(source_root, tmp_path):
    sources = ["a/one.txt", "a/two.txt"]
    options = {"num_points": 1024}

    def key(opts=options, srcs=sources):
        return cache_file("ds", "label", source_root, srcs, opts, tmp_path / "c").name

    base = key()
    assert key(opts={"num_points": 512}) != base
    assert key(srcs=sources[:1]) != base
    path = source_root / "a" / "one.txt"
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # touch
    touched = key()
    assert touched != base
    path.write_text("1 2 3 4\n")  # content (size) change
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert key() not in (base, touched)


def test_cache_name_depends_on_root(tmp_path):
    for name in ("r1", "r2"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "f.txt").write_text("x")
    one = cache_file("ds", "label", tmp_path / "r1", ["f.txt"], {}, tmp_path / "c")
    two = cache_file("ds", "label", tmp_path / "r2", ["f.txt"], {}, tmp_path / "c")
    assert one != two


def test_fingerprint_names_missing_source(source_root):
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        sources_fingerprint(source_root, ["a/one.txt", "a/missing.txt"])


def test_save_load_round_trip(tmp_path):
    arrays = {
        "points": np.random.default_rng(0).random((4, 8, 3), dtype=np.float32),
        "labels": np.arange(4, dtype=np.int64),
        "files": np.array(["a/x.npy", "b/y.npy", "c/z.npy", "d/w.npy"]),
    }
    path = tmp_path / "c" / "ds" / "label-12345678-abcdef.npz"
    assert save_arrays(path, arrays)
    loaded = load_arrays(path)
    assert set(loaded) == set(arrays)
    for name in arrays:
        np.testing.assert_array_equal(loaded[name], arrays[name])
        assert loaded[name].dtype == arrays[name].dtype
    assert _files_under(tmp_path / "c") == ["ds/label-12345678-abcdef.npz"]


def test_save_evicts_stale_versions_of_same_label_and_root(tmp_path):
    folder = tmp_path / "ds"
    save_arrays(folder / "train-1024pts-aaaaaaaa-1111.npz", {"x": np.zeros(1)})
    save_arrays(folder / "test-1024pts-aaaaaaaa-1111.npz", {"x": np.zeros(1)})
    save_arrays(folder / "train-1024pts-bbbbbbbb-1111.npz", {"x": np.zeros(1)})  # other root
    save_arrays(folder / "train-1024pts-aaaaaaaa-2222.npz", {"x": np.ones(1)})
    assert _files_under(folder) == [
        "test-1024pts-aaaaaaaa-1111.npz",
        "train-1024pts-aaaaaaaa-2222.npz",
        "train-1024pts-bbbbbbbb-1111.npz",
    ]


def test_load_or_build_builds_once(tmp_path):
    calls = []

    def build():
        calls.append(1)
        return {"x": np.arange(3)}

    path = tmp_path / "ds" / "label-00000000-1.npz"
    first = load_or_build(path, build)
    second = load_or_build(path, build)
    assert len(calls) == 1
    np.testing.assert_array_equal(first["x"], second["x"])


def test_failed_build_leaves_no_file(tmp_path):
    def build():
        raise ValueError("bad source file")

    with pytest.raises(ValueError, match="bad source file"):
        load_or_build(tmp_path / "c" / "ds" / "label-00000000-1.npz", build)
    assert not (tmp_path / "c").exists() or _files_under(tmp_path / "c") == []


def test_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    def broken_savez(handle, **arrays):
        handle.write(b"PK partial")
        raise OSError("disk full")

    monkeypatch.setattr(cache.np, "savez", broken_savez)
    path = tmp_path / "c" / "label-00000000-1.npz"
    assert save_arrays(path, {"x": np.zeros(2)}) is False
    assert _files_under(tmp_path / "c") == []


def test_full_disk_while_caching_is_one_warning_and_keeps_the_old_cache(tmp_path, monkeypatch, caplog):
    path = tmp_path / "c" / "label-00000000-1.npz"
    assert save_arrays(path, {"x": np.arange(3)})

    def savez_on_full_disk(handle, **arrays):
        handle.write(b"PK partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # what a write on a full disk raises

    monkeypatch.setattr(cache.np, "savez", savez_on_full_disk)
    assert save_arrays(path, {"x": np.zeros(2)}) is False
    assert [r.getMessage() for r in caplog.records] == [
        f"Could not write cache file {path} (no space left on device); continuing without a cache"]
    assert _files_under(tmp_path / "c") == [path.name]
    np.testing.assert_array_equal(load_arrays(path)["x"], np.arange(3))


def test_corrupt_cache_is_rebuilt(tmp_path):
    path = tmp_path / "ds" / "label-00000000-1.npz"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"PK\x03\x04 truncated")
    assert load_arrays(path) is None
    arrays = load_or_build(path, lambda: {"x": np.arange(5)})
    np.testing.assert_array_equal(load_arrays(path)["x"], arrays["x"])


def test_cache_without_the_expected_arrays_is_rebuilt(tmp_path):
    path = tmp_path / "ds" / "label-00000000-1.npz"
    path.parent.mkdir(parents=True)
    np.savez(path, other=np.zeros(2))  # readable, but not what the dataset stored
    arrays = load_or_build(path, lambda: {"points": np.ones(3)}, keys=("points",))
    np.testing.assert_array_equal(arrays["points"], np.ones(3))
    assert sorted(load_arrays(path)) == ["points"]


def test_unwritable_cache_dir_still_returns_arrays(tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the cache folder should be")
    arrays = load_or_build(blocker / "ds" / "label-00000000-1.npz", lambda: {"x": np.arange(2)})
    np.testing.assert_array_equal(arrays["x"], [0, 1])
