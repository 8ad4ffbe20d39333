"""Centred Gram matrices of activation-pool rows, and their reuse across CAV batches of one pool.

:func:`probes.linear.fit_cav_batch` solves every CAV in the dual, on the Gram matrix ``K = X_c
X_c^T`` of the pool rows its tasks use, centred on their mean. Computing ``K`` is the one
d-wide cost of a batch (``n^2 d``); several batches on the same pool and the same rows (the
main CAVs and the robustness check's other estimators, say) need the very same matrix.

Only the blocks some task uses are computed (:func:`task_tiles`): a batch that fits one new concept
against twenty random sets needs the concept's rows against every row and each random set against
itself, not the random-vs-random block that an earlier call's null CAVs used. When most of the matrix is
needed anyway (an all-pairs null) one symmetric product per column block is cheaper and is used instead.

Inside :func:`reuse_gram` a Gram matrix is kept for as long as its pool array is alive and is
returned again, bit for bit, when a later batch uses the same array object and the same rows (and no
entry the earlier batch left out).
The caller promises not to change a pool in place inside the block (the memo keys on the array
object, not on its bytes: hashing a wide pool costs as much as a third of the product itself).
Outside the block nothing is kept.

Examples
--------
>>> pool = np.random.default_rng(0).random((6, 4), dtype=np.float32)
>>> with reuse_gram():
...     a = centred_gram(pool, np.arange(6), slice(None), [(0, 4)])
...     b = centred_gram(pool, np.arange(6), slice(None), [(0, 4)])
>>> a[0] is b[0]
True
"""
from __future__ import annotations

import contextlib
import threading
import weakref
from typing import Iterator, Sequence

import numpy as np

from probes.blas_threads import MAX_PRODUCTS, PIECE_ROWS, SPARSE_FRACTION, pieces, run_products
from probes.progress import progress as _progress_bar
from probes.row_values import equal_row_runs
from probes.shared_gram import SHARED_GRAM, shared_rows

__all__ = ["block_centre", "centred_gram", "reuse_gram", "task_tiles"]

#: Most bytes of Gram matrices and column means kept inside one :func:`reuse_gram` block.
MEMO_BYTES = 512 * 2 ** 20

_state = threading.local()


class _Memo:
    def __init__(self) -> None:
        self.entries: dict[tuple, tuple[weakref.ref, tuple]] = {}
        self.bytes = 0
        self.hits = 0

    def get(self, pool: np.ndarray, key: tuple, needed: np.ndarray | None) -> tuple | None:
        found = self.entries.get(key)
        if found is None:
            return None
        ref, value = found
        if ref() is not pool:      # freed (its id may be reused) or another object
            return None
        have = value[2]
        # A matrix with entries left out serves only requests within what it has.
        if have is not None and (needed is None or np.any(needed & ~have)):
            return None
        self.hits += 1
        return value

    def put(self, pool: np.ndarray, key: tuple, value: tuple) -> None:
        size = _value_bytes(value)
        # Drop entries whose pool is gone first, then the oldest, to stay under the bound.
        for k in [k for k, (ref, _) in self.entries.items() if ref() is None]:
            self._drop(k)
        if key in self.entries:
            self._drop(key)
        while self.entries and self.bytes + size > MEMO_BYTES:
            self._drop(next(iter(self.entries)))
        if size > MEMO_BYTES:
            return
        try:
            ref = weakref.ref(pool)
        except TypeError:
            return
        self.entries[key] = (ref, value)
        self.bytes += size

    def _drop(self, key: tuple) -> None:
        _, value = self.entries.pop(key)
        self.bytes -= _value_bytes(value)


def _value_bytes(value: tuple) -> int:
    return value[0].nbytes + sum(m.nbytes for m in value[1]) + (0 if value[2] is None else value[2].nbytes)


@contextlib.contextmanager
def reuse_gram() -> Iterator[None]:
    """Reuse Gram matrices between CAV batches on the same, unchanged pool arrays (this thread).

    Nested blocks share the outer block's memo; leaving the outermost block frees it.

    Examples
    --------
    >>> with reuse_gram():
    ...     pass
    """
    outer = getattr(_state, "memo", None)
    if outer is None:
        _state.memo = _Memo()
    try:
        yield
    finally:
        if outer is None:
            _state.memo = None


def task_tiles(n_rows: int, task_rows: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Which entries of a Gram matrix some task uses, as tiles of consecutive rows.

    Entry ``(i, j)`` is needed when one task uses both rows. Consecutive rows with the same pattern of
    needed entries form a tile (a concept's images, one random set), so the pattern is a small
    tile-by-tile matrix.

    Parameters
    ----------
    n_rows
        Rows of the Gram matrix.
    task_rows
        Each task's row indices (``0 .. n_rows - 1``).

    Returns
    -------
    bounds : numpy.ndarray
        Tile ``t`` is rows ``bounds[t]:bounds[t + 1]``.
    needed : numpy.ndarray
        ``(n_tiles, n_tiles)`` bool: some task uses a row of both tiles.

    Examples
    --------
    >>> bounds, needed = task_tiles(6, [np.arange(0, 4), np.array([0, 1, 4, 5])])
    >>> bounds.tolist(), needed.astype(int).tolist()
    ([0, 2, 4, 6], [[1, 1, 1], [1, 1, 0], [1, 0, 1]])
    """
    member = np.zeros((len(task_rows), n_rows), dtype=np.float32)
    for p, rows in enumerate(task_rows):
        member[p, rows] = 1.0
    # Counts up to the number of tasks: exact in float32, and one small product.
    rows_needed = (member.T @ member) > 0
    bounds = equal_row_runs(rows_needed)
    starts = bounds[:-1]
    return bounds, rows_needed[np.ix_(starts, starts)]


def _plan(bounds: np.ndarray, needed: np.ndarray) -> list[tuple[int, int, int, int]] | None:
    """The products ``rows[r0:r1] x rows[c0:c1]`` covering the upper half of the needed tiles, or None
    when one full symmetric product is the better buy."""
    n = int(bounds[-1])
    if len(bounds) - 1 > MAX_PRODUCTS:   # every tile needs at least its own diagonal block
        return None
    plan, cost = [], 0
    for a in range(len(bounds) - 1):
        b = a
        while b < len(bounds) - 1:
            if not needed[a, b]:
                b += 1
                continue
            stop = b
            while stop + 1 < len(bounds) - 1 and needed[a, stop + 1]:
                stop += 1
            plan.append((int(bounds[a]), int(bounds[a + 1]), int(bounds[b]), int(bounds[stop + 1])))
            cost += (bounds[a + 1] - bounds[a]) * (bounds[stop + 1] - bounds[b])
            b = stop + 1
    if len(plan) > MAX_PRODUCTS or cost > SPARSE_FRACTION * n * (n + 1) / 2:
        return None
    return plan


def centred_gram(pool: np.ndarray, union: np.ndarray, rows: np.ndarray | slice,
                 blocks: Sequence[tuple[int, int]], progress: bool = False,
                 task_rows: Sequence[np.ndarray] | None = None
                 ) -> tuple[np.ndarray, list[np.ndarray]]:
    """Gram matrix of the ``union`` rows of ``pool``, centred, blockwise over columns.

    The rows are centred on their mean, or, when ``pool`` marks some of them as the same in every call
    (:func:`probes.shared_gram.shared_rows`), on those rows' mean; the tiles among them are then kept
    and found again by later calls (:data:`probes.shared_gram.SHARED_GRAM`), bit for bit.

    Parameters
    ----------
    pool
        ``(N, d)`` activations (float32, possibly memory-mapped).
    union
        The sorted row indices used (``rows`` is the same selection: ``slice(None)`` when every
        row is used, which avoids a fancy-indexing copy per block).
    rows
        Index or slice passed to ``pool[rows, c0:c1]``.
    blocks
        Column blocks ``(c0, c1)``; the summation order, so part of what makes a result identical.
    progress
        Show a progress bar.
    task_rows
        Each task's rows, as positions in ``union``: only the entries some task uses are computed
        when that saves enough (:func:`task_tiles`); the others are NaN. None: every entry.

    Returns
    -------
    tuple
        ``(gram, means)``: the float64 ``(n, n)`` centred Gram matrix (read-only) and each
        block's float64 centre (what :func:`block_centre` gives, or the rows' column means).

    Examples
    --------
    >>> pool = np.random.default_rng(0).random((6, 4), dtype=np.float32)
    >>> full = centred_gram(pool, np.arange(6), slice(None), [(0, 4)])[0]
    >>> part = centred_gram(pool, np.arange(6), slice(None), [(0, 4)],
    ...                     task_rows=[np.arange(0, 2), np.arange(2, 4), np.arange(4, 6)])[0]
    >>> bool(np.isnan(part[0, 5])), bool(np.allclose(part[4:, 4:], full[4:, 4:]))
    (True, True)
    """
    n_u = len(union)
    plan = needed_rows = None
    if task_rows is not None:
        bounds, needed = task_tiles(n_u, task_rows)
        plan = _plan(bounds, needed)
        if plan is not None:
            sizes = np.diff(bounds)
            needed_rows = np.repeat(np.repeat(needed, sizes, axis=0), sizes, axis=1)
    memo = getattr(_state, "memo", None)
    key = None
    if memo is not None:
        key = (id(pool), pool.shape, getattr(pool, "strides", None), pool.dtype.str, union.tobytes(), tuple(blocks))
        found = memo.get(pool, key, needed_rows)
        if found is not None:
            return found[:2]
    # Rows that are the same in other calls (the random images) are centred on their own mean, so that the
    # tiles among them are too, and are kept between calls (probes.shared_gram).
    shared = shared_rows(pool, union)
    todo, inside, kept = plan, {}, {}
    if shared is not None and plan is not None:
        kept = SHARED_GRAM.tiles(shared, list(blocks))
        s0 = shared.start
        inside = {entry: (entry[0] - s0, entry[1] - s0, entry[2] - s0, entry[3] - s0) for entry in plan
                  if s0 <= min(entry[0], entry[2]) and max(entry[1], entry[3]) <= shared.stop}
        todo = [entry for entry in plan if inside.get(entry) not in kept]
    # Products in float32 (twice the BLAS speed of float64), each block's product added into a
    # float64 Gram matrix. Centring first removes the large common component of post-ReLU
    # activations, which keeps the small differences that matter from drowning in rounding (relative
    # error against float64 about 3e-7).
    gram = np.zeros((n_u, n_u))
    means = []
    buffer = None
    strips = _upper_strips(n_u) if plan is None else None
    for c0, c1 in _progress_bar(list(blocks), enabled=progress, desc="CAV Gram", unit="block"):
        centre = SHARED_GRAM.known_centre(shared, c0, c1) if shared is not None else None
        if todo is not None and not todo and centre is not None:
            means.append(centre)        # every tile is known: nothing to read
            continue
        block, mean = centred_block(pool, rows, c0, c1, buffer, centre,
                                    mean_rows=None if shared is None else slice(shared.start, shared.stop))
        if shared is not None and centre is None:
            SHARED_GRAM.keep_centre(shared, c0, c1, mean)
        buffer = block
        means.append(mean)
        # Every entry needed: one triangle, strip by strip (what a symmetric rank-k update computes, cut into
        # products that spread over the cores on single-threaded BLAS; see probes.blas_threads).
        run_products(_strip_products(gram, block, strips) if strips is not None
                     else [piece for entry in todo for piece in _tile_products(gram, block, *entry)])
    if inside:
        for entry, where in inside.items():
            if where in kept:
                _region(gram, *entry)[...] = kept[where]
        SHARED_GRAM.keep_tiles(shared, list(blocks), {where: _region(gram, *entry) for entry, where in inside.items()
                                                      if where not in kept})
    _mirror(gram, plan if strips is None else strips, needed_rows)
    gram.flags.writeable = False
    value = (gram, means, needed_rows)
    if memo is not None and key is not None:
        memo.put(pool, key, value)
    return value[:2]


def block_centre(pool: np.ndarray, union: np.ndarray, c0: int, c1: int) -> np.ndarray | None:
    """What :func:`centred_gram` centres columns ``c0:c1`` of these rows on, when it is not their own
    mean: the shared rows' mean (:mod:`probes.shared_gram`); None otherwise.

    Examples
    --------
    >>> block_centre(np.zeros((3, 2)), np.arange(3), 0, 2) is None
    True
    """
    shared = shared_rows(pool, union)
    return None if shared is None else SHARED_GRAM.centre(shared, pool, c0, c1)


def _tall_short(r0: int, r1: int, k0: int, k1: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """The two row ranges of a product, taller first (rows ``r0:r1`` on a tie): OpenBLAS is many times
    slower on a short, wide product (50 rows against 1,000) than on the same product transposed."""
    return ((k0, k1), (r0, r1)) if k1 - k0 > r1 - r0 else ((r0, r1), (k0, k1))


def _region(gram: np.ndarray, r0: int, r1: int, k0: int, k1: int) -> np.ndarray:
    """Where the product of rows ``r0:r1`` and ``k0:k1`` is accumulated: taller rows by shorter columns."""
    (t0, t1), (s0, s1) = _tall_short(r0, r1, k0, k1)
    return gram[t0:t1, s0:s1]


def _tile_products(gram: np.ndarray, block: np.ndarray, r0: int, r1: int, k0: int, k1: int) -> list:
    """The product of rows ``r0:r1`` and ``k0:k1`` as pieces of at most :data:`PIECE_ROWS` rows of the taller
    operand, for :func:`probes.blas_threads.run_products`: a concept's rows against a thousand random rows
    then spreads over the cores, and each piece is cut the same way whatever else the call computes."""
    (t0, t1), (s0, s1) = _tall_short(r0, r1, k0, k1)
    return [((e - s) * (s1 - s0), _piece(gram[s:e, s0:s1], block[s:e], block[s0:s1])) for s, e in pieces(t0, t1)]


def _upper_strips(n: int) -> list[tuple[int, int, int, int]]:
    """The whole matrix as strips of rows, each against itself and every later row (a plan for
    :func:`_mirror`): at most eight strips, so a large matrix is not cut into thousands of products."""
    return [(s, e, s, n) for s, e in pieces(0, n, max(PIECE_ROWS, -(-n // 8)))]


def _strip_products(gram: np.ndarray, block: np.ndarray, strips: list[tuple[int, int, int, int]]) -> list:
    """The products of :func:`_upper_strips`, for :func:`probes.blas_threads.run_products`: each later strip's
    rows against each strip's, accumulated below the diagonal (where :func:`_mirror` reads them)."""
    return [((e1 - s1) * (e0 - s0), _piece(gram[s1:e1, s0:e0], block[s1:e1], block[s0:e0]))
            for i, (s0, e0, _, _) in enumerate(strips) for s1, e1, _, _ in strips[i:]]


def _piece(out: np.ndarray, tall: np.ndarray, short: np.ndarray):
    def product() -> None:
        out[...] += tall @ short.T
    return product


def _mirror(gram: np.ndarray, plan: list[tuple[int, int, int, int]], needed_rows: np.ndarray | None) -> None:
    """Fill the lower half from the upper half the plan computed; mark the unused entries NaN."""
    for r0, r1, k0, k1 in plan:
        lower = k1 - k0 > r1 - r0      # where centred_gram accumulated this product (_tall_short)
        if k0 == r0:   # the diagonal tile: both halves computed, made exactly symmetric
            diagonal = gram[r0:r1, r0:r1]
            diagonal[...] = 0.5 * (diagonal + diagonal.T)
            k0 = r1
        if k1 > k0:
            if lower:
                gram[r0:r1, k0:k1] = gram[k0:k1, r0:r1].T
            else:
                gram[k0:k1, r0:r1] = gram[r0:r1, k0:k1].T
    if needed_rows is not None:
        gram[~needed_rows] = np.nan


def centred_block(pool: np.ndarray, rows: np.ndarray | slice, c0: int, c1: int,
                  out: np.ndarray | None = None, mean: np.ndarray | None = None,
                  mean_rows: slice | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Columns ``c0:c1`` of the selected rows, centred on their float64 mean, as a float32 copy.

    One pass reads the rows for the mean and one writes the centred copy (into ``out`` when its
    size fits: a column block of a wide layer is tens of megabytes, and a fresh one per block
    costs page faults).

    Parameters
    ----------
    pool
        ``(N, d)`` activations.
    rows
        Index or slice of the rows.
    c0, c1
        The columns.
    out
        A float32 buffer to reuse (any shape with enough elements), or None.
    mean
        The centre, when known (an earlier pass computed it).
    mean_rows
        Without ``mean``: centre on the mean of these of the selected rows (a run of them; default all).

    Returns
    -------
    block : numpy.ndarray
        ``(n, c1 - c0)`` float32, C-contiguous.
    mean : numpy.ndarray
        The float64 column means.

    Examples
    --------
    >>> block, mean = centred_block(np.arange(6, dtype=np.float32).reshape(3, 2), slice(None), 0, 2)
    >>> block.tolist(), mean.tolist()
    ([[-2.0, -2.0], [0.0, 0.0], [2.0, 2.0]], [2.0, 3.0])
    """
    reader = getattr(pool, "read", None)
    if reader is not None and not isinstance(pool, np.ndarray):    # a probes.row_stack.RowStack
        view, fresh = reader(rows, slice(c0, c1), out), True
    else:
        view = pool[rows, c0:c1]
        fresh = not np.may_share_memory(view, pool)    # fancy indexing has copied already
    if view.dtype != np.float32:
        view, fresh = view.astype(np.float32), True
    # The mean of the float32 values, summed in the same order as on a private copy (bit for bit).
    if mean is None:
        mean = (view if mean_rows is None else view[mean_rows]).mean(axis=0, dtype=np.float64)
    if fresh and view.flags.c_contiguous and view.flags.writeable:
        block = view
    elif out is not None and out.size >= view.size and out.dtype == np.float32:
        block = out.reshape(-1)[:view.size].reshape(view.shape)
    else:
        block = np.empty(view.shape, dtype=np.float32)
    np.subtract(view, mean.astype(np.float32), out=block)
    return block, mean


def read_block(pool: np.ndarray, rows: np.ndarray | slice, c0: int, c1: int,
               dtype: type = np.float32) -> np.ndarray:
    """A private C-contiguous copy of columns ``c0:c1`` of the selected rows, in ``dtype``.

    Fancy indexing already returns a fresh array: it is converted only when its dtype or layout
    differ (one copy, not two); a slice of rows is a view and is always copied.

    Examples
    --------
    >>> read_block(np.arange(12, dtype=np.float32).reshape(3, 4), np.array([0, 2]), 1, 3).tolist()
    [[1.0, 2.0], [9.0, 10.0]]
    """
    block = pool[rows, c0:c1]
    if isinstance(rows, slice) or np.may_share_memory(block, pool):
        return np.array(block, dtype=dtype, order="C")
    block = np.asarray(block, dtype=dtype, order="C")
    return block if block.flags.writeable else block.copy()
