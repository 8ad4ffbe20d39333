"""A model's fingerprint for the engine's cache keys, and randomised-weight copies of a model.

:func:`_model_fingerprint` identifies what a model computes (engine version, config, weights,
custom code) so cached activations and gradients are matched only to the same model;
:func:`randomize_weights` makes the re-initialised copy used by the "randomised model loses its
concepts" sanity check.
"""
from __future__ import annotations

import hashlib
from typing import Any

from probes.keras_graph import UnsupportedModelError, graph_of as _graph_of
from probes.model_outputs import _keras

__all__ = ["randomize_weights"]

# Bumped whenever what the engine computes for a given key changes meaning.
_ENGINE_VERSION = "engine-v1"

def _model_fingerprint(model: Any) -> str:
    """The engine version plus :func:`probes.identity.model_identity` (config, weights, custom code).

    A model whose identity cannot be established (``get_config`` fails) gets a fingerprint that
    matches nothing (:func:`probes.identity.unidentified_fingerprint`), with one warning: its
    results are computed but never matched to another model's cached ones.
    """
    from probes.identity import model_identity, unidentified_fingerprint

    identity = model_identity(model)
    if identity is None:
        import warnings

        warnings.warn(f"Model {getattr(model, 'name', type(model).__name__)!r} cannot be identified "
                      "(its get_config() fails), so nothing computed with it is cached. Implement get_config() "
                      "in its custom layers to enable caching.", UserWarning, stacklevel=3)
        return unidentified_fingerprint()
    return hashlib.sha256(f"{_ENGINE_VERSION}|{identity}".encode()).hexdigest()


def randomize_weights(model: Any, seed: int = 0) -> Any:
    """A copy of ``model`` with every weight freshly re-initialised (seeded); ``model`` is untouched.

    Used for the sanity check "a model with randomised weights should lose its concepts". Each
    layer's own initialisers are re-run with a distinct seed derived from ``seed``, so the result
    is reproducible and no two layers share values.

    Examples
    --------
    >>> random_model = randomize_weights(model, seed=1)
    >>> random_model.count_params() == model.count_params()
    True
    >>> before, after = model.get_layer("head").get_weights()[0], random_model.get_layer("head").get_weights()[0]
    >>> bool(np.allclose(before, after))
    False
    """
    keras = _keras()
    if not isinstance(model, keras.Model) or _graph_of(model) is None:
        raise UnsupportedModelError(
            "randomize_weights needs a Sequential or Functional keras model (nested models "
            f"allowed); got {type(model).__name__}. Rebuild subclassed models as functional ones.")
    counter = [0]

    def seed_initializers(config: Any) -> Any:
        if isinstance(config, dict):
            cfg = config.get("config")
            if (isinstance(cfg, dict) and "seed" in cfg
                    and "initializers" in str(config.get("module", ""))):
                counter[0] += 1
                cfg = dict(cfg, seed=int(seed) * 100003 + counter[0])
                config = dict(config, config=cfg)
            return {k: seed_initializers(v) for k, v in config.items()}
        if isinstance(config, list):
            return [seed_initializers(v) for v in config]
        return config

    def clone(layer: Any) -> Any:
        return layer.__class__.from_config(seed_initializers(layer.get_config()))

    copy = keras.models.clone_model(model, clone_function=clone, recursive=True)
    if not copy.built:
        copy.build((None, *tuple(_graph_of(model).inputs[0].shape[1:])))
    return copy
