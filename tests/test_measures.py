"""Tests of concepts.measures: radiomics feature tables, measures, failures and the cache."""
from __future__ import annotations

import json
import math
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from concepts import measures
from concepts.errors import ConceptFolderError, MeasureError
from concepts.measures import DEFAULT_PARAMS, Measure, list_features, measure, measure_table, radiomics
from probes.errors import CacheCorruptionWarning


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    # Never touch ~/.cache from tests.
    monkeypatch.setenv("CONCEPTS_CACHE_DIR", str(tmp_path / "default-cache"))


def _save(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)
    return path


def _noise(seed: int, shape=(40, 40)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape).astype(np.uint8)


def _disc(shape=(40, 40), radius=10.0, center=(20, 20)) -> np.ndarray:
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (((yy - center[0]) ** 2 + (xx - center[1]) ** 2) <= radius ** 2).astype(np.uint8) * 255


def _quiet(**kwargs) -> dict:
    return {"n_jobs": 1, "progress": False, **kwargs}


@pytest.fixture
def dataset(tmp_path):
    """classes/{a,b}/*.png with masks/{a,b}/*.png: four images with discs of different radii."""
    images, masks = tmp_path / "classes", tmp_path / "masks"
    for i, (cls, radius) in enumerate([("a", 8), ("a", 10), ("b", 12), ("b", 14)]):
        _save(images / cls / f"img{i}.png", _noise(i))
        _save(masks / cls / f"img{i}.png", _disc(radius=radius))
    return images, masks


def test_default_params_equal_yaml_file():
    with open(measures.DEFAULT_PARAMS_FILE) as handle:
        assert yaml.safe_load(handle) == DEFAULT_PARAMS
    assert "shape2D" in DEFAULT_PARAMS["featureClass"]
    assert DEFAULT_PARAMS["setting"]["force2D"] is True


def test_firstorder_mean_and_variance_match_numpy(dataset, tmp_path):
    images, masks = dataset
    table = measure_table(images, masks, cache_dir=False, **_quiet())
    assert table.attrs["failures"] == []
    assert all(c.startswith("original_") for c in table.columns)
    assert not any(c.startswith("diagnostics") for c in table.columns)
    for path in sorted(images.rglob("*.png")):
        pixels = np.asarray(Image.open(path), dtype=float)
        region = np.asarray(Image.open(masks / path.relative_to(images))) > 0
        row = table.loc[str(path.resolve())]
        assert row["original_firstorder_Mean"] == pytest.approx(pixels[region].mean(), rel=1e-6)
        assert row["original_firstorder_Variance"] == pytest.approx(pixels[region].var(), rel=1e-6)
    assert table.attrs["params"] == DEFAULT_PARAMS
    assert table.attrs["channel"] == "gray"
    assert table.attrs["pyradiomics_version"]
    assert list(table.columns) == list_features()


def test_shape2d_of_a_disc(tmp_path):
    _save(tmp_path / "img" / "disc.png", _noise(1, (48, 48)))
    mask = _disc((48, 48), radius=10, center=(24, 24))
    _save(tmp_path / "mask" / "disc.png", mask)
    table = measure_table(tmp_path / "img", tmp_path / "mask", cache_dir=False, **_quiet())
    row = table.iloc[0]
    assert abs(row["original_shape2D_PixelSurface"] - (mask > 0).sum()) <= 2
    assert row["original_shape2D_MeshSurface"] == pytest.approx(math.pi * 10 ** 2, rel=0.10)


def test_whole_image_without_masks(tmp_path):
    pixels = _noise(3, (30, 20))
    _save(tmp_path / "x.png", pixels)
    table = measure_table([tmp_path / "x.png"], cache_dir=False, **_quiet())
    row = table.loc[str((tmp_path / "x.png").resolve())]
    assert row["original_firstorder_Mean"] == pytest.approx(pixels.mean(), rel=1e-6)
    assert row["original_shape2D_PixelSurface"] == pytest.approx(30 * 20)


def test_mask_with_other_extension_and_yaml_params(tmp_path):
    import tifffile

    _save(tmp_path / "classes" / "a" / "x.png", _noise(4))
    (tmp_path / "masks" / "a").mkdir(parents=True)
    tifffile.imwrite(tmp_path / "masks" / "a" / "x.tif", (_disc() > 0).astype(np.uint8))
    params = {"setting": {"binWidth": 8, "label": 1}, "featureClass": {"firstorder": []}}
    param_file = tmp_path / "radiomics.yaml"
    param_file.write_text(yaml.safe_dump(params))
    table = measure_table(tmp_path / "classes", tmp_path / "masks", param_file, cache_dir=False, **_quiet())
    assert table.attrs["failures"] == []
    assert all(c.startswith("original_firstorder_") for c in table.columns)
    assert table.attrs["params"] == params


def test_failures_stay_local(tmp_path):
    images, masks = tmp_path / "classes", tmp_path / "masks"
    _save(images / "good.png", _noise(0))
    _save(masks / "good.png", _disc())
    _save(images / "empty.png", _noise(1))
    _save(masks / "empty.png", np.zeros((40, 40)))
    _save(images / "tiny.png", _noise(2))
    tiny = np.zeros((40, 40))
    tiny[5:7, 5:7] = 1  # 4 pixels: minimumROISize 4 rejects it
    _save(masks / "tiny.png", tiny)
    _save(images / "constant.png", np.full((40, 40), 100))
    _save(masks / "constant.png", _disc())
    _save(images / "nomask.png", _noise(3))
    with pytest.warns(UserWarning) as record:
        table = measure_table(images, masks, cache_dir=False, **_quiet())
    summaries = [w for w in record if "failed" in str(w.message)]
    assert len(summaries) == 1 and "4 of 5 images" in str(summaries[0].message)
    good = str((images / "good.png").resolve())
    assert table.loc[good].notna().all()
    reasons = {Path(f["image"]).stem: f["reason"] for f in table.attrs["failures"]}
    assert set(reasons) == {"empty", "tiny", "constant", "nomask"}
    assert all(f["feature"] is None for f in table.attrs["failures"])
    assert "empty" in reasons["empty"]
    assert "too small" in reasons["tiny"]
    assert "constant" in reasons["constant"]
    assert reasons["nomask"].startswith("no mask found at")
    for stem in reasons:
        assert table.loc[str((images / f"{stem}.png").resolve())].isna().all()


def test_line_mask_is_rejected_by_pyradiomics(tmp_path):
    _save(tmp_path / "i" / "line.png", _noise(5))
    line = np.zeros((40, 40))
    line[10, 5:30] = 1  # one pixel high: fewer than minimumROIDimensions
    _save(tmp_path / "m" / "line.png", line)
    with pytest.warns(UserWarning, match="1 of 1 images"):
        table = measure_table(tmp_path / "i", tmp_path / "m", cache_dir=False, **_quiet())
    assert table.isna().all().all()
    assert "pyradiomics failed" in table.attrs["failures"][0]["reason"]


def test_unknown_feature_name_suggests_close_matches(dataset):
    images, masks = dataset
    with pytest.raises(MeasureError, match="original_glcm_Contrast"):
        radiomics("original_glcm_Contrats", images, masks, **_quiet(cache_dir=False))
    with pytest.raises(MeasureError, match="original_glcm_Contrast"):
        measure_table(images, masks, features=["glcm_Contrats"], **_quiet(cache_dir=False))


def test_radiomics_measure(dataset):
    images, masks = dataset
    m = radiomics("glcm_Contrast", images, masks, **_quiet(cache_dir=False))
    assert m.name == "original_glcm_Contrast"
    assert len(m.values) == 4 and np.isfinite(m.values).all()
    assert m.values.index[0] == str((images / "a" / "img0.png").resolve())
    assert m.images == [Path(p) for p in m.values.index]
    assert m.failures == [] and m.params == DEFAULT_PARAMS
    assert "original_glcm_Contrast" in m.description and "gray" in m.description
    assert "original_glcm_Contrast" in repr(m)
    # Disc area grows with the index: shape2D works through the same path.
    area = radiomics("original_shape2D_PixelSurface", images, masks, **_quiet(cache_dir=False))
    assert area.values.is_monotonic_increasing
    # evaluate() gives values of known images, in the order asked.
    paths = [images / "b" / "img3.png", images / "a" / "img1.png"]
    assert m.evaluate(paths).tolist() == [m.values[str(p.resolve())] for p in paths]


def test_radiomics_all_nan_raises(tmp_path):
    _save(tmp_path / "c.png", np.full((20, 20), 9))
    with pytest.raises(MeasureError, match="NaN on all"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        radiomics("firstorder_Mean", [tmp_path / "c.png"], **_quiet(cache_dir=False))


def test_features_selects_columns_and_failures(dataset):
    images, masks = dataset
    table = measure_table(images, masks, features=["firstorder_Mean", "original_glcm_Contrast"],
                          **_quiet(cache_dir=False))
    assert list(table.columns) == ["original_firstorder_Mean", "original_glcm_Contrast"]
    assert table.index.name == "image" and len(table) == 4


def test_cache_reuses_and_invalidates(dataset, tmp_path, monkeypatch):
    images, masks = dataset
    cache = tmp_path / "cache"
    calls = []
    original = measures._extract

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(measures, "_extract", counting)
    first = measure_table(images, masks, cache_dir=cache, **_quiet())
    assert len(calls) == 4
    assert len(_radiomics_entries(cache)) == 4

    second = measure_table(images, masks, cache_dir=cache, **_quiet())
    assert len(calls) == 4  # nothing recomputed
    pd.testing.assert_frame_equal(first, second)

    # One changed byte in one image: only that image is recomputed.
    changed = images / "a" / "img0.png"
    pixels = np.asarray(Image.open(changed)).copy()
    pixels[20, 20] ^= 1  # inside the region
    _save(changed, pixels)
    third = measure_table(images, masks, cache_dir=cache, **_quiet())
    assert len(calls) == 5
    assert third.loc[str(changed.resolve()), "original_firstorder_Mean"] != \
        first.loc[str(changed.resolve()), "original_firstorder_Mean"]

    # Other parameters or another channel are other cache entries.
    measure_table(images, masks, {**DEFAULT_PARAMS, "setting": {**DEFAULT_PARAMS["setting"], "binWidth": 8}},
                  cache_dir=cache, **_quiet())
    assert len(calls) == 9

    # A damaged cache file is reported, removed and recomputed.
    fresh = tmp_path / "fresh-cache"
    measure_table(images, masks, cache_dir=fresh, **_quiet())
    assert len(calls) == 13
    victim = _radiomics_entries(fresh)[0]
    (victim / "record.json").write_text("{not json")
    with pytest.warns(CacheCorruptionWarning, match=victim.name):
        again = measure_table(images, masks, cache_dir=fresh, **_quiet())
    assert len(calls) == 14
    assert json.loads((victim / "record.json").read_text(encoding="utf-8"))["format"]  # rewritten
    pd.testing.assert_frame_equal(again, third)


def _radiomics_entries(cache: Path) -> list[Path]:
    from probes.cache import Store

    return [e for e in Store(cache).entries()
            if json.loads((e / "entry.json").read_text(encoding="utf-8"))["meta"].get("kind") == "radiomics"]


def test_cache_content_is_used(dataset, tmp_path):
    images, masks = dataset
    cache = tmp_path / "cache"
    table = measure_table(images, masks, cache_dir=cache, **_quiet())
    target = str((images / "a" / "img0.png").resolve())
    from probes.cache import Store

    store = Store(cache)
    for entry in _radiomics_entries(cache):
        data, _ = store.get_record(entry.name)
        if data["image"] == target:
            # Rewritten through the store (a hand edit would fail its checksum and be recomputed).
            data["values"]["original_firstorder_Mean"] = -1.0
            shutil.rmtree(entry)
            store.put_record(entry.name, data, meta={"kind": "radiomics"})
    again = measure_table(images, masks, cache_dir=cache, **_quiet())
    assert again.loc[target, "original_firstorder_Mean"] == -1.0
    assert again.drop(index=target).equals(table.drop(index=target))


def test_default_cache_dir_from_environment(dataset, tmp_path):
    images, masks = dataset
    measure_table(images, masks, **_quiet())
    assert len(_radiomics_entries(tmp_path / "default-cache")) == 4


def test_parallel_equals_serial(dataset):
    images, masks = dataset
    serial = measure_table(images, masks, n_jobs=1, cache_dir=False, progress=False)
    parallel = measure_table(images, masks, n_jobs=2, cache_dir=False, progress=False)
    pd.testing.assert_frame_equal(serial, parallel)


def test_hematoxylin_channel_differs_from_gray(tmp_path):
    rng = np.random.default_rng(7)
    rgb = np.zeros((40, 40, 3), dtype=np.uint8)
    rgb[...] = (230, 170, 210)  # eosin-pink background
    nuclei = rng.random((40, 40)) < 0.3
    rgb[nuclei] = (70, 50, 140)  # hematoxylin-blue nuclei
    rgb = np.clip(rgb.astype(int) + rng.integers(-10, 10, size=rgb.shape), 0, 255).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "he.png")
    gray = measure_table([tmp_path / "he.png"], cache_dir=False, **_quiet())
    hema = measure_table([tmp_path / "he.png"], channel="hematoxylin", cache_dir=False, **_quiet())
    assert hema.attrs["channel"] == "hematoxylin" and hema.attrs["failures"] == []
    g, h = gray.iloc[0]["original_firstorder_Mean"], hema.iloc[0]["original_firstorder_Mean"]
    assert np.isfinite(h) and h != pytest.approx(g)
    row = hema.iloc[0]
    assert 0 <= row["original_firstorder_Minimum"] <= row["original_firstorder_Maximum"] <= 255
    # channel="gray" is BT.601 luma, the grey image concepts.sets gives single-channel models.
    luminance = rgb.astype(float) @ np.array([0.299, 0.587, 0.114])
    assert g == pytest.approx(luminance.mean(), rel=1e-6)
    red = measure_table([tmp_path / "he.png"], channel="r", cache_dir=False, **_quiet())
    assert red.iloc[0]["original_firstorder_Mean"] == pytest.approx(rgb[..., 0].mean(), rel=1e-6)
    custom = measure_table([tmp_path / "he.png"], channel=lambda a: a[..., 1], cache_dir=False, **_quiet())
    assert custom.iloc[0]["original_firstorder_Mean"] == pytest.approx(rgb[..., 1].mean(), rel=1e-6)
    with pytest.raises(MeasureError, match="channel"):
        measure_table([tmp_path / "he.png"], channel="purple", **_quiet())
    from skimage.color import rgb2hed
    darkest_grey = rgb2hed(np.array([[[1, 1, 1]]], dtype=np.uint8))[0, 0, 0]
    assert measures.HEMATOXYLIN_RANGE[1] == pytest.approx(darkest_grey, rel=1e-6)


def test_measure_function_values_and_failures(tmp_path):
    paths = [_save(tmp_path / f"{i}.png", _noise(i, (10, 10))) for i in range(3)]

    def picky(img):
        if img[0, 0] == np.asarray(Image.open(paths[1]))[0, 0]:
            raise RuntimeError("odd image")
        return img.mean()

    m = measure(lambda img: float(img.mean()), images=tmp_path)
    assert m.name == "measure"
    expected = [float(np.asarray(Image.open(p)).mean()) for p in paths]
    assert m.values.tolist() == pytest.approx(expected)
    assert list(m.values.index) == [str(p.resolve()) for p in paths]

    with pytest.warns(UserWarning, match="1 of 3 images"):
        p = measure(picky, images=paths)
    assert p.name == "picky"
    assert str(paths[1].resolve()) not in p.values.index and len(p.values) == 2
    assert p.failures[0]["image"] == str(paths[1].resolve()) and "odd image" in p.failures[0]["reason"]


def test_lazy_measure_evaluate(tmp_path):
    paths = [_save(tmp_path / f"{i}.png", _noise(i, (10, 10))) for i in range(3)]
    m = measure(lambda img: float(img.max()) if img.max() > 0 else float("nan"), name="maximum")
    assert len(m.values) == 0 and "not evaluated" in repr(m)
    out = m.evaluate(paths[:2])
    assert list(out.index) == [str(p.resolve()) for p in paths[:2]]
    assert len(m.values) == 2
    m.evaluate(paths)
    assert len(m.values) == 3 and m.images == [p.resolve() for p in paths]
    blank = _save(tmp_path / "blank.png", np.zeros((10, 10)))
    with pytest.raises(MeasureError, match="no valid value"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m.evaluate([blank])
    assert m.failures[-1]["reason"] == "returned nan"


def test_static_measure():
    m = Measure("size", pd.Series({"/x/a.png": 1.0, "/x/b.png": np.inf}))
    assert m.values.tolist() == [1.0]
    assert m.params is None


def test_bad_inputs(tmp_path):
    with pytest.raises(ConceptFolderError):
        measure_table(tmp_path / "missing", **_quiet())
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConceptFolderError):
        measure_table(tmp_path / "empty", **_quiet())
    _save(tmp_path / "x" / "a.png", _noise(0))
    with pytest.raises(ConceptFolderError, match="Masks folder"):
        measure_table(tmp_path / "x", masks=tmp_path / "nomasks", **_quiet())
    with pytest.raises(MeasureError, match="Invalid pyradiomics parameters"):
        measure_table(tmp_path / "x", params={"setting": {"binWidht": 4}}, **_quiet())
    with pytest.raises(MeasureError, match="does not exist"):
        measure_table(tmp_path / "x", params=tmp_path / "nope.yaml", **_quiet())


def test_single_feature_failure_is_reported(dataset, monkeypatch):
    import logging

    class FakeExtractor:
        def execute(self, image, mask):
            logging.getLogger("radiomics.glcm").error(
                "FAILED: Traceback\n  in getContrastFeatureValue\nZeroDivisionError: division by zero")
            return {"diagnostics_Versions": "x", "original_glcm_Contrast": np.array(np.nan),
                    "original_glcm_Idm": np.array(np.inf), "original_firstorder_Mean": np.array(3.0)}

    # _extract looks its extractor up in the adapter module, so that is where it is replaced.
    monkeypatch.setattr(measures.pyradiomics_adapter, "_extractor", lambda params_json: FakeExtractor())
    values, reasons, error = measures._extract(np.zeros((4, 4)), np.ones((4, 4), np.uint8), "{}")
    assert error == "" and values == {"original_glcm_Contrast": None, "original_glcm_Idm": None,
                                      "original_firstorder_Mean": 3.0}
    assert "ZeroDivisionError" in reasons["original_glcm_Contrast"]
    assert reasons["original_glcm_Idm"] == "pyradiomics returned inf"
    monkeypatch.undo()

    # In a table: NaN for that image and feature only, one failure entry naming both.
    images, masks = dataset
    original = measures._extract
    victim = str((images / "a" / "img1.png").resolve())

    def one_bad(image, mask, params_json):
        values, reasons, error = original(image, mask, params_json)
        if int(mask.sum()) == int((_disc(radius=10) > 0).sum()):  # img1 has the radius-10 disc
            values["original_glcm_Contrast"] = None
            reasons["original_glcm_Contrast"] = "pyradiomics returned nan"
        return values, reasons, error

    monkeypatch.setattr(measures, "_extract", one_bad)
    with pytest.warns(UserWarning, match="1 feature values"):
        table = measure_table(images, masks, cache_dir=False, **_quiet())
    assert table.attrs["failures"] == [{"image": victim, "feature": "original_glcm_Contrast",
                                        "reason": "pyradiomics returned nan"}]
    assert np.isnan(table.loc[victim, "original_glcm_Contrast"])
    assert table.drop(columns="original_glcm_Contrast").notna().all().all()
    with pytest.warns(UserWarning):
        m = radiomics("original_glcm_Contrast", images, masks, **_quiet(cache_dir=False))
    assert victim not in m.values.index and len(m.values) == 3 and len(m.failures) == 1
    mean = radiomics("original_firstorder_Mean", images, masks, **_quiet(cache_dir=False))
    assert len(mean.values) == 4 and mean.failures == []


def test_progress_bar_runs(dataset):
    images, masks = dataset
    table = measure_table(images, masks, n_jobs=1, cache_dir=False, progress=True)
    assert len(table) == 4


def test_list_of_images_finds_mirrored_masks_and_evaluates_new_images(dataset):
    images, masks = dataset
    first = [images / "a" / "img0.png", images / "a" / "img1.png"]
    m = radiomics("firstorder_Mean", first, masks, **_quiet(cache_dir=False))
    assert m.failures == [] and len(m.values) == 2
    full = measure_table(images, masks, features=["firstorder_Mean"], **_quiet(cache_dir=False))
    later = [images / "b" / "img2.png", images / "a" / "img0.png"]
    out = m.evaluate(later)
    assert list(out.index) == [str(p.resolve()) for p in later]
    assert out.tolist() == full.loc[out.index, "original_firstorder_Mean"].tolist()
    assert len(m.values) == 3
