"""Regression concept vectors (RCV; Graziani et al., iMIMIC 2018 and *Concept Attribution*, 2020).

A continuous concept measure ``c(x)`` (e.g. the GLCM contrast of the nuclei) is regressed on a
layer's activations, ``c ≈ w·a(x) + b``; the RCV is ``v = w / ‖w‖``, the direction in which the
concept grows. See ``methods.md`` §4.

How the regression is done, and why:

* **Ridge in the dual.** Layers are wide (``d`` up to a few 10^5) and concept sets small
  (``n`` of 10^1–10^3). Everything is computed from the ``n × n`` Gram matrix ``K = Xc Xcᵀ`` of the
  centred activations, accumulated in float64 over column chunks of ``X`` (which may be a float32
  ``np.memmap``). Neither a ``d × d`` matrix nor a float64 copy of ``X`` is ever formed; ``X`` is read
  twice (Gram matrix, then coefficients). One eigendecomposition of ``K`` gives the ridge solution
  for every penalty at once. The dual is used whatever the shape: it costs ``O(n² d)`` time and
  ``O(n²)`` memory, which suits ``n`` up to a few thousand. Pooled activations with ``n ≫ 10^4``
  would be better served by a primal solver (not implemented).
* **Penalty by closed-form leave-one-out.** For ridge with an unpenalised intercept the hat matrix is
  ``H = 11ᵀ/n + K (K + αI)⁻¹``, and the leave-one-out residual is exactly ``e_i / (1 − H_ii)``;
  the penalty minimising the mean squared LOO residual is chosen from a grid.
* **Held-out quality.** ``r2_cv_`` comes from an *outer* k-fold cross-validation; inside each
  training fold the penalty is chosen by LOO on that fold only, so the held-out fold never
  influences any choice. ``r2_cv_`` is the R² of the *pooled* out-of-fold predictions (more stable
  than a mean of per-fold R² for small ``n``); the per-fold values are in ``r2_folds_``. The
  training R² is never reported.
* **Direction stability.** ``fold_vectors_`` are the unit RCVs fitted on each training fold and
  ``fold_angle_deg_`` the mean pairwise angle between them. Training folds overlap, so even a
  regression on pure noise gives an angle *below* 90°: about ``arccos((k-2)/(k-1))`` (41.4° for
  k = 5, 60° for k = 3) in wide layers. That reference is stored in ``fold_angle_noise_deg_``;
  a real concept direction should sit far below it.

The target is standardised (``coef_`` is in standard deviations of the concept per activation unit)
and predictions are returned in the original units. Non-finite concept measures must be dropped by
the caller (pyradiomics yields NaN for constant or tiny regions): this module refuses them rather
than silently guessing.

For convolutional layers, :func:`pool_activations` and :func:`pool_gradients` apply global average
pooling consistently to activations and to gradients.

Why one module of about 560 lines: :class:`RegressionProbe` and :func:`shuffled_fits` must draw the
same folds and reuse the same Gram matrix and spectra, so the estimator, its null and the chunked
linear algebra they share stay together.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.model_selection import KFold
from sklearn.utils import check_random_state
from sklearn.utils.validation import column_or_1d

from probes.errors import InputShapeError, InsufficientDataError
from probes.estimator_input import check_features

__all__ = ["RegressionProbe", "shuffled_r2", "pool_activations", "pool_gradients", "default_alphas"]

# Each float64 chunk of X holds at most this many bytes; bounds memory whatever d is.
_CHUNK_BYTES = 32 * 2**20
_MIN_EXAMPLES = 4


def default_alphas(trace_over_n: float) -> np.ndarray:
    """Default ridge penalties: ``trace(K)/n · logspace(-4, 3, 15)``.

    ``trace(K)/n`` is the total variance of the activations (the mean eigenvalue of the Gram
    matrix), so the grid follows the scale of the layer: multiplying every activation by 10 moves
    the chosen penalty by 100 and leaves the fitted direction unchanged.

    Examples
    --------
    >>> default_alphas(2.0)[[0, -1]]
    array([2.e-04, 2.e+03])
    """
    scale = float(trace_over_n) if trace_over_n > 0 else 1.0
    return scale * np.logspace(-4, 3, 15)


# --------------------------------------------------------------------------------------------
# Input checks and chunked linear algebra
# --------------------------------------------------------------------------------------------

def _as_2d(X, name: str = "X") -> np.ndarray:
    # np.memmap is an ndarray subclass: keep it as is so nothing is read into memory here.
    X = X if isinstance(X, np.ndarray) else np.asarray(X)
    if X.ndim != 2:
        raise InputShapeError(
            f"{name} must be 2-D (n_examples, n_features); got shape {X.shape}. Flatten the layer "
            "with X.reshape(len(X), -1) or pool it with probes.regression.pool_activations.")
    if not np.issubdtype(X.dtype, np.number) or np.issubdtype(X.dtype, np.complexfloating):
        raise InputShapeError(f"{name} must hold real numbers; got dtype {X.dtype}.")
    return X


def _check_y(y, n: int) -> np.ndarray:
    y = np.asarray(y, dtype=np.float64)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise InputShapeError(f"y must be 1-D (one concept measure per example); got shape {y.shape}.")
    if len(y) != n:
        raise InputShapeError(f"X has {n} rows but y has {len(y)} values; they must match.")
    bad = np.flatnonzero(~np.isfinite(y))
    if bad.size:
        raise InputShapeError(
            f"y contains {bad.size} NaN or infinite concept measure(s) (indices {bad[:10].tolist()}"
            f"{'...' if bad.size > 10 else ''}). Drop those examples from X and y before fitting: a "
            "measure that could not be computed (e.g. a constant or tiny region) carries no information.")
    return y


def _check_n(n: int, cv: int) -> None:
    if cv < 2:
        raise InsufficientDataError(f"cv must be at least 2 folds; got {cv}.")
    needed = max(_MIN_EXAMPLES, cv)
    if n < needed:
        raise InsufficientDataError(
            f"{n} example(s) given (n_samples = {n}); a regression concept vector with {cv}-fold "
            f"cross-validation needs at least {needed} (and far more, e.g. 30+, for a meaningful R²).")


def _check_y_varies(y: np.ndarray) -> tuple[float, float]:
    scale = float(np.max(np.abs(y))) if y.size else 0.0
    if scale > 1e100:
        # Squaring values near 1e300 overflows float64: the spread of y / max|y|, scaled back. Only there,
        # so that ordinary measures keep their bits.
        z = y / scale
        mean, std = scale * float(z.mean()), scale * float(z.std())
    else:
        mean, std = float(y.mean()), float(y.std())
    if not std > 1e-12 * max(1.0, abs(mean)):
        raise InsufficientDataError(
            f"the concept measure is constant (every value is {mean:g}): R² is undefined and there is no "
            "direction in which it grows. Use a measure that varies across the images.")
    return mean, std


def _column_chunks(n: int, d: int) -> list[slice]:
    step = max(1, _CHUNK_BYTES // (8 * max(n, 1)))
    return [slice(j, min(j + step, d)) for j in range(0, d, step)]


def _gram(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column means and the Gram matrix of the centred X, in float64, one column chunk at a time.

    Every chunk holds all rows of its columns, so its column means are exact and centring happens
    before the products (no cancellation from large activation means).
    """
    n, d = X.shape
    mean = np.empty(d)
    K = np.zeros((n, n))
    bad_rows = np.zeros(n, dtype=bool)
    for cols in _column_chunks(n, d):
        # A copy: np.asarray would return a view of a float64 X, and centring it would change the
        # caller's array (or fail on a read-only one).
        block = np.array(X[:, cols], dtype=np.float64)
        finite = np.isfinite(block)
        if not finite.all():
            bad_rows |= ~finite.all(axis=1)
            continue
        mean[cols] = block.mean(axis=0)
        block -= mean[cols]
        K += block @ block.T
    if bad_rows.any():
        rows = np.flatnonzero(bad_rows)
        raise InputShapeError(
            f"X contains NaN or infinite activations in {rows.size} row(s) (indices {rows[:10].tolist()}"
            f"{'...' if rows.size > 10 else ''}). Drop those examples, or check the model and inputs.")
    return mean, K


def _project(X: np.ndarray, mean: np.ndarray, A: np.ndarray) -> np.ndarray:
    """``(X - mean)ᵀ A`` of shape (d, m), computed over column chunks (second and last pass over X)."""
    n, d = X.shape
    out = np.empty((d, A.shape[1]))
    for cols in _column_chunks(n, d):
        block = np.array(X[:, cols], dtype=np.float64)   # a copy, as in _gram
        block -= mean[cols]
        out[cols] = block.T @ A
    return out


# --------------------------------------------------------------------------------------------
# Ridge on one training set, from the Gram matrix
# --------------------------------------------------------------------------------------------

_BLAS_CONTROLLER = None


def _eigh(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.linalg.eigh`` with one BLAS thread for small matrices.

    Multi-threaded OpenBLAS spends most of its time synchronising on a few-hundred-row problem:
    measured here, 415 ms for a 240×240 eigendecomposition on 2 busy cores against 5 ms on one
    thread. Large Gram matrices keep every thread.
    """
    global _BLAS_CONTROLLER
    if matrix.shape[0] > 2000:
        return np.linalg.eigh(matrix)
    if _BLAS_CONTROLLER is None:
        from threadpoolctl import ThreadpoolController

        _BLAS_CONTROLLER = ThreadpoolController()
    with _BLAS_CONTROLLER.limit(limits=1, user_api="blas"):
        return np.linalg.eigh(matrix)


@dataclass
class _Spectrum:
    """Eigendecomposition of the centred Gram matrix of one training set."""

    idx: np.ndarray          # rows of the full data set that form this training set
    evals: np.ndarray        # (n_s,) clipped at 0
    evecs: np.ndarray        # (n_s, n_s)
    evecs_sq: np.ndarray     # (n_s, n_s) squared, for the hat-matrix diagonal

    @classmethod
    def of(cls, G: np.ndarray, idx: np.ndarray) -> "_Spectrum":
        Gs = G[np.ix_(idx, idx)]
        # Re-centre on this subset: (I - J/m) G (I - J/m) is the Gram matrix of X[idx] centred on its
        # own column means, which is what an intercept fitted on this subset implies.
        Gs = Gs - Gs.mean(axis=0, keepdims=True)
        Gs = Gs - Gs.mean(axis=1, keepdims=True)
        Gs = (Gs + Gs.T) / 2
        evals, evecs = _eigh(Gs)
        return cls(idx, np.clip(evals, 0.0, None), evecs, evecs**2)

    def loo_alpha(self, y_s: np.ndarray, alphas: np.ndarray) -> tuple[int, np.ndarray]:
        """Index of the penalty with the smallest mean squared LOO residual, and every PRESS value."""
        m = len(y_s)
        yc = y_s - y_s.mean()
        proj = self.evecs.T @ yc                                    # (m,)
        # Written with α/(s+α) rather than 1 − s/(s+α) so that nothing cancels at small α.
        shrink = alphas[:, None] / (self.evals[None, :] + alphas[:, None])   # (A, m)
        resid = (shrink * proj[None, :]) @ self.evecs.T                 # (A, m) = (I − H) y
        one_minus_h = shrink @ self.evecs_sq.T - 1.0 / m                # (A, m) diag(I − H)
        # 1 − H_ii → 0 only for an (almost) interpolating fit; the floor keeps such penalties losing.
        one_minus_h = np.maximum(one_minus_h, 1e-12)
        press = np.mean((resid / one_minus_h) ** 2, axis=1)
        return int(np.argmin(press)), press

    def dual_coef(self, y_s: np.ndarray, alpha: float) -> np.ndarray:
        """Dual weights ``a`` with ``w = Xcᵀ a``; they sum to zero (the intercept absorbs the mean)."""
        yc = y_s - y_s.mean()
        a = self.evecs @ ((self.evecs.T @ yc) / (self.evals + alpha))
        return a - a.mean()   # exact in theory; removes rounding so Xᵀa = Xcᵀa

    def predict(self, G: np.ndarray, test: np.ndarray, y_s: np.ndarray, a: np.ndarray) -> np.ndarray:
        """Predictions for rows ``test`` in the units of ``y_s``, from the Gram matrix alone."""
        # (x_t − m_s)·Xc_sᵀa with Σa = 0 reduces to G[t, s] a − mean_r G[r, s] a over r in s.
        Ga = G[:, self.idx] @ a
        return y_s.mean() + Ga[test] - Ga[self.idx].mean()


class _CVPlan:
    """Outer folds and their spectra, computed once and reused (fit and every shuffle)."""

    def __init__(self, G: np.ndarray, cv: int, rng: np.random.RandomState):
        n = G.shape[0]
        self.folds = list(KFold(n_splits=cv, shuffle=True, random_state=rng).split(np.zeros((n, 1))))
        self.spectra = [_Spectrum.of(G, train) for train, _ in self.folds]
        self.G = G

    def run(self, y: np.ndarray, alphas: np.ndarray) -> tuple[np.ndarray, np.ndarray, list, list]:
        """Out-of-fold predictions, per-fold R², dual weights and chosen penalties for target y."""
        oof = np.empty_like(y)
        r2s, duals, chosen = [], [], []
        for (train, test), spec in zip(self.folds, self.spectra):
            k, _ = spec.loo_alpha(y[train], alphas)
            a = spec.dual_coef(y[train], alphas[k])
            oof[test] = spec.predict(self.G, test, y[train], a)
            r2s.append(_r2(y[test], oof[test]))
            duals.append(a)
            chosen.append(float(alphas[k]))
        return oof, np.asarray(r2s), duals, chosen


def _r2(y: np.ndarray, pred: np.ndarray) -> float:
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    if ss_tot == 0.0:
        return float("nan")  # a held-out fold with one constant value has no variance to explain
    return 1.0 - float(np.sum((y - pred) ** 2)) / ss_tot


def _resolve_alphas(alphas, K: np.ndarray) -> np.ndarray:
    if alphas is None:
        return default_alphas(np.trace(K) / K.shape[0])
    alphas = np.atleast_1d(np.asarray(alphas, dtype=np.float64))
    if alphas.ndim != 1 or alphas.size == 0 or not np.all(alphas > 0) or not np.all(np.isfinite(alphas)):
        raise InputShapeError(f"alphas must be a non-empty 1-D sequence of positive numbers; got {alphas!r}.")
    return alphas


def _mean_pairwise_angle_deg_from_cos(cos: np.ndarray) -> float:
    iu = np.triu_indices(len(cos), 1)
    return float(np.degrees(np.arccos(np.clip(cos[iu], -1.0, 1.0))).mean())


def _mean_pairwise_angle_deg(V: np.ndarray) -> float:
    return _mean_pairwise_angle_deg_from_cos(V @ V.T)


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------

class RegressionProbe(RegressorMixin, BaseEstimator):
    """Ridge regression of a continuous concept measure on layer activations (an RCV).

    Parameters
    ----------
    alphas : sequence of float or None
        Ridge penalties to choose from by leave-one-out, in the units of scikit-learn's
        ``Ridge(alpha=...)`` for standardised ``y``. ``None``: :func:`default_alphas` of
        ``trace(K)/n``, which adapts to the scale of the activations.
    cv : int
        Number of outer folds for the held-out R² and the fold vectors.
    random_state : int, RandomState or None
        Seeds the shuffled outer folds.

    Attributes
    ----------
    coef_ : (d,) float64 — weights in standard deviations of ``y`` per activation unit.
    intercept_ : float — in standardised units: ``(y − y_mean_)/y_scale_ ≈ X @ coef_ + intercept_``.
    vector_ : (d,) float64 — ``coef_ / ‖coef_‖``, the direction in which the concept grows.
    alpha_ : float — penalty chosen by leave-one-out on all the data.
    alphas_ : (A,) — the grid searched.
    loo_mse_ : (A,) — mean squared LOO residual (standardised units) for each penalty, all data.
    r2_cv_ : float — R² of the pooled out-of-fold predictions (the quality to report).
    r2_folds_ : (cv,) — R² within each held-out fold (NaN where that fold's y is constant).
    fold_alphas_ : (cv,) — the penalty chosen inside each training fold.
    fold_vectors_ : (cv, d) — unit RCV fitted on each training fold.
    fold_angle_deg_ : float — mean pairwise angle between the fold vectors.
    fold_angle_noise_deg_ : float — the angle expected for a pure-noise target given how much the
        training folds overlap (mean of ``arccos(|S_i ∩ S_j| / sqrt(|S_i||S_j|))``).
    oof_predictions_ : (n,) — out-of-fold predictions in the units of ``y``.
    x_mean_ : (d,) — column means of the training activations.
    y_mean_, y_scale_ : float — mean and standard deviation used to standardise ``y``.
    n_features_in_ : int.

    A scikit-learn regressor (``RegressorMixin``): ``predict`` gives the measure in the units of
    ``y`` and ``score(X, y)`` the R² of those predictions; pass held-out rows (the training R² is
    not a quality). It works in a ``Pipeline`` and with ``cross_val_score``, and passes
    ``check_estimator`` (``tests/test_estimator_checks.py``).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((60, 500)).astype("float32")
    >>> w = rng.standard_normal(500)
    >>> y = X @ w + 0.1 * rng.standard_normal(60)
    >>> probe = RegressionProbe(random_state=0).fit(X, y)
    >>> probe.vector_.shape, bool(probe.vector_ @ w > 0)
    ((500,), True)
    """

    def __init__(self, alphas: Sequence[float] | None = None, cv: int = 5, random_state=None):
        self.alphas = alphas
        self.cv = cv
        self.random_state = random_state

    def fit(self, X, y) -> "RegressionProbe":
        """Fit the RCV on activations ``X`` (n, d) and concept measures ``y`` (n,); returns ``self``."""
        X = check_features(self, X, reset=True)
        n, d = X.shape
        if y is None:
            raise InputShapeError("RegressionProbe.fit requires y to be passed, but the target y is None: "
                                  "give one concept measure per example.")
        try:
            y = column_or_1d(y, warn=True)   # a (n, 1) column is accepted with a DataConversionWarning
        except ValueError as exc:
            raise InputShapeError(f"y must be 1-D (one concept measure per example): {exc}") from None
        y = _check_y(y, n)
        _check_n(n, self.cv)
        y_mean, y_scale = _check_y_varies(y)
        ys = (y - y_mean) / y_scale
        rng = check_random_state(self.random_state)

        x_mean, G = _gram(X)
        alphas = _resolve_alphas(self.alphas, G)

        plan = _CVPlan(G, self.cv, rng)
        oof, r2_folds, duals, fold_alphas = plan.run(ys, alphas)

        full = _Spectrum.of(G, np.arange(n))
        k, press = full.loo_alpha(ys, alphas)
        a_full = full.dual_coef(ys, alphas[k])

        # One more pass over X gives the final coefficients and every fold vector together.
        A = np.zeros((n, len(duals) + 1))
        for j, ((train, _), a) in enumerate(zip(plan.folds, duals)):
            A[train, j] = a
        A[:, -1] = a_full
        W = _project(X, x_mean, A)

        fold_vectors = W[:, :-1].T.copy()
        norms = np.linalg.norm(fold_vectors, axis=1, keepdims=True)
        fold_vectors = np.divide(fold_vectors, norms, out=np.zeros_like(fold_vectors), where=norms > 0)
        coef = W[:, -1].copy()
        coef_norm = float(np.linalg.norm(coef))

        sizes = np.array([len(tr) for tr, _ in plan.folds], dtype=float)
        overlap = np.array([[len(np.intersect1d(a_, b_)) for b_, _ in plan.folds] for a_, _ in plan.folds])
        noise_cos = overlap / np.sqrt(np.outer(sizes, sizes))

        self.coef_ = coef
        self.intercept_ = float(-x_mean @ coef)
        self.vector_ = coef / coef_norm if coef_norm > 0 else coef
        self.alpha_ = float(alphas[k])
        self.alphas_ = alphas
        self.loo_mse_ = press
        self.r2_cv_ = _r2(ys, oof)
        self.r2_folds_ = r2_folds
        self.fold_alphas_ = np.asarray(fold_alphas)
        self.fold_vectors_ = fold_vectors
        self.fold_angle_deg_ = _mean_pairwise_angle_deg(fold_vectors)
        self.fold_angle_noise_deg_ = _mean_pairwise_angle_deg_from_cos(noise_cos)
        self.oof_predictions_ = y_mean + y_scale * oof
        self.x_mean_ = x_mean
        self.y_mean_ = y_mean
        self.y_scale_ = y_scale
        self.n_features_in_ = d
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "coef_"):
            from sklearn.exceptions import NotFittedError
            raise NotFittedError("This RegressionProbe is not fitted yet; call fit(X, y) first.")

    def predict(self, X) -> np.ndarray:
        """Predicted concept measure, in the original units of ``y``, for activations ``X`` (m, d).

        Examples
        --------
        >>> rng = np.random.default_rng(1)
        >>> X = rng.standard_normal((40, 30)); y = 3 * X[:, 0] + 5
        >>> p = RegressionProbe(random_state=0).fit(X, y)
        >>> bool(np.corrcoef(p.predict(X), y)[0, 1] > 0.99)
        True
        """
        self._check_fitted()
        X = check_features(self, X, reset=False, finite=True)
        out = np.empty(X.shape[0])
        # Row chunks: X @ coef_ would otherwise upcast a whole float32 memmap to float64 at once.
        step = max(1, _CHUNK_BYTES // (8 * max(X.shape[1], 1)))
        for i in range(0, X.shape[0], step):
            out[i:i + step] = np.asarray(X[i:i + step], dtype=np.float64) @ self.coef_
        return self.y_mean_ + self.y_scale_ * (out + self.intercept_)


def shuffled_fits(X, y, n_shuffles: int = 20, *, cv: int = 5, random_state=None,
                  alphas: Sequence[float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """RCVs fitted on randomly permuted concept measures: the null distribution of R² and directions.

    Uses exactly the procedure of :class:`RegressionProbe` (same outer folds for the same
    ``random_state``, penalty chosen by LOO inside each training fold, pooled out-of-fold R²; the
    final vector fitted on all rows with the LOO penalty). The Gram matrix, the eigendecomposition
    of every training fold and of the full data are computed once and reused for every
    permutation, so each shuffle costs ``O(cv · n²)`` and all vectors come from one more pass
    over ``X``. The R² values should be close to 0 (slightly negative on average).

    Returns
    -------
    tuple[np.ndarray, np.ndarray]
        ``(r2, vectors)``: held-out R² per shuffle ``(n_shuffles,)`` and unit RCVs ``(n_shuffles, d)``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((50, 300)); y = X[:, 0]
    >>> r2, vectors = shuffled_fits(X, y, n_shuffles=10, random_state=0)
    >>> vectors.shape, bool(abs(r2.mean()) < 0.2)
    ((10, 300), True)
    """
    X = _as_2d(X)
    n = X.shape[0]
    y = _check_y(y, n)
    _check_n(n, cv)
    y_mean, y_scale = _check_y_varies(y)
    if n_shuffles < 1:
        raise InputShapeError(f"n_shuffles must be at least 1; got {n_shuffles}.")
    ys = (y - y_mean) / y_scale
    rng = check_random_state(random_state)
    x_mean, G = _gram(X)
    alphas_ = _resolve_alphas(alphas, G)
    plan = _CVPlan(G, cv, rng)   # folds drawn first: identical to RegressionProbe's for the same seed
    full = _Spectrum.of(G, np.arange(n))
    r2 = np.empty(n_shuffles)
    duals = np.empty((n, n_shuffles))
    for s in range(n_shuffles):
        perm = ys[rng.permutation(n)]
        oof, _, _, _ = plan.run(perm, alphas_)
        r2[s] = _r2(perm, oof)
        k, _ = full.loo_alpha(perm, alphas_)
        duals[:, s] = full.dual_coef(perm, alphas_[k])
    W = _project(X, x_mean, duals).T
    norms = np.linalg.norm(W, axis=1, keepdims=True)
    return r2, np.divide(W, norms, out=np.zeros_like(W), where=norms > 0)


def shuffled_r2(X, y, n_shuffles: int = 20, *, cv: int = 5, random_state=None,
                alphas: Sequence[float] | None = None) -> np.ndarray:
    """Held-out R² of regressions on randomly permuted concept measures (see :func:`shuffled_fits`).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((50, 300)); y = X[:, 0]
    >>> null = shuffled_r2(X, y, n_shuffles=10, random_state=0)
    >>> null.shape, bool(abs(null.mean()) < 0.2)
    ((10,), True)
    """
    return shuffled_fits(X, y, n_shuffles, cv=cv, random_state=random_state, alphas=alphas)[0]


def pool_activations(acts: np.ndarray) -> np.ndarray:
    """Global average pooling ``(n, *spatial, C) -> (n, C)``: the mean over all axes but the first and last.

    Channels-last layout (Keras' default). 2-D input ``(n, d)`` is returned unchanged. Pooling is the
    2020 Concept Attribution paper's remedy for very wide convolutional layers: the regression then
    sees C features instead of H·W·C. Gradients must be pooled with :func:`pool_gradients`.

    Examples
    --------
    >>> pool_activations(np.ones((2, 4, 4, 3))).shape
    (2, 3)
    """
    return _reduce_spatial(acts, "activations", np.mean)


def pool_gradients(grads: np.ndarray) -> np.ndarray:
    """Gradient w.r.t. the pooled activation: the SUM over the spatial axes, ``(n, ..., C) -> (n, C)``.

    Why a sum and not a mean: moving the pooled activation by ``v`` means moving every spatial
    position by ``v`` (that is what changes the mean by exactly ``v``); the target then changes by
    ``Σ_positions g_p · v = (Σ_p g_p) · v``. So ``pool_gradients(g) · v`` is the directional
    derivative along ``v`` in the pooled space, consistent with :func:`pool_activations`. Only the
    scale differs from a mean (by H·W), but scale matters when sensitivities are compared or
    combined across layers. 2-D input ``(n, d)`` is returned unchanged.

    Examples
    --------
    >>> pool_gradients(np.ones((2, 4, 4, 3)))[0]
    array([16., 16., 16.])
    """
    return _reduce_spatial(grads, "gradients", np.sum)


def _reduce_spatial(x: np.ndarray, what: str, reduce: Callable) -> np.ndarray:
    """``reduce`` over every axis between the first (examples) and the last (channels)."""
    x = np.asarray(x) if not isinstance(x, np.ndarray) else x
    if x.ndim < 2:
        raise InputShapeError(f"{what} must have shape (n, ..., channels); got {x.shape}.")
    if x.ndim == 2:
        return x
    # Accumulate at least in float32 (float16 sums over 10^4 positions lose most digits).
    acc = np.result_type(x.dtype, np.float32)
    return np.asarray(reduce(x, axis=tuple(range(1, x.ndim - 1)), dtype=acc))
