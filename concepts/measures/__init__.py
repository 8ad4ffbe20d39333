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

The package, one job per module:

* :mod:`~concepts.measures.api` -- :class:`Measure`, :func:`measure`, :func:`radiomics`,
  :func:`measure_table` (the public API);
* :mod:`~concepts.measures.params` -- default parameters, YAML loading, feature names;
* :mod:`~concepts.measures.channels` -- colour to one grey-level channel (grey, R/G/B, H&E, a function);
* :mod:`~concepts.measures.masks` -- finding and reading masks, checking regions;
* :mod:`~concepts.measures.pyradiomics_adapter` -- everything that touches pyradiomics;
* :mod:`~concepts.measures.parallel` -- this process, loky worker processes or Dask;
* :mod:`~concepts.measures.store` -- the per-image JSON cache;
* :mod:`~concepts.measures.tables` -- computing and assembling feature tables.

The private helpers re-exported below are used by :mod:`concepts.radiomics3d`, by tests and by
``benchmarks/run.py`` (which replaces ``_prepare`` and ``_extract`` here to time them; the table
code looks them up on this package at call time, see ``tables._patch_point``).
"""
from __future__ import annotations

from .api import Evaluator, Measure, measure, measure_table, radiomics  # noqa: F401
from .channels import (HEMATOXYLIN_RANGE, Channel, _channel_key, _channel_label,  # noqa: F401
                       _check_channel, _to_gray)
from .masks import _find_mask, _mask_array, _mask_tails, _prepare, _region  # noqa: F401
from .parallel import (_dask_outcomes, _executor, _future_outcome, _init_worker,  # noqa: F401
                       _measure_images, _resolve_jobs)
from .params import (DEFAULT_PARAMS, DEFAULT_PARAMS_FILE, PathLike, _canonical, _features_for,  # noqa: F401
                     _label, _load_params, _resolve_features, _static_features, _unknown_feature_message,
                     list_features)
from .pyradiomics_adapter import (_extract, _extractor, _pyradiomics_version, _quiet_radiomics,  # noqa: F401
                                  _radiomics_module)
from .store import (_CACHE_FORMAT, _cache_folder, _cache_key, _cache_read, _cache_write,  # noqa: F401
                    _file_digest)
from .tables import (ImagesLike, _assemble_table, _compute_table, _failure, _image_list,  # noqa: F401
                     _warn_failures)

__all__ = ["DEFAULT_PARAMS", "DEFAULT_PARAMS_FILE", "HEMATOXYLIN_RANGE", "Measure", "list_features",
           "measure", "measure_table", "radiomics"]
