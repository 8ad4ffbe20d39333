"""The toolkit's one content-addressed store: activations, gradients, vectors, measures, outcomes.

Every entry is keyed by the hash of everything that determines it (:meth:`Store.make_key` adds
the store's format version and the package version, so an upgrade never reuses old results)
and is written once, as one directory::

    <root>/<key[:2]>/<key>/entry.json     the record: format, key, kind, and per file its size
                                          and CRC-32
    <root>/<key[:2]>/<key>/array.npy      an array entry, or
    <root>/<key[:2]>/<key>/record.json    a record entry: JSON data ...
    <root>/<key[:2]>/<key>/arrays.npz     ... with its arrays

The directory is assembled under a unique temporary name, every file fsynced, and renamed into
place in one step, so a reader sees a whole entry or none, whatever kills the writer; two writers
of one key (even with different bytes) cannot mix their files: the first rename wins and the
other writer discards its copy. Nothing is ever unpickled: arrays are read with
``allow_pickle=False`` and records are JSON.

Every read checks every byte, whatever the entry's size: each file's size, and its CRC-32 computed
on the bytes as they are read (no second pass over memory; about 0.27 ms per MB, see
:mod:`probes.cache_files`; not again in the same process while the files are unchanged);
:meth:`Store.verify` (``concepts cache verify``) checks every entry the same way. A damaged or foreign entry, or an entry folder missing one of its files (its ``entry.json``
included), is reported once with a :class:`~probes.errors.CacheCorruptionWarning` naming it, removed,
and treated as a miss, so the caller recomputes it; a later write of the key places a fresh entry.
With a size cap (``max_bytes`` or ``$CONCEPTS_CACHE_MAX``, e.g. ``"2GB"``) the least recently used
entries are evicted after each write. Folders the store creates are private to the user (mode 0700).

Array writes leave the caller's critical path: :meth:`Store.put` hands the entry (a private
read-only copy of the array) to one background writer thread per process and
returns; :meth:`Store.get` of a key still pending (from any store on the same folder) returns that
read-only array at once, while a record read and every maintenance call (:meth:`Store.entries`,
``info``, ``verify``, ``sweep``, ``clear``, ``entry_path``) and :meth:`Store.flush` wait for the writer
and read the disk. The writer thread runs at a lower priority than the caller's threads
(:data:`probes.cache_writer.WRITER_NICENESS`). Pending writes are
finished at interpreter exit; a write that failed is reported on the next call of the store (an
unwritable folder as the usual one-time warning, anything else re-raised). Child processes
(multiprocessing, Dask workers) and stores with a size cap write synchronously, as does
everything with ``$CONCEPTS_CACHE_SYNC=1``; records (:meth:`Store.put_record`: small JSON
entries such as radiomics features) are always written before the call returns.

Small array entries (up to :data:`RECENT_ENTRY_BYTES`) that this process wrote or read stay in memory,
:data:`RECENT_BYTES` in all, least recently used dropped first, so that the next :meth:`Store.get` of
the key (from any store on the same folder, e.g. the next ``concepts.score`` call) returns the same
read-only array without reading and hashing the files again. A copy is served only while the entry's
files on disk are still the ones it was written as or read from (same inode, size and times, checked
by one ``stat`` per file); whatever removes entries (:meth:`Store.clear`, ``sweep``, ``verify``,
eviction, a damaged read) or hands out their folders (:meth:`Store.entries`, :meth:`Store.entry_path`)
drops the copies first, so a damaged or removed entry is seen exactly as without them.

Examples
--------
>>> store = Store()                       # in memory; Store("/path") on disk
>>> key = Store.make_key("model", "layer", "act")
>>> store.put(key, np.arange(3.0))
>>> store.get(key)
array([0., 1., 2.])

The parts: :mod:`probes.cache_files` (the on-disk entry format, its writing and checks),
:mod:`probes.cache_writer` (the background writer) and :mod:`probes.byte_sizes` (size texts); the
names this module had before they were split out stay importable from here. What is left is the
:class:`Store` API with its examples (about 600 lines, a third of them docstrings and examples;
splitting the class would scatter it). The memory of small entries is :mod:`probes.cache_recent`.
"""
from __future__ import annotations

import hashlib
import json
import io
import os
import threading
import warnings
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from probes.byte_sizes import parse_size
# Re-exported: defined here before the split; callers and tests import them from here.
from probes.cache_files import (_ARRAY, _ARRAYS, _ENTRY, _KEY_RE, _LEGACY_RE, _RECORD,  # noqa: F401
                                _TMP_PREFIX, _TRASH_PREFIX, FORMAT_VERSION, FULL_CHECK_BYTES,
                                MMAP_THRESHOLD_BYTES, _check_arrays, _Damaged, _folder_size, _frozen, _fsync_dir,
                                _HashingWriter, _OtherKind,
                                clear_folder, discard_entry, entry_folders, entry_identity,
                                entry_is_damaged_folder, entry_kind, load_entry, make_private_dir, sweep_folder, write_entry)
from probes.cache_writer import _WRITER, PENDING_BYTES_LIMIT, _BackgroundWriter, flush_writes  # noqa: F401
from probes.errors import CacheCorruptionWarning
from probes.identity import package_version, sha256_file  # noqa: F401

# The process's memory of small entries lives in probes.cache_recent; re-exported here, where callers and
# tests have always found it.
from probes.cache_recent import _RECENT, RECENT_BYTES, RECENT_ENTRY_BYTES, _recent_size  # noqa: E402,F401


def default_cache_dir() -> Path:
    """Directory used for the on-disk store: ``$CONCEPTS_CACHE_DIR`` or ``~/.cache/concepts-toolkit``.

    Examples
    --------
    >>> isinstance(default_cache_dir(), Path)
    True
    """
    env = os.environ.get("CONCEPTS_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "concepts-toolkit"

def max_bytes_from_env() -> int | None:
    """The size cap from ``$CONCEPTS_CACHE_MAX`` (None: no cap).

    Examples
    --------
    >>> os.environ.pop("CONCEPTS_CACHE_MAX", None) and None
    >>> max_bytes_from_env() is None
    True
    """
    return parse_size(os.environ.get("CONCEPTS_CACHE_MAX"), what="CONCEPTS_CACHE_MAX")

def _c_order(array: np.ndarray) -> np.ndarray:
    # np.ascontiguousarray would turn a 0-d array into shape (1,), which then contradicts its record.
    return np.asarray(array, order="C")


class Store:
    """Content-addressed store, on disk or (``directory=None``) in memory only.

    Parameters
    ----------
    directory : str | os.PathLike | None, default=None
        The store's root folder (created private on first write), or ``None`` for a
        store that lives in memory as long as this object.
    max_bytes : int | str | None, default=None
        Size cap (bytes, or a text such as ``"2GB"``); least recently used entries are
        evicted beyond it. Default: ``$CONCEPTS_CACHE_MAX``, else no cap.

    Notes
    -----
    Arrays returned by :meth:`get` are read-only (large ones are memory-mapped); copy them before
    modifying.

    Examples
    --------
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
        self._root_made = False

    def __repr__(self) -> str:
        where = "memory" if self.directory is None else str(self.directory)
        return f"{type(self).__name__}({where!r})"

    # -- keys -------------------------------------------------------------------------------
    @staticmethod
    def make_key(*parts: Any) -> str:
        """SHA-256 hex digest of the store's format version, the package version and ``parts``.

        Each part is length-prefixed, so ``("ab", "c")`` and ``("a", "bc")`` cannot collide.
        Non-string parts (e.g. a class index) are converted with ``str``.

        Examples
        --------
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

        Examples
        --------
        >>> Store("/tmp/s").entry_path("ab" * 32).parent.name
        'ab'
        """
        if self.directory is None:
            raise ValueError("An in-memory store has no folders.")
        self._check_key(key)
        _WRITER.flush()  # whoever looks at the folder sees every entry put so far
        _RECENT.forget(key)  # ... and may change its files: the next get reads them
        return self._folder(key)

    def _folder(self, key: str) -> Path:
        assert self.directory is not None
        return self.directory / key[:2] / key

    def flush(self) -> None:
        """Wait for the background writer; report a failed write (see the module docstring).

        Examples
        --------
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

        Examples
        --------
        >>> Store().get(Store.make_key("nothing")) is None
        True
        """
        self._check_key(key)
        if self.directory is None:
            found = self._memory.get(key)
            return None if found is None or _ARRAY not in found[1] else found[1][_ARRAY]
        pending = _WRITER.pending(self, key)
        if pending is not None and pending[1].get(_ARRAY) is not None:
            # The very array being written (read-only, private to the store): its values are what a
            # read of the finished entry gives, and waiting for the writer would stall the caller behind
            # every other queued write (a cold call's ~600 MB, fsynced).
            return pending[1][_ARRAY]
        self._surface()
        kept = self._recall(key)
        if kept is not None:
            return kept
        loaded = self._read(key, "array")
        if loaded is None:
            return None
        return _RECENT.remember(self.directory, key, loaded[1][_ARRAY], entry_identity(self._folder(key)))

    def put(self, key: str, array: np.ndarray, meta: dict | None = None) -> None:
        """Store ``array`` under ``key`` (atomically on disk); ``meta`` is kept in the entry's record.

        Examples
        --------
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
        keep = None
        if _recent_size(array) is not None:
            # One private read-only copy in the layout a read gives back (C order, same dtype and
            # shape): the bytes written are the bytes later gets of this process are served. An array
            # that owns its bytes and was made read-only was handed over (hundreds of CAV entries per
            # call): it is that copy already.
            if not array.flags.writeable and array.base is None and array.flags.c_contiguous:
                owner = array
            else:
                owner = np.array(array, order="C")
                owner.flags.writeable = False
            # The one read-only view every get hands out, whether the write is pending or done.
            keep = owner.view()
            keep.flags.writeable = False
            array = keep
        elif _WRITER.enabled():
            # The writer works on a private read-only copy: the caller may change its array at once.
            array = _frozen(array)
        self._write(key, "array", {"shape": list(array.shape), "dtype": array.dtype.str}, meta,
                    {_ARRAY: lambda handle: np.save(handle, _c_order(array), allow_pickle=False)},
                    memory=({"kind": "array"}, {_ARRAY: array}), keep=keep)

    # -- public API: records (JSON + arrays) ------------------------------------------------
    def get_record(self, key: str) -> tuple[Any, dict[str, np.ndarray]] | None:
        """``(data, arrays)`` stored by :meth:`put_record`, or ``None`` (miss or damaged entry).

        Examples
        --------
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

        Raises
        ------
        TypeError
            ``data`` is not JSON-serialisable (NaN and infinities are allowed).
        ValueError
            An array has dtype object.

        Examples
        --------
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
        # Records (radiomics features, outcomes) are small and callers read them back from disk
        # right after a call: written synchronously, only array entries go to the background.
        writers: dict[str, Any] = {_RECORD: lambda handle: handle.write(text.encode("utf-8"))}
        if arrays:  # a record without arrays (e.g. radiomics features) is one small JSON file
            writers[_ARRAYS] = write_npz
        self._write(key, "record", {"arrays": sorted(arrays)}, meta, writers)

    # -- maintenance ------------------------------------------------------------------------
    def entries(self) -> Iterator[Path]:
        """Folders of the entries on disk (complete ones only; temporary folders are skipped).

        Examples
        --------
        >>> list(Store().entries())
        []
        """
        _WRITER.flush()
        _RECENT.forget()  # the caller gets the folders and may change or remove their files
        if self.directory is None or not self.directory.is_dir():
            return
        yield from entry_folders(self.directory)

    def info(self) -> dict[str, Any]:
        """Location, number of entries, bytes used, bytes per kind and the size cap.

        Raises
        ------
        NotADirectoryError
            The store's folder is a file.

        Examples
        --------
        >>> Store().info()["entries"]
        0
        """
        self._check_root()
        kinds: dict[str, int] = {}
        total = 0
        count = 0
        for entry in self.entries():
            size = _folder_size(entry)
            total += size
            count += 1
            kind = entry_kind(entry)
            kinds[kind] = kinds.get(kind, 0) + size
        if self.directory is None:
            count = len(self._memory)
        return {"directory": None if self.directory is None else str(self.directory), "entries": count,
                "bytes": total, "bytes_by_kind": dict(sorted(kinds.items())), "max_bytes": self.max_bytes,
                "format": FORMAT_VERSION, "package_version": package_version()}

    def verify(self, *, remove: bool = True) -> list[tuple[str, str]]:
        """Check every byte of every entry; return ``(entry folder, problem)`` for each damaged one.

        Damaged entries, entry folders missing a file (``entry.json`` included) among them, are
        removed unless ``remove=False``; nothing else is touched. An entry removed meanwhile by
        someone else (a clear, an eviction) is no problem.

        Raises
        ------
        NotADirectoryError
            The store's folder is a file.

        Examples
        --------
        >>> Store().verify()
        []
        """
        self._check_root()
        self.sweep()
        problems = []
        for entry in list(self.entries()):
            try:
                if self._checked_load(entry.name, entry, None, full=True) is None:
                    continue  # removed by someone else meanwhile (a clear, an eviction)
            except _Damaged as exc:
                problems.append((str(entry), str(exc)))
                if remove:
                    self._discard(entry)
        return problems

    def sweep(self, max_age_s: float = 3600.0) -> int:
        """Remove temporary folders older than ``max_age_s`` (left by killed writers); return how many.

        They are never visible as entries; this only gives their space back.

        Examples
        --------
        >>> Store().sweep()
        0
        """
        _WRITER.flush()
        _RECENT.forget()  # removes no entry, but it starts verify and eviction, which do
        if self.directory is None or not self.directory.is_dir():
            return 0
        return sweep_folder(self.directory, max_age_s)

    def clear(self) -> None:
        """Remove every entry (only folders and files this store writes are touched).

        Raises
        ------
        NotADirectoryError
            The store's folder is a file.

        Examples
        --------
        >>> store = Store(); store.clear()
        """
        self._check_root()
        _WRITER.flush()
        self._memory.clear()
        _RECENT.forget()  # every folder's: another spelling of this folder may have kept copies
        self._used = None
        if self.directory is None or not self.directory.is_dir():
            return
        clear_folder(self.directory)

    # -- internals: reading -----------------------------------------------------------------
    def _read(self, key: str, kind: str) -> tuple[dict, dict[str, np.ndarray]] | None:
        entry = self._folder(key)
        try:
            if not (entry / _ENTRY).is_file():
                # A miss, unless a folder is there without its record: writers place folders whole
                # (record included, see write_entry), so that is damage, never a write in progress.
                if not entry_is_damaged_folder(entry):
                    return None
                raise _Damaged(f"{_ENTRY} is missing")
            try:
                loaded = self._checked_load(key, entry, kind, full=False)
            except _OtherKind:
                return None
            if loaded is None:
                return None  # evicted or cleared while being read (entries vanish whole): a miss
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
        return load_entry(key, entry, kind, full=full)

    def _checked_load(self, key: str, entry: Path, kind: str | None, *,
                      full: bool) -> tuple[dict, dict[str, np.ndarray]] | None:
        """:meth:`_load`, with a missing file told apart: None when the folder vanished or was replaced
        while being read (removed by someone else), :class:`_Damaged` when the folder is still the one
        that was read and lacks the file (it would otherwise stay unwritable for ever)."""
        try:
            before = os.stat(entry)
        except FileNotFoundError:
            return None
        try:
            return self._load(key, entry, kind, full=full)
        except FileNotFoundError as exc:
            try:
                after = os.stat(entry)
            except FileNotFoundError:
                return None
            if (after.st_dev, after.st_ino) != (before.st_dev, before.st_ino):
                return None
            raise _Damaged(f"file {Path(exc.filename or '?').name} is missing") from None

    def _check_root(self) -> None:
        if self.directory is not None and self.directory.exists() and not self.directory.is_dir():
            raise NotADirectoryError(
                f"The cache folder {self.directory} is a file, not a folder. Pass the folder the cache lives in "
                "(or a new one), e.g. --dir ~/.cache/concepts-toolkit, or set CONCEPTS_CACHE_DIR.")

    def _recall(self, key: str) -> np.ndarray | None:
        """The copy kept in memory (see the module docstring), while the entry's files are those it came from."""
        found = _RECENT.recall(self.directory, key)
        if found is None:
            return None
        array, signature = found
        assert self.directory is not None
        # Plain strings: this runs for every vector of every call, and Path joins cost more than the stats.
        entry = os.path.join(os.fspath(self.directory), key[:2], key)
        if entry_identity(entry) != signature:
            # Removed, replaced or changed on disk (another process, a tool): read it as it is now.
            _RECENT.forget(key)
            return None
        try:
            os.utime(entry)  # recency for LRU eviction, as a read from disk records it
        except OSError:
            pass
        return array

    def _discard(self, entry: Path) -> None:
        _RECENT.forget(entry.name)
        if discard_entry(entry):
            self._used = None

    # -- internals: writing -----------------------------------------------------------------
    def _write(self, key: str, kind: str, extra: dict, meta: dict | None, writers: dict[str, Any],
               memory: tuple[dict, dict[str, np.ndarray]] | None = None, keep: np.ndarray | None = None) -> None:
        """Write one entry, in the background when possible (``memory``: what reads of the key return
        meanwhile); a store that cannot be written (read-only, full, removed) is warned about once.
        ``keep``: the array to keep in memory once this write placed the entry.

        Losing a cache write costs a recomputation later, never a result now, so the run goes on.
        """
        # A size cap evicts after each write: capped stores write synchronously, so that what is
        # present right after a put stays predictable.
        if memory is not None and self.max_bytes is None and _WRITER.enabled():
            entry = self._folder(key)
            try:
                # The store's folder now, once, so that an unwritable store is reported at once; each
                # entry's own parent folder is made by the writer (a fresh store makes hundreds of them).
                if not self._root_made:
                    make_private_dir(self.directory)
                    self._root_made = True
            except OSError as exc:
                self._warn_unwritable(exc, stacklevel=5)
                return
            if (entry / _ENTRY).is_file():
                return  # written once: nothing to queue
            _WRITER.submit(self, key, memory, lambda: self._write_entry(key, kind, extra, meta, writers, keep))
            return
        try:
            self._write_entry(key, kind, extra, meta, writers, keep)
        except OSError as exc:
            self._warn_unwritable(exc, stacklevel=5)

    def _warn_unwritable(self, exc: OSError, stacklevel: int) -> None:
        if not self._write_warned:
            self._write_warned = True
            warnings.warn(f"Cannot write to the cache {self.directory} ({type(exc).__name__}: {exc}); "
                          "continuing without storing results there. Set CONCEPTS_CACHE_DIR or pass "
                          "cache_dir=... (False keeps everything in memory).", UserWarning, stacklevel=stacklevel)
    def _write_entry(self, key: str, kind: str, extra: dict, meta: dict | None, writers: dict[str, Any],
                     keep: np.ndarray | None = None) -> None:
        assert self.directory is not None
        entry = self._folder(key)
        size = write_entry(entry, key, kind, extra, meta, writers)
        if size is not None:
            # Only an entry this write placed holds ``keep``'s bytes (another writer's copy of the key
            # may differ): kept before the size cap may evict it, which forgets it again.
            if keep is not None:
                _RECENT.remember(self.directory, key, keep, entry_identity(entry))
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

#: The store's former name; every existing caller keeps working.
ActivationCache = Store

__all__ = ["ActivationCache", "FORMAT_VERSION", "RECENT_BYTES", "RECENT_ENTRY_BYTES", "Store", "default_cache_dir",
           "flush_writes", "make_private_dir", "max_bytes_from_env", "parse_size"]
