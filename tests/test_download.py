"""Tests for pointea.data.download against a loopback HTTP server and file:// URLs (no internet)."""

from __future__ import annotations

import argparse
import hashlib
import http.server
import io
import logging
import shutil
import socket
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest

from pointea.commands import download as download_command
from pointea.data import download
from pointea.data.download import (
    SOURCES,
    ChecksumError,
    DownloadError,
    Source,
    candidate_sources,
    download_dataset,
    extract_archive,
)

FOLDER = "modelnet40_ply_hdf5_2048"
FILENAME = "modelnet40_ply_hdf5_2048.zip"
FILES = {
    f"{FOLDER}/shape_names.txt": b"airplane\nbathtub\n",
    f"{FOLDER}/ply_data_train0.h5": bytes(range(256)) * 400,  # ~100 kB so a download has chunks
}


def _zip(files: dict) -> bytes:
    """A zip of ``files``, the same bytes on every call: members get a fixed timestamp, not the
    clock's (two calls a second apart would otherwise differ in their SHA-256)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            member = zipfile.ZipInfo(name, date_time=(2021, 1, 1, 0, 0, 0))
            member.external_attr = 0o600 << 16  # what writestr gives a member named by a string
            archive.writestr(member, data)
    return buffer.getvalue()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _Server:
    """Loopback HTTP server for byte blobs, with Range support and fault injection."""

    def __init__(self):
        self.files = {}
        self.requests = []  # (path, Range header)
        self.bytes_sent = 0
        self.support_range = True
        self.cut_next = False  # close the next response half way
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append((self.path, self.headers.get("Range")))
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                wanted = self.headers.get("Range")
                if wanted and server.support_range:
                    start = int(wanted.split("=")[1].split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.cut_next:
                    server.cut_next = False
                    body = body[: len(body) // 2]
                    self.close_connection = True
                self.wfile.write(body)
                server.bytes_sent += len(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = _Server()
    s.files["/" + FILENAME] = _zip(FILES)
    yield s
    s.close()


@pytest.fixture
def dead_url():
    """An http URL on a loopback port nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def offline_sources(monkeypatch, dead_url):
    """Point every known source at a dead loopback port, so no test can reach the internet.

    The fake archives cannot match the published digests, so the patched sources carry none.
    """
    monkeypatch.delenv(download.MIRROR_ENV, raising=False)
    monkeypatch.delenv(download.MAX_UNPACKED_ENV, raising=False)
    patched = {
        name: [Source(f"{dead_url}/{s.filename}", s.filename, None, s.folder, s.layout) for s in sources]
        for name, sources in SOURCES.items()
    }
    monkeypatch.setattr(download, "SOURCES", patched)
    return patched


def _check_unpacked(folder: Path):
    for name, data in FILES.items():
        assert (folder.parent / name).read_bytes() == data


def _leftovers(root: Path) -> list:
    return sorted(p.name for p in root.iterdir() if p.name.startswith(".") or p.name.endswith(".part"))


def test_http_download_verified_and_unpacked(tmp_path, server, offline_sources, caplog):
    caplog.set_level(logging.INFO, logger="pointea.data.download")
    data = server.files["/" + FILENAME]
    folder = download_dataset("modelnet40", tmp_path, url=server.url(FILENAME), sha256=_sha(data))
    assert folder == tmp_path / FOLDER
    _check_unpacked(folder)
    assert "sha256 verified" in caplog.text
    assert not (tmp_path / FILENAME).exists(), "the archive is removed after unpacking"
    assert _leftovers(tmp_path) == []
    # Idempotent: a second call finds the folder and makes no request.
    count = len(server.requests)
    assert download_dataset("modelnet40", tmp_path, url=server.url(FILENAME)) == folder
    assert len(server.requests) == count


def test_resume_from_partial_file(tmp_path, server, offline_sources):
    data = server.files["/" + FILENAME]
    half = len(data) // 3
    (tmp_path / (FILENAME + ".part")).write_bytes(data[:half])
    folder = download_dataset("modelnet40", tmp_path, url=server.url(FILENAME), sha256=_sha(data),
                              keep_archive=True)
    _check_unpacked(folder)
    assert server.requests == [("/" + FILENAME, f"bytes={half}-")]
    assert server.bytes_sent == len(data) - half
    assert (tmp_path / FILENAME).read_bytes() == data


def test_server_without_range_restarts(tmp_path, server, offline_sources):
    data = server.files["/" + FILENAME]
    server.support_range = False
    (tmp_path / (FILENAME + ".part")).write_bytes(b"stale bytes of something else")
    folder = download_dataset("modelnet40", tmp_path, url=server.url(FILENAME), sha256=_sha(data))
    _check_unpacked(folder)
    assert server.bytes_sent == len(data)


def test_interrupted_transfer_resumes_in_the_same_call(tmp_path, server, offline_sources):
    data = server.files["/" + FILENAME]
    server.cut_next = True
    folder = download_dataset("modelnet40", tmp_path, url=server.url(FILENAME), sha256=_sha(data))
    _check_unpacked(folder)
    assert len(server.requests) == 2
    assert server.requests[0][1] is None and server.requests[1][1] == f"bytes={len(data) // 2}-"


def test_complete_partial_file_gets_416_and_is_used(tmp_path, server, offline_sources):
    data = server.files["/" + FILENAME]
    (tmp_path / (FILENAME + ".part")).write_bytes(data)
    folder = download_dataset("modelnet40", tmp_path, url=server.url(FILENAME), sha256=_sha(data))
    _check_unpacked(folder)
    assert server.bytes_sent == 0


def test_checksum_mismatch(tmp_path, server, offline_sources):
    data = server.files["/" + FILENAME]
    wrong = "0" * 64
    with pytest.raises(ChecksumError, match=rf"{FILENAME}: sha256 mismatch, expected {wrong}, got {_sha(data)}"):
        download_dataset("modelnet40", tmp_path, url=server.url(FILENAME), sha256=wrong)
    assert list(tmp_path.iterdir()) == [], "the corrupt download is removed"


def test_unknown_checksum_is_reported(tmp_path, server, offline_sources, caplog):
    data = server.files["/" + FILENAME]
    download_dataset("modelnet40", tmp_path, url=server.url(FILENAME))
    assert _sha(data) in caplog.text and "not verified: no published checksum" in caplog.text
    assert "sha256 verified" not in caplog.text


def test_file_url_and_tar_archive(tmp_path, offline_sources):
    source_dir = tmp_path / "downloads"
    source_dir.mkdir()
    tar_path = source_dir / "ModelNet10.tar.gz"
    with tarfile.open(tar_path, "w:gz") as archive:
        for name, data in {"ModelNet10/chair/train/chair_0001.off": b"OFF\n0 0 0\n"}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    root = tmp_path / "data"
    folder = download_dataset("modelnet10", root, url=tar_path.as_uri(), sha256=_sha(tar_path.read_bytes()))
    assert folder == root / "ModelNet10"
    assert (folder / "chair/train/chair_0001.off").read_bytes() == b"OFF\n0 0 0\n"
    assert tar_path.exists(), "a file:// source is copied, not moved"


def test_mirror_environment_variable(tmp_path, server, offline_sources, monkeypatch):
    monkeypatch.setenv(download.MIRROR_ENV, server.base + "/")
    folder = download_dataset("modelnet40", tmp_path / "a")
    _check_unpacked(folder)
    assert server.requests[0][0] == "/" + FILENAME
    # A local folder works as a mirror too.
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / FILENAME).write_bytes(server.files["/" + FILENAME])
    monkeypatch.setenv(download.MIRROR_ENV, str(mirror))
    assert candidate_sources("modelnet40")[0].url == (mirror / FILENAME).as_uri()
    _check_unpacked(download_dataset("modelnet40", tmp_path / "b"))


def test_archive_placed_by_hand_is_unpacked_offline(tmp_path, offline_sources):
    (tmp_path / FILENAME).write_bytes(_zip(FILES))
    _check_unpacked(download_dataset("modelnet40", tmp_path))
    assert (tmp_path / FILENAME).exists(), "a file the user placed is kept"


def test_offline_error_says_what_to_fetch_and_where(tmp_path, offline_sources):
    with pytest.raises(DownloadError) as info:
        download_dataset("shapenetpart", tmp_path)
    message = str(info.value)
    source = offline_sources["shapenetpart"][0]
    for fragment in (f"Could not download shapenetpart into {tmp_path}", source.url, source.filename,
                     "sha256 unknown", f"unpack it so that {tmp_path / source.folder}/ exists",
                     "--url", download.MIRROR_ENV):
        assert fragment in message
    assert not any(p.name.endswith(".part") and p.stat().st_size for p in tmp_path.iterdir())


@pytest.mark.parametrize("member", ["../evil.txt", "/tmp/evil.txt", "ok/../../evil.txt"])
def test_zip_members_escaping_the_folder_are_refused(tmp_path, member):
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("good/file.txt", b"fine")
        handle.writestr(zipfile.ZipInfo(member), b"evil")
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(ValueError, match=r"bad\.zip: refusing member .*outside the target folder"):
        extract_archive(archive, root, "bad")
    assert list(root.iterdir()) == [] and not (tmp_path / "evil.txt").exists()


def test_tar_links_out_of_the_folder_are_refused(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    for linkname in ("/etc/passwd", "../../outside"):
        archive = tmp_path / "links.tar"
        with tarfile.open(archive, "w") as handle:
            info = tarfile.TarInfo("data/link")
            info.type, info.linkname = tarfile.SYMTYPE, linkname
            handle.addfile(info)
        with pytest.raises(ValueError, match=r"refusing link 'data/link'"):
            extract_archive(archive, root, "data")
        assert list(root.iterdir()) == []
    # A link that stays inside is refused too: dataset archives hold only files and folders.
    with tarfile.open(archive, "w") as handle:
        data = b"x"
        info = tarfile.TarInfo("data/a/file.txt")
        info.size = 1
        handle.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("data/b")
        link.type, link.linkname = tarfile.SYMTYPE, "a/file.txt"
        handle.addfile(link)
    with pytest.raises(ValueError, match=r"refusing link 'data/b' -> 'a/file.txt'"):
        extract_archive(archive, root, "data")
    assert list(root.iterdir()) == []


def test_loose_files_unpack_into_the_dataset_folder(tmp_path, server, offline_sources):
    flat = _zip({"shape_names.txt": b"a\n", "ply_data_train0.h5": b"h5"})
    server.files["/" + FILENAME] = flat
    folder = download_dataset("modelnet40", tmp_path, url=server.url(FILENAME), sha256=_sha(flat))
    assert folder == tmp_path / FOLDER and (folder / "ply_data_train0.h5").read_bytes() == b"h5"


def test_not_an_archive(tmp_path, server, offline_sources):
    server.files["/" + FILENAME] = b"<html>moved</html>"
    with pytest.raises(ValueError, match=rf"{FILENAME}: not a zip or tar archive .*the file was removed"):
        download_dataset("modelnet40", tmp_path, url=server.url(FILENAME))
    assert list(tmp_path.iterdir()) == []
    # An archive the user placed is never deleted.
    (tmp_path / FILENAME).write_bytes(b"not an archive")
    with pytest.raises(ValueError, match="not a zip or tar archive"):
        download_dataset("modelnet40", tmp_path)
    assert (tmp_path / FILENAME).exists()


def test_bad_arguments(tmp_path):
    expected = "unknown dataset 's3dis'; expected one of modelnet40, modelnet10, shapenetpart"
    with pytest.raises(ValueError, match=expected):
        download_dataset("s3dis", tmp_path)
    with pytest.raises(ValueError, match="sha256 must be 64 hex digits"):
        download_dataset("modelnet40", tmp_path, sha256="abc")


def test_sources_are_complete():
    for name, sources in SOURCES.items():
        assert sources, name
        for source in sources:
            assert source.url.endswith("/" + source.filename) and source.folder
            assert source.sha256 is None or len(source.sha256) == 64


def main(argv: list) -> int:
    """``pointea download ...`` through the command's own parser."""
    parser = argparse.ArgumentParser(prog="pointea")
    download_command.add_parser(parser.add_subparsers(dest="command"))
    return download_command.run(parser.parse_args(argv))


def test_cli(tmp_path, server, offline_sources, capsys, monkeypatch):
    root_logger = logging.getLogger()
    monkeypatch.setattr(root_logger, "handlers", list(root_logger.handlers))  # undo basicConfig
    data = server.files["/" + FILENAME]
    code = main(["download", "modelnet40", "--data-root", str(tmp_path), "--url", server.url(FILENAME),
                 "--sha256", _sha(data)])
    assert code == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / FOLDER)
    assert main(["download", "shapenetpart", "--data-root", str(tmp_path / "x")]) == 1
    assert "Fetch one of these archives by hand" in capsys.readouterr().err
    assert main(["download", "modelnet40", "--list"]) == 0
    assert "modelnet40_normal_resampled.zip" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["download", "--help"])
    help_text = capsys.readouterr().out
    assert "examples:" in help_text and "pointea download modelnet40 --data-root data" in help_text
    assert "--data-root DIR" in help_text and "--root" not in help_text
    # The former option name still works, hidden from the help.
    assert main(["download", "modelnet40", "--root", str(tmp_path), "--url", server.url(FILENAME)]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / FOLDER)


# --------------------------------------------------------------------------- hostile archives

def _tree(folder: Path) -> dict:
    """Every path under ``folder`` with its bytes (files), its target (links) or None (folders)."""
    tree = {}
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            tree[path] = ("link", str(path.readlink()))
        elif path.is_file():
            tree[path] = path.read_bytes()
        else:
            tree[path] = None
    return tree


def _tar(path: Path, members: list, mode: str = "w") -> Path:
    """Write a tar of ``(name, kind, payload)``: kind is file (bytes), sym/hard (link target), chr, fifo."""
    with tarfile.open(path, mode) as handle:
        for name, kind, payload in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(payload)
                handle.addfile(info, io.BytesIO(payload))
                continue
            info.type = {"sym": tarfile.SYMTYPE, "hard": tarfile.LNKTYPE, "chr": tarfile.CHRTYPE,
                         "fifo": tarfile.FIFOTYPE, "dir": tarfile.DIRTYPE}[kind]
            info.linkname = payload or ""
            handle.addfile(info)
    return path


# A chain of links created earlier in the archive leads out of the unpack folder: normpath sees
# ds/a/b/c/d/e/s/x -> ds/a/b/escape, but s resolves to ds, so x points 4 levels above ds.
_CHAIN = [("ds/a/b/c/d/e/s", "sym", "../../../../.."), ("ds/a/b/c/d/e/s/x", "sym", "../../../../escape")]
_ZEROS = bytes(4 << 20)  # deflates about 1,000x


def _zip_member(name: str, mode: int = 0o100644) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = mode << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


def _write_zip(path: Path, members: list) -> Path:
    with zipfile.ZipFile(path, "w") as handle:
        for info, data in members:
            handle.writestr(info, data)
    return path


def _lying_zip(path: Path) -> Path:
    """A zip whose headers declare 1,000 bytes for a member that inflates to 4 MiB."""
    _write_zip(path, [(_zip_member("ds/bomb.bin"), _ZEROS)])
    data = bytearray(path.read_bytes())
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):  # local and central header
        at = data.index(signature)
        data[at + offset: at + offset + 4] = (1000).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    return path


# name -> (builder(tmp_path) -> archive, limits, what the message must say)
HOSTILE = {
    "tar symlink chain, then a file through it": (
        lambda d: _tar(d / "chain.tar", _CHAIN + [("ds/a/b/c/d/e/s/x/pwned.txt", "file", b"pwned")]),
        {}, r"refusing link 'ds/a/b/c/d/e/s' -> '../../../../..'"),
    "tar symlink chain, then a hard link through it": (
        lambda d: _tar(d / "hard.tar", _CHAIN + [("ds/h", "hard", "ds/a/b/c/d/e/s/x/victim.txt"),
                                                 ("ds/h", "file", b"overwritten")]),
        {}, r"refusing link 'ds/a/b/c/d/e/s'"),
    "tar absolute symlink": (
        lambda d: _tar(d / "abs.tar", [("ds/passwd", "sym", "/etc/passwd")]), {}, r"refusing link 'ds/passwd'"),
    "tar symlink inside the folder": (
        lambda d: _tar(d / "in.tar", [("ds/f", "file", b"x"), ("ds/l", "sym", "f")]), {}, r"refusing link 'ds/l'"),
    "tar hard link inside the folder": (
        lambda d: _tar(d / "inh.tar", [("ds/f", "file", b"x"), ("ds/l", "hard", "ds/f")]), {},
        r"refusing link 'ds/l'"),
    "tar absolute member name": (
        lambda d: _tar(d / "absname.tar", [("/abs_evil.txt", "file", b"evil")]), {}, r"refusing member '/abs_evil.txt'"),
    "tar .. member name": (
        lambda d: _tar(d / "dotdot.tar", [("ds/../../escape/evil.txt", "file", b"evil")]), {},
        r"refusing member 'ds/\.\./\.\./escape/evil.txt'"),
    "tar character device": (
        lambda d: _tar(d / "dev.tar", [("ds/null", "chr", None)]), {}, r"refusing special file member 'ds/null'"),
    "tar FIFO": (
        lambda d: _tar(d / "fifo.tar", [("ds/pipe", "fifo", None)]), {}, r"refusing special file member 'ds/pipe'"),
    "tar file and folder of one name": (
        lambda d: _tar(d / "clash.tar", [("ds/x", "file", b"1"), ("ds/x/y", "file", b"2")]), {},
        r"refusing member 'ds/x', both a file and a folder"),
    "tar.gz bomb": (
        lambda d: _tar(d / "bomb.tar.gz", [("ds/bomb.bin", "file", _ZEROS)], "w:gz"), {},
        r"refusing member 'ds/bomb.bin', it inflates over 200x"),
    "zip symlink": (
        lambda d: _write_zip(d / "sym.zip", [(_zip_member("ds/l", 0o120777), b"../../escape")]), {},
        r"refusing link 'ds/l'"),
    "zip FIFO": (
        lambda d: _write_zip(d / "fifo.zip", [(_zip_member("ds/p", 0o010644), b"")]), {},
        r"refusing special file member 'ds/p'"),
    "zip .. member name": (
        lambda d: _write_zip(d / "dotdot.zip", [(_zip_member("../escape/evil.txt"), b"evil")]), {},
        r"refusing member '\.\./escape/evil.txt'"),
    "zip bomb (ratio)": (
        lambda d: _write_zip(d / "bomb.zip", [(_zip_member("ds/bomb.bin"), _ZEROS)]), {},
        r"refusing member 'ds/bomb.bin', it inflates over 200x"),
    "zip over the total limit": (
        lambda d: _write_zip(d / "big.zip", [(_zip_member("ds/a.bin"), bytes(range(256)) * 4096)]),
        {"max_unpacked_gb": 0.5 / 1024},
        r"refusing member 'ds/a.bin', the archive declares 0\.00 GiB unpacked, over the 0\.000488281 GiB limit"),
    "zip with a header that lies about the size": (
        lambda d: _lying_zip(d / "lying.zip"), {"max_ratio": 1e9}, r"corrupt or unsupported archive \(Bad CRC-32 for file 'ds/bomb.bin'\)"),
}


@pytest.mark.parametrize("with_filter", [True, False], ids=["data_filter", "no_data_filter"])
@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_archive_gives_one_line_error_and_writes_nothing(tmp_path, monkeypatch, case, with_filter):
    if not with_filter:  # the path taken on Pythons without tarfile.data_filter (e.g. 3.11.2)
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    build, limits, expected = HOSTILE[case]
    (tmp_path / "escape").mkdir()
    (tmp_path / "escape" / "victim.txt").write_bytes(b"precious")
    # The unpack folder sits 4 levels under tmp_path, so the link chain lands in tmp_path/escape.
    root = tmp_path / "outer" / "root"
    root.mkdir(parents=True)
    archive = build(tmp_path)
    before = _tree(tmp_path)
    with pytest.raises(ValueError, match=expected) as info:
        extract_archive(archive, root, "ds", **limits)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{archive}: ")
    assert _tree(tmp_path) == before, "nothing created, changed or removed"


def test_link_chain_archive_downloaded_is_refused_and_removed(tmp_path, offline_sources, monkeypatch):
    monkeypatch.delattr(tarfile, "data_filter", raising=False)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    archive = _tar(downloads / "ModelNet10.tar", _CHAIN + [("ds/a/b/c/d/e/s/x/pwned.txt", "file", b"pwned")])
    root = tmp_path / "outer" / "root"
    root.mkdir(parents=True)
    with pytest.raises(ValueError, match=r"ModelNet10\.tar: refusing link .*the file was removed"):
        download_dataset("modelnet10", root, url=archive.as_uri())
    assert list(root.iterdir()) == [], "neither the unpack folder nor the refused archive is left"
    assert not (tmp_path / "escape").exists() and archive.exists()


def test_unpack_limits_can_be_raised_and_read_from_the_environment(tmp_path, monkeypatch):
    archive = _write_zip(tmp_path / "bomb.zip", [(_zip_member("ds/bomb.bin"), _ZEROS)])
    root = tmp_path / "root"
    root.mkdir()
    folder = extract_archive(archive, root, "ds", max_ratio=1e6)  # a real archive that deflates this well
    assert (folder / "bomb.bin").stat().st_size == len(_ZEROS)
    shutil.rmtree(folder)
    monkeypatch.setenv(download.MAX_UNPACKED_ENV, str(1 / 1024))
    with pytest.raises(ValueError, match=r"over the 0\.000976562 GiB limit \(raise it with --max-unpacked-gb or "
                                         + download.MAX_UNPACKED_ENV):
        extract_archive(archive, root, "ds", max_ratio=1e6)
    monkeypatch.setenv(download.MAX_UNPACKED_ENV, "lots")
    with pytest.raises(ValueError, match=f"{download.MAX_UNPACKED_ENV} must be a number of GiB, got 'lots'"):
        extract_archive(archive, root, "ds")
    assert list(root.iterdir()) == []


@pytest.mark.parametrize("kind", ["tar.gz", "zip"])
def test_streaming_count_stops_a_bomb_even_without_the_header_checks(tmp_path, monkeypatch, kind):
    """The bytes counted while copying stop unpacking whatever the headers declare."""
    members = [("ds/a.bin", _ZEROS), ("ds/b.bin", _ZEROS)]
    if kind == "zip":
        archive = _write_zip(tmp_path / "bomb.zip", [(_zip_member(name), data) for name, data in members])
        limits, expected = {}, r"refusing member 'ds/a.bin', it inflates over 200x"
    else:
        archive = _tar(tmp_path / "bomb.tar.gz", [(name, "file", data) for name, data in members], "w:gz")
        limits = {"max_unpacked_gb": 6 / 1024, "max_ratio": 1e6}
        expected = r"stopped at member 'ds/b.bin', more than the 0\.00585938 GiB limit"
    monkeypatch.setattr(download._Budget, "declare", lambda self, name, size, compressed: None)
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(ValueError, match=expected):
        extract_archive(archive, root, "ds", **limits)
    assert list(root.iterdir()) == []


# --------------------------------------------------------------------------- checksums and messages

def test_known_archives_have_published_digests_and_https():
    by_name = {s.filename: s for sources in SOURCES.values() for s in sources}
    assert by_name["ModelNet40.zip"].sha256 == "42dc3e656932e387f554e25a4eb2cc0e1a1bd3ab54606e2a9eae444c60e536ac"
    assert by_name["modelnet40_ply_hdf5_2048.zip"].sha256.startswith("07670e237db72ece")
    assert by_name["ModelNet10.zip"].sha256.startswith("9d8679435fc07d1d")
    assert by_name["modelnet40_normal_resampled.zip"].sha256 is None
    assert all(s.url.startswith("https://") for s in by_name.values())


def test_published_digest_is_checked_for_a_mirror_copy(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="pointea.data.download")
    monkeypatch.setattr(download, "SOURCES", {"modelnet40": [Source(
        "http://127.0.0.1:9/" + FILENAME, FILENAME, "1" * 64, FOLDER)]})
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / FILENAME).write_bytes(_zip(FILES))
    monkeypatch.setenv(download.MIRROR_ENV, str(mirror))
    root = tmp_path / "root"
    with pytest.raises(ChecksumError, match=rf"{FILENAME}: sha256 mismatch, expected {'1' * 64}, "
                                            rf"got {_sha(_zip(FILES))}"):
        download_dataset("modelnet40", root)
    assert "verified" not in caplog.text
    assert not root.exists() or list(root.iterdir()) == []
    # With the right digest the same copy is verified and says so.
    monkeypatch.setattr(download, "SOURCES", {"modelnet40": [Source(
        "http://127.0.0.1:9/" + FILENAME, FILENAME, _sha(_zip(FILES)), FOLDER)]})
    _check_unpacked(download_dataset("modelnet40", root))
    assert f"{FILENAME}: sha256 verified" in caplog.text and "not verified" not in caplog.text


def test_offline_cli_says_each_failure_once_in_words_and_leaves_no_folder(tmp_path, offline_sources, capsys,
                                                                          monkeypatch):
    root_logger = logging.getLogger()
    monkeypatch.setattr(root_logger, "handlers", list(root_logger.handlers))  # undo basicConfig
    root = tmp_path / "new" / "data"
    assert main(["download", "modelnet40", "--data-root", str(root)]) == 1
    err = capsys.readouterr().err
    sources = offline_sources["modelnet40"]
    host = sources[0].url.split("/")[2]
    assert err.count(f"could not reach {host}: connection refused") == len(sources), "each failure once, in words"
    for source in sources:
        assert err.count(source.url) == 1
    assert "Errno" not in err and "Fetch one of these archives by hand" in err
    assert f"unpack it so that {root / FOLDER}/ exists" in err
    assert not (tmp_path / "new").exists(), "the folders the command created are removed again"


def test_describe_failure_in_words():
    import socket
    import urllib.error

    gai = urllib.error.URLError(socket.gaierror(-2, "Name or service not known"))
    assert download.describe_failure("https://modelnet.cs.princeton.edu/ModelNet40.zip", gai) == \
        "could not reach modelnet.cs.princeton.edu: name or service not known"
    missing = urllib.error.URLError(FileNotFoundError(2, "No such file or directory"))
    assert download.describe_failure("file:///nowhere/x.zip", missing) == "no file at /nowhere/x.zip"
    http_404 = urllib.error.HTTPError("https://h/x.zip", 404, "Not Found", {}, None)
    assert download.describe_failure("https://h/x.zip", http_404) == "h answered HTTP 404 Not Found for https://h/x.zip"


# a disk that is full for anything over 4 KiB (RLIMIT_FSIZE with SIGXFSZ ignored: writes fail
# with EFBIG), for the download and for the unpacking
DOWNLOAD_ON_A_FULL_DISK = """
import logging, resource, signal, sys
from pointea.data.download import download_dataset
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
try:
    download_dataset("modelnet40", sys.argv[1], url=sys.argv[2])
except OSError as error:
    print(type(error).__name__, error)
"""


@pytest.mark.parametrize("where", ["download", "unpack"])
def test_full_disk_names_the_file_and_is_not_retried(tmp_path, where):
    import subprocess
    import sys

    archive = tmp_path / FILENAME
    archive.write_bytes(_zip(FILES))  # ~100 kB, over the limit both packed and unpacked
    root = tmp_path / "data"
    if where == "unpack":  # an archive already in place: only the unpacking writes
        root.mkdir()
        shutil.copy(archive, root / FILENAME)
    process = subprocess.run([sys.executable, "-c", DOWNLOAD_ON_A_FULL_DISK, str(root), archive.as_uri()],
                             capture_output=True, text=True, timeout=60)
    assert process.returncode == 0, process.stderr
    written = root / (FILENAME + ".part") if where == "download" else root / "*" / FOLDER / "ply_data_train0.h5"
    assert process.stdout.startswith(f"WriteError cannot write {root}/"), process.stdout
    assert process.stdout.rstrip().endswith(": file too large"), process.stdout
    if where == "download":
        assert process.stdout.split()[3].rstrip(":") == str(written)
        assert "resuming" not in process.stderr  # a full disk is not retried
    else:
        assert process.stdout.split()[3].endswith(f"{FOLDER}/ply_data_train0.h5:")
    assert not (root / FOLDER).exists()
