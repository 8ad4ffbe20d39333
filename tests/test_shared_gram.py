"""The random rows' Gram tiles kept between calls (probes.shared_gram, issue 13).

* CAVs fitted on a pool whose random part is keyed equal the plain fit (centring moves only rounding);
* a second batch with another concept finds the random tiles and gives, bit for bit, what it gives
  with nothing kept;
* the centring on the random rows' mean is as accurate as the centring on the whole pool's mean,
  against float64, also on a concept far from the random images (the case designed to break it);
* the memory is keyed by content and bounded in bytes.
"""
from __future__ import annotations

import numpy as np
import pytest

import probes.gram as gram_module
from probes.design import cav_tasks, stack_pool
from probes.gram import centred_gram
from probes.linear import fit_cav_batch
from probes.shared_gram import SHARED_GRAM, SharedGram, SharedRows, shared_rows
from probes.row_stack import RowStack


def _data(seed=0, n_concept=30, n_sets=6, set_size=30, d=3000, offset=0.6):
    rng = np.random.default_rng(seed)
    u = rng.normal(size=d)
    u /= np.linalg.norm(u)
    # Post-ReLU-like activations: a large common component, which is what the centring is for.
    concept = np.maximum(rng.normal(1.0, 1.0, (n_concept, d)), 0) + offset * np.sqrt(d) * u
    randoms = np.maximum(rng.normal(1.0, 1.0, (n_sets * set_size, d)), 0)
    rows = [np.arange(j * set_size, (j + 1) * set_size) for j in range(n_sets)]
    return concept.astype(np.float32), randoms.astype(np.float32), rows


def _batch(concept, randoms, rows, key, name="c"):
    pool, offsets, _ = stack_pool([(name, concept)], randoms, rows, copy=False, random_key=key)
    tasks, _, index = cav_tasks([(name, f"key-{name}")], [f"r{j}" for j in range(len(rows))], offsets, seed=3)
    concept_tasks = [tasks[t] for t in index[name]]
    # The analysis's batch: mean CAVs (and the null), plus the robustness check's Gram families.
    batch = [*tasks, *concept_tasks, *concept_tasks]
    methods = ["mean"] * len(tasks) + ["logistic"] * len(concept_tasks) + ["ridge"] * len(concept_tasks)
    return pool, batch, methods


def _fit(pool, batch, methods):
    return fit_cav_batch(pool, batch, method=methods, alpha=50.0)


@pytest.fixture(autouse=True)
def _fresh_memo():
    SHARED_GRAM.clear()
    yield
    SHARED_GRAM.clear()


def test_keyed_pool_gives_the_cavs_of_the_plain_pool():
    concept, randoms, rows = _data()
    keyed = _fit(*_batch(concept, randoms, rows, key="randoms-v1"))
    plain = _fit(*_batch(concept, randoms, rows, key=None))
    np.testing.assert_allclose(keyed.vectors, plain.vectors, rtol=0, atol=1e-6 * np.abs(plain.vectors).max())
    np.testing.assert_allclose(keyed.intercepts, plain.intercepts, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(keyed.shifts, plain.shifts, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(keyed.accuracies, plain.accuracies)


def test_a_new_concept_finds_the_random_tiles_and_gets_the_same_bits():
    concept, randoms, rows = _data(seed=1)
    other = _data(seed=2)[0]
    _fit(*_batch(concept, randoms, rows, key="randoms-v1"))          # the first call
    hits = SHARED_GRAM.hits
    with_tiles = _fit(*_batch(other, randoms, rows, key="randoms-v1", name="d"))
    assert SHARED_GRAM.hits > hits
    SHARED_GRAM.clear()
    without = _fit(*_batch(other, randoms, rows, key="randoms-v1", name="d"))
    for name in ("vectors", "intercepts", "accuracies", "shifts"):
        np.testing.assert_array_equal(getattr(with_tiles, name), getattr(without, name), err_msg=name)


def test_only_the_new_concepts_products_are_computed_when_the_tiles_are_known(monkeypatch):
    concept, randoms, rows = _data(seed=3, d=600)
    _fit(*_batch(concept, randoms, rows, key="randoms-v1"))
    sizes = []
    real = gram_module.run_products

    def counting(products):
        sizes.append(len(products))
        real(products)

    monkeypatch.setattr(gram_module, "run_products", counting)
    _fit(*_batch(_data(seed=4, d=600)[0], randoms, rows, key="randoms-v1", name="d"))
    # One product per column block: the concept's rows against every row; no random set against itself.
    assert sizes and set(sizes) == {1}


def _double_centred(k, rows):
    sub = k[np.ix_(rows, rows)]
    h = np.eye(len(rows)) - 1.0 / len(rows)
    return h @ sub @ h


@pytest.mark.parametrize("offset", [0.6, 20.0])
def test_centring_on_the_random_rows_is_as_accurate_as_on_the_pool(offset):
    # offset=20: the concept's images lie far from the random images (the case designed to break the
    # random-rows centring, which does not move towards them).
    concept, randoms, rows = _data(seed=5, d=4000, offset=offset)
    whole = np.concatenate([concept, randoms]).astype(np.float64)
    union = np.arange(len(whole))
    task_rows = [np.concatenate([np.arange(30), 30 + r]) for r in rows]
    truth = whole @ whole.T
    blocks = [(0, 2000), (2000, 4000)]
    errors = {}
    for key in (None, "randoms"):
        pool = RowStack([concept, randoms], keys=[None, key])
        k = centred_gram(pool, union, slice(None), blocks, task_rows=task_rows)[0]
        errors[key] = max(np.abs(_double_centred(k, r) - _double_centred(truth, r)).max()
                          / np.abs(_double_centred(truth, r)).max() for r in task_rows)
    # float32 products: both about 1e-7 (near) to 1e-6 (far); measured within a factor 1.7 of each other.
    assert errors["randoms"] < 2e-6
    assert errors["randoms"] <= 2.0 * errors[None]


def test_the_shared_rows_are_found_by_key_and_by_which_rows_are_used():
    parts = [np.ones((2, 3), np.float32), np.arange(15, dtype=np.float32).reshape(5, 3)]
    assert shared_rows(RowStack(parts), np.arange(7)) is None
    pool = RowStack(parts, keys=[None, "k"])
    every, some = shared_rows(pool, np.arange(7)), shared_rows(pool, np.array([0, 2, 3, 5]))
    assert (every.start, every.stop) == (2, 7) and every.rows.tolist() == [2, 3, 4, 5, 6]
    assert (some.start, some.stop) == (1, 4) and some.key != every.key
    assert shared_rows(pool, np.array([0, 1, 2])) is None          # one shared row: nothing to keep
    np.testing.assert_array_equal(SharedGram().centre(some, pool, 0, 3), parts[1][[0, 1, 3]].mean(axis=0))
    with pytest.raises(ValueError, match="keys"):
        RowStack(parts, keys=["k"])


def test_the_memory_is_bounded_in_bytes():
    memo = SharedGram(max_bytes=3 * 8 * 100)
    shared = [SharedRows(0, 10, np.arange(10), f"k{i}") for i in range(4)]
    for i, s in enumerate(shared):
        memo.keep_tiles(s, [(0, 5)], {(0, 10, 0, 10): np.full((10, 10), float(i))})
    assert memo.tiles(shared[0], [(0, 5)]) == {}                   # the oldest went first
    assert memo.tiles(shared[3], [(0, 5)])[(0, 10, 0, 10)][0, 0] == 3.0
    assert memo.tiles(shared[3], [(0, 6)]) == {}                   # other column blocks: other bits


def test_the_centre_from_the_batch_read_has_the_bits_of_a_read_of_the_shared_rows():
    concept, randoms, rows = _data(seed=7, d=700)
    pool = RowStack([concept, randoms], keys=[None, "randoms-centre"])
    union = np.arange(len(concept) + len(randoms))
    centred_gram(pool, union, slice(None), [(0, 350), (350, 700)],
                 task_rows=[np.concatenate([np.arange(30), 30 + r]) for r in rows])
    shared = shared_rows(pool, union)
    for c0, c1 in [(0, 350), (350, 700)]:
        kept = SHARED_GRAM.known_centre(shared, c0, c1)
        np.testing.assert_array_equal(kept, randoms[:, c0:c1].mean(axis=0, dtype=np.float64))
        np.testing.assert_array_equal(kept, SharedGram().centre(shared, pool, c0, c1))
