"""Tests of probes.ubs: the normaliser, the null distribution, p-values and planted concepts."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from probes.errors import InputShapeError
from probes.ubs import (UBSResult, sample_directions, ubs_normaliser, ubs_null, ubs_pvalue, ubs_scores,
                        ubs_test)


def random_unit(d: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(d)
    return v / np.linalg.norm(v)


def test_normaliser_known_values():
    assert ubs_normaliser(1) == pytest.approx(1.0)          # u = ±1
    assert ubs_normaliser(2) == pytest.approx(2 / np.pi)    # E|cos θ|
    assert ubs_normaliser(3) == pytest.approx(0.5)          # Archimedes: u_1 uniform on [-1, 1]


@pytest.mark.parametrize("d", [4096, 10**6, 10**7, 10**9])
def test_normaliser_is_finite_and_asymptotic_for_huge_d(d):
    c = ubs_normaliser(d)
    assert np.isfinite(c) and c > 0
    # c_d = √(2/(πd)) (1 + 1/(4d) + 1/(32d²) + O(d⁻³)); the error must stay near machine precision.
    series = np.sqrt(2 / (np.pi * d)) * (1 + 1 / (4 * d) + 1 / (32 * d**2))
    assert c == pytest.approx(series, rel=1e-12)


def test_normaliser_matches_gamma_function_for_small_d():
    from scipy.special import gamma
    for d in range(1, 150):
        exact = gamma(d / 2) / (np.sqrt(np.pi) * gamma((d + 1) / 2))
        assert ubs_normaliser(d) == pytest.approx(exact, rel=1e-12)


def test_normaliser_rejects_bad_dimension():
    with pytest.raises(InputShapeError):
        ubs_normaliser(0)


@pytest.mark.parametrize("d", [3, 64, 4096])
def test_closed_form_matches_monte_carlo(d):
    """E_u |g·u| = ‖g‖ c_d, checked against directions sampled independently of ubs_null."""
    rng = np.random.default_rng(d)
    g = rng.standard_normal(d) * 3.7
    total, n = 0.0, 0
    for _ in range(10):  # 20 000 directions in chunks: 4096 × 20 000 at once would be 330 MB
        u = sample_directions(d, 2000, rng)
        total += np.abs(u.astype(np.float64) @ g).sum()
        n += len(u)
    mc = total / n
    assert mc == pytest.approx(np.linalg.norm(g) * ubs_normaliser(d), rel=0.02)


def test_sample_directions_are_unit_float32_and_seeded():
    u = sample_directions(300, 50, random_state=3)
    assert u.shape == (50, 300) and u.dtype == np.float32
    assert np.allclose(np.linalg.norm(u, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(u, sample_directions(300, 50, random_state=3))
    assert not np.array_equal(u, sample_directions(300, 50, random_state=4))
    assert np.array_equal(sample_directions(8, 2, np.random.RandomState(1)),
                          sample_directions(8, 2, np.random.RandomState(1)))


@pytest.mark.parametrize("d", [16, 4096])
def test_per_example_ratio_has_mean_zero_and_variance_near_pi_over_2(d):
    g = np.random.default_rng(1).standard_normal((1, d))
    ratios = ubs_null(g, n_directions=20_000, random_state=2, chunk=1000)
    assert abs(ratios.mean()) < 0.05
    exact = 1 / (d * ubs_normaliser(d) ** 2)   # 1.52 for d = 16, → π/2
    assert ratios.var() == pytest.approx(exact, rel=0.05)
    assert ratios.var() == pytest.approx(np.pi / 2, rel=0.05 if d > 16 else 0.1)
    assert np.abs(ratios).mean() == pytest.approx(1.0, rel=0.02)   # ρ is the mean |g·u|


def test_null_spread_is_the_same_for_narrow_and_wide_layers():
    """Gradients with the same mutual geometry in d = 16 and d = 4096 give the same null spread."""
    rng = np.random.default_rng(0)
    stds, raw_stds = {}, {}
    for d in (16, 4096):
        # 8 mutually orthogonal gradients of very different norms: identical geometry in both layers.
        q = np.linalg.qr(rng.standard_normal((d, 8)))[0].T
        grads = q * rng.uniform(0.01, 100, size=(8, 1))
        stds[d] = ubs_null(grads, 1000, random_state=1).std()
        u = sample_directions(d, 1000, random_state=1)
        raw_stds[d] = (u @ grads.T.astype(np.float32)).mean(axis=1).std()
    assert 0.85 <= stds[16] / stds[4096] <= 1.15
    assert raw_stds[16] / raw_stds[4096] > 8   # without normalisation the narrow layer looks 16× stronger


def test_null_spread_matches_for_random_gradients_on_average():
    """Independent isotropic gradients: the expected null spread does not depend on d."""
    mean_var = {}
    for d in (16, 4096):
        rng = np.random.default_rng(d)
        variances = [ubs_null(rng.standard_normal((20, d)), 300, random_state=rng).var() for _ in range(30)]
        mean_var[d] = np.mean(variances)
    assert 0.85 <= np.sqrt(mean_var[16] / mean_var[4096]) <= 1.15
    assert mean_var[4096] == pytest.approx(np.pi / 2 / 20, rel=0.15)   # ≈ (π/2)/n for independent examples


def test_null_equals_scores_of_sampled_directions_whatever_the_chunk():
    g = np.random.default_rng(0).standard_normal((7, 50))
    direct = ubs_scores(g, sample_directions(50, 300, random_state=5))
    for chunk in (1, 7, 256, 1000):
        assert np.allclose(ubs_null(g, 300, random_state=5, chunk=chunk), direct, atol=1e-5)


def test_scores_definition_per_example_mean():
    rng = np.random.default_rng(3)
    g = rng.standard_normal((10, 30)) * rng.uniform(0.1, 10, size=(10, 1))
    V = rng.standard_normal((4, 30))
    V /= np.linalg.norm(V, axis=1, keepdims=True)
    c = ubs_normaliser(30)
    expected = np.mean((g @ V.T) / (np.linalg.norm(g, axis=1, keepdims=True) * c), axis=0)
    assert np.allclose(ubs_scores(g, V), expected)
    assert np.allclose(ubs_scores(g, V * 5), expected)          # vectors are normalised
    assert np.allclose(ubs_scores(g * 1e-6, V), expected)       # invariant to the gradient scale
    assert ubs_scores(g, V[0]).shape == (1,)


def test_planted_direction_is_far_above_the_null():
    rng = np.random.default_rng(0)
    d, n, M = 1000, 40, 999
    concept = random_unit(d, 11)
    grads = 0.5 * concept + rng.standard_normal((n, d)) / np.sqrt(d)   # cos(g_i, concept) ≈ 0.45
    v = grads.mean(axis=0)
    res = ubs_test(grads, v, n_directions=M, random_state=1)
    assert isinstance(res, UBSResult)
    assert res.d == d and res.n_used == n and res.null.shape == (M,)
    assert res.normaliser == pytest.approx(ubs_normaliser(d))
    assert abs(res.scores[0]) > 5 * np.abs(res.null).max()
    assert res.p_values[0] == pytest.approx(1 / (M + 1))
    # Pointing against the concept flips the sign, not the significance.
    flipped = ubs_test(grads, -v, n_directions=M, random_state=1)
    assert flipped.scores[0] == pytest.approx(-res.scores[0])
    assert flipped.p_values[0] == pytest.approx(1 / (M + 1))


def test_random_direction_p_values_are_not_systematically_small():
    p_values = []
    for seed in range(20):
        rng = np.random.default_rng(100 + seed)
        grads = rng.standard_normal((25, 256)) + 0.2 * rng.standard_normal(256)   # correlated examples
        res = ubs_test(grads, random_unit(256, 1000 + seed), n_directions=200, random_state=seed)
        p_values.append(res.p_values[0])
    p_values = np.array(p_values)
    assert 0.3 < p_values.mean() < 0.7
    assert np.sum(p_values < 0.05) <= 3
    assert stats.kstest(p_values, "uniform").pvalue > 0.01


def test_planted_concept_keeps_its_rank_across_layers():
    """In a narrow and a wide layer of very different gradient scales, the planted concept ranks first."""
    for d, scale in ((64, 1e-3), (4096, 50.0)):
        rng = np.random.default_rng(d)
        concept = random_unit(d, d + 1)
        grads = scale * (0.4 * concept + rng.standard_normal((30, d)) / np.sqrt(d))
        others = np.stack([random_unit(d, s) for s in range(5)])
        vectors = np.vstack([others[:2], concept, others[2:]])
        res = ubs_test(grads, vectors, n_directions=500, random_state=0)
        assert np.argmax(np.abs(res.scores)) == 2
        assert np.argmin(res.p_values) == 2 and res.p_values[2] == pytest.approx(1 / 501)


def test_zero_gradients_are_excluded():
    rng = np.random.default_rng(0)
    grads = rng.standard_normal((10, 40))
    v = random_unit(40, 1)
    with_zeros = np.vstack([grads, np.zeros((3, 40))])
    assert np.allclose(ubs_scores(with_zeros, v), ubs_scores(grads, v))
    res = ubs_test(with_zeros, v, n_directions=50, random_state=0)
    assert res.n_used == 10
    assert np.allclose(res.null, ubs_null(grads, 50, random_state=0))


def test_all_zero_gradients_give_nan():
    res = ubs_test(np.zeros((5, 12)), random_unit(12, 0), n_directions=20, random_state=0)
    assert res.n_used == 0
    assert np.isnan(res.scores).all() and np.isnan(res.null).all() and np.isnan(res.p_values).all()


def test_pvalue_counts_ties_and_is_vectorised():
    null = np.array([-3.0, 1.0, 2.0, -2.0])
    assert ubs_pvalue(2.0, null) == pytest.approx(4 / 5)     # |−3|, 2, |−2| and itself
    assert ubs_pvalue(-10.0, null) == pytest.approx(1 / 5)
    assert ubs_pvalue(0.0, null) == pytest.approx(1.0)
    assert isinstance(ubs_pvalue(1.0, null), float)
    out = ubs_pvalue(np.array([[2.0, -10.0], [0.0, np.nan]]), null)
    assert out.shape == (2, 2)
    assert np.allclose(out[:1], [[4 / 5, 1 / 5]]) and out[1, 0] == 1.0 and np.isnan(out[1, 1])


def test_float32_memmap_gradients(tmp_path):
    grads = np.random.default_rng(0).standard_normal((12, 500)).astype(np.float32)
    path = tmp_path / "g.npy"
    np.save(path, grads)
    mm = np.load(path, mmap_mode="r")
    v = random_unit(500, 3)
    assert np.allclose(ubs_scores(mm, v), ubs_scores(grads.astype(np.float64), v), atol=1e-6)


def test_input_errors():
    g = np.ones((3, 4))
    with pytest.raises(InputShapeError, match="reshape"):
        ubs_scores(np.ones((3, 2, 2)), np.ones(4))
    with pytest.raises(InputShapeError, match="shape"):
        ubs_scores(g, np.ones(5))
    with pytest.raises(InputShapeError, match="non-zero"):
        ubs_scores(g, np.zeros(4))
    with pytest.raises(InputShapeError, match="NaN"):
        ubs_scores(np.full((2, 4), np.nan), np.ones(4))
    with pytest.raises(InputShapeError):
        ubs_null(g, 0)


def test_projection_null_has_the_distribution_of_sampled_directions():
    from scipy.stats import ks_2samp

    rng = np.random.default_rng(5)
    for d in (3, 64, 2048):
        g = rng.standard_normal((30, d)) + 0.5  # a mean direction, so the null is not degenerate
        sampled = ubs_null(g, 3000, random_state=1)
        projected = ubs_null(g, 3000, random_state=2, method="projection")
        assert ks_2samp(sampled, projected).pvalue > 0.01
        assert np.isclose(sampled.std(), projected.std(), rtol=0.1)


def test_projection_null_rejects_unknown_method():
    with pytest.raises(ValueError, match="projection"):
        ubs_null(np.ones((3, 4)), 10, method="exact")


def test_ubs_ratios_from_sensitivities_equal_ubs_scores():
    from probes.ubs import ubs_ratios

    rng = np.random.default_rng(9)
    g = rng.standard_normal((25, 300))
    g[3] = 0.0  # a zero gradient is left out by both
    v = rng.standard_normal((4, 300))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    ratios = ubs_ratios(g @ v.T, np.linalg.norm(g, axis=1), 300)
    assert ratios.shape == (24, 4)
    np.testing.assert_allclose(ratios.mean(axis=0), ubs_scores(g, v), rtol=1e-10)
