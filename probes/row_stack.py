"""Several activation arrays of one width, read as one pool of rows without copying them together.

The CAV pool of a layer is every concept's activations followed by the random images' activations
(:func:`probes.design.stack_pool`). Stacking them into one array copies the whole random pool -- about
half a gigabyte on a wide layer -- in every call, although every reader of the pool reads it one
column block at a time anyway (:mod:`probes.gram`, :func:`probes.linear.fit_cav_batch`). A
:class:`RowStack` answers those reads, ``pool[rows, c0:c1]``, from the parts directly: each read is a
fresh float32 array, so it costs what the copy of the block cost before.

Examples
--------
>>> stack = RowStack([np.ones((2, 3)), np.zeros((3, 3))])
>>> stack.shape, stack[np.array([1, 2]), 0:2].tolist()
((5, 3), [[1.0, 1.0], [0.0, 0.0]])
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

__all__ = ["RowStack"]


class RowStack:
    """Rows of several 2-D arrays of one width, in order, read as one ``(n, d)`` float32 pool.

    Supports what the CAV fits use: ``shape``, ``dtype``, ``ndim``, ``len()``, and indexing by rows
    (a slice, an integer array or a boolean mask), optionally with a column slice: ``stack[rows]``,
    ``stack[rows, c0:c1]``. Every read returns a new, writeable, C-contiguous float32 array.
    ``np.asarray(stack)`` makes the whole copy (for anything else).

    Parameters
    ----------
    parts : sequence of numpy.ndarray
        ``(n_i, ...)`` arrays (flattened to ``(n_i, d)``; memory-mapped arrays stay on disk).
    keys : sequence of str or None, optional
        A content key for each part that is the same in other calls (the random images' activations),
        None for the others: the Gram tiles among a keyed part's rows are then kept between calls
        (:mod:`probes.shared_gram`). The key must change whenever the part's values do.

    Examples
    --------
    >>> stack = RowStack([np.arange(4.0).reshape(2, 2), np.arange(4.0, 6.0).reshape(1, 2)])
    >>> np.asarray(stack).tolist(), stack[1:, 1:].tolist()
    ([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]], [[3.0], [5.0]])
    """

    ndim = 2
    dtype = np.dtype(np.float32)

    def __init__(self, parts: Sequence[np.ndarray], keys: Sequence[str | None] | None = None) -> None:
        arrays = [np.asarray(p) for p in parts]
        self.keys = list(keys) if keys is not None else [None] * len(arrays)
        if len(self.keys) != len(arrays):
            raise ValueError(f"RowStack got {len(self.keys)} keys for {len(arrays)} parts.")
        self.parts = [a.reshape(len(a), int(np.prod(a.shape[1:], dtype=np.int64))) for a in arrays]
        widths = {p.shape[1] for p in self.parts}
        if len(widths) > 1:
            raise ValueError(f"RowStack parts must have one width; got widths {sorted(widths)}.")
        self.starts = np.cumsum([0] + [len(p) for p in self.parts])
        self.shape = (int(self.starts[-1]), widths.pop() if widths else 0)

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"RowStack(shape={self.shape}, parts={len(self.parts)})"

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        whole = self.read(slice(None), slice(None))
        return whole if dtype is None else whole.astype(dtype, copy=False)

    def __getitem__(self, key: Any) -> np.ndarray:
        rows, cols = key if isinstance(key, tuple) else (key, slice(None))
        if not isinstance(cols, slice):
            return np.asarray(self)[rows, cols]
        return self.read(rows, cols)

    def read(self, rows: Any, cols: slice, out: np.ndarray | None = None) -> np.ndarray:
        """``stack[rows, cols]``, written into ``out`` when it is a float32 buffer with room enough.

        Parameters
        ----------
        rows : slice, numpy.ndarray
            Rows (a slice, integer indices or a boolean mask).
        cols : slice
            Columns.
        out : numpy.ndarray, optional
            Reused for the result (a wide pool's column block is tens of megabytes: a fresh one per
            block costs page faults).

        Returns
        -------
        numpy.ndarray
            ``(len(rows), len(cols))`` float32, C-contiguous.

        Examples
        --------
        >>> RowStack([np.eye(2), np.ones((1, 2))]).read(np.array([2, 0]), slice(0, 1)).tolist()
        [[1.0], [1.0]]
        """
        n_cols = len(range(*cols.indices(self.shape[1])))
        if isinstance(rows, slice):
            start, stop, step = rows.indices(self.shape[0])
            index = np.arange(start, stop, step)
        else:
            index = np.asarray(rows)
            if index.dtype == bool:
                index = np.flatnonzero(index)
            index = np.where(index < 0, index + self.shape[0], index)
            if index.size and (index.min() < 0 or index.max() >= self.shape[0]):
                raise IndexError(f"row index out of range for a RowStack of {self.shape[0]} rows.")
        size = len(index) * n_cols
        if out is not None and out.dtype == np.float32 and out.size >= size:
            result = out.reshape(-1)[:size].reshape(len(index), n_cols)
        else:
            result = np.empty((len(index), n_cols), dtype=np.float32)
        if isinstance(rows, slice) and step == 1:
            # A run of rows: one block copy per part it touches.
            for p, part in enumerate(self.parts):
                lo, hi = max(start, self.starts[p]), min(max(start, stop), self.starts[p + 1])
                if lo < hi:
                    result[lo - start:hi - start] = part[lo - self.starts[p]:hi - self.starts[p], cols]
            return result
        part_of = np.searchsorted(self.starts, index, side="right") - 1
        if np.all(part_of[1:] >= part_of[:-1]):     # the parts in order (sorted rows): runs, no masks
            edges = np.searchsorted(part_of, np.arange(len(self.parts) + 1))
            for p, part in enumerate(self.parts):
                a, b = edges[p], edges[p + 1]
                if a < b:
                    result[a:b] = part[index[a:b] - self.starts[p], cols]
            return result
        for p in np.unique(part_of):
            mask = part_of == p
            result[mask] = self.parts[p][index[mask] - self.starts[p], cols]
        return result
