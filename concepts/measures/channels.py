"""Colour images to the one grey-level channel pyradiomics measures: grey, R/G/B, an index, H&E, a function.

``channel="gray"`` is :func:`concepts.colour.rgb_to_grey` (ITU-R BT.601 luma), the same grey image
that :mod:`concepts.sets` gives a single-channel model. ``"hematoxylin"`` is skimage's colour
deconvolution rescaled with the fixed :data:`HEMATOXYLIN_RANGE`. :func:`_channel_key` is the
channel's part of the cache key (a user function is identified by
:func:`probes.identity.callable_identity`).
"""
from __future__ import annotations

from typing import Callable, Union

import numpy as np

from probes.identity import callable_identity

from ..colour import GREY_STANDARD, rgb_to_grey
from ..errors import MeasureError

__all__ = ["HEMATOXYLIN_RANGE"]

Channel = Union[str, int, Callable[[np.ndarray], np.ndarray]]


#: Fixed bounds of ``channel="hematoxylin"``: skimage's ``rgb2hed`` channel 0 is mapped linearly
#: from this range onto 0..255 and clipped. The upper bound is the hematoxylin value of the darkest
#: 8-bit grey that is not black, (1, 1, 1): ``log(255) / log(1e6) * sum(hed_from_rgb[:, 0])``.
#: Typical H&E nuclei (about 0.1-0.2) land at 50-110; only pixels with a channel at exactly 0
#: (pure black, saturated colours) exceed it and are clipped to 255. Fixed bounds keep values
#: comparable across images (a per-image rescaling would not).
HEMATOXYLIN_RANGE: tuple[float, float] = (0.0, 0.48538604)
_NAMED_CHANNELS = {"gray": None, "grey": None, "r": 0, "g": 1, "b": 2, "hematoxylin": None}


def _check_channel(channel: Channel) -> None:
    if callable(channel):
        return
    if isinstance(channel, (bool, np.bool_)) or not isinstance(channel, (str, int, np.integer)):
        raise MeasureError(f"channel must be 'gray', 'r', 'g', 'b', 'hematoxylin', a channel index or a "
                           f"function, not {channel!r}.")
    if isinstance(channel, str) and channel.lower() not in _NAMED_CHANNELS:
        raise MeasureError(f"Unknown channel {channel!r}; use 'gray', 'r', 'g', 'b', 'hematoxylin', a "
                           "channel index or a function (RGB array -> 2D array).")
    if isinstance(channel, (int, np.integer)) and channel < 0:
        raise MeasureError(f"channel index must be >= 0, got {channel}.")


def _channel_label(channel: Channel) -> str:
    """A readable name of the channel (table.attrs, descriptions)."""
    if callable(channel):
        return f"function {getattr(channel, '__qualname__', None) or type(channel).__name__}"
    if isinstance(channel, str):
        return "gray" if channel.lower() == "grey" else channel.lower()
    return f"channel {int(channel)}"


def _channel_key(channel: Channel) -> str:
    """The channel's part of the cache key: exact, including the version of what converts it."""
    if callable(channel):
        return "callable:" + callable_identity(channel)
    label = _channel_label(channel)
    if label == "hematoxylin":
        import skimage

        return f"hematoxylin:{HEMATOXYLIN_RANGE}:skimage-{skimage.__version__}"
    if label == "gray":
        # Names the grey standard: values cached by the earlier BT.709 conversion are not reused.
        return f"gray:{GREY_STANDARD}"
    return label


def _to_gray(image: np.ndarray, channel: Channel) -> np.ndarray:
    """The 2D float array pyradiomics measures, from an image as :func:`read_image` returns it.

    Grayscale images are used as they are (16-bit images keep their 0..65535 values); colour
    images are reduced to one channel as ``channel`` says (``"gray"``: BT.601 luma, see
    :func:`concepts.colour.rgb_to_grey`).
    """
    if image.ndim == 2:
        return image.astype(np.float64)
    n_channels = image.shape[-1]
    if callable(channel):
        out = np.asarray(channel(image))
        if out.ndim == 3 and out.shape[-1] == 1:
            out = out[..., 0]
        if out.shape != image.shape[:2]:
            raise MeasureError(f"the channel function returned shape {out.shape}; expected {image.shape[:2]}")
        return out.astype(np.float64)
    label = _channel_label(channel)
    if isinstance(channel, (int, np.integer)):
        if channel >= n_channels:
            raise MeasureError(f"channel {int(channel)} requested but the image has {n_channels} channels")
        return image[..., int(channel)].astype(np.float64)
    if n_channels == 2:  # grayscale + alpha: the grey values are the image
        if label in ("gray", "hematoxylin"):
            return image[..., 0].astype(np.float64)
        raise MeasureError(f"channel {label!r} requested but the image is grayscale with alpha")
    if n_channels not in (3, 4):
        raise MeasureError(f"the image has {n_channels} channels; pass channel=<index> to choose one")
    rgb = image[..., :3]
    if label == "gray":
        return rgb_to_grey(rgb.astype(np.float64))
    if label == "hematoxylin":
        from skimage.color import rgb2hed

        low, high = HEMATOXYLIN_RANGE
        h = rgb2hed(rgb)[..., 0]
        return np.clip((h - low) / (high - low), 0.0, 1.0) * 255.0
    return rgb[..., _NAMED_CHANNELS[label]].astype(np.float64)
