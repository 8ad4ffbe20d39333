"""Layers' concept vectors fitted side by side give the same bits as one after the other (issue 13).

Known answers: ``map_side_by_side`` returns ``[f(x) for x in items]`` in order and re-raises the first
failing item's error; inside ``single_threaded_blas`` the BLAS runs one thread in every thread of the
process and gets its own setting back after the last block closes; ``concepts.score`` gives the same
table, bit for bit, with one worker or several, and a layer scored alone gives the same rows as in a
call with every layer; the Gram matrix computed in strips equals the float64 product.
"""
from __future__ import annotations

import threading
import time

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_info

from probes.blas_threads import map_side_by_side, single_threaded_blas


def _blas_threads() -> set[int]:
    return {info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"}


def test_results_come_back_in_order_whatever_finishes_first():
    def slow_first(x):
        time.sleep(0.05 if x == 0 else 0.0)
        return x * 10
    assert map_side_by_side(slow_first, [0, 1, 2, 3], workers=3) == [0, 10, 20, 30]
    assert map_side_by_side(slow_first, [0, 1, 2, 3], workers=1) == [0, 10, 20, 30]
    assert map_side_by_side(slow_first, [], workers=2) == []


def test_the_costliest_items_start_first_and_results_keep_the_order_of_the_items():
    started = []

    def work(x):
        started.append(x)
        time.sleep(0.1)      # long against any scheduling delay: the first two to start are the two submitted first
        return x.upper()
    assert map_side_by_side(work, ["a", "b", "c", "d"], workers=2, costs=[1, 8, 2, 5]) == ["A", "B", "C", "D"]
    assert started[:2] == ["b", "d"] or started[:2] == ["d", "b"]
    assert set(started[2:]) == {"a", "c"}


def test_the_first_failing_item_in_order_raises_and_nothing_is_left_running():
    started = []

    def work(x):
        started.append(x)
        if x == 2:
            time.sleep(0.05)
            raise KeyError("layer two")
        if x == 3:
            raise ValueError("layer three")
        return x
    with pytest.raises(KeyError, match="layer two"):
        map_side_by_side(work, [0, 1, 2, 3, 4], workers=2)
    assert not [t for t in threading.enumerate() if t.name.startswith("probes-side")]


def test_blas_runs_one_thread_inside_and_gets_its_setting_back():
    before = _blas_threads()
    seen = []
    with single_threaded_blas():
        with single_threaded_blas():
            seen.append(_blas_threads())
        seen.append(_blas_threads())      # the inner block closing does not restore it yet
        map_side_by_side(lambda _: seen.append(_blas_threads()), [0, 1], workers=2)
    assert all(s == {1} for s in seen)
    assert _blas_threads() == before


def test_blocks_open_in_two_threads_keep_one_thread_until_both_close():
    with single_threaded_blas():      # this thread sets the BLAS first (threadpoolctl would then ignore others)
        pass
    before = _blas_threads()
    inside, release, seen = threading.Event(), threading.Event(), []

    def other():
        with single_threaded_blas():
            inside.set()
            release.wait(5)
    thread = threading.Thread(target=other)
    thread.start()
    inside.wait(5)
    with single_threaded_blas():
        pass
    seen.append(_blas_threads())        # this thread's block closed, the other's is open
    release.set()
    thread.join()
    assert seen == [{1}] and _blas_threads() == before


def test_the_gram_matrix_in_strips_equals_the_float64_product():
    from probes.gram import centred_gram

    rng = np.random.default_rng(0)
    pool = (np.maximum(rng.normal(1.0, 1.0, (700, 900)), 0)).astype(np.float32)   # three strips of 256 rows
    gram, means = centred_gram(pool, np.arange(700), slice(None), [(0, 450), (450, 900)])
    centred = pool.astype(np.float64) - pool.astype(np.float64).mean(axis=0)
    exact = centred @ centred.T
    assert np.array_equal(gram, gram.T)
    np.testing.assert_allclose(gram, exact, rtol=0, atol=2e-6 * np.abs(exact).max())


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """Tables of one synthetic analysis with the layers' CAVs fitted one by one, side by side, and one layer alone."""
    import concepts
    import concepts.analysis as analysis
    from synthetic import build_model, make_data

    root = tmp_path_factory.mktemp("side")
    data = make_data(root / "data", n_class=10, n_concept=12, n_pool=60)
    model = build_model()
    common = dict(data=data, n_random=5, seed=2, progress=False, cache_dir=False)
    concepts_ = {"horizontal": data / "concepts" / "horizontal", "vertical": data / "concepts" / "vertical"}
    original = analysis.Analysis._cav_workers
    tables = {}
    try:
        for workers in (1, 3):
            analysis.Analysis._cav_workers = lambda self, *args, _w=workers: _w
            from concepts.process_memory import forget_process_memory
            forget_process_memory()
            tables[workers] = concepts.score(model, ["conv1", "conv2"], concepts_, **common).to_frame()
        forget_process_memory()
        tables["alone"] = concepts.score(model, "conv2", concepts_, **common).to_frame()
    finally:
        analysis.Analysis._cav_workers = original
    return tables


def _numbers(table: pd.DataFrame) -> pd.DataFrame:
    return table.drop(columns=[c for c in table.columns if c == "elapsed_s"]).reset_index(drop=True)


def test_one_worker_and_several_give_the_same_table_bit_for_bit(scored):
    assert len(scored[1]) and scored[1]["layer"].nunique() > 1
    pd.testing.assert_frame_equal(_numbers(scored[1]), _numbers(scored[3]), check_exact=True)


def test_a_layer_alone_gives_the_rows_it_gets_among_every_layer(scored):
    among = scored[3][scored[3]["layer"] == "conv2"]
    assert len(among) == len(scored["alone"]) > 0
    # q-values adjust over every row of a table, so they depend on how many layers it has.
    adjusted = ["q_value", "significant"]
    pd.testing.assert_frame_equal(_numbers(among).drop(columns=adjusted), _numbers(scored["alone"]).drop(columns=adjusted),
                                  check_exact=True)


def test_the_workers_follow_the_memory_budget():
    from types import SimpleNamespace

    import concepts.analysis as analysis

    def workers(budget, widths=(1000, 800, 600), cores=4, n_rows=100, memory=None):
        fake = SimpleNamespace(engine=SimpleNamespace(layers=[f"l{i}" for i in range(len(widths))]),
                               options=SimpleNamespace(memory_budget=budget))
        pool = {f"l{i}": np.zeros((n_rows - 10, w), np.float32) for i, w in enumerate(widths)}
        concepts_ = [SimpleNamespace(images=range(10))]
        original = analysis.usable_cores, analysis.physical_memory
        analysis.usable_cores = lambda: cores
        if memory is not None:
            analysis.physical_memory = lambda: memory
        try:
            return analysis.Analysis._cav_workers(fake, concepts_, (pool, []))
        finally:
            analysis.usable_cores, analysis.physical_memory = original
    # A fit holds about 4 bytes x rows x width; side by side while the largest ones fit half the budget.
    assert workers(None) == 3
    assert workers(2 * 4 * 100 * 1800) == 2
    assert workers(2 * 4 * 100 * 1799) == 1
    assert workers(None, cores=1) == 1 and workers(None, widths=(1000,)) == 1
    # No budget: half the machine's memory bounds it instead.
    assert workers(None, memory=2 * 4 * 100 * 1800) == 2 and workers(None, memory=0) == 3
