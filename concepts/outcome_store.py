"""Analysis outcomes as JSON plus plain arrays, so that a cached result never runs code when read.

An outcome (tidy table, per-run arrays, RCV scatter tables, provenance) is split into a
JSON-serialisable description and a dict of numeric arrays, stored together as one entry of
:class:`probes.cache.Store` (``record.json`` + ``arrays.npz`` read with ``allow_pickle=False``).
Numeric and boolean columns travel as arrays, so values and dtypes come back bit for bit; text
columns travel as JSON lists. Anything that does not fit (an object that is neither text nor a
number) raises :class:`TypeError`, and the caller simply does not cache that outcome.

Examples
--------
>>> table = pd.DataFrame({"concept": ["a", "b"], "score": [0.25, 0.75]})
>>> data, arrays = encode_frame(table, "t")
>>> decode_frame(data, arrays).equals(table)
True
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

#: Version of this encoding; part of the outcome's cache key.
ENCODING_VERSION = "outcome-json-v2"

_SCALARS = (str, bool, int, float, type(None))


def _plain(value: Any) -> Any:
    """JSON-ready copy of ``value``: numpy scalars become Python ones, tuples lists; else TypeError."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray) and value.dtype != object:
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise TypeError(f"dict keys must be text to be stored as JSON, got {list(value)[:3]}")
        return {k: _plain(v) for k, v in value.items()}
    raise TypeError(f"cannot store a {type(value).__name__} as JSON")


def encode_frame(frame: pd.DataFrame, prefix: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``(description, arrays)`` of a DataFrame with text columns and numeric/bool columns.

    Raises
    ------
    TypeError
        A column holds objects that are neither text nor numbers, or a name is not text.

    Examples
    --------
    >>> encode_frame(pd.DataFrame({"x": [1.0]}), "f")[0]["columns"]
    [{'name': 'x', 'kind': 'array'}]
    """
    columns = []
    arrays: dict[str, np.ndarray] = {}
    for j, name in enumerate(frame.columns):
        if not isinstance(name, str):
            raise TypeError(f"column name {name!r} is not text")
        series = frame[name]
        if series.dtype == object or isinstance(series.dtype, pd.StringDtype):
            values = [None if v is None else _plain(v) for v in series.tolist()]
            if not all(isinstance(v, _SCALARS) for v in values):
                raise TypeError(f"column {name!r} holds values that are not text or numbers")
            # The dtype's name restores pandas' text dtype ("str" in pandas 3) as well as "object".
            columns.append({"name": name, "kind": "json", "dtype": str(series.dtype), "values": values})
        else:
            array = series.to_numpy()
            if array.dtype == object or array.dtype.kind not in "biufcUSM":
                raise TypeError(f"column {name!r} has dtype {series.dtype}")
            arrays[f"{prefix}/{j}"] = array
            columns.append({"name": name, "kind": "array"})
    index = frame.index
    if isinstance(index, pd.RangeIndex) and index.start == 0 and index.step == 1:
        index_data: Any = None
    else:
        index_data = {"name": _plain(index.name), "values": _plain(list(index))}
    return {"columns": columns, "index": index_data, "attrs": _plain(dict(frame.attrs)), "n": len(frame)}, arrays


def decode_frame(data: dict[str, Any], arrays: dict[str, np.ndarray], prefix: str = "t") -> pd.DataFrame:
    """The DataFrame that :func:`encode_frame` described (same values, dtypes, order and attrs).

    Examples
    --------
    >>> frame = pd.DataFrame({"ok": [True, False]})
    >>> decode_frame(*encode_frame(frame, "p"), prefix="p").dtypes["ok"]
    dtype('bool')
    """
    columns: dict[str, Any] = {}
    for j, column in enumerate(data["columns"]):
        if column["kind"] == "json":
            values = pd.Series(column["values"], dtype=object)
            dtype = column.get("dtype", "object")
            columns[column["name"]] = values if dtype == "object" else values.astype(dtype)
        else:
            columns[column["name"]] = pd.Series(arrays[f"{prefix}/{j}"])
    frame = pd.DataFrame(columns, columns=[c["name"] for c in data["columns"]])
    if data.get("index") is not None:
        frame.index = pd.Index(data["index"]["values"], name=data["index"]["name"])
    frame.attrs.update(data.get("attrs") or {})
    return frame


#: Outcome fields that map a key tuple to named arrays (runs, concept vectors, per-example rows).
KEYED_FIELDS = ("runs", "vectors", "per_example")


def _encode_keyed(field_name: str, mapping: dict, arrays: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    index = []
    for i, (key, named) in enumerate(mapping.items()):
        index.append({"key": _plain(list(key)), "arrays": sorted(named)})
        for name, value in named.items():
            value = np.asarray(value)
            if value.dtype == object:
                raise TypeError(f"{field_name} array {name!r} of {key} has dtype object")
            arrays[f"{field_name}/{i}/{name}"] = value
    return index


def encode_outcome(table: pd.DataFrame, runs: dict, scatter: dict, provenance: dict, *,
                   vectors: dict | None = None, per_example: dict | None = None,
                   example_files: dict | None = None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``(description, arrays)`` of an analysis outcome; TypeError when part of it cannot be stored.

    Examples
    --------
    >>> data, arrays = encode_outcome(pd.DataFrame({"x": [1.0]}), {("c", "l", "k"): {"s": np.ones(2)}}, {}, {})
    >>> sorted(arrays)
    ['runs/0/s', 'table/0']
    """
    table_data, arrays = encode_frame(table, "table")
    keyed = {"runs": runs, "vectors": vectors or {}, "per_example": per_example or {}}
    indexes = {name: _encode_keyed(name, mapping, arrays) for name, mapping in keyed.items()}
    scatter_index = []
    for i, (key, frame) in enumerate(scatter.items()):
        frame_data, frame_arrays = encode_frame(frame, f"scatter/{i}")
        scatter_index.append({"key": _plain(list(key)), "frame": frame_data})
        arrays.update(frame_arrays)
    data = {"encoding": ENCODING_VERSION, "table": table_data, **indexes, "scatter": scatter_index,
            "provenance": _plain(provenance),
            "example_files": {str(k): [str(f) for f in v] for k, v in (example_files or {}).items()}}
    return data, arrays


def decode_outcome(data: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """The fields of an outcome (``table``, ``runs``, ``scatter``, ``provenance``, ``vectors``,
    ``per_example``, ``example_files``) from its encoding.

    Raises
    ------
    ValueError
        The description was written by another encoding version.

    Examples
    --------
    >>> fields = decode_outcome(*encode_outcome(pd.DataFrame({"x": [1.0]}), {}, {}, {"seed": 0}))
    >>> fields["provenance"]
    {'seed': 0}
    """
    if not isinstance(data, dict) or data.get("encoding") != ENCODING_VERSION:
        raise ValueError(f"not an outcome of encoding {ENCODING_VERSION}")
    table = decode_frame(data["table"], arrays, "table")
    keyed = {name: {tuple(item["key"]): {array: arrays[f"{name}/{i}/{array}"] for array in item["arrays"]}
                    for i, item in enumerate(data[name])} for name in KEYED_FIELDS}
    scatter = {tuple(item["key"]): decode_frame(item["frame"], arrays, f"scatter/{i}")
               for i, item in enumerate(data["scatter"])}
    return {"table": table, **keyed, "scatter": scatter, "provenance": data["provenance"],
            "example_files": {k: list(v) for k, v in data["example_files"].items()}}


def analysis_provenance(engine: Any, opts: Any, cav_alphas: dict[str, float], classes: Any, folder_concepts: Any,
                        measure_concepts: Any, random_sets: Any) -> dict[str, Any]:
    """What an analysis computed, how: the provenance stored with its outcome.

    Parameters
    ----------
    engine : probes.engine.Engine
    opts : concepts.analysis.Options
    cav_alphas : dict
        The CAV penalty chosen per layer.
    classes, folder_concepts, measure_concepts, random_sets
        The analysis's inputs (:meth:`concepts.analysis.Analysis.run`).

    Returns
    -------
    dict
        JSON-serialisable: model fingerprint, layers, target, inputs' sizes, options and versions.

    Examples
    --------
    >>> from concepts.analysis import Options
    >>> class _Engine:
    ...     fingerprint, layers, layer_shapes, layer_widths = "f", [], {}, {}
    ...     target_description = "logit"
    >>> analysis_provenance(_Engine(), Options(), {}, [], [], [], [])["model_fingerprint"]
    'f'
    """
    import keras
    import sklearn

    import tensorflow as tf

    return {
        "model_fingerprint": engine.fingerprint,
        "layers": {layer: {"shape": list(engine.layer_shapes[layer]),
                           "width": int(engine.layer_widths[layer])} for layer in engine.layers},
        "target": engine.target_description,
        "classes": {c.name: {"output_index": c.index, "n_examples": len(c.images)} for c in classes},
        "concepts": {**{c.name: {"kind": "cav", "n_images": len(c.images)} for c in folder_concepts},
                     **{m.name: {"kind": "rcv", "n_images": len(m.values), "measure": m.description}
                        for m in measure_concepts}},
        "random_sets": {"n_sets": len(random_sets), "null_pairs": opts.null_pairs,
                        "set_sizes": [len(s) for s in random_sets]},
        "seed": opts.seed, "n_random_runs": opts.n_random, "relative": opts.relative,
        "test": f"two-sided t prediction test of the concept's mean {opts.statistic} among the random sets' "
                "(or shuffled measures') values",
        "test_statistic": opts.statistic,
        "classifier": "ridge least-squares (dual, default)" if opts.classifier is None else repr(opts.classifier),
        "alpha": opts.alpha, "alpha_scale": opts.alpha_scale, "cav_alpha_per_layer": dict(cav_alphas),
        "test_size": opts.test_size, "correction": opts.correction,
        "significance_level": opts.significance, "ubs_directions": opts.n_directions,
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__, "numpy": np.__version__,
                     "scikit-learn": sklearn.__version__, "pandas": pd.__version__},
    }
