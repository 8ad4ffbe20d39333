"""Continuous concept measures over images: pyradiomics features or any user function.

A :class:`Measure` gives one number per image (GLCM contrast of the nuclei, mean intensity, ...);
regression concept vectors (RCVs) regress it on a layer's activations. Three ways to get one::

    m = concepts.radiomics("original_glcm_Contrast", images="data/classes", masks="data/masks")
    table = concepts.measure_table("data/classes", masks="data/masks")   # every feature, every image
    m2 = concepts.measure(lambda img: float(img.mean()), name="mean_intensity")

Radiomics features are computed by pyradiomics on one grayscale channel (see ``channel``) inside
a mask (nonzero pixels; the whole image without masks). Failures stay local: an image whose
region is empty, too small or constant, or for which pyradiomics raises, gets NaN values and an
entry in ``failures``; one summary warning says how many. Results are cached per image in the
toolkit's store (:class:`probes.cache.Store`), keyed on the image bytes, mask bytes, parameters,
channel, pyradiomics version and toolkit version. Parallel work runs in spawn-safe (loky) worker
processes: never a fork of a process that has loaded TensorFlow.

Images are identified everywhere by ``str(Path(p).resolve())`` (the table's index, a measure's
``values`` index, the ``image`` of a failure), so look-ups work whatever relative path was given.
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import copy
import difflib
import functools
import hashlib
import inspect
import json
import logging
import math
import os
import re
import sys
import warnings
from pathlib import Path
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Callable, Union

import numpy as np
import pandas as pd

from probes.cache import Store, default_cache_dir
from probes.identity import file_sha256
from probes.progress import progress as _progress

from .errors import ConceptFolderError, ImageReadError, MeasureError
from .image_files import IMAGE_EXTENSIONS, is_image_file, list_image_files, read_image

__all__ = ["DEFAULT_PARAMS", "DEFAULT_PARAMS_FILE", "HEMATOXYLIN_RANGE", "Measure", "list_features",
           "measure", "measure_table", "radiomics"]

PathLike = Union[str, os.PathLike]
ImagesLike = Union[PathLike, Sequence[PathLike]]
Channel = Union[str, int, Callable[[np.ndarray], np.ndarray]]

#: The parameter file that holds :data:`DEFAULT_PARAMS` (with comments explaining each choice).
DEFAULT_PARAMS_FILE = Path(__file__).with_name("radiomics_default.yaml")

#: Default pyradiomics parameters, for small 2D patches of 8-bit intensities (0..255).
#: ``binWidth`` 4 gives at most 64 grey-level bins over 0..255, and 30+ bins for a region spanning
#: 120 levels or more (pyradiomics recommends 30-130). For 16-bit images (0..65535) set a bin width
#: of about 512-1024 in your own parameters. shape2D is off by default in pyradiomics and is
#: enabled here explicitly. Regions of ``minimumROISize`` (4) pixels or fewer are rejected.
#: Equal to the content of :data:`DEFAULT_PARAMS_FILE`.
DEFAULT_PARAMS: dict = {
    "setting": {
        "force2D": True,
        "force2Ddimension": 0,
        "binWidth": 4,
        "label": 1,
        "minimumROIDimensions": 2,
        "minimumROISize": 4,
        "correctMask": True,
        "additionalInfo": False,
    },
    "imageType": {"Original": {}},
    "featureClass": {name: [] for name in
                     ("firstorder", "glcm", "glrlm", "glszm", "gldm", "ngtdm", "shape2D")},
}

#: Fixed bounds of ``channel="hematoxylin"``: skimage's ``rgb2hed`` channel 0 is mapped linearly
#: from this range onto 0..255 and clipped. The upper bound is the hematoxylin value of the darkest
#: 8-bit grey that is not black, (1, 1, 1): ``log(255) / log(1e6) * sum(hed_from_rgb[:, 0])``.
#: Typical H&E nuclei (about 0.1-0.2) land at 50-110; only pixels with a channel at exactly 0
#: (pure black, saturated colours) exceed it and are clipped to 255. Fixed bounds keep values
#: comparable across images (a per-image rescaling would not).
HEMATOXYLIN_RANGE: tuple[float, float] = (0.0, 0.48538604)

# Bump when the preprocessing done here changes (channel conversion, masks), so that cached
# values computed by older code are not reused.
_CACHE_FORMAT = "concepts-radiomics/v1"
_GRAY_WEIGHTS = np.array([0.2125, 0.7154, 0.0721])  # ITU-R BT.709 luminance, as skimage.rgb2gray
_NAMED_CHANNELS = {"gray": None, "grey": None, "r": 0, "g": 1, "b": 2, "hematoxylin": None}
_FAILED_EXAMPLES = 5  # failures quoted in a summary warning


# --------------------------------------------------------------------------------------------
# pyradiomics access
# --------------------------------------------------------------------------------------------

def _radiomics_module():
    """Import pyradiomics on first use (it is slow to import and logs to stderr by default)."""
    import radiomics

    return radiomics


def _pyradiomics_version() -> str:
    return str(getattr(_radiomics_module(), "__version__", "unknown"))


class _ErrorCapture(logging.Handler):
    """Collects pyradiomics' ERROR records (a feature that raised is logged, then set to NaN)."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def _quiet_radiomics() -> Iterator[_ErrorCapture]:
    """Silence pyradiomics (and pykwalify) for the duration, collecting its error records.

    pyradiomics logs INFO to its logger, WARNING+ to stderr, and propagates everything to the root
    logger; during a table of thousands of images that is noise. The previous state is restored.
    """
    radiomics = _radiomics_module()
    logger = logging.getLogger("radiomics")
    kwalify = logging.getLogger("pykwalify")
    capture = _ErrorCapture()
    handler = getattr(radiomics, "handler", None)
    saved = (logger.level, logger.propagate, handler.level if handler is not None else None,
             kwalify.level, kwalify.propagate)
    logger.setLevel(logging.ERROR)
    logger.propagate = False
    if handler is not None:
        handler.setLevel(logging.CRITICAL + 10)
    kwalify.setLevel(logging.CRITICAL + 10)
    kwalify.propagate = False
    logger.addHandler(capture)
    try:
        yield capture
    finally:
        logger.removeHandler(capture)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
        if handler is not None:
            handler.setLevel(saved[2])
        kwalify.setLevel(saved[3])
        kwalify.propagate = saved[4]


_EXTRACTORS: dict[str, Any] = {}  # canonical params JSON -> extractor, per process


def _extractor(params_json: str):
    """A pyradiomics extractor for these parameters (built once per process: validation is slow)."""
    if params_json not in _EXTRACTORS:
        from radiomics import featureextractor

        # pykwalify loads pyradiomics' schema functions with a deprecated importlib call.
        with _quiet_radiomics(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                extractor = featureextractor.RadiomicsFeatureExtractor(json.loads(params_json))
            except Exception as exc:  # pykwalify raises SchemaError with the list of problems
                raise MeasureError(f"Invalid pyradiomics parameters: {exc}. See the pyradiomics "
                                   "documentation 'Customizing the extraction' or start from "
                                   f"{DEFAULT_PARAMS_FILE}.") from None
        # diagnostics_* entries are dropped anyway; not computing them saves time.
        extractor.settings["additionalInfo"] = False
        _EXTRACTORS[params_json] = extractor
    return _EXTRACTORS[params_json]


def _canonical(params: Mapping) -> str:
    return json.dumps(params, sort_keys=True, separators=(",", ":"), default=str)


def _load_params(params: Mapping | PathLike | None) -> dict:
    """The parameter dict for ``params`` (None: the defaults; a dict; a YAML file), validated."""
    if params is None:
        loaded: Any = copy.deepcopy(DEFAULT_PARAMS)
    elif isinstance(params, Mapping):
        loaded = copy.deepcopy(dict(params))
    elif isinstance(params, (str, os.PathLike)):
        path = Path(params)
        if not path.is_file():
            raise MeasureError(f"pyradiomics parameter file {str(path)!r} does not exist. Give the path "
                               f"of a YAML file such as {DEFAULT_PARAMS_FILE}, a dict, or None for the "
                               "defaults.")
        import yaml

        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise MeasureError(f"Cannot parse pyradiomics parameter file {str(path)!r}: {exc}") from None
        loaded = {} if loaded is None else loaded
    else:
        raise MeasureError("params must be None, a dict or the path of a YAML file, not "
                           f"{type(params).__name__}.")
    if not isinstance(loaded, dict):
        raise MeasureError(f"pyradiomics parameters must be a mapping with 'setting', 'imageType' and "
                           f"'featureClass' sections, got {type(loaded).__name__}.")
    _extractor(_canonical(loaded))  # validates now, with a clear error, instead of once per image
    return loaded


def _label(params: Mapping) -> int:
    return int((params.get("setting") or {}).get("label", 1))


# --------------------------------------------------------------------------------------------
# Feature names
# --------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=32)
def _features_for(params_json: str) -> tuple[str, ...]:
    """Feature names these parameters produce, found by running the extractor on a synthetic patch.

    Running it (a few tens of ms) is exact for every image type, feature class and explicit
    feature list; enumerating the feature classes would have to re-implement pyradiomics' naming
    of filtered images (wavelet-LH, log-sigma-...).
    """
    params = json.loads(params_json)
    extractor = _extractor(params_json)
    import SimpleITK as sitk

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(64, 64)).astype(np.float64)
    yy, xx = np.mgrid[:64, :64]
    mask = (((yy - 32) ** 2 + (xx - 32) ** 2) <= 20 ** 2).astype(np.uint8) * _label(params)
    try:
        with _quiet_radiomics(), np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = extractor.execute(sitk.GetImageFromArray(image), sitk.GetImageFromArray(mask))
        return tuple(k for k in result if not k.startswith("diagnostics_"))
    except Exception:
        # E.g. a resegmentRange that excludes the synthetic values: list the original-image features
        # of the enabled classes instead.
        return _static_features(params, include_deprecated=False)


def _static_features(params: Mapping, *, include_deprecated: bool) -> tuple[str, ...]:
    """Original-image feature names of the classes enabled in ``params`` (no computation)."""
    classes = _radiomics_module().getFeatureClasses()
    enabled = params.get("featureClass") or {k: [] for k in classes}
    names = []
    for cls_name, wanted in enabled.items():
        if cls_name not in classes or cls_name == "shape":  # 3D shape is never computed on 2D images
            continue
        for feat, deprecated in classes[cls_name].getFeatureNames().items():
            if wanted:
                if feat in wanted:
                    names.append(f"original_{cls_name}_{feat}")
            elif include_deprecated or not deprecated:
                names.append(f"original_{cls_name}_{feat}")
    return tuple(names)


def list_features(params: Mapping | PathLike | None = None) -> list[str]:
    """All feature names (``"original_glcm_Contrast"``, ...) that ``params`` computes.

    Args:
        params: None (:data:`DEFAULT_PARAMS`), a parameter dict, or the path of a YAML file.

    Example:
        >>> names = list_features()
        >>> "original_glcm_Contrast" in names and "original_shape2D_PixelSurface" in names
        True
    """
    return list(_features_for(_canonical(_load_params(params))))


def _resolve_features(names: Iterable[str], params: Mapping) -> list[str]:
    """Full names for ``names`` (``"glcm_Contrast"`` gains ``original_``), or a MeasureError."""
    valid = _features_for(_canonical(params))
    valid_set = set(valid)
    classes = _radiomics_module().getFeatureClasses()
    resolved = []
    for name in names:
        if not isinstance(name, str):
            raise MeasureError(f"A radiomics feature name must be a string, got {name!r}.")
        candidates = [name]
        if name.split("_", 1)[0] in classes:  # "glcm_Contrast": the original image is meant
            candidates.append("original_" + name)
        match = next((c for c in candidates if c in valid_set), None)
        if match is None:
            raise MeasureError(_unknown_feature_message(name, candidates, valid))
        if match not in resolved:
            resolved.append(match)
    return resolved


def _unknown_feature_message(name: str, candidates: list[str], valid: Sequence[str]) -> str:
    lowered = {v.lower(): v for v in valid}
    close = [lowered[c.lower()] for c in candidates if c.lower() in lowered]
    for c in candidates:
        close += [m for m in difflib.get_close_matches(c, valid, n=5, cutoff=0.6) if m not in close]
    known = set(_static_features({}, include_deprecated=True))
    message = f"Unknown radiomics feature {name!r}."
    disabled = next((c for c in candidates if c in known), None)
    if disabled is not None:
        message = (f"Radiomics feature {disabled!r} exists in pyradiomics but these parameters do not "
                   "compute it (its feature class is not enabled in 'featureClass', or the feature is "
                   "deprecated and must be listed by name).")
    if close:
        message += " Did you mean " + ", ".join(repr(c) for c in close[:5]) + "?"
    message += (f" concepts.measures.list_features(params) lists all {len(valid)} names these parameters "
                "compute (e.g. 'original_glcm_Contrast', 'original_firstorder_Mean').")
    return message


# --------------------------------------------------------------------------------------------
# Channels and masks
# --------------------------------------------------------------------------------------------

def _check_channel(channel: Channel) -> None:
    if callable(channel):
        return
    if isinstance(channel, (bool, np.bool_)) or not isinstance(channel, (str, int, np.integer)):
        raise MeasureError(f"channel must be 'gray', 'r', 'g', 'b', 'hematoxylin', a channel index or a "
                           f"function, not {channel!r}.")
    if isinstance(channel, str) and channel.lower() not in _NAMED_CHANNELS:
        raise MeasureError(f"Unknown channel {channel!r}; use 'gray', 'r', 'g', 'b', 'hematoxylin', a "
                           "channel index or a function (RGB array -> 2D array).")
    if isinstance(channel, (int, np.integer)) and channel < 0:
        raise MeasureError(f"channel index must be >= 0, got {channel}.")


def _callable_identity(fn: Callable) -> str:
    """Module, name, code and bound values of a function, for cache keys (edits change it)."""
    if isinstance(fn, functools.partial):
        return (f"partial({_callable_identity(fn.func)};{fn.args!r};"
                f"{sorted(fn.keywords.items())!r})")
    target = fn if inspect.isfunction(fn) or inspect.ismethod(fn) else type(fn)
    parts = [getattr(target, "__module__", "?") or "?", getattr(target, "__qualname__", repr(target))]
    try:
        parts.append(hashlib.sha256(inspect.getsource(target).encode()).hexdigest())
    except (OSError, TypeError):
        code = getattr(target, "__code__", None)
        parts.append(hashlib.sha256(code.co_code + repr(code.co_consts).encode()).hexdigest()
                     if code is not None else repr(fn))
    raw = getattr(fn, "__func__", fn)
    if inspect.isfunction(raw):
        parts.append(repr(raw.__defaults__))
        cells = []
        for cell in raw.__closure__ or ():
            try:
                cells.append(repr(cell.cell_contents))
            except ValueError:  # an empty cell
                cells.append("<empty>")
        parts.append(";".join(cells))
    return ":".join(parts)


def _channel_label(channel: Channel) -> str:
    """A readable name of the channel (table.attrs, descriptions)."""
    if callable(channel):
        return f"function {getattr(channel, '__qualname__', None) or type(channel).__name__}"
    if isinstance(channel, str):
        return "gray" if channel.lower() == "grey" else channel.lower()
    return f"channel {int(channel)}"


def _channel_key(channel: Channel) -> str:
    """The channel's part of the cache key: exact, including the version of what converts it."""
    if callable(channel):
        return "callable:" + _callable_identity(channel)
    label = _channel_label(channel)
    if label == "hematoxylin":
        import skimage

        return f"hematoxylin:{HEMATOXYLIN_RANGE}:skimage-{skimage.__version__}"
    return label


def _to_gray(image: np.ndarray, channel: Channel) -> np.ndarray:
    """The 2D float array pyradiomics measures, from an image as :func:`read_image` returns it.

    Grayscale images are used as they are (16-bit images keep their 0..65535 values); colour
    images are reduced to one channel as ``channel`` says.
    """
    if image.ndim == 2:
        return image.astype(np.float64)
    n_channels = image.shape[-1]
    if callable(channel):
        out = np.asarray(channel(image))
        if out.ndim == 3 and out.shape[-1] == 1:
            out = out[..., 0]
        if out.shape != image.shape[:2]:
            raise MeasureError(f"the channel function returned shape {out.shape}; expected {image.shape[:2]}")
        return out.astype(np.float64)
    label = _channel_label(channel)
    if isinstance(channel, (int, np.integer)):
        if channel >= n_channels:
            raise MeasureError(f"channel {int(channel)} requested but the image has {n_channels} channels")
        return image[..., int(channel)].astype(np.float64)
    if n_channels == 2:  # grayscale + alpha: the grey values are the image
        if label in ("gray", "hematoxylin"):
            return image[..., 0].astype(np.float64)
        raise MeasureError(f"channel {label!r} requested but the image is grayscale with alpha")
    if n_channels not in (3, 4):
        raise MeasureError(f"the image has {n_channels} channels; pass channel=<index> to choose one")
    rgb = image[..., :3]
    if label == "gray":
        return rgb.astype(np.float64) @ _GRAY_WEIGHTS
    if label == "hematoxylin":
        from skimage.color import rgb2hed

        low, high = HEMATOXYLIN_RANGE
        h = rgb2hed(rgb)[..., 0]
        return np.clip((h - low) / (high - low), 0.0, 1.0) * 255.0
    return rgb[..., _NAMED_CHANNELS[label]].astype(np.float64)


def _mask_array(mask: np.ndarray) -> np.ndarray:
    """Boolean region of a mask image: nonzero pixels (any colour channel; alpha ignored)."""
    if mask.ndim == 3:
        channels = mask.shape[-1]
        if channels in (2, 4):  # drop alpha: an opaque alpha channel would make everything region
            mask = mask[..., :-1]
        return np.any(mask != 0, axis=-1)
    return mask != 0


@functools.lru_cache(maxsize=256)
def _mask_files_by_stem_cached(folder: str, mtime_ns: int) -> dict[str, list[Path]]:
    files: dict[str, list[Path]] = {}
    for p in sorted(Path(folder).iterdir()):
        if is_image_file(p) and p.is_file():
            files.setdefault(p.stem, []).append(p)
    return files


def _mask_files_by_stem(folder: Path) -> dict[str, list[Path]]:
    """The image files of a mask folder grouped by stem, listed once per folder (and again only when
    the folder changes) instead of once per image."""
    return _mask_files_by_stem_cached(str(folder), folder.stat().st_mtime_ns)


def _find_mask(image: Path, images_root: Path | None, masks_root: Path) -> tuple[Path | None, str]:
    """The mask of ``image`` under ``masks_root``, or None with the reason.

    With a folder of images the mask has the image's path relative to that folder; for a list of
    images the longest trailing part of the image's path that exists under ``masks_root`` is used.
    The extension may differ (x.png <-> x.tif); the image's own extension wins when both exist.
    """
    if images_root is not None:
        try:
            tails = [image.relative_to(images_root)]
        except ValueError:
            tails = []
    else:
        tails = []
    if not tails:
        parts = image.parts[1:] if image.is_absolute() else image.parts
        tails = [Path(*parts[i:]) for i in range(len(parts))]  # longest first
    for tail in tails:
        folder = masks_root / tail.parent
        if not folder.is_dir():
            continue
        candidates = _mask_files_by_stem(folder).get(tail.stem, [])
        if not candidates:
            continue
        same = [p for p in candidates if p.suffix.lower() == image.suffix.lower()]
        if same:
            return same[0], ""
        if len(candidates) == 1:
            return candidates[0], ""
        return None, (f"several masks match: {', '.join(str(p) for p in candidates)}; keep one")
    expected = masks_root / tails[0].parent / tails[0].stem
    return None, (f"no mask found at {str(expected)}.* (a file named like the image, with any image "
                  f"extension {'/'.join(IMAGE_EXTENSIONS)})")


# --------------------------------------------------------------------------------------------
# Per-image computation
# --------------------------------------------------------------------------------------------

def _prepare(image_path: Path, mask_path: Path | None, channel: Channel,
             params: Mapping) -> tuple[np.ndarray | None, np.ndarray | None, str]:
    """Read image and mask and check the region; returns (image2d, mask01, failure reason)."""
    try:
        image = _to_gray(read_image(image_path), channel)
    except ImageReadError as exc:
        return None, None, str(exc)
    except Exception as exc:  # a user channel function, a wrong channel index
        return None, None, f"cannot convert the image to one channel: {exc}"
    if mask_path is None:
        region = np.ones(image.shape, dtype=bool)
    else:
        try:
            region = _mask_array(read_image(mask_path))
        except ImageReadError as exc:
            return None, None, f"cannot read the mask: {exc}"
        if region.shape != image.shape:
            return None, None, f"mask {str(mask_path)} has shape {region.shape}, the image {image.shape}"
    count = int(region.sum())
    if count == 0:
        return None, None, f"the mask is empty (no nonzero pixel in {str(mask_path)})"
    min_size = (params.get("setting") or {}).get("minimumROISize")
    if min_size is not None and count <= min_size:
        return None, None, (f"the region is too small: {count} pixels, minimumROISize={min_size} needs more "
                            f"than {min_size}")
    values = image[region]
    if not np.all(np.isfinite(values)):
        return None, None, "the image has NaN or infinite values inside the region"
    if values.min() == values.max():
        return None, None, (f"the region is constant (every pixel = {values.min():g}); texture features "
                            "are undefined")
    return image, (region.astype(np.uint8) * _label(params)), ""


_FEATURE_IN_TRACEBACK = re.compile(r"get(\w+?)FeatureValue")


def _extract(image: np.ndarray, mask: np.ndarray, params_json: str, geometry: Any = None
             ) -> tuple[dict[str, float | None], dict[str, str], str]:
    """Run pyradiomics on one 2D image (or volume) and 0/label mask.

    Returns (values with None for NaN/inf, reasons for those features, image failure reason or "").
    Runs in worker processes: inputs are arrays, so user channel functions never need pickling.
    ``geometry`` (a :class:`concepts.volumes.Geometry`) gives a volume its spacing, origin and direction.
    """
    import SimpleITK as sitk

    extractor = _extractor(params_json)
    sitk_image, sitk_mask = sitk.GetImageFromArray(image), sitk.GetImageFromArray(mask)
    if geometry is not None:
        geometry.apply(sitk_image)
        geometry.apply(sitk_mask)
    with _quiet_radiomics() as capture, np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            result = extractor.execute(sitk_image, sitk_mask)
        except Exception as exc:  # checkMask raises ValueError for too few dimensions, etc.
            return {}, {}, f"pyradiomics failed: {type(exc).__name__}: {exc}"
    errors: dict[str, str] = {}
    for record in capture.records:  # logger "radiomics.glcm" + traceback naming getXFeatureValue
        text = record.getMessage()
        found = _FEATURE_IN_TRACEBACK.findall(text)
        cls_name = record.name.rsplit(".", 1)[-1]
        last = text.strip().splitlines()[-1] if text.strip() else "error"
        for feat in found[-1:]:
            errors[f"original_{cls_name}_{feat}"] = f"pyradiomics raised {last}"
    values: dict[str, float | None] = {}
    reasons: dict[str, str] = {}
    for name, raw in result.items():
        if name.startswith("diagnostics_"):
            continue
        try:
            value = float(np.asarray(raw, dtype=float))
        except (TypeError, ValueError):
            value = math.nan
        if math.isfinite(value):
            values[name] = value
        else:
            values[name] = None
            reasons[name] = errors.get(name, f"pyradiomics returned {value}")
    return values, reasons, ""


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


# --------------------------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------------------------

def _cache_folder(cache_dir: PathLike | bool | None) -> Store | None:
    """The toolkit's store at ``cache_dir``, $CONCEPTS_CACHE_DIR or ~/.cache/concepts-toolkit (None: no cache)."""
    if cache_dir is False:
        return None
    if cache_dir is None or cache_dir is True:
        return Store(default_cache_dir())
    return Store(cache_dir)


def _file_digest(path: Path) -> bytes:
    # The shared memoised file identity: a warm rerun costs one stat per image, not a read.
    return bytes.fromhex(file_sha256(path))


def _cache_key(image_path: Path, mask_path: Path | None, params_json: str, channel_key: str,
               version: str) -> str:
    """Store key of image bytes, mask bytes (or "nomask"), parameters, channel and pyradiomics version."""
    return Store.make_key(_CACHE_FORMAT, _file_digest(image_path).hex(),
                          _file_digest(mask_path).hex() if mask_path is not None else "nomask",
                          params_json, channel_key, version)


def _cache_read(store: Store, key: str) -> tuple[dict[str, float | None], dict[str, str]] | None:
    """Cached (values, reasons), or None; the store reports, removes and so recomputes damaged entries."""
    try:
        found = store.get_record(key)
    except OSError:
        return None
    if found is None:
        return None
    data = found[0]
    try:
        values = {str(k): (None if v is None else float(v)) for k, v in data["values"].items()}
        reasons = {str(k): str(v) for k, v in data.get("reasons", {}).items()}
    except (ValueError, TypeError, KeyError, AttributeError):
        return None  # intact but not a feature record (cannot happen with distinct keys): recompute
    return values, reasons


def _cache_write(store: Store, key: str, image: str, values: Mapping[str, float | None],
                 reasons: Mapping[str, str], version: str) -> bool:
    """Write one store entry (atomic); False when the cache folder is not writable."""
    data = {"format": _CACHE_FORMAT, "image": image, "pyradiomics_version": version,
            "values": dict(values), "reasons": dict(reasons)}
    try:
        store.put_record(key, data, meta={"kind": "radiomics", "image": image})
    except OSError:
        return False
    return True


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------

def _assemble_table(files: Sequence[Path], results: Mapping[str, tuple[dict, dict, str]], columns: list[str],
                    features: Sequence[str] | None) -> tuple[pd.DataFrame, list[dict]]:
    """The feature table (rows in input order, columns in pyradiomics' order) and its failures.

    ``results[image] = (values, reasons, reason)``: a non-empty ``reason`` fails the whole image; each
    ``reasons[feature]`` fails one feature. Shared by the 2D and 3D (:mod:`concepts.radiomics3d`) tables.

    Example:
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


def _resolve_jobs(n_jobs: int | None) -> int:
    if n_jobs is None or n_jobs == -1:
        return max(1, os.cpu_count() or 1)
    if not isinstance(n_jobs, (int, np.integer)) or n_jobs < 1:
        raise MeasureError(f"n_jobs must be a positive integer, -1 or None (all cores), not {n_jobs!r}.")
    return int(n_jobs)


def _stacklevel() -> int:
    """The warnings stacklevel of the first caller outside this module (the user's line)."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename == __file__:
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
                image, mask, reason = _prepare(path, mask_path, channel, params)
                if not reason:
                    try:
                        outcome = _extract(image, mask, params_json)
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
            image, mask, reason = _prepare(path, mask_path, channel, params)
            if reason:
                store(path, key, ({}, {}, reason))
                yield None
                continue
            pending[pool.submit(_extract, image, mask, params_json)] = (path, key)
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


def _future_outcome(future: cf.Future) -> tuple[dict, dict, str]:
    try:
        return future.result()
    except Exception as exc:  # a crashed worker process fails its image only
        return {}, {}, f"the worker computing this image failed: {type(exc).__name__}: {exc}"


def measure_table(images: ImagesLike, masks: PathLike | None = None,
                  params: Mapping | PathLike | None = None, *, channel: Channel = "gray",
                  features: Sequence[str] | None = None, n_jobs: int | None = None,
                  cache_dir: PathLike | bool | None = None, progress: bool = True,
                  client: Any = None) -> pd.DataFrame:
    """Every radiomics feature of every image: one row per image, one column per feature.

    Args:
        images: a folder (searched recursively) or a list of image files.
        masks: None (the whole image is the region), or a folder that mirrors the images folder:
            ``classes/a/x.png`` has its mask at ``masks/a/x.png`` or ``masks/a/x.tif`` (same
            relative path and file stem, any image extension). Nonzero mask pixels are the region.
            For a list of images, the longest trailing part of each image's path found under
            ``masks`` is used. An image without a mask fails alone ("no mask found at ...").
        params: None (:data:`DEFAULT_PARAMS`), a dict, or the path of a pyradiomics YAML file.
        channel: how colour images become one grayscale channel: ``"gray"`` (BT.709 luminance on
            the original value scale), ``"r"``/``"g"``/``"b"`` or an index, ``"hematoxylin"``
            (colour deconvolution, rescaled to 0..255 with the fixed :data:`HEMATOXYLIN_RANGE`),
            or a function (RGB(A) array -> 2D array). Grayscale images are used as they are;
            16-bit images keep their values, so set ``binWidth`` accordingly (about 512-1024).
        features: only these columns (full names, or ``"glcm_Contrast"`` for the original image).
        n_jobs: worker processes (default: all cores; 1 computes in this process).
        client: a ``dask.distributed.Client``: the images are measured on its workers instead (a Dask map
            over images, a few per task), which must read the image and mask files at the same paths;
            the cache is read and written here, failures are reported as locally, the table is the same.
        cache_dir: the toolkit's store (one JSON entry per image, see :class:`probes.cache.Store`); None uses
            $CONCEPTS_CACHE_DIR or ~/.cache/concepts-toolkit; False disables the cache. A cached
            user channel function is identified by its source code, defaults and closure values.
        progress: show a progress bar over images.

    Returns:
        A DataFrame indexed by ``str(Path(image).resolve())`` with float feature values (NaN where
        a value failed). ``attrs`` holds ``params``, ``pyradiomics_version``, ``channel`` and
        ``failures`` (dicts ``{image, feature, reason}``; ``feature`` is None when the whole image
        failed). One summary UserWarning reports failures.

    Raises:
        MeasureError: bad parameters, channel or feature names.
        ConceptFolderError: a missing or empty images folder, or a missing masks folder.

    Example:
        >>> table = measure_table("data/classes", masks="data/masks")  # doctest: +SKIP
        >>> table["original_glcm_Contrast"].describe()  # doctest: +SKIP

    Volumes (NIfTI files, DICOM series folders) are measured in 3D with their voxel spacing, with
    3D defaults and masks: see :mod:`concepts.radiomics3d`.
    """
    from .radiomics3d import is_volume_input, volume_table

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


# --------------------------------------------------------------------------------------------
# Measures
# --------------------------------------------------------------------------------------------

Evaluator = Callable[[list[Path]], tuple[pd.Series, list[dict]]]


def _finite(values: pd.Series) -> pd.Series:
    numeric = pd.to_numeric(values, errors="coerce").astype(float)
    return numeric[np.isfinite(numeric.to_numpy())]


class Measure:
    """A continuous concept measure: one float per image.

    Attributes:
        name: the measure's name (a feature name such as ``"original_glcm_Contrast"``).
        values: ``pd.Series`` of finite floats indexed by ``str(Path(image).resolve())``; images whose
            value failed are left out (and listed in ``failures``). Empty for a lazy measure until
            :meth:`evaluate` is called.
        failures: dicts ``{image, feature, reason}`` for the images left out.
        description: how the values were obtained.
        params: the pyradiomics parameters used (None for function measures).

    Example:
        >>> m = Measure("size", pd.Series({"/data/a.png": 1.0, "/data/b.png": 2.0}))
        >>> m.values.tolist()
        [1.0, 2.0]
    """

    def __init__(self, name: str, values: pd.Series | Mapping[str, float] | None = None, *,
                 failures: Sequence[dict] | None = None, description: str = "", params: dict | None = None,
                 evaluator: Evaluator | None = None) -> None:
        self.name = str(name)
        series = pd.Series(values if values is not None else {}, dtype=float)
        # Keys are resolved image paths everywhere, so that look-ups by path agree.
        series.index = pd.Index([str(Path(i).resolve()) for i in series.index], name="image")
        self.values: pd.Series = _finite(series).rename(self.name)
        self.failures: list[dict] = list(failures or [])
        self.description = description
        self.params = params
        self._evaluator = evaluator

    @property
    def images(self) -> list[Path]:
        """The images that have a valid value, in the order of :attr:`values`."""
        return [Path(p) for p in self.values.index]

    def evaluate(self, paths: ImagesLike) -> pd.Series:
        """Values for ``paths`` (a folder or list of files), computing those not known yet.

        New values and failures are added to :attr:`values` and :attr:`failures`; the returned
        Series holds the finite values of the requested images, in their order.

        Raises:
            MeasureError: none of the requested images has a valid value.

        Example:
            >>> m = measure(lambda img: float(img.mean()), name="mean_intensity")
            >>> m.evaluate(["a.png", "b.png"])  # doctest: +SKIP
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
            parts = [s for s in (self.values, _finite(new_values)) if len(s)]
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

    Raises:
        MeasureError: an unknown feature name (close matches are suggested), or no image with a
            finite value.

    Example:
        >>> m = radiomics("glcm_Contrast", images="data/classes", masks="data/masks")  # doctest: +SKIP
        >>> m.values.head()  # doctest: +SKIP

    Volumes are measured in 3D (spacing-aware, 3D defaults): see :mod:`concepts.radiomics3d`.
    """
    from .radiomics3d import is_volume_input, volume_radiomics

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

    Raises:
        MeasureError: ``fn`` is not callable, or gives no finite value on any of ``images``.

    Example:
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
