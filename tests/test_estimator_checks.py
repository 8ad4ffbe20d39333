"""scikit-learn's estimator checks on the probes, and the probes' documented limits.

Both probes pass every check of ``check_estimator`` for the installed scikit-learn (the
``array_api`` checks are skipped by scikit-learn itself unless ``SCIPY_ARRAY_API`` is set). The
limits that scikit-learn's generic data never reach (a CAV needs two classes with enough rows on
both sides of its held-out split; an RCV needs ``max(4, cv)`` rows and a concept measure that
varies) are not expected failures of a check but errors with advice, tested below. Should a future
scikit-learn add a check that one of these limits makes fail, list it in ``EXPECTED_FAILED`` with the
reason, and test the limit here.
"""
import numpy as np
import pytest
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from probes.errors import InsufficientDataError
from probes.linear_probe import LinearProbe
from probes.regression import RegressionProbe

#: check name -> reason, per estimator class (the ``expected_failed_checks`` of scikit-learn >= 1.6).
EXPECTED_FAILED: dict[str, dict[str, str]] = {"LinearProbe": {}, "RegressionProbe": {}}


def _expected_failed_checks(estimator) -> dict[str, str]:
    return EXPECTED_FAILED[type(estimator).__name__]


@parametrize_with_checks([LinearProbe(), RegressionProbe()], expected_failed_checks=_expected_failed_checks)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)


def _regression_data(n=60, d=10, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    return X, 2 * X[:, 0] + 0.1 * rng.standard_normal(n)


def test_linear_probe_needs_two_classes_with_rows_on_both_sides_of_the_split():
    X = np.random.default_rng(0).standard_normal((12, 4))
    with pytest.raises(ValueError, match="Only binary classification"):
        LinearProbe().fit(X, np.arange(12) % 3)
    with pytest.raises(ValueError, match="got 1 class"):
        LinearProbe().fit(X, np.ones(12))
    with pytest.raises(InsufficientDataError, match="needs at least 2"):
        LinearProbe().fit(X, np.r_[1, np.zeros(11)])


def test_regression_probe_needs_enough_rows_and_a_varying_measure():
    X, y = _regression_data()
    with pytest.raises(InsufficientDataError, match="n_samples = 4.*at least 5"):
        RegressionProbe(cv=5).fit(X[:4], y[:4])
    with pytest.raises(InsufficientDataError, match="constant"):
        RegressionProbe().fit(X, np.full(len(X), 2.0))


def test_probes_work_in_pipelines_and_cross_validation():
    X, y = _regression_data()
    r2 = cross_val_score(make_pipeline(StandardScaler(), RegressionProbe(random_state=0)), X, y, cv=3)
    assert r2.mean() > 0.8
    labels = (y > np.median(y)).astype(int)
    accuracy = cross_val_score(LinearProbe(random_state=0), X, labels, cv=3)
    assert accuracy.mean() > 0.7


def test_regression_probe_score_is_r2_and_leaves_the_input_alone():
    X, y = _regression_data()
    before = X.copy()
    probe = RegressionProbe(random_state=0).fit(X[:40], y[:40])
    np.testing.assert_array_equal(X, before)   # float64 activations used to be centred in place
    from sklearn.metrics import r2_score

    assert probe.score(X[40:], y[40:]) == pytest.approx(r2_score(y[40:], probe.predict(X[40:])))
