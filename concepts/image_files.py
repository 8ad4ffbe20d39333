"""Reading image files (PNG, JPEG, TIFF; 8/16-bit; grayscale, RGB or RGBA) into numpy arrays.

Only reading and listing live here; conversion to a model's input shape is in :mod:`concepts.sets`.
Volumes (NIfTI files, DICOM series folders) are listed and read here too, through
:mod:`concepts.volumes`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import numpy as np

from .errors import ImageReadError
from .volumes import is_dicom_series, is_volume_file, is_volume_path

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def is_image_file(path: str | Path) -> bool:
    """True when the file name has an image extension that the toolkit reads (NIfTI volumes included)."""
    return (Path(path).suffix.lower() in IMAGE_EXTENSIONS and not Path(path).name.startswith(".")) \
        or is_volume_file(path)


def list_image_files(folder: str | Path, recursive: bool = False) -> list[Path]:
    """The image files in ``folder``, sorted by name (so orders and hashes are reproducible).

    Examples
    --------
    >>> [p.name for p in list_image_files("data/concepts/horizontal")[:2]]
    ['h000.png', 'h001.png']
    """
    folder = Path(folder)
    # scandir's entries carry their type, so a pool of thousands of files costs no stat per file. Same
    # files as ``folder.glob("**/*" or "*")`` filtered by type: subfolders are entered when recursive
    # (not through symlinks, as pathlib's "**"); a DICOM series is one folder of .dcm files, listed as one
    # entry like a NIfTI file.
    return sorted(path for entry, path in _entries(folder, recursive)
                  if (entry.is_file() and is_image_file(entry.name))
                  or (entry.is_dir() and is_dicom_series(entry.path)))


def _entries(folder: Path, recursive: bool) -> Iterator[tuple[os.DirEntry, Path]]:
    try:
        with os.scandir(folder) as it:
            entries = list(it)
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return  # as pathlib's glob: a missing or unreadable folder lists nothing
    for entry in entries:
        path = folder / entry.name
        yield entry, path
        if recursive and entry.is_dir(follow_symlinks=False):
            yield from _entries(path, True)


def read_image(path: str | Path) -> np.ndarray:
    """Read one image in its native dtype, as ``(H, W)`` or ``(H, W, C)``.

    TIFF files are read with tifffile (16-bit and multi-sample files keep their values);
    everything else with Pillow. Palette and 1-bit images become 8-bit grayscale or RGB.

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
