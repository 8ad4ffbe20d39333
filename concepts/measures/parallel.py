"""Where the images are measured: this process, spawn-safe (loky) worker processes, or Dask workers.

Workers never fork the parent (a process that has loaded TensorFlow can deadlock a forked child);
each worker uses one ITK thread, since the parallelism is across images. A crashed worker fails
its own images only, with the reason.
"""
from __future__ import annotations

import concurrent.futures as cf
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MeasureError
from .channels import Channel
from .masks import _prepare
from .pyradiomics_adapter import _extract


def _resolve_jobs(n_jobs: int | None) -> int:
    if n_jobs is None or n_jobs == -1:
        return max(1, os.cpu_count() or 1)
    if not isinstance(n_jobs, (int, np.integer)) or n_jobs < 1:
        raise MeasureError(f"n_jobs must be a positive integer, -1 or None (all cores), not {n_jobs!r}.")
    return int(n_jobs)


def _init_worker() -> None:
    """Worker processes: one ITK thread each (parallelism is across images), quiet pyradiomics."""
    try:
        import SimpleITK as sitk

        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    except Exception:  # pragma: no cover - older SimpleITK
        pass
    warnings.simplefilter("ignore")


def _executor(workers: int) -> cf.Executor:
    """A pool of spawn-safe worker processes (loky), reused across calls.

    Workers never fork the parent: forking a process that has loaded TensorFlow (whose threads
    and locks a child would inherit in an arbitrary state) can deadlock. loky starts fresh
    interpreters once and keeps them for later calls, so the start-up is paid once per session.
    """
    from joblib.externals.loky import get_reusable_executor

    return get_reusable_executor(max_workers=workers, initializer=_init_worker, timeout=120)


def _future_outcome(future: cf.Future) -> tuple[dict, dict, str]:
    try:
        return future.result()
    except Exception as exc:  # a crashed worker process fails its image only
        return {}, {}, f"the worker computing this image failed: {type(exc).__name__}: {exc}"


def _measure_images(items: list[tuple[str, str | None]], channel: Channel, params: dict,
                    params_json: str) -> list[tuple[dict, dict, str]]:
    """Dask task: read and measure a few images, each failure reported for its image (as locally)."""
    _init_worker()
    out = []
    for path, mask_path in items:
        image, mask, reason = _prepare(Path(path), None if mask_path is None else Path(mask_path), channel, params)
        if reason:
            out.append(({}, {}, reason))
            continue
        try:
            out.append(_extract(image, mask, params_json))
        except Exception as exc:  # one image's unexpected error must not stop the table
            out.append(({}, {}, f"computing the features failed: {type(exc).__name__}: {exc}"))
    return out


def _dask_outcomes(client: Any, todo: list, channel: Channel, params: dict, params_json: str,
                   per_task: int | None = None) -> Iterator[tuple[Path, str, tuple[dict, dict, str]]]:
    """A Dask map over images: tasks of a few images (so scheduling costs little next to pyradiomics), yielded
    as they complete. A worker that dies has its tasks rerun elsewhere by Dask; a task that still fails
    fails its images only, with the reason."""
    from dask.distributed import as_completed

    workers = max(1, len(client.scheduler_info().get("workers", {})))
    per_task = per_task or max(1, min(16, len(todo) // (4 * workers)))
    chunks = [todo[i:i + per_task] for i in range(0, len(todo), per_task)]
    futures = {client.submit(_measure_images, [(str(p), None if m is None else str(m)) for p, m, _ in chunk],
                             channel, params, params_json, pure=False): chunk for chunk in chunks}
    for future in as_completed(futures):
        chunk = futures[future]
        try:
            outcomes = future.result()
        except Exception as exc:
            outcomes = [({}, {}, f"the worker computing this image failed: {type(exc).__name__}: {exc}")] * len(chunk)
        for (path, _, key), outcome in zip(chunk, outcomes):
            yield path, key, outcome
