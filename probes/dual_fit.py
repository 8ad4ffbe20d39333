"""The batched dual fit behind :func:`probes.linear.fit_cav_batch`: one Gram matrix, one weight pass.

Every task of a batch is solved on the rows of one shared pool. Families whose solution needs the Gram
matrix (ridge, logistic, the SVMs) get it, computed only where their tasks need it
(:mod:`probes.gram`), and are solved in groups of equal size (:mod:`probes.cav_solvers`); the
difference of means (:data:`PRIMAL_METHODS`) needs no Gram matrix, and its values on its own rows
come from the weight pass (:mod:`probes.row_values`). One pass over the pool's columns then forms
every weight vector (and, for the robustness check's other families, only each concept's mean
vector). The tests compare every route with the plain dual fit (``tests/test_cav_batch_routes.py``).

Examples
--------
>>> from probes.linear import CAVTask, fit_cav_batch
>>> pool = np.random.default_rng(0).normal(size=(40, 50)).astype("float32")
>>> pool[:20, 0] += 4.0
>>> tasks = [CAVTask(np.arange(20), np.arange(20, 40), seed=0)]
>>> [round(float(fit_cav_batch(pool, tasks, method=m).vectors[0, 0]), 1) > 0.3 for m in ("mean", "ridge")]
[True, True]
"""
from __future__ import annotations

import math

import numpy as np

from probes import cav_solvers
from probes.cav_tasks import TaskSplit
from probes.gram import block_centre, centred_block, centred_gram
from probes.linear import CAVBatch, _column_blocks, _finish, _sizes
from probes.progress import progress as _progress_bar
from probes.row_values import RowValues, SparseProduct
from probes.stats import NonFiniteValuesError

__all__ = ["PRIMAL_METHODS", "fit_dual"]

#: Estimator families fitted without the Gram matrix: their coefficients are known from the labels,
#: and their values on their own rows come from the weight pass (:mod:`probes.row_values`).
PRIMAL_METHODS = ("mean",)


def fit_dual(pool: np.ndarray, splits: list[TaskSplit], methods: list[str], alpha: float, C: float,
              progress: bool, averages: list[list[int]] | None = None,
              shift_only: list[int] | None = None) -> CAVBatch:
    """The batched solvers' fit of :func:`probes.linear.fit_cav_batch` (its arguments, checked there).

    Parameters
    ----------
    pool : numpy.ndarray or probes.row_stack.RowStack
        ``(N, d)`` activations.
    splits : list of TaskSplit
        Each task's balanced train and test rows.
    methods : list of str
        Each task's estimator family.
    alpha, C : float
        The ridge penalty; the inverse regularisation of logistic regression and the SVMs.
    progress : bool
        Show progress bars.
    averages : list of list of int, optional
        Groups of tasks wanted only as their mean unit vector.
    shift_only : list of int, optional
        Tasks wanted for their vector and shift only (see :func:`probes.linear.fit_cav_batch`).

    Returns
    -------
    CAVBatch
    """
    n_rows, d = pool.shape
    union = np.unique(np.concatenate([np.concatenate([s.train, s.test]) for s in splits]))
    n_u = len(union)
    # Plain slicing when every row is used avoids a fancy-indexing copy per block.
    rows: np.ndarray | slice = slice(None) if n_u == n_rows else union
    blocks = _column_blocks(d, n_u)
    # Pass 2 also holds a (P, width) block of weights.
    weight_blocks = _column_blocks(d, max(n_u, len(splits)))

    # Pass 1: Gram matrix of the union rows, centred on their mean (or on the mean of the rows shared with
    # other calls, probes.shared_gram). Centring does not change any probe (each probe centres its own
    # training rows, and its dual coefficients sum to zero) but it keeps the float32 products accurate
    # (see probes.gram). Inside probes.gram.reuse_gram a batch on the same pool and rows as an earlier
    # one gets the same matrix back.
    n_tasks = len(splits)
    local = [(np.searchsorted(union, s.train), np.searchsorted(union, s.test)) for s in splits]
    task_rows = [np.concatenate(pair) for pair in local]
    # Families whose coefficients do not depend on the Gram matrix take their values on their own rows
    # from the weight pass instead (probes.row_values); the others need only the entries some task of
    # theirs uses (a batch with one new concept skips the random-vs-random block, see probes.gram).
    primal = [p for p in range(n_tasks) if methods[p] in PRIMAL_METHODS]
    dual = [p for p in range(n_tasks) if methods[p] not in PRIMAL_METHODS]
    gram = block_means = None
    # Rows whose squared norm (for the degeneracy bound) the Gram diagonal does not give.
    unsquared = np.arange(n_u)
    if dual:
        gram, block_means = centred_gram(pool, union, rows, blocks, progress,
                                            task_rows=[task_rows[p] for p in dual])
        dual_rows = np.unique(np.concatenate([task_rows[p] for p in dual]))
        if not np.all(np.isfinite(np.diag(gram)[dual_rows])):
            _non_finite()
        unsquared = np.setdiff1d(unsquared, dual_rows)
    centred_sq = float(np.diag(gram)[dual_rows].sum()) if dual else 0.0

    coefs = np.zeros((n_tasks, n_u))
    centred_intercepts = np.zeros(n_tasks)
    accuracies = np.zeros(n_tasks)
    beta_norms = np.zeros(n_tasks)
    raw_shifts = np.zeros(n_tasks)
    gram_norms = np.zeros(n_tasks)      # ||w|| from the Gram matrix (for tasks not formed one by one)
    # Tasks of one family with the same number of training rows are solved together (batched linear
    # algebra).
    groups: dict[tuple[str, int], list[int]] = {}
    for p in dual:
        groups.setdefault((methods[p], len(local[p][0])), []).append(p)
    # Tasks wanted only inside a group's mean (see below) need their norm, not their accuracy or shift.
    averages = averages or []
    unformed = sorted({p for g in averages for p in g if methods[p] not in PRIMAL_METHODS})
    in_mean_only = np.zeros(n_tasks, bool)
    in_mean_only[unformed] = True
    for (method, n), members in groups.items():
        k_tr = np.stack([gram[np.ix_(local[p][0], local[p][0])] for p in members])
        y_tr = np.stack([splits[p].y_train for p in members])
        betas, intercepts = cav_solvers.solve(method, k_tr, y_tr, alpha=alpha, C=C,
                                              random_state=splits[members[0]].train.size)
        # ||w||^2 = beta' K beta for every task of the group at once.
        gram_norms[members] = np.sqrt(np.maximum(np.einsum("pi,pij,pj->p", betas, k_tr, betas), 0.0))
        for beta, intercept, p in zip(betas, intercepts, members):
            tr = local[p][0]
            if in_mean_only[p]:
                accuracies[p] = raw_shifts[p] = np.nan
            else:
                f_all = gram[np.ix_(task_rows[p], tr)] @ beta
                _task_summary(p, f_all, intercept, splits[p], accuracies, raw_shifts, centred_intercepts)
            beta_norms[p] = math.sqrt(n) * float(np.linalg.norm(beta))
            np.add.at(coefs[p], tr, beta)          # add.at: a row may appear twice in one task
    # A primal task whose rows the Gram matrix covers anyway (a concept against a random set, when the
    # robustness check's Gram families need the same rows) takes its values from it, as a dual task does;
    # the others get theirs from the weight pass.
    from_gram = []
    finite = np.isfinite(gram) if gram is not None and primal else None
    for p in primal:
        beta = cav_solvers.mean_coefficients(splits[p].y_train)
        beta_norms[p] = math.sqrt(len(beta)) * float(np.linalg.norm(beta))
        np.add.at(coefs[p], local[p][0], beta)
        entries = np.ix_(task_rows[p], local[p][0])
        if finite is not None and finite[entries].all():
            _midpoint_summary(p, gram[entries] @ beta, splits[p], accuracies, raw_shifts, centred_intercepts)
            from_gram.append(p)
    primal = sorted(set(primal) - set(from_gram))
    # Tasks wanted for their shift only (the null's random-vs-random CAVs, whose accuracy and intercept
    # nothing reads) need no value per row: their shift is the vector's product with the difference of
    # their two sides' mean rows, and twenty random sets are the sides of 190 tasks.
    wanted_shift = set(shift_only or ())
    sides = _SharedSides(n_u, [p for p in primal if p in wanted_shift], task_rows, splits)
    primal = [p for p in primal if p not in sides.tasks]

    # Groups wanted only as a mean: their Gram-matrix tasks become one row of coefficients per group,
    # each task weighted by 1 / ||w|| (its norm from the Gram matrix), so pass 2 forms the mean directly.
    formed = np.setdiff1d(np.arange(n_tasks), unformed)
    # The formed tasks usually come first (the averaged families are appended): a slice, not a row gather.
    formed_rows = slice(0, len(formed)) if np.array_equal(formed, np.arange(len(formed))) else formed
    position = np.full(n_tasks, -1)
    position[formed] = np.arange(len(formed))
    combined = np.zeros((len(averages), n_u))
    if unformed:
        # The degeneracy bound below, from what pass 1 knows (the rows' centred norms and the mean).
        rms = math.sqrt(centred_sq / max(len(dual_rows), 1) + sum(float(m @ m) for m in block_means))
        for g, members in enumerate(averages):
            for p in members:
                if position[p] < 0 and gram_norms[p] > 1e-12 * beta_norms[p] * rms:
                    combined[g] += coefs[p] / (gram_norms[p] * len(members))

    # Pass 2: every weight vector in one product per column block (and the primal tasks' values).
    vectors = np.zeros((n_tasks, d), dtype=np.float32)
    averaged = np.zeros((len(averages), d), dtype=np.float32)
    norm_sq = np.zeros(len(formed))
    mean_dot_w = np.zeros(len(formed))
    mean_sq = 0.0
    coefs32 = np.vstack([coefs[formed], combined if unformed else combined[:0]]).astype(np.float32)
    # Each vector's coefficients sit on its own task's rows: tile by tile where that saves enough.
    weights_of = SparseProduct(coefs32, [task_rows[p] for p in formed]
                               + [np.concatenate([task_rows[p] for p in g]) for g in averages if unformed])
    n_formed = len(formed)
    values = RowValues(n_u, [task_rows[p] for p in primal]) if primal else None
    primal_rows = position[primal]
    # Same blocks as pass 1 (the usual case, P <= n_u): its column means are reused, bit for bit.
    same_blocks = block_means is not None and weight_blocks == blocks
    buffer = None
    for b, (c0, c1) in enumerate(_progress_bar(weight_blocks, enabled=progress, desc="CAV weights", unit="block")):
        centre = block_means[b] if same_blocks else block_centre(pool, union, c0, c1)
        block, mean = centred_block(pool, rows, c0, c1, buffer, centre)
        buffer = block
        product = weights_of(block)
        w = product[:n_formed]
        norm_sq += np.einsum("ij,ij->i", w, w, dtype=np.float64)
        # float32 products summed in float64 over the blocks: no float64 copy of the weights.
        mean_dot_w += w @ mean.astype(np.float32)
        vectors[formed_rows, c0:c1] = w
        if unformed:
            averaged[:, c0:c1] = product[n_formed:]
        if unsquared.size:
            part = block if unsquared.size == n_u else block[unsquared]
            centred_sq += float(np.einsum("ij,ij->", part, part, dtype=np.float64))
        mean_sq += float(mean @ mean)
        if values is not None:
            values.add(block, w[primal_rows])
        sides.add(block, w)
    # The raw rows' sum of squares, for the degeneracy bound below: exact when the rows were centred on their
    # own mean; when centred on the shared rows' mean (probes.shared_gram) the cross term is left out, which
    # keeps it within a factor of two of the truth (|2 n (mu - c).c| <= sum |x - c|^2 + n |c|^2).
    raw_sq = centred_sq + n_u * mean_sq
    if not math.isfinite(raw_sq):
        _non_finite()
    raw_rms = math.sqrt(raw_sq / n_u)
    for j, p in enumerate(primal):
        _midpoint_summary(p, values.of(j, task_rows[p]), splits[p], accuracies, raw_shifts, centred_intercepts)
    sides.summarise(position, accuracies, raw_shifts, centred_intercepts)
    norms = gram_norms.copy()
    norms[formed] = np.sqrt(norm_sq)
    # The fit used centred rows; shift the intercept back to raw activations: w.(x - centre) + b.
    intercepts = centred_intercepts.copy()
    intercepts[formed] -= mean_dot_w
    # ||w|| <= ||beta|| sqrt(n) rms(x): a norm far below that bound is rounding noise, not a
    # direction (e.g. a layer whose activations are identical for every image).
    degenerate = norms <= 1e-12 * beta_norms * raw_rms
    _finish(vectors, intercepts, accuracies, norms, degenerate, splits)
    shifts = np.where(degenerate, 0.0, raw_shifts / np.where(degenerate, 1.0, norms))
    if unformed:
        intercepts[unformed] = np.nan     # not formed: no intercept in raw coordinates
    for g, members in enumerate(averages):
        # Tasks formed one by one (a family fitted without the Gram matrix) join their mean here.
        mine = [p for p in members if position[p] >= 0]
        if mine:
            averaged[g] += (vectors[mine].astype(np.float64).sum(axis=0) / len(members)).astype(np.float32)
    return CAVBatch(vectors, accuracies, intercepts, *_sizes(splits), shifts=shifts,
                    averages=averaged if averages else None)


class _SharedSides:
    """Shifts of difference-of-means tasks from their sides' mean rows, where the sides are shared.

    A task's shift is the mean of its vector's values on its concept side minus that on its other side,
    that is the vector's product with the difference of the two sides' mean rows. When the tasks' sides
    are few (random sets, each the side of many null tasks) those means cost one small product per
    column block, and the values of each row are not needed; otherwise (``tasks`` empty) the tasks take
    the per-row route.
    """

    def __init__(self, n_rows: int, candidates: list[int], task_rows: list[np.ndarray],
                 splits: list[TaskSplit]) -> None:
        found: dict[bytes, int] = {}
        rows: list[np.ndarray] = []
        pairs = []
        for p in candidates:
            labels = np.concatenate([splits[p].y_train, splits[p].y_test]) > 0
            pair = []
            for side in (task_rows[p][labels], task_rows[p][~labels]):
                pair.append(found.setdefault(np.sort(side).tobytes(), len(rows)))
                if pair[-1] == len(rows):
                    rows.append(side)
            pairs.append(pair)
        # Sides no fewer than tasks: the means would cost as much as the values, so nothing to gain.
        shared = bool(candidates) and len(rows) < len(candidates)
        self.tasks = set(candidates) if shared else set()
        self._order = candidates if shared else []
        self._pairs = np.asarray(pairs if shared else np.zeros((0, 2)), dtype=np.int64)
        self._product = None
        self._dots = None
        if shared:
            coefs = np.zeros((len(rows), n_rows), dtype=np.float32)
            for s, side in enumerate(rows):
                np.add.at(coefs[s], side, np.float32(1.0 / len(side)))     # a row twice counts twice
            self._product = SparseProduct(coefs, rows)

    def add(self, block: np.ndarray, weights: np.ndarray) -> None:
        """One column block: ``block`` the centred rows, ``weights`` the formed vectors there."""
        if self._product is None:
            return
        means = self._product(block)
        dots = weights @ means.T        # every formed vector against every side: one small product
        self._dots = dots.astype(np.float64) if self._dots is None else self._dots + dots

    def summarise(self, position: np.ndarray, accuracies: np.ndarray, raw_shifts: np.ndarray,
                  centred_intercepts: np.ndarray) -> None:
        """Each task's shift (before normalising), and NaN for its accuracy and intercept."""
        for p, (pos, neg) in zip(self._order, self._pairs):
            raw_shifts[p] = self._dots[position[p], pos] - self._dots[position[p], neg]
            accuracies[p] = centred_intercepts[p] = np.nan


def _non_finite() -> None:
    raise NonFiniteValuesError("the activation pool contains NaN or infinite values in the rows "
                               "used by these tasks; check the layer's activations.")


def _midpoint_summary(p: int, f_all: np.ndarray, split: TaskSplit, accuracies: np.ndarray,
                      raw_shifts: np.ndarray, centred_intercepts: np.ndarray) -> None:
    """:func:`_task_summary` of a difference-of-means task: its boundary is the midpoint of its two
    training sides' mean values."""
    intercept = float(cav_solvers.midpoint_intercept(f_all[:len(split.train)], split.y_train > 0))
    _task_summary(p, f_all, intercept, split, accuracies, raw_shifts, centred_intercepts)


def _task_summary(p: int, f_all: np.ndarray, intercept: float, split: TaskSplit, accuracies: np.ndarray,
                  raw_shifts: np.ndarray, centred_intercepts: np.ndarray) -> None:
    """Task ``p``'s held-out accuracy, the distance between its sides and its intercept, from its
    values ``f_all`` (training rows first, then test rows, in centred coordinates)."""
    n_train = len(split.train)
    decision = f_all[n_train:] + intercept
    accuracies[p] = np.mean((decision > 0) == (split.y_test > 0))
    labels = np.concatenate([split.y_train, split.y_test]) > 0
    raw_shifts[p] = f_all[labels].mean() - f_all[~labels].mean()
    centred_intercepts[p] = intercept
