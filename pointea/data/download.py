"""Fetch and unpack the public benchmark archives: resumable, checksummed where a digest is known,
atomic, safe to unpack.

All archive locations live in :data:`SOURCES`. Each dataset lists alternative archives, tried in
order; any one of them provides the dataset (in one of the layouts the dataset classes read).
Several original hosts are offline, so every URL can be replaced: pass ``url=`` (``--url``), or set
``POINTEA_DATA_MIRROR`` to a base URL or a local folder holding the archive files under their
usual names; the mirror is tried before the original hosts.

Steps for one archive: download to ``<root>/<filename>.part`` (resumed with an HTTP ``Range``
request when a partial file exists), check its sha256 when one is published (or given), rename it
to ``<root>/<filename>``, unpack it into a temporary folder beside the target, then rename the
result to ``<root>/<folder>``. A dataset whose folder already exists is not fetched again.

Unpacking trusts nothing in the archive: only plain files and folders are accepted (links, devices
and FIFOs are refused, as are absolute names and ``..``), every member is checked before anything
is written, and bytes are counted while they stream out, so a compression bomb stops at the
limits (total size and expansion ratio; see :func:`extract_archive`) whatever its headers declare.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import logging
import lzma
import os
import re
import shutil
import socket
import stat
import sys
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, Callable, Dict, List, Optional, Union

from pointea import __version__
from pointea.atomic import WriteError, write_error

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

MIRROR_ENV = "POINTEA_DATA_MIRROR"
MAX_UNPACKED_ENV = "POINTEA_MAX_UNPACKED_GB"
CHUNK_SIZE = 1 << 20
TIMEOUT_S = 60
ATTEMPTS = 3  # per archive; each retry resumes where the previous attempt stopped
GIB = 1 << 30
# ModelNet40.zip, the largest known archive, unpacks to about 9.1 GiB; the others to under 2 GiB.
DEFAULT_MAX_UNPACKED_GB = 20.0
# Point clouds, meshes and HDF5 files deflate 1-5x; a compression bomb inflates 1,000x or more.
DEFAULT_MAX_RATIO = 200.0
# The ratio is judged only past this many bytes: a small label file of one repeated value can
# deflate 200x, and small members cannot fill a disk.
RATIO_MIN_BYTES = 1 << 20


@dataclass(frozen=True)
class Source:
    """One downloadable archive.

    Attributes:
        url: where to fetch it (``http(s)://`` or ``file://``).
        filename: the archive's file name.
        sha256: expected hex digest, or None when none is published (the download is then
            reported as not verified).
        folder: the folder the archive unpacks to, created under the download root.
        layout: short description of what the folder holds.
    """

    url: str
    filename: str
    sha256: Optional[str]
    folder: str
    layout: str = ""


# Digests are recorded only where a public source states one for exactly that file:
#   modelnet40_ply_hdf5_2048.zip (435,212,151 bytes) and ModelNet40.zip (2,039,180,837 bytes):
#     tensorflow/graphics, tensorflow_graphics/datasets/modelnet40/checksums/model_net40.txt
#     (the ModelNet40.zip digest is also in FluxML/Flux3D.jl, src/datasets/modelnet/base.jl).
#   ModelNet10.zip: FluxML/Flux3D.jl, src/datasets/modelnet/base.jl (fetched from the same
#     3dvision.princeton.edu path).
# None published: modelnet40_normal_resampled.zip (Flux3D.jl gives it the digest an older Flux3D
# version gave ModelNet10.zip, so that value is not trusted) and
# shapenetcore_partanno_segmentation_benchmark_v0_normal.zip.
_MN40_HDF5 = Source(
    "https://shapenet.cs.stanford.edu/media/modelnet40_ply_hdf5_2048.zip",
    "modelnet40_ply_hdf5_2048.zip",
    "07670e237db72ece0f723b9abb571534c9ad655a6456b389646587dc72bb8bae",
    "modelnet40_ply_hdf5_2048", "HDF5, 2,048 points per shape (PointNet)")
_MN40_NORMAL = Source(
    "https://shapenet.cs.stanford.edu/media/modelnet40_normal_resampled.zip",
    "modelnet40_normal_resampled.zip", None, "modelnet40_normal_resampled",
    "text, 10,000 points with normals per shape (PointNet++)")

SOURCES: Dict[str, List[Source]] = {
    "modelnet40": [
        _MN40_HDF5,
        _MN40_NORMAL,
        Source("https://modelnet.cs.princeton.edu/ModelNet40.zip", "ModelNet40.zip",
               "42dc3e656932e387f554e25a4eb2cc0e1a1bd3ab54606e2a9eae444c60e536ac",
               "ModelNet40", "original .off meshes"),
    ],
    "modelnet10": [
        Source("https://3dvision.princeton.edu/projects/2014/3DShapeNets/ModelNet10.zip", "ModelNet10.zip",
               "9d8679435fc07d1d26f13009878db164a7aa8ea5e7ea3c8880e42794b7307d51",
               "ModelNet10", "original .off meshes"),
        replace(_MN40_NORMAL, layout="text with normals; holds the ModelNet10 lists too"),
    ],
    "shapenetpart": [
        Source("https://shapenet.cs.stanford.edu/media/shapenetcore_partanno_segmentation_benchmark_v0_normal.zip",
               "shapenetcore_partanno_segmentation_benchmark_v0_normal.zip", None,
               "shapenetcore_partanno_segmentation_benchmark_v0_normal",
               "text, points with normals and part labels"),
    ],
}


@dataclass(frozen=True)
class OnRequest:
    """A dataset its authors send only on request: nothing to fetch, only the steps to get it.

    Attributes:
        request_url: the page with the request (terms-of-use) form.
        archive: the file the authors send a link to.
        folder: where to unpack it, relative to the data root.
        unpacked: a folder the unpacked archive holds, relative to ``folder`` (proves it is there).
        layout: short description of what the archive holds.
    """

    request_url: str
    archive: str
    folder: str
    unpacked: str
    layout: str


# ScanObjectNN (hkust-vgd/scanobjectnn README): the h5 files come after the form on the project
# page is filled in; h5_files.zip unpacks to h5_files/ (the layout PointNeXt's docs use).
ON_REQUEST: Dict[str, OnRequest] = {
    "scanobjectnn": OnRequest(
        "https://hkust-vgd.github.io/scanobjectnn/", "h5_files.zip", "ScanObjectNN", "h5_files/main_split",
        "HDF5, 2,048 points per object; main_split/ holds OBJ_BG and PB_*, main_split_nobg/ OBJ_ONLY"),
}


class DownloadError(RuntimeError):
    """No archive of a dataset could be fetched; the message says how to get it by hand."""


class ChecksumError(ValueError):
    """A downloaded archive does not have the expected sha256."""


# --------------------------------------------------------------------------- public API

def download_dataset(
    name: str,
    root: PathLike,
    url: Optional[str] = None,
    sha256: Optional[str] = None,
    keep_archive: bool = False,
    progress: Optional[bool] = None,
    max_unpacked_gb: Optional[float] = None,
    max_ratio: Optional[float] = None,
) -> Path:
    """Download and unpack dataset ``name`` under ``root``; do nothing if it is already there.

    Args:
        name: a key of :data:`SOURCES` (``modelnet40``, ``modelnet10``, ``shapenetpart``) or of
            :data:`ON_REQUEST` (``scanobjectnn``: nothing is fetched; present, its folder is
            returned, else DownloadError says how to request it).
        root: folder receiving the archive and the unpacked dataset folder.
        url: fetch this archive instead of the known ones (a mirror or a local ``file://`` copy).
        sha256: expected digest of the archive at ``url`` (or of the first known archive).
        keep_archive: keep a downloaded archive after unpacking it (deleted by default to save
            space; an archive placed in ``root`` by hand is always kept).
        progress: show a progress bar (default: when stderr is a terminal).
        max_unpacked_gb, max_ratio: unpacking limits, see :func:`extract_archive`.

    Returns:
        The unpacked dataset folder, e.g. ``root / "modelnet40_ply_hdf5_2048"``.

    Raises:
        ValueError: unknown ``name``, malformed ``sha256`` or limit, or an archive that is not a
            safe zip/tar within the limits (a downloaded one is removed).
        ChecksumError: the archive's sha256 differs from the expected one (the file is removed).
        DownloadError: no archive could be fetched; says which archive to fetch and where to unpack it.
    """
    if name in ON_REQUEST:
        return _on_request(name, Path(root).expanduser())
    if name not in SOURCES:
        raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join([*SOURCES, *ON_REQUEST])}")
    if sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
        raise ValueError(f"sha256 must be 64 hex digits, got {sha256!r}")
    limits = dict(max_unpacked_gb=max_unpacked_gb, max_ratio=max_ratio)
    _unpack_limits(**limits)  # a bad limit fails before any download
    root = Path(root).expanduser()
    sources = candidate_sources(name, url, sha256)

    for source in sources:
        target = root / source.folder
        if target.is_dir() and any(target.iterdir()):
            logger.info("%s already present at %s", name, target)
            return target

    created = _missing_ancestors(root)
    root.mkdir(parents=True, exist_ok=True)
    if progress is None:
        progress = sys.stderr.isatty()
    failures = []
    try:
        for source in sources:
            placed_by_hand = (root / source.filename).is_file()
            try:
                archive = fetch_archive(source, root, progress=progress)
            except WriteError:  # a full disk: no other source would fit either
                raise
            except (urllib.error.URLError, OSError) as error:
                failures.append(f"{source.filename}: {describe_failure(source.url, error)}")
                continue
            for failure in failures:  # said once here; on total failure the error lists them
                logger.info("skipped: %s", failure)
            try:
                target = extract_archive(archive, root, source.folder, **limits)
            except ValueError as error:
                if placed_by_hand:
                    raise
                archive.unlink()  # e.g. an HTML error page saved under the archive's name
                raise ValueError(f"{error} (downloaded from {source.url}; the file was removed)") from None
            if not keep_archive and not placed_by_hand:
                archive.unlink()
            logger.info("%s ready at %s", name, target)
            return target
        raise DownloadError(_manual_instructions(name, root, sources, failures))
    finally:
        _remove_if_empty(created)


def candidate_sources(name: str, url: Optional[str] = None, sha256: Optional[str] = None) -> List[Source]:
    """Archives to try for ``name``, in order: ``url``, else the mirror then the known hosts."""
    known = SOURCES[name]
    if url is not None:
        filename = PurePosixPath(urllib.parse.urlparse(url).path).name
        if not filename:
            raise ValueError(f"cannot tell the archive's file name from url {url!r}")
        match = next((s for s in known if s.filename == filename), None)
        folder = match.folder if match else _strip_archive_suffix(filename)
        return [Source(url, filename, sha256, folder, match.layout if match else "")]
    if sha256 is not None:
        known = [replace(known[0], sha256=sha256)]
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    if not mirror:
        return list(known)
    return [replace(s, url=mirror_url(mirror, s.filename)) for s in known] + list(known)


def mirror_url(mirror: str, filename: str) -> str:
    """URL of ``filename`` under ``mirror``: a base URL or a local folder."""
    if "://" not in mirror:
        return (Path(mirror).expanduser().resolve() / filename).as_uri()
    return mirror.rstrip("/") + "/" + urllib.parse.quote(filename)


def sha256_of(path: PathLike) -> str:
    """Hex sha256 digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_SIZE), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_archive(source: Source, root: Path, progress: bool = False) -> Path:
    """Download ``source`` to ``root / source.filename`` (resuming a ``.part`` file) and check it.

    An archive already at that path (downloaded before, or placed there by hand) is checked and
    reused. The digest is compared when ``source.sha256`` is set; otherwise the download is logged
    as not verified.

    Raises:
        ChecksumError: digest mismatch; the bad file is deleted so the next try starts afresh.
        urllib.error.URLError, OSError: the download failed (a partial file is kept for resuming).
    """
    archive = root / source.filename
    if archive.is_file():
        _verify(archive, source)
        return archive
    partial = archive.with_name(archive.name + ".part")
    for attempt in range(1, ATTEMPTS + 1):
        try:
            _download(source.url, partial, progress)
            break
        except (urllib.error.HTTPError, WriteError):  # a full disk is not helped by retrying
            raise
        except OSError as error:
            if attempt == ATTEMPTS or not partial.exists():
                raise
            logger.warning("download of %s interrupted (%s); resuming", source.url, error)
    _verify(partial, source)
    os.replace(partial, archive)
    return archive


def extract_archive(
    archive: PathLike,
    root: PathLike,
    folder: str,
    max_unpacked_gb: Optional[float] = None,
    max_ratio: Optional[float] = None,
) -> Path:
    """Unpack a zip or tar ``archive`` so that ``root / <top folder>`` appears atomically.

    Every member is checked before anything is written: only plain files and folders with
    relative names inside the archive are accepted (links, devices, FIFOs, absolute names, ``..``,
    encrypted or duplicate members are refused). Bytes are counted while each member streams out
    in chunks, so the limits hold whatever sizes the headers declare. An archive holding one
    top-level folder gives that folder; an archive with loose files is unpacked into
    ``root / folder``. On any error the temporary folder is removed and ``root`` is unchanged.

    Args:
        archive: the zip or tar file (any compression ``tarfile`` reads).
        root: folder receiving the unpacked folder.
        folder: folder name for an archive of loose files.
        max_unpacked_gb: most GiB to unpack (default: ``$POINTEA_MAX_UNPACKED_GB`` or 20).
        max_ratio: most unpacked bytes per archive byte, for the whole archive and for each zip
            member past 1 MiB (default 200; the known archives stay under 5).

    Returns:
        The unpacked folder.

    Raises:
        ValueError: not a zip/tar archive, a corrupt one, a refused member or a limit exceeded;
            the message names the archive and the member.
    """
    archive = Path(archive)
    root = Path(root).resolve()
    max_bytes, ratio = _unpack_limits(max_unpacked_gb, max_ratio)
    budget = _Budget(archive, max_bytes, ratio, archive.stat().st_size)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder}.", suffix=".unpack", dir=root))
    try:
        try:
            if zipfile.is_zipfile(archive):
                _extract_zip(archive, staging, budget)
            elif tarfile.is_tarfile(archive):
                _extract_tar(archive, staging, budget)
            else:
                raise ValueError(f"{archive}: not a zip or tar archive")
        except (zipfile.BadZipFile, tarfile.TarError, zlib.error, lzma.LZMAError, gzip.BadGzipFile,
                EOFError, NotImplementedError) as error:
            raise ValueError(f"{archive}: corrupt or unsupported archive ({error})") from None
        entries = [p for p in staging.iterdir() if p.name != "__MACOSX"]
        if len(entries) == 1 and entries[0].is_dir():
            unpacked, target = entries[0], root / entries[0].name
        else:
            unpacked, target = staging, root / folder
        if target.exists() and any(target.iterdir()):
            raise ValueError(f"{archive}: cannot unpack, {target} already exists and is not empty")
        if target.exists():
            target.rmdir()
        os.replace(unpacked, target)
        return target
    finally:
        if staging.exists():
            shutil.rmtree(staging)


def describe_failure(url: str, error: BaseException) -> str:
    """One line in words for a failed fetch of ``url``, e.g. ``could not reach host: connection refused``."""
    if isinstance(error, _Incomplete):
        return str(error)
    parsed = urllib.parse.urlparse(url)
    if isinstance(error, urllib.error.HTTPError):
        return f"{parsed.netloc} answered HTTP {error.code} {error.reason} for {url}"
    reason = error.reason if isinstance(error, urllib.error.URLError) else error
    if parsed.scheme == "file":
        path = urllib.request.url2pathname(parsed.path)
        if isinstance(reason, FileNotFoundError):
            return f"no file at {path}"
        return f"could not read {path}: {_in_words(reason)}"
    return f"could not reach {parsed.netloc or url}: {_in_words(reason)}"


# --------------------------------------------------------------------------- internals

class _Incomplete(ConnectionError):
    """The server closed the connection before sending the whole file."""


def _in_words(reason: object) -> str:
    """An OS or socket error as lower-case words, without the ``[Errno N]`` prefix."""
    if isinstance(reason, (socket.timeout, TimeoutError)):
        return "timed out"
    text = getattr(reason, "strerror", None) or str(reason) or type(reason).__name__
    return text[:1].lower() + text[1:]


def _download(url: str, partial: Path, progress: bool) -> None:
    """Fetch ``url`` into ``partial``, continuing from its current size when the server allows."""
    offset = partial.stat().st_size if partial.exists() else 0
    headers = {"User-Agent": f"pointea/{__version__}"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:  # nothing left to send: the partial file is complete
            return
        raise
    with response:
        status = getattr(response, "status", None)
        resumed = status == 206 and _range_start(response.headers.get("Content-Range")) == offset
        if offset and not resumed:
            logger.info("%s: the server does not resume, downloading from the start", url)
            offset = 0
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else None
        bar = _progress_bar(total, offset, partial.name, progress)
        try:
            with open(partial, "ab" if resumed else "wb") as handle:
                for chunk in iter(lambda: response.read(CHUNK_SIZE), b""):
                    handle.write(chunk)
                    bar.update(len(chunk))
        except http.client.HTTPException as error:
            raise _Incomplete(f"{url}: connection broken ({error!r})") from None
        except OSError as error:  # a full disk: name the partial file, not the connection
            converted = write_error(partial, error)
            if converted is None:
                raise
            raise converted from error
        finally:
            bar.close()
    size = partial.stat().st_size
    if total is not None and size < total:
        raise _Incomplete(f"{url}: connection closed after {size} of {total} bytes")


def _range_start(content_range: Optional[str]) -> Optional[int]:
    match = re.match(r"bytes (\d+)-", content_range or "")
    return int(match.group(1)) if match else None


def _progress_bar(total: Optional[int], initial: int, name: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024,
                desc=name, disable=not enabled)


def _verify(path: Path, source: Source) -> None:
    """Compare ``path`` with ``source.sha256``; say plainly when there is nothing to compare with."""
    digest = sha256_of(path)
    if source.sha256 is None:
        published = next((s.sha256 for sources in SOURCES.values() for s in sources
                          if s.filename == source.filename and s.sha256), None)
        if published:  # a --url copy of a known archive: offer the published digest
            logger.warning("%s: not verified: no checksum given for %s (sha256 of this copy %s; "
                           "the published one is %s, pass it as sha256= / --sha256 to check)",
                           source.filename, source.url, digest, published)
        else:
            logger.warning("%s: not verified: no published checksum (sha256 of this copy %s)",
                           source.filename, digest)
        return
    if digest != source.sha256.lower():
        path.unlink()
        raise ChecksumError(
            f"{source.filename}: sha256 mismatch, expected {source.sha256.lower()}, got {digest} "
            f"(from {source.url}); the file was removed, a new try downloads it again"
        )
    logger.info("%s: sha256 verified", source.filename)


def _unpack_limits(max_unpacked_gb: Optional[float] = None, max_ratio: Optional[float] = None):
    """The limits in bytes and as a ratio, from the arguments, else the environment, else the defaults."""
    if max_unpacked_gb is None:
        text = os.environ.get(MAX_UNPACKED_ENV, "").strip()
        try:
            max_unpacked_gb = float(text) if text else DEFAULT_MAX_UNPACKED_GB
        except ValueError:
            raise ValueError(f"{MAX_UNPACKED_ENV} must be a number of GiB, got {text!r}") from None
    if max_ratio is None:
        max_ratio = DEFAULT_MAX_RATIO
    if not max_unpacked_gb > 0:
        raise ValueError(f"max_unpacked_gb must be positive, got {max_unpacked_gb!r}")
    if not max_ratio >= 1:
        raise ValueError(f"max_ratio must be at least 1, got {max_ratio!r}")
    return int(max_unpacked_gb * GIB), float(max_ratio)


@dataclass
class _Budget:
    """Unpacking limits for one archive and the bytes written so far."""

    archive: Path
    max_bytes: int
    max_ratio: float
    archive_size: int
    written: int = 0
    declared: int = 0

    def declare(self, name: str, size: int, compressed: Optional[int]) -> None:
        """Refuse early, before any byte is written, when the headers already declare too much.

        Headers may also understate the sizes: :meth:`copy` counts what actually streams out.
        """
        self.declared += size
        if self.declared > self.max_bytes:
            raise ValueError(f"{self.archive}: refusing member {name!r}, the archive declares "
                             f"{self.declared / GIB:.2f} GiB unpacked, over the {self._limit_text()}")
        self._check_ratio(name, size, compressed)
        self._check_ratio(name, self.declared, self.archive_size)

    def copy(self, source: BinaryIO, target: Path, name: str, compressed: Optional[int]) -> None:
        """Stream member ``name`` into a new file, refusing it before a chunk crosses a limit."""
        member = 0
        try:
            with open(target, "xb") as out:
                for chunk in iter(lambda: source.read(CHUNK_SIZE), b""):
                    member += len(chunk)
                    self.written += len(chunk)
                    if self.written > self.max_bytes:
                        raise ValueError(f"{self.archive}: stopped at member {name!r}, more than the "
                                         f"{self._limit_text()} would be unpacked")
                    self._check_ratio(name, member, compressed)
                    self._check_ratio(name, self.written, self.archive_size)
                    out.write(chunk)
        except OSError as error:  # a full disk: name the file being unpacked
            converted = write_error(target, error)
            if converted is None:
                raise
            raise converted from error

    def _check_ratio(self, name: str, size: int, packed: Optional[int]) -> None:
        if packed is not None and size > RATIO_MIN_BYTES and size > self.max_ratio * max(packed, 1):
            raise ValueError(f"{self.archive}: refusing member {name!r}, it inflates over {self.max_ratio:g}x "
                             f"(compression-bomb guard; raise it with max_ratio= / --max-ratio)")

    def _limit_text(self) -> str:
        return (f"{self.max_bytes / GIB:g} GiB limit (raise it with --max-unpacked-gb or "
                f"{MAX_UNPACKED_ENV})")


def _member_target(base: Path, name: str, archive: Path) -> Path:
    """Where member ``name`` lands under ``base``; refuses names escaping ``base``."""
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or re.match(r"^[A-Za-z]:", name) or ".." in pure.parts or "\0" in name:
        raise ValueError(f"{archive}: refusing member {name!r} that points outside the target folder")
    return base.joinpath(*[part for part in pure.parts if part not in ("", ".")])


def _plan(staging: Path, archive: Path, members: list) -> None:
    """Refuse duplicate files and files that are also folders, before anything is written.

    ``members`` holds ``(name, target, is_dir)``.
    """
    files, folders = set(), {staging}
    for name, target, is_dir in members:
        if is_dir:
            folders.add(target)
        elif target in files or target == staging:
            raise ValueError(f"{archive}: refusing member {name!r}, a duplicate or empty name")
        else:
            files.add(target)
        folders.update(target.parents)
    clash = files & folders
    if clash:
        raise ValueError(f"{archive}: refusing member {min(clash).relative_to(staging).as_posix()!r}, "
                         f"both a file and a folder")


def _extract_zip(archive: Path, staging: Path, budget: _Budget) -> None:
    with zipfile.ZipFile(archive) as handle:
        members = handle.infolist()
        planned = []
        for member in members:
            target = _member_target(staging, member.filename, archive)
            kind = stat.S_IFMT(member.external_attr >> 16)
            if kind == stat.S_IFLNK:
                raise ValueError(f"{archive}: refusing link {member.filename!r} "
                                 f"(dataset archives hold only files and folders)")
            if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise ValueError(f"{archive}: refusing special file member {member.filename!r}")
            if member.flag_bits & 0x1:
                raise ValueError(f"{archive}: refusing encrypted member {member.filename!r}")
            budget.declare(member.filename, member.file_size, member.compress_size)
            planned.append((member.filename, target, member.is_dir()))
        _plan(staging, archive, planned)
        _write_planned(members, planned, handle.open, lambda member: member.compress_size, budget)


def _extract_tar(archive: Path, staging: Path, budget: _Budget) -> None:
    # Written by hand rather than with extractall: tarfile's "data" filter is missing on older
    # Pythons, and these archives need nothing beyond plain files and folders.
    with tarfile.open(archive) as handle:
        members, planned = [], []
        for member in handle:  # lazily, so a bomb's header stops the scan before its data is read
            members.append(member)
            target = _member_target(staging, member.name, archive)
            if member.issym() or member.islnk():
                raise ValueError(f"{archive}: refusing link {member.name!r} -> {member.linkname!r} "
                                 f"(dataset archives hold only files and folders)")
            if not (member.isfile() or member.isdir()):
                raise ValueError(f"{archive}: refusing special file member {member.name!r}")
            budget.declare(member.name, member.size if member.isfile() else 0, None)
            planned.append((member.name, target, member.isdir()))
        _plan(staging, archive, planned)
        _write_planned(members, planned, handle.extractfile, lambda member: None, budget)


def _write_planned(members: list, planned: list, open_member: Callable[[Any], BinaryIO],
                   compressed_size: Callable[[Any], Optional[int]], budget: _Budget) -> None:
    """Make the folders and stream the files that :func:`_plan` accepted (``planned`` holds
    ``(name, target, is_dir)`` for each of ``members``), under ``budget``'s limits."""
    for member, (name, target, is_dir) in zip(members, planned):
        if is_dir:
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with open_member(member) as source:
            budget.copy(source, target, name, compressed=compressed_size(member))


def _strip_archive_suffix(filename: str) -> str:
    for suffix in (".tar.gz", ".tar.bz2", ".tar.xz", ".tgz", ".zip", ".tar"):
        if filename.lower().endswith(suffix):
            return filename[: -len(suffix)]
    return filename


def _missing_ancestors(folder: Path) -> List[Path]:
    """``folder`` and those of its parents that do not exist yet, deepest first."""
    missing = []
    for path in (folder, *folder.parents):
        if path.exists():
            break
        missing.append(path)
    return missing


def _remove_if_empty(folders: List[Path]) -> None:
    """Remove the folders this call created (deepest first) that are still empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:  # not empty (a dataset, an archive or a .part to resume) or already gone
            return


def request_instructions(name: str, root: PathLike) -> str:
    """The steps to get an :data:`ON_REQUEST` dataset into ``root``."""
    request = ON_REQUEST[name]
    target = Path(root).expanduser() / request.folder
    return "\n".join([
        f"{name} cannot be downloaded automatically: its authors send it on request only.",
        f"  1. Fill in the request (terms-of-use) form linked from {request.request_url}",
        f"  2. Download {request.archive} ({request.layout}) from the link they send",
        f"  3. Unpack it in {target}/ so that {target / request.unpacked}/ exists",
        f"     ({target / PurePosixPath(request.unpacked).name}/ is read too)",
    ])


def _on_request(name: str, root: Path) -> Path:
    """The unpacked folder of an :data:`ON_REQUEST` dataset; DownloadError with the steps when absent."""
    request = ON_REQUEST[name]
    target = root / request.folder
    for folder in (target / request.unpacked, target / PurePosixPath(request.unpacked).name):
        if folder.is_dir() and any(folder.iterdir()):
            logger.info("%s already present at %s", name, folder)
            return folder
    raise DownloadError(request_instructions(name, root))


def _manual_instructions(name: str, root: Path, sources: List[Source], failures: List[str]) -> str:
    lines = [f"Could not download {name} into {root}:"]
    lines += [f"  - {failure}" for failure in failures]
    lines.append("Fetch one of these archives by hand (any one is enough):")
    for source in sources:
        checksum = source.sha256 or "unknown (no published checksum; the file will not be verified)"
        lines.append(f"  - {source.filename} ({source.layout or 'archive'}), sha256 {checksum}")
        lines.append(f"      from {source.url}")
        lines.append(f"      unpack it so that {root / source.folder}/ exists "
                     f"(or save it as {root / source.filename} and rerun to check and unpack it)")
    example = sources[0].filename
    lines.append(
        f"Or use a mirror: pointea download {name} --data-root {root} --url <mirror>/{example}, "
        f"or set {MIRROR_ENV}=<base URL or folder holding {example}>."
    )
    return "\n".join(lines)
