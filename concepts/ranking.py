"""``concepts.rank_measures``: which continuous (e.g. radiomic) concepts each layer encodes and uses.

Every column of a measure table becomes a regression concept; all of them are fitted on the
same cached activations and scored on the same gradients, then ranked by held-out R² and |Br|,
with one multiple-comparison correction across the whole ranking.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from .errors import MeasureError
from .measures import Measure


def measures_from_table(table: pd.DataFrame, columns: Sequence[str] | None = None,
                        min_images: int = 10) -> list[Measure]:
    """One :class:`Measure` per column of a measure table (index: image paths).

    Columns with fewer than ``min_images`` finite values or no variation are skipped with one warning.

    Example:
        >>> table = concepts.measure_table("data/classes")  # doctest: +SKIP
        >>> measures_from_table(table, ["original_firstorder_Mean"])  # doctest: +SKIP
    """
    columns = list(table.columns) if columns is None else list(columns)
    unknown = [c for c in columns if c not in table.columns]
    if unknown:
        raise MeasureError(f"Columns {unknown} are not in the measure table; it has {list(table.columns)[:10]}...")
    measures, skipped = [], []
    for column in columns:
        values = pd.to_numeric(table[column], errors="coerce").astype(float)
        values = values[np.isfinite(values.to_numpy())]
        if len(values) < min_images or values.nunique() < 2:
            skipped.append(column)
            continue
        measures.append(Measure(name=column, values=values, description=f"measure table column {column}"))
    if skipped:
        warnings.warn(f"{len(skipped)} measures left out (fewer than {min_images} finite values or constant): "
                      f"{skipped[:8]}{'...' if len(skipped) > 8 else ''}", UserWarning, stacklevel=2)
    if not measures:
        raise MeasureError("No usable measure in the table: every column is constant or mostly NaN.")
    return measures


def rank_measures(model: Any, layers: Sequence[str], table: pd.DataFrame, *, columns: Sequence[str] | None = None,
                  data: str | os.PathLike | None = None, examples: Any = None,
                  classes: Sequence[str | int] | None = None,
                  class_names: Sequence[str] | Mapping[str, int] | None = None, n_random: int = 10,
                  target: str = "logit", seed: int = 0, preprocess: Callable | None = None, batch_size: int = 32,
                  correction: str = "holm", significance: float = 0.05, pool: str | bool = "auto",
                  cache_dir: str | os.PathLike | bool | None = None, progress: bool = True,
                  on_error: str = "raise", memory_budget: int | str | None = "2GB",
                  client: Any = None) -> pd.DataFrame:
    """Rank every measure of ``table`` in every layer by held-out R² and Br, with significance.

    The class examples come from ``examples=`` or ``<data>/classes``; by default ``data`` is the
    folder two levels above the measured images (``data/classes/<class>/image.png``).

    Other arguments (``n_random``, ``correction``, ``on_error``, ``memory_budget``, ``client``, ...) are as in
    :func:`concepts.score`;
    every one is validated before anything is computed.

    Returns:
        The tidy table of :func:`concepts.score` (``kind == "rcv"``), sorted by layer order, then by
        held-out R² and |Br|, with a ``rank`` column per (class, layer).

    Example:
        >>> table = concepts.measure_table("data/classes", masks="data/masks")  # doctest: +SKIP
        >>> concepts.rank_measures(model, ["conv1", "conv2"], table).head()  # doctest: +SKIP
    """
    from .reporting import report
    from .validation import validate_options

    validate_options({k: v for k, v in locals().items() if k not in ("model", "report", "validate_options")})
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"table must be a pandas DataFrame of measures (one row per image), not {type(table).__name__}.")
    measures = measures_from_table(table, columns)
    if data is None and examples is None:
        first = Path(str(table.index[0]))
        if first.parent.parent.name == "classes":
            data = first.parent.parent.parent
    result = report(model, layers, concepts=[], classes=classes, data=data, measures=measures, examples=examples,
                    class_names=class_names, n_random=n_random, target=target, seed=seed, preprocess=preprocess,
                    batch_size=batch_size, correction=correction, significance=significance, pool=pool,
                    cache_dir=cache_dir, progress=progress, on_error=on_error, memory_budget=memory_budget,
                    client=client)
    frame = result.to_frame()
    layer_order = {layer: i for i, layer in enumerate(layers)}
    frame["_layer"] = frame["layer"].map(layer_order)
    frame["_absbr"] = frame["br"].abs()
    frame = frame.sort_values(["class", "_layer", "r2_cv", "_absbr"], ascending=[True, True, False, False])
    frame["rank"] = frame.groupby(["class", "layer"]).cumcount() + 1
    return frame.drop(columns=["_layer", "_absbr"]).reset_index(drop=True)
