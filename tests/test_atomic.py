import errno
import os
import stat
import types

import pytest

from pointea.atomic import WriteError, atomic_path, atomic_write_text, remove_stale_temporaries


def test_atomic_write_replaces_file_with_plain_permissions(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    atomic_write_text(target, "first")
    atomic_write_text(target, "second")
    assert target.read_text() == "second"
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask
    assert [p.name for p in target.parent.iterdir()] == ["out.txt"]


def test_atomic_path_leaves_old_file_and_no_temp_on_error(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("boom")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_full_disk_is_one_error_naming_the_file_and_keeps_the_old_one(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("old")
    with pytest.raises(WriteError) as info:
        with atomic_path(target) as tmp:
            with open(tmp, "wb") as handle:
                handle.write(b"partial")
                # what numpy, matplotlib and file.write raise on a full disk: an errno, no name
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert str(info.value) == f"cannot write {target}: no space left on device"
    assert info.value.errno == errno.ENOSPC and isinstance(info.value, OSError)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_torch_save_on_a_full_disk_names_the_cause(tmp_path):
    torch = pytest.importorskip("torch")
    target = tmp_path / "last.pt"
    with pytest.raises(WriteError, match="last.pt: no space left on device$"):
        with atomic_path(target), open("/dev/full", "wb") as full:
            # torch wraps the OSError of a Python handle into "RuntimeError: ... unexpected pos"
            torch.save({"w": torch.zeros(50_000)}, full)
    assert list(tmp_path.iterdir()) == []


def test_torch_write_failure_without_errno_is_explained(tmp_path, monkeypatch):
    """torch's own file writer drops the errno; a disk with no free block is then named."""
    monkeypatch.setattr(os, "statvfs", lambda path: types.SimpleNamespace(f_bavail=0))
    target = tmp_path / "model.pt"
    with pytest.raises(WriteError, match="model.pt: no space left on device$"):
        with atomic_path(target):
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
    assert list(tmp_path.iterdir()) == []


def test_errors_that_are_not_failed_writes_pass_unchanged(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        with atomic_path(tmp_path / "out.txt"):
            open(tmp_path / "missing-input.txt")
    assert type(info.value) is FileNotFoundError and "missing-input.txt" in str(info.value)
    with pytest.raises(RuntimeError, match="CUDA out of memory"):
        with atomic_path(tmp_path / "out.txt"):
            raise RuntimeError("CUDA out of memory")
    assert list(tmp_path.iterdir()) == []


def test_unwritable_folder_names_the_target_not_the_temporary_file(tmp_path):
    folder = tmp_path / "readonly"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("running as root: permissions are not enforced")
        with pytest.raises(WriteError, match=f"cannot write {folder / 'out.txt'}: permission denied"):
            atomic_write_text(folder / "out.txt", "x")
    finally:
        folder.chmod(0o700)


def test_remove_stale_temporaries_takes_only_atomic_path_leftovers(tmp_path):
    stale = [tmp_path / ".last.pt.k2_9ab0x.tmp", tmp_path / ".metrics.json.abcdefgh.tmp"]
    kept = [tmp_path / "last.pt", tmp_path / ".notes.tmp", tmp_path / "run.tmp",
            tmp_path / ".last.pt.SHOUT123.tmp"]
    for path in stale + kept:
        path.write_text("x")
    (tmp_path / ".dir.abcdefgh.tmp").mkdir()  # a folder is never one of ours
    assert sorted(remove_stale_temporaries(tmp_path)) == sorted(stale)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([".dir.abcdefgh.tmp", *(p.name for p in kept)])
    assert remove_stale_temporaries(tmp_path / "missing") == []
    for path in stale:
        path.write_text("x")
    assert remove_stale_temporaries(tmp_path, names={"last.pt"}) == [stale[0]]
    assert stale[1].exists()
    # the pattern is the one atomic_path really uses
    with atomic_path(tmp_path / "x.bin") as tmp:
        assert remove_stale_temporaries(tmp_path, names={"x.bin"}) == [tmp]
        tmp.write_bytes(b"")  # put it back so this write can finish
