"""Bad values in in-memory inputs are refused or reported by name, never turned into a result.

* in-memory image arrays (class examples, concept and random sets) holding NaN or infinity, or
  no image at all, are refused when the source is built, naming the set and the images;
* a :class:`~concepts.Measure` given NaN or infinite values leaves them out with one warning and
  lists them in ``failures``; all of them non-finite is an error that says so;
* a measure keyed by paths that do not exist is named, with a few of the paths and how keys are
  resolved;
* the streaming statistics' backstop for a class without examples says what to give;
* measures on a huge scale give the same rows as on a normal one (standardised without overflow).
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
import probes.sources as sources  # noqa: E402
from concepts.errors import MeasureError  # noqa: E402
from concepts.image_files import read_image  # noqa: E402
from probes.errors import InsufficientDataError  # noqa: E402
from probes.sources import InMemoryImages, nonfinite_images  # noqa: E402
from probes.stats import NonFiniteValuesError  # noqa: E402
from probes.streaming import ColumnSummary  # noqa: E402
from synthetic import SIZE, build_model, make_data  # noqa: E402

FAST = dict(n_random=5, n_directions=100, progress=False, cache_dir=False)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("values"), n_class=12, n_concept=10, n_pool=60)


@pytest.fixture(scope="module")
def model():
    return build_model()


@pytest.fixture(scope="module")
def class_files(data):
    return sorted((data / "classes").rglob("*.png"))


def _images(n: int, seed: int = 0, dtype=np.float32) -> np.ndarray:
    return np.random.default_rng(seed).random((n, SIZE, SIZE, 1)).astype(dtype)


# --------------------------------------------------------------------------- 1. NaN/inf in image arrays
def test_array_with_nan_or_inf_is_refused_naming_the_set_and_images():
    x = _images(8)
    x[2, 3, 4, 0] = np.nan
    x[5, 0, 0, 0] = -np.inf
    with pytest.raises(NonFiniteValuesError) as info:
        InMemoryImages(x, name="tumour")
    message = str(info.value)
    assert "'tumour'" in message and "8 images" in message
    assert "2 image(s), indices [2, 5]" in message
    assert "np.nan_to_num" in message and "drop those images" in message
    assert isinstance(info.value, ValueError)


def test_float64_values_beyond_float32_range_count_as_infinite():
    x = _images(3, dtype=np.float64)
    x[1, 0, 0, 0] = 1e300   # finite in float64, infinite in the float32 array the model gets
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # numpy's own "overflow encountered in cast"
        with pytest.raises(NonFiniteValuesError, match=r"indices \[1\]") as info:
            InMemoryImages(x, name="big")
    assert "float32's range" in str(info.value)


def test_integer_and_boolean_arrays_are_not_scanned_and_convert_exactly():
    x = np.random.default_rng(0).integers(0, 65535, (4, SIZE, SIZE, 1)).astype(np.uint16)
    src = InMemoryImages(x, name="sixteen_bit")
    np.testing.assert_array_equal(src.images, x.astype(np.float32))
    assert src.images.dtype == np.float32
    assert len(InMemoryImages(np.ones((2, SIZE, SIZE, 1), bool))) == 2


def test_check_is_one_blockwise_pass_without_copying_the_array(monkeypatch):
    monkeypatch.setattr(sources, "_FINITE_CHECK_ELEMENTS", 3 * SIZE * SIZE)   # blocks of 3 images
    x = _images(40)
    for i in (0, 2, 3, 17, 39):   # first, block ends, block starts, last
        x[i, i % SIZE, 0, 0] = np.nan
    assert nonfinite_images(x).tolist() == [0, 2, 3, 17, 39]
    x[[0, 2, 3, 17, 39]] = 0.0
    tracemalloc.start()
    try:
        src = InMemoryImages(x)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert src.images is x                     # a float32 array is used where it is
    assert peak < x.nbytes / 8                 # only a small boolean block at a time


@pytest.mark.parametrize("where", ["examples", "concept", "random"])
def test_score_refuses_nan_arrays_before_any_compute(model, data, where):
    bad = _images(10, seed=1)
    bad[4] = np.nan
    kwargs = dict(data=data, **FAST)
    concept = data / "concepts" / "horizontal"
    if where == "examples":
        kwargs["examples"] = {"striped": bad}
        name = "striped"
    elif where == "concept":
        concept = {"arr_concept": bad}
        name = "arr_concept"
    else:
        kwargs["random"] = [_images(10, seed=s) for s in range(2, 6)] + [bad]
        name = "random_004"
    with pytest.raises(NonFiniteValuesError, match=rf"Image set '{name}' .* indices \[4\]"):
        concepts.score(model, "conv1", concept, **kwargs)


# --------------------------------------------------------------------------- 2. NaN/inf in a Measure
def test_measure_leaves_out_non_finite_values_with_one_warning(class_files):
    values = {str(f): float(i) for i, f in enumerate(class_files)}
    values[str(class_files[0])] = np.nan
    values[str(class_files[3])] = np.inf
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = concepts.Measure("area", values)
    assert len(caught) == 1 and caught[0].category is UserWarning
    text = str(caught[0].message)
    assert f"2 of {len(class_files)} given values are NaN or infinite" in text and "left out" in text
    assert str(class_files[0]) in text and str(class_files[3]) in text
    assert caught[0].filename == __file__        # points at the caller's line
    assert len(m.values) == len(class_files) - 2
    assert [(f["image"], f["reason"]) for f in m.failures] == [
        (str(class_files[0].resolve()), "the given value is nan"),
        (str(class_files[3].resolve()), "the given value is inf")]
    assert "2 failures" in repr(m)


def test_measure_with_only_non_finite_values_is_an_error_that_says_so(class_files):
    values = {str(f): (np.nan if i % 2 else -np.inf) for i, f in enumerate(class_files)}
    expected = rf"'area': all {len(class_files)} given values are NaN or infinite"
    with pytest.raises(MeasureError, match=expected):
        concepts.Measure("area", values)


def test_failures_already_recorded_are_not_reported_twice(class_files):
    # What radiomics() does: NaN for an image whose computation failed, with the reason in failures.
    failed = str(class_files[0].resolve())
    values = pd.Series({str(f): (np.nan if i == 0 else float(i)) for i, f in enumerate(class_files)})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = concepts.Measure("glcm", values, failures=[{"image": failed, "feature": "glcm",
                                                        "reason": "empty region"}])
    assert m.failures == [{"image": failed, "feature": "glcm", "reason": "empty region"}]
    assert len(m.values) == len(class_files) - 1


def test_evaluator_values_that_are_nan_without_a_reason_are_recorded(class_files):
    def evaluator(paths):
        return pd.Series({str(p): (np.nan if i == 1 else 1.0 + i) for i, p in enumerate(paths)}), []

    m = concepts.Measure("lazy", evaluator=evaluator)
    with pytest.warns(UserWarning, match=r"'lazy': 1 of 3 given values are NaN"):
        out = m.evaluate(class_files[:3])
    assert out.tolist() == [1.0, 3.0]
    assert m.failures == [{"image": str(class_files[1].resolve()), "feature": "lazy",
                           "reason": "the given value is nan"}]


def test_measure_values_that_are_not_numbers_are_an_error(class_files):
    with pytest.raises(MeasureError, match="'area': values must be numbers"):
        concepts.Measure("area", {str(class_files[0]): "large"})


# --------------------------------------------------------------------------- 3. keys that are not files
def test_measure_keyed_by_missing_paths_is_named(tmp_path, class_files, monkeypatch):
    monkeypatch.chdir(tmp_path)
    values = {f"scans/{i}.png": float(i) for i in range(12)}
    with pytest.warns(UserWarning) as caught:
        m = concepts.Measure("area", values)
    text = str(caught[0].message)
    assert "'area': 12 of its 12 image paths are not existing files" in text
    assert str(tmp_path / "scans" / "0.png") in text and "..." in text   # a few, not all twelve
    where = f"resolved against the working directory when the Measure is created (here {str(tmp_path)!r})"
    assert where in text
    assert list(m.values.index[:1]) == [str(tmp_path / "scans" / "0.png")]
    with pytest.raises(MeasureError, match="must be the paths of the image files"):
        m.check_images()
    good = concepts.Measure("fine", {str(f): 1.0 for f in class_files[:2]})
    assert good.check_images() == [f.resolve() for f in class_files[:2]]


def test_score_with_a_measure_on_missing_paths_names_them(model, data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        meas = concepts.Measure("area", {f"/nonexistent-hE/{i}.png": float(i) for i in range(20)})
    with pytest.raises(MeasureError, match=r"'area': 20 of its 20 image paths are not existing files "
                                           r"or folders \(/nonexistent-hE/0.png"):
        concepts.score(model, "conv1", meas, data=data, **FAST)


# --------------------------------------------------------------------------- 4. no images at all
def test_empty_array_is_refused_at_the_source_with_its_name():
    with pytest.raises(InsufficientDataError, match=r"Image set 'tumour' is an in-memory array with no "
                                                     r"images \(shape \(0, 16, 16, 1\)\); give at least one"):
        InMemoryImages(np.zeros((0, SIZE, SIZE, 1), np.float32), name="tumour")


def test_score_with_an_empty_class_array_names_the_class(model, data):
    with pytest.raises(InsufficientDataError, match="Image set 'striped' is an in-memory array with no"):
        concepts.score(model, "conv1", data / "concepts" / "horizontal", data=data,
                       examples={"striped": np.zeros((0, SIZE, SIZE, 1), np.float32)}, **FAST)


def test_empty_summary_backstop_says_what_to_give():
    with pytest.raises(InsufficientDataError, match="give every class at least one example image"):
        ColumnSummary(2).tcav_scores()


# --------------------------------------------------------------------------- 5. measures on a huge scale
def test_measure_scale_does_not_change_the_rows(model, data, class_files):
    # Horizontal-stripe energy, the sum of conv1's two d/dy channels averaged over positions: linear in the
    # pooled activations the RCV regresses on, so the measure is readable there (R² near 1).
    import keras

    conv1 = keras.Model(model.input, model.get_layer("conv1").output)
    x = np.stack([np.asarray(read_image(f), np.float32)[..., None] / 255.0 for f in class_files])
    energy = np.asarray(conv1(x))[..., :2].sum(axis=-1).mean(axis=(1, 2))
    intensity = {str(f): float(e) for f, e in zip(class_files, energy)}
    tables = {}
    for scale in (1.0, 1e300):
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)   # no overflow on the way
            result = concepts.score(model, "conv1", concepts.Measure("intensity", {k: v * scale for k, v in
                                                                                   intensity.items()}),
                                    data=data, **FAST)
        tables[scale] = result.to_frame()
    columns = ["score", "p_value", "r2_cv", "br", "ubs", "vector_quality", "fold_angle_deg", "null_mean"]
    normal, huge = (tables[s][columns].to_numpy(float) for s in (1.0, 1e300))
    assert np.isfinite(normal[:, :3]).all() and (normal[:, 2] > 0.9).all()   # a real, readable measure
    # The mean angle between fold RCVs is an arccos near 1 (about 0.002 degrees here): rounding of the
    # cosines moves it by ~1e-10 degrees, hence the absolute tolerance.
    np.testing.assert_allclose(huge, normal, rtol=1e-9, atol=1e-9)
