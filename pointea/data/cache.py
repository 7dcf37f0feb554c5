"""Processed-array cache for datasets: one ``.npz`` per (dataset, split, options, sources).

Parsing thousands of small files is slow, so loaders parse a split once and save the result here.
A cache file is named ``<label>-<root hash>-<key hash>.npz`` inside ``<cache dir>/<namespace>/``:
the label keeps the options readable (``trainval-1024pts-xyz``), the key hash covers the options,
the source root and every source file's path, size and modification time, so editing, adding or
touching a source file gives a new key and the split is rebuilt (PyG's ``processed/`` folder, but
outside the data root, which may be read-only). Writes are atomic; after a successful write the
stale caches of the same label and root are deleted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
from pathlib import Path
from typing import Callable, Dict, Iterable, Mapping, Optional, Sequence, Union

import numpy as np

from pointea.atomic import WriteError, atomic_path

PathLike = Union[str, os.PathLike]
Arrays = Dict[str, np.ndarray]

# Bump when the content or layout of cached arrays changes, so old caches are not reused.
CACHE_FORMAT_VERSION = 1

logger = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """The cache folder: ``$POINTEA_CACHE``, else ``$XDG_CACHE_HOME/pointea``, else ``~/.cache/pointea``."""
    if os.environ.get("POINTEA_CACHE"):
        return Path(os.environ["POINTEA_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "pointea"
    return Path.home() / ".cache" / "pointea"


def resolve_cache_dir(cache_dir: Optional[PathLike] = None) -> Path:
    """``cache_dir`` as a Path, or :func:`default_cache_dir` when None."""
    return Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()


def _digest(payload: object) -> str:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sources_fingerprint(root: PathLike, sources: Iterable[str]) -> list:
    """``[name, size, mtime_ns]`` of every source file (stat only, files are not opened).

    Args:
        root: folder the names are relative to.
        sources: file names relative to ``root`` (plain strings: this runs over thousands of files).

    Raises:
        FileNotFoundError: a source file does not exist.
    """
    root = os.fspath(root)
    fingerprint = []
    for name in sources:
        path = os.path.join(root, name)
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            raise FileNotFoundError(f"Source file not found: {path}") from None
        fingerprint.append([name, stat.st_size, stat.st_mtime_ns])
    return fingerprint


def cache_file(
    namespace: str,
    label: str,
    root: PathLike,
    sources: Iterable[str],
    options: Mapping[str, object],
    cache_dir: Optional[PathLike] = None,
) -> Path:
    """Path of the cache file for one processed split.

    Args:
        namespace: dataset folder inside the cache dir, e.g. ``"modelnet40"``.
        label: readable options, e.g. ``"folder-trainval-1024pts-xyz"`` (safe file-name characters).
        root: the data folder the sources live in (its resolved path is part of the name).
        sources: every file whose content goes into the cache, relative to ``root``.
        options: every option that changes the cached arrays.
        cache_dir: cache folder, default :func:`default_cache_dir`.

    Returns:
        ``<cache_dir>/<namespace>/<label>-<root hash 8>-<key hash 16>.npz``.
    """
    root = Path(root).resolve()
    root_hash = _digest(str(root))[:8]
    key = {
        "version": CACHE_FORMAT_VERSION,
        "options": dict(options),
        "sources": sources_fingerprint(root, sources),
    }
    folder = resolve_cache_dir(cache_dir) / namespace
    return folder / f"{label}-{root_hash}-{_digest(key)[:16]}.npz"


def load_arrays(path: PathLike) -> Optional[Arrays]:
    """Load a cache file into memory; None when it is missing or unreadable (it is then rebuilt)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        logger.warning("Ignoring unreadable cache file %s (%s); rebuilding it", path, error)
        return None


def save_arrays(path: PathLike, arrays: Mapping[str, np.ndarray]) -> bool:
    """Write ``arrays`` to ``path`` as an uncompressed ``.npz``, atomically.

    Stale siblings (same label and root, another key hash) are removed afterwards. A cache folder
    that cannot be written is not an error: a warning is logged and False returned.
    """
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as handle:  # a handle, since np.savez appends .npz to names
                np.savez(handle, **arrays)
    except OSError as error:  # e.g. a full disk: the run can go on, only slower next time
        reason = error.strerror if isinstance(error, WriteError) else error  # the path is named already
        logger.warning("Could not write cache file %s (%s); continuing without a cache", path, reason)
        return False
    prefix = path.name.rsplit("-", 1)[0] + "-"
    for stale in path.parent.glob(prefix + "*.npz"):
        if stale != path:
            try:
                stale.unlink()
            except OSError:
                pass  # another process may have removed or be replacing it
    return True


def load_or_build(path: PathLike, build: Callable[[], Arrays], keys: Sequence[str] = ()) -> Arrays:
    """Return the arrays cached at ``path``, or ``build()`` them and cache the result.

    ``build`` runs fully in memory before anything is written, so a failed build (a bad source
    file) leaves no cache file behind. A cache file that lacks one of ``keys`` is rebuilt.
    """
    arrays = load_arrays(path)
    missing = [key for key in keys if arrays is not None and key not in arrays]
    if missing:
        logger.warning("Ignoring cache file %s without the arrays %s; rebuilding it", path, missing)
    elif arrays is not None:
        logger.debug("Loaded cache %s", path)
        return arrays
    arrays = build()
    if save_arrays(path, arrays):
        logger.info("Cached %s", path)
    return arrays
