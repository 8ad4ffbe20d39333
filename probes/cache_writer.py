"""The store's background writer: array entries leave the caller's critical path.

:meth:`probes.cache.Store.put` hands an entry to the one writer thread of the process
(:data:`_WRITER`) and returns; a read of a key still pending gets the array being written, and
:func:`flush_writes` (also run at interpreter exit) waits for all. At most
:data:`PENDING_BYTES_LIMIT` bytes of array data wait at once. Child processes and
``$CONCEPTS_CACHE_SYNC=1`` write synchronously (:meth:`_BackgroundWriter.enabled`).

While an analysis computes it holds the writer (:func:`hold_writes`): writing hundreds of megabytes
costs the machine as much CPU as the analysis's matrix products on a small machine (the kernel's
copies into the page cache, hashing, fsync), and with the two running side by side a cold call took
a fifth longer than the same call in memory. Held entries are written once no analysis runs, or as
soon as they reach :data:`PENDING_BYTES_LIMIT`, or on a flush; reads are served meanwhile.
"""
from __future__ import annotations

import atexit
import contextlib
import multiprocessing
import os
import queue
import threading
from typing import Any, Iterator

import numpy as np

from probes.memory import physical_memory

__all__ = ["PENDING_BYTES_LIMIT", "flush_writes", "hold_writes"]

def _pending_limit() -> int:
    # An eighth of the machine's memory, between 512 MiB and 2 GiB: a cold call on the reference work
    # writes about 600 MB, and on a slow disk (fsync at ~150 MB/s) the next call should not wait for it.
    return int(min(2 * 2 ** 30, max(512 * 2 ** 20, physical_memory() // 8)))


#: Most bytes of array data waiting for the background writer; a put beyond it waits, so a
#: producer faster than the disk cannot hold unbounded copies in memory.
PENDING_BYTES_LIMIT = _pending_limit()


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
        self._holds = 0       # analyses running: the writer starts no new entry (see hold)
        self._flushing = 0    # flushes waiting: they override the holds
        self._waiting = 0     # puts waiting for room under the limit: so do they

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
                self._waiting += 1
                self._cond.notify_all()
                try:
                    self._cond.wait()
                finally:
                    self._waiting -= 1
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

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        with self._cond:
            if self._pid != os.getpid():
                self.__init__()
            self._holds += 1
        try:
            yield
        finally:
            with self._cond:
                self._holds -= 1
                self._cond.notify_all()

    def _run(self) -> None:
        _lower_priority()
        while True:
            store, key, job = self._queue.get()
            with self._cond:
                while self._holds and not self._flushing and not self._waiting:
                    self._cond.wait()
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
        with self._cond:
            self._flushing += 1
            self._cond.notify_all()
        try:
            self._queue.join()
        finally:
            with self._cond:
                self._flushing -= 1

    def take_failures(self, store: Any) -> list[BaseException]:
        with self._cond:
            mine = [exc for owner, exc in self._failures if owner is store]
            self._failures = [(owner, exc) for owner, exc in self._failures if owner is not store]
        return mine


#: How much the writer thread lowers its scheduling priority (Linux ``nice`` increment; 0 keeps it).
WRITER_NICENESS = 10


def _lower_priority() -> None:
    """Let the analysis's own threads go first: the writes are off the critical path, and on a busy
    machine a writer at the same priority takes a core from the matrix products the caller waits for.
    A caller that outruns the writer still waits for it at :data:`PENDING_BYTES_LIMIT`, and then the
    writer has the machine to itself. Linux only (elsewhere a thread has no priority of its own)."""
    if not WRITER_NICENESS or not hasattr(threading, "get_native_id") or not hasattr(os, "setpriority"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + WRITER_NICENESS)
    except OSError:
        pass


_WRITER = _BackgroundWriter()
atexit.register(_WRITER.flush)


def hold_writes() -> contextlib.AbstractContextManager:
    """Keep the background writer from starting new entries while the block runs (an analysis computing).

    Entries put meanwhile wait in memory (reads get them from there) and are written after the block,
    or during it once :data:`PENDING_BYTES_LIMIT` bytes wait, or when something flushes. Blocks may
    nest and run in several threads; the writer waits until none is open.

    Returns
    -------
    contextlib.AbstractContextManager

    Examples
    --------
    >>> with hold_writes():
    ...     pass
    """
    return _WRITER.hold()


def flush_writes() -> None:
    """Wait until every cache entry put in this process is on disk.

    Examples
    --------
    >>> flush_writes()
    """
    _WRITER.flush()
