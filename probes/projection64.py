"""Float64 products of gradients with float32 vectors, column block by column block.

Phase 2 projects each class's gradients on every vector of a layer in float64 (so an example's value
does not depend on the batch it came in, see :class:`probes.streaming.Projections`). A float64 copy of
every vector of a wide layer is hundreds of megabytes, and on a fresh allocation most of its cost is
the operating system handing over the pages, not the arithmetic. :class:`Float64Rows` converts the
vectors one column block at a time into a reused buffer instead, and keeps the converted blocks only
from the :data:`KEEP_FROM`-th product on (a class streamed in many batches), so a product costs one
pass over the float32 vectors. The converted blocks are the same numbers either way, and every product
sums over the same column blocks in the same order: kept or not, the result has the same bits.

Examples
--------
>>> vectors = [np.array([[1.0, 0.0, 2.0]], np.float32), np.array([[0.0, 3.0, 0.0]], np.float32)]
>>> rows = Float64Rows(vectors, columns=2)
>>> rows.project(np.array([[1.0, 1.0, 1.0]])).tolist(), rows.norms.tolist()
([[3.0, 3.0]], [2.23606797749979, 3.0])
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["Float64Rows", "COLUMNS", "KEEP_FROM"]

#: Columns per float64 block (a 300-vector block is then about 10 MB).
COLUMNS = 4096
#: The product from which the converted blocks are kept (the first ones convert on the fly): a class of
#: many streamed batches; the in-memory path projects each class in a few engine batches, and keeping
#: would cost a fresh float64 copy of every vector (mostly page faults) for two or three products.
KEEP_FROM = 8


class Float64Rows:
    """Some rows of a stack of float32 ``(m_i, d)`` arrays, multiplied in float64 block by block.

    Parameters
    ----------
    blocks : sequence of numpy.ndarray
        The float32 arrays, stacked in order (not copied).
    rows : numpy.ndarray, optional
        Which rows of the stack (default: all).
    columns : int
        Columns per block.

    Examples
    --------
    >>> Float64Rows([np.eye(3, dtype=np.float32)], rows=np.array([2])).project(np.ones((1, 3))).tolist()
    [[1.0]]
    """

    def __init__(self, blocks: Sequence[np.ndarray], rows: np.ndarray | None = None, columns: int = COLUMNS) -> None:
        self._blocks = list(blocks)
        starts = np.cumsum([0] + [len(b) for b in self._blocks])
        total = int(starts[-1])
        rows = np.arange(total) if rows is None else np.asarray(rows, dtype=np.int64)
        self.k = len(rows)
        self.d = int(self._blocks[0].shape[1]) if self._blocks else 0
        owner = np.searchsorted(starts, rows, side="right") - 1
        # (source block, its rows (None: all, in order), where they go in the product)
        self._pieces = []
        for b in np.unique(owner):
            mine = np.flatnonzero(owner == b)
            local = rows[mine] - starts[b]
            whole = len(local) == len(self._blocks[b]) and np.array_equal(local, np.arange(len(local)))
            self._pieces.append((int(b), None if whole else local, mine))
        self._columns = max(1, int(columns))
        self._kept: list[np.ndarray] | None = None
        self._uses = 0
        self._norms: np.ndarray | None = None

    def _converted(self, buffer: np.ndarray | None) -> tuple[int, int, np.ndarray]:
        """Each column block of the rows in float64 (from the kept blocks, or converted into ``buffer``)."""
        for i, c0 in enumerate(range(0, self.d, self._columns)):
            c1 = min(self.d, c0 + self._columns)
            if self._kept is not None and i < len(self._kept):
                yield c0, c1, self._kept[i]
                continue
            out = buffer[:, :c1 - c0] if buffer is not None else np.empty((self.k, c1 - c0))
            for b, local, where in self._pieces:
                part = self._blocks[b][:, c0:c1] if local is None else self._blocks[b][local, c0:c1]
                if len(where) == self.k:
                    out[...] = part
                else:
                    out[where] = part
            yield c0, c1, out

    def project(self, g: np.ndarray) -> np.ndarray:
        """``g @ rows.T`` in float64.

        Parameters
        ----------
        g : numpy.ndarray
            ``(b, d)`` float64.

        Returns
        -------
        numpy.ndarray
            ``(b, k)`` float64.
        """
        self._uses += 1
        keep = self._uses >= KEEP_FROM and self._kept is None
        kept: list[np.ndarray] = []
        buffer = None if keep else np.empty((self.k, min(self._columns, self.d)))
        out = np.zeros((len(g), self.k))
        squares = np.zeros(self.k) if self._norms is None else None
        for c0, c1, block in self._converted(buffer):
            out += g[:, c0:c1] @ block.T
            if squares is not None:
                squares += np.einsum("ij,ij->i", block, block)
            if keep:
                kept.append(block)
        if keep:
            self._kept = kept
        if squares is not None:
            self._norms = np.sqrt(squares)
        return out

    @property
    def norms(self) -> np.ndarray:
        """‖row‖ in float64 (summed over the same column blocks).

        Returns
        -------
        numpy.ndarray
            ``(k,)``.
        """
        if self._norms is None:
            squares = np.zeros(self.k)
            buffer = np.empty((self.k, min(self._columns, self.d)))
            for _, _, block in self._converted(buffer):
                squares += np.einsum("ij,ij->i", block, block)
            self._norms = np.sqrt(squares)
        return self._norms
