"""User-facing errors about data: folders, images, classes and concept measures.

All derive from :class:`probes.errors.ToolkitError`; catch that to handle any toolkit error.

Examples
--------
>>> from concepts.layout import resolve_class
>>> try:
...     resolve_class("benign", {"striped": 0, "other": 1}, 2)
... except ToolkitError as exc:
...     print(type(exc).__name__, isinstance(exc, KeyError))
UnknownClassError True
"""
from probes.errors import (CacheCorruptionWarning, InputShapeError, InsufficientDataError,  # noqa: F401
                           NotDifferentiableError, TargetError, ToolkitError, UnknownLayerError)

__all__ = ["CacheCorruptionWarning", "ConceptFolderError", "ImageReadError", "InputShapeError",
           "InsufficientDataError", "MeasureError", "NotDifferentiableError", "TargetError", "ToolkitError",
           "UnknownClassError", "UnknownLayerError"]


class ConceptFolderError(ToolkitError, ValueError):
    """A concept, class or random folder that is missing, empty or holds no readable image."""


class ImageReadError(ToolkitError, ValueError):
    """An image file that cannot be read or decoded (the message names the file)."""


class UnknownClassError(ToolkitError, KeyError):
    """A class name or index that the model does not have."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class MeasureError(ToolkitError, ValueError):
    """A concept measure that cannot be computed or used (unknown feature, all values NaN, ...)."""
