"""Volumes: NIfTI and DICOM round trips with geometry, 3D preprocessing, bad input, and a planted
concept found in a tiny Conv3D model through the same engine as 2D."""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import functools  # noqa: E402
import gzip  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import concepts  # noqa: E402
from concepts.errors import ImageReadError, InputShapeError  # noqa: E402
from concepts.image_files import list_image_files, read_image  # noqa: E402
from concepts.sets import ImageSet, random_sets  # noqa: E402
from concepts.volumes import (Geometry, Volume, VolumeGeometryError, check_mask_geometry,  # noqa: E402
                              model_spacing, read_volume, resample_to_shape, volume_preprocess,
                              write_dicom_series, write_volume)
from synthetic import write_png  # noqa: E402

SPACING = (0.5, 0.75, 2.5)
ORIGIN = (-10.0, 20.5, 3.0)
ROTATED = (0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0)   # a right-handed rotation about z


def _ramp(shape=(5, 6, 7)) -> np.ndarray:
    return (np.arange(np.prod(shape)).reshape(shape) * 7 - 1000).astype(np.int16)


# --- round trips -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["v.nii.gz", "v.nii"])
def test_nifti_round_trip_keeps_voxels_and_geometry(tmp_path, name):
    array = _ramp()
    write_volume(array, tmp_path / name, spacing=SPACING, origin=ORIGIN, direction=ROTATED)
    vol = read_image(tmp_path / name)
    assert isinstance(vol, Volume) and vol.dtype == np.int16
    np.testing.assert_array_equal(np.asarray(vol), array)
    g = vol.geometry
    assert g.size == (7, 6, 5)   # ITK order (x, y, z): the array's shape reversed
    np.testing.assert_allclose(g.spacing, SPACING, rtol=1e-6)
    np.testing.assert_allclose(g.origin, ORIGIN, atol=1e-5)
    np.testing.assert_allclose(g.direction, ROTATED, atol=1e-6)
    assert vol.modality is None and vol.path == tmp_path / name


def test_dicom_series_round_trip_keeps_voxels_geometry_and_modality(tmp_path):
    array = _ramp((6, 8, 9))
    write_dicom_series(array, tmp_path / "case01", spacing=SPACING, origin=ORIGIN, direction=ROTATED)
    assert len(list((tmp_path / "case01").glob("*.dcm"))) == 6
    # A series folder is listed as one entry, beside NIfTI files and PNGs.
    write_volume(array, tmp_path / "case02.nii.gz")
    assert [p.name for p in list_image_files(tmp_path)] == ["case01", "case02.nii.gz"]
    vol = read_volume(tmp_path / "case01")
    np.testing.assert_array_equal(np.asarray(vol), array)
    np.testing.assert_allclose(vol.geometry.spacing, SPACING, rtol=1e-5)
    np.testing.assert_allclose(vol.geometry.origin, ORIGIN, atol=1e-4)
    np.testing.assert_allclose(vol.geometry.direction, ROTATED, atol=1e-5)
    assert vol.modality == "CT"


def test_volume_pickles_with_its_geometry():
    import pickle

    g = Geometry((2, 2, 2), SPACING, ORIGIN, ROTATED)
    vol = pickle.loads(pickle.dumps(Volume(np.ones((2, 2, 2)), g, "a.nii", "MR")))
    assert vol.geometry == g and vol.modality == "MR" and str(vol.path) == "a.nii"


# --- preprocessing ----------------------------------------------------------------------------------

def test_ct_window_maps_hounsfield_units_linearly():
    ct = np.array([-2000, -1000, -300, 400, 3000], dtype=np.int16).reshape(1, 1, 5)
    ct = np.broadcast_to(ct, (2, 2, 5))
    out = volume_preprocess(ct, (2, 2, 5, 1), modality="ct")
    np.testing.assert_allclose(out[0, 0, :, 0], [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-6)
    soft = volume_preprocess(ct, (2, 2, 5, 1), modality="ct", window=(-1000, -300))
    np.testing.assert_allclose(soft[0, 0, :, 0], [0.0, 0.0, 1.0, 1.0, 1.0], atol=1e-6)


def test_mri_percentiles_map_to_zero_and_one():
    rng = np.random.default_rng(0)
    mri = rng.uniform(100, 900, size=(10, 10, 10))
    out = volume_preprocess(mri, (10, 10, 10, 2), modality="mri", percentiles=(5, 95))
    low, high = np.percentile(mri, [5, 95])
    np.testing.assert_allclose(out[..., 0], np.clip((mri - low) / (high - low), 0, 1), atol=1e-5)
    np.testing.assert_array_equal(out[..., 0], out[..., 1])   # repeated into the model's channels
    assert np.mean(out == 0) == pytest.approx(0.05, abs=0.005)


def test_auto_modality_uses_the_dicom_tag_then_hounsfield_air():
    g = Geometry((2, 2, 2), (1, 1, 1), (0, 0, 0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    soft_tissue = np.full((2, 2, 2), 40.0)
    soft_tissue[0] = 60.0
    from concepts.volumes import resolve_modality

    assert resolve_modality(Volume(soft_tissue, g, modality="CT")) == "ct"
    assert resolve_modality(Volume(soft_tissue, g, modality="MR")) == "mri"
    assert resolve_modality(soft_tissue) == "mri"
    assert resolve_modality(soft_tissue - 1000) == "ct"
    assert resolve_modality(soft_tissue - 150) == "ct"     # fat (about -100 HU) is enough
    with pytest.raises(ValueError, match="modality"):
        resolve_modality(soft_tissue, "pet")


def test_resampling_keeps_the_field_of_view_and_records_the_spacing():
    z = np.arange(8, dtype=np.float32)
    ramp = np.broadcast_to(z[:, None, None], (8, 4, 4))
    out = resample_to_shape(ramp, (16, 4, 4))
    # Edge-aligned: the upsampled ramp is monotone, spans the same range and its mean is unchanged.
    assert np.all(np.diff(out[:, 0, 0]) >= 0) and out.mean() == pytest.approx(ramp.mean(), abs=1e-4)
    # A checkerboard shrunk by 2 is antialiased to its mean instead of aliasing to one phase.
    checker = (np.indices((16, 16, 16)).sum(axis=0) % 2).astype(np.float32)
    assert np.ptp(resample_to_shape(checker, (8, 8, 8))) < 0.2
    g = Geometry((64, 64, 20), (0.5, 0.5, 2.0), (0, 0, 0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    assert model_spacing(g, (10, 32, 32, 1)) == (1.0, 1.0, 4.0)


def test_image_set_reads_volumes_and_a_custom_preprocess_replaces_the_default(tmp_path):
    for i in range(3):
        ct = np.full((6, 6, 6), -1000 + 500 * i, np.int16)
        ct[-1] = -1000   # air in every volume: "auto" sees CT
        write_volume(ct, tmp_path / "ct" / f"{i}.nii.gz")
    s = ImageSet.from_folder(tmp_path / "ct", input_shape=(None, 6, 6, 6, 1))
    batch = s.load_all()
    assert batch.shape == (3, 6, 6, 6, 1)
    np.testing.assert_allclose(batch[:, 0, 0, 0, 0], [0.0, 500 / 1400, 1000 / 1400], atol=1e-6)
    assert s.bind((4, 4, 4, 1)).load_all().shape == (3, 4, 4, 4, 1)
    soft = s._copy()
    soft.preprocess = functools.partial(volume_preprocess, modality="ct", window=(-1000, -500))
    np.testing.assert_allclose(soft.load_all()[:, 0, 0, 0, 0], [0.0, 1.0, 1.0])
    assert soft.content_key != s.content_key
    # Random sets can be drawn from a pool of volumes.
    drawn = random_sets(tmp_path / "ct", n_sets=2, set_size=2, input_shape=(4, 4, 4, 1))
    assert [len(d) for d in drawn] == [2, 2] and drawn[0].load_all().shape == (2, 4, 4, 4, 1)


def test_content_key_of_a_dicom_series_follows_its_bytes(tmp_path):
    write_dicom_series(_ramp((3, 4, 4)), tmp_path / "s" / "a")
    s = ImageSet.from_folder(tmp_path / "s", input_shape=(4, 4, 4, 1))
    key = s.content_key
    assert s.load_all().shape == (1, 4, 4, 4, 1)
    write_dicom_series(_ramp((3, 4, 4)) + 1, tmp_path / "s" / "a")
    assert ImageSet.from_folder(tmp_path / "s", input_shape=(4, 4, 4, 1)).content_key != key


# --- bad input: each error names the file ---------------------------------------------------------

def test_a_4d_volume_is_an_error_naming_the_file(tmp_path):
    import SimpleITK as sitk

    path = tmp_path / "cine.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((3, 4, 5, 6), np.int16), isVector=False), str(path))
    with pytest.raises(ImageReadError, match="cine.nii.gz.*4D"):
        read_volume(path)
    # A 4D file with one time point is a 3D volume.
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((1, 4, 5, 6), np.int16), isVector=False), str(path))
    assert read_volume(path).shape == (4, 5, 6)


def test_a_dicom_folder_with_two_series_is_an_error(tmp_path):
    write_dicom_series(_ramp((3, 4, 4)), tmp_path / "s", series_uid="1.2.3.1")
    write_dicom_series(_ramp((3, 4, 4)), tmp_path / "tmp", series_uid="1.2.3.2")
    for i, f in enumerate(sorted((tmp_path / "tmp").glob("*.dcm"))):
        f.rename(tmp_path / "s" / f"second_{i}.dcm")
    with pytest.raises(ImageReadError, match=r"holds 2 series"):
        read_volume(tmp_path / "s")


def test_a_2d_image_in_a_3d_folder_is_an_error_naming_the_file(tmp_path):
    write_volume(np.zeros((4, 4, 4), np.int16), tmp_path / "set" / "a.nii.gz")
    write_png(tmp_path / "set" / "b.png", np.zeros((4, 4)))
    s = ImageSet.from_folder(tmp_path / "set", input_shape=(4, 4, 4, 1))
    with pytest.raises(InputShapeError, match=r"b\.png.*2D image.*volumes"):
        s.load_all()
    # A NIfTI file holding a single slice is 2D too.
    write_volume(np.zeros((1, 4, 4), np.int16), tmp_path / "flat.nii.gz")
    with pytest.raises(ImageReadError, match=r"flat\.nii\.gz.*2D image"):
        read_volume(tmp_path / "flat.nii.gz")
    # And a volume given to a 2D model.
    with pytest.raises(InputShapeError, match=r"a\.nii\.gz.*volume"):
        ImageSet([tmp_path / "set" / "a.nii.gz"], input_shape=(4, 4, 1)).load_all()


def test_an_unreadable_dicom_file_is_named(tmp_path):
    write_dicom_series(_ramp((4, 4, 4)), tmp_path / "case")
    (tmp_path / "case" / "slice_0002.dcm").write_bytes(b"not a dicom file at all")
    with pytest.raises(ImageReadError, match=r"slice_0002\.dcm"):
        read_volume(tmp_path / "case")
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(gzip.compress(b"garbage" * 10))
    with pytest.raises(ImageReadError, match=r"broken\.nii\.gz"):
        read_volume(bad)


def test_mixed_geometries_within_one_set_are_an_error_naming_both_files(tmp_path):
    write_volume(np.zeros((4, 4, 4), np.int16), tmp_path / "set" / "a.nii.gz", spacing=(1, 1, 1))
    write_volume(np.zeros((4, 4, 4), np.int16), tmp_path / "set" / "b.nii.gz", spacing=(1, 1, 3))
    s = ImageSet.from_folder(tmp_path / "set", input_shape=(4, 4, 4, 1))
    with pytest.raises(VolumeGeometryError, match=r"b\.nii\.gz.*a\.nii\.gz.*spacing"):
        s.load_all(batch_size=1)   # detected across batches too
    # A custom preprocess takes responsibility for the grid: no check.
    custom = ImageSet(s.files, input_shape=(4, 4, 4, 1),
                      preprocess=functools.partial(volume_preprocess, modality="mri"))
    assert custom.load_all().shape == (2, 4, 4, 4, 1)


def test_a_mask_of_the_wrong_geometry_is_an_error_naming_both_files(tmp_path):
    write_volume(np.zeros((4, 5, 6), np.int16), tmp_path / "img.nii.gz", spacing=SPACING)
    write_volume(np.zeros((4, 5, 5), np.uint8), tmp_path / "mask.nii.gz", spacing=SPACING)
    write_volume(np.zeros((4, 5, 6), np.uint8), tmp_path / "shifted.nii.gz", spacing=SPACING, origin=(0, 0, 5))
    image = read_volume(tmp_path / "img.nii.gz")
    with pytest.raises(VolumeGeometryError, match=r"mask\.nii\.gz.*img\.nii\.gz.*size"):
        check_mask_geometry(image, read_volume(tmp_path / "mask.nii.gz"))
    with pytest.raises(VolumeGeometryError, match=r"shifted\.nii\.gz.*img\.nii\.gz.*origin"):
        check_mask_geometry(image, read_volume(tmp_path / "shifted.nii.gz"))


# --- a planted concept in a Conv3D model ------------------------------------------------------------

def test_planted_3d_concept_is_found_with_the_right_sign(tmp_path):
    from synthetic3d import SIZE, build_model, make_data

    data = make_data(tmp_path / "data")
    result = concepts.score(build_model(), ["conv1", "pool"],
                            [data / "concepts" / "z_layers", data / "concepts" / "x_layers"],
                            n_random=6, n_directions=200, progress=False, cache_dir=tmp_path / "cache")
    table = result.to_frame()
    assert len(table) == 2 * 2 * 2
    for layer in ("conv1", "pool"):
        rows = table[(table["class"] == "layered") & (table["layer"] == layer)].set_index("concept")
        assert rows.loc["z_layers", "significant"] and rows.loc["z_layers", "score"] > 0.9
        assert rows.loc["z_layers", "ubs"] > 0
        assert rows.loc["x_layers", "significant"] and rows.loc["x_layers", "score"] < 0.1
        assert rows.loc["x_layers", "ubs"] < 0
        other = table[(table["class"] == "other") & (table["layer"] == layer)].set_index("concept")
        assert other.loc["z_layers", "ubs"] < 0 < other.loc["x_layers", "ubs"]

    # Concept maps work on 3D layers too: volumes at the input resolution; the z-layer concept is
    # more present in volumes made of z-layers than in the other class's.
    maps = result.concept_maps("layered", concept="z_layers", layer="conv1")
    assert maps.shape == (16, SIZE, SIZE, SIZE)
    other = result.concept_maps("other", concept="z_layers", layer="conv1")
    assert maps.mean() > other.mean()
    # Influence maps summed over the layer's positions are each volume's directional derivative,
    # whose sign the planted head fixes: moving along z_layers raises "layered".
    influence = result.concept_maps("layered", concept="z_layers", layer="conv1", kind="influence",
                                    class_name="layered", resolution="layer")
    assert influence.shape == (16, SIZE - 2, SIZE - 2, SIZE - 2)
    assert (influence.sum(axis=(1, 2, 3)) > 0).all()
    from concepts.volume_maps import plot_volume_map

    fig = plot_volume_map(np.zeros((SIZE,) * 3), maps[0], title="z_layers")
    assert len(fig.axes) == 4   # three slices and the colour bar
    # The report's most/least driven examples show volumes as slices.
    from concepts.report_examples import driven_example_figures

    assert driven_example_figures(result, n=2, limit=1)
    # The layer browser lists 3D layers.
    layers = concepts.layers(build_model()).set_index("path")
    assert layers.loc["conv1", "class"] == "Conv3D" and layers.loc["conv1", "probeable"]


def test_a_3d_model_with_a_flexible_input_reads_volumes_and_finds_the_planted_concept(tmp_path):
    # (None, None, None, 1) is a 3D input of any size, not a batched 2D shape: the model's own shape has
    # no batch axis. Volumes already at the fixed twin's size: both see the same inputs and activations.
    from probes.engine import Engine
    from synthetic3d import build_model, make_data

    data = make_data(tmp_path / "data")
    flexible, fixed = build_model(size=None), build_model()
    assert tuple(flexible.input_shape[1:]) == (None, None, None, 1)
    files = sorted((data / "classes" / "layered").iterdir())[:3]
    bound = ImageSet(files).bind(flexible.input_shape[1:], batch_axis=False)
    assert bound.input_shape == (None, None, None, 1)
    np.testing.assert_array_equal(bound.load_all(), ImageSet(files).bind(fixed.input_shape[1:]).load_all())
    acts = [Engine(m, ["conv1"], progress=False).run(ImageSet(files).bind(m.input_shape[1:], batch_axis=False))
            .activations["conv1"] for m in (flexible, fixed)]
    np.testing.assert_allclose(acts[0], acts[1], rtol=1e-6, atol=1e-6)
    table = concepts.score(flexible, "conv1", [data / "concepts" / "z_layers", data / "concepts" / "x_layers"],
                           n_random=4, n_directions=50, progress=False, cache_dir=False).to_frame()
    rows = table[table["class"] == "layered"].set_index("concept")
    assert rows.loc["z_layers", "significant"] and rows.loc["z_layers", "ubs"] > 0
    assert rows.loc["x_layers", "significant"] and rows.loc["x_layers", "ubs"] < 0


# --- manifests ----------------------------------------------------------------------------------------

def test_manifest_records_the_geometry_of_nifti_files_and_dicom_series(tmp_path):
    from concepts.manifests import check_manifest, read_manifest, write_manifest

    data = tmp_path / "data"
    write_volume(_ramp(), data / "classes" / "a" / "v.nii.gz", spacing=SPACING, origin=ORIGIN)
    write_dicom_series(_ramp((4, 6, 7)), data / "classes" / "a" / "s1", spacing=SPACING, direction=ROTATED)
    write_png(data / "classes" / "b" / "flat.png", np.zeros((4, 4)))
    manifest = read_manifest(write_manifest(data, tmp_path / "m.json"))
    volumes = manifest["volumes"]
    assert sorted(volumes) == ["classes/a/s1", "classes/a/v.nii.gz"]
    assert volumes["classes/a/v.nii.gz"]["size"] == [7, 6, 5]
    np.testing.assert_allclose(volumes["classes/a/v.nii.gz"]["spacing"], SPACING, rtol=1e-6)
    np.testing.assert_allclose(volumes["classes/a/v.nii.gz"]["origin"], ORIGIN, atol=1e-5)
    np.testing.assert_allclose(volumes["classes/a/s1"]["direction"], ROTATED, atol=1e-5)
    assert manifest["n_files"] == 1 + 4 + 1   # every .dcm file keeps its own SHA-256
    assert check_manifest(tmp_path / "m.json", data).ok
    # 2D-only folders get no "volumes" entry (their manifests are unchanged).
    assert "volumes" not in read_manifest(write_manifest(data / "classes" / "b", tmp_path / "b.json"))


def test_sets_seen_at_different_physical_scales_are_warned_of(tmp_path):
    # Class volumes at 2 mm slices, concept volumes at 8 mm: resampled to one input size, the model sees
    # them at different scales, and a concept vector would separate the scales too.
    from synthetic3d import build_model, make_data

    data = make_data(tmp_path / "data", n_concept=10, n_pool=40)
    for f in sorted((data / "concepts" / "z_layers").iterdir()):
        volume = read_volume(f)
        write_volume(np.asarray(volume), f, spacing=(1.0, 1.0, 8.0))
    kwargs = dict(n_random=3, n_directions=50, progress=False, cache_dir=False, robustness=False)
    with pytest.warns(UserWarning, match=r"different physical scales.*concept 'z_layers'.*spacing \(1\.0, 1\.0, 8\.0\)"):
        concepts.score(build_model(), "conv1", data / "concepts" / "z_layers", **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)      # one scale everywhere: no warning
        concepts.score(build_model(), "conv1", data / "concepts" / "x_layers", **kwargs)
