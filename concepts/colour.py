"""Colour to grey: the one conversion used by image sets (model inputs) and by measures (radiomics).

Both halves of the toolkit reduce an RGB image to one grey channel: :mod:`concepts.preprocess`
(image sets) when a single-channel model is given a colour image, :mod:`concepts.measures` when
pyradiomics measures a colour image with ``channel="gray"``. They use this function, so the same
image is the same grey image everywhere.

Examples
--------
>>> rgb_to_grey(np.array([[[255, 255, 255]]], dtype=np.uint8)).round(6).tolist()
[[255.0]]
"""
from __future__ import annotations

import numpy as np

__all__ = ["GREY_STANDARD", "GREY_WEIGHTS", "rgb_to_grey"]

#: Name of the grey standard (enters cache keys of values computed from grey images).
GREY_STANDARD = "bt601"

#: ITU-R BT.601 luma weights of R, G and B.
GREY_WEIGHTS = (0.299, 0.587, 0.114)


def rgb_to_grey(rgb: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma ``0.299 R + 0.587 G + 0.114 B`` of an ``(..., 3)`` or ``(..., 4)`` image.

    Why BT.601 and not BT.709 (``0.2125 R + 0.7154 G + 0.0721 B``, skimage's ``rgb2gray``):
    BT.601 is what Pillow's ``Image.convert("L")`` computes, and the toolkit's reader
    (:func:`concepts.image_files.read_image`) already uses that for palette images; it is also
    what most 8-bit medical-imaging and DICOM tools (and OpenCV's ``COLOR_RGB2GRAY``) use for
    stored, gamma-encoded pixel values. BT.709 weights are meant for linear-light HDTV
    primaries, which 8-bit image files are not. Values keep the input's scale (no rescaling).

    Parameters
    ----------
    rgb : numpy.ndarray
        Colour image with 3 (RGB) or 4 (RGBA; alpha is ignored) values on the last axis.
        Floating-point input keeps its precision (float32 stays float32); integers become float64.

    Returns
    -------
    numpy.ndarray
        The grey image, shape ``rgb.shape[:-1]``.

    Examples
    --------
    >>> rgb_to_grey(np.array([[1.0, 0.0, 0.0]], dtype=np.float32)).tolist()
    [0.29899999499320984]
    """
    rgb = np.asarray(rgb)
    if rgb.ndim < 1 or rgb.shape[-1] not in (3, 4):
        raise ValueError(f"rgb_to_grey needs 3 or 4 values on the last axis; got shape {rgb.shape}.")
    dtype = rgb.dtype if np.issubdtype(rgb.dtype, np.floating) else np.dtype(np.float64)
    r, g, b = (rgb[..., i].astype(dtype, copy=False) for i in range(3))
    w = [dtype.type(x) for x in GREY_WEIGHTS]
    # Written as a weighted sum (not a matrix product) so that float32 images are converted in
    # float32 exactly as the image sets always did.
    return (r * w[0] + g * w[1] + b * w[2]).astype(dtype, copy=False)
