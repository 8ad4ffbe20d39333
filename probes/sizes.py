"""The minimum-size rule: how many images, sets or values each part of an analysis needs, checked in one place.

Every "too few" error of the core is an :class:`~probes.errors.InsufficientDataError` raised by
:func:`require_size`, against the numbers below.

Examples
--------
>>> require_size(MIN_RANDOM_SETS, MIN_RANDOM_SETS, "{n} random sets: at least {minimum} are needed.")
>>> min_concept_images(0.3)
7
"""
from __future__ import annotations

import numpy as np

from probes.errors import InsufficientDataError

__all__ = ["MIN_RANDOM_SETS", "MIN_MEASURE_EXAMPLES", "MIN_CONCEPT_IMAGES", "min_concept_images", "require_size"]

#: Random sets needed for a null distribution: a prediction test needs a null sample of at least 3
#: per-set means (2 for a standard deviation, one more for a degree of freedom to spare).
MIN_RANDOM_SETS = 3
#: Measured images needed for a regression concept vector: 5-fold cross-validation with two held-out
#: images per fold.
MIN_MEASURE_EXAMPLES = 10
#: Images a concept needs whatever ``test_size`` (more when the held-out share is small).
MIN_CONCEPT_IMAGES = 5


def min_concept_images(test_size: float) -> int:
    """Images a folder concept needs for a CAV: two held-out images per side, and never fewer than 5.

    Parameters
    ----------
    test_size : float
        Held-out share of each CAV task.

    Returns
    -------
    int

    Examples
    --------
    >>> min_concept_images(0.3), min_concept_images(0.1)
    (7, 20)
    """
    return max(MIN_CONCEPT_IMAGES, int(np.ceil(2 / max(test_size, 1e-9))))


def require_size(n: int, minimum: int, message: str) -> None:
    """Raise :class:`~probes.errors.InsufficientDataError` with ``message`` when ``n < minimum``.

    The one place a size rule is enforced, so that every "too few images / sets" error is the same
    exception type; ``message`` may use ``{n}`` and ``{minimum}``.

    Parameters
    ----------
    n : int
        The size found.
    minimum : int
        The size needed.
    message : str
        What is wrong and what to do about it.

    Examples
    --------
    >>> require_size(3, MIN_RANDOM_SETS, "{n} random sets: at least {minimum} are needed.")
    >>> try:
    ...     require_size(2, MIN_RANDOM_SETS, "{n} random sets: at least {minimum} are needed.")
    ... except InsufficientDataError as exc:
    ...     print(exc)
    2 random sets: at least 3 are needed.
    """
    if n < minimum:
        raise InsufficientDataError(message.format(n=n, minimum=minimum))
