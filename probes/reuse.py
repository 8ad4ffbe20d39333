"""Reuse of the random-set side of an analysis across calls on the same data and model.

A call with a new concept on the same class examples, random sets and model needs nothing new about
the random sets: their activations come from the engine's content-keyed cache, the random-vs-random
CAVs from the CAV cache (keyed by what each task *is*, not by the call), and the null statistics of a
class -- the column summaries of the class examples' gradients projected on the random-vs-random CAVs
(:class:`probes.streaming.ColumnSummary`) -- from :class:`NullSummaries`, keyed by content: model,
layer, target, class index and examples, the engine's batching, and the random-vs-random CAVs' own
keys (which name the random sets' content, estimator, penalty, seed and options).

They are kept in a small per-process memory (a few numbers per random pair: bounded by entries) and,
when the analysis has a store, in the store too, so another process reuses them. Pure numpy: no
TensorFlow, no ``concepts`` import.

Examples
--------
>>> from probes.streaming import ColumnSummary
>>> memo = NullSummaries()
>>> key = memo.key("model", "conv1", "logit", 0, "examples", 32, ["cav-a", "cav-b"])
>>> memo.get(key) is None
True
>>> summary = ColumnSummary(2); summary.update(np.ones((3, 2)), np.ones(3), d=2)
>>> memo.put(key, summary)
>>> memo.get(key).n, memo.hits, memo.misses
(3, 1, 1)
"""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Any, Sequence

import numpy as np

from probes.streaming import ColumnSummary

__all__ = ["NullSummaries", "NULL_SUMMARIES", "MAX_ENTRIES", "known_nulls", "keep_nulls", "ValueMemo",
           "RANDOM_VARIANCES"]

#: Most null summaries kept in a process (each is a few arrays of one number per random pair).
MAX_ENTRIES = 256


class NullSummaries:
    """Column summaries of the random-vs-random CAVs per class, by content key, in memory and a store.

    Parameters
    ----------
    max_entries : int
        Least recently used entries beyond this are dropped from memory.

    Attributes
    ----------
    hits, misses : int
        Look-ups answered (from memory or the store) and not answered: a public counter for tests and
        benchmarks.

    Examples
    --------
    >>> NullSummaries().get("0" * 64, store=None) is None
    True
    """

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self.max_entries = int(max_entries)
        self._memory: OrderedDict[str, ColumnSummary] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(fingerprint: str, layer: str, target: str, class_index: int, examples_key: str, batch_size: int,
            null_keys: Sequence[str]) -> str:
        """The content key of one class's null summary in one layer.

        Parameters
        ----------
        fingerprint : str
            The model's fingerprint (weights included).
        layer, target : str
        class_index : int
        examples_key : str
            Content key of the class examples.
        batch_size : int
            The engine's batch size (batches are merged in order: part of the exact numbers).
        null_keys : sequence of str
            Cache keys of the random-vs-random CAVs, in column order.

        Returns
        -------
        str
            A lowercase SHA-256 hex digest (a valid store key).

        Examples
        --------
        >>> len(NullSummaries.key("m", "l", "logit", 0, "e", 32, ["k"]))
        64
        """
        digest = hashlib.sha256()
        for part in ("null-summary-v1", fingerprint, layer, target, class_index, examples_key, batch_size,
                     len(null_keys), *null_keys):
            data = str(part).encode()
            digest.update(f"{len(data)}:".encode())
            digest.update(data)
        return digest.hexdigest()

    def get(self, key: str, store: Any = None) -> ColumnSummary | None:
        """The summary stored under ``key`` (memory first, then ``store``), or None.

        Parameters
        ----------
        key : str
        store : probes.cache.ActivationCache, optional

        Returns
        -------
        ColumnSummary or None

        Examples
        --------
        >>> NullSummaries().get("0" * 64) is None
        True
        """
        with self._lock:
            found = self._memory.get(key)
            if found is not None:
                self._memory.move_to_end(key)
        if found is None and store is not None:
            record = store.get_record(key)
            if record is not None:
                try:
                    found = ColumnSummary.from_arrays(record[1])
                except (KeyError, TypeError, ValueError):
                    found = None
                if found is not None:
                    self._remember(key, found)
        with self._lock:
            if found is None:
                self.misses += 1
            else:
                self.hits += 1
        return found

    def put(self, key: str, summary: ColumnSummary, store: Any = None) -> None:
        """Keep ``summary`` under ``key`` in memory and, when given, in ``store``.

        Parameters
        ----------
        key : str
        summary : ColumnSummary
        store : probes.cache.ActivationCache, optional

        Examples
        --------
        >>> NullSummaries().put("0" * 64, ColumnSummary(0))
        """
        self._remember(key, summary)
        if store is not None:
            store.put_record(key, {"kind": "null-summary"}, summary.to_arrays(), meta={"kind": "null-summary"})

    def _remember(self, key: str, summary: ColumnSummary) -> None:
        with self._lock:
            self._memory[key] = summary
            self._memory.move_to_end(key)
            while len(self._memory) > self.max_entries:
                self._memory.popitem(last=False)

    def clear(self) -> None:
        """Forget every entry kept in memory and reset the counters.

        Examples
        --------
        >>> memo = NullSummaries(); memo.clear(); memo.hits
        0
        """
        with self._lock:
            self._memory.clear()
            self.hits = self.misses = 0


#: The process's null summaries (what :class:`concepts.analysis.Analysis` uses).
NULL_SUMMARIES = NullSummaries()


class ValueMemo:
    """Small numbers about the random side (a layer's spread), by content key, least recently used first out.

    Parameters
    ----------
    max_entries : int
        Entries kept.

    Examples
    --------
    >>> memo = ValueMemo()
    >>> memo.get_or_compute(("model", "conv1", ("set-a", "set-b")), lambda: 2.5)
    2.5
    >>> memo.get_or_compute(("model", "conv1", ("set-a", "set-b")), lambda: 0.0), memo.hits
    (2.5, 1)
    """

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self._entries: "OrderedDict[str, Any]" = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0

    def get_or_compute(self, key: tuple, compute: Any) -> Any:
        """The value stored under ``key`` (a tuple of strings), or ``compute()``, stored.

        Parameters
        ----------
        key : tuple
            What the value is of: model fingerprint, layer, content keys (nested tuples of strings).
        compute : callable
            Makes the value when it is not known.

        Returns
        -------
        object
        """
        digest = hashlib.sha256(repr(key).encode()).hexdigest()
        with self._lock:
            if digest in self._entries:
                self._entries.move_to_end(digest)
                self.hits += 1
                return self._entries[digest]
        value = compute()
        with self._lock:
            self._entries[digest] = value
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return value

    def clear(self) -> None:
        """Forget every value.

        Examples
        --------
        >>> ValueMemo().clear()
        """
        with self._lock:
            self._entries.clear()


#: Each layer's total variance of the random images' activations (the penalty's scale and the layer's
#: spread), by model fingerprint, layer and the random sets' content keys.
RANDOM_VARIANCES = ValueMemo()


def known_nulls(memo: NullSummaries, store: Any, keys: dict[str, str], null_cols: dict[str, np.ndarray],
                n_examples: int) -> dict[str, dict[str, tuple[np.ndarray, ColumnSummary]]]:
    """The null columns' summaries of one class found in ``memo`` (or ``store``), as
    :func:`probes.streaming.project_batches` takes them.

    Parameters
    ----------
    memo : NullSummaries
    store : probes.cache.ActivationCache or None
    keys : dict
        Each layer's null-summary key (:meth:`NullSummaries.key`).
    null_cols : dict
        Each layer's null columns in its flat projection space.
    n_examples : int
        Number of class examples (a summary of another count is not used).

    Returns
    -------
    dict
        ``{layer: {"flat": (columns, summary)}}`` for the layers found.

    Examples
    --------
    >>> known_nulls(NullSummaries(), None, {"l": "0" * 64}, {"l": np.arange(2)}, 3)
    {}
    """
    known = {}
    for layer, key in keys.items():
        found = memo.get(key, store)
        if found is not None and found.k == len(null_cols[layer]) and found.n == n_examples:
            known[layer] = {"flat": (null_cols[layer], found)}
    return known


def keep_nulls(memo: NullSummaries, store: Any, keys: dict[str, str], null_cols: dict[str, np.ndarray],
               projected: dict[str, dict[str, Any]], known: dict) -> None:
    """Keep the null columns' summaries computed in this call (layers not in ``known``) for later calls.

    Parameters
    ----------
    memo : NullSummaries
    store : probes.cache.ActivationCache or None
    keys, null_cols
        As for :func:`known_nulls`.
    projected : dict
        ``{layer: {"flat": Projections}}`` of the class.
    known : dict
        What :func:`known_nulls` returned.

    Examples
    --------
    >>> from probes.streaming import ProjectionSpace, project_batches
    >>> space = ProjectionSpace(); _ = space.add(np.eye(2))
    >>> projected = project_batches([({"l": np.ones((3, 2))}, {"l": np.ones((3, 2))})], {"l": {"flat": space}})
    >>> memo = NullSummaries(); keep_nulls(memo, None, {"l": "1" * 64}, {"l": np.array([1])}, projected, {})
    >>> memo.get("1" * 64).k
    1
    """
    for layer, key in keys.items():
        if layer not in known:
            memo.put(key, projected[layer]["flat"].summary.columns(null_cols[layer]), store)
