"""Per-example rows unfold the global table exactly.

On the planted-concept model and on a randomly initialised model with a ReLU layer after the
probed ones (so that the gradient direction varies between examples, scores lie strictly between
0 and 1 and the identity is not trivially 0 = 0 or 1 = 1):
for every (class, layer, concept), the mean over images of the share of runs with a positive
sensitivity is the row's TCAV score, the mean UBS ratio is the row's UBS, and the presence score
is the image's activation projected on the consensus vector, computed here by hand.
"""
from __future__ import annotations

import os
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

import concepts  # noqa: E402
from concepts.per_example import EXAMPLE_COLUMNS  # noqa: E402
from synthetic import build_model, make_data  # noqa: E402

FAST = dict(n_random=5, n_directions=100, progress=False, cache_dir=False)
KEY = ["class", "layer", "concept"]


def row_contrast(image: np.ndarray) -> float:
    return float(np.abs(np.diff(np.asarray(image, dtype=float), axis=0)).mean())


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("per_example"))


def hidden_layer_model():
    """16×16×1 -> conv1 (3×3, relu) -> conv2 (3×3, relu) -> Dense(8, relu) -> Dense(2); seeded random weights."""
    import keras

    keras.utils.set_random_seed(3)
    inputs = keras.Input((16, 16, 1))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv1")(inputs)
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv2")(x)
    x = keras.layers.Dense(8, activation="relu")(keras.layers.Flatten()(x))
    return keras.Model(inputs, keras.layers.Dense(2)(x))


@pytest.fixture(scope="module", params=["planted", "random-hidden"])
def result(request, data):
    model = build_model() if request.param == "planted" else hidden_layer_model()
    concept_list = [data / "concepts" / "horizontal", data / "concepts" / "vertical",
                    concepts.measure(row_contrast, name="row_contrast")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return concepts.score(model, ["conv1", "conv2"], concept_list, data=data, **FAST)


def test_one_row_per_image_class_layer_concept(result, data):
    rows = result.per_example()
    assert list(rows.columns) == EXAMPLE_COLUMNS
    table = result.to_frame()
    assert len(rows) == int(table["n_examples"].sum())
    striped = rows[(rows["class"] == "striped") & (rows["layer"] == "conv1") & (rows["concept"] == "horizontal")]
    assert sorted(striped["image"]) == sorted(str(p) for p in (data / "classes" / "striped").glob("*.png"))


def test_sign_fraction_reproduces_the_tcav_score_and_ratios_the_ubs(result):
    rows = result.per_example()
    table = result.to_frame().set_index(KEY)
    agg = rows.groupby(KEY).agg(share=("positive_share", "mean"), ratio=("ubs_ratio", "mean"))
    joined = agg.join(table[["score", "ubs"]])
    assert len(joined) == len(table)
    np.testing.assert_allclose(joined["share"], joined["score"], atol=1e-12)
    np.testing.assert_allclose(joined["ratio"], joined["ubs"], rtol=1e-5, atol=1e-9)


def test_randomised_model_gives_scores_strictly_between_0_and_1(data):
    # Guards the test above against passing only on degenerate 0/1 scores.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = concepts.score(hidden_layer_model(), "conv1", data / "concepts" / "horizontal", data=data, **FAST)
    scores = res.to_frame()["score"]
    assert ((scores > 0.05) & (scores < 0.95)).any(), scores


def test_presence_is_the_activation_projected_on_the_consensus_vector(result, data):
    rows = result.per_example()
    engine = result._context.engine
    source = result._context.classes["other"].images
    acts = engine.activations(source, ["conv2"])["conv2"].reshape(len(source), -1).astype(np.float64)
    cavs = result._outcome.vectors[("conv2", "horizontal")]["consensus"].astype(np.float64)
    mine = rows[(rows["class"] == "other") & (rows["layer"] == "conv2") & (rows["concept"] == "horizontal")]
    np.testing.assert_allclose(mine["presence"], acts @ cavs, rtol=1e-4, atol=1e-6)
    # A pooled RCV reads the channel means.
    rcv = result._outcome.vectors[("conv2", "row_contrast")]["consensus"].astype(np.float64)
    pooled = engine.activations(source, ["conv2"])["conv2"].mean(axis=(1, 2)).astype(np.float64)
    mine = rows[(rows["class"] == "other") & (rows["layer"] == "conv2") & (rows["concept"] == "row_contrast")]
    np.testing.assert_allclose(mine["presence"], pooled @ rcv, rtol=1e-4, atol=1e-6)


def test_driven_examples_are_ordered_by_drive(result):
    most = result.driven_examples("striped", "horizontal", "conv1", n=3)
    least = result.driven_examples("striped", "horizontal", "conv1", n=3, which="least")
    assert len(most) == len(least) == 3
    assert most["drive"].is_monotonic_decreasing and least["drive"].is_monotonic_increasing
    assert most["drive"].iloc[0] >= least["drive"].iloc[0]
    with pytest.raises(KeyError, match="available"):
        result.driven_examples("striped", "nowhere", "conv1")


@pytest.mark.parametrize("concept", ["horizontal", "row_contrast"])
def test_maps_at_layer_resolution_add_up_to_the_per_example_numbers(result, concept):
    # Influence sums to the sensitivity for CAVs and pooled RCVs alike; presence sums to a · v for a
    # CAV and averages to the pooled activation · RCV for a measure.
    rows = result.per_example()
    rows = rows[(rows["class"] == "striped") & (rows["layer"] == "conv1") & (rows["concept"] == concept)]
    influence = result.concept_maps("striped", concept=concept, layer="conv1", kind="influence",
                                    class_name="striped", resolution="layer")
    presence = result.concept_maps("striped", concept=concept, layer="conv1", resolution="layer")
    np.testing.assert_allclose(influence.sum(axis=(1, 2)), rows["sensitivity"], rtol=1e-4, atol=1e-6)
    reduce = np.mean if concept == "row_contrast" else np.sum
    np.testing.assert_allclose(reduce(presence, axis=(1, 2)), rows["presence"], rtol=1e-4, atol=1e-6)


def test_a_result_read_back_from_the_store_keeps_its_per_example_rows(data, tmp_path):
    """The outcome store (JSON + arrays, no pickle) holds the vectors and per-example material too."""

    options, model = {**FAST, "cache_dir": tmp_path}, build_model()
    cold = concepts.score(model, "conv1", data / "concepts" / "horizontal", data=data, **options)
    warm = concepts.score(model, "conv1", data / "concepts" / "horizontal", data=data, **options)
    assert warm.provenance.get("from_result_cache") is True
    pd.testing.assert_frame_equal(cold.per_example(), warm.per_example())
