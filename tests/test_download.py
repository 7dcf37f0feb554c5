"""Tests for pointea.data.download against a loopback HTTP server and file:// URLs (no internet)."""

from __future__ import annotations

import argparse
import hashlib
import http.server
import io
import logging
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
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
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
    """Point every known source at a dead loopback port, so no test can reach the internet."""
    monkeypatch.delenv(download.MIRROR_ENV, raising=False)
    patched = {
        name: [Source(f"{dead_url}/{s.filename}", s.filename, s.sha256, s.folder, s.layout) for s in sources]
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
    assert _sha(data) in caplog.text and "could not be verified" in caplog.text


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
    # A link that stays inside is fine.
    with tarfile.open(archive, "w") as handle:
        data = b"x"
        info = tarfile.TarInfo("data/a/file.txt")
        info.size = 1
        handle.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("data/b")
        link.type, link.linkname = tarfile.SYMTYPE, "a/file.txt"
        handle.addfile(link)
    folder = extract_archive(archive, root, "data")
    assert (folder / "b").read_bytes() == b"x"


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
    code = main(["download", "modelnet40", "--root", str(tmp_path), "--url", server.url(FILENAME),
                 "--sha256", _sha(data)])
    assert code == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / FOLDER)
    assert main(["download", "shapenetpart", "--root", str(tmp_path / "x")]) == 1
    assert "Fetch one of these archives by hand" in capsys.readouterr().err
    assert main(["download", "modelnet40", "--list"]) == 0
    assert "modelnet40_normal_resampled.zip" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["download", "--help"])
    help_text = capsys.readouterr().out
    assert "examples:" in help_text and "pointea download modelnet40 --root data" in help_text
