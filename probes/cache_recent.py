"""The store's per-process memory of small array entries (CAV vectors and the like), shared by every store.

A ``concepts.score`` call opens its own :class:`probes.cache.Store`; the next call of the process should
not re-read and re-hash the hundreds of small entries (random-vs-random CAVs) the last one wrote or read.
:data:`_RECENT` keeps them, bounded (:data:`RECENT_BYTES` in all, :data:`RECENT_ENTRY_BYTES` each),
least recently used dropped first, each with the identity of the files it was made from, so that a copy
is served only while those files are unchanged.

Examples
--------
>>> _recent_size(np.zeros(4)), _recent_size(np.zeros(4, dtype=object))
(32, None)
"""
from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from probes import cache_files

__all__ = ["RECENT_BYTES", "RECENT_ENTRY_BYTES"]

#: Most bytes of array data that recently written or read store entries keep in memory (per process).
RECENT_BYTES = 256 * 2 ** 20

#: Largest array entry kept in memory: small entries read again and again, e.g. CAV vectors (whose every
#: byte a read from disk would check again); activations of whole sets are larger.
RECENT_ENTRY_BYTES = 4 * 2 ** 20

# Only plain numbers: np.save/np.load give them back with the same dtype, shape and values.
_RECENT_KINDS = frozenset("biufc")


def _recent_size(array: np.ndarray) -> int | None:
    """Bytes an entry takes in the in-process memory of recent entries, or None if it stays out."""
    if isinstance(array, np.memmap) or array.dtype.kind not in _RECENT_KINDS or array.dtype.hasobject:
        return None
    size = int(array.nbytes)
    return size if size <= RECENT_ENTRY_BYTES else None


class _RecentArrays:
    """The process's bounded memory of small array entries, by (store folder, key), least recently used first.

    Shared by every :class:`Store` of the process (each ``concepts.score`` call opens its own) and the
    background writer thread, hence the lock.
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._items: OrderedDict[tuple[str, str], tuple[np.ndarray, tuple, int]] = OrderedDict()
        self._bytes = 0

    def remember(self, directory: Path, key: str, array: np.ndarray, signature: tuple | None) -> np.ndarray:
        """Keep read-only ``array`` as entry ``key`` read from files ``signature``; return what to hand out."""
        size = _recent_size(array)
        # A file a read would memory-map stays out: a get returns what a read from disk returns.
        if size is None or signature is None or array.flags.writeable \
                or signature[1][2] >= cache_files.MMAP_THRESHOLD_BYTES:
            return array
        # Every get hands out this one view of an array owning its data (np.load's arrays view a
        # writeable buffer: copied once): with a read-only base, no caller can make it writeable again
        # and change what later gets return.
        base = array.base
        if isinstance(base, np.ndarray) and base.base is None and not base.flags.writeable \
                and array.shape == base.shape and array.dtype == base.dtype:
            shown = array   # already such a view (the one a get of the pending entry handed out)
        else:
            if base is not None:
                array = array.copy()
                array.flags.writeable = False
            shown = array.view()
            shown.flags.writeable = False
        with self._lock:
            old = self._items.pop((str(directory), key), None)
            if old is not None:
                self._bytes -= old[2]
            if size > RECENT_BYTES:
                return shown
            self._items[(str(directory), key)] = (shown, signature, size)
            self._bytes += size
            while self._bytes > RECENT_BYTES:
                _, (_, _, dropped) = self._items.popitem(last=False)
                self._bytes -= dropped
        return shown

    def recall(self, directory: Path, key: str) -> tuple[np.ndarray, tuple] | None:
        with self._lock:
            found = self._items.get((str(directory), key))
            if found is None:
                return None
            self._items.move_to_end((str(directory), key))
        return found[0], found[1]

    def forget(self, key: str | None = None) -> None:
        """Drop ``key`` (from every folder: paths may name one folder in several ways), or everything."""
        with self._lock:
            if key is None:
                self._items.clear()
                self._bytes = 0
                return
            for item in [item for item in self._items if item[1] == key]:
                self._bytes -= self._items.pop(item)[2]

    def __len__(self) -> int:
        return len(self._items)


_RECENT = _RecentArrays()
if hasattr(os, "register_at_fork"):
    # A child must not inherit a lock held by the parent's writer thread at the fork.
    os.register_at_fork(after_in_child=_RECENT._reset)
