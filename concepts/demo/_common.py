"""Pieces shared by the demo case builders: the case description, byte-stable PNG writing, seeded
orderings that never change between library versions, and the manifest check.

Everything here exists for one promise: building a demo case twice, on any machine, gives the same
bytes, so that the committed manifest in ``data_manifests/`` can vouch for the data.
"""
from __future__ import annotations

import hashlib
import shutil
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from ..errors import ToolkitError

# The repository's committed manifests; the demo data are verified against these.
MANIFEST_DIR = Path(__file__).resolve().parents[2] / "data_manifests"
SIZES = ("full", "small")
# Subfolders a builder writes; anything else already in the output folder is left alone, but these
# are emptied first so that a rebuild never mixes old and new files.
BUILT_FOLDERS = ("classes", "concepts", "random", "masks", "train")


class DemoDataError(ToolkitError, ValueError):
    """Demo data that cannot be built or does not match its committed manifest."""


@dataclass
class CaseInfo:
    """What a built demo case holds and how to explain a model of it.

    Attributes
    ----------
    root : Path
        The data folder (``classes/``, ``concepts/``, ``random/``, ``masks/``, ``train/``).
    case : str
        ``"histology"`` or ``"mri"``.
    size : str
        ``"full"`` or ``"small"``.
    class_names : list[str]
        Class names in the model's output-index order (also in ``classes.txt``).
    concept_names : list[str]
        The folder concepts under ``concepts/``.
    ground_truth_concept : str
        The concept the labels were derived from.
    ground_truth_class : str
        The class that concept should push the model towards.
    expected_sign : int
        +1 when the ground-truth concept should raise ``ground_truth_class``.
    label_rule : str
        How the labels were derived from the data, in one or two sentences.
    measures : dict
        Suggestions for continuous (radiomics) concept measures: ``channel``,
        ``mask_dir``, ``features`` (pyradiomics names) and a ``note``.
    manifest : Path
        The committed manifest this build was (or can be) verified against.
    provenance : dict
        Source package, version, file, tiling, thresholds and seeds.
    counts : dict[str, int]
        Number of images per set (``"classes/high_cellularity"`` -> 150, ...).
    train_dir : Path | None
        Folder of the CNN training examples (``train/<class>/``), disjoint from
        ``classes/``, which serve as the held-out test set.
    preprocess : Any
        The case's ``preprocess(image, input_shape)`` for the toolkit, or None for the
        default (the model is trained on, and explained with, the same one).

    Examples
    --------
    >>> info = build_case("histology", "demo_data")  # builds a case (1-4 s)  # doctest: +SKIP
    >>> info.class_names, info.ground_truth_concept  # of that case  # doctest: +SKIP
    (['low_cellularity', 'high_cellularity'], 'nuclei_dense')
    """

    root: Path
    case: str
    size: str
    class_names: list[str]
    concept_names: list[str]
    ground_truth_concept: str
    ground_truth_class: str
    expected_sign: int
    label_rule: str
    measures: dict
    manifest: Path
    provenance: dict
    counts: dict[str, int] = field(default_factory=dict)
    train_dir: Path | None = None
    preprocess: Any = None

    @property
    def channels(self) -> int:
        """Number of image channels (3 for RGB histology, 1 for MRI)."""
        return int(self.provenance.get("channels", 3))


def manifest_path(case: str, size: str) -> Path:
    """The committed manifest of a case and size: ``data_manifests/demo_<case>[_small].json``.

    Examples
    --------
    >>> manifest_path("mri", "small").name
    'demo_mri_small.json'
    """
    suffix = "" if size == "full" else f"_{size}"
    return MANIFEST_DIR / f"demo_{case}{suffix}.json"


def check_size(size: str) -> None:
    """Raise a clear error for a size other than ``"full"`` or ``"small"``."""
    if size not in SIZES:
        raise DemoDataError(f"Unknown demo size {size!r}; use one of {', '.join(SIZES)}.")


# --- byte-stable PNG ------------------------------------------------------------------------------

def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bytes(image: np.ndarray) -> bytes:
    """Encode an 8-bit grayscale ``(H, W)`` or RGB ``(H, W, 3)`` image as a PNG, byte for byte stable.

    The image data are stored in uncompressed deflate blocks. Compressed output depends on the zlib
    build (Pillow's wheels and some Linux distributions use zlib-ng, whose bytes differ from
    zlib's), so compressed PNGs could not be verified by SHA-256 across machines; stored blocks
    can. No time stamp or other metadata is written. Any PNG reader (Pillow included) reads them.

    Examples
    --------
    >>> png_bytes(np.zeros((2, 2), np.uint8))[:8]
    b'\\x89PNG\\r\\n\\x1a\\n'
    """
    image = np.ascontiguousarray(image)
    if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise DemoDataError(f"png_bytes needs uint8 (H, W) or (H, W, 3), got {image.dtype} {image.shape}.")
    height, width = image.shape[:2]
    color_type = 0 if image.ndim == 2 else 2
    rows = image.reshape(height, -1)
    # Filter type 0 (none) before every scanline.
    raw = b"".join(b"\x00" + rows[i].tobytes() for i in range(height))
    blocks = []
    for start in range(0, max(len(raw), 1), 65535):
        block = raw[start:start + 65535]
        final = 1 if start + 65535 >= len(raw) else 0
        blocks.append(struct.pack("<BHH", final, len(block), len(block) ^ 0xFFFF) + block)
    stream = b"\x78\x01" + b"".join(blocks) + struct.pack(">I", zlib.adler32(raw))
    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", stream) + _chunk(b"IEND", b"")


def write_png(path: Path, image: np.ndarray) -> None:
    """Write :func:`png_bytes` of ``image`` to ``path``, creating parent folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(image))


# --- byte-stable NIfTI -----------------------------------------------------------------------------

def nifti_bytes(volume: np.ndarray, affine: np.ndarray) -> bytes:
    """Encode a uint8 ``(x, y, z)`` volume as an uncompressed NIfTI-1 file (``.nii``), byte for byte stable.

    The header holds the dimensions, the voxel size, millimetre units and the voxel-to-world
    ``affine`` (RAS+, as nibabel/nilearn give it) as the sform (code 1, scanner) and nothing else:
    no description, no time stamp, no compression (gzip output depends on the zlib build, see
    :func:`png_bytes`). SimpleITK, nibabel and every NIfTI reader read it.

    Examples
    --------
    >>> len(nifti_bytes(np.zeros((2, 3, 4), np.uint8), np.eye(4)))
    376
    """
    volume = np.asarray(volume)
    if volume.dtype != np.uint8 or volume.ndim != 3:
        raise DemoDataError(f"nifti_bytes needs a uint8 (x, y, z) volume, got {volume.dtype} {volume.shape}.")
    affine = np.asarray(affine, dtype=np.float64)
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    header = bytearray(348)
    struct.pack_into("<i", header, 0, 348)                                   # sizeof_hdr
    struct.pack_into("<8h", header, 40, 3, *volume.shape, 1, 1, 1, 1)        # dim
    struct.pack_into("<hh", header, 70, 2, 8)                                # datatype uint8, bitpix
    struct.pack_into("<8f", header, 76, 1.0, *spacing, 0, 0, 0, 0)           # pixdim (qfac 1)
    struct.pack_into("<f", header, 108, 352.0)                               # vox_offset
    struct.pack_into("<ff", header, 112, 1.0, 0.0)                           # scl_slope, scl_inter
    header[123] = 2                                                          # xyzt_units: mm
    struct.pack_into("<hh", header, 252, 0, 1)                               # qform_code 0, sform_code 1
    struct.pack_into("<12f", header, 280, *affine[:3, :4].ravel())           # srow_x, srow_y, srow_z
    header[344:348] = b"n+1\0"
    # 4 zero bytes: no extensions; voxels follow with x varying fastest.
    return bytes(header) + b"\0\0\0\0" + np.ascontiguousarray(volume.transpose(2, 1, 0)).tobytes()


def write_nifti(path: Path, volume: np.ndarray, affine: np.ndarray) -> None:
    """Write :func:`nifti_bytes` of ``volume`` to ``path``, creating parent folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(nifti_bytes(volume, affine))


# --- seeded orderings ------------------------------------------------------------------------------

def stable_order(keys: Iterable[str], salt: str) -> list[str]:
    """``keys`` in a seeded pseudo-random order that is the same on every machine and library version.

    The order is by SHA-256 of ``salt + key``: unlike ``numpy.random`` shuffles, whose algorithms
    may change between numpy versions, this can never change, so the demo's splits stay fixed.

    Examples
    --------
    >>> stable_order(["a", "b", "c"], "seed0") == stable_order(["c", "b", "a"], "seed0")
    True
    """
    return sorted(keys, key=lambda k: hashlib.sha256(f"{salt}|{k}".encode()).hexdigest())


def take(keys: Sequence[str], n: int, salt: str, used: set[str]) -> list[str]:
    """The first ``n`` of ``keys`` in :func:`stable_order` that are not in ``used``; marks them used.

    Returns them sorted by key (file order). Fewer than ``n`` are returned when fewer are left.
    """
    chosen = [k for k in stable_order(keys, salt) if k not in used][:n]
    used.update(chosen)
    return sorted(chosen)


def reset_output(root: Path) -> None:
    """Empty the builder's own subfolders and ``classes.txt`` below ``root`` (a rebuild starts clean)."""
    root.mkdir(parents=True, exist_ok=True)
    for name in BUILT_FOLDERS:
        if (root / name).is_dir():
            shutil.rmtree(root / name)
    (root / "classes.txt").unlink(missing_ok=True)


def write_classes_txt(root: Path, class_names: Sequence[str]) -> None:
    """Write ``classes.txt`` (one class name per line, output-index order, ``\\n`` line ends)."""
    (root / "classes.txt").write_bytes(("\n".join(class_names) + "\n").encode("utf-8"))


def emit_sets(emit: Callable[[str, list[str], bool], None], class_names: Sequence[str],
              report: dict[str, list[str]], train: dict[str, list[str]], concepts: dict[str, list[str]],
              random_pool: list[str]) -> None:
    """Write every set of a case with the case's ``emit(folder, keys, with_mask)``, in the usual layout.

    ``classes/<class>`` and the concept and random sets get masks; ``train/<class>`` does not.

    Parameters
    ----------
    emit : callable
        Writes the examples ``keys`` into ``folder`` (and their masks under ``masks/`` when asked).
    class_names : sequence of str
        The classes, in the model's output order.
    report, train, concepts : dict
        Example keys per class (report, training) and per concept.
    random_pool : list of str
        The keys of the random pool.

    Examples
    --------
    >>> written = []
    >>> emit_sets(lambda d, k, m: written.append((d, m)), ["a"], {"a": []}, {"a": []}, {"c": []}, [])
    >>> written
    [('classes/a', True), ('train/a', False), ('concepts/c', True), ('random', True)]
    """
    for c in class_names:
        emit(f"classes/{c}", report[c], True)
        emit(f"train/{c}", train[c], False)
    for name, keys in concepts.items():
        emit(f"concepts/{name}", keys, True)
    emit("random", random_pool, True)


def count_sets(root: Path, pattern: str = "*.png") -> dict[str, int]:
    """Number of files per set (``pattern``: PNG by default, ``"*.nii"`` for volumes): ``classes/<c>``,
    ``concepts/<c>``, ``train/<c>``, ``random``, ``masks``."""
    counts: dict[str, int] = {}
    for path in sorted(root.rglob(pattern)):
        parts = path.relative_to(root).parts
        key = parts[0] if parts[0] in ("random", "masks") or len(parts) < 3 else "/".join(parts[:2])
        counts[key] = counts.get(key, 0) + 1
    return counts


def verify_case(info: CaseInfo) -> None:
    """Check a built case against its committed manifest; raise :class:`DemoDataError` naming files.

    Raises
    ------
    DemoDataError
        The manifest is missing, or files changed, vanished or appeared.

    Examples
    --------
    >>> verify_case(build_case("mri", "demo_mri", verify=False))  # builds a case (1-4 s)  # doctest: +SKIP
    """
    from ..manifests import check_manifest, read_manifest

    if not info.manifest.is_file():
        raise DemoDataError(
            f"No committed manifest {str(info.manifest)!r} for demo case {info.case!r} ({info.size}). "
            f"Create it once with concepts.demo.write_case_manifest({info.case!r}, {info.size!r}), "
            "or build with verify=False.")
    result = check_manifest(info.manifest, info.root)
    if result.ok:
        return
    hint = ""
    recorded = read_manifest(info.manifest).get("provenance", {})
    expected_pixels = recorded.get("decoded_source_sha256")
    actual_pixels = info.provenance.get("decoded_source_sha256")
    if expected_pixels and actual_pixels and expected_pixels != actual_pixels:
        hint = ("\nThe decoded source pixels already differ from the manifest's (a different JPEG decoder "
                "or source file?): compare the imagecodecs/nilearn versions with the manifest's provenance.")
    elif recorded.get("versions") and recorded.get("versions") != info.provenance.get("versions"):
        hint = (f"\nLibrary versions differ: manifest {recorded.get('versions')}, "
                f"here {info.provenance.get('versions')}.")
    raise DemoDataError(f"The demo case {info.case!r} ({info.size}) built in {str(info.root)!r} does not "
                        f"match its committed manifest:\n{result}{hint}")
