"""Forget what this process keeps between calls: back to what a new Python process starts with.

Calls in one process share small memories, all keyed by content so that none can change an answer:
file hashes and image-set content keys, folder listings and screening results, the random side of an
analysis (null summaries, each layer's spread, the random images' Gram tiles), recent small store
entries and task splits. They only save time. :func:`forget_process_memory` drops all of them: for a
benchmark that times a first call more than once in one process, or to free their memory.

Examples
--------
>>> forget_process_memory()
"""
from __future__ import annotations

__all__ = ["forget_process_memory"]


def forget_process_memory() -> None:
    """Drop every per-process memory of the toolkit (the on-disk cache is left as it is).

    Results never depend on these memories; the next call recomputes what it needs, as a call in a new
    process would (TensorFlow's own state, traced functions included, is kept).

    Examples
    --------
    >>> forget_process_memory()
    """
    from probes import cav_tasks, identity
    from probes.cache_recent import _RECENT
    from probes.reuse import NULL_SUMMARIES, RANDOM_VARIANCES
    from probes.shared_gram import SHARED_GRAM

    from . import image_files, screening, sets

    identity.forget_files()
    NULL_SUMMARIES.clear()
    RANDOM_VARIANCES.clear()
    SHARED_GRAM.clear()
    _RECENT.forget()
    cav_tasks._SPLITS.clear()
    with sets._CONTENT_KEYS_LOCK:
        sets._CONTENT_KEYS.clear()
    with image_files._LISTINGS_LOCK:
        image_files._LISTINGS.clear()
    screening._MEMO.clear()
