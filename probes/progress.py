"""Progress bars that work in terminals and notebooks, and can be switched off."""
from __future__ import annotations

from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")


def progress(iterable: Iterable[T], *, enabled: bool = True, desc: str | None = None,
             total: int | None = None, unit: str = "it") -> Iterator[T] | Iterable[T]:
    """Wrap ``iterable`` in a notebook-aware tqdm bar, or return it unchanged when disabled.

    Examples
    --------
    >>> for batch in progress(range(3), enabled=False):
    ...     pass
    """
    if not enabled:
        return iterable
    try:
        import ipywidgets  # noqa: F401  (tqdm's notebook bars need it; without it they only warn)
        from tqdm.auto import tqdm
    except ImportError:
        from tqdm.std import tqdm

    return tqdm(iterable, desc=desc, total=total, unit=unit, leave=False, dynamic_ncols=True)
