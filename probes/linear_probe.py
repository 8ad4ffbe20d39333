"""One CAV as a scikit-learn classifier: :class:`LinearProbe`, a thin wrapper around
:func:`probes.linear.fit_cav_batch` that follows scikit-learn's ``fit(X, y)`` contract.

Kept apart from :mod:`probes.linear` (the batched solvers, sensitivities and TCAV scores) because its
job is the scikit-learn contract: label handling, input validation, ``classes_``/``predict``/``score``
and the deprecated two-array call. ``from probes.linear import LinearProbe`` keeps working.
"""
from __future__ import annotations

import numbers
import warnings
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d

from probes.errors import InputShapeError
from probes.estimator_input import check_features
from probes.linear import CAVTask, _check_2d, fit_cav_batch, sensitivities

__all__ = ["LinearProbe"]


class LinearProbe(ClassifierMixin, BaseEstimator):
    """One CAV as a scikit-learn classifier (a thin wrapper around :func:`fit_cav_batch`).

    ``fit(X, y)`` follows scikit-learn's contract, so the probe works in a ``Pipeline``, with
    ``cross_val_score`` and passes ``check_estimator`` (see ``tests/test_estimator_checks.py`` for
    the documented exceptions). ``y`` has two classes: the larger label (``classes_[1]``, e.g. 1) is
    the concept, the smaller (``classes_[0]``, e.g. 0) the counterexamples. The CAV is fitted as
    TCAV fits it: both classes balanced to the smaller one, a stratified held-out part of
    ``test_size`` for ``accuracy_``, the rest for the fit.

    Parameters
    ----------
    classifier : estimator or None
        ``None`` for the default dual ridge classifier, or a scikit-learn linear classifier used as
        a template (see :func:`fit_cav_batch`).
    alpha : float
        Ridge penalty of the default classifier.
    test_size : float
        Fraction of the balanced rows held out for ``accuracy_``.
    random_state : int, RandomState or None
        Seed of the balancing and split (and of the classifier); ``None`` or a ``RandomState``
        draws one, recorded in ``seed_``.

    Attributes
    ----------
    cav_ : (d,) float32
        The concept activation vector: unit, oriented towards the concept.
    vector_ : (d,) float32
        The same array as ``cav_`` (the name used before ``cav_``).
    coef_ : (1, d) float32
        ``cav_`` as scikit-learn's linear models shape it.
    intercept_ : float
        Scaled to ``cav_``: ``decision_function(X) = X @ cav_ + intercept_``.
    classes_ : (2,) array
        The labels; ``classes_[1]`` is the concept.
    accuracy_ : float
        Accuracy on the held-out rows.
    n_train_, n_test_, n_features_in_, seed_ : int

    Notes
    -----
    The two-array call ``fit(X_concept, X_counter)`` of earlier versions still works (it is
    recognised by a 2-D second argument) and warns with a ``FutureWarning``; write
    ``fit(np.concatenate([X_concept, X_counter]), np.r_[np.ones(len(X_concept)), np.zeros(len(X_counter))])``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = np.concatenate([rng.normal(size=(30, 50)) + np.eye(50)[0] * 4, rng.normal(size=(30, 50))])
    >>> y = np.r_[np.ones(30), np.zeros(30)]
    >>> probe = LinearProbe(random_state=0).fit(X, y)
    >>> bool(probe.decision_function(X[:30]).mean() > 0), probe.accuracy_ > 0.9, probe.score(X, y) > 0.9
    (True, True, True)
    """

    def __init__(self, classifier: Any = None, alpha: float = 1.0, test_size: float = 0.3,
                 random_state: Any = None) -> None:
        self.classifier = classifier
        self.alpha = alpha
        self.test_size = test_size
        self.random_state = random_state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False   # a CAV separates a concept from its counterexamples
        return tags

    def fit(self, X: Any = None, y: Any = None, **deprecated: Any) -> "LinearProbe":
        """Fit the CAV separating the rows of class ``classes_[1]`` from those of ``classes_[0]``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Activations.
        y : array-like of shape (n_samples,)
            Two labels; the larger one (e.g. 1) marks the concept rows, the smaller (e.g. 0) the
            counterexamples. A 2-D ``y`` is the deprecated two-array call ``fit(X_concept,
            X_counter)`` (also accepted as keywords ``X_concept=``/``X_counter=``).

        Returns
        -------
        LinearProbe
            ``self``.

        Examples
        --------
        >>> X = np.random.default_rng(1).normal(size=(20, 4)); X[:10, 0] += 5
        >>> LinearProbe(random_state=0).fit(X, np.r_[np.ones(10), np.zeros(10)]).classes_.tolist()
        [0.0, 1.0]
        """
        if "X_concept" in deprecated or "X_counter" in deprecated:
            unknown = set(deprecated) - {"X_concept", "X_counter"}
            if unknown or X is not None or y is not None:
                raise TypeError("fit() takes fit(X, y); X_concept= and X_counter= (deprecated) cannot be "
                                f"mixed with X, y or other keywords ({sorted(unknown)}).")
            X, y = deprecated.get("X_concept"), deprecated.get("X_counter")
        elif deprecated:
            raise TypeError(f"fit() got unexpected keyword arguments {sorted(deprecated)}.")
        y_shape = np.shape(np.asarray(y)) if y is not None else ()
        if len(y_shape) == 2 and not (y_shape[1] == 1 and y_shape[0] == len(X)):
            # A (n, 1) column of labels is scikit-learn's y; any other 2-D y is an array of activations.
            warnings.warn("LinearProbe.fit(X_concept, X_counter) is deprecated and will be removed: use "
                          "fit(X, y) with y = 1 for concept rows and 0 for counterexample rows.",
                          FutureWarning, stacklevel=2)
            return self._fit_two_arrays(X, y)
        if y is None:
            raise ValueError("LinearProbe.fit needs y: 1 for concept rows, 0 for counterexample rows "
                             "(requires y to be passed, but the target y is None).")
        X = check_features(self, X, reset=True)
        y = column_or_1d(y, warn=True)
        if len(y) != len(X):
            raise InputShapeError(f"X has {len(X)} rows but y has {len(y)} labels; they must match.")
        check_classification_targets(y)
        classes = np.unique(y)
        if len(classes) != 2:
            plural = "es" if len(classes) != 1 else ""
            raise ValueError("Only binary classification is supported. LinearProbe needs exactly 2 classes "
                             f"in y (concept and counterexample); got {len(classes)} class{plural}: "
                             f"{classes[:10].tolist()}.")
        self.classes_ = classes
        return self._fit_pool(X, np.flatnonzero(y == classes[1]), np.flatnonzero(y == classes[0]))

    def _fit_two_arrays(self, X_concept: Any, X_counter: Any) -> "LinearProbe":
        X_concept = _check_2d(X_concept, "X_concept")
        X_counter = _check_2d(X_counter, "X_counter")
        if X_concept.shape[1] != X_counter.shape[1]:
            raise InputShapeError(f"X_concept has {X_concept.shape[1]} features but X_counter has "
                                  f"{X_counter.shape[1]}.")
        n1 = len(X_concept)
        pool = np.concatenate([X_concept, X_counter])
        self.classes_ = np.array([0, 1])
        return self._fit_pool(pool, np.arange(n1), np.arange(n1, len(pool)))

    def _fit_pool(self, pool: np.ndarray, pos: np.ndarray, neg: np.ndarray) -> "LinearProbe":
        if isinstance(self.random_state, numbers.Integral) and not isinstance(self.random_state, bool):
            seed = int(self.random_state)
        else:
            seed = int(check_random_state(self.random_state).randint(0, 2**31 - 1))
        # Non-finite activations are refused by fit_cav_batch from the Gram matrix it computes anyway
        # (no extra pass over the pool); numpy's warnings on the way there would only repeat that error.
        with np.errstate(invalid="ignore", over="ignore"):
            batch = fit_cav_batch(pool, [CAVTask(pos, neg, seed)], alpha=self.alpha, test_size=self.test_size,
                                  classifier=self.classifier)
        self.cav_ = batch.vectors[0]
        self.vector_ = self.cav_
        self.coef_ = self.cav_[None, :]
        self.accuracy_ = float(batch.accuracies[0])
        self.intercept_ = float(batch.intercepts[0])
        self.n_train_ = int(batch.n_train[0])
        self.n_test_ = int(batch.n_test[0])
        self.n_features_in_ = int(pool.shape[1])
        self.seed_ = seed
        return self

    def decision_function(self, X: Any) -> np.ndarray:
        """Signed score ``X @ cav_ + intercept_``; positive means "concept" (``classes_[1]``).

        Examples
        --------
        >>> X = np.random.default_rng(2).normal(size=(20, 3)); X[:10, 0] += 5
        >>> p = LinearProbe(random_state=0).fit(X, np.r_[np.ones(10), np.zeros(10)])
        >>> p.decision_function(X[:2]).shape
        (2,)
        """
        check_is_fitted(self, "cav_")
        X = check_features(self, X, reset=False, finite=True)
        return sensitivities(X, self.cav_) + self.intercept_

    def predict(self, X: Any) -> np.ndarray:
        """The label of each row: ``classes_[1]`` (concept) where the decision is positive.

        Examples
        --------
        >>> X = np.random.default_rng(3).normal(size=(20, 3)); X[:10, 0] += 5
        >>> p = LinearProbe(random_state=0).fit(X, np.r_[np.ones(10), np.zeros(10)])
        >>> p.predict(X[:3]).tolist()
        [1.0, 1.0, 1.0]
        """
        check_is_fitted(self, "cav_")
        return self.classes_[(self.decision_function(X) > 0).astype(int)]
