"""Each CAV's values ``w . (x - mean)`` on its own task's rows, formed in the pass that forms the vectors.

The difference-of-means CAV needs no Gram matrix to be fitted: its dual coefficients are ``+1/n`` and
``-1/n``. What its task still needs from the activations -- the boundary at the midpoint of the two
training means, the held-out accuracy and how far apart the two sides lie along the vector -- are values
of the vector on the task's own rows. :class:`RowValues` accumulates exactly those, column block by
column block, while :func:`probes.linear.fit_cav_batch` forms the weight vectors: for a null design of
every pair of twenty random sets this replaces the random-vs-random block of the Gram matrix (a
thousand rows squared, times the layer's width) with a few rows per vector.

Rows are grouped into tiles of consecutive rows that belong to the same tasks (a concept's images, one
random set), so each tile takes one matrix product per column block; when the tasks overlap so much
that the tiles are tiny, one dense product over every row is used instead.

Examples
--------
>>> rows = [np.array([0, 1, 2, 3]), np.array([2, 3, 4, 5])]
>>> values = RowValues(6, rows)
>>> block = np.arange(12, dtype=np.float32).reshape(6, 2)
>>> values.add(block, np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32))
>>> values.of(0, np.array([0, 3])).tolist(), values.of(1, np.array([4])).tolist()
([0.0, 6.0], [9.0])
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from probes.blas_threads import MAX_PRODUCTS, SPARSE_FRACTION, pieces, run_products

__all__ = ["RowValues", "SparseProduct", "equal_row_runs"]

#: Neighbouring tiles are merged when the merged product costs at most this much more than the two apart
#: (rows that share most of their vectors: one random set's rows, each in a different 70 % of the set's
#: CAVs; not two random sets, nor a concept and a random set).
MERGE_COST = 1.5


def equal_row_runs(matrix: np.ndarray) -> np.ndarray:
    """Bounds of the runs of consecutive equal rows of a 2-D array.

    Parameters
    ----------
    matrix : numpy.ndarray
        ``(n, k)``.

    Returns
    -------
    numpy.ndarray
        ``bounds``: run ``t`` is rows ``bounds[t]:bounds[t + 1]``.

    Examples
    --------
    >>> equal_row_runs(np.array([[1, 0], [1, 0], [0, 1], [1, 0]])).tolist()
    [0, 2, 3, 4]
    """
    n = len(matrix)
    if n == 0:
        return np.zeros(1, dtype=np.int64)
    change = np.flatnonzero(np.any(matrix[1:] != matrix[:-1], axis=1)) + 1
    return np.concatenate([[0], change, [n]]).astype(np.int64)


def _merged_tiles(member: np.ndarray) -> list[tuple[int, int, np.ndarray]]:
    """Runs of rows with the same tasks, neighbours merged while that costs little.

    Bootstrap resamples of a concept's images give its rows slightly different task sets (a run of a row
    or two each), and so do the training rows of the CAVs on one random set; computing a few unused
    values (or adding a few zeros) for a merged tile is cheaper than many tiny products.

    A merge is judged against what the tile's own runs cost apart, not against the tile merged so far:
    judged step by step, each merge can cost up to ``MERGE_COST`` times the one before, and a long chain
    of runs (one random set after another, each with the vectors that span every row) grew into one
    dense tile seven times the arithmetic of its runs.
    """
    bounds = equal_row_runs(member)
    tiles: list[list] = []
    for t in range(len(bounds) - 1):
        r0, r1 = int(bounds[t]), int(bounds[t + 1])
        mask = member[r0]
        if not mask.any():
            continue
        own = (r1 - r0) * int(mask.sum())
        if tiles and tiles[-1][1] == r0:
            p0, _, pmask, pown = tiles[-1]
            both = pmask | mask
            if (r1 - p0) * int(both.sum()) <= MERGE_COST * (pown + own):
                tiles[-1] = [p0, r1, both, pown + own]
                continue
        tiles.append([r0, r1, mask, own])
    return [(r0, r1, np.flatnonzero(mask)) for r0, r1, mask, _ in tiles]


def _membership(n_rows: int, task_rows: Sequence[np.ndarray]) -> np.ndarray:
    """``(n_rows, k)`` bool: row ``i`` belongs to vector ``j``'s task."""
    member = np.zeros((n_rows, len(task_rows)), dtype=bool)
    for j, rows in enumerate(task_rows):
        member[rows, j] = True
    return member


def _tile_plan(member: np.ndarray) -> list[tuple[int, int, np.ndarray]] | None:
    """The merged tiles of a membership matrix, or None where one dense product is the better buy."""
    tiles = _merged_tiles(member) if member.size else []
    cost = sum((r1 - r0) * tasks.size for r0, r1, tasks in tiles)
    if not tiles or len(tiles) > MAX_PRODUCTS or cost > SPARSE_FRACTION * member.size:
        return None
    return tiles


class RowValues:
    """The values of ``k`` vectors, each on its own rows of an ``(n, d)`` block-centred pool.

    Parameters
    ----------
    n_rows : int
        Rows of the pool.
    task_rows : sequence of numpy.ndarray
        Vector ``j``'s rows (indices into the pool; repeats allowed).

    Examples
    --------
    >>> values = RowValues(3, [np.array([0, 2])])
    >>> values.add(np.ones((3, 4), np.float32), np.full((1, 4), 0.5, np.float32))
    >>> values.of(0, np.array([2, 0])).tolist()
    [2.0, 2.0]
    """

    def __init__(self, n_rows: int, task_rows: Sequence[np.ndarray]) -> None:
        self.values = np.zeros((n_rows, len(task_rows)))
        self.plan = _tile_plan(_membership(n_rows, task_rows))

    def add(self, block: np.ndarray, weights: np.ndarray) -> None:
        """Add one column block's share: ``block`` ``(n, width)``, ``weights`` ``(k, width)``.

        Parameters
        ----------
        block : numpy.ndarray
            The pool's rows in these columns, centred.
        weights : numpy.ndarray
            The vectors in these columns.
        """
        if self.plan is None:
            # Dense: in pieces of rows, spread over the cores (one BLAS thread each, see probes.blas_threads).
            run_products([((r1 - r0) * len(weights), self._product(block, weights, r0, r1, slice(None)))
                          for r0, r1 in pieces(0, len(block))])
            return
        run_products([((r1 - r0) * tasks.size, self._product(block, weights, r0, r1, tasks))
                      for r0, r1, tasks in self.plan])

    def _product(self, block: np.ndarray, weights: np.ndarray, r0: int, r1: int, tasks: np.ndarray | slice):
        def product() -> None:
            self.values[r0:r1, tasks] += block[r0:r1] @ weights[tasks].T
        return product

    def of(self, j: int, rows: np.ndarray) -> np.ndarray:
        """Vector ``j``'s values on some of its rows.

        Parameters
        ----------
        j : int
        rows : numpy.ndarray
            Row indices (each one of vector ``j``'s rows).

        Returns
        -------
        numpy.ndarray
            float64.
        """
        return self.values[rows, j]


class SparseProduct:
    """``coefs @ block`` for coefficient rows that are non-zero on a few tiles of rows only.

    A CAV's dual coefficients live on its own task's rows: a random-vs-random CAV on two random sets
    out of twenty, so the dense product spends most of its arithmetic on zeros. Rows with the same
    vectors form tiles (as in :class:`RowValues`); each tile's share is one small product, run side by
    side (:func:`probes.blas_threads.run_products`), and added into the vectors it belongs to. Falls
    back to the dense product where the tiles do not save enough.

    Parameters
    ----------
    coefs : numpy.ndarray
        ``(k, n)`` float32 coefficients.
    rows : sequence of numpy.ndarray, optional
        Each vector's task rows (both sides, training and held-out): the tiles follow them, so one
        random set is one tile although each CAV trains on a different part of it. Default: where
        the coefficients are non-zero.

    Examples
    --------
    >>> coefs = np.zeros((2, 6), np.float32); coefs[0, :3] = 1; coefs[1, 3:] = 2
    >>> block = np.arange(12, dtype=np.float32).reshape(6, 2)
    >>> SparseProduct(coefs)(block).tolist() == (coefs @ block).tolist()
    True
    """

    def __init__(self, coefs: np.ndarray, rows: Sequence[np.ndarray] | None = None) -> None:
        self.coefs = coefs
        member = (coefs != 0).T
        if rows is not None:
            member = member | _membership(coefs.shape[1], rows)     # every coefficient inside its vector's tiles
        tiles = _tile_plan(member)
        self.parts: list[tuple[int, int, np.ndarray, np.ndarray]] | None = None if tiles is None else \
            [(r0, r1, tasks, np.ascontiguousarray(coefs[tasks, r0:r1])) for r0, r1, tasks in tiles]

    def __call__(self, block: np.ndarray) -> np.ndarray:
        """``coefs @ block`` (float32 ``(k, width)``) for a block ``(n, width)``.

        Parameters
        ----------
        block : numpy.ndarray
            The rows, in these columns.

        Returns
        -------
        numpy.ndarray
        """
        if self.parts is None:
            # Dense: in pieces of vectors, spread over the cores (one BLAS thread each, see probes.blas_threads).
            out = np.empty((self.coefs.shape[0], block.shape[1]), dtype=np.float32)

            def rows(r0: int, r1: int):
                def run() -> None:
                    np.matmul(self.coefs[r0:r1], block, out=out[r0:r1])
                return run

            # Pieces of 64 vectors: a batch of a few hundred keeps every core busy.
            run_products([((r1 - r0) * block.size, rows(r0, r1)) for r0, r1 in pieces(0, len(self.coefs), 64)])
            return out
        partial: list[np.ndarray | None] = [None] * len(self.parts)

        def product(i: int, r0: int, r1: int, part: np.ndarray):
            def run() -> None:
                partial[i] = part @ block[r0:r1]
            return run

        run_products([(part.size, product(i, r0, r1, part)) for i, (r0, r1, _, part) in enumerate(self.parts)])
        out = np.zeros((self.coefs.shape[0], block.shape[1]), dtype=np.float32)
        for (_, _, tasks, _), share in zip(self.parts, partial):
            out[tasks] += share
        return out

