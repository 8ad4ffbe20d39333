"""Dual solvers for the linear concept classifiers, batched over many CAVs at once.

Every CAV of a layer is a linear classifier trained on a few dozen rows of one shared activation
pool whose rows are far wider (d ~ 10^4..10^5) than they are many. By the representer theorem the
weight vector of each classifier family below lies in the span of its training rows, ``w = X^T
beta``, so each one is solved on its training sub-Gram matrix ``K = X X^T`` (n x n) and never
touches a d-wide array. :func:`probes.linear.fit_cav_batch` computes the Gram matrix once and
calls one function of this module for every task (grouped by training size, so tasks of equal
size are solved together with batched linear algebra), then forms every ``w`` in one product.

Each solver takes ``K`` of shape ``(P, n, n)`` (the sub-Gram of each task's training rows) and
labels ``y`` of shape ``(P, n)`` in {-1, +1} (+1 = concept), and returns ``(beta, b)``:
dual coefficients ``(P, n)`` and intercepts ``(P,)`` such that the decision function on a row
``x`` is ``sum_j beta_j <x_j, x> + b``. The families (``METHODS``):

* ``"ridge"`` -- L2-regularised least squares on +-1 targets with an unpenalised intercept
  (``sklearn.linear_model.RidgeClassifier(alpha)``).
* ``"mean"`` -- the difference of the class means (FastCAV; the *pattern* of Haufe et al. and
  Pahde et al.), the limit of ridge and of logistic regression under infinite regularisation.
* ``"logistic"`` -- L2 logistic regression with an unpenalised intercept
  (``sklearn.linear_model.LogisticRegression(C=C)``), by batched damped Newton steps.
* ``"svm"`` / ``"svm_hinge"`` -- linear SVM with squared hinge or hinge loss, with liblinear's
  penalised intercept (``sklearn.svm.LinearSVC(C=C, loss=...)``, ``intercept_scaling=1``), by
  batched dual coordinate descent (Hsieh et al., ICML 2008), the algorithm liblinear uses.

Examples
--------
>>> rng = np.random.default_rng(0)
>>> x = rng.normal(size=(20, 50)); x[:10, 0] += 3.0
>>> y = np.r_[np.ones(10), -np.ones(10)]
>>> k = (x @ x.T)[None]
>>> beta, b = solve("logistic", k, y[None], C=1.0)
>>> w = beta[0] @ x
>>> bool(w[0] > np.abs(w[1:]).max())
True
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from probes.random_state import as_generator

__all__ = ["METHODS", "solve", "solve_ridge", "solve_mean", "solve_logistic", "solve_svm"]

#: CAV estimator families solved in the dual (see the module docstring).
METHODS = ("ridge", "mean", "logistic", "svm", "svm_hinge")


def _centre(k: np.ndarray) -> np.ndarray:
    """Double centring H K H of each Gram matrix (H = I - 11^T/n): the Gram matrix of rows centred
    on their own mean, which is what an unpenalised intercept amounts to for a squared loss."""
    row = k.mean(axis=1)
    return k - row[:, None, :] - row[:, :, None] + row.mean(axis=1)[:, None, None]


def solve_ridge(k: np.ndarray, y: np.ndarray, *, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Ridge least squares: ``min ||Xw + b - y||^2 + alpha ||w||^2`` (intercept unpenalised).

    Examples
    --------
    >>> k = np.eye(4)[None] * 2.0; y = np.array([[1.0, 1.0, -1.0, -1.0]])
    >>> beta, b = solve_ridge(k, y, alpha=2.0)
    >>> beta.round(3).tolist(), b.round(3).tolist()
    ([[0.25, 0.25, -0.25, -0.25]], [0.0])
    """
    p, n, _ = k.shape
    k_c = _centre(k)
    y_mean = y.mean(axis=1)
    lhs, rhs = k_c + alpha * np.eye(n)[None], (y - y_mean[:, None])[..., None]
    try:
        a = np.linalg.solve(lhs, rhs)[..., 0]
    except np.linalg.LinAlgError:
        # Rounding can make K_c + alpha I numerically singular when alpha is tiny relative to the
        # activations' scale; least squares still returns the ridge solution then.
        a = np.stack([np.linalg.lstsq(m, r[:, 0], rcond=None)[0] for m, r in zip(lhs, rhs)])
    beta = a - a.mean(axis=1, keepdims=True)   # beta sums to zero: w = X_c^T a = X^T beta
    b = y_mean - np.einsum("pij,pj->p", k, beta) / n
    return beta, b


def mean_coefficients(y: np.ndarray) -> np.ndarray:
    """The dual coefficients of the difference of class means: ``1/n+`` on each concept row, ``-1/n-``
    on each counterexample row (they need no Gram matrix).

    Examples
    --------
    >>> mean_coefficients(np.array([1.0, 1.0, -1.0])).tolist()
    [0.5, 0.5, -1.0]
    """
    pos = y > 0
    return np.where(pos, 1.0 / pos.sum(axis=-1, keepdims=True), -1.0 / (~pos).sum(axis=-1, keepdims=True))


def midpoint_intercept(f: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """The boundary of the difference of means: minus the midpoint of the two sides' mean values.

    Parameters
    ----------
    f : numpy.ndarray
        The vector's values on the training rows (``(..., n)``).
    pos : numpy.ndarray
        Which rows are the concept's (same shape, bool).

    Returns
    -------
    numpy.ndarray
        One intercept per leading index (a 0-d array for one task).

    Examples
    --------
    >>> float(midpoint_intercept(np.array([3.0, 1.0, -1.0]), np.array([True, True, False])))
    -0.5
    """
    return -0.5 * ((f * pos).sum(axis=-1) / pos.sum(axis=-1) + (f * ~pos).sum(axis=-1) / (~pos).sum(axis=-1))


def solve_mean(k: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Difference of class means, ``w = mean(x | +) - mean(x | -)``, boundary at the midpoint.

    Examples
    --------
    >>> beta, b = solve_mean(np.zeros((1, 4, 4)), np.array([[1.0, 1.0, -1.0, -1.0]]))
    >>> beta.tolist()
    [[0.5, 0.5, -0.5, -0.5]]
    """
    pos = y > 0
    beta = mean_coefficients(y)
    f = np.einsum("pij,pj->pi", k, beta)
    b = midpoint_intercept(f, pos)
    return beta, b


def _logistic_objective(k: np.ndarray, y: np.ndarray, a: np.ndarray, b: np.ndarray, C: float) -> np.ndarray:
    f = np.einsum("pij,pj->pi", k, a)
    margins = y * (f + b[:, None])
    return 0.5 * np.einsum("pi,pi->p", a, f) + C * np.logaddexp(0.0, -margins).sum(axis=1)


def solve_logistic(k: np.ndarray, y: np.ndarray, *, C: float = 1.0, max_iter: int = 100,
                   tol: float = 1e-10) -> tuple[np.ndarray, np.ndarray]:
    """L2 logistic regression, ``min 0.5 ||w||^2 + C sum log(1 + exp(-y (w.x + b)))``.

    Newton's method in the span of the training rows (``w = X^T a``): with ``s = K a + b``,
    ``r = dloss/ds`` and ``W = diag(sigma(s)(1 - sigma(s)))``, the gradient is ``K (a + C r)``, so
    the Newton step solves ``[[I + C W K, C W 1], [1^T W K, 1^T W 1]] [da; db] = -[a + C r;
    1^T r]``, which stays well posed when ``K`` is singular. Every task takes its own
    backtracking step length, so the objective decreases monotonically for each.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> x = rng.normal(size=(12, 5)); y = np.sign(x[:, 0] + 0.1)
    >>> beta, b = solve_logistic((x @ x.T)[None], y[None], C=1.0)
    >>> bool(np.corrcoef(beta[0] @ x, np.eye(5)[0])[0, 1] > 0.5)
    True
    """
    p, n, _ = k.shape
    a = np.zeros((p, n))
    b = np.zeros(p)
    obj = _logistic_objective(k, y, a, b, C)
    eye = np.eye(n)[None]
    active = np.ones(p, dtype=bool)
    for _ in range(max_iter):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        ka, ya, aa, ba = k[idx], y[idx], a[idx], b[idx]
        s = np.einsum("pij,pj->pi", ka, aa) + ba[:, None]
        sig = 1.0 / (1.0 + np.exp(np.clip(ya * s, -500, 500)))   # sigma(-y s)
        r = -ya * sig
        w = sig * (1.0 - sig) + 1e-12
        m = np.empty((idx.size, n + 1, n + 1))
        m[:, :n, :n] = eye + C * w[:, :, None] * ka
        m[:, :n, n] = C * w
        m[:, n, :n] = np.einsum("pi,pij->pj", w, ka)
        m[:, n, n] = w.sum(axis=1)
        rhs = -np.concatenate([aa + C * r, r.sum(axis=1, keepdims=True)], axis=1)
        try:
            step = np.linalg.solve(m, rhs[..., None])[..., 0]
        except np.linalg.LinAlgError:
            step = np.stack([np.linalg.lstsq(mi, ri, rcond=None)[0] for mi, ri in zip(m, rhs)])
        da, db = step[:, :n], step[:, n]
        t = np.ones(idx.size)
        old = obj[idx]
        new = _logistic_objective(ka, ya, aa + da, ba + db, C)
        for _ in range(30):   # backtracking, per task
            bad = ~(new <= old)
            if not bad.any():
                break
            t[bad] *= 0.5
            new[bad] = _logistic_objective(ka[bad], ya[bad], aa[bad] + t[bad, None] * da[bad],
                                           ba[bad] + t[bad] * db[bad], C)
        accept = new <= old
        t = np.where(accept, t, 0.0)
        a[idx] = aa + t[:, None] * da
        b[idx] = ba + t * db
        obj[idx] = np.where(accept, new, old)
        decrease = old - obj[idx]
        done = ~accept | (decrease <= tol * np.maximum(1.0, np.abs(old)))
        active[idx[done]] = False
    return a, b


def solve_svm(k: np.ndarray, y: np.ndarray, *, C: float = 1.0, loss: str = "squared_hinge",
              intercept_scaling: float = 1.0, max_epochs: int = 1000, tol: float = 1e-4,
              random_state: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Linear SVM by dual coordinate descent, as liblinear solves ``LinearSVC``.

    The intercept is a feature of constant value ``intercept_scaling`` that is penalised like the
    weights (liblinear's convention), so the dual has only box constraints: ``min 0.5 a^T Q a -
    sum a + sum D a^2 / 2`` over ``0 <= a <= U`` with ``Q = yy^T * (K + s^2)``; hinge: ``U = C,
    D = 0``; squared hinge: ``U = inf, D = 1/(2C)``. One coordinate at a time, in a seeded random
    order per epoch, for every task at once. The rows are centred on their mean first (the solver
    works on the double-centred Gram matrix), so the penalised intercept does no harm; the result
    is returned in the coordinates of ``k`` like every solver's.

    Examples
    --------
    >>> x = np.array([[2.0, 0.0], [1.5, 0.5], [-2.0, 0.0], [-1.0, -0.5]]); y = np.array([1.0, 1, -1, -1])
    >>> beta, b = solve_svm((x @ x.T)[None], y[None], C=10.0)
    >>> bool((np.sign(beta[0] @ x @ x.T + b[0]) == y).all())
    True
    """
    if loss not in ("hinge", "squared_hinge"):
        raise ValueError(f"loss must be 'hinge' or 'squared_hinge', not {loss!r}.")
    p, n, _ = k.shape
    s2 = float(intercept_scaling) ** 2
    k_c = _centre(k)
    q = y[:, :, None] * y[:, None, :] * (k_c + s2)
    upper, diag = (C, 0.0) if loss == "hinge" else (np.inf, 0.5 / C)
    qii = np.einsum("pii->pi", q) + diag
    qii = np.where(qii > 0, qii, 1.0)
    a = np.zeros((p, n))
    qa = np.zeros((p, n))
    rng = as_generator(random_state)
    rows = np.arange(p)
    for _ in range(max_epochs):
        max_violation = np.zeros(p)
        for i in rng.permutation(n):
            g = qa[:, i] - 1.0 + diag * a[:, i]
            # Projected gradient: zero where the bound makes the step impossible.
            pg = np.where(a[:, i] <= 0, np.minimum(g, 0.0), np.where(a[:, i] >= upper, np.maximum(g, 0.0), g))
            max_violation = np.maximum(max_violation, np.abs(pg))
            new = np.clip(a[:, i] - g / qii[:, i], 0.0, upper)
            delta = new - a[:, i]
            if np.any(delta):
                a[:, i] = new
                qa += q[rows, :, i] * delta[:, None]
        if max_violation.max() <= tol:
            break
    beta = a * y
    b = s2 * beta.sum(axis=1)
    # Back from the task-centred rows to the coordinates of ``k``: w = sum beta_j (x_j - m) is
    # sum (beta_j - mean(beta)) x_j, and the decision at a row is w.(x - m) + b.
    beta_k = beta - beta.mean(axis=1, keepdims=True)
    b_k = b - np.einsum("pij,pj->p", k, beta_k) / n
    return beta_k, b_k


def solve(method: str, k: np.ndarray, y: np.ndarray, *, alpha: float = 1.0, C: float = 1.0,
          random_state: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Dispatch to the solver of ``method`` (one of :data:`METHODS`); see the module docstring.

    Examples
    --------
    >>> beta, b = solve("mean", np.zeros((1, 2, 2)), np.array([[1.0, -1.0]]))
    >>> beta.tolist()
    [[1.0, -1.0]]
    """
    solvers: dict[str, Callable[[], tuple[np.ndarray, np.ndarray]]] = {
        "ridge": lambda: solve_ridge(k, y, alpha=alpha),
        "mean": lambda: solve_mean(k, y),
        "logistic": lambda: solve_logistic(k, y, C=C),
        "svm": lambda: solve_svm(k, y, C=C, loss="squared_hinge", random_state=random_state),
        "svm_hinge": lambda: solve_svm(k, y, C=C, loss="hinge", random_state=random_state),
    }
    if method not in solvers:
        raise ValueError(f"unknown CAV method {method!r}; choose one of {', '.join(METHODS)}.")
    return solvers[method]()
