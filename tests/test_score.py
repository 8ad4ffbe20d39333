"""End-to-end known-answer tests of ``concepts.score`` on a model whose concept use is planted."""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import concepts  # noqa: E402
from concepts.analysis import COLUMNS  # noqa: E402
from concepts.errors import (ConceptFolderError, ImageReadError, InputShapeError,  # noqa: E402
                             InsufficientDataError, NotDifferentiableError, UnknownClassError, UnknownLayerError)
from synthetic import build_model, make_data, noise, write_png  # noqa: E402

FAST = dict(n_random=6, n_directions=200, progress=False)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("planted"))


@pytest.fixture(scope="module")
def model():
    return build_model()


@pytest.fixture(scope="module")
def planted(model, data, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    return concepts.score(model, ["conv1", "conv2"], [data / "concepts" / "horizontal", data / "concepts" / "vertical"],
                          cache_dir=cache, **FAST)


def _row(table, cls, layer, concept):
    rows = table[(table["class"] == cls) & (table["layer"] == layer) & (table["concept"] == concept)]
    assert len(rows) == 1
    return rows.iloc[0]


def test_table_has_every_column_and_row(planted):
    table = planted.to_frame()
    assert list(table.columns) == COLUMNS
    assert len(table) == 2 * 2 * 2  # classes x layers x concepts
    assert set(table["target"]) == {"logit"}
    assert (table["n_random"] == FAST["n_random"]).all()


def test_planted_concept_is_found_with_the_right_sign(planted):
    table = planted.to_frame()
    for layer in ("conv1", "conv2"):
        horizontal = _row(table, "striped", layer, "horizontal")
        vertical = _row(table, "striped", layer, "vertical")
        assert horizontal["significant"] and horizontal["score"] > 0.9 and horizontal["ubs"] > 0
        assert vertical["significant"] and vertical["score"] < 0.1 and vertical["ubs"] < 0
        assert horizontal["vector_quality"] > 0.9
        # The other class's logit is the negative: the signs flip.
        assert _row(table, "other", layer, "horizontal")["score"] < 0.1
        assert _row(table, "other", layer, "vertical")["score"] > 0.9


@pytest.mark.parametrize("statistic", ["ubs", "score"])
def test_random_concepts_are_not_significant_more_often_than_nominal(tmp_path, model, statistic):
    data = make_data(tmp_path / "d", n_class=16, n_concept=16, n_pool=100, n_noise_concepts=12, seed=3)
    noise_dirs = sorted((data / "concepts").glob("noise_*"))
    p_values, q_values = [], []
    for seed in (0, 1):
        table = concepts.score(model, "conv1", noise_dirs, seed=seed, statistic=statistic,
                               cache_dir=tmp_path / "cache", **FAST).to_frame()
        p_values += list(table["p_value"])
        q_values += list(table["q_value"])
    p_values, q_values = np.array(p_values), np.array(q_values)
    assert len(p_values) == 2 * 12 * 2
    # 48 tests at the 5% level: about 2.4 expected false positives; 6 would be a clear excess.
    assert (p_values < 0.05).sum() <= 6
    assert (q_values < 0.05).sum() <= (p_values < 0.05).sum()
    assert (q_values < 0.05).sum() <= 1


def test_sign_count_statistic_finds_the_planted_concept_where_gradients_vary(model, data):
    table = concepts.score(model, "conv1", data / "concepts" / "horizontal", statistic="score", cache_dir=False,
                           n_random=10, n_directions=100, progress=False).to_frame()
    row = _row(table, "striped", "conv1", "horizontal")
    assert row["score"] > 0.9 and row["p_value"] < 0.05


def test_softmax_bypass_gives_the_logits_model_answer(data, tmp_path):
    concept = data / "concepts" / "horizontal"
    with_softmax = concepts.score(build_model("softmax"), "conv1", concept, cache_dir=False, **FAST).to_frame()
    logits = concepts.score(build_model(None), "conv1", concept, cache_dir=False, **FAST).to_frame()
    cols = ["score", "null_mean", "p_value", "ubs"]
    np.testing.assert_allclose(with_softmax[cols].to_numpy(float), logits[cols].to_numpy(float), rtol=1e-5, atol=1e-6)


def test_nested_model_inner_layer(data):
    concept = data / "concepts" / "horizontal"
    flat = concepts.score(build_model(), "conv1", concept, cache_dir=False, **FAST).to_frame()
    nested = concepts.score(build_model(nested=True), "backbone/conv1", concept, cache_dir=False, **FAST).to_frame()
    np.testing.assert_allclose(flat["score"], nested["score"])
    np.testing.assert_allclose(flat["ubs"], nested["ubs"], rtol=1e-5)
    assert set(nested["layer"]) == {"backbone/conv1"}


def test_same_seed_same_result_and_cache_hit(model, data, tmp_path):
    concept = data / "concepts" / "horizontal"
    first = concepts.score(model, "conv2", concept, seed=7, cache_dir=tmp_path, **FAST)
    second = concepts.score(model, "conv2", concept, seed=7, cache_dir=tmp_path, **FAST)
    assert first.provenance["engine_batches"] > 0
    assert second.provenance["engine_batches"] == 0  # everything came from the cache
    cols = ["score", "null_mean", "p_value", "ubs", "vector_quality"]
    np.testing.assert_array_equal(first.to_frame()[cols].to_numpy(float), second.to_frame()[cols].to_numpy(float))
    uncached = concepts.score(model, "conv2", concept, seed=7, cache_dir=False, **FAST)
    np.testing.assert_allclose(first.to_frame()[cols].to_numpy(float), uncached.to_frame()[cols].to_numpy(float),
                               rtol=1e-5, atol=1e-6)
    other_seed = concepts.score(model, "conv2", concept, seed=8, cache_dir=tmp_path, **FAST)
    assert not np.array_equal(first.to_frame()["null_mean"], other_seed.to_frame()["null_mean"])


def test_relative_tcav(model, data):
    table = concepts.score(model, "conv1", [data / "concepts" / "horizontal", data / "concepts" / "vertical"],
                           relative=True, cache_dir=False, **FAST).to_frame()
    assert _row(table, "striped", "conv1", "horizontal")["score"] > 0.9
    assert _row(table, "striped", "conv1", "vertical")["score"] < 0.1


def test_summary_is_readable(planted):
    text = repr(planted)
    assert "significant" in text and "horizontal" in text
    assert "<table" in planted._repr_html_()


# --------------------------------------------------------------------------- errors a user can act on
def test_unknown_layer_lists_valid_names(model, data):
    with pytest.raises(UnknownLayerError, match="conv1"):
        concepts.score(model, "conv9", data / "concepts" / "horizontal", cache_dir=False, **FAST)


def test_unknown_class(model, data):
    with pytest.raises(UnknownClassError, match="striped"):
        concepts.score(model, "conv1", data / "concepts" / "horizontal", classes=["tumour"], cache_dir=False, **FAST)


def test_missing_and_empty_concept_folders(model, data, tmp_path):
    with pytest.raises(ConceptFolderError, match="nonexistent"):
        concepts.score(model, "conv1", data / "concepts" / "nonexistent", cache_dir=False, **FAST)
    empty = data / "concepts" / "empty_for_test"
    empty.mkdir(exist_ok=True)
    try:
        with pytest.raises(ConceptFolderError, match="empty_for_test"):
            concepts.score(model, "conv1", empty, cache_dir=False, **FAST)
    finally:
        empty.rmdir()


def test_corrupt_image_is_named(model, tmp_path):
    data = make_data(tmp_path / "d", n_class=6, n_concept=8, n_pool=60)
    bad = data / "concepts" / "horizontal" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(ImageReadError, match="broken.png"):
        concepts.score(model, "conv1", data / "concepts" / "horizontal", cache_dir=False, **FAST)


def test_image_that_cannot_be_converted(model, tmp_path):
    import tifffile

    data = make_data(tmp_path / "d", n_class=6, n_concept=8, n_pool=60)
    tifffile.imwrite(data / "concepts" / "horizontal" / "two_channel.tif", np.zeros((16, 16, 2), np.uint8))
    with pytest.raises(InputShapeError, match="two_channel.tif"):
        concepts.score(model, "conv1", data / "concepts" / "horizontal", cache_dir=False, **FAST)


def test_too_few_random_images(model, tmp_path):
    data = make_data(tmp_path / "d", n_class=6, n_concept=20, n_pool=10)
    with pytest.raises(InsufficientDataError):
        concepts.score(model, "conv1", data / "concepts" / "horizontal", cache_dir=False, **FAST)


def test_too_few_concept_images_for_the_split(model, tmp_path):
    data = make_data(tmp_path / "d", n_class=6, n_concept=2, n_pool=60)
    with pytest.raises(InsufficientDataError):
        concepts.score(model, "conv1", data / "concepts" / "horizontal", cache_dir=False, **FAST)


def test_layer_without_differentiable_path(data):
    import keras

    inputs = keras.Input((16, 16, 1))
    side = keras.layers.Conv2D(2, 3, name="side_branch")(inputs)
    x = keras.layers.Conv2D(2, 3, activation="relu", name="conv1")(inputs)
    out = keras.layers.Dense(2, name="head")(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, [out, side])
    with pytest.raises((NotDifferentiableError, concepts.errors.ToolkitError)):
        concepts.score(model, "side_branch", data / "concepts" / "horizontal", cache_dir=False, **FAST)


def test_noise_pool_subfolders_are_random_sets(model, tmp_path):
    data = make_data(tmp_path / "d", n_class=8, n_concept=10, n_pool=0)
    rng = np.random.default_rng(0)
    for s in range(8):
        for i in range(10):
            write_png(data / "random" / f"set_{s}" / f"{i}.png", noise(rng))
    table = concepts.score(model, "conv1", data / "concepts" / "horizontal", cache_dir=False,
                           n_random=7, n_directions=100, progress=False).to_frame()
    assert (table["n_random"] == 7).all()


def test_random_pair_cavs_do_not_depend_on_the_other_concepts_in_the_call(model, data, tmp_path):
    horizontal, vertical = data / "concepts" / "horizontal", data / "concepts" / "vertical"
    alone = concepts.score(model, "conv1", horizontal, cache_dir=False, **FAST).to_frame()
    together = concepts.score(model, "conv1", [horizontal, vertical], cache_dir=False, **FAST).to_frame()
    together = together[together["concept"] == "horizontal"]
    cols = ["score", "null_mean", "p_value", "ubs", "vector_quality"]
    np.testing.assert_allclose(alone[cols].to_numpy(float), together[cols].to_numpy(float), rtol=1e-6, atol=1e-9)


def test_auto_null_pairs_grow_linearly_beyond_21_sets():
    from collections import Counter

    from concepts.analysis import _null_pairs

    assert len(_null_pairs(21, "auto")) == 21 * 20 // 2  # every pair
    pairs = _null_pairs(100, "auto")
    assert len(pairs) == 100 * 10
    assert len({frozenset(p) for p in pairs}) == len(pairs)  # each unordered pair once
    partners = Counter(i for pair in pairs for i in pair)
    assert set(partners.values()) == {20}  # every set meets 20 others
    with pytest.raises(InsufficientDataError):
        _null_pairs(2, "auto")
