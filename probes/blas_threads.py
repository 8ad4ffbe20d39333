"""Many small matrix products at once: one BLAS thread each, spread over the machine's cores.

A multithreaded BLAS call synchronises its threads at the end of every product. For one large product
that costs nothing; for a few hundred small ones (the tiles of a blockwise Gram matrix, a few values per
vector) it costs more than the arithmetic, and far more when another process holds a core: a BLAS thread
then spins until the scheduler brings its partner back. Running the small products side by side on
Python threads, each in a single-threaded BLAS, keeps every core busy with no barrier between products.

Examples
--------
>>> out = np.zeros((2, 2))
>>> def fill(i):
...     out[i] = np.ones(2) @ np.eye(2)
>>> run_products([(1.0, lambda: fill(0)), (1.0, lambda: fill(1))])
>>> out.tolist()
[[1.0, 1.0], [1.0, 1.0]]
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence

import numpy as np  # noqa: F401  (used by the examples)

__all__ = ["MAX_PRODUCTS", "SPARSE_FRACTION", "run_products", "usable_cores"]

#: Tile-by-tile products (a blockwise Gram matrix, a sparse weight pass) are used only when they do at
#: most this fraction of the work of the one dense product they replace: below it the saved arithmetic
#: outweighs the loss of efficiency of several smaller products.
SPARSE_FRACTION = 0.6
#: Most products per column block of a tile-by-tile plan; beyond it (a pool cut into many small tiles,
#: e.g. heavily overlapping random sets) small products waste more than they save.
MAX_PRODUCTS = 64

_controller = None
_controller_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None


def usable_cores() -> int:
    """Cores this process may run on.

    Returns
    -------
    int

    Examples
    --------
    >>> usable_cores() >= 1
    True
    """
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:   # not on Linux
        return max(1, os.cpu_count() or 1)


def _blas_controller():
    global _controller
    with _controller_lock:
        if _controller is None:
            from threadpoolctl import ThreadpoolController

            _controller = ThreadpoolController()
        return _controller


def _executor(n: int) -> ThreadPoolExecutor:
    global _pool
    with _controller_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="probes-blas")
        return _pool


def run_products(products: Sequence[tuple[float, Callable[[], None]]]) -> None:
    """Run independent products (each writing its own part of the output), largest first, each on one
    BLAS thread (split a large product into pieces to spread it over the cores).

    Parameters
    ----------
    products : sequence of (cost, callable)
        Each callable does one product and stores it; ``cost`` orders them (largest first, so the
        cores finish together).
    """
    n = usable_cores()
    # Always one BLAS thread per product, even for a lone product: a product's bits then depend only on
    # its operands, not on how many other products share the call (a multithreaded BLAS may round the
    # same product differently), so a result does not depend on what an earlier call left in a memory.
    with _blas_controller().limit(limits=1, user_api="blas"):
        if n == 1 or len(products) < 2:
            for _, product in products:
                product()
            return
        order = [product for _, product in sorted(products, key=lambda item: -item[0])]
        for future in [_executor(n).submit(product) for product in order]:
            future.result()
