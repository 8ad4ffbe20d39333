"""The part of a CAV batch's Gram matrix that is the same in every call: the random images' own tiles.

Each call of :func:`concepts.score` fits its concepts against the same random images. A Gram-matrix
family (the robustness check's logistic and ridge fits, or a Gram-matrix default estimator) needs each
random set against itself in every call -- as much arithmetic as the new concept's rows against every
row. Those tiles do not depend on the concept if the rows are centred on a point that does not either:
the random images' own mean, rather than the mean of the whole pool (which moves with the concept's
images). Centring is only there for float32 accuracy -- each probe centres its own training rows, and
its dual coefficients sum to zero -- so the fitted vectors are the same either way (to float32
rounding, ~1e-7 relative), and the random rows dominate the pool, so the accuracy is too.

A pool says which of its rows are shared, and under what content key, through
:class:`probes.row_stack.RowStack`'s ``keys``; :func:`shared_rows` finds them among a batch's rows.
:data:`SHARED_GRAM` keeps, per process and bounded in bytes, the shared rows' column means and the
Gram tiles computed among them, by that key, the rows and the column blocks: a later call computes
the same tile bit for bit, so finding it changes no result.

Examples
--------
>>> from probes.row_stack import RowStack
>>> randoms = np.arange(12, dtype=np.float32).reshape(4, 3)
>>> pool = RowStack([np.ones((2, 3), np.float32), randoms], keys=[None, "random-images"])
>>> shared = shared_rows(pool, np.arange(6))
>>> (shared.start, shared.stop), SharedGram().centre(shared, pool, 0, 3).tolist()
((2, 6), [4.5, 5.5, 6.5])
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from probes.fork_safe import ForkSafeLock

__all__ = ["SharedRows", "SharedGram", "SHARED_GRAM", "shared_rows", "MAX_BYTES"]

#: Most bytes of column means and Gram tiles kept per process (a layer of twenty random sets of fifty
#: images holds 400 kB of tiles and 8 bytes per activation of means).
MAX_BYTES = 256 * 2 ** 20


@dataclass(frozen=True)
class SharedRows:
    """The shared rows of a batch: positions ``start:stop`` of its sorted rows, and what they are.

    Attributes
    ----------
    start, stop : int
        The shared rows' positions among the batch's rows (a run: the rows are sorted).
    rows : numpy.ndarray
        Their rows in the pool.
    key : str
        The part's content key and which of its rows these are.
    """

    start: int
    stop: int
    rows: np.ndarray
    key: str


def shared_rows(pool: Any, union: np.ndarray) -> SharedRows | None:
    """The rows of ``union`` that come from ``pool``'s keyed part, or None (no keyed part, none used).

    Parameters
    ----------
    pool
        A :class:`probes.row_stack.RowStack` with ``keys`` (anything else has no shared rows).
    union
        The batch's sorted pool rows.

    Returns
    -------
    SharedRows or None

    Examples
    --------
    >>> shared_rows(np.zeros((3, 2)), np.arange(3)) is None
    True
    """
    keys = getattr(pool, "keys", None)
    if not keys or not any(keys):
        return None
    part = max(p for p, key in enumerate(keys) if key)
    first, end = int(pool.starts[part]), int(pool.starts[part + 1])
    start, stop = (int(i) for i in np.searchsorted(union, [first, end]))
    if stop - start < 2:
        return None
    local = np.asarray(union[start:stop], dtype=np.int64) - first
    which = "all" if len(local) == end - first else hashlib.sha256(local.tobytes()).hexdigest()
    return SharedRows(start, stop, np.asarray(union[start:stop]), f"{keys[part]}|{end - first}|{which}")


class SharedGram:
    """Column means and Gram tiles of shared rows, by content, least recently used first out.

    Parameters
    ----------
    max_bytes : int
        Bytes kept at most.

    Attributes
    ----------
    hits : int
        Tiles and means found (a public counter for tests and benchmarks).

    Examples
    --------
    >>> memo = SharedGram()
    >>> memo.tiles(SharedRows(0, 2, np.arange(2), "k"), [(0, 3)])
    {}
    """

    def __init__(self, max_bytes: int = MAX_BYTES) -> None:
        self.max_bytes = int(max_bytes)
        self._entries: OrderedDict[tuple, Any] = OrderedDict()
        self._bytes = 0
        self._lock = ForkSafeLock()
        self.hits = 0

    def centre(self, shared: SharedRows, pool: Any, c0: int, c1: int) -> np.ndarray:
        """The float64 mean of the shared rows over columns ``c0:c1`` (read once, then kept).

        Parameters
        ----------
        shared : SharedRows
        pool
            The pool the rows are read from.
        c0, c1 : int
            The columns.

        Returns
        -------
        numpy.ndarray
            Read-only.
        """
        found = self.known_centre(shared, c0, c1)
        if found is None:
            found = self.keep_centre(shared, c0, c1,
                                     np.asarray(pool[shared.rows, c0:c1]).mean(axis=0, dtype=np.float64))
        return found

    def known_centre(self, shared: SharedRows, c0: int, c1: int) -> np.ndarray | None:
        """The mean kept by :meth:`centre` or :meth:`keep_centre`, or None."""
        return self._get(("centre", shared.key, int(c0), int(c1)))

    def keep_centre(self, shared: SharedRows, c0: int, c1: int, mean: np.ndarray) -> np.ndarray:
        """Keep the shared rows' float64 mean over columns ``c0:c1`` (computed by the caller, on a read of
        the rows it makes anyway; the same bits as :meth:`centre` computes); returns the kept copy."""
        mean = np.array(mean, dtype=np.float64)
        mean.flags.writeable = False
        self._put(("centre", shared.key, int(c0), int(c1)), mean, mean.nbytes)
        return mean

    def tiles(self, shared: SharedRows, blocks: list[tuple[int, int]]) -> dict[tuple[int, int, int, int], np.ndarray]:
        """The tiles kept for these rows and column blocks: ``{(r0, r1, k0, k1): array}``, positions
        relative to ``shared.start`` (a new dict; the arrays are read-only)."""
        found = self._get(("tiles", shared.key, tuple(blocks)))
        return dict(found) if found is not None else {}

    def keep_tiles(self, shared: SharedRows, blocks: list[tuple[int, int]],
                   tiles: dict[tuple[int, int, int, int], np.ndarray]) -> None:
        """Add ``tiles`` (as :meth:`tiles` returns them) to what is kept for these rows and blocks."""
        if not tiles:
            return
        key = ("tiles", shared.key, tuple(blocks))
        merged = dict(self._get(key) or {})
        for where, tile in tiles.items():
            tile = np.array(tile)
            tile.flags.writeable = False
            merged[where] = tile
        self._put(key, merged, sum(t.nbytes for t in merged.values()))

    def clear(self) -> None:
        """Forget everything.

        Examples
        --------
        >>> SharedGram().clear()
        """
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def _get(self, key: tuple) -> Any:
        with self._lock:
            if key not in self._entries:
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return self._entries[key][0]

    def _put(self, key: tuple, value: Any, size: int) -> None:
        with self._lock:
            if key in self._entries:
                self._bytes -= self._entries.pop(key)[1]
            if size > self.max_bytes:
                return
            while self._entries and self._bytes + size > self.max_bytes:
                self._bytes -= self._entries.popitem(last=False)[1][1]
            self._entries[key] = (value, size)
            self._bytes += size


#: The process's shared tiles and means (what :func:`probes.gram.centred_gram` uses).
SHARED_GRAM = SharedGram()
