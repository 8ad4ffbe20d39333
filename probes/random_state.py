"""The one rule that turns a user's ``random_state`` into a :class:`numpy.random.Generator`.

Every seeded function in :mod:`probes` accepts the scikit-learn style seeds (``None``, an int, a
legacy :class:`numpy.random.RandomState`) as well as a numpy ``Generator``; this module is the only
place that says how. An int always gives the same stream as ``numpy.random.default_rng(int)``, so
results seeded with an int do not depend on which function draws them.

Examples
--------
>>> a = as_generator(0).standard_normal(2)
>>> bool(np.all(a == np.random.default_rng(0).standard_normal(2)))
True
"""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["as_generator"]


def as_generator(random_state: Any = None) -> np.random.Generator:
    """A ``numpy.random.Generator`` from ``None``, an int (or int sequence), a ``Generator`` or a ``RandomState``.

    Parameters
    ----------
    random_state : None, int, sequence of int, numpy.random.Generator or numpy.random.RandomState
        ``None`` draws fresh entropy; an int (or sequence) seeds ``default_rng``; a ``Generator`` is
        returned as it is (draws advance it); a ``RandomState`` seeds a new ``Generator`` from one of
        its draws, so legacy scikit-learn style objects keep working and stay reproducible.

    Returns
    -------
    numpy.random.Generator

    Examples
    --------
    >>> rng = np.random.default_rng(3)
    >>> as_generator(rng) is rng
    True
    >>> draw = lambda: int(as_generator(np.random.RandomState(0)).integers(10))
    >>> draw() == draw()
    True
    """
    if isinstance(random_state, np.random.RandomState):
        return np.random.default_rng(random_state.randint(0, 2**31 - 1))
    return np.random.default_rng(random_state)
