"""Linear concept probes (CAVs), sensitivities and TCAV scores (Kim et al., ICML 2018).

A concept activation vector (CAV) is the unit normal of a linear classifier that separates a
concept's activations from counterexample activations, oriented towards the concept. TCAV fits
hundreds of them per layer, all on rows of *one* shared pool of activations (concept sets and
random sets), with far fewer rows than features (n ~ 100, d ~ 10^4..10^5). The default solver
exploits that: it computes the Gram matrix of the pool rows once and solves every probe in the
dual, so the cost is two passes over the pool's columns whatever the number of probes.

Tasks and their train/test splits are :mod:`probes.cav_tasks`; the scikit-learn wrapper is
:mod:`probes.linear_probe`; the batched dual fit is :mod:`probes.dual_fit`, on the shared Gram matrix
of :mod:`probes.gram`.

Main entry points:

* :class:`~probes.cav_tasks.CAVTask` / :func:`fit_cav_batch` -- many CAVs on one pool in one call;
* :class:`~probes.linear_probe.LinearProbe` -- a single CAV as a scikit-learn classifier
  (``fit(X, y)``; also importable from here);
* :func:`sensitivities` -- directional derivatives g(x) . v for every example and vector at once;
* :func:`tcav_scores` -- fraction of positive sensitivities, with exact zeros reported apart.

Examples
--------
>>> rng = np.random.default_rng(0)
>>> pool = rng.normal(size=(40, 300)).astype("float32")
>>> pool[:20, 0] += 5.0                     # rows 0..19 carry the concept along feature 0
>>> batch = fit_cav_batch(pool, [CAVTask(np.arange(20), np.arange(20, 40), seed=0)])
>>> bool(batch.vectors[0, 0] > 0.5), float(batch.accuracies[0])
(True, 1.0)
"""
from __future__ import annotations

import numbers
import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from sklearn.base import clone

from probes import cav_solvers
from probes.errors import InputShapeError, InsufficientDataError, ToolkitError
from probes.progress import progress as _progress_bar
from probes.row_stack import RowStack
from probes.stats import NonFiniteValuesError
# Tasks and splits live in probes.cav_tasks; importable from here as before.
from probes.cav_tasks import CAVTask, PoolIndexError, TaskSplit, _check_test_size, split_task  # noqa: F401

__all__ = [
    "CAVTask",
    "CAVBatch",
    "TaskSplit",
    "split_task",
    "fit_cav_batch",
    "sensitivities",
    "tcav_scores",
    "PoolIndexError",
    "NotALinearClassifierError",
    "DegenerateProbeWarning",
]

# Working-set budget of one column block (in float64). Blocks keep memory bounded for memmapped
# pools while staying large enough for BLAS to run at full speed. Tests patch it to force chunking.
_BLOCK_BYTES = 64 * 2**20


class NotALinearClassifierError(ToolkitError, TypeError):
    """The classifier given for CAVs is not a scikit-learn linear classifier with ``coef_``.

    Examples
    --------
    >>> from sklearn.tree import DecisionTreeClassifier
    >>> pool = np.random.default_rng(0).normal(size=(20, 5))
    >>> task = CAVTask(np.arange(10), np.arange(10, 20), seed=0)
    >>> try:
    ...     fit_cav_batch(pool, [task], classifier=DecisionTreeClassifier())
    ... except NotALinearClassifierError:
    ...     print("rejected")
    rejected
    """


class DegenerateProbeWarning(UserWarning):
    """A probe's weight vector is zero (e.g. identical activations), so it has no direction.

    Examples
    --------
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     _ = fit_cav_batch(np.ones((8, 3)), [CAVTask(np.arange(4), np.arange(4, 8), seed=0)])
    >>> caught[0].category.__name__
    'DegenerateProbeWarning'
    """


@dataclass
class CAVBatch:
    """The CAVs fitted by :func:`fit_cav_batch`, one row per task, in task order.

    Attributes
    ----------
    vectors : np.ndarray
        ``(P, d)`` float32 unit vectors, oriented so that a positive projection means
        "concept" (all zeros for a degenerate probe, see :class:`DegenerateProbeWarning`).
    accuracies : np.ndarray
        ``(P,)`` accuracy on the held-out test split.
    intercepts : np.ndarray
        ``(P,)`` intercepts scaled to the unit vectors: ``x @ vectors[p] +
        intercepts[p]`` is the classifier's decision function divided by ``||w||``.
    n_train : np.ndarray
        ``(P,)`` number of training rows (both sides, after balancing).
    n_test : np.ndarray
        ``(P,)`` number of held-out rows.
    shifts : np.ndarray | None
        ``(P,)`` how far the concept side's mean lies from the counterexample side's mean
        along the unit vector, ``vectors[p] . (mean(pool[pos]) - mean(pool[neg]))`` over the
        task's balanced rows (training and held-out); 0 for a degenerate probe.
    averages : np.ndarray | None
        ``(G, d)`` float32: for each group of ``fit_cav_batch(..., averages=...)``, the mean of
        its tasks' unit vectors (a degenerate probe counts as zero); None when none was asked.

    Examples
    --------
    >>> b = CAVBatch(np.eye(2, dtype="float32"), np.ones(2), np.zeros(2),
    ...              np.array([70, 70]), np.array([30, 30]))
    >>> len(b)
    2
    """

    vectors: np.ndarray
    accuracies: np.ndarray
    intercepts: np.ndarray
    n_train: np.ndarray
    n_test: np.ndarray
    shifts: np.ndarray | None = None
    averages: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.vectors.shape[0])


# --------------------------------------------------------------------------------------------
# Validation and splitting
# --------------------------------------------------------------------------------------------

def _check_2d(array: Any, name: str) -> np.ndarray:
    # np.memmap is an ndarray subclass, and a RowStack reads its parts block by block: keep them as they
    # are so that nothing is read (or copied together) before it is needed.
    if not isinstance(array, (np.ndarray, RowStack)):
        array = np.asarray(array)
    if array.ndim != 2:
        raise InputShapeError(f"{name} must be a 2-D array (rows, features); got shape {array.shape}.")
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise InputShapeError(f"{name} must hold numbers; got dtype {array.dtype}.")
    return array


# --------------------------------------------------------------------------------------------
# Blockwise access to the pool
# --------------------------------------------------------------------------------------------

def _column_blocks(d: int, n_rows: int) -> list[tuple[int, int]]:
    width = max(1, min(d, _BLOCK_BYTES // (8 * max(1, n_rows))))
    return [(c0, min(d, c0 + width)) for c0 in range(0, d, width)]


def _read_block(pool: np.ndarray, rows: np.ndarray | slice, c0: int, c1: int,
                dtype: type = np.float64) -> np.ndarray:
    # A private C-contiguous copy of one column block of the selected rows, in the requested
    # precision; one copy where fancy indexing has made one already (see probes.gram.read_block).
    from probes.gram import read_block

    return read_block(pool, rows, c0, c1, dtype)


# --------------------------------------------------------------------------------------------
# Fitting
# --------------------------------------------------------------------------------------------

def fit_cav_batch(pool: np.ndarray, tasks: Sequence[CAVTask], *, method: str | Sequence[str] = "ridge",
                  alpha: float = 1.0, C: float = 1.0, test_size: float = 0.3, classifier: Any = None,
                  centre: bool = True, progress: bool = False,
                  averages: Sequence[Sequence[int]] | None = None,
                  shift_only: Sequence[int] | None = None) -> CAVBatch:
    """Fit one CAV per task on rows of a shared activation pool.

    Each task is balanced (the larger side subsampled to the size of the smaller), split into
    stratified train and held-out test rows (both seeded by ``task.seed``, see
    :func:`split_task`), fitted on the training rows only and scored on the test rows.

    **Batched dual solvers** (``classifier=None``; ``method`` picks the family, see
    :mod:`probes.cav_solvers`): ``"ridge"`` (``RidgeClassifier(alpha)``), ``"mean"`` (difference
    of class means), ``"logistic"`` (``LogisticRegression(C=C)``), ``"svm"`` (``LinearSVC(C=C)``,
    squared hinge) and ``"svm_hinge"`` (``LinearSVC(C=C, loss="hinge")``). The Gram matrix ``K =
    X X^T`` of every pool row used by any task is computed once (blockwise over the columns, so no
    float64 copy of the pool is ever made); each task is then solved on its training sub-Gram
    (size n_train, tasks of equal size together), the intercept and the test decisions come from
    ``K`` too, and all weight vectors are produced by one ``(P, N_union) @ (N_union, d)``
    product. Cost: two passes over the columns of the used rows, whatever the number of tasks.
    ``alpha`` (ridge) and ``C`` (logistic, SVM) must be > 0.

    **Any scikit-learn linear classifier** (``classifier=SGDClassifier(...)``,
    ``LogisticRegression()``, ``LinearSVC()``, ...): cloned per task, ``random_state`` set to
    ``task.seed`` when the estimator has that parameter, fitted on the training rows centred on
    their mean (the intercept is shifted back; this only matters for liblinear, which penalises
    the intercept), and its ``coef_`` read. One fit per task, so much slower.

    Parameters
    ----------
    pool : np.ndarray
        ``(N, d)`` activations (float32, possibly a ``np.memmap``; read blockwise).
    tasks : Sequence[CAVTask]
        The CAVs to fit; rows are indices into ``pool``.
    test_size : float, default=0.3
        Fraction of the balanced rows held out for the accuracy.
    method : str or sequence of str, default='ridge'
        The batched estimator family (:data:`probes.cav_solvers.METHODS`), or one per task: tasks of
        several families then share the Gram matrix and the pass that forms their weight vectors
        (each family's tasks are solved as they would be on their own).
    alpha : float, default=1.0
        Ridge penalty of ``method="ridge"``.
    C : float, default=1.0
        Inverse regularisation strength of ``"logistic"`` and the SVMs (scikit-learn's ``C``).
    classifier : Any, default=None
        ``None`` for a batched solver, or a scikit-learn linear classifier (template).
    centre : bool, default=True
        Fit a ``classifier`` on training rows centred on their mean (default; see above).
        ``False`` feeds the raw rows, as the original TCAV code did.
    progress : bool, default=False
        Show a progress bar.
    averages : sequence of sequence of int, optional
        Groups of tasks whose unit vectors are wanted only as their mean (``CAVBatch.averages``;
        batched solvers only). A Gram-matrix family's tasks in a group are then not formed one by
        one: their norms come from the Gram matrix and the group's mean is formed as one vector;
        their rows of ``vectors`` are left zero and their accuracies, shifts and intercepts NaN.
        This is how the robustness check's other estimator families cost one vector per concept
        instead of one per run.
    shift_only : sequence of int, optional
        Tasks whose held-out accuracy and intercept are not wanted, only their vector and shift (the
        null's random-vs-random CAVs). Difference-of-means tasks among them whose sides are shared
        with other such tasks (random sets) then get their shift from the sides' mean activations
        instead of each row's value, and NaN accuracies and intercepts. Others are fitted in full.

    Returns
    -------
    CAVBatch
        :class:`CAVBatch`, one row per task in task order: unit vectors oriented towards the
        concept, held-out accuracies, intercepts (scaled to the unit vectors) and split sizes.

    Raises
    ------
    InsufficientDataError
        A side has too few rows for balancing and a stratified split.
    PoolIndexError
        A task refers to a row outside the pool.
    NotALinearClassifierError
        ``classifier`` has no ``coef_`` after fitting.
    NonFiniteValuesError
        The used rows contain NaN or infinity.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> pool = rng.normal(size=(60, 500)).astype("float32")
    >>> tasks = [CAVTask(np.arange(20), np.arange(20, 40), seed=0),
    ...          CAVTask(np.arange(20, 40), np.arange(40, 60), seed=1)]
    >>> batch = fit_cav_batch(pool, tasks)
    >>> batch.vectors.shape, np.allclose(np.linalg.norm(batch.vectors, axis=1), 1)
    ((2, 500), True)
    """
    pool = _check_2d(pool, "pool")
    tasks = list(tasks)
    test_size = _check_test_size(test_size)
    n_rows, d = pool.shape
    splits = [split_task(t, test_size=test_size, n_rows=n_rows, where=f"task {i}")
              for i, t in enumerate(tasks)]
    if not splits:
        empty = np.zeros(0)
        return CAVBatch(np.zeros((0, d), np.float32), empty, empty.copy(),
                        np.zeros(0, np.int64), np.zeros(0, np.int64))
    if classifier is None:
        methods = [method] * len(tasks) if isinstance(method, str) else list(method)
        if len(methods) != len(tasks):
            raise ValueError(f"method names {len(methods)} estimator families for {len(tasks)} tasks; give one "
                             "name, or one per task.")
        for name in set(methods):
            if name not in cav_solvers.METHODS:
                raise ValueError(f"method must be one of {', '.join(cav_solvers.METHODS)}; got {name!r}.")
        for name, value in (("alpha", alpha), ("C", C)):
            if not isinstance(value, numbers.Real) or not float(value) > 0:
                raise ValueError(f"{name} must be a positive number; got {value!r}.")
        groups = [list(map(int, g)) for g in (averages or [])]
        if any(not 0 <= p < len(tasks) for g in groups for p in g) or any(not g for g in groups):
            raise ValueError("averages must be non-empty groups of task numbers (0 .. len(tasks) - 1).")
        only = sorted({int(p) for p in (shift_only or ())})
        if any(not 0 <= p < len(tasks) for p in only):
            raise ValueError("shift_only must hold task numbers (0 .. len(tasks) - 1).")
        from probes.dual_fit import fit_dual   # it builds on this module's CAVBatch and helpers

        return fit_dual(pool, splits, methods, float(alpha), float(C), progress, groups, shift_only=only)
    if averages:
        raise ValueError("averages= needs a batched solver (classifier=None).")
    return _fit_estimators(pool, splits, [t.seed for t in tasks], classifier, progress, centre)


def _sizes(splits: list[TaskSplit]) -> tuple[np.ndarray, np.ndarray]:
    return (np.array([len(s.train) for s in splits], dtype=np.int64),
            np.array([len(s.test) for s in splits], dtype=np.int64))


def _finish(vectors: np.ndarray, intercepts: np.ndarray, accuracies: np.ndarray,
            norms: np.ndarray, degenerate: np.ndarray, splits: list[TaskSplit]) -> None:
    """Normalise in place; degenerate probes get a zero vector and a constant decision."""
    safe = np.where(degenerate, 1.0, norms)
    vectors /= safe[:, None].astype(np.float32)
    intercepts /= safe
    if np.any(degenerate):
        bad = np.flatnonzero(degenerate)
        vectors[bad] = 0.0
        intercepts[bad] = 0.0
        for p in bad:   # a zero decision predicts "counterexample" for every test row
            accuracies[p] = np.mean(splits[p].y_test < 0)
        warnings.warn(f"{len(bad)} CAV(s) (tasks {bad[:10].tolist()}{'...' if len(bad) > 10 else ''}) "
                      "have a zero weight vector: the two sides' activations cannot be told apart "
                      "(identical or constant rows). Their vectors are set to zero.",
                      DegenerateProbeWarning, stacklevel=3)


def _fit_estimators(pool: np.ndarray, splits: list[TaskSplit], seeds: list[int], classifier: Any,
                    progress: bool, centre: bool = True) -> CAVBatch:
    d = pool.shape[1]
    n_tasks = len(splits)
    vectors = np.empty((n_tasks, d), dtype=np.float32)
    intercepts = np.zeros(n_tasks)
    accuracies = np.zeros(n_tasks)
    norms = np.zeros(n_tasks)
    shifts = np.zeros(n_tasks)
    for p in _progress_bar(range(n_tasks), enabled=progress, desc="CAVs", unit="cav"):
        s = splits[p]
        try:
            est = clone(classifier)
        except TypeError as exc:
            raise NotALinearClassifierError(
                f"classifier must be a scikit-learn estimator (with get_params); got {classifier!r}."
            ) from exc
        if "random_state" in est.get_params(deep=False):
            est.set_params(random_state=seeds[p])
        x_train = np.asarray(pool[s.train])
        if not np.all(np.isfinite(x_train)):
            raise NonFiniteValuesError(f"task {p}: the training rows contain NaN or infinite values.")
        # Fit on rows centred on their training mean, then shift the intercept back. For models
        # with an unpenalised intercept this is the same optimum; liblinear (LinearSVC,
        # solver="liblinear") penalises the intercept, which on raw post-ReLU activations (large
        # common offset) drags the boundary away and ruins accuracy.
        x_mean = x_train.mean(axis=0, dtype=np.float64) if centre else np.zeros(d)
        x_centred = (x_train - x_mean).astype(x_train.dtype, copy=False)
        est.fit(x_centred, (s.y_train > 0).astype(int))   # 1 = concept, 0 = counterexample
        w, b = _linear_parameters(est, d)
        b -= float(w @ x_mean)
        # Positive decision means classes_[1]; flip if that is not the concept label.
        classes = getattr(est, "classes_", None)
        if classes is not None and len(classes) == 2 and classes[1] != 1:
            w, b = -w, -b
        decision = np.asarray(pool[s.test], dtype=np.float64) @ w + b
        accuracies[p] = np.mean((decision > 0) == (s.y_test > 0))
        labels = np.concatenate([s.y_train, s.y_test]) > 0
        f_all = np.asarray(pool[np.concatenate([s.train, s.test])], dtype=np.float64) @ w
        shifts[p] = f_all[labels].mean() - f_all[~labels].mean()
        norms[p] = np.linalg.norm(w)
        vectors[p] = w
        intercepts[p] = b
    degenerate = ~(norms > 0) | ~np.isfinite(norms)
    _finish(vectors, intercepts, accuracies, norms, degenerate, splits)
    shifts = np.where(degenerate, 0.0, shifts / np.where(degenerate, 1.0, norms))
    return CAVBatch(vectors, accuracies, intercepts, *_sizes(splits), shifts=shifts)


def _linear_parameters(est: Any, d: int) -> tuple[np.ndarray, float]:
    coef = getattr(est, "coef_", None)
    if coef is None:
        raise NotALinearClassifierError(
            f"{type(est).__name__} has no coef_ after fitting, so it defines no direction; use a "
            "linear classifier such as SGDClassifier, LogisticRegression, LinearSVC or "
            "RidgeClassifier (or classifier=None for the default ridge solver).")
    coef = np.asarray(coef, dtype=np.float64)
    if coef.ndim == 2 and coef.shape[0] == 1:
        coef = coef[0]
    if coef.shape != (d,):
        raise NotALinearClassifierError(
            f"{type(est).__name__}.coef_ has shape {coef.shape}; a binary linear classifier on "
            f"{d} features should give (1, {d}) or ({d},).")
    intercept = np.ravel(np.asarray(getattr(est, "intercept_", 0.0), dtype=np.float64))
    return coef, float(intercept[0]) if intercept.size else 0.0


# --------------------------------------------------------------------------------------------
# Sensitivities and TCAV scores
# --------------------------------------------------------------------------------------------

def sensitivities(gradients: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Directional derivatives ``S[i, p] = gradients[i] . vectors[p]`` for all pairs at once.

    One matrix product (float32 blocks summed in float64, blockwise over the features so that memmapped inputs are
    read in bounded pieces). ``vectors`` may be ``(P, d)`` (result ``(n, P)``) or a single
    ``(d,)`` vector (result ``(n,)``). Exactly-zero gradients give exactly-zero sensitivities.

    Examples
    --------
    >>> sensitivities(np.array([[1.0, 0.0], [0.0, 0.0]]), np.array([[1.0, 0.0], [0.6, 0.8]])).round(6)
    array([[1. , 0.6],
           [0. , 0. ]])
    """
    gradients = _check_2d(gradients, "gradients")
    single = np.ndim(vectors) == 1
    vecs = _check_2d(np.asarray(vectors)[None, :] if single else vectors, "vectors")
    n, d = gradients.shape
    if vecs.shape[1] != d:
        raise InputShapeError(f"gradients have {d} features but vectors have {vecs.shape[1]}.")
    out = np.zeros((n, vecs.shape[0]))
    # float32 products (the inputs are float32 activations and gradients), summed in float64.
    for c0, c1 in _column_blocks(d, n + vecs.shape[0]):
        out += _read_block(gradients, slice(None), c0, c1, np.float32) @ \
            _read_block(vecs, slice(None), c0, c1, np.float32).T
    return out[:, 0] if single else out


def tcav_scores(sens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """TCAV scores from sensitivities: (fraction with S > 0, fraction with S exactly 0).

    Computed over axis 0 (the examples). Exactly-zero sensitivities (dead units, zero
    gradients) are *not* counted as positive; their fraction is returned so that they can be
    seen rather than silently biasing the score.

    Examples
    --------
    >>> pos, zero = tcav_scores(np.array([[1.0, -1.0], [0.0, 2.0], [3.0, 0.0], [-1.0, 4.0]]))
    >>> pos.tolist(), zero.tolist()
    ([0.5, 0.5], [0.25, 0.25])
    """
    sens = np.asarray(sens)
    if sens.ndim == 0 or sens.shape[0] == 0:
        raise InsufficientDataError("tcav_scores needs at least one example (sens has shape "
                                    f"{sens.shape}).")
    if not np.all(np.isfinite(sens)):
        raise NonFiniteValuesError("sensitivities contain NaN or infinite values.")
    return np.mean(sens > 0, axis=0), np.mean(sens == 0, axis=0)


def __getattr__(name: str) -> Any:
    # LinearProbe lives in probes.linear_probe (imported lazily: it imports this module).
    if name == "LinearProbe":
        from probes.linear_probe import LinearProbe

        return LinearProbe
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
