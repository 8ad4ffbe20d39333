"""Tests of the demo data builders (histology, MRI) and the demo CNN.

Each case is built once per module at size "small" (a few seconds) and compared with its committed
manifest; the training test uses few epochs and a temporary cache.
"""
from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import Image

from concepts.demo import CaseInfo, DemoDataError, build_case
from concepts.demo._common import png_bytes, verify_case
from concepts.demo.histology import H_THRESHOLD, hematoxylin, hematoxylin_eosin
from concepts.image_files import list_image_files, read_image
from concepts.manifests import check_manifest, read_manifest


@pytest.fixture(scope="module")
def histology_case(tmp_path_factory) -> CaseInfo:
    return build_case("histology", tmp_path_factory.mktemp("demo") / "histology", size="small", verify=True)


@pytest.fixture(scope="module")
def mri_case(tmp_path_factory) -> CaseInfo:
    return build_case("mri", tmp_path_factory.mktemp("demo") / "mri", size="small", verify=True)


@pytest.mark.parametrize("case", ["histology_case", "mri_case"])
def test_build_reproduces_committed_manifest(case, request):
    info = request.getfixturevalue(case)
    result = check_manifest(info.manifest, info.root)
    assert result.ok, str(result)
    recorded = read_manifest(info.manifest)
    assert result.n_checked == recorded["n_files"] > 1000
    assert recorded["provenance"]["label_rule"] == info.label_rule
    assert (info.root / "classes.txt").read_text(encoding="utf-8").split() == info.class_names
    for name in info.class_names:
        assert list_image_files(info.root / "classes" / name)
        assert list_image_files(info.root / "train" / name)
    for name in info.concept_names:
        files = list_image_files(info.root / "concepts" / name)
        assert len(files) == 50
        # Every concept, class and random image has a mask at the same relative path.
        assert all((info.root / "masks" / f.relative_to(info.root)).is_file() for f in files)
    assert len(list_image_files(info.root / "random")) == 500
    assert info.ground_truth_concept in info.concept_names and info.ground_truth_class in info.class_names


@pytest.mark.parametrize("case", ["histology_case", "mri_case"])
def test_sets_are_disjoint(case, request):
    info = request.getfixturevalue(case)
    names = [f.name for sub in ("classes", "train", "concepts", "random")
             for f in list_image_files(info.root / sub, recursive=True)]
    assert len(names) == len(set(names))


def test_changed_tile_is_named(histology_case, tmp_path):
    import shutil

    copy = tmp_path / "histology"
    shutil.copytree(histology_case.root, copy)
    tile = sorted((copy / "classes" / "high_cellularity").glob("*.png"))[3]
    image = read_image(tile).copy()
    image[0, 0] ^= 1
    tile.write_bytes(png_bytes(image))
    relative = tile.relative_to(copy).as_posix()
    result = check_manifest(histology_case.manifest, copy)
    assert result.changed == [relative] and not result.missing and not result.added
    assert relative in str(result)
    moved = CaseInfo(**{**histology_case.__dict__, "root": copy})
    with pytest.raises(DemoDataError, match=relative):
        verify_case(moved)


def test_histology_label_rule(histology_case):
    root = histology_case.root

    def nuclear_fraction(folder):
        return np.array([np.mean(hematoxylin(read_image(f)) > H_THRESHOLD) for f in list_image_files(folder)])

    high = nuclear_fraction(root / "classes" / "high_cellularity")
    low = nuclear_fraction(root / "classes" / "low_cellularity")
    dense = nuclear_fraction(root / "concepts" / "nuclei_dense")
    thresholds = histology_case.provenance["thresholds"]
    assert high.min() * 1024 >= thresholds["high_cellularity_min_nuclear_pixels"]
    assert low.max() * 1024 <= thresholds["low_cellularity_max_nuclear_pixels"]
    assert dense.mean() > high.mean() > low.mean()
    # Background concept tiles are glass: bright and without nuclei.
    glass = [read_image(f) for f in list_image_files(root / "concepts" / "background")]
    assert all(np.mean(g.min(axis=-1) > 200) >= 0.99 for g in glass)
    # Masks are the thresholded hematoxylin channel.
    tile = list_image_files(root / "classes" / "high_cellularity")[0]
    mask = read_image(root / "masks" / tile.relative_to(root))
    assert set(np.unique(mask)) <= {0, 255}
    assert np.array_equal(mask == 255, hematoxylin(read_image(tile)) > H_THRESHOLD)


def test_mri_label_rule(mri_case):
    root = mri_case.root

    def gm_fraction(folder):
        return np.array([np.mean(read_image(root / "masks" / f.relative_to(root)) == 255)
                         for f in list_image_files(folder)])

    grey, white = gm_fraction(root / "classes" / "grey_matter"), gm_fraction(root / "classes" / "white_matter")
    assert grey.mean() > white.mean() + 0.2
    assert gm_fraction(root / "concepts" / "grey_matter_like").mean() > gm_fraction(
        root / "concepts" / "white_matter_like").mean()
    image = read_image(list_image_files(root / "classes" / "grey_matter")[0])
    assert image.shape == (32, 32) and image.dtype == np.uint8
    assert "average of many brains" in mri_case.label_rule


def test_png_bytes_are_stable_and_readable():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    gray = rng.integers(0, 256, (40, 1700), dtype=np.uint8)  # > 65535 bytes: several deflate blocks
    for image in (rgb, gray):
        data = png_bytes(image)
        assert data == png_bytes(image.copy())
        path_image = Image.open(__import__("io").BytesIO(data))
        assert np.array_equal(np.asarray(path_image), image)


def test_hematoxylin_matches_rgb2hed():
    from skimage.color import rgb2hed

    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    h, e = hematoxylin_eosin(image)
    reference = rgb2hed(image)
    assert np.allclose(h, reference[..., 0], atol=1e-12) and np.allclose(e, reference[..., 1], atol=1e-12)


def test_unknown_case_and_size():
    with pytest.raises(DemoDataError, match="Unknown demo case"):
        build_case("xray", "unused")
    with pytest.raises(DemoDataError, match="Unknown demo size"):
        build_case("histology", "unused", size="huge")


@pytest.mark.slow
def test_demo_model_trains_and_is_cached(histology_case, tmp_path):
    from concepts.demo.model import demo_model

    model, metrics = demo_model(histology_case, cache_dir=tmp_path, epochs=2, progress=False)
    assert metrics["from_cache"] is False
    assert metrics["test_accuracy"] > 0.8, metrics
    assert metrics["n_test"] == 150 and metrics["n_train"] == 500 and metrics["epochs"] == 2
    assert [layer.name for layer in model.layers if layer.name.startswith(("conv", "logits"))] == \
        ["conv1", "conv2", "conv3", "logits"]
    assert model.output_shape == (None, 2)

    started = time.perf_counter()
    cached, again = demo_model(histology_case, cache_dir=tmp_path, epochs=2, progress=False)
    assert time.perf_counter() - started < 5
    assert again["from_cache"] is True
    assert {k: v for k, v in again.items() if k != "from_cache"} == \
        {k: v for k, v in metrics.items() if k != "from_cache"}
    x = np.stack([read_image(f) / 255.0 for f in
                  list_image_files(histology_case.root / "classes" / "high_cellularity")[:8]]).astype("float32")
    assert np.allclose(model.predict(x, verbose=0), cached.predict(x, verbose=0), atol=1e-6)
