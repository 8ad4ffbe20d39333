"""Volume data that SimpleITK reads without a word but wrongly: truncated NIfTI files (missing voxels
padded with 0), NaN/inf voxels of float NIfTI files (read as 0), and DICOM series with a missing or
duplicated slice (read with an averaged slice spacing). Each must be an error naming the file, and
intact volumes must read exactly as before."""
from __future__ import annotations

import gzip
import math
import os
import shutil
import struct

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from concepts import volumes  # noqa: E402
from concepts.errors import ImageReadError  # noqa: E402
from concepts.sets import ImageSet  # noqa: E402
from concepts.volumes import nifti_problem, read_volume, write_dicom_series, write_volume  # noqa: E402

SHAPE = (6, 7, 8)                       # (z, y, x): x=8, y=7, z=6
SPACING = (0.5, 0.75, 2.5)
ORIGIN = (-10.0, 20.5, 3.0)


def _ramp(dtype=np.int16, shape=SHAPE) -> np.ndarray:
    """Values 100, 101, ...: never 0, so voxels padded with 0 could not pass for real ones."""
    return (np.arange(np.prod(shape)).reshape(shape) + 100).astype(dtype)


def _sitk_array(path) -> np.ndarray:
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def _nii_bytes(path) -> bytes:
    """The NIfTI bytes of a file, decompressed for .nii.gz."""
    data = path.read_bytes()
    return gzip.decompress(data) if path.name.endswith(".gz") else data


# --- truncated files ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["cut.nii", "cut.nii.gz"])
def test_a_truncated_nifti_is_an_error_naming_the_file(tmp_path, name):
    path = write_volume(_ramp(), tmp_path / name)
    declared = 352 + 2 * int(np.prod(SHAPE))       # header + int16 voxels: 1,024 bytes
    assert len(_nii_bytes(path)) == declared == 1024
    whole = path.read_bytes()
    path.write_bytes(whole[:len(whole) // 2])
    with pytest.raises(ImageReadError, match=rf"{name}.*the file holds [\d,]+ of the 1,024 bytes its header "
                                             r"declares.*it is truncated\. Re-export it or copy it again"):
        read_volume(path)
    if name == "cut.nii":   # a plain file holds exactly the bytes left
        assert nifti_problem(path).startswith(f"the file holds {len(whole) // 2} of the 1,024 bytes")
    else:                   # the compressed stream stops early, after fewer voxel bytes than declared
        assert "compressed data stop early" in nifti_problem(path)
    # The model input path (ImageSet) gets the same error, not a volume padded with zeros.
    with pytest.raises(ImageReadError, match=name):
        ImageSet([path], input_shape=(6, 7, 8, 1)).load_all()


@pytest.mark.parametrize("name", ["cut.nii", "cut.nii.gz"])
def test_a_file_cut_inside_its_header_is_named_as_truncated(tmp_path, name):
    path = write_volume(_ramp(), tmp_path / name)
    head = _nii_bytes(path)[:200]
    path.write_bytes(gzip.compress(head) if name.endswith(".gz") else head)
    with pytest.raises(ImageReadError, match=rf"{name}.*holds 200 bytes.*, fewer than its 348-byte NIfTI"):
        read_volume(path)


def test_a_file_truncated_after_a_good_read_is_caught(tmp_path):
    # The check is memoised per file state: a later change of the file must be seen.
    path = write_volume(_ramp(), tmp_path / "v.nii")
    np.testing.assert_array_equal(read_volume(path), _ramp())
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(ImageReadError, match=r"holds 1,023 of the 1,024 bytes"):
        read_volume(path)


def test_damaged_gzip_data_are_an_error_naming_the_file(tmp_path):
    path = write_volume(_ramp(), tmp_path / "v.nii.gz")
    data = bytearray(path.read_bytes())
    data[-8] ^= 0xFF                     # the CRC-32 of the gzip trailer: voxels and length are intact
    path.write_bytes(bytes(data))
    with pytest.raises(ImageReadError, match=r"v\.nii\.gz.*compressed \(gzip\) data are damaged"):
        read_volume(path)


# --- intact files read as before ----------------------------------------------------------------------

@pytest.mark.parametrize("name", ["v.nii", "v.nii.gz"])
@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.int32, np.float32, np.float64])
def test_intact_files_read_identically_to_simpleitk(tmp_path, name, dtype):
    array = (np.arange(np.prod(SHAPE)).reshape(SHAPE) % 200 + 50).astype(dtype)   # 50..249: fits uint8
    if np.dtype(dtype).kind == "f":
        array = array * 0.25 - 1e3          # fractions and negatives, all finite
    path = write_volume(array, tmp_path / name, spacing=SPACING, origin=ORIGIN)
    assert nifti_problem(path) is None
    vol = read_volume(path)
    assert vol.dtype == dtype
    np.testing.assert_array_equal(np.asarray(vol), array)
    np.testing.assert_array_equal(np.asarray(vol), _sitk_array(path))
    np.testing.assert_allclose(vol.geometry.spacing, SPACING, rtol=1e-6)
    np.testing.assert_allclose(vol.geometry.origin, ORIGIN, atol=1e-5)


def test_extra_bytes_trailing_data_and_several_gzip_members_are_not_problems(tmp_path):
    array = _ramp(np.float32)
    plain = write_volume(array, tmp_path / "long.nii")
    plain.write_bytes(plain.read_bytes() + b"\x00" * 10)   # longer than declared: SimpleITK ignores the rest
    # zlib's gzread (SimpleITK) reads concatenated members and ignores trailing non-gzip bytes.
    raw = _nii_bytes(write_volume(array, tmp_path / "tmp.nii"))
    members = tmp_path / "members.nii.gz"
    members.write_bytes(gzip.compress(raw[:500]) + gzip.compress(raw[500:]) + b"trailing junk")
    for path in (plain, members):
        assert nifti_problem(path) is None
        np.testing.assert_array_equal(read_volume(path), array)
        np.testing.assert_array_equal(_sitk_array(path), array)


@pytest.mark.parametrize("name", ["v.nii", "v.nii.gz"])
def test_small_read_chunks_give_the_same_answers(tmp_path, monkeypatch, name):
    # Values split between chunks, and decompressed output held back by zlib at a chunk's end.
    monkeypatch.setattr(volumes, "_CHUNK", 7)
    array = np.random.default_rng(0).normal(size=SHAPE).astype(np.float64)
    path = write_volume(array, tmp_path / name)
    np.testing.assert_array_equal(read_volume(path), array)
    array[::2, 1, ::3] = np.nan
    array[5, 6, 7] = -np.inf
    write_volume(array, path)
    assert int(np.isnan(array).sum()) == 9
    assert nifti_problem(path).startswith("10 of its 336 voxels are not finite (9 NaN, 1 infinite; the first "
                                          "at voxel x=0, y=1, z=0)")


# --- NaN and inf voxels ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["nan.nii", "nan.nii.gz"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_nan_voxel_is_an_error_naming_the_file_and_the_voxel(tmp_path, name, dtype):
    array = _ramp(dtype)
    array[2, 3, 1] = np.nan                  # z=2, y=3, x=1
    path = write_volume(array, tmp_path / name)
    assert _sitk_array(path)[2, 3, 1] == 0   # what SimpleITK alone makes of it
    with pytest.raises(ImageReadError, match=rf"{name}': 1 of its 336 voxels are not finite \(1 NaN, "
                                             r"0 infinite; the first at voxel x=1, y=3, z=2\).*as 0"):
        read_volume(path)


@pytest.mark.parametrize("name", ["inf.nii", "inf.nii.gz"])
def test_infinite_voxels_are_an_error(tmp_path, name):
    array = _ramp(np.float32)
    array[0, 0, 5] = np.inf
    array[4, 1, 0] = -np.inf
    path = write_volume(array, tmp_path / name)
    with pytest.raises(ImageReadError, match=rf"{name}': 2 of its 336 voxels are not finite \(0 NaN, "
                                             r"2 infinite; the first at voxel x=5, y=0, z=0\)"):
        read_volume(path)


@pytest.mark.parametrize("name", ["int.nii", "int.nii.gz"])
def test_integer_volumes_are_never_read_as_floats(tmp_path, name):
    # int32 0x7FC00000 and 0x7F800000 are the bit patterns of float32 NaN and inf: integers all the same.
    array = np.full(SHAPE, 0x7FC00000, np.int32)
    array[0] = 0x7F800000
    array[1] = np.iinfo(np.int32).min
    path = write_volume(array, tmp_path / name)
    assert nifti_problem(path) is None
    np.testing.assert_array_equal(read_volume(path), array)


def _set_scaling(path, slope: float, inter: float) -> None:
    data = bytearray(path.read_bytes())
    data[112:120] = struct.pack("<ff", slope, inter)
    path.write_bytes(bytes(data))


def test_scaled_files_are_checked_after_scaling(tmp_path):
    # Integer data scaled in range: read scaled, as SimpleITK does.
    path = write_volume(_ramp(), tmp_path / "scaled.nii")
    _set_scaling(path, 2.0, -1.0)
    np.testing.assert_array_equal(read_volume(path), 2.0 * _ramp() - 1.0)
    # NaN in scaled float data: SimpleITK would make it 0 * 2 - 1 = -1, a plausible value.
    array = _ramp(np.float32)
    array[1, 1, 1] = np.nan
    path = write_volume(array, tmp_path / "scaled_nan.nii")
    _set_scaling(path, 2.0, -1.0)
    assert _sitk_array(path)[1, 1, 1] == -1.0
    with pytest.raises(ImageReadError, match=r"scaled_nan\.nii': 1 of its 336 voxels are not finite"):
        read_volume(path)
    # Finite stored values that overflow float32 once scaled.
    path = write_volume(np.full(SHAPE, 30000, np.int16), tmp_path / "overflow.nii")
    _set_scaling(path, 1e36, 0.0)
    with pytest.raises(ImageReadError, match=r"overflow\.nii': 336 of its voxels are infinite once"):
        read_volume(path)


def test_radiomics_reports_a_nan_volume_as_a_failure_naming_it(tmp_path):
    import concepts

    array = np.random.default_rng(0).normal(-500, 100, (8, 8, 8)).astype(np.float32)
    array[2, 2, 2] = np.nan
    path = write_volume(array, tmp_path / "images" / "ct.nii.gz")
    with pytest.warns(UserWarning, match="1 of 1 images failed"):
        table = concepts.measure_table(str(path), features=["firstorder_Mean"], n_jobs=1, progress=False,
                                       cache_dir=False)
    assert table.isna().all().all()
    [failure] = table.attrs["failures"]
    assert "ct.nii.gz" in failure["reason"] and "1 NaN, 0 infinite" in failure["reason"]


# --- NIfTI-2 ------------------------------------------------------------------------------------------

def test_nifti2_headers_are_checked_and_not_broken(tmp_path):
    nib = pytest.importorskip("nibabel")
    array = _ramp(np.float32).transpose()            # nibabel's axis order is (x, y, z)
    path = tmp_path / "two.nii"
    nib.save(nib.Nifti2Image(array, np.eye(4)), str(path))
    layout = volumes._nifti_layout(path.read_bytes()[:540])
    assert (layout.version, layout.dims, layout.data_bytes) == (2, (8, 7, 6), 336 * 4)
    assert nifti_problem(path) is None
    try:
        vol = read_volume(path)
    except ImageReadError as exc:     # SimpleITK 2.5 reads NIfTI-1 only: the error says what to do
        assert "two.nii" in str(exc) and "NIfTI-2 header" in str(exc) and "Nifti1Image" in str(exc)
    else:
        np.testing.assert_array_equal(vol, _ramp(np.float32))
    whole = path.read_bytes()
    path.write_bytes(whole[:-100])
    assert nifti_problem(path).startswith(f"the file holds {len(whole) - 100:,} of the {len(whole):,} bytes")
    array[1, 2, 3] = np.inf
    nib.save(nib.Nifti2Image(array, np.eye(4)), str(tmp_path / "two_inf.nii.gz"))
    assert nifti_problem(tmp_path / "two_inf.nii.gz").startswith(
        "1 of its 336 voxels are not finite (0 NaN, 1 infinite; the first at voxel x=1, y=2, z=3)")


def test_big_endian_float_data_are_read_in_their_byte_order(tmp_path):
    nib = pytest.importorskip("nibabel")
    array = _ramp(np.float32).transpose()
    array[0, 1, 2] = np.nan
    header = nib.Nifti1Header(endianness=">")
    path = tmp_path / "big.nii"
    nib.save(nib.Nifti1Image(array.astype(">f4"), np.eye(4), header), str(path))
    assert path.read_bytes()[:4] == struct.pack(">i", 348)
    assert nifti_problem(path).startswith(
        "1 of its 336 voxels are not finite (1 NaN, 0 infinite; the first at voxel x=0, y=1, z=2)")


# --- DICOM series: missing, duplicated and uneven slices ----------------------------------------------

def _rotation_about_x(degrees: float) -> tuple[float, ...]:
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return (1.0, 0.0, 0.0, 0.0, c, -s, 0.0, s, c)


@pytest.mark.parametrize("direction", [(1, 0, 0, 0, 1, 0, 0, 0, 1), _rotation_about_x(30)])
def test_an_intact_series_reads_with_its_spacing(tmp_path, direction):
    array = _ramp(shape=(8, 6, 5))
    series = write_dicom_series(array, tmp_path / "case", spacing=(0.8, 0.8, 2.0), origin=(5.0, -3.0, 10.0),
                                direction=direction)
    vol = read_volume(series)
    np.testing.assert_array_equal(vol, array)
    np.testing.assert_allclose(vol.geometry.spacing, (0.8, 0.8, 2.0), rtol=1e-5)
    np.testing.assert_allclose(vol.geometry.direction, direction, atol=1e-5)


@pytest.mark.parametrize("direction", [(1, 0, 0, 0, 1, 0, 0, 0, 1), _rotation_about_x(30)])
def test_a_missing_slice_is_an_error_naming_the_folder_and_the_gap(tmp_path, direction):
    # Positions along the slice normal are 0, 2, 4, ... mm whatever the orientation (origin 0).
    series = write_dicom_series(_ramp(shape=(8, 6, 5)), tmp_path / "gap", spacing=(1, 1, 2),
                                direction=direction)
    (series / "slice_0005.dcm").unlink()            # the slice at 10 mm
    with pytest.raises(ImageReadError, match=r"DICOM series '.*gap': slice positions jump from 8\.0 to 12\.0 "
                                             r"mm between 'slice_0004\.dcm' and 'slice_0006\.dcm' \(step "
                                             r"2\.0 mm elsewhere\): a slice is missing"):
        read_volume(series)
    (series / "slice_0006.dcm").unlink()
    with pytest.raises(ImageReadError, match=r"jump from 8\.0 to 14\.0 mm .*: 2 slices are missing"):
        read_volume(series)


def test_a_duplicated_slice_is_an_error_naming_both_files(tmp_path):
    series = write_dicom_series(_ramp(shape=(8, 6, 5)), tmp_path / "dup", spacing=(1, 1, 2))
    shutil.copy(series / "slice_0003.dcm", series / "slice_0003_copy.dcm")
    with pytest.raises(ImageReadError, match=r"DICOM series '.*dup': the slices 'slice_0003.*dcm' and "
                                             r"'slice_0003.*dcm' lie at the same position \(6\.0 mm along "
                                             r"the slice normal\): a slice is duplicated\..*Remove the "
                                             r"copies"):
        read_volume(series)


def _join(folder, part, uid="1.2.826.0.1.3680043.2.1125.1.7", **geometry):
    """Add a second piece of the same series (same UID) to ``folder``, with its own geometry."""
    write_dicom_series(_ramp(shape=(3, 6, 5)), part, series_uid=uid, **geometry)
    for i, f in enumerate(sorted(part.glob("*.dcm"))):
        f.rename(folder / f"part_{i}.dcm")


def test_unevenly_spaced_slices_are_an_error(tmp_path):
    uid = "1.2.826.0.1.3680043.2.1125.1.7"
    series = write_dicom_series(_ramp(shape=(4, 6, 5)), tmp_path / "uneven", spacing=(1, 1, 2),
                                series_uid=uid)
    _join(series, tmp_path / "tmp", uid, spacing=(1, 1, 2), origin=(0, 0, 8.7))   # 0..6 mm, then 8.7..12.7
    with pytest.raises(ImageReadError, match=r"uneven': slice positions step from 6\.0 to 8\.7 mm .*\(2\.7 "
                                             r"mm, where the other steps are 2\.0 mm\): the slices are not "
                                             r"evenly spaced"):
        read_volume(series)


def test_slices_of_another_orientation_are_an_error(tmp_path):
    uid = "1.2.826.0.1.3680043.2.1125.1.7"
    series = write_dicom_series(_ramp(shape=(4, 6, 5)), tmp_path / "mixed", spacing=(1, 1, 2), series_uid=uid)
    _join(series, tmp_path / "tmp", uid, spacing=(1, 1, 2), origin=(0, 0, 8), direction=_rotation_about_x(20))
    with pytest.raises(ImageReadError, match=r"mixed': the slice '.*\.dcm' has another orientation"):
        read_volume(series)


def test_small_position_jitter_is_tolerated(tmp_path):
    # Positions rounded to 0.01 mm by a scanner: 1 % of the step (or 0.02 mm) is allowed.
    uid = "1.2.826.0.1.3680043.2.1125.1.7"
    series = write_dicom_series(_ramp(shape=(4, 6, 5)), tmp_path / "jitter", spacing=(1, 1, 2),
                                series_uid=uid)
    _join(series, tmp_path / "tmp", uid, spacing=(1, 1, 2), origin=(0, 0, 8.015))
    vol = read_volume(series)
    assert vol.shape == (7, 6, 5)
    np.testing.assert_allclose(vol.geometry.spacing[2], 2.0, atol=0.01)


def test_series_without_position_tags_are_left_to_the_reader(tmp_path):
    # The rule itself: any slice without 0020|0032 / 0020|0037 means no check (today's behaviour).
    names = [str(tmp_path / f"s{i}.dcm") for i in range(5)]
    axial = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    placement = {f"s{i}.dcm": ((0.0, 0.0, z), axial) for i, z in enumerate([0.0, 1.0, 2.0, 3.0, 6.0])}
    with pytest.raises(ImageReadError, match=r"jump from 3\.0 to 6\.0 mm .*: 2 slices are missing"):
        volumes._check_slice_positions(tmp_path, names, placement)
    placement["s1.dcm"] = None
    assert volumes._check_slice_positions(tmp_path, names, placement) is None
    # Three slices, the middle one missing: the step that occurs (2 mm) is the reference, not 3 mm.
    placement = {"s0.dcm": ((0.0, 0.0, 0.0), axial), "s1.dcm": ((0.0, 0.0, 2.0), axial),
                 "s2.dcm": ((0.0, 0.0, 6.0), axial)}
    with pytest.raises(ImageReadError, match=r"jump from 2\.0 to 6\.0 mm .*\(step 2\.0 mm elsewhere\): a "):
        volumes._check_slice_positions(tmp_path, names[:3], placement)


# --- screening (concepts.score / report with on_error) ---------------------------------------------

def test_screening_treats_a_truncated_nifti_as_unreadable(tmp_path):
    from concepts.screening import screen

    path = write_volume(_ramp(), tmp_path / "cut.nii.gz")
    path.write_bytes(path.read_bytes()[:-60])
    with pytest.warns(UserWarning, match="Leaving out 1 image file"):
        problems = screen({"concept 'c'": [path]}, on_error="skip")
    assert "truncated" in problems[str(path)]
