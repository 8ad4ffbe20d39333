"""The memory budget of an analysis: parsing ``memory_budget``, what is left of it, and spill files.

Arrays that grow with the data (class examples' activations and gradients, large random pools) are
held in memory while they fit the budget and go batch by batch, or to memory-mapped files, beyond it.

Examples
--------
>>> budget = Budget("1KB")
>>> budget.take(600), budget.take(600)
(True, False)
"""
from __future__ import annotations

import os
import tempfile
from typing import Callable

import numpy as np

__all__ = ["parse_bytes", "physical_memory", "memmap_allocator", "Budget"]


def physical_memory() -> int:
    """The machine's physical memory in bytes (0 where the system does not say).

    Examples
    --------
    >>> physical_memory() >= 0
    True
    """
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return 0


def parse_bytes(value: int | float | str | None) -> float:
    """A memory size in bytes from ``2_000_000``, ``"2GB"``, ``"512 MiB"`` or ``None`` (no limit: inf).

    Parameters
    ----------
    value : int, float, str or None

    Returns
    -------
    float

    Examples
    --------
    >>> parse_bytes("2GB"), parse_bytes("1.5 KiB"), parse_bytes(None)
    (2000000000.0, 1536.0, inf)
    """
    if value is None:
        return float("inf")
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"memory_budget must be non-negative, got {value!r}.")
        return float(value)
    from probes.byte_sizes import size_in_bytes  # the toolkit's one size parser

    size = size_in_bytes(str(value))
    if size is None:
        raise ValueError(f"memory_budget must be a number of bytes or a size like '2GB' or '512MiB', not {value!r}.")
    return size


def memmap_allocator(directory: str | None = None) -> Callable[[str, str, tuple], np.ndarray]:
    """``allocate(kind, path, shape)`` for :meth:`probes.engine.Engine.run` backed by memory-mapped files.

    Each array gets a float32 file in ``directory`` (default: the system temporary directory), unlinked at
    once: the mapping keeps it alive exactly as long as the array, and nothing is left behind if the
    process dies.

    Parameters
    ----------
    directory : str, optional

    Returns
    -------
    callable

    Examples
    --------
    >>> a = memmap_allocator()("act", "layer", (2, 3)); a[:] = 1.0
    >>> float(a.sum())
    6.0
    """
    def allocate(kind: str, path: str, shape: tuple) -> np.ndarray:
        if int(np.prod(shape)) == 0:
            return np.empty(shape, np.float32)
        handle, name = tempfile.mkstemp(prefix="concepts-spill-", suffix=".f32", dir=directory)
        try:
            return np.memmap(name, dtype=np.float32, mode="w+", shape=shape)
        finally:
            os.close(handle)
            os.unlink(name)

    return allocate


class Budget:
    """What is left of ``memory_budget`` for arrays that grow with the data.

    Examples
    --------
    >>> Budget(None).take(10**15)
    True
    """

    def __init__(self, budget: int | str | None) -> None:
        self.left = parse_bytes(budget)

    def take(self, nbytes: float) -> bool:
        """Reserve ``nbytes`` if they fit in what is left; False (nothing reserved) otherwise."""
        if nbytes <= self.left:
            self.left -= nbytes
            return True
        return False
