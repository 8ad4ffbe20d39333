"""Reading image files (PNG, JPEG, TIFF; 8/16-bit; grayscale, RGB or RGBA) into numpy arrays.

Only reading and listing live here; conversion to a model's input shape is in :mod:`concepts.sets`.
Volumes (NIfTI files, DICOM series folders) are listed and read here too, through
:mod:`concepts.volumes`.
"""
from __future__ import annotations

import os
import stat
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from probes.fork_safe import ForkSafeLock
from probes.identity import RACY_SECONDS

from .errors import ImageReadError
from .volumes import is_dicom_series, is_volume_file, is_volume_path

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")

#: Most folder listings :func:`list_image_files` keeps per process (least recently used dropped first).
LISTINGS_KEPT = 256

# (folder, recursive) -> (every folder the listing read, with its stat before the read; the files)
_LISTINGS: OrderedDict[tuple[str, bool], tuple[tuple[tuple[str, tuple], ...], list[Path]]] = OrderedDict()
_LISTINGS_LOCK = ForkSafeLock()   # a forked child gets a fresh one


def is_image_file(path: str | Path) -> bool:
    """True when the file name has an image extension that the toolkit reads (NIfTI volumes included)."""
    return (Path(path).suffix.lower() in IMAGE_EXTENSIONS and not Path(path).name.startswith(".")) \
        or is_volume_file(path)


def list_image_files(folder: str | Path, recursive: bool = False) -> list[Path]:
    """The image files in ``folder``, sorted by name (so orders and hashes are reproducible).

    A listing is kept per process and given again while every folder it read is unchanged (one
    ``stat`` each: adding, removing or renaming a file changes its folder's times); listings with
    symlinks, or of a folder changed less than :data:`probes.identity.RACY_SECONDS` before, are
    never kept.

    Examples
    --------
    >>> [p.name for p in list_image_files("data/concepts/horizontal")[:2]]
    ['h000.png', 'h001.png']
    """
    folder = Path(folder)
    key = (os.fspath(folder), bool(recursive))
    with _LISTINGS_LOCK:
        kept = _LISTINGS.get(key)
        if kept is not None:
            _LISTINGS.move_to_end(key)
    if kept is not None and all(_stamp(path) == stamp for path, stamp in kept[0]):
        return list(kept[1])
    read: dict[str, tuple | None] = {}
    # scandir's entries carry their type, so a pool of thousands of files costs no stat per file. Same
    # files as ``folder.glob("**/*" or "*")`` filtered by type: subfolders are entered when recursive
    # (not through symlinks, as pathlib's "**"); a DICOM series is one folder of .dcm files, listed as one
    # entry like a NIfTI file.
    entries = list(_entries(folder, recursive, read))
    # A broken symlink with an image's name is listed, so that screening names it (not a silent skip).
    files = sorted(path for entry, path in entries
                   if ((entry.is_file() or (entry.is_symlink() and not entry.is_dir())) and _is_image_name(entry.name))
                   or (entry.is_dir() and _read_stamp(read, entry.path) and is_dicom_series(entry.path)))
    # Symlinks: their targets can change without any folder here changing, so such a listing is not kept.
    if not any(entry.is_symlink() for entry, _ in entries) and _settled(read):
        with _LISTINGS_LOCK:
            _LISTINGS[key] = (tuple(read.items()), files)
            _LISTINGS.move_to_end(key)
            while len(_LISTINGS) > LISTINGS_KEPT:
                _LISTINGS.popitem(last=False)
    return list(files)


def _stamp(path: str) -> tuple | None:
    """What changes when a folder's entries change (None: it cannot be read)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _read_stamp(read: dict[str, tuple | None], path: str) -> bool:
    """Record a folder's stamp before it is read (a second stamp that differs marks it changed); True."""
    stamp = _stamp(path)
    if path in read and read[path] != stamp:
        stamp = None  # changed while being listed
    read[path] = stamp
    return True


def _settled(read: dict[str, tuple | None]) -> bool:
    """Whether every folder read has a stamp that proves a later change (the "racy clean" rule of git)."""
    recent = (time.time() - RACY_SECONDS) * 1e9
    return all(stamp is not None and max(stamp[4], stamp[5]) < recent for stamp in read.values())


def _is_image_name(name: str) -> bool:
    # is_image_file on a bare name, without building a Path per entry of a large pool.
    if name.startswith("."):
        return False
    dot = name.rfind(".")
    return (0 < dot < len(name) - 1 and name[dot:].lower() in IMAGE_EXTENSIONS) or is_volume_file(name)


def _entries(folder: Path, recursive: bool, read: dict[str, tuple | None]) -> Iterator[tuple[os.DirEntry, Path]]:
    _read_stamp(read, os.fspath(folder))
    try:
        with os.scandir(folder) as it:
            entries = list(it)
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return  # as pathlib's glob: a missing or unreadable folder lists nothing
    for entry in entries:
        path = folder / entry.name
        yield entry, path
        if recursive and entry.is_dir(follow_symlinks=False):
            yield from _entries(path, True, read)


def read_image(path: str | Path) -> np.ndarray:
    """Read one image in its native dtype, as ``(H, W)`` or ``(H, W, C)``.

    TIFF files are read with tifffile (16-bit and multi-sample files keep their values);
    everything else with Pillow. Palette and 1-bit images become 8-bit grayscale or RGB; grey + alpha
    images (PNG mode "LA", a common grayscale export) become their grey channel, as RGBA images lose
    their alpha in :func:`concepts.sets.default_preprocess`.

    NIfTI files and DICOM series folders are read as a :class:`concepts.volumes.Volume` (a
    ``(z, y, x)`` array that carries its geometry), see :func:`concepts.volumes.read_volume`.

    Raises
    ------
    ImageReadError
        the file is missing, not an image, or damaged; the message names it.

    Examples
    --------
    >>> image = read_image("data/concepts/horizontal/h000.png")
    >>> image.shape, image.dtype
    ((16, 16), dtype('uint8'))
    """
    path = Path(path)
    if is_volume_path(path):
        from .volumes import read_volume

        return read_volume(path)
    if not path.is_file():
        raise ImageReadError(f"Image file {str(path)!r} does not exist.")
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            image = np.asarray(tifffile.imread(path))
            # A TIFF written channels-first (C, H, W) with a few channels: move channels last.
            if image.ndim == 3 and image.shape[0] in (1, 3, 4) and image.shape[-1] not in (1, 3, 4):
                image = np.moveaxis(image, 0, -1)
        else:
            from PIL import Image

            with Image.open(path) as handle:
                handle.load()
                if handle.mode in ("P", "PA"):
                    handle = handle.convert("RGBA" if "transparency" in handle.info else "RGB")
                elif handle.mode == "1":
                    handle = handle.convert("L")
                elif handle.mode in ("LA", "La"):
                    handle = handle.getchannel("L")
                elif handle.mode in ("I;16", "I;16B", "I;16L"):
                    return np.asarray(handle, dtype=np.uint16)
                elif handle.mode == "CMYK":
                    handle = handle.convert("RGB")
                image = np.asarray(handle)
    except ImageReadError:
        raise
    except Exception as exc:  # decoders raise many unrelated types
        raise ImageReadError(
            f"Cannot read image {str(path)!r}: {type(exc).__name__}: {exc}. "
            "Check that the file is a complete PNG, JPEG or TIFF, or remove it from the folder.") from None
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim not in (2, 3) or image.size == 0:
        raise ImageReadError(
            f"Image {str(path)!r} has shape {image.shape}; expected a 2D image (H, W) or (H, W, C). "
            "Volumes and stacks must be sliced into 2D images first.")
    return image


_PATH = type(Path())  # what Path(...) builds on this platform


def resolve_files(files: Iterable[Any]) -> dict[Any, Path]:
    """``{f: Path(f).resolve()}`` for every distinct file, with each folder resolved once.

    A resolve costs a system call per component of the path, and a random pool holds thousands of
    files in a few folders. Resolving is a left-to-right walk, so a file that is not itself a
    symlink resolves to its resolved folder joined with its name; a symlink (or an odd name) takes
    the full resolve. The union's order, and so every row of the CAV pool, is unchanged.

    Parameters
    ----------
    files : iterable of str or Path
        Image files.

    Returns
    -------
    dict
        Each distinct file to its resolved path.

    Examples
    --------
    >>> files = [Path("data/random/r0000.png"), Path("data/random/../random/r0001.png")]
    >>> all(path == Path(f).resolve() for f, path in resolve_files(files).items())
    True
    """
    folders: dict[Path, Path] = {}
    resolved: dict[Any, Path] = {}
    for f in files:
        if f in resolved:
            continue
        path = f if type(f) is _PATH else Path(f)  # an image set's files are Paths already: not rebuilt
        try:
            link = stat.S_ISLNK(os.lstat(path).st_mode)
        except OSError:
            link = False  # as a resolve does: a component that cannot be read is kept as it is
        if link or path.name in ("", ".", ".."):
            resolved[f] = path.resolve()
            continue
        folder = folders.get(path.parent)
        if folder is None:
            folder = folders[path.parent] = path.parent.resolve()
        resolved[f] = folder / path.name
    return resolved
