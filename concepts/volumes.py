"""CT and MRI volumes: reading and writing NIfTI files and DICOM series, and their geometry.

A *volume* is either a NIfTI file (``.nii``, ``.nii.gz``) or a DICOM series, i.e. one folder
holding the ``.dcm`` files of one volume. Both are read through SimpleITK into a :class:`Volume`:
a numpy array in SimpleITK's ``(z, y, x)`` axis order (which is a 3D model's ``(D, H, W)``) that
also carries its :class:`Geometry` (size, spacing in mm, origin, direction; in ITK's ``(x, y, z)``
order, as SimpleITK reports them). Concept folders, class folders and random pools may hold
volumes exactly as they hold 2D images; :func:`concepts.image_files.read_image` returns a
:class:`Volume` for them and :class:`concepts.sets.ImageSet` preprocesses them with
:func:`volume_preprocess` (:mod:`concepts.volume_input`) unless told otherwise.

Every problem with a volume is raised from here (:func:`read_volume`, :func:`check_mask_geometry`,
:func:`check_same_geometry`) with the file named, so that one place decides what a bad volume does.
That includes what SimpleITK reads without a word but wrongly: a truncated NIfTI file (missing
voxels padded with 0), NaN/inf voxels of float NIfTI data (read as 0; :func:`nifti_problem`), and a
DICOM series with a missing, duplicated or unevenly spaced slice (read with an averaged spacing).
That is also why this module stays whole at about 970 lines (many of them docstrings and runnable
examples): reading, writing and checking share :class:`Geometry`, :class:`Volume` and that
one error policy. 3D preprocessing is in :mod:`concepts.volume_input`.

Examples
--------
>>> path = write_volume(np.zeros((10, 24, 24), np.int16), "case01.nii.gz", spacing=(0.7, 0.7, 2.5))
>>> vol = read_volume(path)
>>> vol.shape, vol.geometry.spacing
((10, 24, 24), (0.7, 0.7, 2.5))
>>> volume_preprocess(vol, (16, 16, 16, 1)).shape
(16, 16, 16, 1)
"""
from __future__ import annotations

import hashlib
import itertools
import math
import os
import struct
import time
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Sequence

import numpy as np

from probes.identity import RACY_SECONDS

from .errors import ImageReadError, ToolkitError
# 3D preprocessing lives in concepts.volume_input; its names stay importable from here.
from .volume_input import (CT_WINDOW, DEFAULT_VOLUME_PREPROCESS_ID, MRI_PERCENTILES, check_volume_shape,
                           resample_to_shape, resolve_modality, volume_preprocess)

__all__ = ["CT_WINDOW", "DEFAULT_VOLUME_PREPROCESS_ID", "MRI_PERCENTILES", "Geometry", "Volume", "VolumeGeometryError",
           "check_mask_geometry", "check_same_geometry", "geometry_records", "header_geometry", "is_dicom_series", "is_volume_file",
           "is_volume_path", "model_spacing", "nifti_problem", "read_volume", "resolve_modality",
           "resample_to_shape", "series_sha256", "volume_preprocess", "volume_stem", "write_dicom_series",
           "write_volume"]

#: File endings read as NIfTI volumes.
NIFTI_SUFFIXES = (".nii.gz", ".nii")
# Relative tolerance when comparing spacings, origins and directions (floating-point headers).
_TOLERANCE = 1e-4


class VolumeGeometryError(ToolkitError, ValueError):
    """Volumes whose geometries do not fit together: a mask and its image, or the volumes of one set."""


# --------------------------------------------------------------------------------------------------
# Geometry and the Volume array
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Geometry:
    """Where a volume's voxels lie in space, in ITK's ``(x, y, z)`` order.

    Attributes
    ----------
    size : tuple[int, ...]
        Voxels along x, y, z (the array's shape reversed).
    spacing : tuple[float, ...]
        Voxel size in mm along x, y, z.
    origin : tuple[float, ...]
        Physical position (mm) of the first voxel's centre.
    direction : tuple[float, ...]
        The 3x3 direction cosines, row-major (9 numbers).

    Examples
    --------
    >>> g = Geometry((4, 4, 2), (1.0, 1.0, 2.5), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    >>> g.voxel_volume_mm3
    2.5
    """

    size: tuple[int, ...]
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]

    @classmethod
    def of(cls, image: Any) -> "Geometry":
        """The geometry of a SimpleITK image."""
        return cls(tuple(int(s) for s in image.GetSize()), tuple(float(s) for s in image.GetSpacing()),
                   tuple(float(o) for o in image.GetOrigin()), tuple(float(d) for d in image.GetDirection()))

    @property
    def voxel_volume_mm3(self) -> float:
        """Volume of one voxel in mm³."""
        return float(np.prod(self.spacing))

    def to_dict(self) -> dict:
        """A JSON-ready dict (lists of numbers), as recorded in manifests."""
        return {k: list(v) for k, v in asdict(self).items()}

    def apply(self, image: Any) -> Any:
        """Set this geometry's spacing, origin and direction on a SimpleITK image; returns the image."""
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image

    def differences(self, other: "Geometry", *, origin: bool = True) -> list[str]:
        """What differs from ``other`` (size, spacing, direction and, with ``origin``, origin), as text."""
        out = []
        if self.size != other.size:
            out.append(f"size {self.size} vs {other.size}")
        if not np.allclose(self.spacing, other.spacing, rtol=_TOLERANCE, atol=1e-6):
            out.append(f"spacing {_fmt(self.spacing)} vs {_fmt(other.spacing)} mm")
        if not np.allclose(self.direction, other.direction, rtol=0, atol=_TOLERANCE):
            out.append(f"direction {_fmt(self.direction)} vs {_fmt(other.direction)}")
        if origin:
            scale = max(1.0, float(np.max(np.abs(self.spacing))))
            if not np.allclose(self.origin, other.origin, rtol=0, atol=_TOLERANCE * scale * 10):
                out.append(f"origin {_fmt(self.origin)} vs {_fmt(other.origin)} mm")
        return out


def _fmt(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


class Volume(np.ndarray):
    """A volume's voxels as a numpy array ``(z, y, x)`` in the file's dtype, with its geometry.

    It is an ordinary numpy array (``v.mean()``, ``v[10]``, ``np.asarray(v)`` all work); the extra
    attributes describe the volume *as read*: slicing or arithmetic keeps them but does not update
    them. Intensities are as SimpleITK returns them: CT in Hounsfield units (DICOM rescale slope and
    intercept applied), NIfTI with its scaling applied.

    Attributes
    ----------
    geometry : Geometry | None
        The :class:`Geometry` (x, y, z order).
    path : Path | None
        The NIfTI file or DICOM series folder it came from (None when built in memory).
    modality : str | None
        The DICOM ``Modality`` tag (``"CT"``, ``"MR"``, ...), None for NIfTI.

    Examples
    --------
    >>> g = Geometry((3, 2, 1), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    >>> v = Volume(np.zeros((1, 2, 3), np.int16), g)
    >>> v.shape, v.spacing
    ((1, 2, 3), (1.0, 1.0, 1.0))
    """

    geometry: Geometry | None
    path: Path | None
    modality: str | None

    def __new__(cls, array: Any, geometry: Geometry | None, path: str | Path | None = None,
                modality: str | None = None) -> "Volume":
        obj = np.asarray(array).view(cls)
        obj.geometry = geometry
        obj.path = None if path is None else Path(path)
        obj.modality = modality
        return obj

    def __array_finalize__(self, obj: Any) -> None:
        self.geometry = getattr(obj, "geometry", None)
        self.path = getattr(obj, "path", None)
        self.modality = getattr(obj, "modality", None)

    def __reduce__(self):
        # Plain numpy pickling drops the attributes; keep them (worker processes, caches).
        return (_rebuild_volume, (np.asarray(self), self.geometry, self.path, self.modality))

    @property
    def spacing(self) -> tuple[float, ...] | None:
        """Voxel size in mm, (x, y, z) order."""
        return None if self.geometry is None else self.geometry.spacing

    def to_sitk(self) -> Any:
        """A SimpleITK image of these voxels with this geometry (the array must be ``(z, y, x)``)."""
        import SimpleITK as sitk

        image = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(self)))
        return self.geometry.apply(image) if self.geometry is not None else image


def _rebuild_volume(array: np.ndarray, geometry: Geometry | None, path: Path | None,
                    modality: str | None) -> Volume:
    return Volume(array, geometry, path, modality)


# --------------------------------------------------------------------------------------------------
# Recognising volumes on disk
# --------------------------------------------------------------------------------------------------

def is_volume_file(path: str | Path) -> bool:
    """True for a (non-hidden) file name ending in ``.nii`` or ``.nii.gz``.

    Examples
    --------
    >>> is_volume_file("case01.nii.gz"), is_volume_file("tile.png")
    (True, False)
    """
    name = Path(path).name
    return not name.startswith(".") and name.lower().endswith(NIFTI_SUFFIXES)


def _dicom_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.suffix.lower() == ".dcm" and not p.name.startswith(".") and p.is_file())


def is_dicom_series(path: str | Path) -> bool:
    """True for a (non-hidden) folder that directly holds at least one ``.dcm`` file.

    Examples
    --------
    >>> series = write_dicom_series(np.zeros((3, 8, 8), np.int16), "case01")
    >>> is_dicom_series(series), is_dicom_series("data")
    (True, False)
    """
    path = Path(path)
    if path.name.startswith(".") or not path.is_dir():
        return False
    try:
        return any(p.suffix.lower() == ".dcm" and not p.name.startswith(".") for p in path.iterdir())
    except OSError:
        return False


def is_volume_path(path: str | Path) -> bool:
    """True for a NIfTI file name or an existing DICOM series folder.

    Examples
    --------
    >>> is_volume_path("brain.nii")
    True
    """
    return is_volume_file(path) or is_dicom_series(path)


def volume_stem(path: str | Path) -> str:
    """The name without ``.nii.gz`` / ``.nii`` (a DICOM series folder keeps its name); masks match on it.

    Examples
    --------
    >>> volume_stem("a/case01.nii.gz"), volume_stem("a/case02")
    ('case01', 'case02')
    """
    name = Path(path).name
    for suffix in NIFTI_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[:-len(suffix)]
    return name


_SERIES_HASHES: dict[tuple, str] = {}


def series_sha256(folder: str | Path) -> str:
    """SHA-256 over a DICOM series folder: each ``.dcm`` file's name and bytes, in name order.

    Memoised per process on the files' (name, size, mtime), so a changed slice changes the hash.

    Examples
    --------
    >>> series = write_dicom_series(np.zeros((3, 8, 8), np.int16), "case01")
    >>> key = series_sha256(series)
    >>> len(key), key == series_sha256(series)
    (64, True)
    >>> _ = write_dicom_series(np.ones((3, 8, 8), np.int16), "case01")   # new pixel values
    >>> series_sha256(series) == key
    False
    """
    from .manifests import sha256_file

    folder = Path(folder)
    files = _dicom_files(folder)
    stats = tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    key = (os.fspath(folder), stats)
    if key not in _SERIES_HASHES:
        digest = hashlib.sha256(b"dicom-series/v1\n")
        for path in files:
            digest.update(f"{path.name}\0{sha256_file(path)}\n".encode())
        _SERIES_HASHES[key] = digest.hexdigest()
    return _SERIES_HASHES[key]


# --------------------------------------------------------------------------------------------------
# NIfTI data integrity (what SimpleITK's reader does not check)
# --------------------------------------------------------------------------------------------------

# SimpleITK's NIfTI reader pads a file that ends early with zeros and turns NaN/inf voxels of float
# data into 0 (nifti1_io's FIXED_FLOAT), both without a word. One streaming pass over the bytes
# (decompressed for .nii.gz) checks both before SimpleITK reads the file.

#: Bytes per voxel of each NIfTI datatype code (nifti1.h); other codes are left to SimpleITK.
_NIFTI_VOXEL_BYTES = {2: 1, 4: 2, 8: 4, 16: 4, 32: 8, 64: 8, 128: 3, 256: 1, 512: 2, 768: 4, 1024: 8,
                      1280: 8, 1536: 16, 1792: 16, 2048: 32, 2304: 4}
#: Real float datatypes (DT_FLOAT32, DT_FLOAT64): the only ones that can hold NaN or inf and are read
#: as one grey level (complex data is refused after reading).
_NIFTI_FLOATS = {16: "f4", 64: "f8"}
#: Read size of the streaming pass: bounded memory whatever the volume's size.
_CHUNK = 1 << 22
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class _NiftiLayout:
    """Where a single-file NIfTI's voxels lie, from its header (``data_start`` as nifti1_io reads it)."""

    version: int
    dims: tuple[int, ...]             # x, y, z, ... (ITK order)
    data_start: int
    data_bytes: int
    float_dtype: np.dtype | None      # with the file's byte order; None for non-float data
    scaled: bool                      # scl_slope/scl_inter change the values SimpleITK returns

    @property
    def end(self) -> int:
        return self.data_start + self.data_bytes


def _nifti_layout(head: bytes) -> _NiftiLayout | None:
    """The layout from a NIfTI-1 (348-byte) or NIfTI-2 (540-byte) single-file header, or None.

    None means "not a header this check understands" (ANALYZE, a .hdr/.img pair, an unknown
    datatype, nonsense dimensions): SimpleITK then decides alone, as before. ``head`` must hold the
    whole header (the caller knows its size from :func:`_nifti_header_size`).
    """
    size, order = _nifti_header_size(head)
    if size is None or len(head) < size:
        return None
    if size == 348:
        if head[344:348] != b"n+1\0":
            return None
        dim = struct.unpack(order + "8h", head[40:56])
        datatype, bitpix = struct.unpack(order + "hh", head[70:74])
        offset, slope, inter = struct.unpack(order + "fff", head[108:120])
    else:
        if head[4:8] != b"n+2\0":
            return None
        datatype, bitpix = struct.unpack(order + "hh", head[12:16])
        dim = struct.unpack(order + "8q", head[16:80])
        offset, = struct.unpack(order + "q", head[168:176])
        slope, inter = struct.unpack(order + "dd", head[176:192])
    if not 1 <= dim[0] <= 7 or datatype not in _NIFTI_VOXEL_BYTES:
        return None
    # nifti1_io counts a dimension below 1 as 1, and reads the voxels from the end of the header when
    # vox_offset points inside it (checked against SimpleITK 2.5).
    dims = tuple(max(int(d), 1) for d in dim[1:dim[0] + 1])
    start = max(int(offset) if math.isfinite(offset) else 0, size)
    float_code = _NIFTI_FLOATS.get(datatype)
    scaled = not (slope == 0 or (slope == 1 and inter == 0))  # slope 0 means "no scaling"
    return _NiftiLayout(1 if size == 348 else 2, dims, start, math.prod(dims) * _NIFTI_VOXEL_BYTES[datatype],
                        None if float_code is None else np.dtype(order + float_code), scaled)


def _nifti_header_size(head: bytes) -> tuple[int | None, str]:
    """(348 or 540, byte order) from a header's sizeof_hdr field, or (None, "") when it is neither."""
    if len(head) >= 4:
        for order in "<>":
            size, = struct.unpack(order + "i", head[:4])
            if size in (348, 540):
                return size, order
    return None, ""


def _gunzip_chunks(fh: BinaryIO, ended_early: list[str]) -> Iterator[bytes]:
    """The decompressed bytes of a gzip file, ``_CHUNK`` at most at a time.

    Reads concatenated members and ignores trailing non-gzip bytes, as zlib's ``gzread`` (SimpleITK's
    reader) does. Compressed data that stop inside a member end the stream early with
    ``"truncated"`` appended to ``ended_early``; damaged data (including a wrong CRC) raise zlib.error.
    """
    data = fh.read(_CHUNK)
    while True:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        while not inflater.eof:
            if not data:
                data = fh.read(_CHUNK)
                if not data:
                    rest = inflater.flush()   # output zlib still holds for the last input
                    if rest:
                        yield rest
                    if not inflater.eof:
                        ended_early.append("truncated")
                        return
                    break
            out = inflater.decompress(data, _CHUNK)
            data = inflater.unconsumed_tail
            if out:
                yield out
        data = inflater.unused_data + data
        while len(data) < 2:
            more = fh.read(_CHUNK)
            if not more:
                break
            data += more
        if not data.startswith(_GZIP_MAGIC):
            return


class _FiniteCount:
    """Counts the non-finite values of the float voxels of a stream of bytes (NaN and inf apart)."""

    def __init__(self, layout: _NiftiLayout) -> None:
        self.layout = layout
        self.dtype = layout.float_dtype
        self.carry = b""          # a value split between two chunks
        self.seen = 0             # voxels checked so far
        self.nan = self.inf = 0
        self.first: int | None = None

    def feed(self, chunk: bytes, position: int) -> None:
        """Check the voxel bytes among ``chunk``, which starts at byte ``position`` of the data stream."""
        lo = max(self.layout.data_start, position)
        hi = min(self.layout.end, position + len(chunk))
        if hi <= lo:
            return
        piece = memoryview(chunk)[lo - position:hi - position]
        if self.carry:
            piece = memoryview(self.carry + bytes(piece))
        whole = len(piece) - len(piece) % self.dtype.itemsize
        values = np.frombuffer(piece[:whole], self.dtype)
        self.carry = bytes(piece[whole:])
        finite = np.isfinite(values)
        if not finite.all():
            nan = int(np.count_nonzero(np.isnan(values)))
            self.nan += nan
            self.inf += int(values.size - np.count_nonzero(finite)) - nan
            if self.first is None:
                self.first = self.seen + int(np.argmin(finite))
        self.seen += values.size

    def problem(self) -> str | None:
        """The message part for non-finite voxels, or None."""
        bad = self.nan + self.inf
        if not bad:
            return None
        where = np.unravel_index(self.first, self.layout.dims[::-1])[::-1]   # file order: x fastest
        at = ", ".join(f"{axis}={int(i)}" for axis, i in zip("xyztuvw", where))
        return (f"{bad:,} of its {math.prod(self.layout.dims):,} voxels are not finite ({self.nan:,} NaN, "
                f"{self.inf:,} infinite; the first at voxel {at}), and SimpleITK would read them as 0 "
                "without a word. Replace them (e.g. with numpy.nan_to_num, or a value the analysis should "
                "see) and save the volume again, or remove it from the folder")


def _truncated(held: int, layout: _NiftiLayout, how: str) -> str:
    shape = "x".join(str(d) for d in layout.dims)
    return (f"the file holds {held:,} of the {layout.end:,} bytes its header declares ({layout.data_start:,} "
            f"bytes before the voxels, then {layout.data_bytes:,} bytes of {shape} voxels"
            f"{'; ' + how if how else ''}); it is truncated. Re-export it or copy it again")


def _nifti_data_problem(path: Path) -> tuple[str | None, _NiftiLayout | None]:
    """(what is wrong with a NIfTI file's data or None, its layout or None), in one pass over its bytes.

    Truncation: the file must reach ``vox_offset`` plus the voxels its header declares (dims x
    datatype size); for .nii.gz the decompressed length counts, and damaged compressed data are a
    problem too. Float data must hold no NaN or inf. A plain .nii of integers costs one ``stat``;
    the others one read (and decompression) of the file, a chunk at a time.
    """
    with open(path, "rb") as fh:
        # Decided by the bytes, as zlib's gzopen does: a .nii.gz that is not compressed reads as well.
        compressed = fh.read(2) == _GZIP_MAGIC
        fh.seek(0)
        ended_early: list[str] = []
        try:
            if compressed:
                chunks = _gunzip_chunks(fh, ended_early)
                head = b""
                for chunk in chunks:   # the header: at most 540 bytes, nearly always in the first chunk
                    head += chunk
                    if len(head) >= 540:
                        break
            else:
                head = fh.read(540)
                chunks = iter(lambda: fh.read(_CHUNK), b"")
            how = ("" if not compressed else "decompressed, and the compressed data stop early" if ended_early
                   else "decompressed")
            size, _ = _nifti_header_size(head)
            if size is not None and len(head) < size:
                return (f"the file holds {len(head):,} bytes{f' ({how})' if how else ''}, fewer than its "
                        f"{size}-byte NIfTI header; it is truncated. Re-export it or copy it again"), None
            layout = _nifti_layout(head)
            if layout is None:
                return None, None
            if not compressed and layout.float_dtype is None:
                held = os.fstat(fh.fileno()).st_size
                return (_truncated(held, layout, how) if held < layout.end else None), layout
            count = _FiniteCount(layout) if layout.float_dtype is not None else None
            held = 0
            for piece in itertools.chain([head], chunks):
                if count is not None:
                    count.feed(piece, held)
                held += len(piece)
                if not compressed and held >= layout.end:
                    break      # a plain file's bytes after the voxels are never read
        except zlib.error as exc:
            return (f"its compressed (gzip) data are damaged ({exc}); the file is corrupt. Re-export it or "
                    "copy it again"), None
    if held < layout.end:
        how = "decompressed, and the compressed data stop early" if ended_early else how
        return _truncated(held, layout, how), layout
    return (count.problem() if count is not None else None), layout


# Problems found per file state; a file changed within RACY_SECONDS is checked again (same rule as
# concepts.screening), so a same-size rewrite is never hidden.
_NIFTI_CHECKED: dict[tuple, tuple[str | None, _NiftiLayout | None]] = {}


def _nifti_check(path: Path) -> tuple[str | None, _NiftiLayout | None]:
    stat = os.stat(path)
    key = (os.fspath(path), stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_ctime_ns)
    if key in _NIFTI_CHECKED:
        return _NIFTI_CHECKED[key]
    found = _nifti_data_problem(path)
    if time.time() - max(stat.st_mtime, stat.st_ctime) >= RACY_SECONDS:
        _NIFTI_CHECKED[key] = found
    return found


def nifti_problem(path: str | Path) -> str | None:
    """What is wrong with a NIfTI file's voxel data that SimpleITK would not report, or None.

    SimpleITK reads a truncated file with the missing voxels as 0 and NaN/inf voxels of float data
    as 0; this finds both (and damaged gzip data) in one pass, and :func:`read_volume` raises it.
    For :mod:`concepts.screening`, which names the file itself: the text does not. Files whose
    header is not a single-file NIfTI-1/NIfTI-2 header are left to SimpleITK (None).

    Examples
    --------
    >>> path = write_volume(np.ones((4, 8, 8), np.int16), "whole.nii")
    >>> nifti_problem(path) is None
    True
    >>> _ = Path("cut.nii").write_bytes(path.read_bytes()[:400])
    >>> print(nifti_problem("cut.nii"))
    the file holds 400 of the 864 bytes its header declares (352 bytes before the voxels, then 512
    bytes of 8x8x4 voxels); it is truncated. Re-export it or copy it again
    """
    return _nifti_check(Path(path))[0]


# --------------------------------------------------------------------------------------------------
# Reading and writing
# --------------------------------------------------------------------------------------------------

def _read_nifti(path: Path) -> Any:
    import SimpleITK as sitk

    problem, layout = _nifti_check(path)
    if problem is not None:
        raise ImageReadError(f"Cannot read NIfTI volume {str(path)!r}: {problem}.")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unknown error"
        advice = ("It has a NIfTI-2 header, which this SimpleITK does not read: save it as NIfTI-1 (e.g. "
                  "nibabel.save(nibabel.Nifti1Image.from_image(nibabel.load(path)), path))"
                  if layout is not None and layout.version == 2 else
                  "Check that the file is a complete .nii/.nii.gz file, or remove it from the folder")
        raise ImageReadError(f"Cannot read NIfTI volume {str(path)!r}: {first}. {advice}.") from None
    if layout is not None and layout.scaled and image.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64):
        # scl_slope/scl_inter are applied in float, where large stored values can overflow to inf even
        # though every stored value is finite; only scaled files can, so only they pay for this pass.
        bad = int(np.count_nonzero(~np.isfinite(sitk.GetArrayViewFromImage(image))))
        if bad:
            raise ImageReadError(
                f"Cannot read NIfTI volume {str(path)!r}: {bad:,} of its voxels are infinite once its "
                "scaling (scl_slope, scl_inter) is applied. Check the header's scaling, or store the values "
                "unscaled (e.g. as float32), and save the volume again.")
    return image


#: Slice positions may differ from the series' even step by this fraction of the step or by this
#: many mm, whichever is larger: positions are decimal strings, some scanners round them to 0.01 mm.
_SLICE_STEP_RTOL = 0.01
_SLICE_STEP_ATOL_MM = 0.02


def _dicom_numbers(reader: Any, tag: str, count: int) -> tuple[float, ...] | None:
    """The ``count`` numbers of a backslash-separated DICOM tag, or None when absent or malformed."""
    if not reader.HasMetaDataKey(tag):
        return None
    try:
        values = tuple(float(v) for v in reader.GetMetaData(tag).split("\\"))
    except ValueError:
        return None
    return values if len(values) == count and all(math.isfinite(v) for v in values) else None


def _mm(value: float) -> str:
    return str(round(float(value), 3) + 0.0)   # + 0.0: no "-0.0"


def _check_slice_positions(folder: Path, names: Sequence[str],
                           placement: dict[str, tuple[tuple[float, ...], tuple[float, ...]] | None]) -> None:
    """Raise unless the slices of a series lie at distinct, evenly spaced positions along their normal.

    ITK's series reader stacks the files as given and averages the spacing over the whole series
    (with a warning on stderr only), so a missing or repeated slice would give a volume whose slices
    sit at wrong positions. Positions are the slices' ImagePositionPatient (0020|0032) projected on
    the normal of their ImageOrientationPatient (0020|0037). A series where any slice lacks either
    tag is left to the reader, as before.
    """
    slices = [(os.path.basename(n), placement.get(os.path.basename(n))) for n in names]
    if len(slices) < 2 or any(p is None for _, p in slices):
        return
    first_name, (_, orientation) = slices[0]
    for name, (_, other) in slices:
        if not np.allclose(other, orientation, rtol=0, atol=1e-3):
            raise ImageReadError(
                f"Cannot read the DICOM series {str(folder)!r}: the slice {name!r} has another orientation "
                f"(0020|0037 {_fmt(other)}) than {first_name!r} ({_fmt(orientation)}); the slices of one "
                "volume must be parallel. Remove the slices of the other orientation (e.g. a localizer), or "
                "give them their own folder.")
    normal = np.cross(orientation[:3], orientation[3:])
    if np.linalg.norm(normal) < 0.5:
        return   # row and column cosines that are not orthonormal: nothing to project on
    normal = normal / np.linalg.norm(normal)
    along = np.array([float(np.dot(p, normal)) for _, (p, _) in slices])
    order = np.argsort(along, kind="stable")
    along = along[order]
    files = [slices[i][0] for i in order]
    steps = np.diff(along)
    # The lower median: a step that occurs (np.median would average the two middle steps of an even
    # count, e.g. 3 mm from steps 2 and 4 where one slice of three is missing).
    step = float(np.sort(steps)[(len(steps) - 1) // 2])
    tolerance = max(_SLICE_STEP_RTOL * step, _SLICE_STEP_ATOL_MM)
    uneven = np.flatnonzero(np.abs(steps - step) > tolerance)
    same = int(np.count_nonzero(steps <= tolerance))
    if not uneven.size and step > tolerance:
        return
    copy = "Remove the copies from the series folder (each slice once)"
    if step <= tolerance:   # at least half the slices share a position with another
        what, advice = (f"its {len(files)} slices lie at only {len(files) - same} distinct positions along "
                        "the slice normal: slices are duplicated"), copy
    else:
        i = int(uneven[0])
        a, b, gap = along[i], along[i + 1], float(steps[i])
        pair = f"between {files[i]!r} and {files[i + 1]!r}"
        missing = int(round(gap / step)) - 1
        if gap <= tolerance:
            what, advice = (f"the slices {files[i]!r} and {files[i + 1]!r} lie at the same position "
                            f"({_mm(a)} mm along the slice normal): a slice is duplicated"), copy
        elif missing >= 1 and abs(gap - (missing + 1) * step) <= tolerance:
            what = (f"slice positions jump from {_mm(a)} to {_mm(b)} mm {pair} (step {_mm(step)} mm "
                    f"elsewhere): {'a slice is' if missing == 1 else f'{missing} slices are'} missing")
            advice = "Copy the series again from its source (scanner, PACS) with every slice"
        else:
            what = (f"slice positions step from {_mm(a)} to {_mm(b)} mm {pair} ({_mm(gap)} mm, where the "
                    f"other steps are {_mm(step)} mm): the slices are not evenly spaced")
            advice = ("Remove stray slices, or convert the series to a NIfTI volume on a regular grid (e.g. "
                      "resampled with SimpleITK)")
        if uneven.size > 1:
            what += f" ({uneven.size} uneven steps in all)"
    raise ImageReadError(
        f"Cannot read the DICOM series {str(folder)!r}: {what}. The volume would be read with wrong slice "
        f"positions (an averaged spacing). {advice}.")


def _read_dicom_series(folder: Path) -> tuple[Any, str | None]:
    import SimpleITK as sitk

    files = _dicom_files(folder)
    # Read each header first: a damaged or non-DICOM file is then named, where the series reader
    # would only say that "a file" failed.
    modality = None
    placement: dict[str, tuple[tuple[float, ...], tuple[float, ...]] | None] = {}
    for path in files:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.SetImageIO("GDCMImageIO")
        try:
            reader.ReadImageInformation()
        except RuntimeError:
            raise ImageReadError(
                f"Cannot read DICOM file {str(path)!r} of the series {str(folder)!r}: it is damaged or not "
                "a DICOM file. Replace it, or remove it from the series folder.") from None
        position, orientation = _dicom_numbers(reader, "0020|0032", 3), _dicom_numbers(reader, "0020|0037", 6)
        placement[path.name] = None if position is None or orientation is None else (position, orientation)
        if modality is None and reader.HasMetaDataKey("0008|0060"):
            modality = reader.GetMetaData("0008|0060").strip() or None
        if reader.GetDimension() == 3 and reader.GetSize()[2] > 1:
            raise ImageReadError(
                f"DICOM file {str(path)!r} holds a multi-frame volume ({reader.GetSize()[2]} frames) "
                f"inside the series folder {str(folder)!r}; a series folder must hold one 2D slice per "
                "file. Convert the multi-frame file to NIfTI, or give it its own folder.")
    series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if len(series) > 1:
        raise ImageReadError(
            f"DICOM folder {str(folder)!r} holds {len(series)} series ({', '.join(series[:3])}"
            f"{', ...' if len(series) > 3 else ''}); a volume folder must hold exactly one series (several "
            "series, e.g. time points or echoes, would make a 4D volume). Put each series in its own folder.")
    names = (sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series[0]) if series
             else [str(p) for p in files])
    if len(names) < len(files):
        left = sorted(set(str(p) for p in files) - set(names))
        raise ImageReadError(
            f"DICOM folder {str(folder)!r}: {len(left)} of its {len(files)} files do not belong to its series "
            f"(e.g. {left[0]!r}). Remove them, or give them their own folder.")
    _check_slice_positions(folder, names, placement)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(list(names))
    try:
        return reader.Execute(), modality
    except RuntimeError as exc:
        last = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unknown error"
        raise ImageReadError(f"Cannot read the DICOM series {str(folder)!r}: {last}. Check that every .dcm "
                             "file is a slice of the same volume.") from None


def read_volume(path: str | Path) -> Volume:
    """Read a NIfTI file or a DICOM series folder as a 3D :class:`Volume` (``(z, y, x)``, native dtype).

    A 4D NIfTI whose 4th dimension has size 1 is read as 3D.

    Raises
    ------
    ImageReadError
        The path is missing or not a volume; a file is damaged (named); the volume
        is 4D (time series), 2D, or has several components per voxel (RGB) or complex voxels; a DICOM
        folder holds several series or stray files, or its slices are not distinct, evenly spaced and
        parallel (a missing or duplicated slice); a NIfTI file is shorter than its header declares
        (truncated) or holds NaN/inf voxels (:func:`nifti_problem`).

    Examples
    --------
    >>> series = write_dicom_series(np.zeros((4, 8, 8), np.int16), "case01", spacing=(0.78, 0.78, 2.5))
    >>> vol = read_volume(series)
    >>> vol.shape, vol.modality, vol.geometry.spacing
    ((4, 8, 8), 'CT', (0.78, 0.78, 2.5))
    >>> read_volume("data3d/classes/layered/l000.nii.gz").geometry.spacing
    (1.0, 1.0, 2.0)
    """
    import SimpleITK as sitk

    path = Path(path)
    if is_volume_file(path):
        if not path.is_file():
            raise ImageReadError(f"Volume file {str(path)!r} does not exist.")
        image, modality = _read_nifti(path), None
    elif is_dicom_series(path):
        image, modality = _read_dicom_series(path)
    elif path.is_dir():
        raise ImageReadError(f"{str(path)!r} is a folder without .dcm files, so it is not a DICOM series. "
                             "A DICOM volume is one folder holding the .dcm files of one series.")
    else:
        raise ImageReadError(f"{str(path)!r} is not a volume: expected a .nii/.nii.gz file or a folder of "
                             ".dcm files.")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ImageReadError(
            f"Volume {str(path)!r} has {image.GetNumberOfComponentsPerPixel()} components per voxel (colour "
            "or vector data); only scalar CT/MRI volumes are supported. Extract one component first.")
    if image.GetPixelID() in (sitk.sitkComplexFloat32, sitk.sitkComplexFloat64):
        raise ImageReadError(
            f"Volume {str(path)!r} has complex voxels (e.g. MR phase or k-space data); only real-valued "
            "CT/MRI volumes are supported. Save its magnitude (numpy.abs) or real part as a new volume.")
    if image.GetDimension() == 4:
        size = image.GetSize()
        if size[3] != 1:
            raise ImageReadError(
                f"Volume {str(path)!r} is 4D (size {size}: {size[3]} volumes, e.g. time points); the toolkit "
                "reads 3D volumes. Split it into 3D volumes (one file per time point) or pick one.")
        image = sitk.Extract(image, [size[0], size[1], size[2], 0], [0, 0, 0, 0])
    if image.GetDimension() != 3 or min(image.GetSize()) < 2:
        raise ImageReadError(
            f"Volume {str(path)!r} has size {image.GetSize()}: it is a 2D image, not a volume (a 3D model "
            "needs at least 2 voxels along every axis). Put 2D images in a 2D data folder, or stack slices "
            "into one volume.")
    return Volume(sitk.GetArrayFromImage(image), Geometry.of(image), path, modality)


def write_volume(array: np.ndarray, path: str | Path, *, spacing: Sequence[float] = (1.0, 1.0, 1.0),
                 origin: Sequence[float] = (0.0, 0.0, 0.0),
                 direction: Sequence[float] = (1, 0, 0, 0, 1, 0, 0, 0, 1)) -> Path:
    """Write a ``(z, y, x)`` array as NIfTI (``.nii``/``.nii.gz``) with the given geometry (x, y, z order).

    Examples
    --------
    >>> write_volume(np.zeros((4, 5, 6), np.int16), "out/v.nii.gz", spacing=(0.5, 0.5, 2.0))
    PosixPath('out/v.nii.gz')
    >>> read_volume("out/v.nii.gz").geometry.size   # x, y, z
    (6, 5, 4)
    """
    import SimpleITK as sitk

    path = Path(path)
    if not is_volume_file(path):
        raise ValueError(f"write_volume writes NIfTI: the file name must end in .nii or .nii.gz, got {str(path)!r}.")
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    image.SetSpacing([float(s) for s in spacing])
    image.SetOrigin([float(o) for o in origin])
    image.SetDirection([float(d) for d in direction])
    path.parent.mkdir(parents=True, exist_ok=True)
    # No compression time stamp (gzip) is written by ITK, so the bytes are reproducible.
    sitk.WriteImage(image, str(path), useCompression=path.name.lower().endswith(".gz"))
    return path


def write_dicom_series(array: np.ndarray, folder: str | Path, *, spacing: Sequence[float] = (1.0, 1.0, 1.0),
                       origin: Sequence[float] = (0.0, 0.0, 0.0),
                       direction: Sequence[float] = (1, 0, 0, 0, 1, 0, 0, 0, 1), modality: str = "CT",
                       series_uid: str = "1.2.826.0.1.3680043.2.1125.1.1") -> Path:
    """Write a ``(z, y, x)`` integer array as a DICOM series, one ``slice_NNNN.dcm`` per z, with its geometry.

    Meant for tests and small conversions: every slice carries the series UID, modality, position
    (0020|0032), orientation (0020|0037) and instance number; no patient data and no time stamps,
    so the same call writes the same bytes. Use an int16 array for CT in Hounsfield units.

    Examples
    --------
    >>> write_dicom_series(np.zeros((4, 8, 8), np.int16), "series", spacing=(0.7, 0.7, 2.5))
    PosixPath('series')
    >>> sorted(p.name for p in Path("series").iterdir())
    ['slice_0000.dcm', 'slice_0001.dcm', 'slice_0002.dcm', 'slice_0003.dcm']
    """
    import SimpleITK as sitk

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    image.SetSpacing([float(v) for v in spacing])
    image.SetOrigin([float(v) for v in origin])
    image.SetDirection([float(v) for v in direction])
    d = image.GetDirection()
    orientation = "\\".join(f"{v:.6f}" for v in (d[0], d[3], d[6], d[1], d[4], d[7]))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()  # use the UIDs set below, not fresh random ones
    for z in range(image.GetDepth()):
        piece = image[:, :, z]
        tags = {"0008|0060": modality, "0020|000e": series_uid, "0020|000d": series_uid + ".0",
                "0008|0018": f"{series_uid}.{z + 1}", "0020|0037": orientation,
                "0020|0032": "\\".join(f"{v:.6f}" for v in image.TransformIndexToPhysicalPoint((0, 0, z))),
                "0020|0013": str(z + 1), "0018|0050": f"{float(spacing[2]):.6f}",
                "0008|0008": "DERIVED\\SECONDARY", "0008|103e": "concepts-toolkit"}
        for tag, value in tags.items():
            piece.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice_{z:04d}.dcm"))
        writer.Execute(piece)
    return folder


# --------------------------------------------------------------------------------------------------
# Geometry checks (one place, so a later "skip" option can switch them)
# --------------------------------------------------------------------------------------------------

def check_mask_geometry(image: Volume, mask: Volume) -> None:
    """Raise unless a mask has its image's size, spacing, origin and direction (small float tolerance).

    Raises
    ------
    VolumeGeometryError
        Naming both files and what differs.

    Examples
    --------
    >>> image = read_volume(write_volume(np.zeros((4, 8, 8), np.int16), "img.nii.gz", spacing=(1, 1, 2)))
    >>> check_mask_geometry(image, read_volume(write_volume(np.ones((4, 8, 8), np.uint8), "mask.nii.gz",
    ...                                                     spacing=(1, 1, 2))))   # same grid: passes
    >>> coarse = write_volume(np.ones((4, 8, 8), np.uint8), "coarse.nii.gz", spacing=(1, 1, 3))
    >>> check_mask_geometry(image, read_volume(coarse))
    Traceback (most recent call last):
    ...
    concepts.volumes.VolumeGeometryError: Mask 'coarse.nii.gz' does not match its image 'img.nii.gz':
    spacing (1, 1, 3) vs (1, 1, 2) mm ...
    """
    if image.geometry is None or mask.geometry is None:
        return
    diff = mask.geometry.differences(image.geometry)
    if diff:
        raise VolumeGeometryError(
            f"Mask {str(mask.path)!r} does not match its image {str(image.path)!r}: " + "; ".join(diff)
            + " (mask vs image). A mask must lie on its image's voxel grid: resample it onto the image "
            "(e.g. SimpleITK.Resample(mask, image, sitk.Transform(), sitk.sitkNearestNeighbor)).")


def check_same_geometry(reference: tuple[Path, Geometry], volume: Volume, set_name: str) -> None:
    """Raise unless ``volume`` has the reference volume's size, spacing and direction (origin may differ).

    The default preprocessing resamples every volume to the model's input shape, so volumes of one
    set that differ in size or spacing would be shown to the model at different physical scales.

    Raises
    ------
    VolumeGeometryError
        Naming both files and what differs.
    """
    ref_path, ref = reference
    diff = volume.geometry.differences(ref, origin=False) if volume.geometry is not None else []
    if diff:
        raise VolumeGeometryError(
            f"Volumes of the set {set_name!r} have different geometries: {str(volume.path)!r} vs "
            f"{str(ref_path)!r}: " + "; ".join(diff) + ". The default preprocessing would show them to the "
            "model at different physical scales. Resample the volumes to one grid first, or pass a "
            "preprocess= that resamples to a fixed spacing.")


def model_spacing(geometry: Geometry, input_shape: tuple) -> tuple[float, ...]:
    """The voxel spacing (mm, x/y/z) a volume has after :func:`volume_preprocess` to ``input_shape``.

    Examples
    --------
    >>> g = Geometry((64, 64, 20), (0.5, 0.5, 2.0), (0, 0, 0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    >>> model_spacing(g, (10, 32, 32, 1))
    (1.0, 1.0, 4.0)
    """
    shape = check_volume_shape(input_shape)
    dhw = [s if s is not None else n for s, n in zip(shape[:3], reversed(geometry.size))]
    xyz = list(reversed(dhw))
    return tuple(float(sp * n / m) for sp, n, m in zip(geometry.spacing, geometry.size, xyz))


# --------------------------------------------------------------------------------------------------
# Manifests
# --------------------------------------------------------------------------------------------------

def header_geometry(path: str | Path) -> Geometry:
    """The geometry of a NIfTI file from its header only (no voxels read); a DICOM series is read.

    Examples
    --------
    >>> header_geometry("data3d/classes/layered/l000.nii.gz").spacing
    (1.0, 1.0, 2.0)
    """
    path = Path(path)
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return read_volume(path).geometry  # raises ImageReadError naming the file
    if reader.GetDimension() != 3 or reader.GetNumberOfComponents() != 1:
        return read_volume(path).geometry
    return Geometry(tuple(int(s) for s in reader.GetSize()), tuple(float(s) for s in reader.GetSpacing()),
                    tuple(float(o) for o in reader.GetOrigin()), tuple(float(d) for d in reader.GetDirection()))


def geometry_records(data_dir: str | Path, relative_paths: Sequence[str]) -> dict[str, dict]:
    """Geometry of every volume among a data folder's files, for its manifest.

    Keys are a NIfTI file's relative path or a DICOM series folder's relative path; values are
    :meth:`Geometry.to_dict` (size, spacing, origin, direction in ITK's x, y, z order), or
    ``{"error": ...}`` for a volume that cannot be read (the manifest still records its bytes).

    Examples
    --------
    >>> records = geometry_records("data3d", ["classes/layered/l000.nii.gz", "classes.txt"])
    >>> list(records), records["classes/layered/l000.nii.gz"]["spacing"]
    (['classes/layered/l000.nii.gz'], [1.0, 1.0, 2.0])
    """
    root = Path(data_dir)
    targets: dict[str, Path] = {}
    for rel in relative_paths:
        if is_volume_file(rel):
            targets[rel] = root / rel
        elif rel.lower().endswith(".dcm"):
            parent = Path(rel).parent.as_posix()
            targets.setdefault(parent, root / parent)
    records: dict[str, dict] = {}
    for rel, path in sorted(targets.items()):
        try:
            geometry = header_geometry(path) if path.is_file() else read_volume(path).geometry
            records[rel] = geometry.to_dict()
        except ImageReadError as exc:
            records[rel] = {"error": str(exc)}
    return records
