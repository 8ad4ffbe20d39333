"""Feature tables: images in, one row per image and one column per feature out, with failures reported.

:func:`_compute_table` looks up the cache, reads and checks the images, measures the rest (here,
in worker processes or on Dask) and assembles the table; :func:`_assemble_table` is shared with
the 3D tables of :mod:`concepts.radiomics3d`. Failures stay local to an image (or a feature) and
are summed up in one warning per call.
"""
from __future__ import annotations

import concurrent.futures as cf
import copy
import os
import sys
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np
import pandas as pd

from probes.progress import progress as _progress

from ..errors import ConceptFolderError, MeasureError
from ..image_files import IMAGE_EXTENSIONS, list_image_files
from .channels import Channel, _channel_key, _channel_label
from .masks import _find_mask
from .params import PathLike, _canonical, _features_for
from .parallel import _dask_outcomes, _executor, _future_outcome
from .pyradiomics_adapter import _pyradiomics_version
from .store import _cache_folder, _cache_key, _cache_read, _cache_write

ImagesLike = Union[PathLike, Sequence[PathLike]]
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def _patch_point(name: str) -> Any:
    """``concepts.measures.<name>`` looked up at call time.

    Tests and ``benchmarks/run.py`` replace ``concepts.measures._prepare`` / ``_extract`` to count or
    time them; looking them up on the package (not on this module) keeps that working.
    """
    return getattr(sys.modules[__package__], name)


_FAILED_EXAMPLES = 5  # failures quoted in a summary warning


def _assemble_table(files: Sequence[Path], results: Mapping[str, tuple[dict, dict, str]], columns: list[str],
                    features: Sequence[str] | None) -> tuple[pd.DataFrame, list[dict]]:
    """The feature table (rows in input order, columns in pyradiomics' order) and its failures.

    ``results[image] = (values, reasons, reason)``: a non-empty ``reason`` fails the whole image; each
    ``reasons[feature]`` fails one feature. Shared by the 2D and 3D (:mod:`concepts.radiomics3d`) tables.

    Examples
    --------
    >>> t, f = _assemble_table([Path("a.png")], {"a.png": ({"x": 1.0}, {}, "")}, ["x"], None)
    >>> float(t.loc["a.png", "x"]), f
    (1.0, [])
    """
    extra = [name for outcome in results.values() for name in outcome[0] if name not in columns]
    keep = list(features) if features is not None else columns + list(dict.fromkeys(extra))
    index = [str(p) for p in files]
    data = np.full((len(index), len(keep)), np.nan)
    failures: list[dict] = []
    keep_set = set(keep)
    for row, image in enumerate(index):
        values, reasons, reason = results[image]
        if reason:
            failures.append(_failure(image, None, reason))
            continue
        for col, name in enumerate(keep):
            value = values.get(name)
            if value is not None:
                data[row, col] = value
        failures += [_failure(image, name, why) for name, why in reasons.items() if name in keep_set]
    return pd.DataFrame(data, index=pd.Index(index, name="image"), columns=keep), failures


def _image_list(images: ImagesLike) -> tuple[list[Path], Path | None]:
    """(image files, the folder they were listed from or None) for a folder, a file or a list."""
    if isinstance(images, (str, os.PathLike)):
        path = Path(images)
        if path.is_dir():
            files = list_image_files(path, recursive=True)
            if not files:
                raise ConceptFolderError(f"Folder {str(path)!r} holds no image file "
                                         f"({', '.join(IMAGE_EXTENSIONS)}), also in its subfolders.")
            return [p.resolve() for p in files], path.resolve()
        if path.is_file():
            return [path.resolve()], None
        raise ConceptFolderError(f"Images folder {str(path)!r} does not exist.")
    if isinstance(images, np.ndarray) or not isinstance(images, Iterable):
        raise MeasureError(f"images must be a folder or a list of image files, not {type(images).__name__}.")
    files: list[Path] = []
    seen = set()
    for item in images:
        resolved = Path(item).resolve()
        if resolved not in seen:  # a repeated file would repeat an index entry
            seen.add(resolved)
            files.append(resolved)
    if not files:
        raise MeasureError("No images given: pass a folder or a non-empty list of image files.")
    return files, None


def _stacklevel() -> int:
    """The warnings stacklevel of the first caller outside this package (the user's line)."""
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.dirname(os.path.abspath(frame.f_code.co_filename)) == _PACKAGE_DIR:
        frame, level = frame.f_back, level + 1
    return level


def _failure(image: str, feature: str | None, reason: str) -> dict:
    return {"image": image, "feature": feature, "reason": reason}


def _warn_failures(failures: Sequence[dict], n_images: int, what: str) -> None:
    """One summary warning for all failures of a call (never one per image)."""
    if not failures:
        return
    whole = [f for f in failures if f["feature"] is None]
    partial = [f for f in failures if f["feature"] is not None]
    parts = []
    if whole:
        examples = "; ".join(f"{Path(f['image']).name}: {f['reason']}" for f in whole[:_FAILED_EXAMPLES])
        parts.append(f"{len(whole)} of {n_images} images failed and got no value (e.g. {examples})")
    if partial:
        n_img = len({f["image"] for f in partial})
        n_feat = len({f["feature"] for f in partial})
        examples = "; ".join(f"{Path(f['image']).name} {f['feature']}: {f['reason']}"
                             for f in partial[:_FAILED_EXAMPLES])
        parts.append(f"{len(partial)} feature values ({n_feat} features in {n_img} images) were NaN or "
                     f"infinite (e.g. {examples})")
    warnings.warn(f"{what}: " + "; ".join(parts) + ". These are left out; the full list is in "
                  ".attrs['failures'] of the table (or .failures of the measure).", UserWarning,
                  stacklevel=_stacklevel())


def _compute_table(files: list[Path], images_root: Path | None, masks: PathLike | None, params: dict,
                   channel: Channel, features: list[str] | None, n_jobs: int,
                   cache_dir: PathLike | bool | None, show_progress: bool, warn: bool = True,
                   client: Any = None) -> pd.DataFrame:
    prepare, extract = _patch_point("_prepare"), _patch_point("_extract")
    params_json = _canonical(params)
    columns = list(_features_for(params_json))
    version = _pyradiomics_version()
    channel_key = _channel_key(channel)
    cache = _cache_folder(cache_dir)
    masks_root = None
    if masks is not None:
        masks_root = Path(masks).resolve()
        if not masks_root.is_dir():
            raise ConceptFolderError(f"Masks folder {str(masks)!r} does not exist. Give a folder that "
                                     "mirrors the images folder (same relative paths and file names), or "
                                     "masks=None to measure whole images.")
    results: dict[str, tuple[dict[str, float | None], dict[str, str], str]] = {}
    cache_warned = False

    def first_pass() -> Iterator[tuple[Path, Path | None, str]]:
        # Mask look-up and cache keys only: cached images are never decoded.
        for path in files:
            mask_path = None
            if masks_root is not None:
                mask_path, reason = _find_mask(path, images_root, masks_root)
                if mask_path is None:
                    results[str(path)] = ({}, {}, reason)
                    yield path, None, ""
                    continue
            try:
                key = _cache_key(path, mask_path, params_json, channel_key, version)
            except OSError as exc:
                results[str(path)] = ({}, {}, f"cannot read image: {exc}")
                yield path, None, ""
                continue
            hit = _cache_read(cache, key) if cache is not None else None
            if hit is not None:
                results[str(path)] = (hit[0], hit[1], "")
                yield path, None, ""
                continue
            yield path, mask_path, key

    def store(path: Path, key: str, outcome: tuple[dict, dict, str]) -> None:
        nonlocal cache_warned
        results[str(path)] = outcome
        if cache is not None and not outcome[2]:
            if not _cache_write(cache, key, str(path), outcome[0], outcome[1], version) and not cache_warned:
                cache_warned = True
                warnings.warn(f"Cannot write the radiomics cache in {str(cache.directory)!r}; continuing without it. "
                              "Set CONCEPTS_CACHE_DIR or pass cache_dir=... (False disables the cache).",
                              UserWarning, stacklevel=_stacklevel())

    def run() -> Iterator[None]:
        todo = []
        for path, mask_path, key in first_pass():
            if key:
                todo.append((path, mask_path, key))
            else:
                yield None
        if client is not None and todo:
            # Cache look-ups and writes stay here (the same per-image cache as locally); workers read their
            # images and compute, and send back only the feature values.
            for path, key, outcome in _dask_outcomes(client, todo, channel, params, params_json):
                store(path, key, outcome)
                yield None
            return
        workers = min(n_jobs, len(todo))
        if workers <= 1:
            for path, mask_path, key in todo:
                image, mask, reason = prepare(path, mask_path, channel, params)
                if not reason:
                    try:
                        outcome = extract(image, mask, params_json)
                    except Exception as exc:  # one image's unexpected error must not stop the table
                        outcome = ({}, {}, f"computing the features failed: {type(exc).__name__}: {exc}")
                store(path, key, ({}, {}, reason) if reason else outcome)
                yield None
            return
        # Images are read (and converted) here and only arrays go to the workers; a bounded
        # number in flight keeps memory flat for large folders.
        limit = 4 * workers
        # The reusable pool outlives this call, so it is not closed here.
        pool = _executor(workers)
        pending: dict[cf.Future, tuple[Path, str]] = {}
        for path, mask_path, key in todo:
            image, mask, reason = prepare(path, mask_path, channel, params)
            if reason:
                store(path, key, ({}, {}, reason))
                yield None
                continue
            pending[pool.submit(extract, image, mask, params_json)] = (path, key)
            while len(pending) >= limit:
                done, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                for future in done:
                    path_done, key_done = pending.pop(future)
                    store(path_done, key_done, _future_outcome(future))
                    yield None
        for future in cf.as_completed(list(pending)):
            path_done, key_done = pending.pop(future)
            store(path_done, key_done, _future_outcome(future))
            yield None

    for _ in _progress(run(), enabled=show_progress, desc="radiomics", total=len(files), unit="image"):
        pass

    table, failures = _assemble_table(files, results, columns, features)
    table.attrs["params"] = copy.deepcopy(params)
    table.attrs["pyradiomics_version"] = version
    table.attrs["channel"] = _channel_label(channel)
    table.attrs["failures"] = failures
    if warn:
        _warn_failures(failures, len(files), "Radiomics")
    return table


def _volumes_run_here(client: Any) -> None:
    if client is not None:
        warnings.warn("client= is not used for volumes yet: 3D radiomics runs in local worker processes (n_jobs).",
                      UserWarning, stacklevel=3)
