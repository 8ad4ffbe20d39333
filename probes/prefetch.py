"""Read the next batch of a source while the model runs on the current one.

An engine pass alternates two jobs: decoding a batch of images (PNG, NIfTI, DICOM: file reads and
decompression, mostly outside the Python lock) and running the model on it (TensorFlow's own
threads). Done one after the other, the pass costs their sum; with the next batch read on a
background thread while the model runs, it costs closer to the larger of the two. The batches, their
order and every exception are exactly those of the plain loop: one batch is read ahead, never more,
and an error raised while reading a batch is raised where the consumer asks for that batch.

Examples
--------
>>> list(prefetched(iter([1, 2, 3])))
[1, 2, 3]
>>> def broken():
...     yield 1
...     raise ValueError("image 2 is unreadable")
>>> batches = prefetched(broken())
>>> next(batches)
1
>>> next(batches)
Traceback (most recent call last):
...
ValueError: image 2 is unreadable
"""
from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Iterable, Iterator, TypeVar

__all__ = ["PREFETCH", "prefetched"]

T = TypeVar("T")

#: Read the next batch ahead (False: the plain loop, one batch after the other, in the caller's thread).
PREFETCH = True

_DONE = object()


def _read_next(iterator: Iterator[T], future: Future) -> None:
    try:
        future.set_result(next(iterator, _DONE))
    except BaseException as error:  # noqa: BLE001  (re-raised in the consumer's thread)
        future.set_exception(error)


def prefetched(batches: Iterable[T], enabled: bool | None = None) -> Iterator[T]:
    """Yield the items of ``batches`` in order, reading each next one on a background thread.

    Parameters
    ----------
    batches
        Any iterable; it is only ever advanced by one thread at a time.
    enabled
        False: iterate plainly in this thread. None: :data:`PREFETCH`.

    Yields
    ------
    object
        The items of ``batches``; an exception raised while reading one is raised here, in place of it.

    Examples
    --------
    >>> [b * 2 for b in prefetched(range(4))]
    [0, 2, 4, 6]
    """
    iterator = iter(batches)
    if not (PREFETCH if enabled is None else enabled):
        yield from iterator
        return
    pending: Future | None = None
    try:
        while True:
            if pending is None:
                item = next(iterator, _DONE)
            else:
                item = pending.result()
            pending = None
            if item is _DONE:
                return
            pending = Future()
            # A fresh daemon thread per batch: a few hundred microseconds against a batch's decoding,
            # and no pool whose threads outlive a fork (Dask workers, DataLoader-style forks).
            threading.Thread(target=_read_next, args=(iterator, pending), daemon=True,
                             name="probes-prefetch").start()
            yield item
    finally:
        if pending is not None:
            # The consumer stopped early (an error in the model step, a closed generator): let the
            # read in flight finish, so that the source is never closed while it runs, then close it.
            try:
                pending.result()
            except BaseException:  # noqa: BLE001  (the consumer's own error is the one that matters)
                pass
        close = getattr(iterator, "close", None)
        if close is not None:
            close()
