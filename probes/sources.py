"""The protocol through which the engine reads images: batches of model-ready arrays plus a content key.

The content key is a hex digest of everything that determines the arrays (image bytes and
preprocessing). The activation cache is keyed on it, never on a name, so a changed file or a
changed preprocessing can never reuse stale activations.
"""
from __future__ import annotations

import hashlib
from typing import Iterator, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class ArraySource(Protocol):
    """Anything the engine can read: a sized collection of model-ready images."""

    def __len__(self) -> int: ...

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        """Yield float32 arrays of shape ``(b, *input_shape)`` in a fixed order."""
        ...

    @property
    def content_key(self) -> str:
        """Hex digest of everything that determines the arrays."""
        ...


def hash_array(array: np.ndarray) -> str:
    """SHA-256 of an array's dtype, shape and bytes.

    Examples
    --------
    >>> hash_array(np.zeros(3)) == hash_array(np.zeros(3))
    True
    """
    array = np.ascontiguousarray(array)
    digest = hashlib.sha256()
    digest.update(str(array.dtype).encode())
    digest.update(str(array.shape).encode())
    digest.update(array.data)
    return digest.hexdigest()


#: Elements checked for NaN/inf at a time (bounds the temporary boolean array to 16 MiB).
_FINITE_CHECK_ELEMENTS = 1 << 24


def nonfinite_images(images: np.ndarray) -> np.ndarray:
    """Indices of the images (first axis) holding a NaN or infinite value, in order.

    One ``np.isfinite`` pass over blocks of images, so the only temporary is a boolean block of at
    most :data:`_FINITE_CHECK_ELEMENTS` elements; the array itself is never copied.

    Examples
    --------
    >>> x = np.zeros((4, 2, 2), np.float32); x[1, 0, 0] = np.nan; x[3, 1, 1] = -np.inf
    >>> nonfinite_images(x).tolist()
    [1, 3]
    """
    n = int(images.shape[0])
    per_image = max(1, int(np.prod(images.shape[1:], dtype=np.int64)))
    step = max(1, _FINITE_CHECK_ELEMENTS // per_image)
    bad = []
    for start in range(0, n, step):
        finite = np.isfinite(images[start:start + step]).reshape(min(step, n - start), -1).all(axis=1)
        if not finite.all():
            bad.append(start + np.flatnonzero(~finite))
    return np.concatenate(bad) if bad else np.zeros(0, np.int64)


class InMemoryImages:
    """An :class:`ArraySource` over an array that is already in memory.

    The array is checked once, here: it must hold at least one image and, unless it is an integer or
    boolean array (which cannot), no NaN or infinite value as float32, the dtype the model gets.
    Otherwise the error names the set and the images.

    Examples
    --------
    >>> src = InMemoryImages(np.zeros((4, 8, 8, 1), "float32"))
    >>> [b.shape for b in src.batches(3)]
    [(3, 8, 8, 1), (1, 8, 8, 1)]
    >>> x = np.zeros((3, 8, 8, 1), "float32"); x[2, 0, 0, 0] = np.nan
    >>> InMemoryImages(x, name="tumour")
    Traceback (most recent call last):
    ...
    probes.stats.NonFiniteValuesError: Image set 'tumour' (an in-memory array of 3 images) has NaN or ...
    """

    def __init__(self, images: np.ndarray, name: str = "images") -> None:
        raw = images if isinstance(images, np.ndarray) else np.asarray(images)
        self.images = np.asarray(raw, dtype=np.float32)
        self.name = name
        self._key: str | None = None
        self._check(raw.dtype)

    def _check(self, given: np.dtype) -> None:
        """Refuse an array without images or with NaN/inf (one cheap pass; nothing is copied)."""
        from probes.errors import InputShapeError, InsufficientDataError

        shape = self.images.shape
        if self.images.ndim == 0:
            raise InputShapeError(
                f"Image set {self.name!r} is a single number, not a stack of images: give an array of shape "
                "(n, *input_shape), one model-ready image per entry of its first axis.")
        if shape[0] == 0:
            rest = "".join(f", {s}" for s in shape[1:])
            raise InsufficientDataError(
                f"Image set {self.name!r} is an in-memory array with no images (shape {shape}); give at "
                f"least one: an array of shape (n{rest}) with n >= 1.")
        if given.kind in "biu":
            return  # integer and boolean arrays hold no NaN or infinity, and fit float32's range
        bad = nonfinite_images(self.images)
        if bad.size:
            from probes.stats import NonFiniteValuesError

            more = f" (the first 10 of {bad.size})" if bad.size > 10 else ""
            beyond = (" (values beyond float32's range, about ±3.4e38, are infinite for the model, which "
                      "gets float32)" if given.kind == "f" and given.itemsize > 4 else "")
            raise NonFiniteValuesError(
                f"Image set {self.name!r} (an in-memory array of {shape[0]} images) has NaN or infinite "
                f"values{beyond} in {bad.size} image(s), indices {bad[:10].tolist()}{more}. Replace those "
                "values (e.g. x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)) or drop those images "
                "(x = x[np.isfinite(x).reshape(len(x), -1).all(axis=1)]) before passing the array; "
                "on_error='skip' applies to image files only.")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        for start in range(0, len(self), batch_size):
            yield self.images[start:start + batch_size]

    @property
    def content_key(self) -> str:
        if self._key is None:
            self._key = hash_array(self.images)
        return self._key

    def __repr__(self) -> str:
        return f"InMemoryImages({self.name!r}, n={len(self)}, shape={self.images.shape[1:]})"
