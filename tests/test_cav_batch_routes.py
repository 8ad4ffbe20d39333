"""The speed routes of the CAV batch give the answers of the plain route (issue 13).

* the Gram matrix computed only where some task needs it (probes.gram) equals the full one there;
* difference-of-means CAVs fitted without the Gram matrix (probes.row_values) equal the dual fit;
* one batch with a method per task equals one batch per method;
* a RowStack pool (probes.row_stack) reads like the stacked array and gives the same CAVs, bit for bit;
* small products on single-threaded BLAS threads (probes.blas_threads) equal the serial products.
"""
from __future__ import annotations

import numpy as np
import pytest

import probes.dual_fit as dual_fit
from probes.blas_threads import run_products
from probes.design import cav_tasks, stack_pool
from probes.gram import centred_gram, reuse_gram, task_tiles
from probes.linear import CAVTask, fit_cav_batch
from probes.row_stack import RowStack
from probes.row_values import RowValues


def _pool_and_sets(seed=0, n_concept=30, n_sets=6, set_size=30, d=3000, planted=True):
    rng = np.random.default_rng(seed)
    u = rng.normal(size=d)
    u /= np.linalg.norm(u)
    # Post-ReLU-like activations: a large common offset, which is what the centring is for.
    concept = np.maximum(rng.normal(1.0, 1.0, (n_concept, d)), 0) + (0.6 * np.sqrt(d) * u if planted else 0)
    randoms = np.maximum(rng.normal(1.0, 1.0, (n_sets * set_size, d)), 0)
    rows = [np.arange(j * set_size, (j + 1) * set_size) for j in range(n_sets)]
    return concept.astype(np.float32), randoms.astype(np.float32), rows


def _tasks(concept, randoms, rows, null_mode="all"):
    pool, offsets, start = stack_pool([("c", concept)], randoms, rows)
    tasks, _, index = cav_tasks([("c", "key-c")], [f"r{j}" for j in range(len(rows))], offsets, seed=3,
                                null_mode=null_mode)
    return pool, tasks, index


def _task_rows(tasks, union):
    return [np.searchsorted(union, np.concatenate([t.pos, t.neg])) for t in tasks]


def test_blockwise_gram_equals_full_gram_where_needed():
    concept, randoms, rows = _pool_and_sets()
    pool, tasks, index = _tasks(concept, randoms, rows)
    concept_only = [tasks[t] for t in index["c"]]        # no random-vs-random task
    union = np.arange(len(pool))
    blocks = [(0, 1000), (1000, 2000), (2000, 3000)]
    full = centred_gram(pool, union, slice(None), blocks)[0]
    part = centred_gram(pool, union, slice(None), blocks, task_rows=_task_rows(concept_only, union))[0]
    bounds, needed = task_tiles(len(union), _task_rows(concept_only, union))
    sizes = np.diff(bounds)
    mask = np.repeat(np.repeat(needed, sizes, 0), sizes, 1)
    # The concept against everything and each random set against itself; nothing between two sets.
    assert mask[:30].all() and not mask[30:60, 60:90].any() and mask[30:60, 30:60].all()
    np.testing.assert_allclose(part[mask], full[mask], rtol=1e-6, atol=1e-6 * np.abs(full).max())
    assert np.isnan(part[~mask]).all()
    assert np.array_equal(part, part.T, equal_nan=True)
    # Every pair of random sets is needed by an all-pairs null: one full product, bit for bit.
    again = centred_gram(pool, union, slice(None), blocks, task_rows=_task_rows(tasks, union))[0]
    assert np.array_equal(again, full)


def test_a_blockwise_memo_entry_serves_only_requests_within_it():
    concept, randoms, rows = _pool_and_sets(d=500)
    pool, tasks, index = _tasks(concept, randoms, rows)
    union = np.arange(len(pool))
    few = _task_rows([tasks[t] for t in index["c"]][:1], union)
    with reuse_gram():
        part = centred_gram(pool, union, slice(None), [(0, 500)], task_rows=few)[0]
        assert centred_gram(pool, union, slice(None), [(0, 500)], task_rows=few)[0] is part
        full = centred_gram(pool, union, slice(None), [(0, 500)])[0]
        assert not np.isnan(full).any()


@pytest.mark.parametrize("null_mode", ["all", "ring"])
def test_mean_cavs_without_the_gram_matrix_equal_the_dual_fit(monkeypatch, null_mode):
    concept, randoms, rows = _pool_and_sets(seed=1)
    pool, tasks, _ = _tasks(concept, randoms, rows, null_mode)
    fast = fit_cav_batch(pool, tasks, method="mean")
    monkeypatch.setattr(dual_fit, "PRIMAL_METHODS", ())
    plain = fit_cav_batch(pool, tasks, method="mean")
    np.testing.assert_allclose(fast.vectors, plain.vectors, rtol=0, atol=1e-6)
    np.testing.assert_allclose(fast.shifts, plain.shifts, rtol=1e-5)
    np.testing.assert_allclose(fast.intercepts, plain.intercepts, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(fast.accuracies, plain.accuracies)
    # The planted concept is found by both routes: its CAVs point along the planted direction.
    assert fast.accuracies[:6].min() > 0.9


def test_a_batch_with_one_method_per_task_equals_one_batch_per_method():
    concept, randoms, rows = _pool_and_sets(seed=2)
    pool, tasks, index = _tasks(concept, randoms, rows)
    concept_tasks = [tasks[t] for t in index["c"]]
    methods = ["mean"] * len(tasks) + ["logistic"] * len(concept_tasks) + ["ridge"] * len(concept_tasks)
    both = fit_cav_batch(pool, [*tasks, *concept_tasks, *concept_tasks], method=methods, alpha=50.0)
    parts = [fit_cav_batch(pool, tasks, method="mean"),
             fit_cav_batch(pool, concept_tasks, method="logistic"),
             fit_cav_batch(pool, concept_tasks, method="ridge", alpha=50.0)]
    for name in ("vectors", "accuracies", "shifts"):
        np.testing.assert_allclose(getattr(both, name), np.concatenate([getattr(p, name) for p in parts]),
                                   rtol=1e-5, atol=1e-6, err_msg=name)
    with pytest.raises(ValueError, match="one per task"):
        fit_cav_batch(pool, tasks, method=["mean"])
    with pytest.raises(ValueError, match="method must be one of"):
        fit_cav_batch(pool, tasks[:1], method=["lasso"])


def test_row_stack_reads_like_the_stacked_array():
    rng = np.random.default_rng(0)
    parts = [rng.random((4, 6), dtype=np.float32), rng.random((7, 6), dtype=np.float32), np.ones((0, 6), np.float32)]
    stack, whole = RowStack(parts), np.concatenate(parts)
    assert stack.shape == whole.shape and len(stack) == 11
    for rows in (slice(None), slice(2, 9), slice(1, 10, 3), np.array([0, 3, 4, 10]), np.array([10, 0, 5, 5]),
                 np.arange(11) % 2 == 0, np.array([-1])):
        np.testing.assert_array_equal(stack[rows, 1:4], whole[rows, 1:4])
        np.testing.assert_array_equal(stack[rows], whole[rows])
    buffer = np.empty(100, np.float32)
    assert np.shares_memory(stack.read(slice(None), slice(0, 6), out=buffer), buffer)
    np.testing.assert_array_equal(np.asarray(stack), whole)
    with pytest.raises(IndexError):
        stack[np.array([11])]
    with pytest.raises(ValueError, match="one width"):
        RowStack([np.ones((2, 3)), np.ones((2, 4))])


def test_cavs_on_a_row_stack_equal_cavs_on_the_stacked_pool():
    concept, randoms, rows = _pool_and_sets(seed=4)
    pool, tasks, index = _tasks(concept, randoms, rows)
    stack, _, _ = stack_pool([("c", concept)], randoms, rows, copy=False)
    assert isinstance(stack, RowStack)
    methods = ["mean"] * len(tasks) + ["logistic"] * len(index["c"])
    batch = [*tasks, *(tasks[t] for t in index["c"])]
    a = fit_cav_batch(pool, batch, method=methods)
    b = fit_cav_batch(stack, batch, method=methods)
    for name in ("vectors", "accuracies", "shifts", "intercepts"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    # Some rows unused: the pool is read by fancy indexing.
    few = [CAVTask(np.arange(0, 20), np.arange(40, 70), seed=0)]
    np.testing.assert_array_equal(fit_cav_batch(pool, few).vectors, fit_cav_batch(stack, few).vectors)


def test_row_values_tile_products_equal_the_dense_product():
    rng = np.random.default_rng(5)
    block = rng.random((180, 40), dtype=np.float32)
    sides = [np.arange(0, 60), np.arange(60, 120), np.arange(120, 180)]
    task_rows = [sides[i // 2] for i in range(6)] + [np.array([5, 5, 7])]
    weights = rng.random((len(task_rows), 40), dtype=np.float32)
    values = RowValues(180, task_rows)
    assert values.plan is not None and [(r0, r1) for r0, r1, _ in values.plan] == [(0, 60), (60, 120), (120, 180)]
    values.add(block, weights)
    dense = block.astype(np.float64) @ weights.T.astype(np.float64)
    for j, r in enumerate(task_rows):
        np.testing.assert_allclose(values.of(j, r), dense[r, j], rtol=1e-5)


def test_parallel_products_equal_serial_products():
    rng = np.random.default_rng(6)
    a = rng.random((300, 200), dtype=np.float32)
    out = np.zeros((300, 300))
    tiles = [(i, i + 50) for i in range(0, 300, 50)]

    def product(r0, r1):
        def run():
            out[r0:r1] += a[r0:r1] @ a.T
        return run

    run_products([(r1 - r0, product(r0, r1)) for r0, r1 in tiles])
    np.testing.assert_allclose(out, a.astype(np.float64) @ a.T.astype(np.float64), rtol=1e-5)


def test_row_values_merge_the_ragged_tiles_of_bootstrap_resamples():
    rng = np.random.default_rng(7)
    concept = np.arange(0, 50)
    sets = [np.arange(50 + 50 * j, 100 + 50 * j) for j in range(10)]
    task_rows = [np.concatenate([concept, s]) for s in sets]
    task_rows += [np.concatenate([rng.choice(concept, 50), sets[j % 10]]) for j in range(10)]   # resamples
    values = RowValues(550, task_rows)
    # One tile for the concept's rows (not one per distinct set of resamples), one per random set.
    assert values.plan is not None and len(values.plan) == 11
    block = rng.random((550, 30), dtype=np.float32)
    weights = rng.random((len(task_rows), 30), dtype=np.float32)
    values.add(block, weights)
    dense = block.astype(np.float64) @ weights.T.astype(np.float64)
    for j, r in enumerate(task_rows):
        np.testing.assert_allclose(values.of(j, r), dense[r, j], rtol=1e-5)


def test_vectors_that_span_every_row_do_not_merge_the_random_sets_into_one_dense_tile():
    # A new concept's batch: its CAV on each random set (held-out rows of the concept resampled), plus
    # two averaged vectors over every row. Judged step by step, the merges cascaded into one tile of
    # every row and vector (seven times the arithmetic); judged against the runs' own cost they do not.
    from probes.row_values import MERGE_COST, SparseProduct, _membership, _merged_tiles
    rng = np.random.default_rng(3)
    concept = np.arange(0, 50)
    sets = [np.arange(50 + 50 * j, 100 + 50 * j) for j in range(20)]
    task_rows = [np.concatenate([concept, s]) for s in sets]
    task_rows += [np.concatenate([rng.choice(concept, 40), rng.choice(sets[j], 40)]) for j in range(10)]
    task_rows += [np.arange(1050)] * 2
    member = _membership(1050, task_rows)
    runs = [(r1 - r0) * int(member[r0].sum()) for r0, r1, _ in _merged_tiles(member)]
    bounds = np.flatnonzero(np.any(member[1:] != member[:-1], axis=1)) + 1
    own = sum((b - a) * int(member[a].sum()) for a, b in zip(np.r_[0, bounds], np.r_[bounds, 1050]))
    assert sum(runs) <= MERGE_COST * own and len(runs) > 2
    coefs = np.zeros((len(task_rows), 1050), np.float32)
    for j, r in enumerate(task_rows):
        coefs[j, r] = rng.normal(size=len(r))
    product = SparseProduct(coefs, task_rows)
    assert product.parts is not None
    block = rng.random((1050, 40), dtype=np.float32)
    np.testing.assert_allclose(product(block), coefs.astype(np.float64) @ block.astype(np.float64), rtol=1e-4,
                               atol=1e-4)


@pytest.mark.parametrize("families", [("logistic", "ridge"), ("mean", "logistic")])
def test_averaged_groups_equal_the_mean_of_the_formed_unit_vectors(families):
    concept, randoms, rows = _pool_and_sets(seed=8)
    pool, tasks, index = _tasks(concept, randoms, rows)
    concept_tasks = [tasks[t] for t in index["c"]]
    k = len(concept_tasks)
    batch = [*tasks, *concept_tasks, *concept_tasks]
    methods = ["mean"] * len(tasks) + [families[0]] * k + [families[1]] * k
    groups = [list(range(len(tasks), len(tasks) + k)), list(range(len(tasks) + k, len(tasks) + 2 * k))]
    fast = fit_cav_batch(pool, batch, method=methods, alpha=50.0, averages=groups)
    plain = fit_cav_batch(pool, batch, method=methods, alpha=50.0)
    for g, members in enumerate(groups):
        want = plain.vectors[members].astype(np.float64).mean(axis=0)
        np.testing.assert_allclose(fast.averages[g], want, rtol=0, atol=1e-6 * np.abs(want).max())
        # A Gram-matrix family's tasks exist only inside their mean; one fitted without it is formed.
        if families[g] == "mean":
            np.testing.assert_allclose(fast.shifts[members], plain.shifts[members], rtol=1e-5)
            np.testing.assert_array_equal(fast.accuracies[members], plain.accuracies[members])
        else:
            assert np.isnan(fast.accuracies[members]).all() and not fast.vectors[members].any()
    # Tasks outside the groups are untouched.
    np.testing.assert_allclose(fast.vectors[:len(tasks)], plain.vectors[:len(tasks)], rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="non-empty groups"):
        fit_cav_batch(pool, tasks, averages=[[len(tasks)]])


def test_sparse_weight_product_follows_the_task_sides_and_equals_the_dense_product():
    from probes.row_values import SparseProduct

    rng = np.random.default_rng(10)
    n_sets, size = 8, 30
    sets = [np.arange(j * size, (j + 1) * size) for j in range(n_sets)]
    pairs = [(j, k) for j in range(n_sets) for k in range(j + 1, n_sets)]
    coefs = np.zeros((len(pairs), n_sets * size), np.float32)
    rows = []
    for p, (j, k) in enumerate(pairs):
        # Each CAV trains on its own 70 % of each side: the supports differ row by row inside a set.
        for side, sign in ((sets[j], 1.0), (sets[k], -1.0)):
            train = rng.choice(side, 21, replace=False)
            coefs[p, train] = sign / 21
        rows.append(np.concatenate([sets[j], sets[k]]))
    product = SparseProduct(coefs, rows)
    assert product.parts is not None and len(product.parts) == n_sets        # one tile per set
    block = rng.random((n_sets * size, 50), dtype=np.float32)
    np.testing.assert_allclose(product(block), coefs.astype(np.float64) @ block.astype(np.float64), rtol=1e-5,
                               atol=1e-6)


def test_shift_only_tasks_get_the_shifts_of_the_full_fit_from_their_sides_means():
    concept, randoms, rows = _pool_and_sets(seed=11)
    pool, tasks, index = _tasks(concept, randoms, rows)
    null = index["__null__"]
    full = fit_cav_batch(pool, tasks, method="mean")
    quick = fit_cav_batch(pool, tasks, method="mean", shift_only=null)
    np.testing.assert_array_equal(quick.vectors, full.vectors)
    np.testing.assert_allclose(quick.shifts, full.shifts, rtol=1e-6, atol=1e-7)
    assert np.isnan(quick.accuracies[null]).all() and np.isnan(quick.intercepts[null]).all()
    concept_runs = index["c"]
    np.testing.assert_array_equal(quick.accuracies[concept_runs], full.accuracies[concept_runs])
    # Their values come from fewer tile products now (other rounding), not another formula.
    np.testing.assert_allclose(quick.intercepts[concept_runs], full.intercepts[concept_runs], rtol=1e-6)


def test_shift_only_tasks_with_sides_of_their_own_are_fitted_in_full():
    concept, randoms, rows = _pool_and_sets(seed=12)
    pool, tasks, index = _tasks(concept, randoms, rows)
    # Each task on its own random set against the concept: as many sides as tasks, so nothing is shared
    # except the concept; the per-row route is no dearer and the accuracies come back.
    own = [tasks[t] for t in index["c"]][:2]
    quick = fit_cav_batch(pool, own, method="mean", shift_only=[0, 1])
    assert np.isfinite(quick.accuracies).all()
    with pytest.raises(ValueError, match="shift_only"):
        fit_cav_batch(pool, own, method="mean", shift_only=[2])


def test_the_layer_fit_leaves_only_the_nulls_accuracies_out():
    from probes.cav_rows import CAVFitter, fit_cav_layer
    from probes.streaming import ProjectionSpace

    concept, randoms, rows = _pool_and_sets(seed=13, d=400)
    pool, offsets, start = stack_pool([("c", concept)], randoms, rows)
    tasks, _, index = cav_tasks([("c", "key-c")], [f"r{j}" for j in range(len(rows))], offsets, seed=3)
    fit, _ = fit_cav_layer(pool, start, tasks, None, index, ["c"], 1.0, CAVFitter(), ProjectionSpace(), seed=0)
    assert np.isnan(fit["accuracies"][index["__null__"]]).all()
    assert np.isfinite(fit["accuracies"][index["c"]]).all() and np.isfinite(fit["shifts"]).all()
