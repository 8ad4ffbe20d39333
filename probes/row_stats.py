"""One result row from a concept's projections: its test, intervals, UBS and robustness flags.

The test of every row asks whether this concept's ``statistic`` (its mean shift, UBS or TCAV score over
its runs, or an RCV's Br) is an outlier among the same statistic of null concepts -- random sets for
CAVs, shuffled measures for RCVs -- with a two-sided t prediction test
(:func:`probes.stats.prediction_test`), so the null is exactly "another set of random images in place
of the concept".

Why not Welch between concept runs and null runs, as the original TCAV code does: every concept run
shares the same concept set, so the set's own idiosyncrasy never enters the run-to-run variance, and
noise "concepts" come out significant far above the nominal rate. ``compat="tcav"`` still runs that
procedure (the caller passes its ``p_value``), to reproduce published numbers.

``ubs`` is the UBS of the row's consensus vector, with a bootstrap interval over class examples and
``ubs_p`` from sampled random directions; ``direction_agreement`` / ``fragile`` check the row's sign
against the directions a different analyst could have got (:func:`agreement`). Pure numpy on
:class:`probes.streaming.Projections`: no engine, no TensorFlow.

Examples
--------
>>> set_means(np.array([1.0, 0.0]), [(0, 1), (1, 2)], 3, np.array([-1.0, 0.0])).tolist()
[1.0, -0.5, 0.0]
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from probes.design import MIN_RANDOM_SETS, seed_for
from probes.stats import bootstrap_ci, bootstrap_diff_ci, prediction_test
from probes.ubs import ubs_pvalue

__all__ = ["COLUMNS", "DEFAULT_STATISTIC", "MIN_RESAMPLE_AGREEMENT", "RowSettings", "set_means", "total_variance",
           "ubs_summary", "row_statistics", "agreement"]

#: The columns of a result table, in order.
COLUMNS = [
    "class", "layer", "concept", "kind", "score", "score_ci_low", "score_ci_high", "null_mean", "effect",
    "effect_ci_low", "effect_ci_high", "p_value", "q_value", "significant", "vector_quality", "n_examples",
    "n_random", "target", "seed", "zero_fraction", "d", "ubs", "ubs_ci_low", "ubs_ci_high", "ubs_p",
    "r2_cv", "fold_angle_deg", "br", "test_statistic", "direction_agreement", "fragile",
]

#: The test statistic used when none is named (chosen by the validation study, docs/validation.md).
DEFAULT_STATISTIC = "shift"

#: A row is ``fragile`` when an alternative estimator reverses its direction, or when fewer than this
#: share of the concept-image resamples agree with it.
MIN_RESAMPLE_AGREEMENT = 0.8


@dataclass
class RowSettings:
    """What every row of one analysis shares: seeds, resample counts, the statistic's name, the target.

    Examples
    --------
    >>> RowSettings(seed=3).n_boot
    2000
    """

    seed: int = 0
    n_boot: int = 2000
    n_directions: int = 1000
    statistic: str = DEFAULT_STATISTIC
    target: str = ""


def set_means(values: np.ndarray, pairs: Sequence[tuple[int, int]], n_sets: int, flipped: np.ndarray) -> np.ndarray:
    """Each random set's mean statistic against the other random sets it was paired with.

    A pair (i, j) is fitted once, oriented towards i; ``flipped`` holds the statistic seen from j
    (for the sign-count score ``1 - score - zeros``, for UBS ``-ubs``). These per-set means are the
    null sample that a concept's mean statistic is compared with (see :func:`row_statistics`).

    Parameters
    ----------
    values : numpy.ndarray
        The statistic of each pair, seen from its first set.
    pairs : sequence of (int, int)
    n_sets : int
    flipped : numpy.ndarray
        The statistic of each pair, seen from its second set.

    Returns
    -------
    numpy.ndarray
        ``(n_sets,)``; 0 for a set in no pair.

    Examples
    --------
    >>> set_means(np.array([0.75]), [(0, 1)], 2, np.array([0.25])).tolist()
    [0.75, 0.25]
    """
    total = np.zeros(n_sets)
    count = np.zeros(n_sets)
    for (i, j), value, other in zip(pairs, values, flipped):
        total[i] += value
        total[j] += other
        count[i] += 1
        count[j] += 1
    return total / np.maximum(count, 1)


def total_variance(x: np.ndarray, block: int = 1 << 22) -> float:
    """Sum of the column variances of ``x`` (mean squared distance from the mean row).

    Computed in float32 column blocks: a float64 copy of a wide pool costs more than the fits it scales.

    Parameters
    ----------
    x : numpy.ndarray
        ``(n, d)``.
    block : int
        Elements per block.

    Returns
    -------
    float

    Examples
    --------
    >>> total_variance(np.array([[0.0, 0.0], [2.0, 2.0]]))
    2.0
    """
    x = np.asarray(x, dtype=np.float32)
    width = max(1, block // max(len(x), 1))
    total = 0.0
    for c0 in range(0, x.shape[1], width):
        part = x[:, c0:c0 + width]
        part = part - part.mean(axis=0)
        total += float(np.vdot(part, part))
    return total / max(len(x), 1)


def ubs_summary(settings: RowSettings, proj: Any, ratios: np.ndarray, nulls: dict[str, np.ndarray], null_key: str,
                seed: int) -> tuple[float, float, float, float]:
    """UBS from per-example ratios, its bootstrap interval over examples, and its p-value.

    Parameters
    ----------
    settings : RowSettings
    proj : probes.streaming.Projections
        The class's projections (its unit-gradient sum gives the null).
    ratios : numpy.ndarray
        The row's per-example UBS ratios.
    nulls : dict
        UBS nulls already drawn, by ``null_key`` (one per class and feature space in a layer; filled here).
    null_key : str
    seed : int
        The row's seed.

    Returns
    -------
    (ubs, low, high, p) : tuple of float
        All NaN when no example has a non-zero gradient.

    Examples
    --------
    >>> ubs_summary(RowSettings(), None, np.zeros(0), {}, "k", 0)
    (nan, nan, nan, nan)
    """
    if len(ratios) == 0:
        return np.nan, np.nan, np.nan, np.nan
    if null_key not in nulls:
        nulls[null_key] = proj.unit.ubs_null(n_directions=settings.n_directions,
                                             random_state=seed_for(settings.seed, "ubs", null_key))
    lo, hi = bootstrap_ci(ratios, n_boot=settings.n_boot, random_state=seed + 2)
    return float(ratios.mean()), lo, hi, float(ubs_pvalue(ratios.mean(), nulls[null_key]))


def row_statistics(settings: RowSettings, class_name: str, layer: str, concept: str, kind: str, proj: Any,
                   ratios: np.ndarray, scores: np.ndarray, null_scores: np.ndarray, *, quality: float,
                   zero_fraction: float, ubs_nulls: dict[str, np.ndarray], runs: dict, statistic: float,
                   null_statistics: np.ndarray | None = None, pooled: bool = False,
                   p_value: float | None = None) -> dict[str, Any]:
    """One table row (a dict over :data:`COLUMNS`) and its runs entry.

    Parameters
    ----------
    settings : RowSettings
    class_name, layer, concept, kind : str
        The row's identity (``kind`` is ``"cav"`` or ``"rcv"``).
    proj : probes.streaming.Projections
        The class's projections in the row's feature space.
    ratios : numpy.ndarray
        Per-example UBS ratios of the row's vector.
    scores, null_scores : numpy.ndarray
        TCAV scores of the concept runs and of the null (the score interval and the effect).
    quality : float
        The vector's quality (mean held-out accuracy of the CAVs, or the RCV's held-out R²).
    zero_fraction : float
        Share of zero directional derivatives.
    ubs_nulls : dict
        Shared UBS nulls of the layer (see :func:`ubs_summary`).
    runs : dict
        Receives ``runs[(class, layer, concept)] = {"scores", "null_scores"}``.
    statistic : float
        The tested statistic; NaN means undefined: no test, never significant.
    null_statistics : numpy.ndarray, optional
        Its null sample (default ``null_scores``); non-finite values are left out, and fewer than
        ``MIN_RANDOM_SETS`` left means no test.
    pooled : bool
        The row lives in the pooled-channel space (its UBS null is that space's).
    p_value : float, optional
        A p-value computed by the caller (``compat="tcav"``), used instead of the prediction test.

    Returns
    -------
    dict
        ``q_value`` NaN and ``significant`` False until the caller corrects for multiple comparisons.

    Examples
    --------
    >>> from probes.streaming import ProjectionSpace, project_batches
    >>> space = ProjectionSpace(); cols = space.add(np.eye(2))
    >>> proj = project_batches([({"l": np.ones((4, 2))}, {"l": np.ones((4, 2))})], {"l": {"flat": space}})["l"]["flat"]
    >>> row = row_statistics(RowSettings(n_boot=50, n_directions=50), "c", "l", "x", "cav", proj, np.ones(4),
    ...                      np.array([1.0, 1.0]), np.array([0.5, 0.4, 0.6]), quality=1.0, zero_fraction=0.0,
    ...                      ubs_nulls={}, runs={}, statistic=1.0)
    >>> row["p_value"] < 0.05, row["n_examples"], row["d"]
    (True, 4, 2)
    """
    seed = seed_for(settings.seed, "stats", class_name, layer, concept)
    null_statistics = np.asarray(null_scores if null_statistics is None else null_statistics, dtype=float)
    null_statistics = null_statistics[np.isfinite(null_statistics)]
    p = np.nan  # undefined statistic (e.g. Br where S does not vary): no test, never significant
    if p_value is not None:
        p = p_value
    elif np.isfinite(statistic) and null_statistics.size >= MIN_RANDOM_SETS:
        _, p = prediction_test(statistic, null_statistics)
    score_lo, score_hi = bootstrap_ci(scores, n_boot=settings.n_boot, random_state=seed)
    eff_lo, eff_hi = bootstrap_diff_ci(scores, null_scores, n_boot=settings.n_boot, random_state=seed + 1)
    ubs, ubs_lo, ubs_hi, ubs_p = ubs_summary(settings, proj, ratios, ubs_nulls, f"{class_name}|{pooled}", seed)
    runs[(class_name, layer, concept)] = {"scores": np.asarray(scores), "null_scores": np.asarray(null_scores)}
    return {
        "class": class_name, "layer": layer, "concept": concept, "kind": kind,
        "score": float(np.mean(scores)), "score_ci_low": score_lo, "score_ci_high": score_hi,
        "null_mean": float(np.mean(null_scores)), "effect": float(np.mean(scores) - np.mean(null_scores)),
        "effect_ci_low": eff_lo, "effect_ci_high": eff_hi, "p_value": float(p), "q_value": np.nan,
        "significant": False, "vector_quality": quality, "n_examples": int(proj.summary.n),
        "n_random": int(len(scores)), "target": settings.target, "seed": settings.seed,
        "zero_fraction": zero_fraction, "d": int(proj.d), "ubs": ubs, "ubs_ci_low": ubs_lo,
        "ubs_ci_high": ubs_hi, "ubs_p": ubs_p, "r2_cv": np.nan, "fold_angle_deg": np.nan, "br": np.nan,
        "test_statistic": settings.statistic, "direction_agreement": np.nan, "fragile": False,
    }


def agreement(row_ubs: float, directions: tuple[np.ndarray, np.ndarray] | None) -> dict[str, Any]:
    """``direction_agreement`` and ``fragile`` of a row from the directions a different analyst could get.

    ``directions`` holds the UBS, for the same class examples, of each alternative estimator's consensus
    CAV and of each resampled direction (CAVs on resampled concept images, or the RCVs of the cross-
    validation folds). The agreement is the share of them whose sign matches the row's ``ubs``. The row is
    fragile when any alternative estimator reverses it, or when fewer than ``MIN_RESAMPLE_AGREEMENT`` of
    the resamples agree.

    Parameters
    ----------
    row_ubs : float
    directions : (numpy.ndarray, numpy.ndarray) or None
        UBS of the alternative estimators' directions and of the resampled directions; None: no check.

    Returns
    -------
    dict
        ``{"direction_agreement": float, "fragile": bool}``.

    Examples
    --------
    >>> agreement(1.0, (np.array([2.0]), np.array([1.0, 1.0, 1.0, -1.0])))
    {'direction_agreement': 0.8, 'fragile': True}
    """
    if directions is None or not np.isfinite(row_ubs) or row_ubs == 0:
        return {"direction_agreement": np.nan, "fragile": False}
    sign = np.sign(row_ubs)
    estimator_signs, resample_signs = (np.sign(np.asarray(u, dtype=float)) for u in directions)
    agree = np.concatenate([estimator_signs, resample_signs]) == sign
    resample_share = float(np.mean(resample_signs == sign)) if len(resample_signs) else 1.0
    fragile = bool(np.any(estimator_signs != sign) or resample_share < MIN_RESAMPLE_AGREEMENT)
    return {"direction_agreement": float(agree.mean()) if agree.size else np.nan, "fragile": fragile}
