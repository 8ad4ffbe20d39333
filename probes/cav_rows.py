"""CAVs of one layer and their result rows: penalty, fits (with an optional cache), consensus vectors,
the robustness directions, and one row per (class, concept) from the class examples' projections.

Folder concepts get ``n_random`` concept-vs-random CAVs (one per seeded random set) and
random-vs-random CAVs (the null design of :func:`probes.design.null_pairs`). The estimator is the
difference of means (``cav="mean"``, the *pattern* in which the concept is expressed) by default;
``"logistic"``, ``"svm"``, ``"ridge"`` or any scikit-learn classifier are options. Each random set gets
its mean statistic against the others (:func:`probes.row_stats.set_means`); the concept's mean
statistic over its runs is tested as one more draw from that distribution.

The statistic is, per run, ``"shift"`` (default): the run's UBS times how far the concept's mean
activation lies from the counterexamples' mean along the vector, in units of the layer's spread -- the
first-order change of the class score between the two sides, in UBS units; ``"ubs"``: the run's UBS
(direction only); or ``"score"``: the TCAV sign-count score. Why "shift": a unit vector forgets how
different the two sides are, so a random pair whose small, noisy mean difference happens to point
along the class gradient weighs as much as a concept that moves the activations far along it; where
every example has the same gradient (a layer followed only by pooling and a linear head) that noise
decides the test. Keeping the displacement restores the power there and the exchangeability under the
null is untouched. The choice of estimator and statistic, and the evidence, are in
``docs/validation.md``.

Pure numpy on activations and :class:`probes.streaming.Projections`: no engine, no TensorFlow.

Examples
--------
>>> choose_alpha("auto", 0.1, np.array([[0.0, 0.0], [2.0, 2.0]]))
0.2
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from probes.cav_fitter import DEFAULT_CAV, CAVFitter
from probes.design import resample_tasks
from probes.gram import reuse_gram
from probes.linear import CAVTask
from probes.row_stats import RowSettings, agreement, row_statistics, set_means, total_variance
from probes.sources import hash_array
from probes.stats import student_t_pvalue
from probes.streaming import ProjectionSpace

__all__ = ["DEFAULT_CAV", "ROBUSTNESS_METHODS", "N_RESAMPLES", "CAVFitter", "choose_alpha",
           "alternative_directions", "alternative_tasks", "fit_cav_layer", "cav_rows"]

#: Estimator families refitted to check each row's direction (``direction_agreement``): one of each kind
#: (pattern, max-margin-like filter, least-squares filter). The SVMs are left out: in the validation study
#: they point the same way as logistic regression in every case, at several times its cost.
ROBUSTNESS_METHODS = ("mean", "logistic", "ridge")
#: Bootstrap resamples of a concept's images refitted for the same check.
N_RESAMPLES = 10

#: ``key_for(layer, ident, alpha, method)``: the cache key of a CAV task (``layer`` is ``""`` for the
#: robustness fits, whose identity already names their source task).
KeyFor = Callable[[str, tuple, float, str], str]


def choose_alpha(alpha: float | str, alpha_scale: float, random_pool: np.ndarray, *,
                 variance: float | None = None) -> float:
    """The ridge penalty of the default CAV classifier for one layer.

    ``alpha="auto"`` scales ``alpha_scale`` by the total variance of the random sets' activations (the
    mean squared distance of an activation vector from their mean), so the same setting regularises a
    64-channel and a 14,400-unit layer alike. Only the random sets count, so a random pair's CAV does not
    depend on which concepts share the call (and a cached one stays valid). A number is used as it is
    (as in ``RidgeClassifier(alpha)``).

    Parameters
    ----------
    alpha : float or "auto"
    alpha_scale : float
    random_pool : numpy.ndarray
        ``(n, d)`` activations of the distinct random images.
    variance : float, optional
        Their :func:`probes.row_stats.total_variance`, when the caller has it already (a pass over
        the whole pool saved).

    Returns
    -------
    float

    Examples
    --------
    >>> choose_alpha(2.0, 0.1, np.zeros((3, 2)))
    2.0
    """
    if alpha != "auto":
        if isinstance(alpha, str) or not float(alpha) > 0:
            raise ValueError(f"alpha must be 'auto' or a positive number, not {alpha!r}.")
        return float(alpha)
    return max(alpha_scale * (total_variance(random_pool) if variance is None else variance), 1e-12)


def _keys(key_for: KeyFor | None, idents: Sequence[tuple], alpha: float, method: str) -> list[str] | None:
    return None if key_for is None else [key_for("", ident, alpha, method) for ident in idents]


def _resample_design(tasks: Sequence[CAVTask], keys: Sequence[Any], index: dict, concept_names: Sequence[str],
                     alpha: float, fitter: CAVFitter, *, seed: int, key_for: KeyFor | None
                     ) -> tuple[list[tuple[str, int, CAVTask]], list[str] | None]:
    """The bootstrap resample tasks of the robustness check and their cache keys (None: not cached)."""
    design = resample_tasks(tasks, index, concept_names, seed=seed, n_resamples=N_RESAMPLES)
    resample_keys = _keys(key_for, [("resample", keys[source], hash_array(task.pos)) for _, source, task in design],
                          alpha, fitter.method)
    return design, resample_keys


def alternative_directions(pool: np.ndarray, tasks: Sequence[CAVTask], keys: Sequence[str], index: dict,
                           concept_names: Sequence[str], alpha: float, fitter: CAVFitter, *, seed: int,
                           key_for: KeyFor | None = None,
                           resampled: tuple[list, np.ndarray] | None = None,
                           means: dict[str, np.ndarray] | None = None) -> dict[str, dict]:
    """Directions a different analyst could have got, per concept, to check the row's sign against.

    * every other estimator family of ``ROBUSTNESS_METHODS``, fitted on the same concept tasks: the
      normalised mean of its CAVs (``alternatives``);
    * ``N_RESAMPLES`` CAVs of the row's own estimator on bootstrap resamples of the concept's images,
      each against one random set in turn (``resamples``).

    Call it inside :func:`probes.gram.reuse_gram` (as :func:`fit_cav_layer` does): the other families'
    batches use the same pool rows as the main fit, so they share its Gram matrix.

    Parameters
    ----------
    pool, tasks, index
        As for :func:`fit_cav_layer`.
    keys : sequence of str
        Identity of each task (its cache key); the robustness fits' identities derive from it.
    concept_names : sequence of str
    alpha : float
    fitter : CAVFitter
    seed : int
        The analysis seed (draws the resamples).
    key_for : callable, optional
        Cache keys of the robustness fits (None: not cached).
    resampled : (design, vectors), optional
        The resample tasks (as :func:`probes.design.resample_tasks` gives them) already fitted, with
        their vectors (:func:`fit_cav_layer` fits them in the main batch); None: fitted here.
    means : dict, optional
        Per concept, the other families' mean unit vectors ``(len(names), d)``, already formed
        (:func:`fit_cav_layer` forms them in its batch); None: fitted here.

    Returns
    -------
    dict
        Per concept: ``alternatives`` ``(len(names), d)``, ``names`` and ``resamples`` ``(N_RESAMPLES, d)``.

    Examples
    --------
    >>> from probes.design import cav_tasks, stack_pool
    >>> rng = np.random.default_rng(0)
    >>> pool, offsets, _ = stack_pool([("a", rng.normal(2, 1, (10, 4)))], rng.normal(size=(30, 4)),
    ...                               [np.arange(0, 10), np.arange(10, 20), np.arange(20, 30)])
    >>> tasks, _, index = cav_tasks([("a", "ka")], ["r0", "r1", "r2"], offsets, seed=0)
    >>> out = alternative_directions(pool, tasks, list(range(len(tasks))), index, ["a"], 1.0, CAVFitter(), seed=0)
    >>> out["a"]["names"], out["a"]["alternatives"].shape, out["a"]["resamples"].shape
    (['logistic', 'ridge'], (2, 4), (10, 4))
    """
    concept_tasks, others = alternative_tasks(index, concept_names, fitter)
    if means is None:
        fitted = {}
        for method in others:
            method_keys = _keys(key_for, [("alt", keys[t]) for t in concept_tasks], alpha, method)
            fitted[method] = dict(zip(concept_tasks, fitter.fit(pool, [tasks[t] for t in concept_tasks],
                                                                method_keys, alpha, method)[0]))
        means = {name: np.array([np.mean([fitted[m][t] for t in index[name]], axis=0) for m in others])
                 for name in concept_names}
    if resampled is None:
        design, resample_keys = _resample_design(tasks, keys, index, concept_names, alpha, fitter, seed=seed,
                                                 key_for=key_for)
        resampled = (design, fitter.fit(pool, [task for _, _, task in design], resample_keys, alpha,
                                        fitter.method)[0])
    design, resample_vectors = resampled
    owners = [owner for owner, _, _ in design]
    out = {}
    for name in concept_names:
        alternatives = np.asarray(means[name], dtype=np.float32).reshape(len(others), pool.shape[1])
        mine = np.array([o == name for o in owners])
        out[name] = {"alternatives": alternatives, "names": others,
                     "resamples": resample_vectors[mine]}
    return out


def alternative_tasks(index: dict, concept_names: Sequence[str], fitter: CAVFitter) -> tuple[list[int], list[str]]:
    """The concept tasks the robustness check refits, and the estimator families it refits them with.

    Parameters
    ----------
    index : dict
        As :func:`probes.design.cav_tasks` returns it.
    concept_names : sequence of str
    fitter : CAVFitter

    Returns
    -------
    tasks : list of int
        Task numbers, concept by concept.
    methods : list of str
        Every family of :data:`ROBUSTNESS_METHODS` but the fitter's own.

    Examples
    --------
    >>> alternative_tasks({"a": [0, 1], "b": [2]}, ["a", "b"], CAVFitter())
    ([0, 1, 2], ['logistic', 'ridge'])
    """
    return [t for c in concept_names for t in index[c]], [m for m in ROBUSTNESS_METHODS if m != fitter.method]


def fit_cav_layer(pool: np.ndarray, random_start: int, tasks: Sequence[CAVTask], keys: Sequence[str] | None,
                  index: dict, concept_names: Sequence[str], alpha: float, fitter: CAVFitter, space: ProjectionSpace,
                  *, seed: int, robustness: bool = True, key_for: KeyFor | None = None,
                  variance: float | None = None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Phase 1 for the folder concepts of one layer: every CAV (concept runs and random-vs-random), the
    alternative directions of the robustness check, and the consensus vectors, registered in ``space``.

    Parameters
    ----------
    pool : numpy.ndarray
        ``(n, d)`` float32 pool (:func:`probes.design.stack_pool`).
    random_start : int
        First row of the random images in ``pool``.
    tasks, index
        As :func:`probes.design.cav_tasks` returns them.
    keys : sequence of str or None
        Cache key of each task (None: no caching; the robustness fits then use task numbers).
    concept_names : sequence of str
    alpha : float
        The penalty (:func:`choose_alpha`).
    fitter : CAVFitter
    space : probes.streaming.ProjectionSpace
        The layer's flat projection space; receives every vector.
    seed : int
        The analysis seed.
    robustness : bool
        Fit the alternative directions.
    key_for : callable, optional
        Cache keys of the robustness fits.
    variance : float, optional
        :func:`probes.row_stats.total_variance` of the random rows, when the caller has it already.

    Returns
    -------
    fit : dict
        What :func:`cav_rows` needs.
    consensus : dict
        Each concept's consensus vector: the normalised mean of its CAVs.

    Examples
    --------
    >>> from probes.design import cav_tasks, stack_pool
    >>> rng = np.random.default_rng(0)
    >>> randoms = rng.normal(size=(30, 4)).astype(np.float32)
    >>> pool, offsets, start = stack_pool([("a", rng.normal(2, 1, (10, 4)))], randoms,
    ...                                   [np.arange(0, 10), np.arange(10, 20), np.arange(20, 30)])
    >>> tasks, idents, index = cav_tasks([("a", "ka")], ["r0", "r1", "r2"], offsets, seed=0)
    >>> fit, consensus = fit_cav_layer(pool, start, tasks, None, index, ["a"], 1.0, CAVFitter(), ProjectionSpace(),
    ...                                seed=0, robustness=False)
    >>> fit["vectors"].shape, round(float(np.linalg.norm(consensus["a"])), 6)
    ((6, 4), 1.0)
    """
    n_tasks = len(tasks)
    idents = keys if keys is not None else list(range(n_tasks))
    robust_keys = key_for if keys is not None else None
    alternatives = {}
    # One batch per layer, so one Gram matrix and one weight pass: the main fits, the bootstrap resamples
    # (the row's own estimator, on rows the concept runs already use) and the other estimator families'
    # refits of the concept tasks (on the same rows). Each family's tasks are solved as on their own and
    # the main fits' union of rows is unchanged, so their vectors are too.
    with reuse_gram():
        design, resample_keys = _resample_design(tasks, idents, index, concept_names, alpha, fitter, seed=seed,
                                                 key_for=robust_keys) if robustness else ([], None)
        _, others = alternative_tasks(index, concept_names, fitter) if robustness else ([], [])
        batch = [*tasks, *(task for _, _, task in design)]
        methods = [fitter.method] * len(batch)
        batch_keys: list | None = [*(keys if keys is not None else [None] * n_tasks),
                                   *(resample_keys if resample_keys is not None else [None] * len(design))]
        # The other families are wanted only as each concept's mean unit vector: one group per (family,
        # concept), formed as one vector and cached as one entry (probes.linear.fit_cav_batch, averages=).
        averages = []
        for method in others:
            for name in concept_names:
                group = list(range(len(batch), len(batch) + len(index[name])))
                batch += [tasks[t] for t in index[name]]
                methods += [method] * len(index[name])
                batch_keys += [None] * len(index[name])
                key = _keys(robust_keys, [("alt-mean", *(idents[t] for t in index[name]))], alpha, method)
                averages.append((group, None if key is None else key[0]))
        if all(k is None for k in batch_keys) and all(k is None for _, k in averages):
            batch_keys = None
        # The null's accuracies are never read (the row's quality is its concept runs'): only their shifts.
        fitted = fitter.fit(pool, batch, batch_keys, alpha, methods, averages=averages or None,
                            shift_only=index["__null__"])
        every, accuracies_all, shifts_all = fitted[:3]
        vectors, accuracies, shifts = every[:n_tasks], accuracies_all[:n_tasks], shifts_all[:n_tasks]
        if robustness:
            start = n_tasks + len(design)
            family_means = fitted[3] if averages else np.zeros((0, pool.shape[1]), np.float32)
            per_concept = {name: family_means[[i * len(concept_names) + c for i in range(len(others))]]
                           for c, name in enumerate(concept_names)}
            alternatives = alternative_directions(pool, tasks, idents, index, concept_names, alpha, fitter,
                                                  seed=seed, key_for=robust_keys,
                                                  resampled=(design, every[n_tasks:start]), means=per_concept)
    # The layer's scale: the typical distance of a random activation from the random mean.
    if variance is None:
        variance = total_variance(pool[random_start:])
    spread = float(np.sqrt(variance)) or 1.0
    # Each task's rows per side once balanced (the larger side is subsampled to the smaller, split_task).
    sides = np.array([min(len(t.pos), len(t.neg)) for t in tasks], dtype=np.float64)
    fit = {"vectors": vectors, "accuracies": accuracies, "shifts": shifts, "index": index, "spread": spread,
           "sides": sides,
           "cols": space.add(vectors), "alt_cols": {}, "records": {}}
    consensus_vectors = {}
    for name in concept_names:
        idx = index[name]
        if name in alternatives:
            fit["alt_cols"][name] = (space.add(alternatives[name]["alternatives"]),
                                     space.add(alternatives[name]["resamples"]))
        runs_ = np.asarray(vectors[idx], dtype=np.float64)
        mean = runs_.mean(axis=0)
        consensus = mean / (np.linalg.norm(mean) or 1.0)
        consensus_vectors[name] = consensus.astype(np.float32)
        # The row's per-example UBS ratios: the mean of the concept CAVs' ratios over the mean's norm.
        mean_norm = float(np.linalg.norm(vectors[idx].astype(np.float64).mean(axis=0))) or 1.0
        fit["records"][name] = space.record(name, consensus, run_cols=fit["cols"][idx], row_cols=fit["cols"][idx],
                                            row_scale=mean_norm)
    return fit, consensus_vectors


def _sample_size_scale(sides: np.ndarray | None, null: Sequence[int]) -> np.ndarray | float:
    """Each run's shift expressed at the null pairs' sample size: ``sqrt(n_side / n_null)``.

    A run's shift is the distance between its two sides' means along its vector. Where the concept has
    no effect that distance is sampling noise of the two means, of order ``sqrt(1/n + 1/n)`` for ``n``
    rows a side, so a concept of 8 images (its tasks balanced to 8 against 8) shifts further by chance
    than the random-vs-random pairs of 40 against 40 it is compared with: the test was anti-conservative
    (20-40 % of pure-noise concepts of 8 images came out with p < 0.05 against random sets of 30 or 60).
    Scaling every run by ``sqrt(n_side / n_ref)``, ``n_ref`` the null pairs' typical side, puts the
    concept runs and the null on one footing; the UBS factor needs no correction (a noise direction's
    angle to the gradients does not depend on ``n``). Sides of one size everywhere (the usual case:
    random sets drawn at the concept's size) give a factor of exactly 1: nothing changes.
    """
    if sides is None or not len(null):
        return 1.0
    reference = float(np.median(sides[np.asarray(null)]))
    if reference <= 0:
        return 1.0
    return np.sqrt(sides / reference)


def cav_rows(settings: RowSettings, layer: str, fit: dict[str, Any], projections: dict[str, Any],
             concept_names: Sequence[str], n_sets: int, runs: dict, ubs_nulls: dict[str, np.ndarray], *,
             tcav_compat: bool = False) -> list[dict[str, Any]]:
    """Phase 3 for the folder concepts of one layer: one row per (class, concept) from the projections.

    Parameters
    ----------
    settings : RowSettings
        ``settings.statistic`` picks the tested statistic (``"shift"``, ``"ubs"`` or ``"score"``).
    layer : str
    fit : dict
        What :func:`fit_cav_layer` returned.
    projections : dict
        Each class's :class:`probes.streaming.Projections` in the layer's flat space, by class name.
    concept_names : sequence of str
    n_sets : int
        Number of random sets.
    runs : dict
        Receives the per-run arrays of each row (scores, UBS, shifts and their nulls).
    ubs_nulls : dict
        The layer's shared UBS nulls.
    tcav_compat : bool
        The original TCAV procedure: Student's t-test between the concept runs' scores and the scores of
        one fixed random set against each other random set.

    Returns
    -------
    list of dict
        Rows over :data:`probes.row_stats.COLUMNS`, class-major.
    """
    index, accuracies, shifts, spread = fit["index"], fit["accuracies"], fit["shifts"], fit["spread"]
    rows = []
    for class_name, proj in projections.items():
        summary = proj.summary.columns(fit["cols"])  # every CAV, null ones included
        scores, zeros = summary.tcav_scores()
        per_run_ubs = summary.ubs()
        nul, pairs = index["__null__"], index["__pairs__"]
        null = set_means(scores[nul], pairs, n_sets, 1.0 - scores[nul] - zeros[nul])
        null_ubs = set_means(per_run_ubs[nul], pairs, n_sets, -per_run_ubs[nul])
        # "shift": the UBS of each run scaled by how far its concept side moved along the vector (in
        # units of the layer's spread), i.e. the first-order change of the class score between the two
        # sides' mean activations. Seen from its other side a pair's vector flips but its shift does
        # not (both the vector and the displacement flip), so its value flips.
        per_run_shift = per_run_ubs * shifts / spread * _sample_size_scale(fit.get("sides"), nul)
        null_shift = set_means(per_run_shift[nul], pairs, n_sets, -per_run_shift[nul])
        for name in concept_names:
            idx = index[name]
            consensus_ratios = proj.row_ratios(fit["records"][name])
            test_p = None
            if tcav_compat:
                statistic, null_statistics, test = float(np.mean(scores[idx])), scores[nul], "tcav_ttest"
                test_p = student_t_pvalue(scores[idx], scores[nul])
            elif settings.statistic == "ubs":
                statistic, null_statistics, test = float(np.mean(per_run_ubs[idx])), null_ubs, "ubs"
            elif settings.statistic == "shift":
                statistic, null_statistics, test = float(np.mean(per_run_shift[idx])), null_shift, "shift"
            else:
                statistic, null_statistics, test = float(np.mean(scores[idx])), null, "score"
            row = row_statistics(settings, class_name, layer, name, "cav", proj, consensus_ratios, scores[idx],
                                 scores[nul] if tcav_compat else null, quality=float(np.mean(accuracies[idx])),
                                 zero_fraction=float(zeros[idx].mean()), ubs_nulls=ubs_nulls, runs=runs,
                                 statistic=statistic, null_statistics=null_statistics, p_value=test_p)
            row["test_statistic"] = test
            alt = fit["alt_cols"].get(name)
            row.update(agreement(row["ubs"], None if alt is None else
                                 (proj.summary.columns(alt[0]).ubs(), proj.summary.columns(alt[1]).ubs())))
            rows.append(row)
            runs[(class_name, layer, name)].update(ubs=per_run_ubs[idx], null_ubs=null_ubs,
                                                   shift=per_run_shift[idx], null_shift=null_shift)
    return rows
