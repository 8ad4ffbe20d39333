"""Tests of probes.regression: regression concept vectors, held-out R², shuffles, pooling."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import Ridge, RidgeCV
from sklearn.model_selection import KFold

from probes.errors import InputShapeError, InsufficientDataError, ToolkitError
from probes.regression import RegressionProbe, pool_activations, pool_gradients, shuffled_r2


def planted(seed: int = 0, n: int = 80, d: int = 2000, rank: int = 10, x_noise: float = 0.3,
            y_noise: float = 0.02):
    """Activations with a few strong latent factors (as real layers have) and y = X·w + small noise.

    w lies in the factor subspace, so it is identifiable from n << d examples; an arbitrary dense w
    in 2000 dimensions could not be recovered from 80 examples by any method.
    """
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((d, rank)))[0]
    X = (rng.standard_normal((n, rank)) * 10) @ basis.T + x_noise * rng.standard_normal((n, d)) + 2.0
    X = X.astype(np.float32)
    w = basis @ rng.standard_normal(rank)
    y = X.astype(np.float64) @ w
    y = y + y_noise * y.std() * rng.standard_normal(n) + 7.0
    return X, y, w


def cosine(a, b) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def planted_fit():
    X, y, w = planted()
    return X, y, w, RegressionProbe(random_state=0).fit(X, y)


def test_planted_concept_is_found(planted_fit):
    X, y, w, probe = planted_fit
    assert probe.r2_cv_ > 0.8
    assert cosine(probe.vector_, w) > 0.95  # high and with the right sign
    assert np.isclose(np.linalg.norm(probe.vector_), 1.0)
    assert probe.fold_vectors_.shape == (5, X.shape[1])
    assert np.allclose(np.linalg.norm(probe.fold_vectors_, axis=1), 1.0)
    assert probe.fold_angle_deg_ < 15.0
    assert probe.r2_folds_.shape == (5,) and np.all(probe.r2_folds_ > 0.8)
    assert probe.n_features_in_ == X.shape[1]
    assert probe.alpha_ in probe.alphas_


def test_sign_follows_the_concept(planted_fit):
    X, y, w, probe = planted_fit
    flipped = RegressionProbe(random_state=0).fit(X, -y)
    assert cosine(flipped.vector_, w) < -0.95
    assert np.allclose(flipped.vector_, -probe.vector_, atol=1e-8)


def test_noise_target_has_no_quality_and_unstable_direction():
    X, _, _ = planted(seed=1)
    y = np.random.default_rng(5).standard_normal(len(X))
    probe = RegressionProbe(random_state=0).fit(X, y)
    assert probe.r2_cv_ < 0.1
    # Training folds share 3/4 of their examples, so noise cannot exceed ~41° with k = 5: compare
    # with that reference rather than with 90°.
    assert np.isclose(probe.fold_angle_noise_deg_, np.degrees(np.arccos(3 / 4)), atol=1.0)
    assert probe.fold_angle_deg_ > 30.0
    with_3 = RegressionProbe(cv=3, random_state=0).fit(X, y)
    assert with_3.fold_angle_deg_ > 45.0


def test_noise_angle_is_far_above_planted_angle(planted_fit):
    X, y, _, probe = planted_fit
    noise = RegressionProbe(random_state=0).fit(X, np.random.default_rng(9).standard_normal(len(y)))
    assert noise.fold_angle_deg_ > 3 * probe.fold_angle_deg_


def test_shuffled_r2_is_null(planted_fit):
    X, y, _, _ = planted_fit
    null = shuffled_r2(X, y, n_shuffles=20, random_state=0)
    assert null.shape == (20,)
    assert abs(null.mean()) < 0.1
    assert np.all(null < 0.3)


def test_shuffled_r2_is_reproducible(planted_fit):
    X, y, _, _ = planted_fit
    assert np.array_equal(shuffled_r2(X, y, 3, random_state=4), shuffled_r2(X, y, 3, random_state=4))


def test_dual_solution_equals_sklearn_ridge(planted_fit):
    X, y, _, probe = planted_fit
    ys = (y - y.mean()) / y.std()
    ref = Ridge(alpha=probe.alpha_, fit_intercept=True).fit(X.astype(np.float64), ys)
    assert cosine(probe.coef_, ref.coef_) > 0.9999
    assert np.allclose(probe.coef_, ref.coef_, rtol=1e-6, atol=1e-10 * np.abs(ref.coef_).max())
    assert np.isclose(probe.intercept_, ref.intercept_, atol=1e-6)
    assert np.allclose(probe.predict(X), y.mean() + y.std() * ref.predict(X.astype(np.float64)))


def test_penalty_and_cv_r2_match_sklearn_ridgecv():
    """Closed-form LOO picks RidgeCV's alpha; the outer CV equals a nested sklearn loop."""
    X, y, _ = planted(seed=3, n=50, d=300, x_noise=1.0, y_noise=0.3)
    probe = RegressionProbe(random_state=2).fit(X, y)
    ys = (y - y.mean()) / y.std()
    X64 = X.astype(np.float64)
    assert RidgeCV(alphas=probe.alphas_).fit(X64, ys).alpha_ == pytest.approx(probe.alpha_)
    oof = np.empty_like(ys)
    for train, test in KFold(5, shuffle=True, random_state=2).split(X64):
        oof[test] = RidgeCV(alphas=probe.alphas_).fit(X64[train], ys[train]).predict(X64[test])
    r2 = 1 - np.sum((ys - oof) ** 2) / np.sum((ys - ys.mean()) ** 2)
    assert probe.r2_cv_ == pytest.approx(r2, abs=1e-8)
    assert np.allclose(probe.oof_predictions_, y.mean() + y.std() * oof)


def test_alpha_grid_adapts_to_activation_scale(planted_fit):
    X, y, _, probe = planted_fit
    scaled = RegressionProbe(random_state=0).fit(X * 100, y)
    assert scaled.alpha_ == pytest.approx(probe.alpha_ * 1e4, rel=1e-3)
    assert cosine(scaled.vector_, probe.vector_) > 0.9999
    assert scaled.r2_cv_ == pytest.approx(probe.r2_cv_, abs=1e-6)


def test_user_alphas_and_sklearn_conventions(planted_fit):
    X, y, _, _ = planted_fit
    probe = RegressionProbe(alphas=[1.0, 10.0], cv=4, random_state=1)
    assert probe.get_params() == {"alphas": [1.0, 10.0], "cv": 4, "random_state": 1}
    assert clone(probe).get_params()["cv"] == 4
    assert probe.fit(X, y) is probe
    assert probe.alpha_ in (1.0, 10.0) and probe.fold_vectors_.shape[0] == 4
    r2 = 1 - np.sum((y - probe.predict(X)) ** 2) / np.sum((y - y.mean()) ** 2)
    assert probe.score(X, y) == pytest.approx(r2)


def test_wide_layer_never_forms_d_by_d():
    n, d = 60, 120_000
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, d), dtype=np.float32)
    y = X[:, :50].sum(axis=1, dtype=np.float64)
    tracemalloc.start()
    try:
        probe = RegressionProbe(cv=3, random_state=0).fit(X, y)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # A d×d float64 would need 115 GB; a float64 copy of X 58 MB. Chunks are capped at 32 MB.
    assert peak < 300 * 2**20
    assert probe.coef_.shape == (d,) and probe.fold_vectors_.shape == (3, d)
    assert probe.vector_[:50].mean() > 0


def test_memmap_input(tmp_path, planted_fit):
    X, y, _, probe = planted_fit
    mm = np.lib.format.open_memmap(tmp_path / "acts.npy", mode="w+", dtype=np.float32, shape=X.shape)
    mm[:] = X
    mm.flush()
    ro = np.load(tmp_path / "acts.npy", mmap_mode="r")
    from_mm = RegressionProbe(random_state=0).fit(ro, y)
    assert np.allclose(from_mm.coef_, probe.coef_)
    assert from_mm.r2_cv_ == pytest.approx(probe.r2_cv_)
    assert np.allclose(from_mm.predict(ro), probe.predict(X))


def test_pooling_shapes_and_2d_passthrough():
    acts = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    assert pool_activations(acts).shape == (2, 5)
    assert np.allclose(pool_activations(acts), acts.mean(axis=(1, 2)))
    assert np.allclose(pool_gradients(acts), acts.sum(axis=(1, 2)))
    flat = np.ones((3, 7))
    assert pool_activations(flat) is flat and pool_gradients(flat) is flat
    assert pool_activations(np.ones((2, 3, 4))).shape == (2, 4)  # 1-D spatial (sequences)
    with pytest.raises(InputShapeError):
        pool_activations(np.ones(5))


def test_pool_gradients_is_the_gradient_of_the_pooled_activation():
    """f(a) = Σ W⊙a: moving every position by v moves the pooled activation by v, f by pool_gradients(W)·v."""
    rng = np.random.default_rng(0)
    H, W_, C = 5, 6, 4
    weights = rng.standard_normal((H, W_, C))
    a = rng.standard_normal((1, H, W_, C))
    v = rng.standard_normal(C)

    def f(x):
        return float(np.sum(weights * x))

    moved = a + v  # broadcasting: every spatial position moves by v
    assert np.allclose(pool_activations(moved) - pool_activations(a), v)
    assert f(moved) - f(a) == pytest.approx(float(pool_gradients(weights[None])[0] @ v), rel=1e-12)
    # The mean instead of the sum would be H·W times too small.
    assert not np.isclose(f(moved) - f(a), float(weights.mean(axis=(0, 1)) @ v))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_y_is_refused_with_advice(planted_fit, bad):
    X, y, _, _ = planted_fit
    y = y.copy()
    y[3] = bad
    with pytest.raises(InputShapeError, match="Drop those examples"):
        RegressionProbe().fit(X, y)


def test_non_finite_x_is_refused(planted_fit):
    X, y, _, _ = planted_fit
    X = X.copy()
    X[7, 11] = np.nan
    with pytest.raises(InputShapeError, match=r"indices \[7\]"):
        RegressionProbe().fit(X, y)


def test_constant_y_is_refused(planted_fit):
    X, _, _, _ = planted_fit
    with pytest.raises(InsufficientDataError, match="constant"):
        RegressionProbe().fit(X, np.full(len(X), 3.0))
    with pytest.raises(InsufficientDataError, match="constant"):
        shuffled_r2(X, np.full(len(X), 3.0))


def test_too_few_examples(planted_fit):
    X, y, _, _ = planted_fit
    with pytest.raises(InsufficientDataError, match="at least 5"):
        RegressionProbe(cv=5).fit(X[:4], y[:4])
    with pytest.raises(InsufficientDataError, match="at least 4"):
        RegressionProbe(cv=2).fit(X[:3], y[:3])
    RegressionProbe(cv=2).fit(X[:4], y[:4])  # the minimum works


def test_shape_errors(planted_fit):
    X, y, _, probe = planted_fit
    with pytest.raises(InputShapeError, match="pool_activations"):
        RegressionProbe().fit(X.reshape(len(X), 20, 100), y)
    with pytest.raises(InputShapeError, match="must match"):
        RegressionProbe().fit(X, y[:-1])
    with pytest.raises(InputShapeError, match="features"):
        probe.predict(X[:, :10])
    with pytest.raises(ToolkitError):
        RegressionProbe(alphas=[-1.0]).fit(X, y)
