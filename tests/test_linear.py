"""Tests of probes.linear: the dual ridge CAV solver, the scikit-learn path, sensitivities, scores."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression, RidgeClassifier, SGDClassifier
from sklearn.neighbors import KNeighborsClassifier
from sklearn.svm import LinearSVC

import probes.linear as linear
from probes.errors import InputShapeError, InsufficientDataError, ToolkitError
from probes.linear import (CAVBatch, CAVTask, DegenerateProbeWarning,
                           NotALinearClassifierError, PoolIndexError, fit_cav_batch,
                           sensitivities, split_task, tcav_scores)
from probes.linear_probe import LinearProbe
from probes.stats import NonFiniteValuesError


def _planted_pool(seed: int = 0, n_per_side: int = 50, d: int = 5000, strength: float = 0.6,
                  offset: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Concept rows = noise + strength * sqrt(d) * u, counter rows = noise; returns (pool, u).

    Scaling the shift with sqrt(d) keeps the problem equally hard at every width: the estimated
    mean difference has noise of norm ~ sqrt(d * 2 / 35) for 35 training rows per side, so the
    expected cosine between the CAV and u is about strength / sqrt(strength**2 + 0.057) (0.93).
    """
    rng = np.random.default_rng(seed)
    u = rng.normal(size=d)
    u /= np.linalg.norm(u)
    pool = rng.normal(size=(2 * n_per_side, d)) + offset
    pool[:n_per_side] += strength * np.sqrt(d) * u
    return pool.astype(np.float32), u


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# ------------------------------------------------------------------ default solver vs sklearn

@pytest.mark.parametrize("alpha", [0.1, 1.0, 100.0])
def test_dual_solver_matches_ridge_classifier(alpha: float) -> None:
    rng = np.random.default_rng(3)
    # A large common offset (as after a ReLU) stresses the centring of the Gram matrix.
    pool = (rng.normal(size=(120, 800)) + 5.0).astype(np.float32)
    pool[:60, :10] += 0.5
    task = CAVTask(np.arange(60), np.arange(60, 120), seed=11)
    batch = fit_cav_batch(pool, [task], alpha=alpha)
    split = split_task(task, test_size=0.3)
    ref = RidgeClassifier(alpha=alpha, fit_intercept=True).fit(pool[split.train], split.y_train)
    coef = np.ravel(ref.coef_).astype(np.float64)
    norm = np.linalg.norm(coef)
    assert list(ref.classes_) == [-1, 1]       # +1 (concept) is the positive side of coef_
    assert _cos(coef, batch.vectors[0]) > 0.9999
    assert batch.intercepts[0] == pytest.approx(float(np.ravel(ref.intercept_)[0]) / norm,
                                                rel=1e-4, abs=1e-6)
    assert batch.accuracies[0] == pytest.approx(ref.score(pool[split.test], split.y_test))
    assert batch.n_train[0] == len(split.train) and batch.n_test[0] == len(split.test)
    assert batch.n_train[0] + batch.n_test[0] == 120


def test_vectors_unit_norm_float32_and_oriented_towards_concept() -> None:
    pool, _ = _planted_pool(seed=1, d=300)
    tasks = [CAVTask(np.arange(50), np.arange(50, 100), seed=0),
             CAVTask(np.arange(50, 100), np.arange(50), seed=0)]      # reversed roles
    batch = fit_cav_batch(pool, tasks)
    assert isinstance(batch, CAVBatch) and len(batch) == 2
    assert batch.vectors.dtype == np.float32 and batch.vectors.shape == (2, 300)
    np.testing.assert_allclose(np.linalg.norm(batch.vectors, axis=1), 1.0, rtol=1e-5)
    diff = pool[:50].mean(0) - pool[50:].mean(0)
    assert batch.vectors[0] @ diff > 0
    assert batch.vectors[1] @ diff < 0
    # Decision function x.v + b is positive on the concept side.
    dec = pool @ batch.vectors[0] + batch.intercepts[0]
    assert np.mean(dec[:50] > 0) > 0.9 and np.mean(dec[50:] < 0) > 0.9


def test_planted_direction_recovered_in_high_dimension() -> None:
    pool, u = _planted_pool(seed=2, d=5000, offset=3.0)
    batch = fit_cav_batch(pool, [CAVTask(np.arange(50), np.arange(50, 100), seed=4)])
    # With n = 70 training rows in d = 5000 part of the weight spreads over noise directions
    # (expected cosine ~0.93, see _planted_pool); the planted direction dominates.
    assert _cos(batch.vectors[0].astype(np.float64), u) > 0.85
    assert batch.accuracies[0] >= 0.95


def test_pure_noise_gives_chance_accuracy() -> None:
    accs = []
    for seed in range(8):
        rng = np.random.default_rng(100 + seed)
        pool = rng.normal(size=(100, 2000)).astype(np.float32)
        batch = fit_cav_batch(pool, [CAVTask(np.arange(50), np.arange(50, 100), seed=seed)])
        accs.append(batch.accuracies[0])
    # 8 x 30 held-out rows: the mean of chance accuracy has sd ~ 0.03.
    assert 0.35 < np.mean(accs) < 0.65


def test_balancing_unequal_sides() -> None:
    pool, _ = _planted_pool(seed=5, d=200)
    task = CAVTask(np.arange(10), np.arange(10, 100), seed=3)      # 10 concept vs 90 counter
    split = split_task(task, test_size=0.3)
    assert len(split.train) + len(split.test) == 20
    assert (split.y_train > 0).sum() == (split.y_train < 0).sum() == 7
    assert (split.y_test > 0).sum() == (split.y_test < 0).sum() == 3
    assert set(split.train[split.y_train > 0]) | set(split.test[split.y_test > 0]) == set(range(10))
    assert np.all(np.concatenate([split.train[split.y_train < 0], split.test[split.y_test < 0]]) >= 10)
    batch = fit_cav_batch(pool, [task])
    assert batch.n_train[0] == 14 and batch.n_test[0] == 6
    # The larger side is subsampled differently for different seeds.
    other = split_task(CAVTask(task.pos, task.neg, seed=4), test_size=0.3)
    assert set(other.train[other.y_train < 0]) != set(split.train[split.y_train < 0])


def test_seed_determinism() -> None:
    pool, _ = _planted_pool(seed=6, d=400)
    make = lambda seed: [CAVTask(np.arange(50), np.arange(50, 100), seed=seed)]  # noqa: E731
    a = fit_cav_batch(pool, make(1))
    b = fit_cav_batch(pool, make(1))
    c = fit_cav_batch(pool, make(2))
    np.testing.assert_array_equal(a.vectors, b.vectors)
    assert a.accuracies[0] == b.accuracies[0]
    assert not np.allclose(a.vectors, c.vectors)


def test_task_gives_same_cav_alone_or_in_a_batch() -> None:
    rng = np.random.default_rng(7)
    pool = (rng.normal(size=(250, 1500)) + 2.0).astype(np.float32)
    sets = [np.arange(i * 50, (i + 1) * 50) for i in range(5)]
    target = CAVTask(sets[1], sets[2], seed=42)
    others = [CAVTask(sets[i], sets[j], seed=10 * i + j) for i in range(5) for j in range(i + 1, 5)]
    alone = fit_cav_batch(pool, [target])
    batched = fit_cav_batch(pool, others[:3] + [target] + others[3:])
    # Same split and same maths; only rounding differs (the batch's Gram covers more rows, and the
    # products run in float32, so agreement is to float32 precision).
    np.testing.assert_allclose(batched.vectors[3], alone.vectors[0], rtol=0, atol=2e-6)
    assert batched.accuracies[3] == alone.accuracies[0]
    assert batched.intercepts[3] == pytest.approx(alone.intercepts[0], rel=1e-5, abs=1e-9)
    # And each batched CAV equals RidgeClassifier on its own split.
    for p, task in enumerate(others[:3]):
        split = split_task(task)
        coef = np.ravel(RidgeClassifier(alpha=1.0).fit(pool[split.train], split.y_train).coef_)
        assert _cos(coef, batched.vectors[p]) > 0.9999


def test_chunked_passes_match_single_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    pool, _ = _planted_pool(seed=8, d=1000)
    tasks = [CAVTask(np.arange(50), np.arange(50, 100), seed=s) for s in range(3)]
    whole = fit_cav_batch(pool, tasks)
    monkeypatch.setattr(linear, "_BLOCK_BYTES", 8 * 100 * 37)   # 37-column blocks
    chunked = fit_cav_batch(pool, tasks)
    np.testing.assert_allclose(chunked.vectors, whole.vectors, atol=2e-6)
    np.testing.assert_array_equal(chunked.accuracies, whole.accuracies)
    shown = fit_cav_batch(pool, tasks, progress=True)              # progress bars change nothing
    np.testing.assert_allclose(shown.vectors, whole.vectors, atol=2e-6)
    slow = fit_cav_batch(pool, tasks, classifier=RidgeClassifier(), progress=True)
    assert np.all(np.sum(slow.vectors * whole.vectors, axis=1) > 0.9999)


def test_memmap_pool_and_subset_of_rows(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    pool, _ = _planted_pool(seed=9, d=700)
    mm = np.lib.format.open_memmap(tmp_path / "pool.npy", mode="w+", dtype=np.float32,
                                   shape=(130, 700))
    mm[:100] = pool
    mm[100:] = 99.0                                   # unused rows must not matter
    mm.flush()
    mm = np.load(tmp_path / "pool.npy", mmap_mode="r")
    tasks = [CAVTask(np.arange(0, 50, 2), np.arange(50, 100, 2), seed=0),
             CAVTask(np.arange(1, 50, 2), np.arange(51, 100, 2), seed=1)]
    ref = fit_cav_batch(np.array(pool), tasks)
    monkeypatch.setattr(linear, "_BLOCK_BYTES", 8 * 100 * 64)
    got = fit_cav_batch(mm, tasks)
    np.testing.assert_allclose(got.vectors, ref.vectors, atol=2e-6)
    np.testing.assert_array_equal(got.accuracies, ref.accuracies)


def test_duplicate_rows_within_a_task() -> None:
    pool, _ = _planted_pool(seed=10, d=300)
    pos = np.concatenate([np.arange(25), np.arange(25)])           # each concept row twice
    task = CAVTask(pos, np.arange(50, 100), seed=0)
    batch = fit_cav_batch(pool, [task])
    split = split_task(task)
    coef = np.ravel(RidgeClassifier(alpha=1.0).fit(pool[split.train], split.y_train).coef_)
    assert _cos(coef, batch.vectors[0]) > 0.9999


# ------------------------------------------------------------------ scikit-learn classifiers

@pytest.mark.parametrize("classifier", [
    SGDClassifier(alpha=0.01, max_iter=1000, tol=1e-3),
    LogisticRegression(max_iter=2000),
    LinearSVC(),
    RidgeClassifier(alpha=1.0),
])
def test_sklearn_classifiers_agree_in_sign_with_default(classifier) -> None:
    pool, u = _planted_pool(seed=11, d=400, strength=1.0)
    tasks = [CAVTask(np.arange(50), np.arange(50, 100), seed=0),
             CAVTask(np.arange(50, 100), np.arange(50), seed=1)]
    default = fit_cav_batch(pool, tasks)
    other = fit_cav_batch(pool, tasks, classifier=classifier)
    np.testing.assert_allclose(np.linalg.norm(other.vectors, axis=1), 1.0, rtol=1e-5)
    for p in range(2):
        # Hinge and logistic losses pick other separating directions in d >> n (SGD's
        # solution has cosine ~0.6 with ridge's here); they must agree in sign.
        assert _cos(other.vectors[p], default.vectors[p]) > 0.3
        assert other.accuracies[p] >= 0.95
    assert other.vectors[0] @ u > 0 and other.vectors[1] @ u < 0
    # Seeded: the same call gives the same vectors.
    again = fit_cav_batch(pool, tasks, classifier=classifier)
    np.testing.assert_array_equal(again.vectors, other.vectors)


def test_ridge_classifier_path_matches_default() -> None:
    pool, _ = _planted_pool(seed=12, d=300)
    tasks = [CAVTask(np.arange(50), np.arange(50, 100), seed=5)]
    default = fit_cav_batch(pool, tasks, alpha=2.0)
    slow = fit_cav_batch(pool, tasks, classifier=RidgeClassifier(alpha=2.0))
    assert _cos(default.vectors[0], slow.vectors[0]) > 0.9999
    assert default.accuracies[0] == slow.accuracies[0]
    assert default.intercepts[0] == pytest.approx(slow.intercepts[0], rel=1e-3, abs=1e-5)


def test_orientation_follows_classes_order() -> None:
    """A consistent model whose positive side is classes_[1] = 0 (counter) is flipped back."""

    class ReversedClasses(LogisticRegression):
        def fit(self, X, y):
            super().fit(X, y)
            # Same model, described with the classes in the other order.
            self.classes_ = self.classes_[::-1].copy()
            self.coef_ = -self.coef_
            self.intercept_ = -self.intercept_
            return self

    pool, u = _planted_pool(seed=13, d=200)
    tasks = [CAVTask(np.arange(50), np.arange(50, 100), seed=0)]
    plain = fit_cav_batch(pool, tasks, classifier=LogisticRegression(max_iter=1000))
    rev = fit_cav_batch(pool, tasks, classifier=ReversedClasses(max_iter=1000))
    assert rev.vectors[0] @ u > 0.5
    np.testing.assert_allclose(rev.vectors, plain.vectors, atol=1e-6)
    assert rev.intercepts[0] == pytest.approx(plain.intercepts[0])
    assert rev.accuracies[0] == plain.accuracies[0]


def test_estimator_without_coef_is_rejected() -> None:
    pool, _ = _planted_pool(seed=14, d=50)
    task = CAVTask(np.arange(50), np.arange(50, 100), seed=0)
    with pytest.raises(NotALinearClassifierError, match="coef_"):
        fit_cav_batch(pool, [task], classifier=KNeighborsClassifier())
    with pytest.raises(ToolkitError):
        fit_cav_batch(pool, [task], classifier=object())


# ------------------------------------------------------------------ errors

def test_too_few_examples() -> None:
    pool = np.random.default_rng(0).normal(size=(20, 10)).astype(np.float32)
    with pytest.raises(InsufficientDataError, match="1 example"):
        fit_cav_batch(pool, [CAVTask(np.array([0]), np.arange(1, 20), seed=0)])
    # 2 per side with test_size=0.3: ceil(1.2) = 2 test rows, 2 training rows: just enough.
    ok = fit_cav_batch(pool, [CAVTask(np.array([0, 1]), np.array([2, 3]), seed=0)])
    assert ok.n_train[0] == 2 and ok.n_test[0] == 2
    # test_size=0.7 with 3 per side gives ceil(4.2) = 5 test rows and 1 training row: 4 per side
    # (6 test, 2 training) is the least that works.
    with pytest.raises(InsufficientDataError, match="at least 4"):
        fit_cav_batch(pool, [CAVTask(np.arange(3), np.arange(3, 6), seed=0)], test_size=0.7)
    assert fit_cav_batch(pool, [CAVTask(np.arange(4), np.arange(4, 8), seed=0)],
                         test_size=0.7).n_train[0] == 2
    with pytest.raises(InsufficientDataError):
        fit_cav_batch(pool, [CAVTask(np.array([], dtype=int), np.arange(5), seed=0)])


def test_bad_indices_and_arguments() -> None:
    pool = np.random.default_rng(0).normal(size=(20, 10)).astype(np.float32)
    with pytest.raises(PoolIndexError, match="out of range for a pool of 20 rows"):
        fit_cav_batch(pool, [CAVTask(np.arange(5), np.arange(15, 21), seed=0)])
    with pytest.raises(PoolIndexError, match="negative"):
        fit_cav_batch(pool, [CAVTask(np.arange(-1, 4), np.arange(10, 15), seed=0)])
    with pytest.raises(PoolIndexError, match="integer"):
        fit_cav_batch(pool, [CAVTask(np.arange(5.0), np.arange(10, 15), seed=0)])
    with pytest.raises(IndexError):                     # still a built-in IndexError
        fit_cav_batch(pool, [CAVTask(np.arange(5), np.arange(18, 25), seed=0)])
    with pytest.raises(ValueError, match="alpha"):
        fit_cav_batch(pool, [CAVTask(np.arange(5), np.arange(5, 10), seed=0)], alpha=0.0)
    with pytest.raises(ValueError, match="test_size"):
        fit_cav_batch(pool, [CAVTask(np.arange(5), np.arange(5, 10), seed=0)], test_size=1.0)
    with pytest.raises(InputShapeError):
        fit_cav_batch(pool[0], [])
    bad = pool.copy()
    bad[3, 4] = np.nan
    with pytest.raises(NonFiniteValuesError):
        fit_cav_batch(bad, [CAVTask(np.arange(5), np.arange(5, 10), seed=0)])
    empty = fit_cav_batch(pool, [])
    assert empty.vectors.shape == (0, 10) and len(empty) == 0


def test_constant_activations_give_zero_vector_with_warning() -> None:
    pool = np.full((20, 30), 0.1, dtype=np.float32)
    with pytest.warns(DegenerateProbeWarning):
        batch = fit_cav_batch(pool, [CAVTask(np.arange(10), np.arange(10, 20), seed=0)])
    assert np.all(batch.vectors == 0)
    assert batch.accuracies[0] == 0.5


# ------------------------------------------------------------------ LinearProbe

def _concept_labels(n_concept: int, n_counter: int) -> np.ndarray:
    return np.r_[np.ones(n_concept, dtype=int), np.zeros(n_counter, dtype=int)]


def test_linear_probe_estimator() -> None:
    pool, u = _planted_pool(seed=15, d=500)
    probe = LinearProbe(random_state=3)
    y = _concept_labels(50, 50)
    assert probe.fit(pool, y) is probe
    batch = fit_cav_batch(pool, [CAVTask(np.arange(50), np.arange(50, 100), seed=3)])
    np.testing.assert_array_equal(probe.cav_, batch.vectors[0])
    assert probe.vector_ is probe.cav_ and probe.coef_.shape == (1, 500)
    assert probe.accuracy_ == batch.accuracies[0]
    assert probe.n_train_ == 70 and probe.n_test_ == 30 and probe.n_features_in_ == 500
    assert probe.seed_ == 3
    assert probe.classes_.tolist() == [0, 1]
    dec = probe.decision_function(pool)
    np.testing.assert_allclose(dec, pool.astype(np.float64) @ probe.cav_ + probe.intercept_,
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(probe.predict(pool), (dec > 0).astype(int))
    assert probe.score(pool, y) == np.mean(probe.predict(pool) == y)
    assert probe.get_params()["alpha"] == 1.0
    with pytest.raises(InputShapeError):
        probe.decision_function(pool[:, :10])
    probe_lr = LinearProbe(classifier=LogisticRegression(max_iter=1000), random_state=0)
    assert probe_lr.fit(pool, y).cav_ @ u > 0
    unseeded = LinearProbe().fit(pool, y)
    assert isinstance(unseeded.seed_, int)


def test_linear_probe_labels_in_any_order_and_any_names() -> None:
    pool, u = _planted_pool(seed=15, d=500)
    order = np.random.default_rng(0).permutation(100)
    labels = np.where(_concept_labels(50, 50) == 1, "concept", "another")[order]
    probe = LinearProbe(random_state=3).fit(pool[order], labels)
    # The larger label ("concept" > "another") is the concept: the CAV points towards it.
    assert probe.classes_.tolist() == ["another", "concept"] and probe.cav_ @ u > 0
    assert set(probe.predict(pool[:3])) <= {"another", "concept"}


def test_linear_probe_two_array_call_is_deprecated_but_unchanged() -> None:
    pool, _ = _planted_pool(seed=15, d=500)
    new = LinearProbe(random_state=3).fit(pool, _concept_labels(50, 50))
    with pytest.warns(FutureWarning, match=r"fit\(X, y\)"):
        old = LinearProbe(random_state=3).fit(pool[:50], pool[50:])
    with pytest.warns(FutureWarning):
        keywords = LinearProbe(random_state=3).fit(X_concept=pool[:50], X_counter=pool[50:])
    for probe in (old, keywords):
        np.testing.assert_array_equal(probe.cav_, new.cav_)
        assert probe.intercept_ == new.intercept_ and probe.accuracy_ == new.accuracy_
        assert probe.classes_.tolist() == [0, 1]
    with pytest.raises(TypeError):
        LinearProbe().fit(pool, X_counter=pool)


def test_linear_probe_in_a_pipeline_and_cross_validation() -> None:
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    pool, _ = _planted_pool(seed=15, d=200)
    y = _concept_labels(50, 50)
    scores = cross_val_score(make_pipeline(StandardScaler(), LinearProbe(random_state=0)), pool, y, cv=3)
    assert scores.shape == (3,) and scores.mean() > 0.8


def test_linear_probe_documented_limits() -> None:
    # A CAV separates two classes, each of which needs rows on both sides of the held-out split.
    pool, _ = _planted_pool(seed=15, d=20)
    with pytest.raises(ValueError, match="Only binary classification"):
        LinearProbe().fit(pool[:90], np.arange(90) % 3)
    with pytest.raises(InsufficientDataError, match="at least 2"):
        LinearProbe().fit(pool[:11], _concept_labels(1, 10))


def test_linear_probe_unfitted() -> None:
    from sklearn.exceptions import NotFittedError
    with pytest.raises(NotFittedError):
        LinearProbe().decision_function(np.zeros((2, 3)))


# ------------------------------------------------------------------ sensitivities and scores

def test_sensitivities_equal_explicit_loop(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(16)
    grads = rng.normal(size=(13, 301)).astype(np.float32)
    grads[4] = 0.0
    vecs = rng.normal(size=(7, 301)).astype(np.float32)
    expected = np.array([[float(np.dot(g.astype(np.float64), v.astype(np.float64))) for v in vecs]
                         for g in grads])
    got = sensitivities(grads, vecs)
    assert got.shape == (13, 7) and got.dtype == np.float64
    # float32 products (summed in float64): float32 precision relative to the largest terms.
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)
    assert np.all(got[4] == 0.0)
    np.testing.assert_allclose(sensitivities(grads, vecs[2]), expected[:, 2], rtol=1e-5, atol=1e-4)
    # Memmapped gradients, read in blocks.
    mm = np.lib.format.open_memmap(tmp_path / "g.npy", mode="w+", dtype=np.float32, shape=grads.shape)
    mm[:] = grads
    mm.flush()
    monkeypatch.setattr(linear, "_BLOCK_BYTES", 8 * 20 * 16)
    np.testing.assert_allclose(sensitivities(np.load(tmp_path / "g.npy", mmap_mode="r"), vecs),
                               expected, rtol=1e-5, atol=1e-4)
    with pytest.raises(InputShapeError):
        sensitivities(grads, vecs[:, :10])


def test_tcav_scores_count_zeros_separately() -> None:
    sens = np.array([[1.0, 0.0, -1.0],
                     [0.0, 0.0, -2.0],
                     [2.0, 0.0, 3.0],
                     [-1.0, 0.0, 0.0]])
    pos, zero = tcav_scores(sens)
    np.testing.assert_allclose(pos, [0.5, 0.0, 0.25])
    np.testing.assert_allclose(zero, [0.25, 1.0, 0.25])
    p1, z1 = tcav_scores(np.array([1.0, 0.0, -1.0, 2.0]))
    assert p1 == 0.5 and z1 == 0.25
    with pytest.raises(InsufficientDataError):
        tcav_scores(np.zeros((0, 3)))
    with pytest.raises(NonFiniteValuesError):
        tcav_scores(np.array([[np.nan]]))


def test_end_to_end_scores_from_planted_gradients() -> None:
    """Gradients aligned with the concept give TCAV score 1; random gradients give ~0.5."""
    pool, u = _planted_pool(seed=17, d=1000, strength=1.0)
    batch = fit_cav_batch(pool, [CAVTask(np.arange(50), np.arange(50, 100), seed=0)])
    rng = np.random.default_rng(0)
    aligned = u[None, :] * 5 + rng.normal(size=(40, 1000)) * 0.01
    pos, zero = tcav_scores(sensitivities(aligned.astype(np.float32), batch.vectors))
    assert pos[0] == 1.0 and zero[0] == 0.0
    pos, _ = tcav_scores(sensitivities(rng.normal(size=(400, 1000)), batch.vectors))
    assert 0.4 < pos[0] < 0.6


def test_linear_probe_still_importable_from_probes_linear() -> None:
    from probes.linear import LinearProbe as old_home

    assert old_home is LinearProbe
