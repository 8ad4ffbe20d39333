"""Exceptions and warnings shared by the whole toolkit.

Every error a user can cause derives from :class:`ToolkitError`, whose message says what was
wrong and how to fix it. They also derive from the closest built-in (``ValueError``, ``KeyError``)
so that generic handlers keep working.
"""


class ToolkitError(Exception):
    """Base class of every error the toolkit raises on bad input.

    Examples
    --------
    >>> try:
    ...     raise InsufficientDataError("2 concept images; at least 3 are needed.")
    ... except ToolkitError as exc:
    ...     print(type(exc).__name__, isinstance(exc, ValueError), exc)
    InsufficientDataError True 2 concept images; at least 3 are needed.
    """


class UnknownLayerError(ToolkitError, KeyError):
    """A layer name or path that the model does not have.

    Examples
    --------
    Unlike a plain ``KeyError``, the message is shown without quotes:

    >>> print(UnknownLayerError("No layer 'conv9'; the model has conv1, conv2."))
    No layer 'conv9'; the model has conv1, conv2.
    """

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class NotDifferentiableError(ToolkitError, ValueError):
    """The target is not differentiable with respect to a requested layer."""


class TargetError(ToolkitError, ValueError):
    """The requested target (logit, log_prob, prob) cannot be computed for this model."""


class InsufficientDataError(ToolkitError, ValueError):
    """Too few examples for the requested split, random sets or cross-validation."""


class InputShapeError(ToolkitError, ValueError):
    """Data whose shape does not match what the model or probe expects."""


class CacheCorruptionWarning(UserWarning):
    """A cache file was damaged; it was removed and its content recomputed."""
