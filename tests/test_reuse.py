"""Reuse of the random-set side across calls (probes.reuse): correctness, never time.

A second call with a new concept on the same data and model takes the random-vs-random CAVs from the
store and the class examples' null statistics from :data:`probes.reuse.NULL_SUMMARIES`; its table must
be the table a fresh call for that concept gives. A changed random set or changed model weights must
not reuse anything.
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import shutil  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

import concepts  # noqa: E402
from probes.reuse import NULL_SUMMARIES, NullSummaries  # noqa: E402
from probes.streaming import ColumnSummary, Projections, ProjectionSpace  # noqa: E402
from synthetic import build_model, make_data  # noqa: E402

FAST = dict(n_random=4, n_directions=100, progress=False)
LAYERS = ["conv1", "conv2"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("reuse"), n_class=10, n_concept=12, n_pool=60)


@pytest.fixture(scope="module")
def model():
    return build_model()


def _score(model, data, names, cache, **over):
    return concepts.score(model, LAYERS, [data / "concepts" / n for n in names], cache_dir=cache,
                          **{**FAST, **over}).to_frame()


def _same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    # The golden guard's tolerance: a random-vs-random CAV read from the store was fitted in a batch whose
    # Gram matrix held other concepts' rows (float32 products, ~1e-7 relative).
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True), check_exact=False,
                                  atol=1e-6, rtol=1e-6)


def test_new_concept_reuses_the_random_side_and_gives_the_fresh_table(model, data, tmp_path):
    NULL_SUMMARIES.clear()
    _score(model, data, ["horizontal"], tmp_path / "shared")
    assert NULL_SUMMARIES.hits == 0 and NULL_SUMMARIES.misses == 2 * len(LAYERS)  # classes x layers
    second = _score(model, data, ["vertical"], tmp_path / "shared")
    assert NULL_SUMMARIES.hits == 2 * len(LAYERS)
    NULL_SUMMARIES.clear()
    fresh = _score(model, data, ["vertical"], tmp_path / "fresh")
    assert NULL_SUMMARIES.hits == 0
    _same(second, fresh)


def test_store_carries_the_null_statistics_to_another_process(model, data, tmp_path):
    NULL_SUMMARIES.clear()
    _score(model, data, ["horizontal"], tmp_path / "store")
    NULL_SUMMARIES.clear()  # what a new process starts with
    both = _score(model, data, ["horizontal", "vertical"], tmp_path / "store")
    assert NULL_SUMMARIES.hits == 2 * len(LAYERS) and NULL_SUMMARIES.misses == 0
    NULL_SUMMARIES.clear()
    _same(both, _score(model, data, ["horizontal", "vertical"], False))


def test_a_changed_random_set_is_not_reused(model, data, tmp_path):
    NULL_SUMMARIES.clear()
    _score(model, data, ["horizontal"], tmp_path / "c")
    changed = tmp_path / "changed"
    shutil.copytree(data, changed)
    victim = sorted((changed / "random").iterdir())[0]
    from PIL import Image

    image = np.asarray(Image.open(victim)).copy()
    image[0, 0] = 255 - image[0, 0]
    Image.fromarray(image).save(victim)
    hits = NULL_SUMMARIES.hits
    _score(model, changed, ["vertical"], tmp_path / "c")
    assert NULL_SUMMARIES.hits == hits


def test_changed_model_weights_are_not_reused(model, data, tmp_path):
    NULL_SUMMARIES.clear()
    _score(model, data, ["horizontal"], tmp_path / "m")
    other = build_model()
    weights = other.get_weights()
    weights[0] = weights[0] * 1.5
    other.set_weights(weights)
    hits = NULL_SUMMARIES.hits
    _score(other, data, ["vertical"], tmp_path / "m")
    assert NULL_SUMMARIES.hits == hits


def test_known_columns_give_the_projected_summary():
    rng = np.random.default_rng(0)
    space = ProjectionSpace()
    space.add(rng.normal(size=(6, 5)))
    g, a = rng.normal(size=(9, 5)), rng.normal(size=(9, 5))
    full = Projections(space)
    for i in range(0, 9, 4):
        full.update(g[i:i + 4], a[i:i + 4])
    known = np.array([1, 3, 4])
    part = Projections(space, known=(known, full.summary.columns(known)))
    for i in range(0, 9, 4):
        part.update(g[i:i + 4], a[i:i + 4])
    for name in ("positive", "zero", "ratio_sum", "mean", "m2", "abs_sum"):
        np.testing.assert_allclose(getattr(part.summary, name), getattr(full.summary, name), rtol=1e-12, atol=0)
    assert part.summary.n == full.summary.n and part.summary.used == full.summary.used


def test_memory_is_bounded_and_the_store_round_trips(tmp_path):
    from probes.cache import ActivationCache

    memo = NullSummaries(max_entries=2)
    summary = ColumnSummary(3)
    summary.update(np.arange(6.0).reshape(2, 3), np.ones(2), d=3)
    keys = [memo.key("m", "l", "logit", 0, "e", 32, [str(i)]) for i in range(3)]
    store = ActivationCache(tmp_path / "s")
    for key in keys:
        memo.put(key, summary, store)
    store.flush()
    assert len(memo._memory) == 2
    again = NullSummaries().get(keys[0], store)
    np.testing.assert_array_equal(again.m2, summary.m2)
    assert again.n == 2


def test_the_random_side_spread_is_remembered_by_content(model, data, tmp_path):
    from probes.reuse import RANDOM_VARIANCES

    RANDOM_VARIANCES.clear()
    hits = RANDOM_VARIANCES.hits
    first = _score(model, data, ["horizontal"], False)
    assert RANDOM_VARIANCES.hits == hits                       # nothing known yet
    _score(model, data, ["vertical"], False)
    assert RANDOM_VARIANCES.hits == hits + len(LAYERS)         # same random images, same model
    _score(model, data, ["horizontal"], False, seed=1)        # other random sets: computed again
    assert RANDOM_VARIANCES.hits == hits + len(LAYERS)
    RANDOM_VARIANCES.clear()
    _same(first, _score(model, data, ["horizontal"], False))
