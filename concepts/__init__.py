"""Concept-based explanations for Keras medical-imaging models.

Which human concepts does a model use, in which layer, for which class, and is that real?

Notes
-----
The public names are imported lazily so that ``import concepts`` (and ``concepts --help``) stays
fast; TensorFlow is loaded on first use.

Examples
--------
>>> import keras, concepts
>>> model = keras.models.load_model("model.keras")
>>> result = concepts.score(model, "conv2", "data/concepts/horizontal")
>>> result.to_frame()[["class", "layer", "concept", "score", "significant"]]
     class  layer     concept  score  significant
0    other  conv2  horizontal    0.0         True
1  striped  conv2  horizontal    1.0         True
>>> settings = concepts.Config(n_random=20, progress=False)  # one reusable setting for score, report, ...
>>> rep = concepts.report(model, ["conv1", "conv2"], data="data", config=settings)
>>> len(rep.to_frame())  # 2 classes x 2 layers x 2 concepts
8
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_PUBLIC = {
    "score": "concepts.scoring",
    "ScoreResult": "concepts.score_result",
    "report": "concepts.reporting",
    "layers": "concepts.layer_browser",
    "Report": "concepts.reporting",
    "compare": "concepts.comparison",
    "Comparison": "concepts.comparison",
    "ImageSet": "concepts.sets",
    "default_preprocess": "concepts.sets",
    "random_sets": "concepts.sets",
    "read_volume": "concepts.volumes",
    "volume_preprocess": "concepts.volumes",
    "radiomics": "concepts.measures",
    "measure": "concepts.measures",
    "measure_table": "concepts.measures",
    "Measure": "concepts.measures",
    "rank_measures": "concepts.ranking",
    "Ranking": "concepts.ranking",
    "Config": "concepts.config",
    "write_manifest": "concepts.manifests",
    "check_manifest": "concepts.manifests",
    "DataLayout": "concepts.layout",
}

__all__ = sorted(_PUBLIC) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        module = importlib.import_module(_PUBLIC[name])
        return getattr(module, name)
    raise AttributeError(f"module 'concepts' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
