"""Turning a CT or MRI volume into a 3D model's input: intensity scaling by modality and resampling.

:func:`volume_preprocess` is what :class:`concepts.sets.ImageSet` applies to volumes by default: CT
is windowed in Hounsfield units (:data:`CT_WINDOW`), MRI is scaled between intensity percentiles
(:data:`MRI_PERCENTILES`), then the volume is resampled (antialiased when shrinking) to the model's
``(D, H, W)`` and repeated over its channels. Reading volumes and their geometry is
:mod:`concepts.volumes`.

Examples
--------
>>> vol = np.linspace(0, 1, 8 * 8 * 8).reshape(8, 8, 8)
>>> volume_preprocess(vol, (4, 4, 4, 1), modality="mri").shape
(4, 4, 4, 1)
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .errors import InputShapeError

__all__ = ["CT_WINDOW", "DEFAULT_VOLUME_PREPROCESS_ID", "MRI_PERCENTILES", "resample_to_shape", "resolve_modality", "volume_preprocess"]

#: Default Hounsfield window of CT volumes: air (-1000 HU) to dense soft tissue / contrast (400 HU).
CT_WINDOW: tuple[float, float] = (-1000.0, 400.0)
#: Default percentiles of MRI intensity normalisation.
MRI_PERCENTILES: tuple[float, float] = (1.0, 99.0)
#: Identity of :func:`volume_preprocess` with its defaults in content keys; bump when its output changes.
DEFAULT_VOLUME_PREPROCESS_ID = "volume_preprocess/v1"


def check_volume_shape(input_shape: Any) -> tuple:
    """A 3D model's input shape as ``(D, H, W, C)`` (batch axis dropped); a clear error for a 2D model.

    Examples
    --------
    >>> check_volume_shape((None, 32, 32, 16, 1))
    (32, 32, 16, 1)
    """
    shape = tuple(None if d is None else int(d) for d in input_shape)
    if len(shape) == 5 and shape[0] is None:
        shape = shape[1:]
    if len(shape) != 4:
        raise InputShapeError(
            f"A volume needs a 3D model input (D, H, W, C); got input_shape {tuple(input_shape)}. A 2D model "
            "cannot read NIfTI/DICOM volumes: slice them into 2D images first.")
    return shape


def resample_to_shape(volume: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Linear resampling of a ``(z, y, x)`` array to ``shape``, antialiased when shrinking.

    Voxel edges map to voxel edges (the whole field of view is kept), as when resizing a 2D image;
    an axis that shrinks by a factor ``f`` is first smoothed with a Gaussian of sigma ``(f - 1) / 2``
    voxels so that thin structures do not alias. The new spacing is ``spacing * old / new`` per axis.

    Examples
    --------
    >>> resample_to_shape(np.ones((8, 8, 8), np.float32), (4, 4, 4)).shape
    (4, 4, 4)
    """
    from scipy import ndimage

    data = np.asarray(volume, dtype=np.float32)
    target = tuple(int(s) for s in shape)
    if data.shape == target:
        return data
    factors = [t / s for t, s in zip(target, data.shape)]
    sigma = [max(0.0, (1.0 / f - 1.0) / 2.0) for f in factors]
    if any(s > 0 for s in sigma):
        data = ndimage.gaussian_filter(data, sigma=sigma, mode="nearest")
    out = ndimage.zoom(data, factors, order=1, mode="nearest", grid_mode=True)
    return np.asarray(out, dtype=np.float32)


def _intensity(volume: np.ndarray, modality: str, window: Sequence[float],
               percentiles: Sequence[float]) -> np.ndarray:
    data = np.asarray(volume, dtype=np.float32)
    if modality in ("ct", "fixed"):
        low, high = float(window[0]), float(window[1])
    else:
        low, high = (float(v) for v in np.percentile(data, [percentiles[0], percentiles[1]]))
    if high <= low:  # a constant volume (or window): every voxel maps to 0
        return np.zeros_like(data)
    return np.clip((data - low) / (high - low), 0.0, 1.0).astype(np.float32)


def resolve_modality(volume: np.ndarray, modality: str = "auto") -> str:
    """``"ct"``, ``"mri"`` or ``"fixed"`` for ``modality`` ``"auto"``, ``"ct"``, ``"mri"`` or ``"fixed"``
    (see :func:`volume_preprocess`).

    Examples
    --------
    >>> resolve_modality(np.full((2, 2, 2), -1000.0)), resolve_modality(np.zeros((2, 2, 2)))
    ('ct', 'mri')
    """
    wanted = str(modality).lower()
    if wanted in ("ct", "mri", "fixed"):
        return wanted
    if wanted == "mr":
        return "mri"
    if wanted != "auto":
        raise ValueError(f"modality must be 'auto', 'ct', 'mri' or 'fixed', got {modality!r}.")
    tag = getattr(volume, "modality", None)
    if tag:
        return "ct" if tag.upper() == "CT" else "mri"
    # Fat is about -100 HU and air -1000 HU; magnitude MRI is never below 0.
    return "ct" if float(np.min(volume)) <= -100 else "mri"


def volume_preprocess(volume: np.ndarray, input_shape: tuple, *, modality: str = "auto",
                      window: Sequence[float] = CT_WINDOW,
                      percentiles: Sequence[float] = MRI_PERCENTILES) -> np.ndarray:
    """Turn a volume as read from disk into a float32 input ``(D, H, W, C)`` of a 3D model.

    This is what :class:`concepts.sets.ImageSet` does with a NIfTI file or DICOM series when no
    ``preprocess`` is given. The steps, in order:

    1. **Intensities to [0, 1]**, by modality:

       * CT: the Hounsfield window ``window`` (default ``(-1000, 400)``) maps linearly to [0, 1],
         values outside are clipped; the same for every volume, so HU keep their meaning.
       * MRI: the volume's own ``percentiles`` (default 1st and 99th) map to 0 and 1, clipped
         (MRI intensities have no absolute unit). A constant volume becomes 0.
       * ``modality="fixed"``: ``window`` maps to [0, 1] whatever the modality, for volumes that
         already share one intensity scale (crops of one scan, 8-bit exports), where per-volume
         percentiles would erase real differences in brightness between them.
       * ``modality="auto"`` (default): the DICOM ``Modality`` tag decides when there is one
         (``CT`` is CT, anything else MRI); for NIfTI, a volume with values at or below -100 (fat and
         air in HU; magnitude MRI is never negative) is CT, otherwise MRI. The rule is applied per
         volume, so pass ``modality="ct"`` when CT crops may hold neither fat nor air.

    2. **Resample** to the model's ``(D, H, W)`` with :func:`resample_to_shape` (linear, antialiased
       when shrinking; the whole field of view is kept and the aspect ratio is not). The voxel
       spacing the model sees is ``spacing * size / (W, H, D)`` (x, y, z); volumes of one set must
       therefore share size and spacing (checked by ImageSet). A ``None`` axis keeps the volume's size.
    3. **Channels**: the voxels are repeated into the model's ``C`` channels (1 when ``C`` is None).

    Replace it like the 2D default, e.g. a soft-tissue window:
    ``ImageSet(..., preprocess=functools.partial(volume_preprocess, modality="ct", window=(-160, 240)))``.

    Parameters
    ----------
    volume : np.ndarray
        A :class:`Volume` (or any ``(z, y, x)`` array) as :func:`read_volume` returns it.
    input_shape : tuple
        The model input without the batch dimension, ``(D, H, W, C)``.
    modality : str, default='auto'
        ``"auto"``, ``"ct"``, ``"mri"`` or ``"fixed"``.
    window : Sequence[float], default=CT_WINDOW
        The CT Hounsfield window (low, high), or the fixed intensity range.
    percentiles : Sequence[float], default=MRI_PERCENTILES
        The MRI normalisation percentiles (low, high).

    Returns
    -------
    np.ndarray
        Float32 array of shape ``input_shape`` (``None`` entries replaced by the volume's sizes).

    Raises
    ------
    InputShapeError
        The model input is not 3D, or the array is not a 3D volume.

    Examples
    --------
    >>> ct = np.full((10, 12, 12), -1000, np.int16); ct[2:8, 3:9, 3:9] = 400
    >>> x = volume_preprocess(ct, (10, 12, 12, 1))   # same size: intensities only
    >>> x.shape, float(x.min()), float(x.max())
    ((10, 12, 12, 1), 0.0, 1.0)
    """
    shape = check_volume_shape(input_shape)
    data = np.asarray(volume)
    if data.ndim != 3:
        raise InputShapeError(f"Expected a 3D volume (z, y, x), got an array of shape {data.shape}.")
    if float(window[1]) <= float(window[0]):
        raise ValueError(f"window must be (low, high) with low < high, got {tuple(window)}.")
    if not 0 <= float(percentiles[0]) < float(percentiles[1]) <= 100:
        raise ValueError(f"percentiles must be (low, high) with 0 <= low < high <= 100, got {tuple(percentiles)}.")
    kind = resolve_modality(volume, modality)
    scaled = _intensity(data, kind, window, percentiles)
    target = tuple(s if s is not None else n for s, n in zip(shape[:3], data.shape))
    resampled = resample_to_shape(scaled, target)
    channels = shape[3] if shape[3] is not None else 1
    return np.ascontiguousarray(np.repeat(resampled[..., None], channels, axis=-1), dtype=np.float32)
