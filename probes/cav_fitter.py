"""How the CAVs of one analysis are fitted: estimator, settings, the vector cache, one batch per call.

:class:`CAVFitter` is what :func:`probes.cav_rows.fit_cav_layer` hands every fit to: it reads the CAVs
(and the robustness check's per-concept mean vectors) already in the cache, fits the rest in one
:func:`probes.linear.fit_cav_batch` call, and stores what it fitted.

Examples
--------
>>> CAVFitter().method
'mean'
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from probes.linear import CAVTask, fit_cav_batch

__all__ = ["DEFAULT_CAV", "CAVFitter"]

#: The CAV estimator used when none is named (chosen by the validation study, docs/validation.md).
DEFAULT_CAV = "mean"


@dataclass
class CAVFitter:
    """How the CAVs of one analysis are fitted: estimator, settings, and an optional vector cache.

    ``method`` is a batched family of :func:`probes.linear.fit_cav_batch` or ``"classifier"`` (then
    ``classifier`` is cloned per task). ``cache`` is anything with ``get(key)`` and
    ``put(key, array, meta=...)`` (a :class:`probes.cache.ActivationCache`); each CAV is stored with its
    held-out accuracy and shift.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> pool = np.vstack([rng.normal(1, 1, (20, 3)), rng.normal(0, 1, (20, 3))]).astype(np.float32)
    >>> task = CAVTask(pos=np.arange(20), neg=np.arange(20, 40), seed=0)
    >>> vectors, accuracies, shifts = CAVFitter().fit(pool, [task], None, alpha=1.0)
    >>> vectors.shape, bool(shifts[0] > 0)
    ((1, 3), True)
    """

    method: str = DEFAULT_CAV
    C: float = 1.0
    test_size: float = 0.3
    classifier: Any = None
    centre: bool = True
    cache: Any = None

    def fit(self, pool: np.ndarray, tasks: Sequence[CAVTask], keys: Sequence[str] | None, alpha: float,
            method: str | Sequence[str] | None = None,
            averages: Sequence[tuple[Sequence[int], str | None]] | None = None,
            shift_only: Sequence[int] | None = None) -> tuple[np.ndarray, ...]:
        """Fit the CAVs that are not cached yet, all in one batch.

        Parameters
        ----------
        pool : numpy.ndarray
            ``(n, d)`` float32 activations the tasks index.
        tasks : sequence of CAVTask
        keys : sequence of str or None
            Cache key of each task (None: no caching; a None entry: that task is not cached).
        alpha : float
            Ridge penalty.
        method : str or sequence of str, optional
            Estimator family (default ``self.method``), or one per task (the batched families share one
            Gram matrix and one weight pass; ``"classifier"`` tasks are fitted one by one).
        averages : sequence of (task numbers, key), optional
            Groups of tasks (of batched families) wanted only as the mean of their unit vectors, each with
            its cache key (or None): see ``fit_cav_batch(averages=...)``. A cached mean is read and its
            tasks are not fitted; the rows of averaged tasks in the other outputs are not meaningful.
        shift_only : sequence of int, optional
            Tasks whose accuracy is not wanted (see ``fit_cav_batch(shift_only=...)``): it may come back,
            and be cached, as NaN.

        Returns
        -------
        vectors : numpy.ndarray
            ``(len(tasks), d)`` float32.
        accuracies : numpy.ndarray
            Held-out accuracy of each CAV.
        shifts : numpy.ndarray
            How far each task's concept side lies from its counterexample side along the vector.
        means : numpy.ndarray
            Only with ``averages``: ``(len(averages), d)`` float32, each group's mean unit vector.
        """
        method = self.method if method is None else method
        methods = [method] * len(tasks) if isinstance(method, str) else list(method)
        cache = self.cache if keys is not None else None
        d = pool.shape[1]
        vectors = np.empty((len(tasks), d), dtype=np.float32)
        accuracies = np.empty(len(tasks), dtype=np.float64)
        shifts = np.empty(len(tasks), dtype=np.float64)
        averages = list(averages or [])
        means = np.zeros((len(averages), d), dtype=np.float32)
        in_group = {t for group, _ in averages for t in group}
        open_groups = []
        for g, (group, key) in enumerate(averages):
            stored = cache.get(key) if cache is not None and key is not None else None
            if stored is not None and stored.shape == (d,):
                means[g] = stored
            else:
                open_groups.append(g)
        wanted = {t for g in open_groups for t in averages[g][0]}
        missing = []
        for t in range(len(tasks)):
            if t in in_group:
                # Not meaningful one by one: only the group's mean is (and is formed in the batch).
                vectors[t], accuracies[t], shifts[t] = 0.0, np.nan, np.nan
                if t in wanted:
                    missing.append(t)
                continue
            stored = cache.get(keys[t]) if cache is not None and keys[t] is not None else None
            if stored is not None and stored.shape == (d + 2,):
                vectors[t], accuracies[t], shifts[t] = stored[:d], stored[d], stored[d + 1]
            else:
                missing.append(t)
        custom = [t for t in missing if methods[t] == "classifier"]
        batched = [t for t in missing if methods[t] != "classifier"]
        if any(t in in_group for t in custom):
            raise ValueError("averages= groups must be tasks of batched estimator families.")
        for group, classifier in ((batched, None), (custom, self.classifier)):
            if not group:
                continue
            row_of = {t: row for row, t in enumerate(group)}
            batch = fit_cav_batch(pool, [tasks[t] for t in group],
                                  method="ridge" if classifier is not None else [methods[t] for t in group],
                                  alpha=alpha, C=self.C, test_size=self.test_size, classifier=classifier,
                                  centre=self.centre, progress=False,
                                  averages=[[row_of[t] for t in averages[g][0]] for g in open_groups]
                                  if classifier is None else None,
                                  shift_only=[row_of[t] for t in (shift_only or ()) if t in row_of]
                                  if classifier is None else None)
            if len(group) == len(tasks):
                vectors = batch.vectors          # the usual first call: every task fitted, no copy
            else:
                own = [row for row, t in enumerate(group) if t not in in_group]
                vectors[np.asarray(group)[own]] = batch.vectors[own]
            if classifier is None:
                for g, mean in zip(open_groups, batch.averages if open_groups else []):
                    means[g] = mean
                    key = averages[g][1]
                    if cache is not None and key is not None:
                        cache.put(key, mean, meta={"kind": "cav-mean"})
            for row, t in enumerate(group):
                if t in in_group:
                    continue
                # Rounded like the cached copy, so a cache hit reproduces a fresh fit exactly.
                accuracies[t] = np.float32(batch.accuracies[row])
                shifts[t] = np.float32(batch.shifts[row])
                if cache is not None and keys[t] is not None:
                    entry = np.append(batch.vectors[row], np.float32([batch.accuracies[row], batch.shifts[row]]))
                    entry.flags.writeable = False     # handed over: the store keeps it without a copy
                    cache.put(keys[t], entry, meta={"kind": "cav"})
        if averages:
            return vectors, accuracies, shifts, means
        return vectors, accuracies, shifts
