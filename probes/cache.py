"""Content-addressed store for activation and gradient arrays.

The engine keys every array on the hash of everything that determines it (model fingerprint,
layer, target, class, source content), so a stale entry can never be returned for changed
inputs. On disk each entry is two files, ``<dir>/<key[:2]>/<key>.npy`` and ``<key>.json``; the
JSON holds the SHA-256 and size of the ``.npy`` bytes and is written last, so it acts as the
commit marker. Every file is written to a uniquely named temporary file, flushed, fsynced and
moved into place with :func:`os.replace`, so readers never see a half-written file and two
processes writing the same key at once leave a valid entry (last writer wins).

A damaged entry is detected on read (size or hash mismatch, unreadable array), reported with a
:class:`~probes.errors.CacheCorruptionWarning`, removed, and treated as a miss so that the caller
recomputes it.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from probes.errors import CacheCorruptionWarning

#: Version of the on-disk layout; entries written with another version are ignored (misses).
FORMAT_VERSION = 1

#: Arrays whose file is at least this large are returned memory-mapped (read-only).
MMAP_THRESHOLD_BYTES = 16 * 2 ** 20

_KEY_RE = re.compile(r"^[0-9a-f]{8,128}$")
_CHUNK = 2 ** 20


def default_cache_dir() -> Path:
    """Directory used for the on-disk cache: ``$CONCEPTS_CACHE_DIR`` or ``~/.cache/concepts-toolkit``.

    Example:
        >>> isinstance(default_cache_dir(), Path)
        True
    """
    env = os.environ.get("CONCEPTS_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "concepts-toolkit"


class _HashingWriter:
    """File wrapper that hashes and counts the bytes written through it.

    np.save streams large arrays in chunks through ``write`` when given a non-file object, so the
    hash is computed without holding a second copy of the serialised array in memory.
    """

    def __init__(self, handle: Any) -> None:
        self._handle = handle
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | memoryview) -> int:
        view = memoryview(data).cast("B")
        self.digest.update(view)
        self.size += view.nbytes
        self._handle.write(view)
        return view.nbytes


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; not possible on every platform, so best effort.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while True:
            chunk = handle.read(_CHUNK)
            if not chunk:
                break
            digest.update(chunk)
    return digest.hexdigest()


class ActivationCache:
    """Content-addressed array store, on disk or (``directory=None``) in memory only.

    Arrays returned by :meth:`get` are read-only (large ones are memory-mapped); copy them before
    modifying.

    Example:
        >>> cache = ActivationCache()            # in memory
        >>> key = ActivationCache.make_key("model", "layer", "act")
        >>> cache.put(key, np.arange(3.0))
        >>> cache.get(key)
        array([0., 1., 2.])
        >>> key in cache
        True
    """

    def __init__(self, directory: str | Path | None = None) -> None:
        self.directory: Path | None = None if directory is None else Path(directory).expanduser()
        self._memory: dict[str, np.ndarray] = {}

    def __repr__(self) -> str:
        where = "memory" if self.directory is None else str(self.directory)
        return f"ActivationCache({where!r})"

    # -- keys -------------------------------------------------------------------------------
    @staticmethod
    def make_key(*parts: str) -> str:
        """SHA-256 hex digest of ``parts``; distinct part lists always give distinct inputs.

        Each part is length-prefixed, so ``("ab", "c")`` and ``("a", "bc")`` cannot collide.
        Non-string parts (e.g. a class index) are converted with ``str``.

        Example:
            >>> ActivationCache.make_key("ab", "c") != ActivationCache.make_key("a", "bc")
            True
        """
        digest = hashlib.sha256()
        digest.update(f"n={len(parts)};".encode())
        for part in parts:
            data = str(part).encode("utf-8")
            digest.update(f"{len(data)}:".encode())
            digest.update(data)
        return digest.hexdigest()

    @staticmethod
    def _check_key(key: str) -> str:
        # Keys become file names: refuse anything that could escape the cache directory.
        if not isinstance(key, str) or not _KEY_RE.match(key):
            raise ValueError(f"Invalid cache key {key!r}: expected a lowercase hex digest "
                             "such as ActivationCache.make_key(...) returns.")
        return key

    def _paths(self, key: str) -> tuple[Path, Path]:
        assert self.directory is not None
        sub = self.directory / key[:2]
        return sub / f"{key}.npy", sub / f"{key}.json"

    # -- public API -------------------------------------------------------------------------
    def __contains__(self, key: object) -> bool:
        """Cheap presence check (both files exist); :meth:`get` does the full verification."""
        if not isinstance(key, str) or not _KEY_RE.match(key):
            return False
        if self.directory is None:
            return key in self._memory
        npy, meta = self._paths(key)
        return npy.is_file() and meta.is_file()

    def get(self, key: str) -> np.ndarray | None:
        """The stored array, or ``None`` on a miss or a damaged entry (which is removed).

        Example:
            >>> ActivationCache().get(ActivationCache.make_key("nothing")) is None
            True
        """
        self._check_key(key)
        if self.directory is None:
            return self._memory.get(key)
        npy, meta_path = self._paths(key)
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            expected_sha = meta["sha256"]
            expected_size = int(meta["size"])
            expected_shape = tuple(int(s) for s in meta["shape"])
            expected_dtype = np.dtype(meta["dtype"])
            version = meta.get("format")
        except (OSError, ValueError, KeyError, TypeError):
            # No commit marker (or an unreadable one): the entry does not exist.
            return None
        if version != FORMAT_VERSION:
            return None
        try:
            size = npy.stat().st_size
        except FileNotFoundError:
            return None
        if size != expected_size:
            self._corrupt(key, npy, f"size {size} bytes, expected {expected_size}")
            return None
        try:
            actual_sha = _file_sha256(npy)
        except OSError as exc:
            self._corrupt(key, npy, f"unreadable ({exc})")
            return None
        if actual_sha != expected_sha:
            self._corrupt(key, npy, "content hash does not match")
            return None
        try:
            mode = "r" if size >= MMAP_THRESHOLD_BYTES else None
            array = np.load(npy, mmap_mode=mode, allow_pickle=False)
        except Exception as exc:  # any failure to parse means the file cannot be trusted
            self._corrupt(key, npy, f"not a readable .npy file ({exc})")
            return None
        if array.shape != expected_shape or array.dtype != expected_dtype:
            self._corrupt(key, npy, f"array {array.dtype}{array.shape} does not match its record "
                                    f"{expected_dtype}{expected_shape}")
            return None
        if mode is None:
            array.flags.writeable = False
        return array

    def put(self, key: str, array: np.ndarray, meta: dict | None = None) -> None:
        """Store ``array`` under ``key`` (atomically on disk); ``meta`` is kept in the JSON record.

        Example:
            >>> cache = ActivationCache()
            >>> cache.put(ActivationCache.make_key("k"), np.zeros(2), {"layer": "conv1"})
        """
        self._check_key(key)
        array = np.asarray(array)
        if array.dtype == object:
            raise ValueError("ActivationCache stores numeric arrays only, not object arrays.")
        if self.directory is None:
            # A read-only array was handed over by its owner; anything else is copied so a later
            # in-place change by the caller cannot alter the cached value.
            if array.flags.writeable:
                array = array.copy()
            stored = array.view()
            stored.flags.writeable = False
            self._memory[key] = stored
            return
        npy, meta_path = self._paths(key)
        npy.parent.mkdir(parents=True, exist_ok=True)
        tag = f"{os.getpid()}.{uuid.uuid4().hex}"
        tmp_npy = npy.parent / f".{key}.{tag}.npy.tmp"
        tmp_meta = npy.parent / f".{key}.{tag}.json.tmp"
        try:
            with open(tmp_npy, "wb") as handle:
                writer = _HashingWriter(handle)
                np.save(writer, np.ascontiguousarray(array), allow_pickle=False)
                handle.flush()
                os.fsync(handle.fileno())
            record = {
                "format": FORMAT_VERSION,
                "key": key,
                "sha256": writer.digest.hexdigest(),
                "size": writer.size,
                "shape": list(array.shape),
                "dtype": array.dtype.str,
                "meta": meta or {},
            }
            text = json.dumps(record, sort_keys=True, default=str)
            with open(tmp_meta, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            # Data first, record last: a reader that finds the record finds complete data.
            os.replace(tmp_npy, npy)
            os.replace(tmp_meta, meta_path)
            _fsync_dir(npy.parent)
        finally:
            for tmp in (tmp_npy, tmp_meta):
                try:
                    tmp.unlink()
                except FileNotFoundError:
                    pass

    def clear(self) -> None:
        """Remove every entry (only files this class writes are touched).

        Example:
            >>> cache = ActivationCache(); cache.clear()
        """
        self._memory.clear()
        if self.directory is None or not self.directory.is_dir():
            return
        for sub in self.directory.iterdir():
            if not (sub.is_dir() and re.fullmatch(r"[0-9a-f]{2}", sub.name)):
                continue
            for path in sub.iterdir():
                name = path.name
                if re.fullmatch(r"\.?[0-9a-f]{8,128}(\.[0-9]+\.[0-9a-f]{32})?\.(npy|json)(\.tmp)?",
                                name):
                    try:
                        path.unlink()
                    except FileNotFoundError:
                        pass
            try:
                sub.rmdir()
            except OSError:
                pass  # not empty: something that is not ours lives there

    # -- helpers ----------------------------------------------------------------------------
    def _corrupt(self, key: str, npy: Path, reason: str) -> None:
        warnings.warn(
            f"Cache file {npy} is damaged ({reason}); it has been removed and its content will be "
            "recomputed.", CacheCorruptionWarning, stacklevel=3)
        for path in self._paths(key):
            try:
                path.unlink()
            except FileNotFoundError:
                pass
