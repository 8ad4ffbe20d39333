"""The volumetric demo case: 3D brain MRI patches with grey/white-matter labels derived from tissue maps.

Source: the MNI ICBM152 2009 (nonlinear symmetric, version a) T1 template, its grey- and
white-matter probability maps and brain mask as shipped in ``nilearn`` (197 x 233 x 189 voxels at
1 mm, no network), the same files as the 2D ``"mri"`` case.

Patches are 16 x 16 x 16 voxel cubes (16 mm), written as uncompressed NIfTI files with their
position in MNI space. Labels are *derived* from the probability maps: a cube is ``grey_matter``
when the mean grey-matter probability over its central 8 x 8 x 8 exceeds the white-matter one by
more than :data:`MARGIN`, ``white_matter`` in the opposite case; cubes in between are discarded.

The ground truth is ``white_matter_like`` (cubes whose centre is at least 85 % white matter), which
should push the model towards ``white_matter``. The labels compare the white- and grey-matter maps,
so either tissue could serve; white matter is used because, in 3D, almost every cube of the brain
holds grey matter: grey-matter-rich cubes resemble the random pool too closely for a stable concept
vector (held-out CAV accuracy about 0.6 against 0.9 for white matter in trials), and the concept
then failed to reach significance for some training seeds.

The toolkit reads the cubes with :data:`PREPROCESS` (the template's fixed 0..255 range), which the
case hands to the report; the model is trained with the same.

No voxel serves two roles: the template is cut into 32 mm blocks, each block has one role (training,
report, concept or random) chosen by a seeded SHA-256 ordering, and the cubes of a block (stride
8 mm) stay inside it.

Examples
--------
>>> info = build("demo_data/mri3d", size="small")  # builds a case (1-4 s)  # doctest: +SKIP
>>> info.class_names, info.provenance["dimensions"]  # of that case  # doctest: +SKIP
(['white_matter', 'grey_matter'], 3)
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np


from ._common import (CaseInfo, check_size, count_sets, emit_sets, manifest_path, reset_output,
                      stable_order, write_classes_txt, write_nifti)
from ..volumes import volume_preprocess
from .mri import PatchIndex, _versions, load_volumes, select_sets, template_sources, tissue_maps

PATCH = 16                # cube edge in voxels (1 mm)
MODEL_INPUT = 8           # the demo CNN sees each cube resampled to 8^3 voxels (2 mm)
CENTRE = 8                # labels look at the central 8 x 8 x 8
BLOCK = 32                # role blocks: 32 mm cubes; patches never cross a block
STRIDE = 8                # patch stride inside a block
# Blocks take roles in turn, in a seeded order; concepts get two shares because their cubes must pass
# the strict thresholds below.
ROLES = ("train", "train", "report", "concepts", "concepts", "random")
MIN_BRAIN = 0.75          # at least 3/4 of a cube inside the brain mask
MARGIN = 0.2              # class: mean GM - mean WM (or WM - GM) over the centre above this ...
MIN_TISSUE = 0.5          # ... and mean GM + WM over the centre at least this
GM_CONCEPT = 0.65         # grey_matter_like: mean GM probability over the centre at least this
WM_CONCEPT = 0.85         # white_matter_like: mean WM probability over the centre at least this
CSF_CONCEPT = 0.15        # csf_like: mean (brain mask - GM - WM) over the centre at least this
MASK_GM = 128             # masks: GM probability >= 128/255 (about 0.5)
SEED = "mri3d-v1"

#: How the toolkit turns these cubes into model inputs. All cubes come from one template on one
#: 0..255 scale, so its fixed range is used instead of the MRI default (per-volume percentiles), which
#: would stretch a pure white-matter cube's tiny contrast as far as a cube holding CSF, grey and white
#: matter, and so erase the brightness difference that separates the tissues.
PREPROCESS = functools.partial(volume_preprocess, modality="fixed", window=(0, 255))

CLASS_NAMES = ["white_matter", "grey_matter"]
CONCEPT_NAMES = ["grey_matter_like", "white_matter_like", "csf_like"]
# The random pool is about 9x a concept set, so the 20 random sets of the report overlap only about
# twice (each cube in two sets on average), as in the 2D MRI demo; with heavier overlap the null is
# too narrow and random-pool control concepts came out significant in trials.
SIZES = {
    "full": {"report": 45, "concept": 30, "csf": 25, "random": 280, "train": None},
    "small": {"report": 30, "concept": 30, "csf": 25, "random": 280, "train": 100},
}

LABEL_RULE = (
    "Labels are derived from the MNI152 2009 tissue probability maps, not annotated: a 16x16x16 mm cube of "
    f"the T1 template is grey_matter when the mean grey-matter probability over its central {CENTRE}x{CENTRE}x"
    f"{CENTRE} voxels exceeds the mean white-matter probability by more than {MARGIN} (white_matter in the "
    f"opposite case; grey + white at least {MIN_TISSUE}; cubes at least {MIN_BRAIN:.0%} inside the brain mask); "
    "cubes in between are discarded. The template is an average of many brains, so cubes are strongly "
    "correlated and held-out accuracy is optimistic.")


def _blocks(shape: tuple[int, int, int]) -> list[tuple[int, int, int]]:
    return [(bx, by, bz) for bx in range(0, shape[0] - BLOCK + 1, BLOCK)
            for by in range(0, shape[1] - BLOCK + 1, BLOCK) for bz in range(0, shape[2] - BLOCK + 1, BLOCK)]


def build(out_dir: str | Path, *, size: str = "full") -> CaseInfo:
    """Build the volumetric MRI case into ``out_dir`` (classes/, concepts/, random/, masks/, train/).

    Examples
    --------
    >>> build("demo_data/mri3d", size="small").concept_names  # builds a case (1-4 s)  # doctest: +SKIP
    ['grey_matter_like', 'white_matter_like', 'csf_like']
    """
    from nilearn import datasets

    check_size(size)
    sizes = SIZES[size]
    root = Path(out_dir)
    vol = load_volumes()
    gm8 = vol["gm"]
    t1, gm, wm, brain, csf = tissue_maps(vol)
    affine = np.asarray(datasets.load_mni152_template(resolution=1).affine, dtype=np.float64)
    full_c = 255 * CENTRE ** 3   # integer sum of a probability of 1 over the centre

    block_keys = {f"b{bx:03d}_{by:03d}_{bz:03d}": (bx, by, bz) for bx, by, bz in _blocks(t1.shape)}
    block_role = {k: ROLES[i % len(ROLES)] for i, k in enumerate(stable_order(block_keys, SEED + "blocks"))}
    index = PatchIndex(full_c, MIN_TISSUE, MARGIN)
    lo, hi = (PATCH - CENTRE) // 2, (PATCH + CENTRE) // 2
    for block, (bx, by, bz) in block_keys.items():
        for x in range(bx, bx + BLOCK - PATCH + 1, STRIDE):
            for y in range(by, by + BLOCK - PATCH + 1, STRIDE):
                for z in range(bz, bz + BLOCK - PATCH + 1, STRIDE):
                    cube = np.s_[x:x + PATCH, y:y + PATCH, z:z + PATCH]
                    if brain[cube].sum() < MIN_BRAIN * PATCH ** 3:
                        continue
                    c = np.s_[x + lo:x + hi, y + lo:y + hi, z + lo:z + hi]
                    index.add(f"x{x:03d}_y{y:03d}_z{z:03d}", block_role[block], (x, y, z),
                              (int(gm[c].sum()), int(wm[c].sum()), int(csf[c].sum())))
    where = index.where
    concepts, random_pool, report, train = select_sets(index, sizes, seed=SEED, csf_size=sizes["csf"],
                                                       thresholds=(GM_CONCEPT, WM_CONCEPT, CSF_CONCEPT),
                                                       unit="cubes")

    reset_output(root)
    write_classes_txt(root, CLASS_NAMES)

    def emit(rel_dir: str, keys: list[str], with_mask: bool) -> None:
        for key in keys:
            x, y, z = where[key]
            cube = np.s_[x:x + PATCH, y:y + PATCH, z:z + PATCH]
            # The cube's own affine: the template's, moved to the cube's first voxel.
            local = affine.copy()
            local[:3, 3] = affine[:3, :3] @ np.array([x, y, z], dtype=np.float64) + affine[:3, 3]
            write_nifti(root / rel_dir / f"{key}.nii", t1[cube], local)
            if with_mask:
                write_nifti(root / "masks" / rel_dir / f"{key}.nii",
                            (gm8[cube] >= MASK_GM).astype(np.uint8), local)

    emit_sets(emit, CLASS_NAMES, report, train, concepts, random_pool)

    provenance = {
        "case": "mri3d",
        "size": size,
        "dimensions": 3,
        "channels": 1,
        "patch_shape": [PATCH, PATCH, PATCH],
        "model_input_shape": [MODEL_INPUT, MODEL_INPUT, MODEL_INPUT],
        "model_spacing_mm": [PATCH / MODEL_INPUT] * 3,
        **template_sources(vol),
        "tiling": f"{PATCH}^3 voxel cubes at 1 mm; file x<x>_y<y>_z<z>.nii is T1[x:x+{PATCH}, y:y+{PATCH}, "
                  f"z:z+{PATCH}] (template voxel indices) with the template's affine moved to the cube",
        "blocks": f"the template is cut into {BLOCK}^3 voxel blocks; blocks take the roles {list(ROLES)} in "
                  f"turn in a SHA-256 order salted with the seed; cubes (stride {STRIDE}) never leave their block",
        "label_rule": LABEL_RULE,
        "thresholds": {"margin": MARGIN, "min_tissue": MIN_TISSUE, "min_brain": MIN_BRAIN, "centre": CENTRE,
                       "grey_matter_like_min_gm": GM_CONCEPT, "white_matter_like_min_wm": WM_CONCEPT,
                       "csf_like_min_csf": CSF_CONCEPT, "mask_gm_min_uint8": MASK_GM},
        "concept_rules": {
            "grey_matter_like": f"concept-block cubes with mean GM probability >= {GM_CONCEPT} over the centre",
            "white_matter_like": f"concept-block cubes with mean WM probability >= {WM_CONCEPT} over the centre",
            "csf_like": f"concept-block cubes with mean CSF (brain mask - GM - WM) >= {CSF_CONCEPT} over the "
                        "centre (ventricles, sulci)",
        },
        "seed": SEED,
        "masks": f"masks/<same path>.nii: grey matter, GM probability >= {MASK_GM}/255 (0/1, uint8)",
        "nifti": "uncompressed NIfTI-1, uint8 T1 values 0..255, sform = template affine moved to the cube, "
                 "no description or time stamp (byte-stable)",
        "preprocessing": "concepts.volumes.volume_preprocess(modality='fixed', window=(0, 255)): T1 values "
                         f"0..255 to [0, 1]; resampled from {PATCH}^3 voxels at 1 mm to the model's "
                         f"{MODEL_INPUT}^3 at {PATCH // MODEL_INPUT} mm",
        "versions": _versions(),
    }
    return CaseInfo(
        root=root, case="mri3d", size=size, class_names=list(CLASS_NAMES), concept_names=list(CONCEPT_NAMES),
        ground_truth_concept="white_matter_like", ground_truth_class="white_matter", expected_sign=+1,
        label_rule=LABEL_RULE,
        measures={
            "channel": "gray",
            "mask_dir": str(root / "masks"),
            "features": ["original_shape_VoxelVolume", "original_firstorder_Mean", "original_glcm_Contrast"],
            "note": "Grey-matter volume in the cube (3D shape VoxelVolume of the GM mask, mm^3) should rise "
                    "towards grey_matter; white-matter-only cubes have empty masks.",
        },
        manifest=manifest_path("mri3d", size), provenance=provenance, counts=count_sets(root, "*.nii"),
        train_dir=root / "train", preprocess=PREPROCESS)
