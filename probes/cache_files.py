"""The store's on-disk entry format: one folder per key, written whole and checked on every read.

What a :class:`probes.cache.Store` entry looks like on disk (see the layout in :mod:`probes.cache`),
and the file-level work on it: writing an entry's files through a hashing, fsyncing writer into a
temporary folder renamed into place (:func:`write_entry`), reading it back with the size and checksum
checks (:func:`load_entry`), and the folder chores of the store (listing entries, removing damaged
ones, sweeping temporary folders, clearing, measuring sizes, private folders).

Every read checks every byte of the entry, whatever its size: each file's CRC-32 (recorded at write
time) is computed on the bytes as they are read, 1 MiB at a time while the piece
is still in the processor's cache (a memory-mapped array: through its mapping, which the caller reads
next anyway), so the check is no second pass over memory. It costs about 0.27 ms per MB (3.7 GB/s on
one core of the 2-core test machine: 13 ms for a 48 MB activation entry), against 0.65 ms per MB for
SHA-256 with the processor's SHA instructions and about four times that without them. CRC-32 catches
every burst of up to 32 changed bits and any other accidental change but one in 2**32. Entries written
before CRC-32 was recorded are checked by their SHA-256 (with ``full=True``, ``concepts cache verify``,
also entries that record both).

An array entry this process has checked whole is not checked again while its files keep the identity
they had then (device, inode, size, modification and change times of ``entry.json`` and ``array.npy``;
:func:`entry_identity`): later ``concepts.score`` calls of the process read the random pool's
activations (hundreds of megabytes) without another checksum pass. Any write to a file changes its
times; trust is taken only from a check of files last changed more than
:data:`probes.identity.RACY_SECONDS` before it, so that a rewrite in place within one timestamp tick
cannot hide (git's "racy clean" rule); entries just written are checked when first read. ``full=True``
always checks.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import shutil
import time
import threading
import uuid
import zlib
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from probes.identity import RACY_SECONDS, package_version

#: Version of the on-disk layout; it enters every key, so entries of another layout are never read.
FORMAT_VERSION = 2

#: Arrays whose file is at least this large are returned memory-mapped (read-only).
MMAP_THRESHOLD_BYTES = 16 * 2 ** 20

#: No longer used by reads, which check every byte of every file whatever its size (the sampled
#: check of larger files let damage in their middle through); kept for callers that import it.
FULL_CHECK_BYTES = 4 * 2 ** 20

#: Bytes read and checksummed at a time: small enough to stay in the processor's cache between the
#: copy and the checksum.
_CHUNK = 2 ** 20
_KEY_RE = re.compile(r"^[0-9a-f]{8,128}$")
_ENTRY = "entry.json"
_ARRAY = "array.npy"
_RECORD = "record.json"
_ARRAYS = "arrays.npz"
# Files of the layout before FORMAT_VERSION 2 (<key>.npy + <key>.json), removed by clear().
_LEGACY_RE = re.compile(r"\.?[0-9a-f]{8,128}(\.[0-9]+\.[0-9a-f]{32})?\.(npy|json)(\.tmp)?")
_TMP_PREFIX = ".tmp-"
_TRASH_PREFIX = ".trash-"

def make_private_dir(path: str | os.PathLike) -> None:
    """Create ``path`` and any missing parents with mode 0700 (existing folders keep their mode).

    Examples
    --------
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


#: Whether an entry's files and folder are fsynced before it is renamed into place (what makes a
#: crash leave either a whole entry or none). Only a throwaway store turns it off (the doctests' cache).
FSYNC = True


def _fsync(fd: int) -> None:
    if FSYNC:
        os.fsync(fd)


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; not possible on every platform, so best effort.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        _fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class _HashingWriter:
    """File wrapper that checksums (CRC-32) and counts the bytes written through it (no second copy in
    memory). No SHA-256: a read checks the CRC-32, and the background writer shares the cores with the
    analysis (SHA-256 of a first call's 530 MB of activations was a third of a second of one core)."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle
        self.crc32 = 0
        self.size = 0

    def write(self, data: bytes | memoryview) -> int:
        view = memoryview(data).cast("B")
        self.crc32 = zlib.crc32(view, self.crc32)
        self.size += view.nbytes
        self._handle.write(view)
        return view.nbytes

    def flush(self) -> None:
        self._handle.flush()


def entry_identity(entry: str | os.PathLike) -> tuple | None:
    """Identity of an array entry's files now (None: one is missing): device, inode, size, modification
    and change times of ``entry.json`` and ``array.npy``.

    Examples
    --------
    >>> entry_identity("no/such/entry") is None
    True
    """
    folder = os.fspath(entry)
    try:
        stats = [os.stat(os.path.join(folder, name)) for name in (_ENTRY, _ARRAY)]
    except OSError:
        return None
    return tuple((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns) for st in stats)


class _CheckedEntries:
    """Array entries this process checked whole, with their files' identity then (bounded)."""

    def __init__(self, max_entries: int = 65536) -> None:
        self.max_entries = max_entries
        self._items: OrderedDict[str, tuple] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, entry: Path, identity: tuple | None) -> None:
        if identity is None:
            return
        with self._lock:
            self._items[os.fspath(entry)] = identity
            self._items.move_to_end(os.fspath(entry))
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)

    def holds(self, entry: Path, identity: tuple | None) -> bool:
        with self._lock:
            return identity is not None and self._items.get(os.fspath(entry)) == identity


_CHECKED = _CheckedEntries()


def _settled(identity: tuple, checked_at: float) -> bool:
    """Whether files last changed at least :data:`probes.identity.RACY_SECONDS` before ``checked_at``: a
    later rewrite in place then has later times, even with coarse timestamps (git's "racy clean" rule)."""
    changed = max(max(st[3], st[4]) for st in identity) / 1e9
    return checked_at - changed > RACY_SECONDS


class _Unchecked:
    """The checksums of a file already checked whole by this process and unchanged since: none."""

    def update(self, data: Any) -> None:
        pass

    def check(self) -> None:
        pass


class _Damaged(Exception):
    """An entry that exists but cannot be trusted (the message says why)."""


class _OtherKind(Exception):
    """An intact entry of another kind (a record asked for as an array): a miss, not damage."""


class _Checksums:
    """The running checksums of one file's bytes as they are read, and their check against its record.

    CRC-32 when the record has one (SHA-256 as well with ``full``), else SHA-256 (entries written
    before CRC-32 was recorded).
    """

    def __init__(self, name: str, info: dict, full: bool) -> None:
        want_crc, want_sha = info.get("crc32"), info.get("sha256")
        self.name = name
        self.want_crc = want_crc if isinstance(want_crc, int) and not isinstance(want_crc, bool) else None
        self.want_sha = want_sha if isinstance(want_sha, str) else None
        if self.want_crc is None and self.want_sha is None:
            raise _Damaged(f"{name}: no checksum recorded in {_ENTRY}")
        self.crc = 0 if self.want_crc is not None else None
        self.sha = hashlib.sha256() if self.want_sha is not None and (full or self.crc is None) else None

    def update(self, data: Any) -> None:
        if self.crc is not None:
            self.crc = zlib.crc32(data, self.crc)
        if self.sha is not None:
            self.sha.update(data)

    def check(self) -> None:
        if (self.crc is not None and self.crc != self.want_crc) or \
                (self.sha is not None and self.sha.hexdigest() != self.want_sha):
            raise _Damaged(f"{self.name}: content hash does not match, so its bytes changed after it was written")


def _read_into(handle: Any, buffer: memoryview, check: _Checksums, name: str) -> None:
    """Fill byte ``buffer`` from ``handle`` 1 MiB at a time, checksumming each piece as it arrives."""
    position, total = 0, buffer.nbytes
    while position < total:
        got = handle.readinto(buffer[position:position + _CHUNK])
        if not got:
            raise _Damaged(f"{name}: ends after {position} of {total} bytes")
        check.update(buffer[position:position + got])
        position += got


def _read_checked(path: Path, size: int, check: _Checksums) -> bytearray:
    """A whole file's bytes, checksummed as they are read; the caller checks ``check``."""
    buffer = bytearray(size)
    with open(path, "rb", buffering=0) as handle:
        _read_into(handle, memoryview(buffer), check, path.name)
        if handle.read(1):
            raise _Damaged(f"{path.name}: longer than the {size} bytes it had a moment ago")
    return buffer


def _read_array(path: Path, size: int, check: _Checksums, mmap: bool) -> np.ndarray:
    """The array of an ``.npy`` file of ``size`` bytes, every byte checksummed on the way; the caller
    checks ``check``. ``mmap``: memory-mapped read-only, the checksum then reads it through the mapping."""
    with open(path, "rb", buffering=0) as handle:
        try:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
            else:
                raise ValueError(f"format version {version} is not one this store writes")
        except ValueError as exc:
            raise _Damaged(f"{path.name}: unreadable header: {exc}") from None
        offset = handle.tell()
        if fortran or dtype.hasobject or dtype.itemsize == 0:
            # Never written by the store (C order, no objects): checked and parsed the general way.
            data = _read_checked(path, size, check)
            return np.load(io.BytesIO(data), allow_pickle=False)
        nbytes = math.prod(shape) * dtype.itemsize
        if offset + nbytes != size:
            raise _Damaged(f"{path.name}: its header describes {offset + nbytes} bytes, the file has {size}")
        handle.seek(0)
        check.update(handle.read(offset))
        if mmap:
            array = np.lib.format.open_memmap(path, mode="r")
            check.update(array.reshape(-1).view(np.uint8))
            return array
        array = np.empty(shape, dtype)
        _read_into(handle, memoryview(array.reshape(-1).view(np.uint8)), check, path.name)
        if handle.read(1):
            raise _Damaged(f"{path.name}: longer than the {size} bytes it had a moment ago")
    return array


#: The files an entry of each kind has (one set each, or either).
_KIND_FILES = {"array": ({_ARRAY},), "record": ({_RECORD}, {_RECORD, _ARRAYS})}


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


def load_entry(key: str, entry: Path, kind: str | None, *, full: bool) -> tuple[dict, dict[str, np.ndarray]]:
    """Read and check the entry of ``key`` in folder ``entry``: ``({"record": ..., ["record.json": data]}, arrays)``.

    Every byte of every file is checked, whatever its size: its CRC-32 is computed on the bytes as they
    are read (no second pass over them), its SHA-256 for entries written before CRC-32 was recorded.

    Parameters
    ----------
    key : str
        The key the entry must record.
    entry : Path
        The entry's folder.
    kind : str | None
        ``"array"`` or ``"record"``; an intact entry of another kind raises :class:`_OtherKind`.
        None accepts either.
    full : bool
        Check the SHA-256 as well as the CRC-32 (``concepts cache verify``).

    Returns
    -------
    tuple[dict, dict[str, np.ndarray]]
        The parsed data and the arrays (large arrays memory-mapped, all read-only).

    Raises
    ------
    _Damaged
        The entry cannot be trusted (the message says why).
    FileNotFoundError
        A file of the entry is missing: the entry vanished while being read, or lost the file
        (the caller tells which).

    Examples
    --------
    >>> import tempfile; folder = Path(tempfile.mkdtemp()) / ("ab" * 16)
    >>> write_entry(folder, "ab" * 16, "record", {"arrays": []}, None, {_RECORD: lambda h: h.write(b"[1]")}) > 0
    True
    >>> load_entry("ab" * 16, folder, "record", full=True)[0][_RECORD]
    [1]
    """
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
    if set(files) not in _KIND_FILES.get(record.get("kind"), ()):
        raise _Damaged(f"files {sorted(files)} do not make an entry of kind {record.get('kind')!r}")
    checks: dict[str, _Checksums] = {}
    sizes: dict[str, int] = {}
    for name, info in files.items():
        try:
            expected = int(info["size"])
        except (KeyError, TypeError, ValueError):
            raise _Damaged(f"unreadable record {_ENTRY}: no size for {name}") from None
        sizes[name] = (entry / name).stat().st_size
        if sizes[name] != expected:
            raise _Damaged(f"{name}: size {sizes[name]} bytes, expected {expected}")
        checks[name] = _Checksums(name, info, full)
    arrays: dict[str, np.ndarray] = {}
    data: dict[str, Any] = {"record": record}
    try:
        if record["kind"] == "array":
            size = sizes[_ARRAY]
            started = time.time()
            identity = entry_identity(entry) if not full else None
            known = _CHECKED.holds(entry, identity)
            check = _Unchecked() if known else checks[_ARRAY]
            array = _read_array(entry / _ARRAY, size, check, mmap=size >= MMAP_THRESHOLD_BYTES)
            check.check()
            if not known and identity is not None and entry_identity(entry) == identity \
                    and _settled(identity, started):
                _CHECKED.remember(entry, identity)     # unchanged while it was read and checked
            if list(array.shape) != record["shape"] or array.dtype.str != record["dtype"]:
                raise _Damaged(f"array {array.dtype}{array.shape} does not match its record "
                               f"{record['dtype']}{tuple(record['shape'])}")
            if not isinstance(array, np.memmap):
                array.flags.writeable = False
            arrays[_ARRAY] = array
        else:
            text = _read_checked(entry / _RECORD, sizes[_RECORD], checks[_RECORD])
            checks[_RECORD].check()
            data[_RECORD] = json.loads(text.decode("utf-8"))
            if _ARRAYS in files:
                packed = _read_checked(entry / _ARRAYS, sizes[_ARRAYS], checks[_ARRAYS])
                checks[_ARRAYS].check()
                with np.load(io.BytesIO(packed), allow_pickle=False) as npz:
                    arrays = {name: npz[name] for name in npz.files}
            if sorted(arrays) != record.get("arrays"):
                raise _Damaged("its arrays do not match its record")
    except (_Damaged, FileNotFoundError):
        raise
    except Exception as exc:  # any failure to parse means the entry cannot be trusted
        raise _Damaged(f"unreadable content: {type(exc).__name__}: {exc}") from None
    return data, arrays


def discard_entry(entry: Path) -> bool:
    """Remove an entry folder: renamed first, so no reader sees it half deleted; False if it could not be.

    Parameters
    ----------
    entry : Path
        The entry's folder.

    Returns
    -------
    bool
        Whether the folder was taken away.

    Examples
    --------
    >>> import tempfile; folder = Path(tempfile.mkdtemp()) / "x"; folder.mkdir()
    >>> discard_entry(folder), folder.exists()
    (True, False)
    """
    # Rename first so that no reader can see a half-deleted entry, then delete at leisure.
    trash = entry.parent / f"{_TRASH_PREFIX}{entry.name}-{uuid.uuid4().hex}"
    try:
        os.rename(entry, trash)
    except OSError:
        return False
    if trash.is_dir() and not trash.is_symlink():
        shutil.rmtree(trash, ignore_errors=True)
    else:  # a file or link where an entry's folder belongs
        try:
            trash.unlink()
        except OSError:
            pass
    return True


def write_entry(entry: Path, key: str, kind: str, extra: dict, meta: dict | None,
                writers: dict[str, Any]) -> int | None:
    """Write the entry of ``key`` into folder ``entry`` atomically; return its bytes (None: already there).

    Parameters
    ----------
    entry : Path
        The entry's folder (``<root>/<key[:2]>/<key>``).
    key, kind : str
        The key and ``"array"`` or ``"record"``.
    extra : dict
        More fields of the entry's record (shape and dtype, or array names).
    meta : dict | None
        The caller's metadata, kept in the record.
    writers : dict[str, Any]
        For each file name, a function that writes the file's bytes to a handle.

    Returns
    -------
    int | None
        Bytes of the entry's files, or None when an entry of that key exists (or another writer
        placed it first): entries are written once.

    Examples
    --------
    >>> import tempfile; folder = Path(tempfile.mkdtemp()) / ("cd" * 16)
    >>> write_entry(folder, "cd" * 16, "record", {"arrays": []}, None, {_RECORD: lambda h: h.write(b"{}")})
    2
    """
    if (entry / _ENTRY).is_file():
        return None  # written once: an existing entry (verified on read) is never overwritten
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
                _fsync(handle.fileno())
            files[name] = {"size": hashing.size, "crc32": hashing.crc32}
        record = {"format": FORMAT_VERSION, "package_version": package_version(), "key": key, "kind": kind,
                  "created": time.time(), "files": files, "meta": meta or {}, **extra}
        with open(tmp / _ENTRY, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(record, sort_keys=True, default=str))
            handle.flush()
            _fsync(handle.fileno())
        if not _place(tmp, entry):
            return None
        _fsync_dir(entry.parent)
        size = sum(f["size"] for f in files.values())
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return size


def _place(tmp: Path, entry: Path) -> bool:
    """Rename the finished folder ``tmp`` to ``entry``; False when another writer's entry is there.

    Something else at ``entry`` (a folder without its record, a file) is damage that would keep the
    key unwritable for ever: it is taken away and the rename tried again.
    """
    for _ in range(3):
        try:
            os.rename(tmp, entry)
            return True
        except OSError:
            pass
        if (entry / _ENTRY).is_file():
            return False  # another writer placed this key first (its entry is as valid as ours): keep theirs
        # Nothing there any more (removed meanwhile), or damage: a folder's record is written before
        # the folder gets its name, so a named folder without one is never a writer's work in progress.
        if entry_is_damaged_folder(entry):
            discard_entry(entry)
    return False


def entry_is_damaged_folder(entry: Path) -> bool:
    """Whether something at an entry's place lacks the entry's record (a writer places a folder whole,
    record included, so it is damage); False when nothing is there or an entry was just placed.

    The folder is looked at before and after the record, and must be the same one, so that one
    removed and placed again meanwhile is not taken for damage.

    Examples
    --------
    >>> import tempfile; folder = Path(tempfile.mkdtemp()) / "ab"; folder.mkdir()
    >>> entry_is_damaged_folder(folder), entry_is_damaged_folder(folder / "none")
    (True, False)
    """
    try:
        before = os.stat(entry)
    except OSError:
        return False
    if os.path.isfile(os.path.join(entry, _ENTRY)):
        return False
    try:
        after = os.stat(entry)
    except OSError:
        return False
    return (before.st_dev, before.st_ino) == (after.st_dev, after.st_ino)


def entry_folders(directory: Path) -> Iterator[Path]:
    """Folders of the complete entries under a store's root (temporary folders are skipped).

    Parameters
    ----------
    directory : Path
        The store's root folder.

    Returns
    -------
    Iterator[Path]
        Entry folders, in key order.

    Examples
    --------
    >>> import tempfile; list(entry_folders(Path(tempfile.mkdtemp())))
    []
    """
    for sub in sorted(directory.iterdir()):
        if not (sub.is_dir() and re.fullmatch(r"[0-9a-f]{2}", sub.name)):
            continue
        for entry in sorted(sub.iterdir()):
            if entry.is_dir() and _KEY_RE.match(entry.name):
                yield entry


def sweep_folder(directory: Path, max_age_s: float) -> int:
    """Remove temporary and trash folders older than ``max_age_s`` under a store's root; return how many.

    Parameters
    ----------
    directory : Path
        The store's root folder.
    max_age_s : float
        Age in seconds beyond which a left-over folder is removed.

    Returns
    -------
    int
        Folders removed.

    Examples
    --------
    >>> import tempfile; sweep_folder(Path(tempfile.mkdtemp()), 0.0)
    0
    """
    removed = 0
    cutoff = time.time() - max_age_s
    for sub in directory.iterdir():
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


def clear_folder(directory: Path) -> None:
    """Remove every entry, temporary folder and legacy file under a store's root (nothing else).

    Parameters
    ----------
    directory : Path
        The store's root folder.

    Examples
    --------
    >>> import tempfile; clear_folder(Path(tempfile.mkdtemp()))
    """
    for sub in directory.iterdir():
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


def entry_kind(entry: Path) -> str:
    """What an entry holds, for the store's summary: its caller's ``meta["kind"]``, else its own kind.

    Parameters
    ----------
    entry : Path
        The entry's folder.

    Returns
    -------
    str
        E.g. ``"act"``, ``"grad"``, ``"array"``, ``"record"``; ``"damaged"`` when its record cannot be read.

    Examples
    --------
    >>> import tempfile; entry_kind(Path(tempfile.mkdtemp()))
    'damaged'
    """
    try:
        record = json.loads((entry / _ENTRY).read_text(encoding="utf-8"))
        return str(record.get("meta", {}).get("kind") or record.get("kind", "?"))
    except (OSError, ValueError, AttributeError):
        return "damaged"
