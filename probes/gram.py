"""Centred Gram matrices of activation-pool rows, and their reuse across CAV batches of one pool.

:func:`probes.linear.fit_cav_batch` solves every CAV in the dual, on the Gram matrix ``K = X_c
X_c^T`` of the pool rows its tasks use, centred on their mean. Computing ``K`` is the one
d-wide cost of a batch (``n^2 d``); several batches on the same pool and the same rows (the
main CAVs and the robustness check's other estimators, say) need the very same matrix.

Inside :func:`reuse_gram` a Gram matrix is kept for as long as its pool array is alive and is
returned again, bit for bit, when a later batch uses the same array object and the same rows.
The caller promises not to change a pool in place inside the block (the memo keys on the array
object, not on its bytes: hashing a wide pool costs as much as a third of the product itself).
Outside the block nothing is kept.

Example:
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

from probes.progress import progress as _progress_bar

__all__ = ["centred_gram", "reuse_gram"]

#: Most bytes of Gram matrices and column means kept inside one :func:`reuse_gram` block.
MEMO_BYTES = 512 * 2 ** 20

_state = threading.local()


class _Memo:
    def __init__(self) -> None:
        self.entries: dict[tuple, tuple[weakref.ref, tuple]] = {}
        self.bytes = 0
        self.hits = 0

    def get(self, pool: np.ndarray, key: tuple) -> tuple | None:
        found = self.entries.get(key)
        if found is None:
            return None
        ref, value = found
        if ref() is not pool:      # freed (its id may be reused) or another object
            return None
        self.hits += 1
        return value

    def put(self, pool: np.ndarray, key: tuple, value: tuple) -> None:
        size = sum(getattr(v, "nbytes", 0) for v in value[0:1]) + sum(m.nbytes for m in value[2])
        # Drop entries whose pool is gone first, then the oldest, to stay under the bound.
        for k in [k for k, (ref, _) in self.entries.items() if ref() is None]:
            self._drop(k)
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
        self.bytes -= value[0].nbytes + sum(m.nbytes for m in value[2])


@contextlib.contextmanager
def reuse_gram() -> Iterator[None]:
    """Reuse Gram matrices between CAV batches on the same, unchanged pool arrays (this thread).

    Nested blocks share the outer block's memo; leaving the outermost block frees it.

    Example:
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


def centred_gram(pool: np.ndarray, union: np.ndarray, rows: np.ndarray | slice,
                 blocks: Sequence[tuple[int, int]], progress: bool = False
                 ) -> tuple[np.ndarray, float, list[np.ndarray]]:
    """Gram matrix of the ``union`` rows of ``pool``, centred on their mean, blockwise over columns.

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

    Returns
    -------
    tuple
        ``(gram, raw_sq, means)``: the float64 ``(n, n)`` centred Gram matrix (read-only),
        the sum of squares of the raw rows, and each block's float64 column means.
    """
    memo = getattr(_state, "memo", None)
    key = None
    if memo is not None:
        key = (id(pool), pool.shape, pool.strides, pool.dtype.str, union.tobytes(), tuple(blocks))
        found = memo.get(pool, key)
        if found is not None:
            return found
    n_u = len(union)
    # Products in float32 (twice the BLAS speed of float64), each block's product added into a
    # float64 Gram matrix. Centring on the union mean first removes the large common component of
    # post-ReLU activations, which keeps the small differences that matter from drowning in
    # rounding (relative error against float64 about 3e-7).
    gram = np.zeros((n_u, n_u))
    means = []
    for c0, c1 in _progress_bar(list(blocks), enabled=progress, desc="CAV Gram", unit="block"):
        block = read_block(pool, rows, c0, c1)
        mean = block.mean(axis=0, dtype=np.float64)
        means.append(mean)
        block -= mean.astype(np.float32)
        gram += block @ block.T   # numpy dispatches A @ A.T to a symmetric rank-k update
    # The raw rows' sum of squares (for the degeneracy bound only): the centred part is the Gram
    # trace, the rest the mean's share; no extra pass over the block.
    centred_sq = float(np.trace(gram))
    raw_sq = centred_sq + n_u * float(sum(float(m @ m) for m in means))
    gram.flags.writeable = False
    value = (gram, raw_sq, means)
    if memo is not None and key is not None:
        memo.put(pool, key, value)
    return value


def read_block(pool: np.ndarray, rows: np.ndarray | slice, c0: int, c1: int,
               dtype: type = np.float32) -> np.ndarray:
    """A private C-contiguous copy of columns ``c0:c1`` of the selected rows, in ``dtype``.

    Fancy indexing already returns a fresh array: it is converted only when its dtype or layout
    differ (one copy, not two); a slice of rows is a view and is always copied.

    Example:
        >>> read_block(np.arange(12, dtype=np.float32).reshape(3, 4), np.array([0, 2]), 1, 3).tolist()
        [[1.0, 2.0], [9.0, 10.0]]
    """
    block = pool[rows, c0:c1]
    if isinstance(rows, slice) or np.may_share_memory(block, pool):
        return np.array(block, dtype=dtype, order="C")
    block = np.asarray(block, dtype=dtype, order="C")
    return block if block.flags.writeable else block.copy()
