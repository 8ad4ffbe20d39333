"""The volumetric demo case: byte-stable NIfTI cubes verified by their manifest, and (small size) the
whole demo validating itself with a 3D CNN."""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from concepts.demo import build_case  # noqa: E402
from concepts.demo._common import nifti_bytes  # noqa: E402
from concepts.manifests import read_manifest  # noqa: E402
from concepts.volumes import read_volume  # noqa: E402


def test_nifti_bytes_are_read_back_with_voxels_and_affine(tmp_path):
    import nibabel

    volume = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    affine = np.array([[1.0, 0, 0, -90], [0, 1.0, 0, -126], [0, 0, 2.0, -72], [0, 0, 0, 1]])
    (tmp_path / "v.nii").write_bytes(nifti_bytes(volume, affine))
    loaded = nibabel.load(tmp_path / "v.nii")
    np.testing.assert_array_equal(np.asarray(loaded.dataobj), volume)
    np.testing.assert_allclose(loaded.affine, affine)
    vol = read_volume(tmp_path / "v.nii")
    assert vol.geometry.spacing == (1.0, 1.0, 2.0)
    np.testing.assert_array_equal(np.asarray(vol), volume.transpose(2, 1, 0))  # SimpleITK: (z, y, x)


def test_small_mri3d_case_matches_its_manifest(tmp_path):
    info = build_case("mri3d", tmp_path / "mri3d", size="small")   # verify=True: every byte checked
    assert info.provenance["dimensions"] == 3 and info.ground_truth_concept == "white_matter_like"
    assert info.counts["classes/white_matter"] == info.counts["classes/grey_matter"] == 30
    cube = read_volume(next((info.root / "concepts" / "white_matter_like").glob("*.nii")))
    assert cube.shape == (16, 16, 16) and cube.geometry.spacing == (1.0, 1.0, 1.0)
    volumes = read_manifest(info.manifest)["volumes"]
    assert len(volumes) == sum(v for k, v in info.counts.items())   # every cube and mask has its geometry
    assert all(v["size"] == [16, 16, 16] for v in volumes.values())
    # A white-matter-rich cube is brighter than a grey-matter report cube (T1), by construction.
    wm = np.mean([np.asarray(read_volume(p)).mean() for p in (info.root / "concepts" / "white_matter_like").glob("*.nii")])
    gm = np.mean([np.asarray(read_volume(p)).mean() for p in (info.root / "classes" / "grey_matter").glob("*.nii")])
    assert wm > gm


@pytest.mark.slow
def test_small_mri3d_demo_finds_its_ground_truth(tmp_path):
    from concepts.demo.run import random_control, run_demo, verdict

    html = run_demo("mri3d", tmp_path / "out", size="small", progress=False, cache_dir=tmp_path / "cache")
    table = pd.read_csv(tmp_path / "out" / "report.csv")
    ok, sentence = verdict(table, "white_matter_like", "white_matter", +1)
    assert ok, sentence
    control_ok, control_sentence = random_control(table)
    assert control_ok, control_sentence
    text = html.read_text(encoding="utf-8")
    assert text.index("PASS: the ground-truth concept") < text.index("<table")
    # The 3D radiomics measure (grey-matter volume in mm³) was computed and scored.
    assert (table["concept"] == "original_shape_VoxelVolume").any()
