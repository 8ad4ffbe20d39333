"""Preprocessing: an image as read from disk to a model input, and the identity of a preprocessing.

:func:`default_preprocess` is what :class:`concepts.sets.ImageSet` does when no ``preprocess`` is
given (scale by dtype, match channels with :func:`concepts.colour.rgb_to_grey`, resize);
:func:`preprocess_identity` names a preprocessing function in the activation cache's content keys.
Both are re-exported by :mod:`concepts.sets`, where they were defined before.
"""
from __future__ import annotations

import functools  # noqa: F401 - used by the doctest of preprocess_identity
from typing import Any, Callable

import numpy as np

from probes.identity import callable_identity

from .colour import rgb_to_grey
from .errors import InputShapeError

__all__ = ["DEFAULT_PREPROCESS_ID", "default_preprocess", "integer_input_preprocess", "preprocess_identity"]

#: Identity of :func:`default_preprocess` in content keys. Bump the version whenever its output changes,
#: so that cached activations computed with the old behaviour are not reused.
DEFAULT_PREPROCESS_ID = "default_preprocess/v1"

Preprocess = Callable[[np.ndarray, tuple], np.ndarray]
InputShape = tuple  # (H, W, C) or (H, W); H, W (and C) may be None


def _check_input_shape(input_shape: Any, *, batch_axis: bool = True) -> tuple:
    """Normalise a model input shape to a tuple of rank 2 or 3 (images) or 4 (volumes, ``(D, H, W, C)``)
    whose entries are positive ints or None.

    ``batch_axis=True`` (a shape a user typed) also accepts Keras's ``model.input_shape`` with its leading
    batch ``None``. A 4-entry shape with a leading ``None`` is then read as a batched 2D shape: a 3D model
    with a flexible input, ``(None, None, None, C)`` without its batch axis, reads the same. Shapes taken
    from the model by the toolkit have no batch axis and are checked with ``batch_axis=False``.
    """
    try:
        shape = tuple(None if d is None else int(d) for d in input_shape)
    except (TypeError, ValueError):
        raise InputShapeError(
            f"input_shape must be a tuple such as (224, 224, 3), got {input_shape!r}.") from None
    # Keras reports model.input_shape with a leading batch dimension; accept it for convenience.
    if (len(shape) == 5 or (len(shape) == 4 and batch_axis)) and shape[0] is None:
        shape = shape[1:]
    if len(shape) not in (2, 3, 4) or any(d is not None and d < 1 for d in shape):
        raise InputShapeError(
            f"input_shape {input_shape!r} is not an image input shape: expected (H, W, C) or (H, W), or "
            "(D, H, W, C) for volumes, without the batch dimension, e.g. model.input_shape[1:].")
    return shape


def _scale_to_unit(image: np.ndarray) -> np.ndarray:
    """Scale by dtype to [0, 1] (signed integers to [-1, 1]); floats are left as they are."""
    dtype = image.dtype
    if dtype == np.bool_:
        return image.astype(np.float32)
    if np.issubdtype(dtype, np.integer):
        return (image.astype(np.float64) / np.iinfo(dtype).max).astype(np.float32)
    if np.issubdtype(dtype, np.floating):
        return image.astype(np.float32)
    raise InputShapeError(f"Cannot preprocess an image of dtype {dtype}; expected integers, bool or floats.")


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of an (H, W, C) float32 image, channel by channel on Pillow 'F' images.

    Pillow's bilinear filter widens its support by the scale factor when shrinking, so shrinking
    is antialiased (no moiré from skipped pixels); it is deterministic and keeps float values.
    """
    from PIL import Image

    channels = [np.asarray(Image.fromarray(np.ascontiguousarray(image[..., c], dtype=np.float32))
                           .resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32)
                for c in range(image.shape[-1])]
    return np.stack(channels, axis=-1)


def default_preprocess(image: np.ndarray, input_shape: tuple) -> np.ndarray:
    """Turn an image as read from disk into a float32 model input of shape ``input_shape``.

    This is what :class:`ImageSet` does when no ``preprocess`` is given. The steps, in order:

    1. **Scale to [0, 1] by dtype**: ``uint8`` is divided by 255, ``uint16`` by 65535, other
       integer types by their dtype's maximum (so signed integers land in [-1, 1]), ``bool``
       becomes 0/1, and floating-point images are left unchanged (assumed already scaled).
       No per-image min-max normalisation is done: it would make a dark and a bright image equal.
    2. **Drop an alpha channel**: a 4-channel (RGBA) image loses its 4th channel, unless the
       model itself takes 4 channels (grey + alpha PNGs lose theirs when read, see
       :func:`concepts.image_files.read_image`).
    3. **Match the channels** to the model's ``C``: a grayscale image is repeated into ``C``
       channels; an RGB image becomes 1 channel by ITU-R BT.601 luminance
       ``0.299 R + 0.587 G + 0.114 B`` (:func:`concepts.colour.rgb_to_grey`, the same grey
       image the measures use). Any other mismatch (e.g. a 2-channel TIFF for a
       3-channel model) raises :class:`InputShapeError`. A model whose ``C`` is ``None`` keeps the
       image's channels (grayscale becomes 1 channel).
    4. **Resize** to ``(H, W)`` with bilinear interpolation, antialiased when shrinking (Pillow,
       per channel, in float32). The aspect ratio is not preserved (no cropping or padding).
       An ``H`` or ``W`` of ``None`` (a model that accepts any size) keeps the image's size.

    Models without a channel axis (``input_shape == (H, W)``) get an ``(H, W)`` array: RGB images
    are converted to luminance, grayscale images are used as they are.

    Parameters
    ----------
    image
        ``(H, W)`` or ``(H, W, C)`` array in its native dtype, as from
        :func:`concepts.image_files.read_image`.
    input_shape
        the model's input shape without the batch dimension, e.g. ``(224, 224, 3)``.

    Returns
    -------
    float32 array of shape ``input_shape`` (``None`` entries replaced by the image's sizes).

    Raises
    ------
    InputShapeError
        the image's channels cannot be matched to the model's.

    Examples
    --------
    >>> gray16 = np.full((32, 48), 65535, dtype=np.uint16)
    >>> out = default_preprocess(gray16, (16, 16, 3))
    >>> out.shape, out.dtype, float(out.max())
    ((16, 16, 3), dtype('float32'), 1.0)
    """
    shape = _check_input_shape(input_shape)
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim not in (2, 3):
        raise InputShapeError(f"Expected an image of shape (H, W) or (H, W, C), got shape {image.shape}.")
    image = _scale_to_unit(image)

    want_c = shape[2] if len(shape) == 3 else 1
    if image.ndim == 3 and image.shape[-1] == 4 and want_c != 4:
        image = image[..., :3]
    if image.ndim == 2:
        image = image[..., None]
        if want_c is not None and want_c != 1:
            image = np.repeat(image, want_c, axis=-1)
    elif want_c is not None and image.shape[-1] != want_c:
        if image.shape[-1] == 3 and want_c == 1:
            image = rgb_to_grey(image)[..., None]
        else:
            raise InputShapeError(
                f"Cannot turn a {image.shape[-1]}-channel image into the model's {want_c} channels: "
                "the default preprocessing converts only grayscale <-> RGB and drops alpha. "
                "Convert the images, or pass preprocess=... to ImageSet.")

    height = shape[0] if shape[0] is not None else image.shape[0]
    width = shape[1] if shape[1] is not None else image.shape[1]
    if (height, width) != image.shape[:2]:
        image = _resize(image, height, width)
    if len(shape) == 2:
        image = image[..., 0]
    return np.ascontiguousarray(image, dtype=np.float32)


def integer_input_preprocess(image: Any, input_shape: tuple, *, dtype: str = "uint8") -> np.ndarray:
    """The default preprocessing for a model whose image input has an integer dtype.

    A deployed model often takes ``uint8`` images and rescales them inside (``Rescaling(1 / 255)``).
    Keras casts whatever it is fed to the input's dtype, so the default's [0, 1] floats would all become
    0. This applies the default (:func:`default_preprocess`, or
    :func:`concepts.volume_input.volume_preprocess` for a volume), then maps [0, 1] onto the dtype's
    range (signed images, which the default puts in [-1, 1], onto ``[-max, max]``) and rounds: an 8-bit
    image read from disk reaches a ``uint8`` model with its own pixel values. Returned as float32 holding
    integers (the engine feeds float32; Keras's cast is then exact).

    :func:`concepts.score` and :func:`concepts.report` use it when no ``preprocess`` is given and the
    model's image input is an integer type.

    Parameters
    ----------
    image
        As read from disk (an array, or a :class:`concepts.volumes.Volume`).
    input_shape
        The model's input shape without the batch axis.
    dtype
        The model input's integer dtype.

    Returns
    -------
    numpy.ndarray
        float32 of shape ``input_shape``, integer values within the dtype's range.

    Examples
    --------
    >>> grey = np.array([[0, 128], [200, 255]], dtype=np.uint8)
    >>> integer_input_preprocess(grey, (2, 2, 1))[..., 0].tolist()
    [[0.0, 128.0], [200.0, 255.0]]
    """
    from .volumes import Volume

    if isinstance(image, Volume):
        from .volume_input import volume_preprocess
        scaled = volume_preprocess(image, input_shape)
    else:
        scaled = default_preprocess(image, input_shape)
    info = np.iinfo(np.dtype(dtype))
    values = np.rint(scaled.astype(np.float64) * info.max)
    return np.clip(values, info.min, info.max).astype(np.float32)


def preprocess_identity(preprocess: Callable | None) -> str:
    """A string that identifies a preprocessing function in content keys (the activation cache key).

    The default gives :data:`DEFAULT_PREPROCESS_ID`. A user function is identified by
    :func:`probes.identity.callable_identity` (module, qualified name, SHA-256 of its source code,
    default arguments and closure variables; a :func:`functools.partial` adds its bound
    arguments), the same rule as every other cache key that depends on user code.

    Parameters
    ----------
    preprocess : callable or None
        The preprocessing function of an :class:`ImageSet` (None: the default).

    Returns
    -------
    str

    Examples
    --------
    >>> preprocess_identity(None)
    'default_preprocess/v1'
    >>> preprocess_identity(functools.partial(default_preprocess)) != preprocess_identity(None)
    True
    """
    if preprocess is None or preprocess is default_preprocess:
        return DEFAULT_PREPROCESS_ID
    return callable_identity(preprocess)
