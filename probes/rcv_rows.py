"""Regression concept vectors (RCVs) of one layer and their result rows.

A continuous measure per image gives, per layer, the full-data RCV (R², fold angle, Br and UBS); its Br
is tested against the Br of ``n_random`` RCVs fitted on shuffled measures (same prediction test as the
CAV rows; held-out R² is not clipped at 0, so the null keeps its spread); the RCVs of the five
cross-validation training folds (80 % subsamples) give the score's interval and the direction check.
Where every example has the same gradient along the vector, Br is undefined (NaN): the row then tests
the RCV's UBS against the shuffled-measure RCVs' UBS, and ``test_statistic`` says so.

Pure numpy on activations and :class:`probes.streaming.Projections`: no engine, no TensorFlow.

Examples
--------
>>> use_pooling("auto", (8, 8, 16)), use_pooling("auto", (32,))
(True, False)
"""
from __future__ import annotations

from typing import Any

import numpy as np

from probes.design import MIN_MEASURE_EXAMPLES, MIN_RANDOM_SETS, flat, require_size, seed_for
from probes.regression import RegressionProbe, pool_activations, shuffled_fits
from probes.row_stats import RowSettings, agreement, row_statistics
from probes.streaming import ProjectionSpace

__all__ = ["use_pooling", "rcv_features", "fit_rcv", "rcv_rows"]


def use_pooling(pool: str | bool, shape: tuple) -> bool:
    """Whether RCVs of a layer of activation ``shape`` are fitted on pooled channels.

    ``"auto"``: for convolutional feature maps, ``(H, W, C)`` or deeper.

    Examples
    --------
    >>> use_pooling(False, (8, 8, 16))
    False
    """
    if pool == "auto":
        return len(shape) >= 3
    return bool(pool)


def rcv_features(acts: np.ndarray, pooled: bool) -> np.ndarray:
    """The float32 rows an RCV is fitted on: pooled channels, or the flattened activations.

    Examples
    --------
    >>> rcv_features(np.ones((2, 4, 4, 3)), True).shape, rcv_features(np.ones((2, 4, 4, 3)), False).shape
    ((2, 3), (2, 48))
    """
    x = pool_activations(np.asarray(acts)) if pooled else flat(acts)
    return np.asarray(x, dtype=np.float32)


def fit_rcv(x: np.ndarray, values: np.ndarray, space: ProjectionSpace, *, name: str, layer: str, n_random: int,
            seed: int, pooled: bool = False) -> dict[str, Any]:
    """Phase 1 for one measure in one layer: the RCV, its fold RCVs and the shuffled-measure RCVs,
    registered in ``space`` (the layer's flat or pooled projection space).

    Parameters
    ----------
    x : numpy.ndarray
        ``(n, d)`` features of the measured images (:func:`rcv_features`).
    values : numpy.ndarray
        The measure of each image ``(n,)``.
    space : probes.streaming.ProjectionSpace
    name, layer : str
        The measure and the layer (they seed the shuffles).
    n_random : int
        Shuffled-measure RCVs.
    seed : int
        The analysis seed.
    pooled : bool
        Whether ``x`` holds pooled channels (recorded for the rows).

    Returns
    -------
    dict
        ``probe`` (the fitted :class:`probes.regression.RegressionProbe`), ``null_r2``, ``pooled`` and the
        columns and record the rows read from the projections.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(40, 5)).astype(np.float32); y = x[:, 0] + 0.1 * rng.normal(size=40)
    >>> fit = fit_rcv(x, y, ProjectionSpace(), name="m", layer="l", n_random=4, seed=0)
    >>> bool(fit["probe"].r2_cv_ > 0.9), fit["null_r2"].shape
    (True, (4,))
    """
    y = np.asarray(values, dtype=np.float64)
    require_size(len(y), MIN_MEASURE_EXAMPLES,
                 f"Measure {name!r} has {{n}} usable images; a regression concept vector needs at least {{minimum}} "
                 "(5-fold cross-validation). Measure more images.")
    probe = RegressionProbe(cv=5, random_state=seed).fit(x, y)
    # Concept runs: the RCVs of the five training folds (80 % subsamples, fitted anyway for the
    # held-out R²). Null runs: RCVs on shuffled measures, which share every eigendecomposition.
    null_r2, null_vectors = shuffled_fits(x, y, n_random, cv=5, random_state=seed_for(seed, "rcv-null", name, layer))
    fit = {"probe": probe, "null_r2": null_r2, "pooled": pooled, "space": "pooled" if pooled else "flat",
           "concept_cols": space.add(probe.fold_vectors_), "null_cols": space.add(null_vectors),
           "full_col": space.add(np.asarray(probe.vector_)[None, :])}
    # The full-data RCV is the consensus, its fold RCVs the runs (as in the row's score).
    fit["record"] = space.record(name, np.asarray(probe.vector_, dtype=np.float64), run_cols=fit["concept_cols"],
                                 row_cols=fit["full_col"], row_scale=1.0)
    return fit


def rcv_rows(settings: RowSettings, layer: str, name: str, fit: dict[str, Any], projections: dict[str, Any], runs: dict,
             ubs_nulls: dict[str, np.ndarray], *, n_random: int) -> list[dict[str, Any]]:
    """Phase 3 for one measure in one layer: one row per class from the projections.

    Parameters
    ----------
    settings : RowSettings
    layer, name : str
    fit : dict
        What :func:`fit_rcv` returned.
    projections : dict
        Each class's :class:`probes.streaming.Projections` in the fit's space, by class name.
    runs : dict
        Receives the per-run arrays of each row (scores, Br or UBS and their nulls).
    ubs_nulls : dict
        The layer's shared UBS nulls.
    n_random : int
        Reported as the row's ``n_random`` (the shuffled-measure RCVs).

    Returns
    -------
    list of dict
    """
    probe, null_r2, pooled = fit["probe"], fit["null_r2"], fit["pooled"]
    rows = []
    for class_name, proj in projections.items():
        concept_summary = proj.summary.columns(fit["concept_cols"])
        null_summary = proj.summary.columns(fit["null_cols"])
        full_summary = proj.summary.columns(fit["full_col"])
        br_null = null_r2 * null_summary.mean_over_std()
        ratios = proj.row_ratios(fit["record"])
        scores, zeros = concept_summary.tcav_scores()
        null_scores, _ = null_summary.tcav_scores()
        br = float(probe.r2_cv_ * full_summary.mean_over_std()[0])
        statistic, null_statistics, test = br, br_null, "br"
        if not np.isfinite(br) or np.isfinite(br_null).sum() < MIN_RANDOM_SETS:
            # Br is undefined where every example moves identically along the vector (a layer followed
            # only by pooling and a linear head): test the RCV's UBS against the shuffled-measure RCVs'.
            statistic, null_statistics, test = float(ratios.mean()), null_summary.ubs(), "ubs"
        row = row_statistics(settings, class_name, layer, name, "rcv", proj, ratios, scores, null_scores,
                             quality=float(probe.r2_cv_), zero_fraction=float(zeros.mean()), ubs_nulls=ubs_nulls,
                             runs=runs, statistic=statistic, null_statistics=null_statistics, pooled=pooled)
        row.update(r2_cv=float(probe.r2_cv_), fold_angle_deg=float(probe.fold_angle_deg_), br=br,
                   test_statistic=test)
        row.update(agreement(row["ubs"], (np.zeros(0), concept_summary.ubs())))
        runs[(class_name, layer, name)].update(br=np.array([br]), null_br=br_null)
        if test == "ubs":
            runs[(class_name, layer, name)].update(ubs=np.array([statistic]), null_ubs=null_statistics)
        row["n_random"] = int(n_random)
        rows.append(row)
    return rows
