"""pyradiomics access: import on first use, quiet logging, one extractor per parameter set, one extraction.

Everything that touches pyradiomics' own objects lives here, so a change of pyradiomics' API is
fixed in one module. :func:`_extract` measures one 2D image (or 3D volume) inside a 0/label mask
and turns pyradiomics' NaN/inf values and logged errors into per-feature failure reasons; it
runs in worker processes too (its inputs are arrays, so nothing user-defined needs pickling).
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..errors import MeasureError


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
                from .params import DEFAULT_PARAMS_FILE

                raise MeasureError(f"Invalid pyradiomics parameters: {exc}. See the pyradiomics "
                                   "documentation 'Customizing the extraction' or start from "
                                   f"{DEFAULT_PARAMS_FILE}.") from None
        # diagnostics_* entries are dropped anyway; not computing them saves time.
        extractor.settings["additionalInfo"] = False
        _EXTRACTORS[params_json] = extractor
    return _EXTRACTORS[params_json]


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
