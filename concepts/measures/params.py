"""pyradiomics parameters: the defaults, loading a dict or YAML file, and which feature names they compute.

:data:`DEFAULT_PARAMS` (equal to the commented :data:`DEFAULT_PARAMS_FILE`) suit small 2D patches of
8-bit intensities. :func:`list_features` and the name resolution used by :func:`concepts.radiomics`
find the exact feature names a parameter set produces by running the extractor once on a
synthetic patch; an unknown name gets close matches suggested.
"""
from __future__ import annotations

import copy
import difflib
import functools
import json
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np

from ..errors import MeasureError
from .pyradiomics_adapter import _extractor, _quiet_radiomics, _radiomics_module

__all__ = ["DEFAULT_PARAMS", "DEFAULT_PARAMS_FILE", "list_features"]

PathLike = Union[str, os.PathLike]


#: The parameter file that holds :data:`DEFAULT_PARAMS` (with comments explaining each choice).
# It lies next to the package (concepts/radiomics_default.yaml), where it always was.
DEFAULT_PARAMS_FILE = Path(__file__).parent.with_name("radiomics_default.yaml")
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

    Parameters
    ----------
    params
        None (:data:`DEFAULT_PARAMS`), a parameter dict, or the path of a YAML file.

    Examples
    --------
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
