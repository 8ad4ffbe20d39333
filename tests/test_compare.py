"""``concepts.compare`` and ``concepts compare``: one shared design, profiles across depth, consistency.

Known answers: a model compared with itself gives identical tables, identical profiles and a
difference of exactly zero (interval [0, 0], since both use the same bootstrap resamples of the
same examples). Two differently trained models with different layers run end to end, through the
Python API and the command line, and their layers are aligned by relative depth.
"""
from __future__ import annotations

import os
import re
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

import concepts  # noqa: E402
from concepts.cli import main  # noqa: E402
from concepts.comparison import CONSISTENCY_COLUMNS, relative_depths  # noqa: E402
from probes.engine import Engine  # noqa: E402
from synthetic import SIZE, build_model, make_data  # noqa: E402

FAST = dict(n_random=5, n_directions=100, n_boot=200, progress=False, cache_dir=False)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("compare_data"), n_class=16, n_concept=14, n_pool=70)


def _concepts(data):
    return [data / "concepts" / "horizontal", data / "concepts" / "vertical"]


def trained(data, kind: str, seed: int):
    """A small CNN trained for a few epochs on the class images (``kind``: 'small' or 'deep')."""
    import keras
    from PIL import Image

    keras.utils.set_random_seed(seed)
    images, labels = [], []
    for label, cls in enumerate(["striped", "other"]):
        for path in sorted((data / "classes" / cls).glob("*.png")):
            images.append(np.asarray(Image.open(path), np.float32)[..., None] / 255.0)
            labels.append(label)
    x, y = np.stack(images), np.array(labels)
    inputs = keras.Input((SIZE, SIZE, 1))
    if kind == "small":
        h = keras.layers.Conv2D(4, 3, activation="relu", name="c1")(inputs)
        h = keras.layers.Conv2D(4, 3, activation="relu", name="c2")(h)
    else:
        h = keras.layers.Conv2D(6, 3, activation="relu", name="b1")(inputs)
        h = keras.layers.MaxPooling2D(name="pool")(h)
        h = keras.layers.Conv2D(6, 3, activation="relu", name="b2")(h)
        h = keras.layers.Conv2D(6, 3, activation="relu", name="b3")(h)
    out = keras.layers.Dense(2, activation="softmax", name="head")(keras.layers.GlobalAveragePooling2D()(h))
    model = keras.Model(inputs, out)
    model.compile(optimizer=keras.optimizers.Adam(0.02), loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=8, batch_size=16, verbose=0)
    return model


@pytest.fixture(scope="module")
def two_models(data):
    return {"baseline": trained(data, "small", 1), "candidate": trained(data, "deep", 2)}


def test_a_model_compared_with_itself_has_identical_profiles_and_zero_difference(data):
    model = build_model()
    comparison = concepts.compare({"a": model, "b": model}, ["conv1", "conv2"], _concepts(data), data=data, **FAST)
    frame = comparison.to_frame()
    assert list(frame.columns[:5]) == ["model", "class", "layer", "depth", "depth_rank"]
    a = frame[frame["model"] == "a"].drop(columns="model").reset_index(drop=True)
    b = frame[frame["model"] == "b"].drop(columns="model").reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)
    consistency = comparison.consistency()
    assert list(consistency.columns) == CONSISTENCY_COLUMNS
    ca = consistency[consistency["model"] == "a"].drop(columns="model").reset_index(drop=True)
    cb = consistency[consistency["model"] == "b"].drop(columns="model").reset_index(drop=True)
    pd.testing.assert_frame_equal(ca, cb)
    diffs = comparison.differences()
    assert len(diffs) == 2 * 2 and diffs["paired"].all()  # classes x concepts
    for column in ["ubs_sd_diff", "ubs_sd_diff_ci_low", "ubs_sd_diff_ci_high", "ubs_rsd_diff",
                   "ubs_rsd_diff_ci_low", "ubs_rsd_diff_ci_high", "ubs_mean_diff",
                   "ubs_mean_diff_ci_low", "ubs_mean_diff_ci_high"]:
        assert (diffs[column] == 0).all(), diffs[column]
    aligned = comparison.aligned()
    assert (aligned["b_diff"] == 0).all() and (aligned["a_layer"] == aligned["b_layer"]).all()
    assert "more consistent" not in " ".join(comparison.notes())


def test_consistency_statistic_is_the_spread_of_ubs_across_layers(data):
    model = build_model()
    comparison = concepts.compare({"a": model, "b": model}, ["conv1", "conv2"], _concepts(data), data=data, **FAST)
    frame = comparison.to_frame()
    row = comparison.consistency().iloc[0]
    ubs = frame[(frame["model"] == row["model"]) & (frame["class"] == row["class"])
                & (frame["concept"] == row["concept"])].sort_values("depth")["ubs"].to_numpy()
    assert row["ubs_sd"] == pytest.approx(np.std(ubs, ddof=1))
    assert row["ubs_mean"] == pytest.approx(np.mean(ubs))
    assert row["ubs_sd_ci_low"] <= row["ubs_sd"] <= row["ubs_sd_ci_high"]
    assert row["ubs_rsd"] == pytest.approx(np.std(ubs, ddof=1) / np.mean(np.abs(ubs)))


def test_two_differently_trained_models_end_to_end(data, two_models, tmp_path):
    layers = {"baseline": ["c1", "c2"], "candidate": ["b1", "b2", "b3"]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        comparison = concepts.compare(two_models, layers, _concepts(data), data=data, **FAST)
    frame = comparison.to_frame()
    assert set(frame["model"]) == {"baseline", "candidate"}
    assert len(frame) == (2 + 3) * 2 * 2  # layers x classes x concepts
    depth = frame.drop_duplicates(["model", "layer"]).set_index(["model", "layer"])["depth"]
    assert depth["baseline", "c1"] == 0.0 and depth["candidate", "b1"] == 0.0
    assert depth["candidate", "b1"] < depth["candidate", "b2"] < depth["candidate", "b3"] < 1.0
    aligned = comparison.aligned()
    assert set(aligned["candidate_layer"]) <= {"b1", "b2", "b3"}
    assert len(comparison.consistency()) == 2 * 2 * 2
    written = comparison.save(tmp_path / "cmp")
    page = written["html"].read_text(encoding="utf-8")
    assert "baseline" in page and "candidate" in page and "Consistency across layers" in page
    assert "http://" not in page and "https://" not in page
    assert len(list((tmp_path / "cmp").glob("figure_*.png"))) == 4  # heatmaps + profiles, per class
    # Each finding names its model; the caption counts each model's own layers.
    import html

    text = html.unescape(page)
    findings = [f for f in re.findall(r"<li>((?:Model|Class) [^<]*)</li>", text) if ", layer '" in f]
    assert findings and all(f.startswith(("Model 'baseline'", "Model 'candidate'")) for f in findings), [
        f for f in findings if not f.startswith("Model")]
    assert "20 rows: 2 class(es) × layers (2 in 'baseline', 3 in 'candidate') × 2 concept(s)" in text


def test_relative_depth_counts_layers_of_nested_models():
    engine = Engine(build_model(nested=True), ["backbone/conv1", "backbone/conv2", "head"], progress=False)
    # conv1, conv2, gap, head: four layers once the inputs and the container are left out
    assert relative_depths(engine) == {"backbone/conv1": 0.0, "backbone/conv2": 1 / 3, "head": 1.0}


def test_bad_compare_arguments_name_the_culprit(data):
    model = build_model()
    with pytest.raises(ValueError, match="at least two models"):
        concepts.compare({"a": model}, ["conv1"], _concepts(data), data=data, **FAST)
    with pytest.raises(ValueError, match=r"model\(s\) \['b'\]"):
        concepts.compare({"a": model, "b": model}, {"a": ["conv1"]}, _concepts(data), data=data, **FAST)
    from probes.errors import UnknownLayerError

    with pytest.raises(UnknownLayerError, match=r"In the comparison, model 'b': Model .* has no layer 'conv9'"):
        concepts.compare({"a": model, "b": build_model()}, {"a": ["conv1"], "b": ["conv9"]}, _concepts(data),
                         data=data, **FAST)


def test_cli_compare_writes_the_page(data, two_models, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CONCEPTS_CACHE_DIR", str(tmp_path / "cache"))
    files = {}
    for name, model in two_models.items():
        files[name] = tmp_path / f"{name}.keras"
        model.save(files[name])
    out = tmp_path / "out"
    code = main(["compare", str(data), "--model", f"baseline={files['baseline']}", "--model",
                 f"candidate={files['candidate']}", "--layers", "baseline=c1,c2", "--layers", "candidate=b1,b3",
                 "--out", str(out), "--n-random", "4", "--quiet"])
    assert code == 0
    table = pd.read_csv(out / "compare.csv")
    assert set(zip(table["model"], table["layer"])) == {("baseline", "c1"), ("baseline", "c2"),
                                                        ("candidate", "b1"), ("candidate", "b3")}
    assert (out / "compare.html").is_file() and (out / "consistency.csv").is_file()
    assert str((out / "compare.html").resolve()) in capsys.readouterr().out
    code = main(["compare", str(data), "--model", f"baseline={files['baseline']}", "--layers", "c1", "--out",
                 str(out)])
    assert code == 2 and "at least two models" in capsys.readouterr().err
