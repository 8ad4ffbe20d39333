"""3D radiomics: pyradiomics features of CT/MRI volumes inside 3D masks, with the voxel spacing.

:func:`concepts.radiomics` and :func:`concepts.measure_table` come here when their images are
volumes (NIfTI files or DICOM series folders), so the calls are the same as for 2D images::

    table = concepts.measure_table("data/classes", masks="data/masks")      # .nii.gz volumes
    volume = concepts.radiomics("original_shape_VoxelVolume", images="data/classes", masks="data/masks")

What differs from 2D: pyradiomics gets each volume with its spacing, origin and direction, so shape
features are in mm³ / mm² and texture matrices are 3D (13 directions); the defaults are
:data:`DEFAULT_PARAMS_3D` (3D ``shape`` class, bin width 25 for Hounsfield units); features are
measured on the stored intensities (HU for CT), not on the model's preprocessed input. A mask is a
volume (NIfTI or DICOM series) that mirrors its image's path (``classes/a/case01.nii.gz`` ->
``masks/a/case01.nii.gz``; any of ``.nii.gz``, ``.nii`` or a series folder of that name) and must
lie on its image's voxel grid: a mask of another geometry is an error naming both files. As in 2D,
other failures stay local (an empty or constant region, an unreadable volume: NaN and an entry in
``failures``), work is spread over processes, and results are cached on the bytes of image and mask.

Examples
--------
>>> table = volume_table("data3d/classes", masks="data3d/masks", features=["shape_VoxelVolume"],
...                      n_jobs=1, progress=False)
>>> table.shape, float(table.iloc[0, 0])  # mm³: the 8×8×8-voxel cube of each mask, voxels of 1×1×2 mm
((16, 1), 1024.0)
"""
from __future__ import annotations

import concurrent.futures as cf
import copy
import functools
import json
import os
import warnings
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd

from probes.cache import Store
from probes.progress import progress as _progress

from . import measures as _m
from .errors import ConceptFolderError, ImageReadError, MeasureError
from .image_files import list_image_files
from .volumes import (Geometry, check_mask_geometry, is_dicom_series, is_volume_path, read_volume,
                      series_sha256, volume_stem)

__all__ = ["DEFAULT_PARAMS_3D", "DEFAULT_PARAMS_3D_FILE", "is_volume_input", "list_volume_features",
           "volume_radiomics", "volume_table"]

#: The parameter file that holds :data:`DEFAULT_PARAMS_3D` (with comments explaining each choice).
DEFAULT_PARAMS_3D_FILE = Path(__file__).with_name("radiomics_default_3d.yaml")

#: Default pyradiomics parameters for volumes; equal to the content of :data:`DEFAULT_PARAMS_3D_FILE`.
DEFAULT_PARAMS_3D: dict = {
    "setting": {
        "force2D": False,
        "binWidth": 25,
        "label": 1,
        "minimumROIDimensions": 2,
        "minimumROISize": 8,
        "correctMask": False,
        "additionalInfo": False,
    },
    "imageType": {"Original": {}},
    "featureClass": {name: [] for name in ("firstorder", "glcm", "glrlm", "glszm", "gldm", "ngtdm", "shape")},
}

# Bump when the reading or masking done here changes, so that older cached values are not reused.
_CACHE_FORMAT = "concepts-radiomics3d/v1"


# --------------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------------

def is_volume_input(images: Any) -> bool:
    """True when ``images`` (a folder, a file or a list) holds volumes rather than 2D images.

    Raises
    ------
    ConceptFolderError
        A folder mixes volumes and 2D images (one of each is named).

    Examples
    --------
    >>> is_volume_input(["a.nii.gz", "b.nii.gz"]), is_volume_input(["a.png"])
    (True, False)
    """
    if isinstance(images, (str, os.PathLike)):
        path = Path(images)
        if is_volume_path(path):
            return True
        if not path.is_dir():
            return False
        listed = list_image_files(path, recursive=True)
        volumes = [p for p in listed if is_volume_path(p)]
        if volumes and len(volumes) < len(listed):
            flat = next(p for p in listed if not is_volume_path(p))
            raise ConceptFolderError(
                f"Folder {str(path)!r} mixes volumes (e.g. {str(volumes[0])!r}) and 2D images (e.g. "
                f"{str(flat)!r}). Measure them separately: put volumes and 2D images in different folders.")
        return bool(volumes)
    if isinstance(images, np.ndarray) or not isinstance(images, Iterable):
        return False
    items = list(images)
    return bool(items) and isinstance(items[0], (str, os.PathLike)) and is_volume_path(items[0])


def _volume_list(images: Any) -> tuple[list[Path], Path | None]:
    """(volume paths resolved, the folder they were listed from or None)."""
    if isinstance(images, (str, os.PathLike)):
        path = Path(images)
        if is_volume_path(path):
            return [path.resolve()], None
        if not path.is_dir():
            raise ConceptFolderError(f"Images folder {str(path)!r} does not exist.")
        files = [p.resolve() for p in list_image_files(path, recursive=True) if is_volume_path(p)]
        if not files:
            raise ConceptFolderError(f"Folder {str(path)!r} holds no volume (.nii, .nii.gz or a folder of .dcm "
                                     "files), also in its subfolders.")
        return files, path.resolve()
    files = list(dict.fromkeys(Path(p).resolve() for p in images))
    if not files:
        raise MeasureError("No volumes given: pass a folder or a non-empty list of volumes.")
    return files, None


def _find_mask(image: Path, images_root: Path | None, masks_root: Path) -> tuple[Path | None, str]:
    """The mask volume of ``image`` under ``masks_root`` (same relative path, any volume form), or a reason."""
    tails = _m._mask_tails(image, images_root)
    for tail in tails:
        folder = masks_root / tail.parent
        if not folder.is_dir():
            continue
        stem = volume_stem(tail)
        found = [p for p in (folder / f"{stem}.nii.gz", folder / f"{stem}.nii") if p.is_file()]
        if is_dicom_series(folder / stem):
            found.append(folder / stem)
        if len(found) == 1:
            return found[0], ""
        if len(found) > 1:
            return None, f"several masks match: {', '.join(str(p) for p in found)}; keep one"
    expected = masks_root / tails[0].parent / volume_stem(tails[0])
    return None, (f"no mask found at {str(expected)}.nii.gz, .nii or a DICOM series folder of that name")


def _digest(path: Path) -> bytes:
    return series_sha256(path).encode() if path.is_dir() else _m._file_digest(path)


def _cache_key(image: Path, mask: Path | None, params_json: str, version: str) -> str:
    """Store key of the volume's bytes (a DICOM series: its files), the mask's, parameters and version."""
    return Store.make_key(_CACHE_FORMAT, _digest(image).hex(), _digest(mask).hex() if mask is not None else "nomask",
                          params_json, version)


# --------------------------------------------------------------------------------------------------
# Parameters and feature names
# --------------------------------------------------------------------------------------------------

def _load_params(params: Mapping | os.PathLike | str | None) -> dict:
    return _m._load_params(copy.deepcopy(DEFAULT_PARAMS_3D) if params is None else params)


@functools.lru_cache(maxsize=32)
def _features_for(params_json: str) -> tuple[str, ...]:
    """Feature names these parameters produce on volumes, found by running them on a synthetic ball."""
    import SimpleITK as sitk

    params = json.loads(params_json)
    extractor = _m._extractor(params_json)
    rng = np.random.default_rng(0)
    image = rng.integers(-200, 200, size=(16, 16, 16)).astype(np.float64)
    zz, yy, xx = np.mgrid[:16, :16, :16]
    mask = (((zz - 8) ** 2 + (yy - 8) ** 2 + (xx - 8) ** 2) <= 36).astype(np.uint8) * _m._label(params)
    try:
        with _m._quiet_radiomics(), np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = extractor.execute(sitk.GetImageFromArray(image), sitk.GetImageFromArray(mask))
        return tuple(k for k in result if not k.startswith("diagnostics_"))
    except Exception:
        return _m._static_features(params, include_deprecated=False)


def list_volume_features(params: Mapping | os.PathLike | str | None = None) -> list[str]:
    """All feature names (``"original_shape_VoxelVolume"``, ...) that ``params`` computes on volumes.

    Examples
    --------
    >>> names = list_volume_features()
    >>> "original_shape_VoxelVolume" in names and "original_glcm_Contrast" in names
    True
    """
    return list(_features_for(_m._canonical(_load_params(params))))


def _resolve_features(names: Iterable[str], params: Mapping) -> list[str]:
    valid = _features_for(_m._canonical(params))
    classes = _m._radiomics_module().getFeatureClasses()
    resolved = []
    for name in names:
        if not isinstance(name, str):
            raise MeasureError(f"A radiomics feature name must be a string, got {name!r}.")
        candidates = [name] + (["original_" + name] if name.split("_", 1)[0] in classes else [])
        match = next((c for c in candidates if c in valid), None)
        if match is None:
            message = _m._unknown_feature_message(name, candidates, valid)
            if "shape2D" in name:
                message += " Volumes use the 3D 'shape' class (e.g. 'original_shape_VoxelVolume')."
            raise MeasureError(message)
        if match not in resolved:
            resolved.append(match)
    return resolved


# --------------------------------------------------------------------------------------------------
# One volume
# --------------------------------------------------------------------------------------------------

def _prepare(image_path: Path, mask_path: Path | None, params: Mapping
             ) -> tuple[np.ndarray | None, np.ndarray | None, Geometry | None, str]:
    """Read a volume and its mask; returns (voxels, 0/label mask, geometry, failure reason or "").

    A mask on another voxel grid raises :class:`~concepts.volumes.VolumeGeometryError` (a data error,
    not a property of the region); everything else is a local failure with its reason.
    """
    try:
        image = read_volume(image_path)
    except ImageReadError as exc:
        return None, None, None, str(exc)
    if mask_path is None:
        region = np.ones(image.shape, dtype=bool)
    else:
        try:
            mask = read_volume(mask_path)
        except ImageReadError as exc:
            return None, None, None, f"cannot read the mask: {exc}"
        check_mask_geometry(image, mask)
        region = _m._region(mask, _m._label(params), volume=True)
        if isinstance(region, str):
            return None, None, None, region
    count = int(region.sum())
    if count == 0:
        return None, None, None, f"the mask is empty (no nonzero voxel in {str(mask_path)})"
    min_size = (params.get("setting") or {}).get("minimumROISize")
    if min_size is not None and count <= min_size:
        return None, None, None, (f"the region is too small: {count} voxels, minimumROISize={min_size} needs "
                                  f"more than {min_size}")
    values = np.asarray(image, dtype=np.float64)
    inside = values[region]
    if not np.all(np.isfinite(inside)):
        return None, None, None, "the volume has NaN or infinite values inside the region"
    if inside.min() == inside.max():
        return None, None, None, (f"the region is constant (every voxel = {inside.min():g}); texture features "
                                  "are undefined")
    return values, region.astype(np.uint8) * _m._label(params), image.geometry, ""


def _safe_extract(image: np.ndarray, mask: np.ndarray, params_json: str, geometry: Geometry
                  ) -> tuple[dict, dict, str]:
    try:
        return _m._extract(image, mask, params_json, geometry)
    except Exception as exc:  # one volume's unexpected error must not stop the table
        return {}, {}, f"computing the features failed: {type(exc).__name__}: {exc}"


# --------------------------------------------------------------------------------------------------
# Tables and measures
# --------------------------------------------------------------------------------------------------

def _compute(files: list[Path], images_root: Path | None, masks: Any, params: dict, features: list[str] | None,
             n_jobs: int, cache_dir: Any, show_progress: bool, warn: bool = True) -> pd.DataFrame:
    params_json = _m._canonical(params)
    columns = list(_features_for(params_json))
    version = _m._pyradiomics_version()
    cache = _m._cache_folder(cache_dir)
    masks_root = None
    if masks is not None:
        masks_root = Path(masks).resolve()
        if not masks_root.is_dir():
            raise ConceptFolderError(f"Masks folder {str(masks)!r} does not exist. Give a folder that mirrors the "
                                     "images folder, or masks=None to measure whole volumes.")
    results: dict[str, tuple[dict, dict, str]] = {}
    todo: list[tuple[Path, Path | None, str]] = []
    for path in files:  # mask look-up and cache keys only: cached volumes are never read
        mask_path = None
        if masks_root is not None:
            mask_path, reason = _find_mask(path, images_root, masks_root)
            if mask_path is None:
                results[str(path)] = ({}, {}, reason)
                continue
        try:
            key = _cache_key(path, mask_path, params_json, version)
        except OSError as exc:
            results[str(path)] = ({}, {}, f"cannot read the volume: {exc}")
            continue
        hit = _m._cache_read(cache, key) if cache is not None else None
        if hit is not None:
            results[str(path)] = (hit[0], hit[1], "")
        else:
            todo.append((path, mask_path, key))

    def store(path: Path, key: str, outcome: tuple[dict, dict, str]) -> None:
        results[str(path)] = outcome
        if cache is not None and not outcome[2]:
            _m._cache_write(cache, key, str(path), outcome[0], outcome[1], version)

    def run() -> Iterator[None]:
        workers = min(n_jobs, len(todo))
        if workers <= 1:
            for path, mask_path, key in todo:
                image, mask, geometry, reason = _prepare(path, mask_path, params)
                store(path, key, ({}, {}, reason) if reason else _safe_extract(image, mask, params_json, geometry))
                yield None
            return
        # Volumes are read here and only arrays go to the workers; a bounded number in flight keeps
        # memory flat (a CT volume is tens of MB).
        # Spawn-safe workers (loky, reused across calls): never a fork of a process that holds TensorFlow.
        pool = _m._executor(workers)
        pending: dict[cf.Future, tuple[Path, str]] = {}
        for path, mask_path, key in todo:
            image, mask, geometry, reason = _prepare(path, mask_path, params)
            if reason:
                store(path, key, ({}, {}, reason))
                yield None
                continue
            pending[pool.submit(_m._extract, image, mask, params_json, geometry)] = (path, key)
            while len(pending) >= 2 * workers:
                done, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                for future in done:
                    store(*pending.pop(future), _m._future_outcome(future))
                    yield None
        for future in cf.as_completed(list(pending)):
            store(*pending.pop(future), _m._future_outcome(future))
            yield None

    for _ in _progress(run(), enabled=show_progress, desc="radiomics 3D", total=len(todo), unit="volume"):
        pass

    table, failures = _m._assemble_table(files, results, columns, features)
    table.attrs.update(params=copy.deepcopy(params), pyradiomics_version=version, channel="volume",
                       failures=failures, dimensions=3)
    if warn:
        _m._warn_failures(failures, len(files), "Radiomics (volumes)")
    return table


def volume_table(images: Any, masks: Any = None, params: Mapping | os.PathLike | str | None = None, *,
                 features: Sequence[str] | None = None, n_jobs: int | None = None, cache_dir: Any = None,
                 progress: bool = True) -> pd.DataFrame:
    """Every radiomics feature of every volume: one row per volume, one column per feature.

    :func:`concepts.measure_table` calls this when its images are volumes; arguments are as there,
    except that ``params=None`` means :data:`DEFAULT_PARAMS_3D` and there is no ``channel`` (volumes
    are scalar).

    Parameters
    ----------
    images : Any
        A folder (searched recursively), a volume, or a list of volumes (NIfTI files, DICOM
        series folders).
    masks : Any, default=None
        None (the whole volume), or a folder mirroring the images folder with one mask volume
        per image (same relative path and stem; ``.nii.gz``, ``.nii`` or a DICOM series folder).
    params : Mapping | os.PathLike | str | None, default=None
        None, a dict, or the path of a pyradiomics YAML file.
    features : Sequence[str] | None, default=None
        Only these columns (``"shape_VoxelVolume"`` means ``"original_shape_VoxelVolume"``).
    n_jobs : int | None, default=None
        Worker processes (default all cores; 1 computes here).
    cache_dir : Any, default=None
        Cache root (None: $CONCEPTS_CACHE_DIR or ~/.cache/concepts-toolkit; False: no cache).
    progress : bool, default=True
        Show a progress bar over volumes.

    Returns
    -------
    pd.DataFrame
        A DataFrame indexed by the resolved volume paths; ``attrs`` as for :func:`concepts.measure_table`
        (``params``, ``pyradiomics_version``, ``failures``) plus ``dimensions=3``.

    Raises
    ------
    VolumeGeometryError
        A mask's geometry differs from its image's (both files named).
    MeasureError
        Bad parameters or feature names.
    ConceptFolderError
        A missing folder, or one without volumes.

    Examples
    --------
    >>> t = volume_table("data3d/classes", masks="data3d/masks",
    ...                  features=["shape_VoxelVolume", "firstorder_Mean"], n_jobs=1, progress=False)
    >>> list(t.columns), len(t), t.attrs["dimensions"], t.attrs["failures"]
    (['original_shape_VoxelVolume', 'original_firstorder_Mean'], 16, 3, [])
    """
    loaded = _load_params(params)
    selected = _resolve_features(features, loaded) if features is not None else None
    files, root = _volume_list(images)
    return _compute(files, root, masks, loaded, selected, _m._resolve_jobs(n_jobs), cache_dir, progress)


def volume_radiomics(feature: str, images: Any, masks: Any = None,
                     params: Mapping | os.PathLike | str | None = None, *, n_jobs: int | None = None,
                     cache_dir: Any = None, progress: bool = True) -> "_m.Measure":
    """A pyradiomics feature of volumes as a concept measure (what :func:`concepts.radiomics` returns for volumes).

    Raises
    ------
    MeasureError
        An unknown feature name, or no volume with a finite value.

    Examples
    --------
    >>> m = volume_radiomics("shape_VoxelVolume", "data3d/classes", masks="data3d/masks",
    ...                      n_jobs=1, progress=False)
    >>> m.name, len(m.values), float(m.values.iloc[0])
    ('original_shape_VoxelVolume', 16, 1024.0)
    """
    loaded = _load_params(params)
    name = _resolve_features([feature], loaded)[0]
    jobs = _m._resolve_jobs(n_jobs)
    files, root = _volume_list(images)
    description = (f"pyradiomics {name} on volumes (3D, voxel spacing from the files), "
                   f"masks {masks if masks is not None else 'none (whole volumes)'}")

    def evaluator(paths: list[Path]) -> tuple[pd.Series, list[dict]]:
        inside = root is not None and all(Path(p).is_relative_to(root) for p in paths)
        table = _compute([Path(p) for p in paths], root if inside else None, masks, loaded, [name], jobs,
                         cache_dir, progress)
        return table[name], table.attrs["failures"]

    values, failures = evaluator(files)
    result = _m.Measure(name, values, failures=failures, description=description, params=loaded,
                        evaluator=evaluator)
    if len(result.values) == 0:
        raise MeasureError(f"Radiomics feature {name!r} is NaN on all {len(files)} volumes; see the warning "
                           "above for why (empty or constant regions, masks not found, ...).")
    return result
