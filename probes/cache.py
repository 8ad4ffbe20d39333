"""The toolkit's one content-addressed store: activations, gradients, vectors, measures, outcomes.

Every entry is keyed by the hash of everything that determines it (:meth:`Store.make_key` adds
the store's format version and the package version, so an upgrade never reuses old results)
and is written once, as one directory::

    <root>/<key[:2]>/<key>/entry.json     the record: format, key, kind, and per file its size
                                          and SHA-256 (plus a cheap sample hash)
    <root>/<key[:2]>/<key>/array.npy      an array entry, or
    <root>/<key[:2]>/<key>/record.json    a record entry: JSON data ...
    <root>/<key[:2]>/<key>/arrays.npz     ... with its arrays

The directory is assembled under a unique temporary name, every file fsynced, and renamed into
place in one step, so a reader sees a whole entry or none, whatever kills the writer; two writers
of one key (even with different bytes) cannot mix their files: the first rename wins and the
other writer discards its copy. Nothing is ever unpickled: arrays are read with
``allow_pickle=False`` and records are JSON.

Readers check each file's size and, for files up to :data:`FULL_CHECK_BYTES`, the full hash
(larger files: a hash of their first and last 64 KiB); :meth:`Store.verify` (``concepts cache
verify``) checks every byte. A damaged or foreign entry is reported once with a
:class:`~probes.errors.CacheCorruptionWarning` naming it, removed, and treated as a miss, so the
caller recomputes it. With a size cap (``max_bytes`` or ``$CONCEPTS_CACHE_MAX``, e.g. ``"2GB"``)
the least recently used entries are evicted after each write. Folders the store creates are
private to the user (mode 0700).

Writes leave the caller's critical path: :meth:`Store.put` and :meth:`Store.put_record` hand the
entry (a private read-only copy of its arrays) to one background writer thread per process and
return; a read of a key still pending (from any store on the same folder) waits for the writer
and reads the disk, as every maintenance call (:meth:`Store.entries`, ``info``, ``verify``, ``sweep``,
``clear``, ``entry_path``) and :meth:`Store.flush` do. Pending writes are
finished at interpreter exit; a write that failed is reported on the next call of the store (an
unwritable folder as the usual one-time warning, anything else re-raised). Child processes
(multiprocessing, Dask workers) and stores with a size cap write synchronously, as does
everything with ``$CONCEPTS_CACHE_SYNC=1``.

Example:
    >>> store = Store()                       # in memory; Store("/path") on disk
    >>> key = Store.make_key("model", "layer", "act")
    >>> store.put(key, np.arange(3.0))
    >>> store.get(key)
    array([0., 1., 2.])
"""
from __future__ import annotations

import atexit
import hashlib
import io
import json
import multiprocessing
import os
import queue
import re
import shutil
import threading
import time
import uuid
import warnings
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from probes.errors import CacheCorruptionWarning
from probes.identity import package_version, sha256_file

#: Version of the on-disk layout; it enters every key, so entries of another layout are never read.
FORMAT_VERSION = 2

#: Arrays whose file is at least this large are returned memory-mapped (read-only).
MMAP_THRESHOLD_BYTES = 16 * 2 ** 20

#: Files up to this size are fully hashed on every read; larger ones get the sampled check.
FULL_CHECK_BYTES = 4 * 2 ** 20

_SAMPLE = 64 * 2 ** 10
_KEY_RE = re.compile(r"^[0-9a-f]{8,128}$")
_ENTRY = "entry.json"
_ARRAY = "array.npy"
_RECORD = "record.json"
_ARRAYS = "arrays.npz"
# Files of the layout before FORMAT_VERSION 2 (<key>.npy + <key>.json), removed by clear().
_LEGACY_RE = re.compile(r"\.?[0-9a-f]{8,128}(\.[0-9]+\.[0-9a-f]{32})?\.(npy|json)(\.tmp)?")
_TMP_PREFIX = ".tmp-"
_TRASH_PREFIX = ".trash-"


def default_cache_dir() -> Path:
    """Directory used for the on-disk store: ``$CONCEPTS_CACHE_DIR`` or ``~/.cache/concepts-toolkit``.

    Example:
        >>> isinstance(default_cache_dir(), Path)
        True
    """
    env = os.environ.get("CONCEPTS_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "concepts-toolkit"


_UNITS = {"": 1, "B": 1, "K": 10 ** 3, "KB": 10 ** 3, "M": 10 ** 6, "MB": 10 ** 6, "G": 10 ** 9, "GB": 10 ** 9,
          "T": 10 ** 12, "TB": 10 ** 12, "KIB": 2 ** 10, "MIB": 2 ** 20, "GIB": 2 ** 30, "TIB": 2 ** 40}


def parse_size(text: str | int | float | None, *, what: str = "size") -> int | None:
    """Bytes from ``"2GB"``, ``"500 MB"``, ``"1.5GiB"`` or a number; ``None``/``""``/``"none"`` mean no cap.

    Raises:
        ValueError: the text is not a size; the message names ``what`` and shows valid examples.

    Example:
        >>> parse_size("2GB"), parse_size("1.5 KiB"), parse_size(None)
        (2000000000, 1536, None)
    """
    if text is None:
        return None
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        if text < 0:
            raise ValueError(f"{what} must not be negative, got {text!r}.")
        return int(text)
    cleaned = str(text).strip().upper().replace(" ", "")
    if cleaned in ("", "NONE", "0", "OFF", "UNLIMITED"):
        return None
    match = re.fullmatch(r"([0-9]*\.?[0-9]+)([A-Z]*)", cleaned)
    if not match or match.group(2) not in _UNITS:
        raise ValueError(f"{what}={text!r} is not a size; write e.g. '2GB', '500MB', '1.5GiB' or a number of bytes.")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def max_bytes_from_env() -> int | None:
    """The size cap from ``$CONCEPTS_CACHE_MAX`` (None: no cap).

    Example:
        >>> os.environ.pop("CONCEPTS_CACHE_MAX", None) and None
        >>> max_bytes_from_env() is None
        True
    """
    return parse_size(os.environ.get("CONCEPTS_CACHE_MAX"), what="CONCEPTS_CACHE_MAX")


def make_private_dir(path: str | os.PathLike) -> None:
    """Create ``path`` and any missing parents with mode 0700 (existing folders keep their mode).

    Example:
        >>> import tempfile; root = Path(tempfile.mkdtemp())
        >>> make_private_dir(root / "a" / "b"); oct((root / "a").stat().st_mode & 0o777)
        '0o700'
    """
    path = Path(path)
    missing = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            continue
        os.chmod(folder, 0o700)  # mkdir's mode is filtered by the umask


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


class _HashingWriter:
    """File wrapper that hashes and counts the bytes written through it (no second copy in memory)."""

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

    def flush(self) -> None:
        self._handle.flush()


def _sample_sha256(path: Path, size: int) -> str:
    """Hash of the size, the first and the last 64 KiB: the cheap check of large files."""
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as handle:
        digest.update(handle.read(_SAMPLE))
        if size > 2 * _SAMPLE:
            handle.seek(size - _SAMPLE)
        digest.update(handle.read(_SAMPLE))
    return digest.hexdigest()


class _Damaged(Exception):
    """An entry that exists but cannot be trusted (the message says why)."""


class _OtherKind(Exception):
    """An intact entry of another kind (a record asked for as an array): a miss, not damage."""


def _check_arrays(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    checked = {}
    for name, array in arrays.items():
        array = np.asarray(array)
        if array.dtype == object:
            raise ValueError(f"The store keeps numeric and string arrays only; array {name!r} has dtype object. "
                             "Convert it (e.g. to str) before storing.")
        checked[str(name)] = array
    return checked


#: Most bytes of array data waiting for the background writer; a put beyond it waits, so a
#: producer faster than the disk cannot hold unbounded copies in memory.
PENDING_BYTES_LIMIT = 512 * 2 ** 20


class _BackgroundWriter:
    """One daemon thread per process that writes store entries in the order they were put."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._queue: queue.Queue = queue.Queue()
        self._pending: dict[tuple[str, str], tuple[dict, dict[str, np.ndarray], int]] = {}
        self._pending_bytes = 0
        self._failures: list[tuple[Any, BaseException]] = []
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    def enabled(self) -> bool:
        # Pool workers may end without running atexit handlers: they write synchronously.
        return os.environ.get("CONCEPTS_CACHE_SYNC", "") in ("", "0") and multiprocessing.parent_process() is None

    def on_writer_thread(self) -> bool:
        return self._thread is not None and threading.current_thread() is self._thread

    def submit(self, store: Any, key: str, memory: tuple[dict, dict[str, np.ndarray]],
               job: Any) -> None:
        size = sum(int(a.nbytes) for a in memory[1].values())
        with self._cond:
            if self._pid != os.getpid():   # forked: the parent's queue and thread are not ours
                self.__init__()
            if (str(store.directory), key) in self._pending:
                return  # the same key is the same content: one write is enough
            while self._pending_bytes and self._pending_bytes + size > PENDING_BYTES_LIMIT:
                self._cond.wait()
            self._pending[(str(store.directory), key)] = (*memory, size)
            self._pending_bytes += size
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="concepts-cache-writer", daemon=True)
                self._thread.start()
        self._queue.put((store, key, job))

    def pending(self, store: Any, key: str) -> tuple[dict, dict[str, np.ndarray]] | None:
        with self._cond:
            found = self._pending.get((str(store.directory), key))
        return None if found is None else (found[0], found[1])

    def _run(self) -> None:
        while True:
            store, key, job = self._queue.get()
            try:
                job()
            except BaseException as exc:  # reported to the caller on its next call (see take_failures)
                with self._cond:
                    self._failures.append((store, exc))
            finally:
                with self._cond:
                    found = self._pending.pop((str(store.directory), key), None)
                    if found is not None:
                        self._pending_bytes -= found[2]
                    self._cond.notify_all()
                self._queue.task_done()

    def flush(self) -> None:
        """Wait until every queued entry is written (a no-op on the writer thread itself)."""
        if self._pid != os.getpid() or self.on_writer_thread() or self._thread is None:
            return
        self._queue.join()

    def take_failures(self, store: Any) -> list[BaseException]:
        with self._cond:
            mine = [exc for owner, exc in self._failures if owner is store]
            self._failures = [(owner, exc) for owner, exc in self._failures if owner is not store]
        return mine


_WRITER = _BackgroundWriter()
atexit.register(_WRITER.flush)


def flush_writes() -> None:
    """Wait until every cache entry put in this process is on disk.

    Example:
        >>> flush_writes()
    """
    _WRITER.flush()


class Store:
    """Content-addressed store, on disk or (``directory=None``) in memory only.

    Args:
        directory: the store's root folder (created private on first write), or ``None`` for a
            store that lives in memory as long as this object.
        max_bytes: size cap (bytes, or a text such as ``"2GB"``); least recently used entries are
            evicted beyond it. Default: ``$CONCEPTS_CACHE_MAX``, else no cap.

    Arrays returned by :meth:`get` are read-only (large ones are memory-mapped); copy them before
    modifying.

    Example:
        >>> store = Store()
        >>> key = Store.make_key("model", "layer", "act")
        >>> store.put(key, np.arange(3.0))
        >>> store.get(key)
        array([0., 1., 2.])
        >>> key in store
        True
    """

    def __init__(self, directory: str | os.PathLike | None = None,
                 max_bytes: int | str | None = None) -> None:
        self.directory: Path | None = None if directory is None else Path(directory).expanduser()
        self.max_bytes = parse_size(max_bytes, what="max_bytes") if max_bytes is not None else max_bytes_from_env()
        self._memory: dict[str, tuple[dict, dict[str, np.ndarray]]] = {}
        self._used: int | None = None  # bytes on disk, counted on the first write that needs it
        self._lock = threading.Lock()
        self._write_warned = False

    def __repr__(self) -> str:
        where = "memory" if self.directory is None else str(self.directory)
        return f"{type(self).__name__}({where!r})"

    # -- keys -------------------------------------------------------------------------------
    @staticmethod
    def make_key(*parts: Any) -> str:
        """SHA-256 hex digest of the store's format version, the package version and ``parts``.

        Each part is length-prefixed, so ``("ab", "c")`` and ``("a", "bc")`` cannot collide.
        Non-string parts (e.g. a class index) are converted with ``str``.

        Example:
            >>> Store.make_key("ab", "c") != Store.make_key("a", "bc")
            True
        """
        digest = hashlib.sha256()
        digest.update(f"store-v{FORMAT_VERSION};package={package_version()};n={len(parts)};".encode())
        for part in parts:
            data = str(part).encode("utf-8")
            digest.update(f"{len(data)}:".encode())
            digest.update(data)
        return digest.hexdigest()

    @staticmethod
    def _check_key(key: str) -> str:
        # Keys become folder names: refuse anything that could escape the store.
        if not isinstance(key, str) or not _KEY_RE.match(key):
            raise ValueError(f"Invalid cache key {key!r}: expected a lowercase hex digest "
                             "such as Store.make_key(...) returns.")
        return key

    def entry_path(self, key: str) -> Path:
        """The folder of entry ``key`` (whether or not it exists).

        Example:
            >>> Store("/tmp/s").entry_path("ab" * 32).parent.name
            'ab'
        """
        if self.directory is None:
            raise ValueError("An in-memory store has no folders.")
        self._check_key(key)
        _WRITER.flush()  # whoever looks at the folder sees every entry put so far
        return self._folder(key)

    def _folder(self, key: str) -> Path:
        assert self.directory is not None
        return self.directory / key[:2] / key

    def flush(self) -> None:
        """Wait for the background writer; report a failed write (see the module docstring).

        Example:
            >>> Store().flush()
        """
        _WRITER.flush()
        self._surface()

    def _surface(self) -> None:
        # Failures of background writes reach the caller here, on its next call of this store.
        for exc in _WRITER.take_failures(self):
            if isinstance(exc, OSError):
                self._warn_unwritable(exc, stacklevel=4)
            else:
                raise exc

    # -- public API: arrays -----------------------------------------------------------------
    def __contains__(self, key: object) -> bool:
        """Cheap presence check (the entry's record exists); :meth:`get` verifies."""
        if not isinstance(key, str) or not _KEY_RE.match(key):
            return False
        if self.directory is None:
            return key in self._memory
        if _WRITER.pending(self, key) is not None:
            return True
        return (self._folder(key) / _ENTRY).is_file()

    def get(self, key: str) -> np.ndarray | None:
        """The stored array, or ``None`` on a miss or a damaged entry (which is reported and removed).

        Example:
            >>> Store().get(Store.make_key("nothing")) is None
            True
        """
        self._check_key(key)
        if self.directory is None:
            found = self._memory.get(key)
            return None if found is None or _ARRAY not in found[1] else found[1][_ARRAY]
        if _WRITER.pending(self, key) is not None:
            _WRITER.flush()  # read what is on disk, exactly as without the background writer
        self._surface()
        loaded = self._read(key, "array")
        return None if loaded is None else loaded[1][_ARRAY]

    def put(self, key: str, array: np.ndarray, meta: dict | None = None) -> None:
        """Store ``array`` under ``key`` (atomically on disk); ``meta`` is kept in the entry's record.

        Example:
            >>> store = Store()
            >>> store.put(Store.make_key("k"), np.zeros(2), {"layer": "conv1"})
        """
        self._check_key(key)
        array = _check_arrays({_ARRAY: array})[_ARRAY]
        if self.directory is None:
            # A read-only array was handed over by its owner; anything else is copied so a later
            # in-place change by the caller cannot alter the stored value.
            if array.flags.writeable:
                array = array.copy()
            stored = array.view()
            stored.flags.writeable = False
            self._memory[key] = ({"kind": "array", "meta": meta or {}}, {_ARRAY: stored})
            return
        self._surface()
        if _WRITER.enabled():
            # The writer works on a private read-only copy: the caller may change its array at once.
            array = _frozen(array)
        self._write(key, "array", {"shape": list(array.shape), "dtype": array.dtype.str}, meta,
                    {_ARRAY: lambda handle: np.save(handle, np.ascontiguousarray(array), allow_pickle=False)},
                    memory=({"kind": "array"}, {_ARRAY: array}))

    # -- public API: records (JSON + arrays) ------------------------------------------------
    def get_record(self, key: str) -> tuple[Any, dict[str, np.ndarray]] | None:
        """``(data, arrays)`` stored by :meth:`put_record`, or ``None`` (miss or damaged entry).

        Example:
            >>> store = Store(); key = Store.make_key("r")
            >>> store.put_record(key, {"a": 1}, {"x": np.ones(2)})
            >>> store.get_record(key)[0]
            {'a': 1}
        """
        self._check_key(key)
        if self.directory is None:
            found = self._memory.get(key)
            if found is None or found[0].get("kind") != "record":
                return None
            return json.loads(found[0]["data"]), {k: v.copy() for k, v in found[1].items()}
        if _WRITER.pending(self, key) is not None:
            _WRITER.flush()
        self._surface()
        loaded = self._read(key, "record")
        if loaded is None:
            return None
        data, arrays = loaded
        return data[_RECORD], arrays

    def put_record(self, key: str, data: Any, arrays: dict[str, np.ndarray] | None = None,
                   meta: dict | None = None) -> None:
        """Store JSON-serialisable ``data`` and named ``arrays`` as one entry (atomically on disk).

        Raises:
            TypeError: ``data`` is not JSON-serialisable (NaN and infinities are allowed).
            ValueError: an array has dtype object.

        Example:
            >>> Store().put_record(Store.make_key("r"), {"rows": [1, 2]}, {"v": np.zeros(3)})
        """
        self._check_key(key)
        arrays = _check_arrays(arrays or {})
        text = json.dumps(data, sort_keys=True)
        if self.directory is None:
            self._memory[key] = ({"kind": "record", "data": text, "meta": meta or {}},
                                 {k: v.copy() for k, v in arrays.items()})
            return

        def write_npz(handle: Any) -> None:
            buffer = io.BytesIO()
            np.savez(buffer, **arrays)
            handle.write(buffer.getbuffer())

        self._surface()
        if _WRITER.enabled():
            arrays = {k: _frozen(v) for k, v in arrays.items()}
        writers: dict[str, Any] = {_RECORD: lambda handle: handle.write(text.encode("utf-8"))}
        if arrays:  # a record without arrays (e.g. radiomics features) is one small JSON file
            writers[_ARRAYS] = write_npz
        self._write(key, "record", {"arrays": sorted(arrays)}, meta, writers,
                    memory=({"kind": "record", "data": text}, arrays))

    # -- maintenance ------------------------------------------------------------------------
    def entries(self) -> Iterator[Path]:
        """Folders of the entries on disk (complete ones only; temporary folders are skipped).

        Example:
            >>> list(Store().entries())
            []
        """
        _WRITER.flush()
        if self.directory is None or not self.directory.is_dir():
            return
        for sub in sorted(self.directory.iterdir()):
            if not (sub.is_dir() and re.fullmatch(r"[0-9a-f]{2}", sub.name)):
                continue
            for entry in sorted(sub.iterdir()):
                if entry.is_dir() and _KEY_RE.match(entry.name):
                    yield entry

    def info(self) -> dict[str, Any]:
        """Location, number of entries, bytes used, bytes per kind and the size cap.

        Example:
            >>> Store().info()["entries"]
            0
        """
        kinds: dict[str, int] = {}
        total = 0
        count = 0
        for entry in self.entries():
            size = _folder_size(entry)
            total += size
            count += 1
            try:
                record = json.loads((entry / _ENTRY).read_text(encoding="utf-8"))
                kind = str(record.get("meta", {}).get("kind") or record.get("kind", "?"))
            except (OSError, ValueError, AttributeError):
                kind = "damaged"
            kinds[kind] = kinds.get(kind, 0) + size
        if self.directory is None:
            count = len(self._memory)
        return {"directory": None if self.directory is None else str(self.directory), "entries": count,
                "bytes": total, "bytes_by_kind": dict(sorted(kinds.items())), "max_bytes": self.max_bytes,
                "format": FORMAT_VERSION, "package_version": package_version()}

    def verify(self, *, remove: bool = True) -> list[tuple[str, str]]:
        """Check every byte of every entry; return ``(entry folder, problem)`` for each damaged one.

        Damaged entries are removed unless ``remove=False``; nothing else is touched.

        Example:
            >>> Store().verify()
            []
        """
        self.sweep()
        problems = []
        for entry in list(self.entries()):
            try:
                self._load(entry.name, entry, None, full=True)
            except _Damaged as exc:
                problems.append((str(entry), str(exc)))
                if remove:
                    self._discard(entry)
            except FileNotFoundError:
                continue  # removed by someone else meanwhile
        return problems

    def sweep(self, max_age_s: float = 3600.0) -> int:
        """Remove temporary folders older than ``max_age_s`` (left by killed writers); return how many.

        They are never visible as entries; this only gives their space back.

        Example:
            >>> Store().sweep()
            0
        """
        _WRITER.flush()
        if self.directory is None or not self.directory.is_dir():
            return 0
        removed = 0
        cutoff = time.time() - max_age_s
        for sub in self.directory.iterdir():
            if not (sub.is_dir() and re.fullmatch(r"[0-9a-f]{2}", sub.name)):
                continue
            for path in sub.iterdir():
                if path.name.startswith((_TMP_PREFIX, _TRASH_PREFIX)):
                    try:
                        if path.stat().st_mtime < cutoff:
                            shutil.rmtree(path, ignore_errors=True)
                            removed += 1
                    except OSError:
                        continue
        return removed

    def clear(self) -> None:
        """Remove every entry (only folders and files this store writes are touched).

        Example:
            >>> store = Store(); store.clear()
        """
        _WRITER.flush()
        self._memory.clear()
        self._used = None
        if self.directory is None or not self.directory.is_dir():
            return
        for sub in self.directory.iterdir():
            if not (sub.is_dir() and re.fullmatch(r"[0-9a-f]{2}", sub.name)):
                continue
            for path in sub.iterdir():
                name = path.name
                if path.is_dir() and (_KEY_RE.match(name) or name.startswith((_TMP_PREFIX, _TRASH_PREFIX))):
                    shutil.rmtree(path, ignore_errors=True)
                elif path.is_file() and _LEGACY_RE.fullmatch(name):
                    path.unlink(missing_ok=True)
            try:
                sub.rmdir()
            except OSError:
                pass  # not empty: something that is not ours lives there

    # -- internals: reading -----------------------------------------------------------------
    def _read(self, key: str, kind: str) -> tuple[dict, dict[str, np.ndarray]] | None:
        entry = self._folder(key)
        if not (entry / _ENTRY).is_file():
            return None
        try:
            try:
                loaded = self._load(key, entry, kind, full=False)
            except _OtherKind:
                return None
            except FileNotFoundError as exc:
                # Evicted while being read (entries vanish whole): a miss. A file missing from an
                # entry still in place is damage, or the key would stay unwritable for ever.
                if not (entry / _ENTRY).is_file():
                    return None
                raise _Damaged(f"file {Path(exc.filename or '?').name} is missing") from None
        except _Damaged as exc:
            warnings.warn(f"Cache entry {entry} is damaged ({exc}); it has been removed and its content will be "
                          "recomputed.", CacheCorruptionWarning, stacklevel=3)
            self._discard(entry)
            return None
        try:
            os.utime(entry)  # recency for LRU eviction (atime is unreliable: noatime mounts)
        except OSError:
            pass
        return loaded

    def _load(self, key: str, entry: Path, kind: str | None, *, full: bool) -> tuple[dict, dict[str, np.ndarray]]:
        try:
            record = json.loads((entry / _ENTRY).read_text(encoding="utf-8"))
            files = record["files"]
            if not isinstance(files, dict) or not files:
                raise TypeError("no files listed")
        except FileNotFoundError:
            raise
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise _Damaged(f"unreadable record {_ENTRY}: {type(exc).__name__}: {exc}") from None
        if record.get("format") != FORMAT_VERSION or record.get("key") != key:
            raise _Damaged(f"foreign entry (format {record.get('format')!r}, key {str(record.get('key'))[:12]}...)")
        if kind is not None and record.get("kind") != kind:
            raise _OtherKind(record.get("kind"))
        for name, info in files.items():
            if name not in (_ARRAY, _RECORD, _ARRAYS):
                raise _Damaged(f"unexpected file {name!r}")
            path = entry / name
            size = path.stat().st_size
            if size != int(info["size"]):
                raise _Damaged(f"{name}: size {size} bytes, expected {info['size']}")
            if full or size <= FULL_CHECK_BYTES:
                if sha256_file(path) != info["sha256"]:
                    raise _Damaged(f"{name}: content hash does not match")
            elif _sample_sha256(path, size) != info["sample_sha256"]:
                raise _Damaged(f"{name}: content hash does not match")
        arrays: dict[str, np.ndarray] = {}
        data: dict[str, Any] = {"record": record}
        try:
            if record["kind"] == "array":
                path = entry / _ARRAY
                mode = "r" if path.stat().st_size >= MMAP_THRESHOLD_BYTES else None
                array = np.load(path, mmap_mode=mode, allow_pickle=False)
                if list(array.shape) != record["shape"] or array.dtype.str != record["dtype"]:
                    raise _Damaged(f"array {array.dtype}{array.shape} does not match its record "
                                   f"{record['dtype']}{tuple(record['shape'])}")
                if mode is None:
                    array.flags.writeable = False
                arrays[_ARRAY] = array
            elif record["kind"] == "record":
                data[_RECORD] = json.loads((entry / _RECORD).read_text(encoding="utf-8"))
                if _ARRAYS in files:
                    with np.load(entry / _ARRAYS, allow_pickle=False) as npz:
                        arrays = {name: npz[name] for name in npz.files}
                if sorted(arrays) != record.get("arrays"):
                    raise _Damaged("its arrays do not match its record")
            else:
                raise _Damaged(f"unknown kind {record['kind']!r}")
        except (_Damaged, FileNotFoundError):
            raise
        except Exception as exc:  # any failure to parse means the entry cannot be trusted
            raise _Damaged(f"unreadable content: {type(exc).__name__}: {exc}") from None
        return data, arrays

    def _discard(self, entry: Path) -> None:
        # Rename first so that no reader can see a half-deleted entry, then delete at leisure.
        trash = entry.parent / f"{_TRASH_PREFIX}{entry.name}-{uuid.uuid4().hex}"
        try:
            os.rename(entry, trash)
        except OSError:
            return
        shutil.rmtree(trash, ignore_errors=True)
        self._used = None

    # -- internals: writing -----------------------------------------------------------------
    def _write(self, key: str, kind: str, extra: dict, meta: dict | None, writers: dict[str, Any],
               memory: tuple[dict, dict[str, np.ndarray]] | None = None) -> None:
        """Write one entry, in the background when possible (``memory``: what reads of the key return
        meanwhile); a store that cannot be written (read-only, full, removed) is warned about once.

        Losing a cache write costs a recomputation later, never a result now, so the run goes on.
        """
        # A size cap evicts after each write: capped stores write synchronously, so that what is
        # present right after a put stays predictable.
        if memory is not None and self.max_bytes is None and _WRITER.enabled():
            entry = self._folder(key)
            try:
                # The folders now (cheap), so that an unwritable store is reported at once.
                make_private_dir(entry.parent)
            except OSError as exc:
                self._warn_unwritable(exc, stacklevel=5)
                return
            if (entry / _ENTRY).is_file():
                return  # written once: nothing to queue
            _WRITER.submit(self, key, memory, lambda: self._write_entry(key, kind, extra, meta, writers))
            return
        try:
            self._write_entry(key, kind, extra, meta, writers)
        except OSError as exc:
            self._warn_unwritable(exc, stacklevel=5)

    def _warn_unwritable(self, exc: OSError, stacklevel: int) -> None:
        if not self._write_warned:
            self._write_warned = True
            warnings.warn(f"Cannot write to the cache {self.directory} ({type(exc).__name__}: {exc}); "
                          "continuing without storing results there. Set CONCEPTS_CACHE_DIR or pass "
                          "cache_dir=... (False keeps everything in memory).", UserWarning, stacklevel=stacklevel)

    def _write_entry(self, key: str, kind: str, extra: dict, meta: dict | None, writers: dict[str, Any]) -> None:
        assert self.directory is not None
        entry = self._folder(key)
        if (entry / _ENTRY).is_file():
            return  # written once: an existing entry (verified on read) is never overwritten
        make_private_dir(entry.parent)
        tmp = entry.parent / f"{_TMP_PREFIX}{key}-{os.getpid()}-{uuid.uuid4().hex}"
        tmp.mkdir(mode=0o700)
        try:
            files = {}
            for name, write in writers.items():
                path = tmp / name
                with open(path, "wb") as handle:
                    hashing = _HashingWriter(handle)
                    write(hashing)
                    handle.flush()
                    os.fsync(handle.fileno())
                files[name] = {"size": hashing.size, "sha256": hashing.digest.hexdigest(),
                               "sample_sha256": _sample_sha256(path, hashing.size)}
            record = {"format": FORMAT_VERSION, "package_version": package_version(), "key": key, "kind": kind,
                      "created": time.time(), "files": files, "meta": meta or {}, **extra}
            with open(tmp / _ENTRY, "w", encoding="utf-8") as handle:
                handle.write(json.dumps(record, sort_keys=True, default=str))
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.rename(tmp, entry)
            except OSError:
                # Another writer placed this key first (its entry is as valid as ours): keep theirs.
                return
            _fsync_dir(entry.parent)
            size = sum(f["size"] for f in files.values())
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        self._account(size, entry)

    def _account(self, size: int, newest: Path) -> None:
        if self.max_bytes is None:
            return
        with self._lock:
            if self._used is None:
                self._used = sum(_folder_size(e) for e in self.entries())
            else:
                self._used += size
            if self._used <= self.max_bytes:
                return
            self._evict(newest)

    def _evict(self, newest: Path) -> None:
        """Remove least recently used entries until the store is under 90 % of its cap."""
        assert self.max_bytes is not None
        self.sweep()
        ranked = []
        for entry in self.entries():
            try:
                ranked.append((entry.stat().st_mtime_ns, entry, _folder_size(entry)))
            except OSError:
                continue
        ranked.sort(key=lambda item: (item[1] == newest, item[0]))
        used = sum(size for _, _, size in ranked)
        target = int(self.max_bytes * 0.9)
        for _, entry, size in ranked:
            if used <= target:
                break
            self._discard(entry)
            used -= size
        self._used = used


def _frozen(array: np.ndarray) -> np.ndarray:
    """A read-only array with the values of ``array`` now (read-only input is its owner's: no copy)."""
    if array.flags.writeable:
        array = array.copy()
    view = array.view()
    view.flags.writeable = False
    return view


def _folder_size(folder: Path) -> int:
    total = 0
    try:
        for path in folder.iterdir():
            try:
                total += path.stat().st_size
            except OSError:
                pass
    except OSError:
        pass
    return total


#: The store's former name; every existing caller keeps working.
ActivationCache = Store

__all__ = ["ActivationCache", "FORMAT_VERSION", "Store", "default_cache_dir", "flush_writes", "make_private_dir",
           "max_bytes_from_env", "parse_size"]
