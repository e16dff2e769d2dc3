"""The on-disk cache: where it lives, how its entries are keyed, checked and rebuilt.

BEM solutions, forwards, eLORETA kernels and the grid's source space take
seconds to minutes to build, so :func:`cached` stores them under
:func:`cache_dir`. An entry's key covers every parameter that changes it,
:data:`CACHE_VERSION` and the installed MNE and nilearn versions (whose code
and data build it); its JSON sidecar holds the file's sha256, so a corrupt or
stale entry is rebuilt, never trusted. :func:`file_sha256` is the package's one
file checksum, also recorded with and checked against weight files.

MNE and nilearn are imported only when an entry is looked up, so the network
module, which checksums weights with :func:`file_sha256`, stays free of them.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: The sub-folders :func:`cached` writes (its kinds); :func:`clear_cache` removes only these
#: and the template subjects folders.
CACHE_KINDS = ("bem", "fwd", "kernel", "src")
#: Bumped whenever a change alters what is built, so old caches rebuild.
CACHE_VERSION = 1


class CacheFolderError(RuntimeError):
    """The cache folder cannot be created or written; the message names ``MNE_PIUNET_CACHE``."""


#: Cache folders this process has checked it can write to (see :func:`cache_dir`).
_WRITABLE: set[Path] = set()


def cache_dir() -> Path:
    """Folder of the on-disk cache.

    ``$MNE_PIUNET_CACHE`` when set, else ``~/.cache/mne-piunet``. A folder
    that cannot be created or written raises an error naming the variable,
    once per process and folder; concurrent processes may create it at once.

    Returns
    -------
    path : pathlib.Path
        The folder, created if needed.
    """
    root = os.environ.get("MNE_PIUNET_CACHE") or Path.home() / ".cache" / "mne-piunet"
    path = Path(root).expanduser()
    if path in _WRITABLE:
        return path
    try:
        path.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()  # a unique name: concurrent callers never collide
    except OSError as err:
        raise CacheFolderError(
            f"mne-piunet's cache folder {path} cannot be created or written ({type(err).__name__}: "
            f"{err.strerror or err}). Point the MNE_PIUNET_CACHE environment variable at a writable "
            "folder, e.g. export MNE_PIUNET_CACHE=$HOME/mne-piunet-cache (os.environ in Python)."
        ) from None
    _WRITABLE.add(path)
    return path


def cache_size() -> int:
    """Bytes the cache folder holds (:func:`cache_dir`).

    Returns
    -------
    size : int
    """
    return sum(f.stat().st_size for f in cache_dir().rglob("*") if f.is_file())


def clear_cache() -> int:
    """Delete what the cache wrote in its folder (:data:`CACHE_KINDS`, the template subjects); it is rebuilt when needed.

    Anything else in the folder (``MNE_PIUNET_CACHE`` may name a shared one) is left alone.

    Returns
    -------
    freed : int
        Bytes removed.
    """
    import shutil

    root = cache_dir()
    freed = 0
    for entry in root.iterdir():  # only what the cache writes: MNE_PIUNET_CACHE may name a shared folder
        if not (
            entry.name in CACHE_KINDS
            or entry.name.startswith(("subjects-", "bem-ico"))
            or ".tmp" in entry.name
        ):
            continue
        if entry.is_dir() and not entry.is_symlink():
            freed += sum(f.stat().st_size for f in entry.rglob("*") if f.is_file())
            shutil.rmtree(entry)
        else:
            freed += entry.stat().st_size
            entry.unlink()
    return freed


def _library_versions() -> dict[str, str]:
    """Versions of the libraries whose code and data build the cached artefacts.

    MNE computes the BEMs, forwards, source spaces and eLORETA kernels; nilearn
    ships the MNI T1 and fsaverage5 surfaces of the template. A new version of
    either may change them, so both are part of every cache key.
    """
    import mne
    import nilearn

    return dict(mne=mne.__version__, nilearn=nilearn.__version__)


def _hash_params(params: dict[str, Any], libs: dict[str, str]) -> str:
    """Cache key of an entry: 16 hex digits of the parameters, versions and cache version."""
    text = json.dumps({"v": CACHE_VERSION, "libs": libs, **params}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def digest(*parts) -> str:
    """Hex sha256 of arrays' bytes and strings, in order: the package's one hash of data in memory.

    Parameters
    ----------
    *parts : array-like | str
        Arrays (hashed as their C-contiguous bytes, so their dtype counts) or text.

    Returns
    -------
    digest : str
        64 hex digits.
    """
    import numpy as np

    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else np.ascontiguousarray(part).tobytes())
    return h.hexdigest()


def file_sha256(fname: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks.

    Parameters
    ----------
    fname : path-like
        The file.

    Returns
    -------
    digest : str
        64 hex digits.
    """
    h = hashlib.sha256()
    with open(fname, "rb") as fid:
        for block in iter(lambda: fid.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_valid(kind: str, fname: Path, meta_fname: Path, read: Callable[[Path], Any]) -> tuple[bool, Any]:
    """``(True, read(fname))`` when the entry exists and passes its checksum, else ``(False, None)``."""
    from mne.utils import logger

    if not (fname.exists() and meta_fname.exists()):
        return False, None
    try:
        meta = json.loads(meta_fname.read_text())
        if meta.get("sha256") == file_sha256(fname):
            return True, read(fname)
        logger.info(f"Cached {kind} {fname.name} failed its checksum: rebuilding")
    except Exception as exc:  # a corrupt cache entry is rebuilt, not trusted
        logger.info(f"Cached {kind} {fname.name} is unreadable ({exc}): rebuilding")
    return False, None


def cached(
    kind: str,
    params: dict[str, Any],
    suffix: str,
    build: Callable[[], Any],
    write: Callable[[Path, Any], None],
    read: Callable[[Path], Any],
) -> Any:
    """Return ``read(file)`` of a cached artefact, building it when needed.

    The file lives at ``cache_dir()/kind/<hash><suffix>``, the hash covering the
    parameters, :data:`CACHE_VERSION` and the installed MNE and nilearn versions
    (so upgrading either rebuilds), with a JSON sidecar holding the parameters,
    those versions and the file's sha256. A file whose sidecar is missing, whose
    checksum differs or that fails to read is rebuilt, never trusted.

    Parameters
    ----------
    kind : str
        Sub-folder of the cache (``"bem"``, ``"fwd"``, ``"kernel"``, ``"src"``).
    params : dict
        Everything that changes the artefact (JSON-serialisable, or by ``str``).
    suffix : str
        File name ending, e.g. ``"-fwd.fif"``.
    build : callable
        ``build()`` returns the artefact.
    write : callable
        ``write(fname, obj)`` writes it.
    read : callable
        ``read(fname)`` reads it back.

    Returns
    -------
    obj : object
        What ``read`` returns: always the artefact as read from the cache.
    """
    folder = cache_dir() / kind
    folder.mkdir(parents=True, exist_ok=True)
    libs = _library_versions()
    key = _hash_params(params, libs)
    fname = folder / f"{key}{suffix}"
    meta_fname = folder / f"{key}.json"
    ok, obj = _read_valid(kind, fname, meta_fname, read)
    if ok:
        return obj
    obj = build()
    # write aside and rename, so a concurrent reader never sees a partial file
    tmp = folder / f"{key}.tmp{os.getpid()}{suffix}"
    write(tmp, obj)
    os.replace(tmp, fname)
    meta = {"kind": kind, "params": params, "libs": libs, "sha256": file_sha256(fname)}
    meta_fname.write_text(json.dumps(meta, indent=1, default=str))
    return read(fname)
