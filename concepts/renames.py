"""Renamed keywords keep working for a release, with a warning that names the new keyword.

One decorator, :func:`renamed`, is used wherever a public keyword was renamed (``alpha`` for a
significance level became ``significance``; ``alpha`` for an overlay's opacity became
``opacity``), so notebooks written against the old names still run and say what to change.

Examples
--------
>>> @renamed(alpha="significance")
... def level(*, significance: float = 0.05) -> float:
...     return significance
>>> import warnings
>>> with warnings.catch_warnings(record=True) as caught:
...     warnings.simplefilter("always")
...     level(alpha=0.01)
0.01
>>> print(caught[0].message)  # doctest: +ELLIPSIS
level(): the keyword alpha= is now called significance=; ...
"""
from __future__ import annotations

import functools
import warnings
from typing import Any, Callable, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

__all__ = ["renamed"]


def renamed(**old_to_new: str) -> Callable[[F], F]:
    """Accept each old keyword as its new name, with a :class:`FutureWarning` naming the new one.

    Parameters
    ----------
    **old_to_new : str
        ``old_name="new_name"`` for every renamed keyword of the decorated function.

    Returns
    -------
    callable
        A decorator; the decorated function keeps its signature (``inspect.signature`` shows the
        new names only), and giving both the old and the new name is a ``TypeError``.

    Examples
    --------
    >>> @renamed(alpha="opacity")
    ... def overlay(*, opacity: float = 0.5) -> float:
    ...     return opacity
    >>> overlay(opacity=0.3)
    0.3
    """
    def decorate(function: F) -> F:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            for old, new in old_to_new.items():
                if old not in kwargs:
                    continue
                if new in kwargs:
                    raise TypeError(f"{function.__name__}() got both {old}= and {new}=; give only {new}= "
                                    f"({old}= is its former name).")
                warnings.warn(f"{function.__name__}(): the keyword {old}= is now called {new}=; {old}= will stop "
                              f"working in a future release.", FutureWarning, stacklevel=2)
                kwargs[new] = kwargs.pop(old)
            return function(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate
