"""Regions to measure: mask files found next to the images, read as boolean regions, checked first.

A mask folder mirrors the images folder (same relative path and file stem, any image extension);
nonzero pixels are the region. :func:`_prepare` reads one image and its mask and says why the
region cannot be measured (empty, too small, constant, non-finite) before any pyradiomics call.
"""
from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..errors import ImageReadError
from ..image_files import IMAGE_EXTENSIONS, is_image_file, read_image
from .channels import Channel, _to_gray
from .params import _label


def _mask_array(mask: np.ndarray) -> np.ndarray:
    """Boolean region of a mask image: nonzero pixels (any colour channel; alpha ignored)."""
    if mask.ndim == 3:
        channels = mask.shape[-1]
        if channels in (2, 4):  # drop alpha: an opaque alpha channel would make everything region
            mask = mask[..., :-1]
        return np.any(mask != 0, axis=-1)
    return mask != 0


def _region(mask: np.ndarray, label: int, *, volume: bool = False) -> np.ndarray | str:
    """A mask's region: its nonzero pixels or voxels (``label`` 1, the default), or, for another ``label``
    in the settings, those equal to it (a multi-label mask); a reason when there is none.

    Examples
    --------
    >>> mask = np.array([[0, 1], [2, 2]], np.uint8)
    >>> int(_region(mask, 1).sum()), int(_region(mask, 2).sum()), _region(mask, 3)
    (3, 2, 'the mask has no region of label 3 (settings: label=3; its labels: 1, 2)')
    """
    if label == 1:
        return np.asarray(mask) != 0 if volume else _mask_array(mask)
    mask = np.asarray(mask)
    if not volume and mask.ndim == 3:
        return (f"settings label={label} selects one value of a one-channel mask; this mask has "
                f"{mask.shape[-1]} channels (save it as a grey-level label image)")
    region = mask == label
    if not region.any():
        labels = np.unique(mask[mask != 0])
        shown = ", ".join(f"{v:g}" for v in labels[:10]) + (", ..." if len(labels) > 10 else "")
        return f"the mask has no region of label {label} (settings: label={label}; its labels: {shown or 'none'})"
    return region


@functools.lru_cache(maxsize=256)
def _mask_files_by_stem_cached(folder: str, mtime_ns: int) -> dict[str, list[Path]]:
    files: dict[str, list[Path]] = {}
    for p in sorted(Path(folder).iterdir()):
        if is_image_file(p) and p.is_file():
            files.setdefault(p.stem, []).append(p)
    return files


def _mask_files_by_stem(folder: Path) -> dict[str, list[Path]]:
    """The image files of a mask folder grouped by stem, listed once per folder (and again only when
    the folder changes) instead of once per image."""
    return _mask_files_by_stem_cached(str(folder), folder.stat().st_mtime_ns)


def _mask_tails(image: Path, images_root: Path | None) -> list[Path]:
    """Where a mask of ``image`` may lie, relative to the masks folder, most specific first.

    Inside ``images_root``: the image's path relative to it. Otherwise every trailing part of the
    image's path, longest first. Shared by the 2D masks here and the volume masks of
    :mod:`concepts.radiomics3d`.

    Examples
    --------
    >>> [str(t) for t in _mask_tails(Path("/d/classes/a/x.png"), Path("/d/classes"))]
    ['a/x.png']
    >>> [str(t) for t in _mask_tails(Path("/d/a/x.png"), None)]
    ['d/a/x.png', 'a/x.png', 'x.png']
    """
    if images_root is not None:
        try:
            return [image.relative_to(images_root)]
        except ValueError:
            pass
    parts = image.parts[1:] if image.is_absolute() else image.parts
    return [Path(*parts[i:]) for i in range(len(parts))]  # longest first


def _find_mask(image: Path, images_root: Path | None, masks_root: Path) -> tuple[Path | None, str]:
    """The mask of ``image`` under ``masks_root``, or None with the reason.

    With a folder of images the mask has the image's path relative to that folder; for a list of
    images the longest trailing part of the image's path that exists under ``masks_root`` is used.
    The extension may differ (x.png <-> x.tif); the image's own extension wins when both exist.
    """
    tails = _mask_tails(image, images_root)
    for tail in tails:
        folder = masks_root / tail.parent
        if not folder.is_dir():
            continue
        candidates = _mask_files_by_stem(folder).get(tail.stem, [])
        if not candidates:
            continue
        same = [p for p in candidates if p.suffix.lower() == image.suffix.lower()]
        if same:
            return same[0], ""
        if len(candidates) == 1:
            return candidates[0], ""
        return None, (f"several masks match: {', '.join(str(p) for p in candidates)}; keep one")
    expected = masks_root / tails[0].parent / tails[0].stem
    return None, (f"no mask found at {str(expected)}.* (a file named like the image, with any image "
                  f"extension {'/'.join(IMAGE_EXTENSIONS)})")


def _prepare(image_path: Path, mask_path: Path | None, channel: Channel,
             params: Mapping) -> tuple[np.ndarray | None, np.ndarray | None, str]:
    """Read image and mask and check the region; returns (image2d, mask01, failure reason)."""
    try:
        image = _to_gray(read_image(image_path), channel)
    except ImageReadError as exc:
        return None, None, str(exc)
    except Exception as exc:  # a user channel function, a wrong channel index
        return None, None, f"cannot convert the image to one channel: {exc}"
    if mask_path is None:
        region = np.ones(image.shape, dtype=bool)
    else:
        try:
            region = _region(read_image(mask_path), _label(params))
        except ImageReadError as exc:
            return None, None, f"cannot read the mask: {exc}"
        if isinstance(region, str):
            return None, None, region
        if region.shape != image.shape:
            return None, None, f"mask {str(mask_path)} has shape {region.shape}, the image {image.shape}"
    count = int(region.sum())
    if count == 0:
        return None, None, f"the mask is empty (no nonzero pixel in {str(mask_path)})"
    min_size = (params.get("setting") or {}).get("minimumROISize")
    if min_size is not None and count <= min_size:
        return None, None, (f"the region is too small: {count} pixels, minimumROISize={min_size} needs more "
                            f"than {min_size}")
    values = image[region]
    if not np.all(np.isfinite(values)):
        return None, None, "the image has NaN or infinite values inside the region"
    if values.min() == values.max():
        return None, None, (f"the region is constant (every pixel = {values.min():g}); texture features "
                            "are undefined")
    return image, (region.astype(np.uint8) * _label(params)), ""
