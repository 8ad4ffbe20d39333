"""Input validation shared by the scikit-learn style probes (:class:`~probes.linear_probe.LinearProbe`,
:class:`~probes.regression.RegressionProbe`).

scikit-learn's own validation gives the messages and error types its estimator checks and tools
(``Pipeline``, ``cross_val_score``) expect; the toolkit adds its advice for the mistakes users make
most (a convolutional layer passed without flattening or pooling). Non-finite values are left to
the probes, which name the offending rows; a ``np.memmap`` is not copied.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.utils.validation import validate_data

from probes.errors import InputShapeError

__all__ = ["check_features"]


def _ndim(X: Any) -> int:
    shape = getattr(X, "shape", None)
    return len(shape) if shape is not None else np.asarray(X).ndim


def check_features(estimator: Any, X: Any, *, reset: bool, finite: bool = False) -> np.ndarray:
    """Validate activations ``X`` for ``estimator`` (``reset=True`` in ``fit``, False afterwards).

    Parameters
    ----------
    estimator : BaseEstimator
        The probe; ``reset=True`` records ``n_features_in_`` (and ``feature_names_in_``) on it.
    X : array-like of shape (n_samples, n_features)
        Activations; arrays with more than two axes are refused with advice.
    reset : bool
        True when fitting; False checks ``X`` against what was fitted.
    finite : bool
        Refuse NaN and infinite values here (predictions). Fits leave that to the probe, whose
        message names the rows.

    Returns
    -------
    numpy.ndarray
        ``X`` as a numeric 2-D array (float32 stays float32; a memmap is not read).

    Raises
    ------
    InputShapeError
        A subclass of ``ValueError``: wrong number of axes or of features, complex values, no rows.

    Examples
    --------
    >>> from sklearn.base import BaseEstimator
    >>> est = BaseEstimator()
    >>> check_features(est, np.zeros((3, 2), "float32"), reset=True).dtype, est.n_features_in_
    (dtype('float32'), 2)
    """
    if not hasattr(X, "tocsr") and _ndim(X) > 2:
        raise InputShapeError(
            f"X must be 2-D (n_examples, n_features); got shape {np.shape(X)}. Flatten the layer "
            "with X.reshape(len(X), -1) or pool it with probes.regression.pool_activations.")
    try:
        return validate_data(estimator, X, reset=reset, dtype="numeric", ensure_all_finite=finite)
    except InputShapeError:
        raise
    except ValueError as exc:  # keep scikit-learn's message; make it a toolkit error too
        raise InputShapeError(str(exc)) from exc
