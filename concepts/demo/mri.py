"""The second demo case: brain MRI patches with grey/white-matter labels derived from tissue maps.

Source: the MNI ICBM152 2009 (nonlinear symmetric, version a) T1 template and its grey- and
white-matter probability maps as shipped in ``nilearn`` (197 x 233 x 189 voxels at 1 mm; loaded with
``nilearn.datasets.load_mni152_template(resolution=1)``, ``load_mni152_gm_template`` and
``load_mni152_wm_template``, no network). The template is an average of many brains, not one
patient, so neighbouring patches are strongly correlated.

Labels are *derived* from the probability maps: a 32 x 32 axial T1 patch is ``grey_matter`` when the
mean grey-matter probability over its central 16 x 16 exceeds the white-matter one by more than
:data:`MARGIN`, ``white_matter`` in the opposite case; patches in between are discarded. The concept
``grey_matter_like`` is the ground truth and should push the model towards ``grey_matter``.

Axial slices are grouped into slabs of :data:`SLAB` slices which take turns as training, report
(held-out), concept and random slabs, so that no slice serves two roles.

Examples
--------
>>> info = build("demo_data/mri", size="small")  # builds a case (1-4 s)  # doctest: +SKIP
>>> info.class_names  # of that case  # doctest: +SKIP
['white_matter', 'grey_matter']
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from probes.identity import sha256_file

from ._common import (CaseInfo, DemoDataError, check_size, count_sets, emit_sets, manifest_path,
                      reset_output, take, write_classes_txt, write_png)

PATCH = 32
CENTRE = 16               # labels look at the central 16 x 16 of a patch
SLAB = 4                  # consecutive axial slices per slab
ROLES = ("train", "train", "report", "concepts", "random")   # slab k has role ROLES[k % 5]
MIN_BRAIN = 0.75          # at least 3/4 of a patch inside the brain mask
MARGIN = 0.2              # class: mean GM - mean WM (or WM - GM) over the centre above this ...
MIN_TISSUE = 0.5          # ... and mean GM + WM over the centre at least this
GM_CONCEPT = 0.6          # grey_matter_like: mean GM probability over the centre at least this
WM_CONCEPT = 0.75         # white_matter_like: mean WM probability over the centre at least this
CSF_CONCEPT = 0.3         # csf_like: mean (brain mask - GM - WM) over the centre at least this
MASK_GM = 128             # masks: GM probability >= 128/255 (about 0.5)
SEED = "mri-v1"

CLASS_NAMES = ["white_matter", "grey_matter"]
CONCEPT_NAMES = ["grey_matter_like", "white_matter_like", "csf_like"]
SIZES = {
    "full": {"report": 150, "concept": 50, "random": 500, "train": None},
    "small": {"report": 75, "concept": 50, "random": 500, "train": 300},
}

LABEL_RULE = (
    "Labels are derived from the MNI152 2009 tissue probability maps, not annotated: a 32x32 axial patch "
    f"of the T1 template is grey_matter when the mean grey-matter probability over its central {CENTRE}x{CENTRE} "
    f"pixels exceeds the mean white-matter probability by more than {MARGIN} (white_matter in the opposite "
    f"case; grey + white at least {MIN_TISSUE}; patches at least {MIN_BRAIN:.0%} inside the brain mask); "
    "patches in between are discarded. The template is an average of many brains, so patches (especially "
    "from neighbouring slices) are strongly correlated and held-out accuracy is optimistic.")

_SOURCES = {
    "t1": ("load_mni152_template", "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"),
    "gm": ("load_mni152_gm_template", "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz"),
    "wm": ("load_mni152_wm_template", "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz"),
    "brain": ("load_mni152_brain_mask", None),
}


def load_volumes() -> dict[str, np.ndarray]:
    """The T1 template, GM and WM probability maps and brain mask as uint8 volumes (0..255).

    nilearn returns them scaled to [0, 1] from 8-bit files; rounding ``x * 255`` restores the
    stored integers exactly, so all later thresholds are integer comparisons.

    Raises
    ------
    DemoDataError
        Nilearn is missing or the templates cannot be loaded.

    Examples
    --------
    >>> load_volumes()["t1"].shape  # reads four 1 mm MNI templates via nilearn (~3 s)  # doctest: +SKIP
    (197, 233, 189)
    """
    try:
        from nilearn import datasets
    except ImportError:
        raise DemoDataError("The MRI demo needs nilearn: pip install nilearn.") from None
    volumes = {}
    for key, (loader, _) in _SOURCES.items():
        try:
            data = getattr(datasets, loader)(resolution=1).get_fdata()
        except Exception as exc:
            raise DemoDataError(f"Cannot load the MNI152 template via nilearn.datasets.{loader} "
                                f"({type(exc).__name__}: {exc}).") from None
        volumes[key] = np.clip(np.round(data * 255), 0, 255).astype(np.uint8)
    return volumes


def _patch(volume: np.ndarray, x: int, y: int, z: int) -> np.ndarray:
    """A PATCH x PATCH axial patch, rotated so that anterior is up (radiological display)."""
    return np.ascontiguousarray(np.rot90(volume[x:x + PATCH, y:y + PATCH, z]))


def _versions() -> dict[str, str]:
    import nibabel
    import nilearn

    return {"numpy": np.__version__, "nilearn": nilearn.__version__, "nibabel": nibabel.__version__}


def tissue_maps(vol: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
    """The template's T1, GM and WM (int64, 0..255), brain mask, and CSF (brain - GM - WM, clipped).

    Both MRI cases (2D patches and 3D cubes) label and select from these same maps.

    Examples
    --------
    >>> vol = {"t1": np.zeros((2, 2, 2), np.uint8), "gm": np.full((2, 2, 2), 100, np.uint8),
    ...        "wm": np.full((2, 2, 2), 50, np.uint8), "brain": np.ones((2, 2, 2), np.uint8)}
    >>> int(tissue_maps(vol)[4].max())
    105
    """
    gm, wm, brain = vol["gm"].astype(np.int64), vol["wm"].astype(np.int64), vol["brain"] > 0
    csf = np.clip(np.where(brain, 255, 0) - gm - wm, 0, 255)
    return vol["t1"], gm, wm, brain, csf


def template_sources(vol: dict[str, np.ndarray]) -> dict:
    """Provenance of the nilearn template both MRI cases are cut from: package, files, hashes, shape.

    Examples
    --------
    >>> sorted(template_sources({"t1": np.zeros((2, 3, 4), np.uint8)}))[:3]
    ['decoded_source_sha256', 'source_description', 'source_files']
    """
    import nilearn

    data_dir = Path(nilearn.__file__).parent / "datasets" / "data"
    return {
        "source_package": "nilearn",
        "source_package_version": nilearn.__version__,
        "source_files": {k: f"nilearn/datasets/data/{f}" for k, (_, f) in _SOURCES.items() if f},
        "source_loaders": {k: f"nilearn.datasets.{loader}(resolution=1)" for k, (loader, _) in _SOURCES.items()},
        "source_description": "MNI ICBM152 2009 nonlinear symmetric (a) T1 template, GM/WM probability maps "
                              "and brain mask; an average of many adult brains, not one patient",
        "source_sha256": {k: sha256_file(data_dir / f)
                          for k, (_, f) in _SOURCES.items() if f and (data_dir / f).is_file()},
        "decoded_source_sha256": hashlib.sha256(b"".join(vol[k].tobytes() for k in sorted(vol))).hexdigest(),
        "source_shape": list(vol["t1"].shape),
    }


def tissue_class(g: int, w: int, full_c: int, min_tissue: float, margin: float) -> str | None:
    """The class of a patch from its centre's summed GM and WM probabilities (None: too mixed or no tissue).

    Shared with the 3D case (:mod:`concepts.demo.mri3d`), which uses its own thresholds.

    Examples
    --------
    >>> tissue_class(200, 20, 255, 0.5, 0.2), tissue_class(100, 100, 255, 0.5, 0.2)
    ('grey_matter', None)
    """
    if g + w < min_tissue * full_c:
        return None
    if g - w > margin * full_c:
        return "grey_matter"
    if w - g > margin * full_c:
        return "white_matter"
    return None


class PatchIndex:
    """The candidate patches (2D) or cubes (3D) of an MRI case: role, position, centre sums, class.

    Examples
    --------
    >>> index = PatchIndex(full_c=255, min_tissue=0.5, margin=0.2)
    >>> index.add("p", "train", (0, 0, 0), (200, 20, 0))
    >>> index.by_role["train"], index.label
    (['p'], {'p': 'grey_matter'})
    """

    def __init__(self, full_c: int, min_tissue: float, margin: float) -> None:
        self.full_c, self.min_tissue, self.margin = full_c, min_tissue, margin
        self.by_role: dict[str, list[str]] = {"train": [], "report": [], "concepts": [], "random": []}
        self.where: dict[str, tuple[int, int, int]] = {}
        self.label: dict[str, str] = {}
        self.centre_sum: dict[str, tuple[int, int, int]] = {}

    def add(self, key: str, role: str, where: tuple[int, int, int], sums: tuple[int, int, int]) -> None:
        """Record a patch with its (GM, WM, CSF) centre sums; labelled when its tissue is clear."""
        self.where[key], self.centre_sum[key] = where, sums
        self.by_role[role].append(key)
        tissue = tissue_class(sums[0], sums[1], self.full_c, self.min_tissue, self.margin)
        if tissue is not None:
            self.label[key] = tissue


def select_sets(index: PatchIndex, sizes: dict, *, seed: str,
                thresholds: tuple[float, float, float], csf_size: int, unit: str
                ) -> tuple[dict[str, list[str]], list[str], dict[str, list[str]], dict[str, list[str]]]:
    """Seeded, disjoint choice of the concept, random, report and training patches (2D and 3D cases).

    The order of the draws is part of the data (each draw removes its patches from the later ones),
    so it must not change: concepts (GM, WM, CSF), random pool, report per class, training per class.

    Parameters
    ----------
    index : PatchIndex
        The candidate patches, their roles, centre sums and classes.
    sizes : dict
        Set sizes (``"concept"``, ``"random"``, ``"report"``, ``"train"``; None: every patch).
    seed : str
        The case's seed prefix.
    thresholds : tuple of float
        Minimum mean GM, WM and CSF probability of the three concepts.
    csf_size : int
        Size of the CSF concept set.
    unit : str
        What a patch is called in the error message ("patches", "cubes").

    Returns
    -------
    tuple
        ``(concepts, random_pool, report, train)``.

    Raises
    ------
    DemoDataError
        A set cannot be filled: the template is not the expected one.

    Examples
    --------
    >>> sizes = {"concept": 1, "random": 1, "report": 1, "train": None}
    >>> select_sets(PatchIndex(255, 0.5, 0.2), sizes, seed="s", thresholds=(0.5, 0.5, 0.5),
    ...             csf_size=1, unit="patches")  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    DemoDataError: Only 0 patches for 'grey_matter_like', need 1: ...
    """
    gm_min, wm_min, csf_min = thresholds
    by_role, centre_sum, label, full_c = index.by_role, index.centre_sum, index.label, index.full_c
    used: set[str] = set()
    pool_c = by_role["concepts"]
    concepts = {
        "grey_matter_like": take([k for k in pool_c if centre_sum[k][0] >= gm_min * full_c],
                                 sizes["concept"], seed + "gm", used),
        "white_matter_like": take([k for k in pool_c if centre_sum[k][1] >= wm_min * full_c],
                                  sizes["concept"], seed + "wm", used),
        "csf_like": take([k for k in pool_c if centre_sum[k][2] >= csf_min * full_c],
                         csf_size, seed + "csf", used),
    }
    random_pool = take(by_role["random"], sizes["random"], seed + "random", used)
    report = {c: take([k for k in by_role["report"] if label.get(k) == c], sizes["report"],
                      seed + "report" + c, used) for c in CLASS_NAMES}
    train = {}
    for c in CLASS_NAMES:
        pool = [k for k in by_role["train"] if label.get(k) == c]
        train[c] = take(pool, sizes["train"] or len(pool), seed + "train" + c, used)
    for name, chosen in [*concepts.items(), *report.items(), ("random", random_pool)]:
        want = (csf_size if name == "csf_like" else sizes["concept"] if name in concepts
                else sizes["random"] if name == "random" else sizes["report"])
        if len(chosen) < want:
            raise DemoDataError(f"Only {len(chosen)} {unit} for {name!r}, need {want}: the nilearn template "
                                "is not the expected MNI152 2009 version.")
    return concepts, random_pool, report, train


def build(out_dir: str | Path, *, size: str = "full") -> CaseInfo:
    """Build the MRI case into ``out_dir`` (classes/, concepts/, random/, masks/, train/).

    Examples
    --------
    >>> build("demo_data/mri", size="small").concept_names  # builds a case (1-4 s)  # doctest: +SKIP
    ['grey_matter_like', 'white_matter_like', 'csf_like']
    """
    check_size(size)
    sizes = SIZES[size]
    root = Path(out_dir)
    vol = load_volumes()
    t1, gm, wm, brain, csf = tissue_maps(vol)
    nx, ny, nz = t1.shape
    full_c = 255 * CENTRE * CENTRE   # integer sum of a probability of 1 over the centre

    index = PatchIndex(full_c, MIN_TISSUE, MARGIN)
    for z in range(nz):
        role = ROLES[(z // SLAB) % len(ROLES)]
        stride = 8 if role == "concepts" else 16
        for x in range(0, nx - PATCH + 1, stride):
            for y in range(0, ny - PATCH + 1, stride):
                if brain[x:x + PATCH, y:y + PATCH, z].sum() < MIN_BRAIN * PATCH * PATCH:
                    continue
                c = np.s_[x + (PATCH - CENTRE) // 2:x + (PATCH + CENTRE) // 2,
                          y + (PATCH - CENTRE) // 2:y + (PATCH + CENTRE) // 2, z]
                index.add(f"z{z:03d}_x{x:03d}_y{y:03d}", role, (x, y, z),
                          (int(gm[c].sum()), int(wm[c].sum()), int(csf[c].sum())))
    where = index.where
    concepts, random_pool, report, train = select_sets(index, sizes, seed=SEED, csf_size=sizes["concept"],
                                                       thresholds=(GM_CONCEPT, WM_CONCEPT, CSF_CONCEPT),
                                                       unit="patches")

    reset_output(root)
    write_classes_txt(root, CLASS_NAMES)
    gm8 = vol["gm"]

    def emit(rel_dir: str, keys: list[str], with_mask: bool) -> None:
        for key in keys:
            x, y, z = where[key]
            write_png(root / rel_dir / f"{key}.png", _patch(t1, x, y, z))
            if with_mask:
                write_png(root / "masks" / rel_dir / f"{key}.png",
                          np.where(_patch(gm8, x, y, z) >= MASK_GM, 255, 0).astype(np.uint8))

    emit_sets(emit, CLASS_NAMES, report, train, concepts, random_pool)

    provenance = {
        "case": "mri",
        "size": size,
        **template_sources(vol),
        "tiling": f"{PATCH}x{PATCH} axial patches; file z<z>_x<x>_y<y>.png is T1[x:x+{PATCH}, y:y+{PATCH}, z] "
                  "(voxel indices) rotated 90 degrees (anterior up); stride 16 (8 in concept slabs)",
        "slabs": f"slices z grouped in slabs of {SLAB}; slab k = z // {SLAB} has role {list(ROLES)}[k % 5]",
        "channels": 1,
        "label_rule": LABEL_RULE,
        "thresholds": {"margin": MARGIN, "min_tissue": MIN_TISSUE, "min_brain": MIN_BRAIN, "centre": CENTRE,
                       "grey_matter_like_min_gm": GM_CONCEPT, "white_matter_like_min_wm": WM_CONCEPT,
                       "csf_like_min_csf": CSF_CONCEPT, "mask_gm_min_uint8": MASK_GM},
        "concept_rules": {
            "grey_matter_like": f"concept-slab patches with mean GM probability >= {GM_CONCEPT} over the centre",
            "white_matter_like": f"concept-slab patches with mean WM probability >= {WM_CONCEPT} over the centre",
            "csf_like": f"concept-slab patches with mean CSF (brain mask - GM - WM) >= {CSF_CONCEPT} over the "
                        "centre (ventricles, sulci)",
        },
        "splits": "train, report (classes/), concept and random patches come from disjoint slabs of slices; "
                  "within a role, patches are drawn by SHA-256 orderings salted with the seed",
        "seed": SEED,
        "masks": f"masks/<same path>.png: grey matter, GM probability >= {MASK_GM}/255 (0/255)",
        "png": "8-bit grayscale, uncompressed deflate blocks, no metadata (byte-stable)",
        "versions": _versions(),
    }
    return CaseInfo(
        root=root, case="mri", size=size, class_names=list(CLASS_NAMES), concept_names=list(CONCEPT_NAMES),
        ground_truth_concept="grey_matter_like", ground_truth_class="grey_matter", expected_sign=+1,
        label_rule=LABEL_RULE,
        measures={
            "channel": "gray",  # single-channel T1 intensities, used as they are
            "mask_dir": str(root / "masks"),
            "features": ["original_shape2D_PixelSurface", "original_firstorder_Mean",
                         "original_glcm_Contrast", "original_firstorder_Entropy"],
            "note": "Grey-matter area in the patch (shape2D PixelSurface of the GM mask) should rise towards "
                    "grey_matter; white-matter-only patches have empty masks.",
        },
        manifest=manifest_path("mri", size), provenance=provenance, counts=count_sets(root),
        train_dir=root / "train")
