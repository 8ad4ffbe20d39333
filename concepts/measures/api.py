"""The public API of measures: :class:`Measure`, :func:`measure`, :func:`radiomics`, :func:`measure_table`.

A :class:`Measure` gives one number per image; regression concept vectors (RCVs) regress it on a
layer's activations. Volumes (NIfTI files, DICOM series folders) are handed to
:mod:`concepts.radiomics3d`.
"""
from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from ..errors import MeasureError
from ..image_files import read_image
from .channels import Channel, _channel_label, _check_channel
from .params import PathLike, _load_params, _resolve_features
from .parallel import _resolve_jobs
from .tables import (ImagesLike, _compute_table, _failure, _image_list, _stacklevel, _volumes_run_here,
                     _warn_failures)

__all__ = ["Measure", "measure", "measure_table", "radiomics"]


def measure_table(images: ImagesLike, masks: PathLike | None = None,
                  params: Mapping | PathLike | None = None, *, channel: Channel = "gray",
                  features: Sequence[str] | None = None, n_jobs: int | None = None,
                  cache_dir: PathLike | bool | None = None, progress: bool = True,
                  client: Any = None) -> pd.DataFrame:
    """Every radiomics feature of every image: one row per image, one column per feature.

    Parameters
    ----------
    images
        a folder (searched recursively) or a list of image files.
    masks
        None (the whole image is the region), or a folder that mirrors the images folder:
        ``classes/a/x.png`` has its mask at ``masks/a/x.png`` or ``masks/a/x.tif`` (same
        relative path and file stem, any image extension). Nonzero mask pixels are the region.
        For a list of images, the longest trailing part of each image's path found under
        ``masks`` is used. An image without a mask fails alone ("no mask found at ...").
    params
        None (:data:`DEFAULT_PARAMS`), a dict, or the path of a pyradiomics YAML file.
    channel
        how colour images become one grayscale channel: ``"gray"`` (ITU-R BT.601 luma,
        :func:`concepts.colour.rgb_to_grey`, on the original value scale), ``"r"``/``"g"``/``"b"``
        or an index, ``"hematoxylin"`` (colour deconvolution, rescaled to 0..255 with the fixed
        :data:`HEMATOXYLIN_RANGE`), or a function (RGB(A) array -> 2D array). Grayscale images are used as they are;
        16-bit images keep their values, so set ``binWidth`` accordingly (about 512-1024).
    features
        only these columns (full names, or ``"glcm_Contrast"`` for the original image).
    n_jobs
        worker processes (default: all cores; 1 computes in this process).
    client
        a ``dask.distributed.Client``: the images are measured on its workers instead (a Dask map
        over images, a few per task), which must read the image and mask files at the same paths;
        the cache is read and written here, failures are reported as locally, the table is the same.
    cache_dir
        the toolkit's store (one JSON entry per image, see :class:`probes.cache.Store`); None uses
        $CONCEPTS_CACHE_DIR or ~/.cache/concepts-toolkit; False disables the cache. A cached
        user channel function is identified by its source code, defaults and closure values.
    progress
        show a progress bar over images.

    Returns
    -------
    A DataFrame indexed by ``str(Path(image).resolve())`` with float feature values (NaN where
    a value failed). ``attrs`` holds ``params``, ``pyradiomics_version``, ``channel`` and
    ``failures`` (dicts ``{image, feature, reason}``; ``feature`` is None when the whole image
    failed). One summary UserWarning reports failures.

    Raises
    ------
    MeasureError
        bad parameters, channel or feature names.
    ConceptFolderError
        a missing or empty images folder, or a missing masks folder.

    Examples
    --------
    >>> table = measure_table("data/classes", masks="data/masks", n_jobs=1, progress=False)
    >>> table.shape, bool(table["original_glcm_Contrast"].notna().all())
    ((24, 102), True)

    Volumes (NIfTI files, DICOM series folders) are measured in 3D with their voxel spacing, with
    3D defaults and masks: see :mod:`concepts.radiomics3d`.
    """
    from ..radiomics3d import is_volume_input, volume_table

    if is_volume_input(images):
        _volumes_run_here(client)
        return volume_table(images, masks, params, features=features, n_jobs=n_jobs, cache_dir=cache_dir,
                            progress=progress)
    _check_channel(channel)
    loaded = _load_params(params)
    selected = _resolve_features(features, loaded) if features is not None else None
    files, root = _image_list(images)
    return _compute_table(files, root, masks, loaded, channel, selected, _resolve_jobs(n_jobs), cache_dir,
                          progress, client=client)


Evaluator = Callable[[list[Path]], tuple[pd.Series, list[dict]]]


#: Image paths quoted in a warning or error about a measure's values or keys.
_QUOTED_PATHS = 5


def _left_out(name: str, series: pd.Series, failures: Sequence[dict]) -> tuple[pd.Series, list[dict]]:
    """The finite values of ``series``, and a failure for each NaN/inf value not explained by ``failures``.

    A value that failed while it was computed (radiomics, a user function) is in ``failures`` already
    with its reason; any other NaN or infinite value was given as such, and is recorded here.
    """
    numeric = pd.to_numeric(series, errors="coerce").astype(float)
    finite = np.isfinite(numeric.to_numpy())
    if finite.all():
        return numeric, []
    known = {str(f.get("image")) for f in failures}
    new = [_failure(str(key), name, f"the given value is {value}")
           for key, value in numeric[~finite].items() if str(key) not in known]
    return numeric[finite], new


def _quote(failures: Sequence[dict]) -> str:
    quoted = ", ".join(f"{f['image']} ({f['reason'].rsplit(' ', 1)[-1]})" for f in failures[:_QUOTED_PATHS])
    return quoted + (", ..." if len(failures) > _QUOTED_PATHS else "")


def _warn_left_out(name: str, new: Sequence[dict], n_values: int) -> None:
    if new:
        warnings.warn(
            f"Measure {name!r}: {len(new)} of {n_values} given values are NaN or infinite, so those "
            f"images are left out (listed in the measure's .failures): {_quote(new)}. Give finite "
            "numbers for them, or leave them out of the values.", UserWarning, stacklevel=_stacklevel())


class Measure:
    """A continuous concept measure: one float per image.

    Keys must be the paths of existing image files (or volume folders): a warning names those that
    are not, and scoring refuses them (:meth:`check_images`). Given values that are NaN or infinite
    are left out with a warning (all of them: a :class:`~concepts.errors.MeasureError`).

    Attributes
    ----------
    name
        the measure's name (a feature name such as ``"original_glcm_Contrast"``).
    values
        ``pd.Series`` of finite floats indexed by ``str(Path(image).resolve())`` (relative paths
        are resolved against the working directory when the measure is created); images whose
        value failed, or was given as NaN or infinite, are left out (and listed in ``failures``,
        with one warning for given values). Empty for a lazy measure until :meth:`evaluate` is called.
    failures
        dicts ``{image, feature, reason}`` for the images left out.
    description
        how the values were obtained.
    params
        the pyradiomics parameters used (None for function measures).

    Examples
    --------
    >>> files = ["data/concepts/horizontal/h000.png", "data/concepts/horizontal/h001.png"]
    >>> m = Measure("size", pd.Series({files[0]: 1.0, files[1]: 2.0}))
    >>> m.values.tolist()
    [1.0, 2.0]
    """

    def __init__(self, name: str, values: pd.Series | Mapping[str, float] | None = None, *,
                 failures: Sequence[dict] | None = None, description: str = "", params: dict | None = None,
                 evaluator: Evaluator | None = None) -> None:
        self.name = str(name)
        try:
            series = pd.Series(values if values is not None else {}, dtype=float)
        except (TypeError, ValueError) as exc:
            raise MeasureError(f"Measure {self.name!r}: values must be numbers, one per image path ({exc}). "
                               "Give a dict or pandas Series {image path: number}.") from None
        # Keys are resolved image paths everywhere, so that look-ups by path agree.
        self._cwd = os.getcwd()
        series.index = pd.Index([str(Path(i).resolve()) for i in series.index], name="image")
        self.failures: list[dict] = list(failures or [])
        finite, new = _left_out(self.name, series, self.failures)
        if len(series) and not len(finite) and new:
            raise MeasureError(
                f"Measure {self.name!r}: all {len(series)} given values are NaN or infinite "
                f"({_quote(new)}), so there is nothing to regress on. Give finite numbers: check how the "
                "values were computed.")
        _warn_left_out(self.name, new, len(series))
        self.failures.extend(new)
        self.values: pd.Series = finite.rename(self.name)
        self.description = description
        self.params = params
        self._evaluator = evaluator
        missing = self._missing(self.values.index)
        if missing:
            warnings.warn(self._missing_message(missing, len(self.values)) + " Scoring with it will fail.",
                          UserWarning, stacklevel=_stacklevel())

    @staticmethod
    def _missing(keys: Sequence[str]) -> list[str]:
        return [k for k in keys if not os.path.exists(k)]

    def _missing_message(self, missing: Sequence[str], n_keys: int) -> str:
        quoted = ", ".join(missing[:_QUOTED_PATHS]) + (", ..." if len(missing) > _QUOTED_PATHS else "")
        return (f"Measure {self.name!r}: {len(missing)} of its {n_keys} image paths are not existing "
                f"files or folders ({quoted}). Its keys must be the paths of the image files (or volume "
                "folders) the values were measured on, which the model then reads; relative paths are "
                "resolved against the working directory when the Measure is created "
                f"(here {getattr(self, '_cwd', os.getcwd())!r}). Key the values by existing files (e.g. "
                "the index of concepts.measure_table()), or drop the missing ones.")

    def check_images(self, keys: Sequence[str] | None = None) -> list[Path]:
        """The image files of ``keys`` (default: every valued image), refusing paths that do not exist.

        Raises
        ------
        MeasureError
            some keys are not existing files or folders; the message names a few.

        Examples
        --------
        >>> m = Measure("size", {"data/concepts/horizontal/h000.png": 1.0})
        >>> [p.name for p in m.check_images()]
        ['h000.png']
        """
        keys = [str(k) for k in (self.values.index if keys is None else keys)]
        missing = self._missing(keys)
        if missing:
            raise MeasureError(self._missing_message(missing, len(keys)))
        return [Path(k) for k in keys]

    @property
    def images(self) -> list[Path]:
        """The images that have a valid value, in the order of :attr:`values`."""
        return [Path(p) for p in self.values.index]

    def evaluate(self, paths: ImagesLike) -> pd.Series:
        """Values for ``paths`` (a folder or list of files), computing those not known yet.

        New values and failures are added to :attr:`values` and :attr:`failures`; the returned
        Series holds the finite values of the requested images, in their order.

        Raises
        ------
        MeasureError
            none of the requested images has a valid value.

        Examples
        --------
        >>> m = measure(lambda img: float(img.mean()), name="mean_intensity")
        >>> files = ["data/concepts/horizontal/h000.png", "data/concepts/horizontal/h001.png"]
        >>> m.evaluate(files).round(1).tolist()
        [128.2, 129.0]
        """
        files, _ = _image_list(paths)
        keys = [str(p) for p in files]
        failed = {f["image"] for f in self.failures}
        missing = [p for p, k in zip(files, keys) if k not in self.values.index and k not in failed]
        if missing:
            if self._evaluator is None:
                new_failures = [_failure(str(p), self.name, "this measure has no value for the image and "
                                         "cannot compute new ones") for p in missing]
                new_values = pd.Series(dtype=float)
            else:
                new_values, new_failures = self._evaluator(missing)
            new_values = pd.Series(new_values, dtype=float)
            new_values.index = pd.Index([str(i) for i in new_values.index], name="image")
            finite, unexplained = _left_out(self.name, new_values, new_failures)
            _warn_left_out(self.name, unexplained, len(new_values))
            new_failures = [*new_failures, *unexplained]
            parts = [s for s in (self.values, finite) if len(s)]
            merged = pd.concat(parts) if len(parts) > 1 else (parts[0] if parts else self.values)
            merged.index = pd.Index([str(i) for i in merged.index], name="image")
            self.values = merged.astype(float).rename(self.name)
            self.failures.extend(new_failures)
        out = self.values.reindex([k for k in keys if k in self.values.index])
        if len(out) == 0:
            reasons = "; ".join(f"{Path(f['image']).name}: {f['reason']}" for f in self.failures
                                if f["image"] in set(keys))[:600]
            raise MeasureError(f"Measure {self.name!r} has no valid value on any of the {len(keys)} images "
                               f"({reasons or 'no reason recorded'}).")
        return out

    def __repr__(self) -> str:
        n = len(self.values)
        state = (f"{n} image{'s' if n != 1 else ''}" if n or self._evaluator is None
                 else "not evaluated yet")
        if self.failures:
            state += f", {len(self.failures)} failure{'s' if len(self.failures) != 1 else ''}"
        text = f"Measure({self.name!r}, {state}"
        return text + (f"; {self.description})" if self.description else ")")


def radiomics(feature: str, images: ImagesLike, masks: PathLike | None = None,
              params: Mapping | PathLike | None = None, *, channel: Channel = "gray",
              n_jobs: int | None = None, cache_dir: PathLike | bool | None = None,
              progress: bool = True, client: Any = None) -> Measure:
    """A pyradiomics feature as a concept measure over ``images``.

    The name is checked before anything is computed: ``"original_glcm_Contrast"`` or
    ``"glcm_Contrast"`` (the original image is meant). All features are computed and cached per
    image (see :func:`measure_table` for ``masks``, ``params``, ``channel``, ``client`` and the cache), so
    asking for a second feature later costs almost nothing.

    Raises
    ------
    MeasureError
        an unknown feature name (close matches are suggested), or no image with a
        finite value.

    Examples
    --------
    >>> m = radiomics("glcm_Contrast", images="data/classes", masks="data/masks", n_jobs=1, progress=False)
    >>> m.name, len(m.values)
    ('original_glcm_Contrast', 24)

    Volumes are measured in 3D (spacing-aware, 3D defaults): see :mod:`concepts.radiomics3d`.
    """
    from ..radiomics3d import is_volume_input, volume_radiomics

    if is_volume_input(images):
        _volumes_run_here(client)
        return volume_radiomics(feature, images, masks, params, n_jobs=n_jobs, cache_dir=cache_dir,
                                progress=progress)
    _check_channel(channel)
    loaded = _load_params(params)
    name = _resolve_features([feature], loaded)[0]
    jobs = _resolve_jobs(n_jobs)
    files, root = _image_list(images)
    description = (f"pyradiomics {name}, channel {_channel_label(channel)}, "
                   f"masks {masks if masks is not None else 'none (whole images)'}")

    def evaluator(paths: list[Path]) -> tuple[pd.Series, list[dict]]:
        # New images keep the mask layout of the original images folder when they lie inside it.
        inside = root is not None and all(p.is_relative_to(root) for p in paths)
        table = _compute_table(paths, root if inside else None, masks, loaded, channel, [name], jobs,
                               cache_dir, progress, client=client)
        return table[name], table.attrs["failures"]

    values, failures = evaluator(files)
    result = Measure(name, values, failures=failures, description=description, params=loaded,
                     evaluator=evaluator)
    if len(result.values) == 0:
        raise MeasureError(f"Radiomics feature {name!r} is NaN on all {len(files)} images; see the warning "
                           "above for why (empty or constant regions, masks not found, ...).")
    return result


def _evaluate_function(fn: Callable[[np.ndarray], float], name: str,
                       paths: list[Path]) -> tuple[pd.Series, list[dict]]:
    values: dict[str, float] = {}
    failures: list[dict] = []
    for path in paths:
        key = str(path)
        try:
            raw = fn(read_image(path))
        except Exception as exc:  # a user function may raise anything on one odd image
            failures.append(_failure(key, name, f"{type(exc).__name__}: {exc}"))
            continue
        try:
            value = float(np.asarray(raw, dtype=float).item())
        except (TypeError, ValueError):
            failures.append(_failure(key, name, f"returned {type(raw).__name__} {str(raw)[:60]!r}, "
                                                "expected a number"))
            continue
        if not math.isfinite(value):
            failures.append(_failure(key, name, f"returned {value}"))
            continue
        values[key] = value
    _warn_failures([dict(f, feature=None) for f in failures], len(paths), f"Measure {name!r}")
    return pd.Series(values, dtype=float), failures


def measure(fn: Callable[[np.ndarray], float], name: str | None = None,
            images: ImagesLike | None = None) -> Measure:
    """A concept measure from any function of an image (as :func:`~concepts.image_files.read_image` reads it).

    With ``images`` (a folder or list of files) the values are computed now; without, the measure
    is lazy: ``values`` is empty until :meth:`Measure.evaluate` is called (scoring calls it with the
    class example images). An image on which ``fn`` raises or returns NaN/inf is left out and
    listed in ``failures`` (one summary warning).

    Raises
    ------
    MeasureError
        ``fn`` is not callable, or gives no finite value on any of ``images``.

    Examples
    --------
    >>> m = measure(lambda img: float(img.mean()), name="mean_intensity")
    >>> m
    Measure('mean_intensity', not evaluated yet; user function <lambda>)
    """
    if not callable(fn):
        raise MeasureError(f"measure() needs a function image -> float, got {type(fn).__name__}.")
    if name is None:
        name = getattr(fn, "__name__", None) or "measure"
        name = "measure" if name == "<lambda>" else name
    label = getattr(fn, "__qualname__", None) or type(fn).__name__
    result = Measure(name, description=f"user function {label}",
                     evaluator=lambda paths: _evaluate_function(fn, name, paths))
    if images is not None:
        result.evaluate(images)
    return result
