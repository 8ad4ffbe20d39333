"""Statistics for concept scores: Welch's test, multiple-comparison corrections, bootstrap
intervals and empirical p-values.

TCAV asks whether the scores of "concept vs random" CAVs differ from those of "random vs random"
CAVs (Kim et al., 2018). This module gives the pieces of that test, written to be explicit about
their degenerate cases (constant score distributions are common: a class whose gradients all
point one way gives scores of exactly 1.0) rather than returning NaN.

Examples
--------
>>> t, p = welch_test([0.9, 0.8, 0.85, 0.95], [0.5, 0.4, 0.6, 0.55])
>>> p < 0.01
True
>>> adjust_pvalues([0.01, 0.04, 0.03], method="holm").round(3).tolist()
[0.03, 0.06, 0.06]
"""
from __future__ import annotations

import numbers
from typing import Any, Callable

import numpy as np
import scipy.stats

from probes.errors import InsufficientDataError, ToolkitError
from probes.random_state import as_generator
from probes.sizes import require_size

__all__ = [
    "NonFiniteValuesError",
    "welch_test",
    "prediction_test",
    "student_t_pvalue",
    "adjust_pvalues",
    "PVALUE_METHODS",
    "bootstrap_ci",
    "bootstrap_diff_ci",
    "empirical_pvalue",
    "monte_carlo_pvalue",
]

#: Correction methods accepted by :func:`adjust_pvalues`.
PVALUE_METHODS = ("holm", "bh", "fdr_bh", "bonferroni", "none")

# Bootstrap replicates are drawn in groups so that the (replicates x n) index array stays small.
_BOOT_ELEMENTS = 4_000_000


class NonFiniteValuesError(ToolkitError, ValueError):
    """Data that should be finite numbers contains NaN or infinity.

    Examples
    --------
    >>> try:
    ...     welch_test([1.0, float("nan")], [1.0, 2.0])
    ... except NonFiniteValuesError:
    ...     print("NaN rejected")
    NaN rejected
    """


def _sample(x: Any, name: str, minimum: int) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64).ravel()
    if not np.all(np.isfinite(arr)):
        raise NonFiniteValuesError(f"{name} contains NaN or infinite values; remove them first.")
    require_size(arr.size, minimum, f"{name} has {{n}} value(s); at least {{minimum}} are needed.")
    return arr


def welch_test(a: Any, b: Any) -> tuple[float, float]:
    """Welch's unequal-variance two-sample t-test: ``(t, two-sided p)``.

    ``t > 0`` when ``mean(a) > mean(b)``. Same values as
    ``scipy.stats.ttest_ind(a, b, equal_var=False)`` in the regular case; degenerate cases are
    defined instead of NaN: both samples constant and equal gives ``(0.0, 1.0)``, both constant
    but different gives ``(+-inf, 0.0)``. Fewer than 2 values in either sample raises
    :class:`~probes.errors.InsufficientDataError`; NaN raises :class:`NonFiniteValuesError`.

    Examples
    --------
    >>> welch_test([1.0, 1.0, 1.0], [1.0, 1.0])
    (0.0, 1.0)
    >>> welch_test([1.0, 1.0], [0.5, 0.5])
    (inf, 0.0)
    """
    a = _sample(a, "first sample", 2)
    b = _sample(b, "second sample", 2)
    na, nb = a.size, b.size
    ma, mb = a.mean(), b.mean()
    # A constant sample gets variance exactly 0: np.var of identical floats can be ~1e-35 through
    # rounding of the mean, which would turn "equal constants" into a huge spurious t.
    va = 0.0 if np.ptp(a) == 0 else a.var(ddof=1)
    vb = 0.0 if np.ptp(b) == 0 else b.var(ddof=1)
    if va == 0.0 and vb == 0.0:
        if a[0] == b[0]:
            return 0.0, 1.0
        return (float(np.inf) if a[0] > b[0] else float(-np.inf)), 0.0
    sa, sb = va / na, vb / nb
    se2 = sa + sb
    t = (ma - mb) / np.sqrt(se2)
    df = se2**2 / (sa**2 / (na - 1) + sb**2 / (nb - 1))
    p = 2.0 * scipy.stats.t.sf(abs(t), df)
    return float(t), float(min(1.0, p))


def prediction_test(observed: float, sample: Any) -> tuple[float, float]:
    """Two-sided t prediction test: is ``observed`` one more draw from the population of ``sample``?

    ``t = (observed - mean(sample)) / (sd(sample) * sqrt(1 + 1/n))`` with ``n - 1`` degrees of
    freedom (the prediction interval of a new normal observation). Use it when the observed
    statistic is a single value (e.g. a concept's mean TCAV score) and ``sample`` holds the same
    statistic for null concepts. Degenerate cases as in :func:`welch_test`: a constant sample
    equal to ``observed`` gives ``(0.0, 1.0)``, different gives ``(+-inf, 0.0)``.

    Examples
    --------
    >>> t, p = prediction_test(0.9, [0.5, 0.45, 0.55, 0.52, 0.48])
    >>> t > 0 and p < 0.01
    True
    """
    x = _sample([observed], "observed value", 1)[0]
    null = _sample(sample, "null sample", 2)
    n = null.size
    if np.ptp(null) == 0:
        if x == null[0]:
            return 0.0, 1.0
        return (float(np.inf) if x > null[0] else float(-np.inf)), 0.0
    t = (x - null.mean()) / (null.std(ddof=1) * np.sqrt(1.0 + 1.0 / n))
    p = 2.0 * scipy.stats.t.sf(abs(t), n - 1)
    return float(t), float(min(1.0, p))


def student_t_pvalue(a: Any, b: Any) -> float:
    """Two-sided p-value of Student's equal-variance two-sample t-test, as the original TCAV code used.

    Same value as ``scipy.stats.ttest_ind(a, b).pvalue`` in the regular case; two constant samples
    give 1.0 when equal and 0.0 when different (instead of NaN). This test treats every run as an
    independent draw, which they are not (all concept runs share one concept set), so it is
    anti-conservative; it is here to reproduce published numbers (``compat="tcav"``).

    Examples
    --------
    >>> round(student_t_pvalue([0.9, 0.8, 0.85], [0.5, 0.4, 0.6]), 4)
    0.0056
    """
    a = _sample(a, "first sample", 2)
    b = _sample(b, "second sample", 2)
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        return 1.0 if a[0] == b[0] else 0.0
    return float(scipy.stats.ttest_ind(a, b, equal_var=True).pvalue)


def adjust_pvalues(p: Any, method: str = "holm") -> np.ndarray:
    """Adjust p-values for multiple comparisons; returns an array of the input's shape.

    Methods: ``"holm"`` (Holm's step-down, controls the family-wise error rate; the default),
    ``"bh"`` / ``"fdr_bh"`` (Benjamini-Hochberg step-up, controls the false discovery rate),
    ``"bonferroni"``, ``"none"``. Adjusted values are monotone in the raw ones and capped at 1.
    NaN p-values stay NaN and do not count towards the number of tests m.

    Examples
    --------
    >>> adjust_pvalues([0.01, 0.02, 0.03, np.nan], method="bh").tolist()
    [0.03, 0.03, 0.03, nan]
    """
    key = str(method).lower()
    if key not in PVALUE_METHODS:
        raise ValueError(f"unknown p-value adjustment {method!r}; choose one of "
                         f"{', '.join(repr(m) for m in PVALUE_METHODS)}.")
    arr = np.array(p, dtype=np.float64)
    flat = arr.reshape(-1)
    valid = ~np.isnan(flat)
    pv = flat[valid]
    if np.any((pv < 0) | (pv > 1)):
        raise ValueError("p-values must lie in [0, 1] (or be NaN).")
    m = pv.size
    if m == 0 or key == "none":
        return arr
    if key == "bonferroni":
        adj = np.minimum(1.0, pv * m)
    else:
        order = np.argsort(pv, kind="stable")
        ranked = pv[order]
        i = np.arange(1, m + 1)
        if key == "holm":
            # Step-down: the k-th smallest is multiplied by (m - k + 1), then made non-decreasing.
            stepped = np.maximum.accumulate(np.minimum(1.0, (m - i + 1) * ranked))
        else:
            # Step-up: the k-th smallest is multiplied by m / k, then made non-decreasing from the top.
            stepped = np.minimum.accumulate((ranked * m / i)[::-1])[::-1]
            stepped = np.minimum(1.0, stepped)
        adj = np.empty(m)
        adj[order] = stepped
    flat[valid] = adj
    return arr


def _check_level(level: float, n_boot: int) -> None:
    if not isinstance(level, numbers.Real) or not 0.0 < float(level) < 1.0:
        raise ValueError(f"level must lie strictly between 0 and 1; got {level!r}.")
    if not isinstance(n_boot, numbers.Integral) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer; got {n_boot!r}.")


def _replicates(x: np.ndarray, statistic: Callable[..., Any], n_boot: int,
                rng: np.random.Generator) -> np.ndarray:
    n = x.size
    group = max(1, _BOOT_ELEMENTS // n)
    out = np.empty(n_boot)
    for start in range(0, n_boot, group):
        stop = min(n_boot, start + group)
        resampled = x[rng.integers(0, n, size=(stop - start, n))]
        try:
            values = np.asarray(statistic(resampled, axis=1), dtype=np.float64)
            if values.shape != (stop - start,):
                raise TypeError
        except TypeError:
            # The statistic does not reduce along an axis: fall back to one call per replicate.
            values = np.array([float(statistic(row)) for row in resampled])
        out[start:stop] = values
    return out


def _interval(replicates: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(replicates, [tail, 1.0 - tail])
    return float(lo), float(hi)


def bootstrap_ci(x: Any, *, statistic: Callable[..., Any] = np.mean, n_boot: int = 2000,
                 level: float = 0.95, random_state: Any = None) -> tuple[float, float]:
    """Percentile bootstrap confidence interval ``(low, high)`` of ``statistic(x)``.

    ``n_boot`` resamples of ``x`` with replacement are drawn at once (vectorised);
    ``statistic`` is called as ``statistic(samples, axis=1)`` when it supports ``axis``
    (numpy reductions do) and once per resample otherwise. ``random_state`` is an int, ``None``,
    a ``numpy.random.Generator`` or a ``RandomState``.

    Examples
    --------
    >>> lo, hi = bootstrap_ci(np.arange(20.0), random_state=0)
    >>> lo < 9.5 < hi
    True
    """
    _check_level(level, n_boot)
    x = _sample(x, "x", 2)
    return _interval(_replicates(x, statistic, int(n_boot), as_generator(random_state)), float(level))


def bootstrap_diff_ci(a: Any, b: Any, *, n_boot: int = 2000, level: float = 0.95,
                      random_state: Any = None) -> tuple[float, float]:
    """Percentile bootstrap interval of ``mean(a) - mean(b)``, resampling ``a`` and ``b`` apart.

    The effect size of a TCAV test: mean concept score minus mean null score, the two samples
    being independent (different CAVs), so each is resampled independently.

    Examples
    --------
    >>> lo, hi = bootstrap_diff_ci([0.8, 0.9, 0.85, 0.95], [0.5, 0.45, 0.55, 0.5], random_state=0)
    >>> 0.2 < lo < hi < 0.5
    True
    """
    _check_level(level, n_boot)
    a = _sample(a, "first sample", 2)
    b = _sample(b, "second sample", 2)
    rng = as_generator(random_state)
    diff = _replicates(a, np.mean, int(n_boot), rng) - _replicates(b, np.mean, int(n_boot), rng)
    return _interval(diff, float(level))


def monte_carlo_pvalue(observed: Any, null: Any, two_sided: bool = True) -> float | np.ndarray:
    """Monte-Carlo p-value of ``observed`` against draws ``null`` of the null distribution: the only one in ``probes``.

    Two-sided: ``(1 + #{|null| >= |observed|}) / (M + 1)`` (for nulls centred on 0, such as the UBS
    of random directions); one-sided: ``(1 + #{null >= observed}) / (M + 1)`` (upper tail). The +1
    counts the observed value as one of the draws, so p is never 0 and is exactly valid at any M;
    ties count as at least as extreme.

    NaN rule: a NaN observation has p = NaN, and a null holding any NaN gives NaN for every
    observation. Why NaN and not an error: the callers score rows whose statistic can be undefined
    (a class whose examples all have a zero gradient has no UBS null), and such a row must say
    "no test" (NaN, never significant) rather than stop the analysis; the result tables have always
    used this rule for ``ubs_p``. An empty null raises :class:`~probes.errors.InsufficientDataError`.

    Parameters
    ----------
    observed : float or array_like
        The statistic(s) to test; an array gives an array of the same shape.
    null : array_like
        M draws of the statistic under the null (any shape; flattened).
    two_sided : bool
        Compare magnitudes (default) or the upper tail.

    Returns
    -------
    float or numpy.ndarray
        A float for a scalar ``observed``, else an array of its shape.

    Examples
    --------
    >>> monte_carlo_pvalue(3.0, [0.5, -1.0, 4.0, -3.0])
    0.6
    >>> monte_carlo_pvalue(3.0, [0.5, -1.0, 4.0, -3.0], two_sided=False)
    0.4
    >>> monte_carlo_pvalue(1.0, [0.5, np.nan])
    nan
    """
    draws = np.asarray(null, dtype=np.float64).ravel()
    obs = np.asarray(observed, dtype=np.float64)
    if draws.size == 0:
        raise InsufficientDataError("the null distribution is empty; at least one draw is needed.")
    if np.any(np.isnan(draws)):
        p = np.full(obs.shape, np.nan)
    else:
        # Sorted once, so that testing many observations against a large null costs one search each;
        # side="left" counts entries equal to the observation as at least as extreme.
        if two_sided:
            at_least = draws.size - np.searchsorted(np.sort(np.abs(draws)), np.abs(obs), side="left")
        else:
            at_least = draws.size - np.searchsorted(np.sort(draws), obs, side="left")
        p = (1.0 + at_least) / (draws.size + 1.0)
        p = np.where(np.isnan(obs), np.nan, p)
    return float(p) if p.ndim == 0 else p


def empirical_pvalue(observed: float, null: Any, two_sided: bool = True) -> float:
    """Scalar form of :func:`monte_carlo_pvalue` (same formula, same NaN rule), kept for its name.

    Parameters
    ----------
    observed : float
    null : array_like
    two_sided : bool

    Returns
    -------
    float

    Examples
    --------
    >>> empirical_pvalue(3.0, [0.5, -1.0, 4.0, -3.0])
    0.6
    >>> empirical_pvalue(10.0, np.zeros(99))
    0.01
    """
    return float(monte_carlo_pvalue(float(observed), null, two_sided))
