"""Fetch and unpack the public benchmark archives: resumable, checksummed, atomic, safe to unpack.

All archive locations live in :data:`SOURCES`. Each dataset lists alternative archives, tried in
order; any one of them provides the dataset (in one of the layouts the dataset classes read).
Several original hosts are offline, so every URL can be replaced: pass ``url=`` (``--url``), or set
``POINTEA_DATA_MIRROR`` to a base URL or a local folder holding the archive files under their
usual names; the mirror is tried before the original hosts.

Steps for one archive: download to ``<root>/<filename>.part`` (resumed with an HTTP ``Range``
request when a partial file exists), verify its sha256, rename it to ``<root>/<filename>``, unpack
into a temporary folder beside the target (refusing members that would land outside it), then
rename the result to ``<root>/<folder>``. A dataset whose folder already exists is not fetched
again.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Dict, List, Optional, Union

from pointea import __version__

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

MIRROR_ENV = "POINTEA_DATA_MIRROR"
CHUNK_SIZE = 1 << 20
TIMEOUT_S = 60
ATTEMPTS = 3  # per archive; each retry resumes where the previous attempt stopped


@dataclass(frozen=True)
class Source:
    """One downloadable archive.

    Attributes:
        url: where to fetch it (``http(s)://`` or ``file://``).
        filename: the archive's file name.
        sha256: expected hex digest, or None when unknown (the digest is then logged, not checked).
        folder: the folder the archive unpacks to, created under the download root.
        layout: short description of what the folder holds.
    """

    url: str
    filename: str
    sha256: Optional[str]
    folder: str
    layout: str = ""


SOURCES: Dict[str, List[Source]] = {
    "modelnet40": [
        Source("https://shapenet.cs.stanford.edu/media/modelnet40_ply_hdf5_2048.zip",
               "modelnet40_ply_hdf5_2048.zip", None, "modelnet40_ply_hdf5_2048",
               "HDF5, 2,048 points per shape (PointNet)"),
        Source("https://shapenet.cs.stanford.edu/media/modelnet40_normal_resampled.zip",
               "modelnet40_normal_resampled.zip", None, "modelnet40_normal_resampled",
               "text, 10,000 points with normals per shape (PointNet++)"),
        Source("http://3dvision.princeton.edu/projects/2014/3DShapeNets/ModelNet40.zip",
               "ModelNet40.zip", None, "ModelNet40", "original .off meshes"),
    ],
    "modelnet10": [
        Source("http://3dvision.princeton.edu/projects/2014/3DShapeNets/ModelNet10.zip",
               "ModelNet10.zip", None, "ModelNet10", "original .off meshes"),
        Source("https://shapenet.cs.stanford.edu/media/modelnet40_normal_resampled.zip",
               "modelnet40_normal_resampled.zip", None, "modelnet40_normal_resampled",
               "text with normals; holds the ModelNet10 lists too"),
    ],
    "shapenetpart": [
        Source("https://shapenet.cs.stanford.edu/media/shapenetcore_partanno_segmentation_benchmark_v0_normal.zip",
               "shapenetcore_partanno_segmentation_benchmark_v0_normal.zip", None,
               "shapenetcore_partanno_segmentation_benchmark_v0_normal",
               "text, points with normals and part labels"),
    ],
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
) -> Path:
    """Download and unpack dataset ``name`` under ``root``; do nothing if it is already there.

    Args:
        name: a key of :data:`SOURCES` (``modelnet40``, ``modelnet10``, ``shapenetpart``).
        root: folder receiving the archive and the unpacked dataset folder.
        url: fetch this archive instead of the known ones (a mirror or a local ``file://`` copy).
        sha256: expected digest of the archive at ``url`` (or of the first known archive).
        keep_archive: keep a downloaded archive after unpacking it (deleted by default to save
            space; an archive placed in ``root`` by hand is always kept).
        progress: show a progress bar (default: when stderr is a terminal).

    Returns:
        The unpacked dataset folder, e.g. ``root / "modelnet40_ply_hdf5_2048"``.

    Raises:
        ValueError: unknown ``name`` or malformed ``sha256``.
        ChecksumError: the archive's sha256 differs from the expected one (the file is removed).
        DownloadError: no archive could be fetched; says which archive to fetch and where to unpack it.
    """
    if name not in SOURCES:
        raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(SOURCES)}")
    if sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
        raise ValueError(f"sha256 must be 64 hex digits, got {sha256!r}")
    root = Path(root).expanduser()
    sources = candidate_sources(name, url, sha256)

    for source in sources:
        target = root / source.folder
        if target.is_dir() and any(target.iterdir()):
            logger.info("%s already present at %s", name, target)
            return target

    root.mkdir(parents=True, exist_ok=True)
    if progress is None:
        progress = sys.stderr.isatty()
    failures = []
    for source in sources:
        placed_by_hand = (root / source.filename).is_file()
        try:
            archive = fetch_archive(source, root, progress=progress)
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", None) or error
            logger.warning("could not fetch %s: %s", source.url, reason)
            failures.append(f"{source.url}: {reason}")
            continue
        try:
            target = extract_archive(archive, root, source.folder)
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
    """Download ``source`` to ``root / source.filename`` (resuming a ``.part`` file) and verify it.

    An archive already at that path (downloaded before, or placed there by hand) is verified and
    reused.

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
        except urllib.error.HTTPError:
            raise
        except OSError as error:
            if attempt == ATTEMPTS or not partial.exists():
                raise
            logger.warning("download of %s interrupted (%s); resuming", source.url, error)
    _verify(partial, source)
    os.replace(partial, archive)
    return archive


def extract_archive(archive: Path, root: Path, folder: str) -> Path:
    """Unpack a zip or tar ``archive`` so that ``root / <top folder>`` appears atomically.

    Members are checked before anything is written: absolute paths, ``..`` components, links
    pointing outside the archive and special files are refused. An archive holding one top-level
    folder gives that folder; an archive with loose files is unpacked into ``root / folder``.

    Returns:
        The unpacked folder.

    Raises:
        ValueError: not a zip/tar archive, or a member would escape the target folder.
    """
    root = Path(root).resolve()
    staging = Path(tempfile.mkdtemp(prefix=f".{folder}.", suffix=".unpack", dir=root))
    try:
        if zipfile.is_zipfile(archive):
            _extract_zip(archive, staging)
        elif tarfile.is_tarfile(archive):
            _extract_tar(archive, staging)
        else:
            raise ValueError(f"{archive}: not a zip or tar archive")
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


# --------------------------------------------------------------------------- internals

class _Incomplete(ConnectionError):
    """The server closed the connection before sending the whole file."""


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
    digest = sha256_of(path)
    if source.sha256 is None:
        logger.warning("%s: sha256 %s could not be verified (no known checksum for %s)",
                       path.name, digest, source.url)
        return
    if digest != source.sha256.lower():
        path.unlink()
        raise ChecksumError(
            f"{source.filename}: sha256 mismatch, expected {source.sha256.lower()}, got {digest} "
            f"(from {source.url}); the file was removed, a new try downloads it again"
        )
    logger.info("%s: sha256 verified", path.name)


def _member_target(base: Path, name: str, archive: Path) -> Path:
    """Where member ``name`` lands under ``base``; refuses names escaping ``base``."""
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or re.match(r"^[A-Za-z]:", name) or ".." in pure.parts:
        raise ValueError(f"{archive}: refusing member {name!r} that points outside the target folder")
    return base.joinpath(*[part for part in pure.parts if part not in ("", ".")])


def _extract_zip(archive: Path, staging: Path) -> None:
    with zipfile.ZipFile(archive) as handle:
        members = handle.infolist()
        for member in members:
            _member_target(staging, member.filename, archive)
            if (member.external_attr >> 16) & 0o170000 == 0o120000:
                raise ValueError(f"{archive}: refusing symbolic link member {member.filename!r}")
        handle.extractall(staging, members)


def _extract_tar(archive: Path, staging: Path) -> None:
    with tarfile.open(archive) as handle:
        members = handle.getmembers()
        for member in members:
            target = _member_target(staging, member.name, archive)
            if member.issym() or member.islnk():
                # A link target is relative to the link's folder (symlink) or the archive root (hard link).
                origin = target.parent if member.issym() else staging
                resolved = os.path.normpath(origin / member.linkname)
                if os.path.isabs(member.linkname) or not resolved.startswith(str(staging) + os.sep):
                    raise ValueError(
                        f"{archive}: refusing link {member.name!r} -> {member.linkname!r} outside the target folder"
                    )
            elif not (member.isfile() or member.isdir()):
                raise ValueError(f"{archive}: refusing special file member {member.name!r}")
        if hasattr(tarfile, "data_filter"):
            handle.extractall(staging, members, filter="data")
        else:
            handle.extractall(staging, members)


def _strip_archive_suffix(filename: str) -> str:
    for suffix in (".tar.gz", ".tar.bz2", ".tar.xz", ".tgz", ".zip", ".tar"):
        if filename.lower().endswith(suffix):
            return filename[: -len(suffix)]
    return filename


def _manual_instructions(name: str, root: Path, sources: List[Source], failures: List[str]) -> str:
    lines = [f"Could not download {name} into {root}:"]
    lines += [f"  - {failure}" for failure in failures]
    lines.append("Fetch one of these archives by hand (any one is enough):")
    for source in sources:
        checksum = source.sha256 or "unknown"
        lines.append(f"  - {source.filename} ({source.layout or 'archive'}), sha256 {checksum}")
        lines.append(f"      from {source.url}")
        lines.append(f"      unpack it so that {root / source.folder}/ exists "
                     f"(or save it as {root / source.filename} and rerun to verify and unpack it)")
    example = sources[0].filename
    lines.append(
        f"Or use a mirror: pointea download {name} --root {root} --url <mirror>/{example}, "
        f"or set {MIRROR_ENV}=<base URL or folder holding {example}>."
    )
    return "\n".join(lines)
