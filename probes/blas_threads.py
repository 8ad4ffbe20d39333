"""Many small matrix products at once: one BLAS thread each, spread over the machine's cores.

A multithreaded BLAS call synchronises its threads at the end of every product. For one large product
that costs nothing; for a few hundred small ones (the tiles of a blockwise Gram matrix, a few values per
vector) it costs more than the arithmetic, and far more when another process holds a core: a BLAS thread
then spins until the scheduler brings its partner back. Running the small products side by side on
Python threads, each in a single-threaded BLAS, keeps every core busy with no barrier between products.

The same holds one level up: :func:`map_side_by_side` runs independent pieces of work (the concept vectors of
several layers) on a few threads, so that one's single-threaded parts (copies, centring, small solves) and
another's products share the cores. Everything inside runs on single-threaded BLAS
(:func:`single_threaded_blas`), so a result has the same bits however many pieces ran at once, and on any
number of cores.

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

import contextlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterator, Sequence

import numpy as np  # noqa: F401  (used by the examples)

__all__ = ["MAX_PRODUCTS", "PIECE_ROWS", "SPARSE_FRACTION", "map_side_by_side", "pieces", "run_products",
           "single_threaded_blas", "usable_cores"]

#: Tile-by-tile products (a blockwise Gram matrix, a sparse weight pass) are used only when they do at
#: most this fraction of the work of the one dense product they replace: below it the saved arithmetic
#: outweighs the loss of efficiency of several smaller products.
SPARSE_FRACTION = 0.6
#: Most products per column block of a tile-by-tile plan; beyond it (a pool cut into many small tiles,
#: e.g. heavily overlapping random sets) small products waste more than they save.
MAX_PRODUCTS = 64
#: Rows of the taller operand per piece of a large product cut up for :func:`run_products`: a fixed size, so
#: that a product is cut the same way (and rounds the same) on every machine and in every call.
PIECE_ROWS = 256

_controller = None
_controller_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
# single_threaded_blas: how many blocks are open now, and how to restore each BLAS's own setting.
_single_lock = threading.Lock()
_single_users = 0
_single_restore: list | None = None


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
            import scipy.linalg  # noqa: F401  (loads SciPy's own BLAS, so that the controller finds it too)
            from threadpoolctl import ThreadpoolController

            _controller = ThreadpoolController()
        return _controller


def _executor(n: int) -> ThreadPoolExecutor:
    global _pool
    with _controller_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="probes-blas")
        return _pool


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Inside the block the BLAS runs every product on one thread, in every thread of the process.

    A BLAS's thread count is one setting for the whole process, and a product may round differently
    with another count (OpenBLAS splits large products over its threads), so code that runs products
    side by side on Python threads must agree on it. Blocks may nest and may be open in several threads
    at once: the first to open sets one thread, the last to close restores the BLAS's own setting.

    Examples
    --------
    >>> with single_threaded_blas():
    ...     with single_threaded_blas():
    ...         pass
    """
    global _single_users, _single_restore
    with _single_lock:
        if _single_users == 0:
            _single_restore = [(setter, lib.get_num_threads()) for lib, setter in _blas_setters()]
            for setter, _ in _single_restore:
                setter(1)
        _single_users += 1
    try:
        yield
    finally:
        with _single_lock:
            _single_users -= 1
            if _single_users == 0 and _single_restore is not None:
                for setter, count in _single_restore:
                    if count is not None:
                        setter(count)
                _single_restore = None


def _blas_setters() -> list:
    """Each BLAS library of the process with a function that sets its thread count from any thread.

    threadpoolctl lets only the first thread that limited OpenBLAS change it again (and silently ignores
    the others), which would leave a block opened on a worker thread multithreaded; the reference count
    above is what keeps our own threads from fighting over the setting, so the library is set directly.
    """
    libraries = [lib for lib in _blas_controller().lib_controllers if lib.user_api == "blas"]
    return [(lib, getattr(lib, "_real_set_num_threads", lib.set_num_threads)) for lib in libraries]


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
    with single_threaded_blas():
        if n == 1 or len(products) < 2:
            for _, product in products:
                product()
            return
        order = [product for _, product in sorted(products, key=lambda item: -item[0])]
        for future in [_executor(n).submit(product) for product in order]:
            future.result()


def pieces(start: int, stop: int, size: int = PIECE_ROWS) -> list[tuple[int, int]]:
    """Consecutive ``(s, e)`` ranges of at most ``size`` rows covering ``start:stop``.

    Examples
    --------
    >>> pieces(0, 600)
    [(0, 256), (256, 512), (512, 600)]
    """
    return [(s, min(s + size, stop)) for s in range(start, stop, size)]


def map_side_by_side(function: Callable[[Any], Any], items: Sequence[Any], workers: int,
                     progress: bool = False, desc: str = "", costs: Sequence[float] | None = None) -> list[Any]:
    """``[function(item) for item in items]``, up to ``workers`` items at a time on Python threads.

    For independent pieces of work whose single-threaded parts (copies, centring, small solves) leave a
    core idle, such as the concept vectors of several layers: another item's work fills it. Everything
    runs inside :func:`single_threaded_blas`, however many workers, so every result has the same bits
    whether the items ran one by one or side by side. Results come back in the order of ``items``; the
    first item (in that order) that raised re-raises its error, after the items already started finish
    and those not started are dropped.

    Parameters
    ----------
    function : callable
        Called once per item.
    items : sequence
    workers : int
        Most items at a time (1: one after the other, on this thread).
    progress : bool
        Show a progress bar over the items, advanced in their order.
    desc : str
        The bar's label.
    costs : sequence of float, optional
        Each item's expected cost: side by side, the costliest start first (so that a large item does not
        start last and run alone at the end).

    Returns
    -------
    list

    Examples
    --------
    >>> map_side_by_side(lambda x: x * x, [1, 2, 3], workers=2)
    [1, 4, 9]
    """
    from probes.progress import progress as _bar

    with single_threaded_blas():
        if workers <= 1 or len(items) < 2:
            return [function(item) for item in _bar(items, enabled=progress, desc=desc)]
        pool = ThreadPoolExecutor(max_workers=min(workers, len(items)), thread_name_prefix="probes-side")
        try:
            order = sorted(range(len(items)), key=lambda i: -costs[i]) if costs is not None else range(len(items))
            futures = {i: pool.submit(function, items[i]) for i in order}
            results = [futures[i].result() for i in _bar(range(len(items)), enabled=progress, desc=desc)]
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
        return results
