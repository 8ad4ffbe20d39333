"""Bad images found before any compute, and named: every one in one error, or skipped on request.

A hospital export holds whatever it holds: zero-byte files, files cut short by a copy, text saved
as ``.png``, float TIFFs with NaN. :func:`image_problem` says what is wrong with one file by a
cheap structural check (header decoded without the pixels, PNG/JPEG trailer present, TIFF strips
inside the file, float TIFFs decoded and checked for NaN), memoised per process on the file's
identity (path, size, mtime, inode, ctime), so a warm rerun costs one ``stat`` per file (a file
changed less than :data:`probes.identity.RACY_SECONDS` before is checked again on every call).
:func:`screen` checks every file of every set of a call at once: with ``on_error="raise"`` (the
default of the public API) one :class:`~concepts.errors.ImageReadError` lists every bad file with
its reason; with ``on_error="skip"`` they are left out with one warning, and the caller records
them in the provenance and the report.

Examples
--------
A good image and an empty file, in one concept set:

>>> good = "data/concepts/horizontal/h000.png"
>>> open("empty.png", "wb").close()
>>> try:
...     screen({"concept 'horizontal'": [good, "empty.png"]})
... except ImageReadError as exc:
...     print(exc)
1 image file(s) cannot be used:
  empty.png: empty file (0 bytes) (in concept 'horizontal')
Repair or remove them, or pass on_error='skip' to leave them out (they are then listed in the result's
provenance and the report).
>>> import warnings
>>> with warnings.catch_warnings(record=True) as caught:
...     warnings.simplefilter("always")
...     problems = screen({"concept 'horizontal'": [good, "empty.png"]}, on_error="skip")
>>> problems
{'empty.png': 'empty file (0 bytes)'}
>>> print(caught[0].message)
Leaving out 1 image file(s) that cannot be used (on_error='skip'):
  empty.png: empty file (0 bytes) (in concept 'horizontal')
"""
from __future__ import annotations

import functools
import os
import time
import warnings
import zlib
from pathlib import Path
from stat import S_ISDIR, S_ISREG
from typing import Iterable, Mapping

import numpy as np

from probes.identity import RACY_SECONDS

from .errors import ImageReadError

_MEMO: dict[tuple, str | None] = {}
_PNG_END = b"IEND\xaeB`\x82"
_TIFF = (".tif", ".tiff")


def _tiff_problem(path: Path, size: int) -> str | None:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        if not tif.pages:
            return "TIFF without any image"
        page = tif.pages[0]
        ends = [o + n for o, n in zip(page.dataoffsets or (), page.databytecounts or ())]
        if ends and max(ends) > size:
            return f"truncated: its image data ends at byte {max(ends)} but the file has {size} bytes"
        if np.dtype(page.dtype).kind == "f":
            # Only float images can hold NaN; decoding them here is the price of naming them.
            data = page.asarray()
            bad = int(np.count_nonzero(~np.isfinite(data)))
            if bad:
                return f"{bad} pixel value(s) are NaN or infinite"
    return None


#: Bytes read from the start of a PNG for :func:`_png_is_sound` (the header chunks of ordinary files).
_PNG_HEAD = 4096
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: (bit depth, colour type) pairs Pillow decodes (its ``PngImagePlugin._MODES``, the PNG standard's list).
_PNG_MODES = {(1, 0), (2, 0), (4, 0), (8, 0), (16, 0), (8, 2), (16, 2), (1, 3), (2, 3), (4, 3), (8, 3),
              (8, 4), (16, 4), (8, 6), (16, 6)}
#: Header chunks the fast check knows, with the fewest data bytes Pillow's reader accepts (tRNS: below).
_PNG_CHUNKS = {b"PLTE": 0, b"tRNS": 0, b"gAMA": 4, b"cHRM": 32, b"sRGB": 1, b"pHYs": 9}


def _png_is_sound(path: Path, size: int) -> bool:
    """True when a PNG passes every check Pillow makes on opening it, read from its first and last bytes.

    Signature; an IHDR first with a size, bit depth and colour type Pillow decodes and the standard filter
    method; every chunk before the image data of a kind listed in :data:`_PNG_CHUNKS`, long enough, and
    with a correct CRC; the end marker in the last 64 bytes. False means "not proven", never "bad": the
    caller then asks Pillow (:func:`_pil_problem`), which names what is wrong. This is ~6x faster than
    opening the file with Pillow, which matters for the first call in a process (a thousand random images).
    """
    from PIL import Image

    with open(path, "rb") as raw:
        head = raw.read(_PNG_HEAD)
        if size > len(head):
            raw.seek(max(0, size - 64))
            tail = raw.read()
        else:
            tail = head[-64:]
    if not head.startswith(_PNG_SIGNATURE) or _PNG_END not in tail:
        return False
    pos, colour = 8, None
    while pos + 8 <= len(head):
        length, kind = int.from_bytes(head[pos:pos + 4], "big"), head[pos + 4:pos + 8]
        if kind == b"IDAT":
            return colour is not None
        end = pos + 12 + length
        if end > len(head) or zlib.crc32(head[pos + 4:end - 4]) != int.from_bytes(head[end - 4:end], "big"):
            return False
        data = head[pos + 8:end - 4]
        if colour is None:       # the first chunk must be a usable IHDR
            if kind != b"IHDR" or length < 13:
                return False
            width, height = int.from_bytes(data[:4], "big"), int.from_bytes(data[4:8], "big")
            limit = Image.MAX_IMAGE_PIXELS
            if (width < 1 or height < 1 or (data[8], data[9]) not in _PNG_MODES or data[11]
                    or (limit is not None and width * height > limit)):
                return False
            colour = data[9]
        elif kind not in _PNG_CHUNKS or length < _PNG_CHUNKS[kind] or (
                kind == b"tRNS" and length < {0: 2, 2: 6}.get(colour, 0)):
            return False
        pos = end
    return False


def _pil_problem(path: Path, size: int) -> str | None:
    from PIL import Image

    if path.suffix.lower() == ".png" and _png_is_sound(path, size):
        return None

    with Image.open(path) as handle:  # parses the header only
        fmt = handle.format
        width, height = handle.size
    if width < 1 or height < 1:
        return f"image of size {width}x{height}"
    with open(path, "rb") as raw:
        raw.seek(max(0, size - 64))
        tail = raw.read()
    missing = ((fmt == "PNG" and _PNG_END not in tail and "no IEND chunk at its end")
               or (fmt == "JPEG" and b"\xff\xd9" not in tail and "no end-of-image marker"))
    if not missing:
        return None
    # Some writers append bytes after the end marker: only a failed full decode proves truncation.
    try:
        with Image.open(path) as handle:
            handle.load()
    except Exception as exc:
        return f"truncated {fmt} ({missing}; decoding fails: {exc})"
    return None


def _volume_problem(path: Path) -> str | None:
    """A NIfTI file's header must be readable and describe one 3D grey-level volume."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        return f"not a readable NIfTI volume ({str(exc).strip().splitlines()[-1][:120]})"
    if reader.GetDimension() != 3:
        return f"a {reader.GetDimension()}D image where a 3D volume is expected"
    if reader.GetNumberOfComponents() != 1:
        return f"{reader.GetNumberOfComponents()} components per voxel where one grey level is expected"
    from .volumes import nifti_problem

    # The header read sees neither a truncated file nor NaN/inf voxels (SimpleITK would read them as 0).
    return nifti_problem(path)


def image_problem(path: str | os.PathLike) -> str | None:
    """What makes ``path`` unusable as an image (missing, empty, truncated, undecodable, NaN), or None.

    Examples
    --------
    >>> image_problem("no/such/file.png")
    'does not exist'
    >>> image_problem("data/classes/striped/s000.png") is None
    True
    >>> _ = Path("cut.png").write_bytes(Path("data/classes/striped/s000.png").read_bytes()[:100])
    >>> image_problem("cut.png")
    'truncated PNG (no IEND chunk at its end; decoding fails: ...)'
    """
    text = _normal(os.fspath(path))  # the path as Path(path) spells it, without a Path per file of a pool
    try:
        stat = os.stat(text)
    except FileNotFoundError:
        return "does not exist"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    key = (text, stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_ctime_ns)
    if key in _MEMO:
        return _MEMO[key]
    from .volumes import is_dicom_series, is_volume_file

    path = Path(text)
    # The one stat above answers what Path.is_dir / is_file would ask the file system again.
    if S_ISDIR(stat.st_mode) and is_dicom_series(path):
        # A DICOM series is read (and each broken slice named) when the set loads it; its files are
        # many and reading them twice would double the cost of a cold run.
        problem: str | None = None
    elif not S_ISREG(stat.st_mode):
        problem = "not a regular file"
    elif stat.st_size == 0:
        problem = "empty file (0 bytes)"
    elif not os.access(path, os.R_OK):
        problem = "no permission to read it"
    else:
        try:
            if is_volume_file(path):
                problem = _volume_problem(path)
            else:
                problem = (_tiff_problem if path.suffix.lower() in _TIFF else _pil_problem)(path, stat.st_size)
        except Exception as exc:  # decoders raise many unrelated types
            problem = f"not a readable image ({type(exc).__name__}: {exc})"
    # Timestamps within one tick of a change cannot prove a later same-size rewrite: not memoised.
    if time.time() - max(stat.st_mtime, stat.st_ctime) >= RACY_SECONDS:
        _MEMO[key] = problem
    return problem


@functools.lru_cache(maxsize=2 ** 16)
def _normal(text: str) -> str:
    # Purely lexical (Path drops "." parts and a trailing slash), so memoising it cannot go stale.
    return os.fspath(Path(text))


def screen(sets: Mapping[str, Iterable[str | os.PathLike]], on_error: str = "raise") -> dict[str, str]:
    """Check every file of every named set; return ``{path: problem}`` of the bad ones.

    Parameters
    ----------
    sets : Mapping[str, Iterable[str | os.PathLike]]
        Set name (e.g. ``"concept 'striped'"``) -> its files.
    on_error : str, default='raise'
        ``"raise"``: one :class:`ImageReadError` listing every bad file (grouped by set);
        ``"skip"``: one warning, and the caller leaves the returned files out.

    Raises
    ------
    ImageReadError
        ``on_error="raise"`` and some file is bad.
    ValueError
        ``on_error`` is neither ``"raise"`` nor ``"skip"``.

    Examples
    --------
    >>> screen({"concept 'horizontal'": ["data/concepts/horizontal/h000.png"], "empty": []})
    {}
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}.")
    problems: dict[str, str] = {}
    where: dict[str, list[str]] = {}
    for name, files in sets.items():
        for file in files:
            text = os.fspath(file)
            if text in problems:
                where[text].append(name)
                continue
            problem = image_problem(text)
            if problem is not None:
                problems[text] = problem
                where[text] = [name]
    if not problems:
        return problems
    lines = [f"  {path}: {problems[path]} (in {', '.join(where[path])})" for path in sorted(problems)]
    if on_error == "raise":
        raise ImageReadError(
            f"{len(problems)} image file(s) cannot be used:\n" + "\n".join(lines)
            + "\nRepair or remove them, or pass on_error='skip' to leave them out (they are then listed in the "
              "result's provenance and the report).")
    warnings.warn(f"Leaving out {len(problems)} image file(s) that cannot be used (on_error='skip'):\n"
                  + "\n".join(lines), UserWarning, stacklevel=3)
    return problems


__all__ = ["image_problem", "screen"]
