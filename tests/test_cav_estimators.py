"""The CAV estimator families, the shift statistic, robustness columns and ``compat="tcav"`` (issue 9).

* every batched dual solver reproduces its scikit-learn counterpart on the same rows;
* on the hand-built stripes model (``tests/synthetic.py``) every estimator finds the planted
  direction in a layer whose gradient varies (conv1) and in one whose gradient is identical for
  every example (conv2, followed only by pooling and a linear head), and the default (difference
  of means + shift statistic) is significant in both;
* noise concepts are not significant more often than the nominal rate;
* ``compat="tcav"`` gives exactly Student's t-test between the concept runs and the fixed random
  set's runs, uncorrected.
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import scipy.stats  # noqa: E402
from sklearn.linear_model import LogisticRegression, RidgeClassifier  # noqa: E402
from sklearn.svm import LinearSVC  # noqa: E402

import concepts  # noqa: E402
from concepts.analysis import DEFAULT_CAV, DEFAULT_STATISTIC  # noqa: E402
from probes.cav_solvers import METHODS  # noqa: E402
from probes.linear import CAVTask, fit_cav_batch, split_task  # noqa: E402
from synthetic import build_model, make_data  # noqa: E402

FAST = dict(n_random=8, n_directions=200, progress=False)


# --------------------------------------------------------------------------- solvers vs scikit-learn
REFERENCES = {
    "ridge": lambda: RidgeClassifier(alpha=1.0),
    "logistic": lambda: LogisticRegression(C=1.0, tol=1e-10, max_iter=20000),
    "svm": lambda: LinearSVC(C=1.0, tol=1e-8, max_iter=200000),
    "svm_hinge": lambda: LinearSVC(C=1.0, loss="hinge", tol=1e-8, max_iter=400000),
}


@pytest.fixture(scope="module")
def small_pool():
    rng = np.random.default_rng(0)
    pool = rng.normal(size=(90, 25)) + 1.5
    pool[:30, :3] += 0.8
    pool[30:60, 3:5] -= 0.5
    tasks = [CAVTask(np.arange(30), np.arange(30, 60), seed=1), CAVTask(np.arange(30), np.arange(60, 90), seed=2),
             CAVTask(np.arange(30, 60), np.arange(60, 90), seed=3)]
    return pool, tasks


@pytest.mark.parametrize("method", sorted(REFERENCES) + ["mean"])
def test_batched_solver_matches_scikit_learn(small_pool, method):
    pool, tasks = small_pool
    batch = fit_cav_batch(pool, tasks, method=method)
    for p, task in enumerate(tasks):
        split = split_task(task)
        x, y = pool[split.train], (split.y_train > 0).astype(int)
        if method == "mean":
            w = x[y == 1].mean(axis=0) - x[y == 0].mean(axis=0)
        else:
            # scikit-learn on rows centred on their mean, as fit_cav_batch does for any classifier.
            w = np.ravel(REFERENCES[method]().fit(x - x.mean(axis=0), y).coef_)
        cosine = float(w @ batch.vectors[p]) / np.linalg.norm(w)
        assert cosine >= 0.999, (method, p, cosine)


def test_every_method_is_covered_and_unknown_method_is_named(small_pool):
    pool, tasks = small_pool
    assert set(METHODS) == set(REFERENCES) | {"mean"}
    with pytest.raises(ValueError, match="logistic"):
        fit_cav_batch(pool, tasks, method="lasso")


def test_shift_is_the_mean_displacement_along_the_vector(small_pool):
    pool, tasks = small_pool
    for method in ("mean", "logistic"):
        batch = fit_cav_batch(pool, tasks, method=method)
        for p, task in enumerate(tasks):
            split = split_task(task)
            rows = np.concatenate([split.train, split.test])
            labels = np.concatenate([split.y_train, split.y_test]) > 0
            expected = batch.vectors[p] @ (pool[rows[labels]].mean(axis=0) - pool[rows[~labels]].mean(axis=0))
            assert batch.shifts[p] == pytest.approx(expected, rel=1e-4, abs=1e-6)


# --------------------------------------------------------------------------- planted directions
@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("cav_est"), n_class=16, n_concept=20, n_pool=200, seed=5)


@pytest.fixture(scope="module")
def model():
    return build_model()


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def _row(table, cls, layer, concept):
    match = table[(table["class"] == cls) & (table["layer"] == layer) & (table["concept"] == concept)]
    assert len(match) == 1
    return match.iloc[0]


@pytest.mark.parametrize("method", METHODS)
def test_every_estimator_finds_the_planted_direction_in_both_layer_types(model, data, cache, method):
    concepts_ = [data / "concepts" / "horizontal", data / "concepts" / "vertical"]
    table = concepts.score(model, ["conv1", "conv2"], concepts_, data=data, cav=method, cache_dir=cache,
                           robustness=False, **FAST).to_frame()
    for layer in ("conv1", "conv2"):   # conv2: identical gradient for every example
        assert _row(table, "striped", layer, "horizontal")["ubs"] > 0
        assert _row(table, "striped", layer, "vertical")["ubs"] < 0
        assert _row(table, "other", layer, "horizontal")["ubs"] < 0


def test_default_is_significant_where_every_example_has_the_same_gradient(model, data, cache):
    """conv2 is followed only by pooling and a linear head; the sign-count score is degenerate there."""
    assert (DEFAULT_CAV, DEFAULT_STATISTIC) == ("mean", "shift")
    table = concepts.score(model, "conv2", data / "concepts" / "horizontal", data=data, cache_dir=cache,
                           **FAST).to_frame()
    row = _row(table, "striped", "conv2", "horizontal")
    assert row["significant"] and row["ubs"] > 0 and row["test_statistic"] == "shift"
    assert row["score"] in (0.0, 1.0)   # every example moves the same way: the sign count says nothing
    assert row["direction_agreement"] >= 0.8 and not row["fragile"]


def test_noise_concepts_are_not_significant_more_often_than_nominal(model, tmp_path):
    data = make_data(tmp_path / "d", n_class=16, n_concept=16, n_pool=220, n_noise_concepts=12, seed=11)
    noise = sorted((data / "concepts").glob("noise_*"))
    table = concepts.score(model, ["conv1", "conv2"], noise, data=data, cache_dir=tmp_path / "c",
                           robustness=False, **FAST).to_frame()
    p = table["p_value"].to_numpy(float)
    assert len(p) == 12 * 2 * 2 and np.isfinite(p).all()
    # 48 tests at 5 %: 2.4 expected; P(X >= 8) < 0.002 under the nominal rate.
    assert (p < 0.05).sum() < 8
    assert not table["significant"].any()


def test_robustness_columns_flag_a_direction_that_depends_on_the_choice(model, data, cache):
    table = concepts.score(model, "conv1", [data / "concepts" / "horizontal"], data=data, cache_dir=cache,
                           **FAST).to_frame()
    assert table["direction_agreement"].between(0, 1).all()
    assert table["fragile"].dtype == bool
    strong = _row(table, "striped", "conv1", "horizontal")
    assert strong["direction_agreement"] == 1.0 and not strong["fragile"]


# --------------------------------------------------------------------------- the original procedure
def test_compat_tcav_is_students_t_test_against_one_fixed_random_set(model, data, cache):
    result = concepts.score(model, "conv1", data / "concepts" / "horizontal", data=data, compat="tcav",
                            cache_dir=cache, robustness=False, **FAST)
    table = result.to_frame()
    assert (table["test_statistic"] == "tcav_ttest").all()
    assert np.allclose(table["q_value"], table["p_value"])   # no correction, as the original
    for _, row in table.iterrows():
        run = result.runs[(row["class"], "conv1", "horizontal")]
        assert len(run["scores"]) == FAST["n_random"] and len(run["null_scores"]) == FAST["n_random"] - 1
        expected = scipy.stats.ttest_ind(run["scores"], run["null_scores"]).pvalue
        if np.ptp(run["scores"]) == 0 and np.ptp(run["null_scores"]) == 0:
            expected = 1.0 if run["scores"][0] == run["null_scores"][0] else 0.0
        assert row["p_value"] == pytest.approx(expected, rel=1e-9)
        assert row["score"] == pytest.approx(np.mean(run["scores"]))
    assert _row(table, "striped", "conv1", "horizontal")["score"] > 0.9
