"""CAV tasks and their train/test splits: which pool rows a CAV is fitted on, and how they are split.

A :class:`CAVTask` names the pool rows of a concept side and a counterexample side and a seed;
:func:`split_task` balances the sides and makes the stratified train/test split that every
estimator of :mod:`probes.linear` then uses, so a task gives the same split (and CAV) in any batch,
layer or call. Splits are kept in a bounded per-process memo.

Examples
--------
>>> split = split_task(CAVTask(np.arange(6), np.arange(6, 12), seed=0), test_size=0.5)
>>> len(split.train), len(split.test)
(6, 6)
"""
from __future__ import annotations

import math
import numbers
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from probes.errors import InsufficientDataError, ToolkitError

__all__ = ["CAVTask", "PoolIndexError", "TaskSplit", "split_task"]


class PoolIndexError(ToolkitError, IndexError):
    """A task refers to a row that the activation pool does not have.

    Examples
    --------
    >>> try:
    ...     split_task(CAVTask(np.arange(2), np.arange(2, 5), seed=0), n_rows=4)
    ... except PoolIndexError as exc:
    ...     print(exc)
    task: counterexample (neg) index 4 is out of range for a pool of 4 rows.
    """


@dataclass
class CAVTask:
    """One CAV to fit: pool rows of the concept side, of the counterexample side, and a seed.

    The seed fixes this task's balancing and train/test split, so a task gives the same CAV
    whatever batch it is fitted in (random-vs-random CAVs can be reused across calls).
    ``seed`` must lie in ``[0, 2**32)`` (the range scikit-learn accepts).

    Examples
    --------
    >>> CAVTask(pos=np.arange(50), neg=np.arange(50, 100), seed=7).seed
    7
    """

    pos: np.ndarray
    neg: np.ndarray
    seed: int


class TaskSplit(NamedTuple):
    """Pool rows and labels (+1 concept, -1 counterexample) of a task's train and test splits.

    Examples
    --------
    >>> s = split_task(CAVTask(np.arange(5), np.arange(5, 10), seed=0))
    >>> sorted(set(s.y_test.tolist()))
    [-1.0, 1.0]
    """

    train: np.ndarray
    y_train: np.ndarray
    test: np.ndarray
    y_test: np.ndarray


def _check_indices(indices: Any, n_rows: int | None, what: str, where: str) -> np.ndarray:
    idx = np.asarray(indices)
    if idx.size == 0:
        return np.zeros(0, dtype=np.intp)
    if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
        raise PoolIndexError(f"{where}: {what} indices must be a 1-D array of integer row numbers; "
                             f"got dtype {idx.dtype} and shape {idx.shape}.")
    idx = idx.astype(np.intp, copy=False)
    if idx.min() < 0:
        raise PoolIndexError(f"{where}: {what} index {int(idx.min())} is negative; "
                             "use row numbers 0..N-1 of the pool.")
    if n_rows is not None and idx.max() >= n_rows:
        raise PoolIndexError(f"{where}: {what} index {int(idx.max())} is out of range for a pool of "
                             f"{n_rows} rows.")
    return idx


def _check_seed(seed: Any, where: str) -> int:
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"{where}: seed must be an integer; got {seed!r}.")
    seed = int(seed)
    if not 0 <= seed < 2**32:
        raise ValueError(f"{where}: seed must lie in [0, 2**32); got {seed}.")
    return seed


def _check_test_size(test_size: float) -> float:
    if not isinstance(test_size, numbers.Real) or not 0.0 < float(test_size) < 1.0:
        raise ValueError(f"test_size must be a fraction strictly between 0 and 1; got {test_size!r}.")
    return float(test_size)


def _split_sizes(n_per_side: int, test_size: float) -> tuple[int, int]:
    # Same rounding as scikit-learn's train_test_split: the test part is rounded up.
    n = 2 * n_per_side
    n_test = math.ceil(test_size * n)
    return n - n_test, n_test


def _min_per_side(test_size: float) -> int:
    m = 2
    while True:
        n_train, n_test = _split_sizes(m, test_size)
        if n_train >= 2 and n_test >= 2:
            return m
        m += 1


def split_task(task: CAVTask, *, test_size: float = 0.3, n_rows: int | None = None,
               where: str = "task") -> TaskSplit:
    """Balance a task's two sides and split them into stratified train and test rows.

    The larger side is subsampled (without replacement) to the size of the smaller one with
    ``numpy.random.default_rng(task.seed)``; the balanced rows are then split exactly as
    ``sklearn.model_selection.train_test_split(stratify=labels, random_state=task.seed)`` splits
    them (same train and test rows in the same order; computed without scikit-learn's overhead).
    This is exactly what :func:`fit_cav_batch` does, exposed so that a fit can be reproduced
    or compared with another solver.

    Raises :class:`~probes.errors.InsufficientDataError` when a side has fewer than 2 rows or
    when the split would leave the train or the test part without both classes.

    A split depends only on the task, ``test_size`` and ``n_rows``, and the same tasks come back in
    every layer, for every estimator family of the robustness check and in every later call (the
    random-vs-random tasks): splits are kept in a bounded per-process memo and returned again (read-only
    arrays), which skips scikit-learn's per-call validation, the bulk of a split's cost.

    Examples
    --------
    >>> s = split_task(CAVTask(np.arange(10), np.arange(10, 30), seed=0), test_size=0.3)
    >>> len(s.train), len(s.test), int((s.y_train > 0).sum())
    (14, 6, 7)
    """
    key = _split_key(task, test_size, n_rows)
    found = _SPLITS.get(key) if key is not None else None
    if found is not None:
        return found
    split = _split_task(task, test_size=test_size, n_rows=n_rows, where=where)
    if key is not None:
        for array in split:
            array.flags.writeable = False
        _SPLITS.put(key, split)
    return split


class _SplitMemo:
    """Least recently used splits, by task content (bounded by entries)."""

    def __init__(self, max_entries: int = 8192) -> None:
        self.max_entries = max_entries
        self._entries: "OrderedDict[tuple, TaskSplit]" = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple) -> TaskSplit | None:
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
            return found

    def put(self, key: tuple, split: TaskSplit) -> None:
        with self._lock:
            self._entries[key] = split
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


_SPLITS = _SplitMemo()


def _split_key(task: CAVTask, test_size: Any, n_rows: int | None) -> tuple | None:
    try:
        pos, neg = np.asarray(task.pos), np.asarray(task.neg)
        return (pos.dtype.str, pos.shape, pos.tobytes(), neg.dtype.str, neg.shape, neg.tobytes(), repr(task.seed),
                repr(test_size), n_rows)
    except (TypeError, ValueError):
        return None  # something unusual: validated and split without the memo


def _split_task(task: CAVTask, *, test_size: float, n_rows: int | None, where: str) -> TaskSplit:
    test_size = _check_test_size(test_size)
    seed = _check_seed(task.seed, where)
    pos = _check_indices(task.pos, n_rows, "concept (pos)", where)
    neg = _check_indices(task.neg, n_rows, "counterexample (neg)", where)
    need = _min_per_side(test_size)
    m = min(len(pos), len(neg))
    if m < need:
        raise InsufficientDataError(
            f"{where}: the concept side has {len(pos)} example(s) and the counterexample side "
            f"{len(neg)}; with test_size={test_size} each side needs at least {need} so that both "
            "the training and the held-out part contain both classes.")
    rng = np.random.default_rng(seed)
    # Subsample the larger side; keep the chosen rows in their given order so the result depends
    # only on the seed and on the task, not on the order in which choice() returns them.
    if len(pos) > m:
        pos = pos[np.sort(rng.choice(len(pos), size=m, replace=False))]
    elif len(neg) > m:
        neg = neg[np.sort(rng.choice(len(neg), size=m, replace=False))]
    rows = np.concatenate([pos, neg])
    labels = np.concatenate([np.ones(m), -np.ones(m)])
    tr, te = _stratified_split(m, test_size, seed)
    return TaskSplit(rows[tr], labels[tr], rows[te], labels[te])


_RNGS = threading.local()  # one legacy RandomState per thread, reseeded for every split


def _legacy_rng(seed: int) -> np.random.RandomState:
    """``np.random.RandomState(seed)``, without building a new generator each call.

    Constructing a ``RandomState`` draws OS entropy for a throwaway default seed before
    the legacy seeding (~100 us); reseeding an existing one (``seed()`` resets the cached
    Gaussian and the whole Mersenne Twister state) gives the identical state in ~2 us.
    """
    rng = getattr(_RNGS, "rng", None)
    if rng is None:
        rng = _RNGS.rng = np.random.RandomState()
    rng.seed(seed)
    return rng


def _approximate_mode(class_counts: list[int], n_draws: int, rng: np.random.RandomState) -> list[int]:
    """scikit-learn's ``sklearn.utils.extmath._approximate_mode`` on a few classes, in Python floats.

    Same IEEE-754 operations in the same order as the numpy original (``count / total * n_draws``,
    floor, remainders in decreasing order), and ``rng.choice`` called with the same arguments to
    break ties, so it returns the same counts and consumes the same random numbers.
    """
    total = sum(class_counts)
    continuous = [count / total * n_draws for count in class_counts]
    floored = [float(math.floor(value)) for value in continuous]
    need_to_add = int(n_draws - sum(floored))
    if need_to_add > 0:
        remainder = [value - low for value, low in zip(continuous, floored)]
        for value in sorted(set(remainder), reverse=True):
            inds = np.array([i for i, r in enumerate(remainder) if r == value], dtype=np.intp)
            add_now = min(len(inds), need_to_add)
            for i in rng.choice(inds, size=add_now, replace=False):
                floored[i] += 1
            need_to_add -= add_now
            if need_to_add == 0:
                break
    return [int(value) for value in floored]


def _stratified_split(m: int, test_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train and test positions of a balanced task, bit-identical to scikit-learn's split.

    Returns what ``train_test_split(np.arange(2 * m), test_size=test_size,
    stratify=np.r_[np.ones(m), -np.ones(m)], random_state=seed)`` returns (positions
    ``0..m-1`` are the concept rows, ``m..2m-1`` the counterexamples), replaying the random
    calls of ``StratifiedShuffleSplit._iter_indices`` on the same legacy ``RandomState``:
    the tie-breaking ``choice`` of the two ``_approximate_mode`` calls, one ``permutation``
    per class (classes sorted, so -1 before +1), then a ``permutation`` of train and of test.
    It skips scikit-learn's parameter validation and ``np.unique`` (~1-3 ms a call), which
    this module's own checks make redundant.

    Parameters
    ----------
    m : int
        Rows per side (at least :func:`_min_per_side` of ``test_size``).
    test_size : float
        Held-out fraction, strictly between 0 and 1.
    seed : int
        Random state, in ``[0, 2**32)``.

    Returns
    -------
    train, test : numpy.ndarray
        Positions (int64) into the ``2 * m`` balanced rows, in scikit-learn's order.

    Examples
    --------
    >>> train, test = _stratified_split(5, 0.3, seed=0)
    >>> len(train), len(test), sorted(train.tolist() + test.tolist()) == list(range(10))
    (7, 3, True)
    """
    n_train, n_test = _split_sizes(m, test_size)
    rng = _legacy_rng(seed)
    class_counts = [m, m]  # classes -1 (positions m..2m-1) and +1 (positions 0..m-1)
    n_i = _approximate_mode(class_counts, n_train, rng)
    t_i = _approximate_mode([count - n for count, n in zip(class_counts, n_i)], n_test, rng)
    train, test = [], []
    for offset, n, t in ((m, n_i[0], t_i[0]), (0, n_i[1], t_i[1])):
        permutation = rng.permutation(m)
        if offset:
            permutation += offset
        train.append(permutation[:n])
        test.append(permutation[n:n + t])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))
