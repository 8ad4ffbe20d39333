"""3D radiomics on volumes, checked against independent computations (a drawn ball's volume in mm³
with anisotropic spacing, the mean inside a mask by numpy), plus masks, failures, cache and workers."""
from __future__ import annotations

import warnings

import json

import numpy as np
import pytest
import yaml

import concepts
from concepts.errors import ConceptFolderError, MeasureError
from concepts.radiomics3d import DEFAULT_PARAMS_3D, DEFAULT_PARAMS_3D_FILE, list_volume_features
from concepts.volumes import VolumeGeometryError, write_dicom_series, write_volume

SPACING = (0.8, 1.0, 2.5)        # x, y, z in mm: strongly anisotropic
SHAPE = (20, 40, 32)             # z, y, x voxels
RADIUS = 12.0                    # mm


def _ball(centre=(10, 20, 16), radius=RADIUS) -> np.ndarray:
    """A ball of ``radius`` mm drawn in physical space on the anisotropic grid."""
    zz, yy, xx = np.indices(SHAPE)
    d2 = (((zz - centre[0]) * SPACING[2]) ** 2 + ((yy - centre[1]) * SPACING[1]) ** 2
          + ((xx - centre[2]) * SPACING[0]) ** 2)
    return (d2 <= radius ** 2).astype(np.uint8)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("r3d")
    rng = np.random.default_rng(0)
    for i, radius in enumerate((12.0, 9.0)):
        image = rng.normal(40 + 30 * i, 20, SHAPE).astype(np.int16)
        write_volume(image, root / "img" / "a" / f"case{i}.nii.gz", spacing=SPACING, origin=(5, -3, 7))
        write_volume(_ball(radius=radius), root / "mask" / "a" / f"case{i}.nii.gz", spacing=SPACING,
                     origin=(5, -3, 7))
    # A DICOM series with a NIfTI mask beside it.
    image = rng.normal(100, 25, SHAPE).astype(np.int16)
    write_dicom_series(image, root / "img" / "b" / "series1", spacing=SPACING)
    write_volume(_ball(), root / "mask" / "b" / "series1.nii.gz", spacing=SPACING)
    return root


def _table(data, **kw):
    kw.setdefault("cache_dir", False)
    kw.setdefault("n_jobs", 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # no failures expected: a warning would mean one
        return concepts.measure_table(data / "img", masks=data / "mask", progress=False, **kw)


def test_ball_volume_in_mm3_and_mean_inside_the_mask(data):
    from concepts.volumes import read_volume

    table = _table(data, features=["shape_VoxelVolume", "shape_MeshVolume", "firstorder_Mean"])
    assert table.attrs["dimensions"] == 3 and len(table) == 3
    for i, radius in enumerate((12.0, 9.0)):
        row = table.loc[str((data / "img" / "a" / f"case{i}.nii.gz").resolve())]
        mask = _ball(radius=radius)
        voxel_mm3 = np.prod(SPACING)
        # Exactly the voxel count times the voxel volume; within 2 % of the analytic ball 4/3 π r³.
        assert row["original_shape_VoxelVolume"] == pytest.approx(mask.sum() * voxel_mm3, rel=1e-6)  # float32 spacing in NIfTI
        assert row["original_shape_VoxelVolume"] == pytest.approx(4 / 3 * np.pi * radius ** 3, rel=0.02)
        assert row["original_shape_MeshVolume"] == pytest.approx(4 / 3 * np.pi * radius ** 3, rel=0.03)
        image = np.asarray(read_volume(data / "img" / "a" / f"case{i}.nii.gz"), dtype=np.float64)
        assert row["original_firstorder_Mean"] == pytest.approx(image[mask > 0].mean(), rel=1e-9)
    series = table.loc[str((data / "img" / "b" / "series1").resolve())]
    assert series["original_shape_VoxelVolume"] == pytest.approx(_ball().sum() * np.prod(SPACING))


def test_texture_matrices_are_3d(tmp_path):
    # Intensity changes only from one axial slice to the next: in-plane (2D) GLCMs see constant
    # slices and give contrast 0; 3D GLCMs see the changes along z.
    layers = np.broadcast_to((np.arange(8) % 2 * 50).astype(np.int16)[:, None, None], (8, 10, 10))
    write_volume(np.ascontiguousarray(layers), tmp_path / "img" / "v.nii.gz")
    three_d = concepts.measure_table(tmp_path / "img", features=["glcm_Contrast"], cache_dir=False, n_jobs=1,
                                     progress=False)
    assert three_d.iloc[0, 0] > 0
    flat = dict(DEFAULT_PARAMS_3D, setting=dict(DEFAULT_PARAMS_3D["setting"], force2D=True))
    two_d = concepts.measure_table(tmp_path / "img", params=flat, features=["glcm_Contrast"], cache_dir=False,
                                   n_jobs=1, progress=False)
    assert two_d.iloc[0, 0] == pytest.approx(0.0)


def test_workers_and_the_cache_give_the_same_table(data, tmp_path):
    serial = _table(data)
    cold = _table(data, n_jobs=2, cache_dir=tmp_path)
    from probes.cache import Store

    kinds = [json.loads((entry / "entry.json").read_text(encoding="utf-8"))["meta"].get("kind") for entry in Store(tmp_path).entries()]
    assert kinds.count("radiomics") == 3
    warm = _table(data, n_jobs=2, cache_dir=tmp_path)
    np.testing.assert_allclose(cold.to_numpy(), serial.to_numpy(), rtol=1e-10, equal_nan=True)
    np.testing.assert_allclose(warm.to_numpy(), serial.to_numpy(), rtol=1e-10, equal_nan=True)


def test_radiomics_gives_a_measure_of_volumes(data):
    m = concepts.radiomics("shape_VoxelVolume", images=data / "img", masks=data / "mask", cache_dir=False,
                           n_jobs=1, progress=False)
    assert len(m.values) == 3 and "3D" in m.description
    with pytest.raises(MeasureError, match="3D 'shape' class"):
        concepts.radiomics("shape2D_PixelSurface", images=data / "img", masks=data / "mask", progress=False)


def test_failures_stay_local(tmp_path):
    rng = np.random.default_rng(1)
    for name in ("good", "empty", "constant"):
        image = rng.normal(0, 30, (6, 8, 8)).astype(np.int16) if name != "constant" else np.full((6, 8, 8), 3, np.int16)
        write_volume(image, tmp_path / "img" / f"{name}.nii.gz")
        write_volume(np.zeros((6, 8, 8), np.uint8) if name == "empty" else np.ones((6, 8, 8), np.uint8),
                     tmp_path / "mask" / f"{name}.nii.gz")
    write_volume(rng.normal(0, 30, (6, 8, 8)).astype(np.int16), tmp_path / "img" / "unmasked.nii.gz")
    with pytest.warns(UserWarning, match="3 of 4 images failed"):
        table = concepts.measure_table(tmp_path / "img", masks=tmp_path / "mask", features=["firstorder_Mean"],
                                       cache_dir=False, n_jobs=1, progress=False)
    reasons = {f["image"].rsplit("/", 1)[-1]: f["reason"] for f in table.attrs["failures"]}
    assert "empty" in reasons["empty.nii.gz"] and "constant" in reasons["constant.nii.gz"]
    assert "no mask found" in reasons["unmasked.nii.gz"]
    assert np.isfinite(table.loc[str((tmp_path / "img" / "good.nii.gz").resolve())].iloc[0])


def test_a_mask_on_another_grid_is_an_error_naming_both_files(tmp_path):
    write_volume(np.arange(6 * 8 * 8).reshape(6, 8, 8).astype(np.int16), tmp_path / "img" / "x.nii.gz",
                 spacing=(1, 1, 2))
    write_volume(np.ones((6, 8, 8), np.uint8), tmp_path / "mask" / "x.nii.gz", spacing=(1, 1, 3))
    with pytest.raises(VolumeGeometryError, match=r"mask/x\.nii\.gz.*img/x\.nii\.gz.*spacing"):
        concepts.measure_table(tmp_path / "img", masks=tmp_path / "mask", cache_dir=False, n_jobs=1,
                               progress=False)


def test_a_folder_mixing_volumes_and_2d_images_is_an_error(tmp_path):
    from synthetic import write_png

    write_volume(np.zeros((4, 4, 4), np.int16), tmp_path / "v.nii.gz")
    write_png(tmp_path / "flat.png", np.zeros((4, 4)))
    with pytest.raises(ConceptFolderError, match=r"v\.nii\.gz.*flat\.png"):
        concepts.measure_table(tmp_path, progress=False)


def test_default_3d_params_match_their_yaml_file():
    assert yaml.safe_load(DEFAULT_PARAMS_3D_FILE.read_text(encoding="ascii")) == DEFAULT_PARAMS_3D
    names = list_volume_features()
    assert "original_shape_VoxelVolume" in names and not any("shape2D" in n for n in names)


def test_a_label_other_than_1_measures_that_label_of_a_multi_label_mask(tmp_path):
    import copy

    rng = np.random.default_rng(0)
    write_volume(rng.integers(0, 500, (16, 16, 16)).astype(np.int16), tmp_path / "img" / "v.nii.gz")
    mask = np.zeros((16, 16, 16), np.uint8)
    mask[2:6, 2:6, 2:6] = 1         # 64 voxels
    mask[8:14, 8:14, 8:14] = 2      # 216 voxels
    write_volume(mask, tmp_path / "masks" / "v.nii.gz")
    volumes = {}
    for label in (1, 2, 3):
        params = copy.deepcopy(DEFAULT_PARAMS_3D)
        params["setting"]["label"] = label
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            table = concepts.measure_table(tmp_path / "img", masks=tmp_path / "masks", params=params,
                                           features=["shape_VoxelVolume"], n_jobs=1, progress=False,
                                           cache_dir=False)
        volumes[label] = table
    assert float(volumes[1].iloc[0, 0]) == 280.0       # label 1, the default: every nonzero voxel
    assert float(volumes[2].iloc[0, 0]) == 216.0
    (failure,) = volumes[3].attrs["failures"]
    assert "no region of label 3" in failure["reason"] and "its labels: 1, 2" in failure["reason"]
