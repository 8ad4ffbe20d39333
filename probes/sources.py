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


class InMemoryImages:
    """An :class:`ArraySource` over an array that is already in memory.

    Examples
    --------
    >>> src = InMemoryImages(np.zeros((4, 8, 8, 1), "float32"))
    >>> [b.shape for b in src.batches(3)]
    [(3, 8, 8, 1), (1, 8, 8, 1)]
    """

    def __init__(self, images: np.ndarray, name: str = "images") -> None:
        self.images = np.asarray(images, dtype=np.float32)
        self.name = name
        self._key: str | None = None

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
