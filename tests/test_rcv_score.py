"""Known-answer tests of regression concept vectors (RCVs) through ``concepts.score`` and ``rank_measures``.

A planted continuous concept: 16×16 images of one bright disc on a dark background, and a
hand-set model whose logit is driven by the mean intensity of the image:

* ``conv1`` (3×3, "same", ReLU): channel 0 is a 3×3 average (local mean intensity), channels
  1-3 are edge filters;
* ``conv2`` (1×1, ReLU) passes channel 0 through with a bias of −0.3, so only the positions
  brighter than 0.3 count, and which ones do differs between images;
* global average pooling and a linear head: ``logit(bright) = 4·mean(conv2[..., 0])``,
  ``logit(dim)`` is its negative.

So the measure ``mean_intensity`` is linearly readable from ``conv1`` (R² near 1), increasing it
raises the ``bright`` logit (Br > 0) and lowers the ``dim`` logit (Br < 0), and the gradient at
``conv1`` varies across examples (the ReLU gate of ``conv2``), so Br is defined there. (At
``conv2``, followed only by pooling and a linear head, every example has the same pooled gradient
and Br is undefined by design.)
"""
from __future__ import annotations

import os
import tracemalloc
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

import concepts  # noqa: E402
from concepts.analysis import COLUMNS  # noqa: E402
from concepts.errors import MeasureError  # noqa: E402
from synthetic import write_png  # noqa: E402

FAST = dict(n_random=6, n_directions=200, progress=False, cache_dir=False)
SIZE = 16
N_PER_CLASS = 20


# --------------------------------------------------------------------------- planted data and model
def disc_image(rng: np.random.Generator, size: int, bright: bool) -> np.ndarray:
    """A disc of random position, radius and level on a dark, slightly noisy background."""
    yy, xx = np.mgrid[:size, :size]
    cy, cx = rng.uniform(0.3 * size, 0.7 * size, 2)
    radius = rng.uniform(0.12, 0.35) * size
    level = rng.uniform(0.55, 0.95) if bright else rng.uniform(0.35, 0.7)
    image = 0.1 + rng.normal(0, 0.02, (size, size))
    image[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2] = level
    return np.clip(image, 0, 1)


def make_discs(root, n: int = N_PER_CLASS, seed: int = 0, size: int = SIZE):
    rng = np.random.default_rng(seed)
    for i in range(n):
        write_png(root / "classes" / "bright" / f"b{i:03d}.png", disc_image(rng, size, True))
        write_png(root / "classes" / "dim" / f"d{i:03d}.png", disc_image(rng, size, False))
    (root / "classes.txt").write_text("bright\ndim\n")
    return root


def build_intensity_model():
    import keras

    inputs = keras.Input((SIZE, SIZE, 1))
    conv1 = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1")
    conv2 = keras.layers.Conv2D(4, 1, activation="relu", name="conv2")
    head = keras.layers.Dense(2, name="head")
    model = keras.Model(inputs, head(keras.layers.GlobalAveragePooling2D(name="gap")(conv2(conv1(inputs)))))
    average = np.full((3, 3), 1 / 9, np.float32)
    dy = np.array([[-1, -2, -1], [0, 0, 0], [1, 2, 1]], np.float32) / 4
    conv1.set_weights([np.stack([average, dy, dy.T, -dy], axis=-1)[:, :, None, :], np.zeros(4, np.float32)])
    conv2.set_weights([np.eye(4, dtype=np.float32)[None, None], np.array([-0.3, 0, 0, 0], np.float32)])
    w = np.zeros((4, 2), np.float32)
    w[0] = [4.0, -4.0]
    head.set_weights([w, np.zeros(2, np.float32)])
    return model


def mean_intensity(image: np.ndarray) -> float:
    return float(np.mean(image))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_discs(tmp_path_factory.mktemp("discs"))


@pytest.fixture(scope="module")
def files(data):
    return sorted((data / "classes").rglob("*.png"))


@pytest.fixture(scope="module")
def model():
    return build_intensity_model()


@pytest.fixture(scope="module")
def planted_measure(files):
    return concepts.measure(mean_intensity, name="mean_intensity", images=files)


@pytest.fixture(scope="module")
def unrelated_measure(files):
    rng = np.random.default_rng(12345)
    return concepts.Measure("unrelated", {str(f): float(rng.normal()) for f in files},
                            description="seeded random values, one per image")


@pytest.fixture(scope="module")
def pooled(model, data, planted_measure, unrelated_measure):
    """conv1 with the default pooling (on for convolutional layers)."""
    return concepts.score(model, "conv1", [planted_measure, unrelated_measure], data=data, **FAST).to_frame()


@pytest.fixture(scope="module")
def unpooled(model, data, planted_measure):
    return concepts.score(model, "conv1", planted_measure, data=data, pool=False, **FAST).to_frame()


def _row(table, cls, layer, concept):
    rows = table[(table["class"] == cls) & (table["layer"] == layer) & (table["concept"] == concept)]
    assert len(rows) == 1, rows
    return rows.iloc[0]


# --------------------------------------------------------------------------- planted concept
def test_rcv_rows_have_every_column(pooled):
    assert list(pooled.columns) == COLUMNS
    assert len(pooled) == 2 * 1 * 2  # classes x layers x measures
    assert set(pooled["kind"]) == {"rcv"}
    assert (pooled["d"] == 4).all()  # pooled conv1: one feature per channel
    assert (pooled["n_random"] == FAST["n_random"]).all()
    # vector_quality is the held-out R² for RCVs
    np.testing.assert_allclose(pooled["vector_quality"], pooled["r2_cv"])


def test_planted_measure_high_held_out_r2_right_sign_and_significant(pooled):
    bright = _row(pooled, "bright", "conv1", "mean_intensity")
    dim = _row(pooled, "dim", "conv1", "mean_intensity")
    for row in (bright, dim):
        assert row["r2_cv"] > 0.9
        assert row["fold_angle_deg"] < 30  # a stable direction (noise reference is ~41° for 5 folds)
        assert row["significant"] and row["p_value"] < 0.01 and row["q_value"] >= row["p_value"]
    # Raising the intensity raises the 'bright' logit and lowers the 'dim' logit.
    assert bright["br"] > 0.5 and bright["score"] > 0.9 and bright["ubs"] > 0
    assert dim["br"] < -0.5 and dim["score"] < 0.1 and dim["ubs"] < 0


def test_unrelated_measure_is_not_significant_and_has_no_held_out_r2(pooled):
    planted_br = abs(_row(pooled, "bright", "conv1", "mean_intensity")["br"])
    for cls in ("bright", "dim"):
        row = _row(pooled, cls, "conv1", "unrelated")
        assert row["r2_cv"] < 0.1
        assert not row["significant"]
        assert row["q_value"] > 0.05
        assert abs(row["br"]) < planted_br / 2


def test_scatter_holds_measure_vs_projection(model, data, planted_measure):
    result = concepts.score(model, "conv1", planted_measure, data=data, **FAST)
    scatter = result.scatter[("conv1", "mean_intensity")]
    assert len(scatter) == 2 * N_PER_CLASS
    assert np.corrcoef(scatter["measure"], scatter["projection"])[0, 1] > 0.95
    assert scatter.attrs["r2_cv"] == pytest.approx(result.to_frame()["r2_cv"].iloc[0])


def test_shuffled_measures_give_r2_near_zero_and_no_significance(model, data, planted_measure):
    rng = np.random.default_rng(7)
    values = planted_measure.values
    shuffled = {f"shuffled_{k}": concepts.Measure(f"shuffled_{k}",
                                                  pd.Series(rng.permutation(values.to_numpy()), index=values.index))
                for k in range(3)}
    table = concepts.score(model, "conv1", shuffled, data=data, **FAST).to_frame()
    assert len(table) == 2 * 3
    assert (table["r2_cv"] < 0.15).all() and (table["r2_cv"] > -0.6).all(), table["r2_cv"]
    assert abs(table["r2_cv"].mean()) < 0.3
    assert not table["significant"].any()


# --------------------------------------------------------------------------- pooled vs unpooled
def test_measure_on_the_classes_folder_finds_its_data_folder(model, data):
    """The call of the continuous-concepts docs: no ``data=``; the measure's images locate it."""
    measure = concepts.measure(mean_intensity, name="mean_intensity", images=data / "classes")
    table = concepts.score(model, "conv1", measure, **FAST).to_frame()
    assert set(table["class"]) == {"bright", "dim"}
    assert table["p_value"].notna().all() and table["test_statistic"].isin(["br", "ubs"]).all()


def test_rcv_rows_never_leave_the_answer_undefined(pooled):
    assert pooled["p_value"].notna().all() and pooled["direction_agreement"].notna().all()


def test_pooled_and_unpooled_rcvs_agree_in_sign(pooled, unpooled):
    assert (unpooled["d"] == SIZE * SIZE * 4).all()
    for cls in ("bright", "dim"):
        a = _row(pooled, cls, "conv1", "mean_intensity")
        b = _row(unpooled, cls, "conv1", "mean_intensity")
        assert b["r2_cv"] > 0.9
        assert np.sign(a["br"]) == np.sign(b["br"]) != 0
        assert np.sign(a["ubs"]) == np.sign(b["ubs"]) != 0
        assert a["significant"] and b["significant"]


def test_layer_with_identical_pooled_gradients_tests_ubs_instead_of_undefined_br(model, data, planted_measure):
    """conv2 is followed only by pooling and a linear head: Br is undefined (NaN), so the row tests the
    RCV's UBS against the shuffled-measure RCVs' UBS instead and says so; no answer is left NaN."""
    table = concepts.score(model, "conv2", planted_measure, data=data, **FAST).to_frame()
    assert table["br"].isna().all()
    assert table["p_value"].notna().all() and table["q_value"].notna().all()
    assert (table["test_statistic"] == "ubs").all()
    assert (table["r2_cv"] > 0.5).all()  # the regression itself is still well defined
    by_class = table.set_index("class")["ubs"]
    assert by_class["bright"] > 0 > by_class["dim"]


# --------------------------------------------------------------------------- wide layers
WIDE = 64
WIDE_CHANNELS = 25  # 64 * 64 * 25 = 102,400 activations


def build_wide_model():
    import keras

    inputs = keras.Input((WIDE, WIDE, 1))
    wide = keras.layers.Conv2D(WIDE_CHANNELS, 3, padding="same", activation="relu", name="wide")
    gate = keras.layers.Conv2D(1, 1, activation="relu", name="gate")
    head = keras.layers.Dense(2, name="head")
    model = keras.Model(inputs, head(keras.layers.GlobalAveragePooling2D()(gate(wide(inputs)))))
    scale = np.linspace(0.5, 1.5, WIDE_CHANNELS, dtype=np.float32)
    wide.set_weights([np.full((3, 3, 1, WIDE_CHANNELS), 1 / 9, np.float32) * scale,
                      np.zeros(WIDE_CHANNELS, np.float32)])
    gate.set_weights([np.full((1, 1, WIDE_CHANNELS, 1), 1 / WIDE_CHANNELS, np.float32), np.array([-0.3], np.float32)])
    head.set_weights([np.array([[4.0, -4.0]], np.float32), np.zeros(2, np.float32)])
    return model


def test_wide_layer_unpooled_rcv_never_forms_a_d_by_d_matrix(tmp_path, monkeypatch):
    root = make_discs(tmp_path / "wide", n=12, seed=3, size=WIDE)
    files = sorted((root / "classes").rglob("*.png"))
    model = build_wide_model()
    measure = concepts.measure(mean_intensity, name="mean_intensity", images=files)
    d = WIDE * WIDE * WIDE_CHANNELS
    assert d >= 100_000

    decomposed: list[tuple[int, ...]] = []
    eigh = np.linalg.eigh

    def recording_eigh(a, *args, **kwargs):
        decomposed.append(np.shape(a))
        return eigh(a, *args, **kwargs)

    monkeypatch.setattr(np.linalg, "eigh", recording_eigh)
    tracemalloc.start()
    try:
        result = concepts.score(model, "wide", measure, data=root, pool=False, **FAST)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    table = result.to_frame()
    assert (table["d"] == d).all()
    assert (table["r2_cv"] > 0.5).all()
    assert np.sign(_row(table, "bright", "wide", "mean_intensity")["br"]) == 1
    assert np.sign(_row(table, "dim", "wide", "mean_intensity")["br"]) == -1
    # Only n×n systems were decomposed (n = 24 images), never anything of size d.
    assert decomposed and max(max(s) for s in decomposed) <= len(files)
    # A d×d float32 matrix would take 42 GB; everything numpy allocated stays far below 1 GiB.
    assert peak < 2 ** 30, f"peak traced memory {peak / 2**20:.0f} MiB"


def test_regression_probe_memory_on_wide_activations():
    from probes.regression import RegressionProbe

    rng = np.random.default_rng(0)
    X = rng.standard_normal((30, 120_000)).astype(np.float32)
    y = X[:, :20].sum(axis=1) + 0.1 * rng.standard_normal(30)
    tracemalloc.start()
    try:
        probe = RegressionProbe(random_state=0).fit(X, y)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert probe.vector_.shape == (120_000,)
    # X is 14 MiB; a d×d float64 matrix would be 107 GiB. The fit's peak is a few copies of X at most.
    assert peak < 8 * X.nbytes + 64 * 2 ** 20, f"peak traced memory {peak / 2**20:.0f} MiB"


# --------------------------------------------------------------------------- rank_measures
@pytest.fixture(scope="module")
def measure_table(data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = concepts.measure_table(data / "classes", features=["original_firstorder_Mean",
                                                                    "original_firstorder_Entropy"],
                                       n_jobs=1, cache_dir=False, progress=False)
    rng = np.random.default_rng(5)
    table["unrelated"] = rng.normal(size=len(table))
    return table


def test_rank_measures_puts_the_planted_measure_first(model, measure_table):
    assert len(measure_table) == 2 * N_PER_CLASS
    ranking = concepts.rank_measures(model, ["conv1", "conv2"], measure_table, n_random=6, progress=False,
                                     cache_dir=False).to_frame()
    assert len(ranking) == 2 * 2 * 3  # classes x layers x measures
    assert set(ranking["kind"]) == {"rcv"}
    for (cls, layer), group in ranking.groupby(["class", "layer"], sort=False):
        assert list(group["rank"]) == [1, 2, 3]
        r2 = group["r2_cv"].to_numpy()
        assert (np.diff(r2) <= 1e-12).all(), "rows sorted by held-out R², best first"
        if layer == "conv1":
            first = group.iloc[0]
            assert first["concept"] == "original_firstorder_Mean"
            assert first["r2_cv"] > 0.9 and first["significant"]
            assert np.sign(first["br"]) == (1 if cls == "bright" else -1)
        unrelated = group[group["concept"] == "unrelated"].iloc[0]
        assert not unrelated["significant"] and unrelated["rank"] > 1
    # layers in the order asked for within each class
    for _, group in ranking.groupby("class"):
        assert list(dict.fromkeys(group["layer"])) == ["conv1", "conv2"]


def test_rank_measures_skips_unusable_columns(model, measure_table):
    table = measure_table[["original_firstorder_Mean"]].copy()
    table["constant"] = 1.0
    table["mostly_nan"] = np.nan
    table.iloc[:3, table.columns.get_loc("mostly_nan")] = [1.0, 2.0, 3.0]
    with pytest.warns(UserWarning, match="constant"):
        ranking = concepts.rank_measures(model, ["conv1"], table, n_random=4, progress=False,
                                         cache_dir=False).to_frame()
    assert set(ranking["concept"]) == {"original_firstorder_Mean"}


# --------------------------------------------------------------------------- failures stay local
def test_nan_values_and_failing_measure_are_reported_and_left_out(model, data, files):
    bad = {f.name for f in files[:3]}
    nan = {f.name for f in files[3:5]}

    def fragile(image):
        # read_image gives the file's pixels; identify the image by its exact content
        key = image.tobytes()
        if key in raising:
            raise ValueError("region too small")
        if key in nan_keys:
            return float("nan")
        return mean_intensity(image)

    from concepts.image_files import read_image

    raising = {read_image(f).tobytes() for f in files if f.name in bad}
    nan_keys = {read_image(f).tobytes() for f in files if f.name in nan}
    measure = concepts.measure(fragile, name="fragile")  # lazy: evaluated on the class examples
    with pytest.warns(UserWarning, match="fragile"):
        result = concepts.score(model, "conv1", measure, data=data, **FAST)
    failed = {os.path.basename(f["image"]) for f in measure.failures}
    assert failed == bad | nan
    reasons = " ".join(f["reason"] for f in measure.failures)
    assert "region too small" in reasons and "nan" in reasons.lower()
    assert result.provenance["concepts"]["fragile"]["n_images"] == len(files) - len(bad) - len(nan)
    table = result.to_frame()
    assert len(table) == 2 and table["r2_cv"].gt(0.9).all()
    assert _row(table, "bright", "conv1", "fragile")["significant"]

    # Given values with NaN and inf: those images are left out, the rest is scored.
    values = {str(f): mean_intensity(read_image(f)) for f in files}
    for f in files[:4]:
        values[str(f)] = np.nan
    values[str(files[4])] = np.inf
    given = concepts.Measure("given_with_nan", values)
    assert len(given.values) == len(files) - 5
    table = concepts.score(model, "conv1", given, data=data, **FAST)
    assert table.provenance["concepts"]["given_with_nan"]["n_images"] == len(files) - 5
    assert table.to_frame()["r2_cv"].gt(0.9).all()


def test_measure_failing_everywhere_is_a_clear_error(model, data):
    measure = concepts.measure(lambda image: float("nan"), name="always_nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(MeasureError, match="always_nan"):
            concepts.score(model, "conv1", measure, data=data, **FAST)
