"""Tests of probes.stats: Welch's test, p-value adjustments, bootstrap intervals, empirical p-values."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.stats

from probes.errors import InsufficientDataError
from probes.stats import (NonFiniteValuesError, adjust_pvalues, bootstrap_ci, bootstrap_diff_ci,
                          empirical_pvalue, prediction_test, welch_test)


# ------------------------------------------------------------------ Welch

@pytest.mark.parametrize("seed", range(6))
def test_welch_matches_scipy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = rng.normal(0.3 * seed, 1.0, size=5 + 3 * seed)
    b = rng.normal(0.0, 0.2 + seed, size=19)
    t, p = welch_test(a, b)
    ref = scipy.stats.ttest_ind(a, b, equal_var=False)
    assert t == pytest.approx(ref.statistic, rel=1e-10)
    assert p == pytest.approx(ref.pvalue, rel=1e-8, abs=1e-300)


@pytest.mark.filterwarnings("ignore:Precision loss occurred:RuntimeWarning")   # scipy's, on the constant
def test_welch_one_constant_sample_matches_scipy() -> None:
    a = np.array([0.5, 0.5, 0.5, 0.5])
    b = np.array([0.2, 0.4, 0.3, 0.6, 0.1])
    t, p = welch_test(a, b)
    ref = scipy.stats.ttest_ind(a, b, equal_var=False)
    assert t == pytest.approx(ref.statistic) and p == pytest.approx(ref.pvalue)


def test_welch_degenerate_cases() -> None:
    # 0.1 repeated: np.var is not exactly 0 through rounding of the mean; must still be (0, 1).
    assert welch_test([0.1] * 19, [0.1] * 7) == (0.0, 1.0)
    assert welch_test([1.0, 1.0, 1.0], [0.0, 0.0]) == (np.inf, 0.0)
    assert welch_test([0.0, 0.0], [1.0, 1.0, 1.0]) == (-np.inf, 0.0)
    with pytest.raises(InsufficientDataError, match="1 value"):
        welch_test([1.0], [1.0, 2.0])
    with pytest.raises(InsufficientDataError):
        welch_test([1.0, 2.0], [])
    with pytest.raises(NonFiniteValuesError):
        welch_test([1.0, np.nan, 2.0], [1.0, 2.0])


def test_welch_null_rejection_rate() -> None:
    rng = np.random.default_rng(2024)
    draws = rng.normal(size=(2000, 2, 19))
    rejections = sum(welch_test(a, b)[1] < 0.05 for a, b in draws)
    assert 0.03 <= rejections / 2000 <= 0.07


# ------------------------------------------------------------------ prediction test

def test_prediction_test_formula_and_null_rate() -> None:
    rng = np.random.default_rng(5)
    null = rng.normal(size=12)
    t, p = prediction_test(2.5, null)
    expected_t = (2.5 - null.mean()) / (null.std(ddof=1) * np.sqrt(1 + 1 / 12))
    assert t == pytest.approx(expected_t, rel=1e-12)
    assert p == pytest.approx(2 * scipy.stats.t.sf(abs(expected_t), 11), rel=1e-10)
    draws = rng.normal(size=(2000, 20))
    rate = np.mean([prediction_test(d[0], d[1:])[1] < 0.05 for d in draws])
    assert 0.03 <= rate <= 0.07


def test_prediction_test_degenerate_cases() -> None:
    assert prediction_test(0.1, [0.1] * 5) == (0.0, 1.0)
    assert prediction_test(1.0, [0.5, 0.5]) == (np.inf, 0.0)
    assert prediction_test(0.0, [0.5, 0.5]) == (-np.inf, 0.0)
    with pytest.raises(InsufficientDataError):
        prediction_test(1.0, [0.5])
    with pytest.raises(NonFiniteValuesError):
        prediction_test(np.nan, [0.5, 0.6])


# ------------------------------------------------------------------ p-value adjustment

def _holm_reference(p: list[float]) -> list[float]:
    """Textbook Holm: adj_(i) = max_{j <= i} min(1, (m - j + 1) p_(j))."""
    m = len(p)
    order = sorted(range(m), key=lambda k: p[k])
    out = [0.0] * m
    for rank, k in enumerate(order):
        out[k] = max(min(1.0, (m - j) * p[order[j]]) for j in range(rank + 1))
    return out


def _bh_reference(p: list[float]) -> list[float]:
    """Textbook Benjamini-Hochberg: adj_(i) = min_{j >= i} min(1, m p_(j) / j)."""
    m = len(p)
    order = sorted(range(m), key=lambda k: p[k])
    out = [0.0] * m
    for rank, k in enumerate(order):
        out[k] = min(min(1.0, m * p[order[j]] / (j + 1)) for j in range(rank, m))
    return out


def test_holm_hand_checked() -> None:
    p = [0.01, 0.04, 0.03, 0.005]
    # Sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> monotone 0.06.
    np.testing.assert_allclose(adjust_pvalues(p, "holm"), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(adjust_pvalues(p), [0.03, 0.06, 0.06, 0.02])   # Holm is the default
    np.testing.assert_allclose(adjust_pvalues([0.5, 0.6]), [1.0, 1.0])       # capped at 1


def test_bh_hand_checked() -> None:
    p = [0.01, 0.04, 0.03, 0.005]
    # Sorted 0.005, 0.01, 0.03, 0.04 -> x4/1, x4/2, x4/3, x4/4 = 0.02, 0.02, 0.04, 0.04.
    np.testing.assert_allclose(adjust_pvalues(p, "bh"), [0.02, 0.04, 0.04, 0.02])
    np.testing.assert_allclose(adjust_pvalues(p, "fdr_bh"), [0.02, 0.04, 0.04, 0.02])
    # Step-up: a later small ratio pulls earlier ones down.
    np.testing.assert_allclose(adjust_pvalues([0.02, 0.03, 0.035], "BH"), [0.035, 0.035, 0.035])


def test_bonferroni_and_none() -> None:
    np.testing.assert_allclose(adjust_pvalues([0.01, 0.2, 0.5], "bonferroni"), [0.03, 0.6, 1.0])
    np.testing.assert_array_equal(adjust_pvalues([0.01, 0.2], "none"), [0.01, 0.2])


@pytest.mark.parametrize("seed", range(20))
def test_adjustments_match_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    m = int(rng.integers(1, 40))
    p = rng.uniform(size=m) ** 3
    p[rng.uniform(size=m) < 0.2] = p[0]          # ties
    np.testing.assert_allclose(adjust_pvalues(p, "holm"), _holm_reference(list(p)), rtol=1e-12)
    np.testing.assert_allclose(adjust_pvalues(p, "bh"), _bh_reference(list(p)), rtol=1e-12)
    for method in ("holm", "bh", "bonferroni"):
        adj = adjust_pvalues(p, method)
        order = np.argsort(p)
        assert np.all(np.diff(adj[order]) >= -1e-15)       # monotone in the raw p-values
        assert np.all(adj >= p - 1e-15) and np.all(adj <= 1.0)


def test_nan_pvalues_stay_nan_and_are_not_counted() -> None:
    p = np.array([[0.01, np.nan], [0.04, 0.03]])
    for method in ("holm", "bh", "bonferroni", "none"):
        adj = adjust_pvalues(p, method)
        assert adj.shape == (2, 2) and np.isnan(adj[0, 1])
        np.testing.assert_allclose(adj[~np.isnan(p)], adjust_pvalues([0.01, 0.04, 0.03], method))
    assert np.all(np.isnan(adjust_pvalues([np.nan, np.nan])))
    assert adjust_pvalues([]).shape == (0,)
    # The input is not modified.
    assert p[0, 0] == 0.01


def test_adjust_pvalues_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="'holm'.*'bh'.*'bonferroni'"):
        adjust_pvalues([0.1], method="sidak")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        adjust_pvalues([0.1, 1.5])


# ------------------------------------------------------------------ bootstrap

def test_bootstrap_ci_coverage() -> None:
    rng = np.random.default_rng(7)
    covered = 0
    for rep in range(300):
        x = rng.normal(loc=2.0, scale=1.5, size=30)
        lo, hi = bootstrap_ci(x, n_boot=1000, random_state=rep)
        covered += lo <= 2.0 <= hi
    assert 0.88 <= covered / 300 <= 0.99


def test_bootstrap_ci_basics() -> None:
    x = np.random.default_rng(0).normal(size=50)
    a = bootstrap_ci(x, random_state=3)
    assert a == bootstrap_ci(x, random_state=3)             # seeded
    assert a != bootstrap_ci(x, random_state=4)
    lo, hi = a
    assert lo < x.mean() < hi
    narrow = bootstrap_ci(x, level=0.5, random_state=3)
    assert lo < narrow[0] < narrow[1] < hi
    med = bootstrap_ci(x, statistic=np.median, random_state=3)
    assert med[0] < np.median(x) < med[1]
    # A statistic without an axis argument falls back to one call per replicate.
    assert bootstrap_ci(x, statistic=lambda s: float(np.mean(s)), random_state=3) == pytest.approx(a)
    assert bootstrap_ci([1.0, 1.0, 1.0], random_state=0) == (1.0, 1.0)
    assert bootstrap_ci(x, random_state=np.random.default_rng(1)) is not None
    with pytest.raises(InsufficientDataError):
        bootstrap_ci([1.0])
    with pytest.raises(ValueError, match="level"):
        bootstrap_ci(x, level=95)
    with pytest.raises(NonFiniteValuesError):
        bootstrap_ci([1.0, np.nan])


def test_bootstrap_diff_ci() -> None:
    rng = np.random.default_rng(11)
    covered = 0
    for rep in range(100):
        a = rng.normal(0.8, 0.1, size=19)
        b = rng.normal(0.5, 0.2, size=30)
        lo, hi = bootstrap_diff_ci(a, b, n_boot=1000, random_state=rep)
        assert lo < hi
        covered += lo <= 0.3 <= hi
    assert covered >= 85
    a, b = rng.normal(size=10), rng.normal(size=12)
    assert bootstrap_diff_ci(a, b, random_state=5) == bootstrap_diff_ci(a, b, random_state=5)
    lo, hi = bootstrap_diff_ci(a, b, random_state=5)
    assert lo < a.mean() - b.mean() < hi
    with pytest.raises(InsufficientDataError):
        bootstrap_diff_ci(a, [1.0])


# ------------------------------------------------------------------ empirical p-values

def test_empirical_pvalue() -> None:
    null = np.array([0.5, -1.0, 4.0, -3.0])
    assert empirical_pvalue(3.0, null) == pytest.approx(3 / 5)               # 4 and -3 count
    assert empirical_pvalue(3.0, null, two_sided=False) == pytest.approx(2 / 5)   # only 4
    assert empirical_pvalue(-3.0, null) == pytest.approx(3 / 5)              # symmetric
    assert empirical_pvalue(100.0, null) == pytest.approx(1 / 5)             # never 0
    assert empirical_pvalue(0.0, null) == 1.0                                # everything is as extreme
    assert empirical_pvalue(1.0, [1.0, 1.0]) == 1.0                          # ties count
    assert empirical_pvalue(1.0, [2.0]) == 1.0
    assert empirical_pvalue(np.inf, null) == pytest.approx(1 / 5)
    with pytest.raises(InsufficientDataError):
        empirical_pvalue(1.0, [])
    # One NaN rule for every Monte-Carlo p-value (probes.stats.monte_carlo_pvalue): NaN in, NaN out.
    assert np.isnan(empirical_pvalue(np.nan, null))
    assert np.isnan(empirical_pvalue(1.0, [np.nan, 1.0]))


def test_monte_carlo_pvalue_is_the_ubs_pvalue() -> None:
    from probes.stats import monte_carlo_pvalue
    from probes.ubs import ubs_pvalue

    rng = np.random.default_rng(0)
    null, obs = rng.normal(size=200), rng.normal(size=(3, 4)) * 2
    assert np.array_equal(monte_carlo_pvalue(obs, null), ubs_pvalue(obs, null))
    one_sided = monte_carlo_pvalue(obs, null, two_sided=False)
    assert np.allclose(one_sided, [[(1 + np.sum(null >= o)) / 201 for o in r] for r in obs])


def test_empirical_pvalue_is_uniform_under_the_null() -> None:
    rng = np.random.default_rng(3)
    ps = np.array([empirical_pvalue(rng.normal(), rng.normal(size=99)) for _ in range(1000)])
    assert 0.03 <= np.mean(ps <= 0.05) <= 0.07
