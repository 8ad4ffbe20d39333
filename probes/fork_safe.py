"""A lock that a forked child gets fresh: the per-process memories (listings, content keys) use it.

A child forked while another thread of the parent held a plain lock inherits it held, and its first
``with lock`` waits forever. :class:`ForkSafeLock` swaps in a new lock in the child.

Examples
--------
>>> lock = ForkSafeLock()
>>> with lock:
...     pass
"""
from __future__ import annotations

import os
import threading
from typing import Any

__all__ = ["ForkSafeLock"]


class ForkSafeLock:
    """A ``threading.Lock`` replaced by a new one in a forked child.

    Examples
    --------
    >>> lock = ForkSafeLock()
    >>> lock._after_fork(); lock._lock.locked()
    False
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._after_fork)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()

    def __enter__(self) -> bool:
        return self._lock.__enter__()

    def __exit__(self, *exc: Any) -> None:
        self._lock.__exit__(*exc)
