"""The array-level core (probes.design, probes.cav_rows, probes.rcv_rows, probes.row_stats) without an engine.

Known answers on synthetic arrays: a linear head (every example has the same gradient, so each directional
derivative is exactly w·v), a planted concept direction that must come out significant, "concepts" drawn
from the random distribution that must not be significant more often than the test's level, the null pair
design, the one Monte-Carlo p-value rule and the one RNG rule. Nothing here needs TensorFlow, and the first
test checks that importing the core does not load it.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from probes.cav_rows import CAVFitter, cav_rows, choose_alpha, fit_cav_layer
from probes.design import (AUTO_PARTNERS, MIN_RANDOM_SETS, cav_tasks, min_concept_images, null_pairs,
                           require_size, resample_tasks, seed_for, stack_pool)
from probes.errors import InsufficientDataError
from probes.random_state import as_generator
from probes.rcv_rows import fit_rcv, rcv_rows
from probes.row_stats import COLUMNS, RowSettings, agreement, row_statistics, set_means, total_variance
from probes.stats import monte_carlo_pvalue
from probes.streaming import ProjectionSpace, project_batches
from probes.ubs import ubs_normaliser, ubs_pvalue

ROOT = Path(__file__).resolve().parents[1]
FAST = RowSettings(seed=0, n_boot=200, n_directions=200)


def test_core_imports_neither_tensorflow_nor_concepts():
    code = textwrap.dedent("""
        import sys
        import probes.design, probes.cav_rows, probes.rcv_rows, probes.row_stats, probes.memory
        import probes.random_state, probes.stats, probes.ubs, probes.streaming
        assert "tensorflow" not in sys.modules, "the core imported TensorFlow"
        assert "keras" not in sys.modules, "the core imported Keras"
        assert not [m for m in sys.modules if m == "concepts" or m.startswith("concepts.")], "probes imported concepts"
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


# ---------------------------------------------------------------- helpers: a world of arrays
def _project(space: ProjectionSpace, acts: np.ndarray, grads: np.ndarray):
    return project_batches([({"l": acts}, {"l": grads})], {"l": {"flat": space}})["l"]["flat"]


def _score(concepts: dict[str, np.ndarray], randoms: np.ndarray, rows: list[np.ndarray], acts: np.ndarray,
           grads: np.ndarray, *, seed: int = 0, statistic: str = "shift", robustness: bool = False,
           n_boot: int = FAST.n_boot):
    """Phase 1 -> 2 -> 3 of one layer on arrays: what Analysis does, without the engine."""
    pool, offsets, start = stack_pool(list(concepts.items()), randoms, rows)
    alpha = choose_alpha("auto", 0.1, pool[start:])
    tasks, _, index = cav_tasks([(n, n) for n in concepts], [f"r{j}" for j in range(len(rows))], offsets, seed=seed)
    space = ProjectionSpace()
    fit, consensus = fit_cav_layer(pool, start, tasks, None, index, list(concepts), alpha, CAVFitter(), space,
                                   seed=seed, robustness=robustness)
    proj = _project(space, acts, grads)
    settings = RowSettings(seed=seed, n_boot=n_boot, n_directions=FAST.n_directions, statistic=statistic)
    runs: dict = {}
    out = cav_rows(settings, "l", fit, {"cls": proj}, list(concepts), len(rows), runs, {})
    return out, consensus, runs


def _world(rng, *, d=12, n_sets=8, set_size=15, n_examples=40, planted=0.0, n_concepts=1, concept_size=None):
    axis = np.eye(d)[0]
    randoms = rng.normal(size=(n_sets * set_size, d))
    rows = [np.arange(j * set_size, (j + 1) * set_size) for j in range(n_sets)]
    concepts = {f"c{k}": rng.normal(size=(concept_size or set_size, d)) + planted * axis for k in range(n_concepts)}
    acts = rng.normal(size=(n_examples, d))
    grads = axis + 0.5 * rng.normal(size=(n_examples, d))  # the class score grows along the axis
    return concepts, randoms, rows, acts, grads


# ---------------------------------------------------------------- known answers
def test_linear_head_gives_exactly_w_dot_v():
    """A layer followed only by a linear head: every example's gradient is w, so S = w·v for every example,
    the UBS of v is (w·v)/(‖w‖ c_d), and Br (mean/std of S) is undefined."""
    rng = np.random.default_rng(0)
    d, n = 9, 25
    w = rng.normal(size=d)
    v = rng.normal(size=(3, d))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    space = ProjectionSpace()
    cols = space.add(v)
    proj = _project(space, rng.normal(size=(n, d)), np.tile(w, (n, 1)))
    summary = proj.summary.columns(cols)
    v32 = v.astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(summary.mean, v32 @ w, rtol=1e-5)
    np.testing.assert_allclose(summary.ubs(), (v32 @ w) / (np.linalg.norm(w) * ubs_normaliser(d)), rtol=1e-5)
    assert np.all(summary.tcav_scores()[0] == (v @ w > 0))
    assert np.all(np.isnan(summary.mean_over_std()))


def test_planted_concept_is_significant_and_points_along_the_plant():
    rng = np.random.default_rng(1)
    concepts, randoms, rows, acts, grads = _world(rng, planted=2.0)
    out, consensus, runs = _score(concepts, randoms, rows, acts, grads, robustness=True)
    (row,) = out
    assert set(row) == set(COLUMNS)
    assert row["p_value"] < 0.001 and row["ubs"] > 0 and row["test_statistic"] == "shift"
    assert consensus["c0"][0] > 0.9  # the consensus CAV is the planted axis
    assert row["direction_agreement"] == 1.0 and not row["fragile"]
    assert runs[("cls", "l", "c0")]["shift"].shape == (len(rows),)


@pytest.mark.parametrize("statistic", ["shift", "ubs", "score"])
def test_random_concepts_are_not_significant_beyond_the_level(statistic):
    """Concepts drawn from the random images' distribution: the prediction test's false-positive rate stays
    near its level (0.05); 60 tests in 12 independent worlds, allowing a generous binomial margin."""
    p = []
    for world in range(12):
        rng = np.random.default_rng(100 + world)
        concepts, randoms, rows, acts, grads = _world(rng, n_concepts=5)
        # Few bootstrap replicates: the intervals are not under test here, only the p-values.
        out, _, _ = _score(concepts, randoms, rows, acts, grads, seed=world, statistic=statistic, n_boot=10)
        p += [r["p_value"] for r in out]
    p = np.asarray(p)
    assert np.all((p >= 0) & (p <= 1))
    assert np.mean(p < 0.05) <= 0.15, f"{statistic}: {np.mean(p < 0.05):.2f} of null concepts significant"


def test_small_concepts_against_larger_random_sets_are_not_significant_beyond_the_level():
    """A concept of 6 images against random sets of 30: its CAVs are fitted 6 against 6 and the null pairs
    30 against 30, so by chance alone its runs' shifts are about sqrt(30/6) times longer. Unscaled, 40 % of
    these null concepts came out with p < 0.05; expressed at the null's sample size they stay near 5 %."""
    p = []
    for world in range(12):
        rng = np.random.default_rng(300 + world)
        concepts, randoms, rows, acts, grads = _world(rng, n_concepts=5, set_size=30, concept_size=6)
        out, _, _ = _score(concepts, randoms, rows, acts, grads, seed=world, n_boot=10)
        p += [r["p_value"] for r in out]
    assert np.mean(np.asarray(p) < 0.05) <= 0.15, f"{np.mean(np.asarray(p) < 0.05):.2f} of null concepts significant"


def test_the_sample_size_scale_is_exactly_one_for_sides_of_one_size():
    from probes.cav_rows import _sample_size_scale

    sides = np.array([50.0, 50.0, 50.0, 50.0])
    assert np.array_equal(_sample_size_scale(sides, [2, 3]), np.ones(4))     # bits unchanged: x * 1.0 == x
    np.testing.assert_allclose(_sample_size_scale(np.array([8.0, 8.0, 32.0, 32.0]), [2, 3]), [0.5, 0.5, 1, 1])


def test_rcv_rows_find_a_measure_along_the_gradient():
    rng = np.random.default_rng(2)
    d, n = 8, 60
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = x[:, 0] + 0.1 * rng.normal(size=n)
    space = ProjectionSpace()
    fit = fit_rcv(x, y, space, name="m", layer="l", n_random=8, seed=0)
    grads = np.eye(d)[0] + 0.5 * rng.normal(size=(40, d))
    proj = _project(space, rng.normal(size=(40, d)), grads)
    runs: dict = {}
    (row,) = rcv_rows(FAST, "l", "m", fit, {"cls": proj}, runs, {}, n_random=8)
    assert row["kind"] == "rcv" and row["test_statistic"] == "br" and row["n_random"] == 8
    assert row["r2_cv"] > 0.9 and row["br"] > 0 and row["p_value"] < 0.01 and row["ubs"] > 0
    with pytest.raises(InsufficientDataError, match="at least 10"):
        fit_rcv(x[:9], y[:9], ProjectionSpace(), name="m", layer="l", n_random=4, seed=0)


def test_row_statistics_without_a_defined_statistic_has_no_test():
    space = ProjectionSpace()
    space.add(np.eye(3)[:1])
    proj = _project(space, np.ones((5, 3)), np.ones((5, 3)))
    row = row_statistics(FAST, "cls", "l", "x", "cav", proj, np.ones(5), np.array([1.0, 1.0]),
                         np.array([0.5, 0.4, 0.6]), quality=1.0, zero_fraction=0.0, ubs_nulls={}, runs={},
                         statistic=float("nan"))
    assert np.isnan(row["p_value"]) and not row["significant"]


# ---------------------------------------------------------------- design
@pytest.mark.parametrize("n_sets", [3, 5, 21, 22, 40])
def test_null_pair_design_counts(n_sets):
    every = null_pairs(n_sets, "all")
    assert len(every) == n_sets * (n_sets - 1) // 2 == len(set(every))
    assert len(null_pairs(n_sets, "ring")) == n_sets
    assert null_pairs(n_sets, "star") == [(0, j) for j in range(1, n_sets)]
    auto = null_pairs(n_sets, "auto")
    if n_sets <= AUTO_PARTNERS + 1:
        assert auto == every
    else:  # circulant: every set meets exactly AUTO_PARTNERS others, each unordered pair once
        assert len(auto) == n_sets * AUTO_PARTNERS // 2
        assert len({frozenset(p) for p in auto}) == len(auto)
        assert np.all(np.bincount(np.ravel(auto), minlength=n_sets) == AUTO_PARTNERS)


def test_null_pairs_refuse_too_few_sets_and_unknown_modes():
    with pytest.raises(InsufficientDataError, match=f"at least {MIN_RANDOM_SETS}"):
        null_pairs(MIN_RANDOM_SETS - 1, "all")
    with pytest.raises(ValueError):
        null_pairs(5, "everything")


def test_cav_task_design_and_resamples():
    offsets = {"c:a": np.arange(5), "c:b": np.arange(5, 10), **{f"r:{j}": np.arange(10 + 5 * j, 15 + 5 * j)
                                                                  for j in range(4)}}
    tasks, idents, index = cav_tasks([("a", "ka"), ("b", "kb")], ["r0", "r1", "r2", "r3"], offsets, seed=3)
    assert len(tasks) == 2 * 4 + 6 and index["__pairs__"] == null_pairs(4, "auto")
    assert [t.seed for t in tasks] == [seed_for(3, *i) for i in idents]
    rel, _, rel_index = cav_tasks([("a", "ka"), ("b", "kb")], ["r0", "r1", "r2", "r3"], offsets, seed=3,
                                  relative=True)
    assert np.array_equal(rel[rel_index["a"][0]].neg, offsets["c:b"])
    again = resample_tasks(tasks, index, ["a", "b"], seed=0, n_resamples=3)
    assert [(o, s) for o, s, _ in again] == [("a", 0), ("a", 1), ("a", 2), ("b", 4), ("b", 5), ("b", 6)]
    assert all(np.isin(t.pos, offsets[f"c:{o}"]).all() for o, _, t in again)
    assert [t.pos.tolist() for _, _, t in again] == [t.pos.tolist() for _, _, t in
                                                     resample_tasks(tasks, index, ["a", "b"], seed=0, n_resamples=3)]


def test_minimum_size_rule():
    assert min_concept_images(0.3) == 7 and min_concept_images(0.5) == 5
    require_size(3, 3, "never raised")
    with pytest.raises(InsufficientDataError, match="2 of 3"):
        require_size(2, 3, "{n} of {minimum}")


def test_set_means_and_total_variance():
    pairs = [(0, 1), (0, 2), (1, 2)]
    means = set_means(np.array([1.0, 2.0, 3.0]), pairs, 3, np.array([-1.0, -2.0, -3.0]))
    assert means.tolist() == [1.5, 1.0, -2.5]
    x = np.random.default_rng(0).normal(size=(50, 7))
    assert total_variance(x, block=64) == pytest.approx(x.var(axis=0).sum(), rel=1e-5)


def test_agreement_rules():
    assert agreement(1.0, (np.array([1.0, 2.0]), np.ones(10))) == {"direction_agreement": 1.0, "fragile": False}
    assert agreement(1.0, (np.array([-1.0]), np.ones(4)))["fragile"]  # another estimator reverses it
    assert np.isnan(agreement(0.0, (np.ones(1), np.ones(1)))["direction_agreement"])


# ---------------------------------------------------------------- one p-value rule, one RNG rule
def test_monte_carlo_pvalue_nan_rule():
    null = np.array([-3.0, 1.0, 2.0, -2.0])
    assert monte_carlo_pvalue(2.0, null) == pytest.approx(4 / 5)
    assert monte_carlo_pvalue(2.0, null, two_sided=False) == pytest.approx(2 / 5)
    assert np.isnan(monte_carlo_pvalue(np.nan, null))
    assert np.isnan(monte_carlo_pvalue(1.0, [1.0, np.nan]))
    assert np.all(np.isnan(monte_carlo_pvalue(np.array([1.0, 5.0]), [1.0, np.nan])))
    with pytest.raises(InsufficientDataError):
        monte_carlo_pvalue(1.0, [])
    obs = np.array([[0.5, np.nan], [-4.0, 0.0]])
    assert np.array_equal(monte_carlo_pvalue(obs, null), ubs_pvalue(obs, null), equal_nan=True)


@pytest.mark.parametrize("kind", ["none", "int", "sequence", "generator", "randomstate"])
def test_as_generator_accepts_every_seed_kind(kind):
    make = {"none": lambda: None, "int": lambda: 7, "sequence": lambda: [7, 1],
            "generator": lambda: np.random.default_rng(7), "randomstate": lambda: np.random.RandomState(7)}[kind]
    rng = as_generator(make())
    assert isinstance(rng, np.random.Generator)
    if kind != "none":  # every seeded kind is reproducible
        assert rng.integers(1 << 30) == as_generator(make()).integers(1 << 30)
    if kind == "int":
        assert as_generator(7).normal() == np.random.default_rng(7).normal()
    if kind == "generator":
        g = np.random.default_rng(1)
        assert as_generator(g) is g
