"""``concepts.rank_measures``: which continuous (e.g. radiomic) concepts each layer encodes and uses.

Every column of a measure table becomes a regression concept; all of them are fitted on the
same cached activations and scored on the same gradients, then ranked by held-out R² and |Br|,
with one multiple-comparison correction across the whole ranking. The answer is a
:class:`Ranking`, a :class:`concepts.Report` whose table is sorted and carries a ``rank`` column.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from .config import Config, uses_config
from .errors import MeasureError
from .measures import Measure
from .reporting import Report


def measures_from_table(table: pd.DataFrame, columns: Sequence[str] | None = None,
                        min_images: int = 10) -> list[Measure]:
    """One :class:`Measure` per column of a measure table (index: image paths).

    Columns with fewer than ``min_images`` finite values or no variation are skipped with one warning.

    Examples
    --------
    >>> table = concepts.measure_table("data/classes", masks="data/masks", n_jobs=1, progress=False)
    >>> table.shape  # 24 class images, every default pyradiomics feature
    (24, 102)
    >>> measures_from_table(table, ["original_firstorder_Mean"])
    [Measure('original_firstorder_Mean', 24 images; measure table column original_firstorder_Mean)]
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


class Ranking(Report):
    """The answer of :func:`concepts.rank_measures`: a :class:`~concepts.Report` whose table is ranked.

    ``to_frame()`` is the tidy table sorted by class, layer order, held-out R² and |Br|, with a
    ``rank`` column per (class, layer); plots, ``significant``, ``save`` and the HTML view are those
    of a report.

    ``rank_measures`` used to return that table itself. For one release, DataFrame use
    (``ranking["concept"]``, ``ranking.head()``, ``ranking.attrs``, iteration) still works on the
    table, with a ``FutureWarning``: call ``.to_frame()`` instead.

    Examples
    --------
    >>> table = concepts.measure_table("data/classes", masks="data/masks", n_jobs=1, progress=False,
    ...                                features=["firstorder_Mean", "glcm_Contrast"])
    >>> ranking = concepts.rank_measures(model, ["conv1", "conv2"], table)
    >>> ranking.to_frame().query("rank == 1")[["class", "layer", "concept"]]
         class  layer                 concept
    0    other  conv1  original_glcm_Contrast
    2    other  conv2  original_glcm_Contrast
    4  striped  conv1  original_glcm_Contrast
    6  striped  conv2  original_glcm_Contrast
    """

    def __init__(self, report: Report, ranked: pd.DataFrame) -> None:
        super().__init__(report._outcome, sanity=report.sanity, headline=report.headline, title=report.title,
                         context=report._context)
        self._table = ranked

    def _frame_for_old_code(self, what: str) -> pd.DataFrame:
        warnings.warn(f"rank_measures now returns a result object ({type(self).__name__}); call .to_frame() for "
                      f"the table ({what} on the result will stop working in a future release).", FutureWarning,
                      stacklevel=3)
        return self._table

    def __getattr__(self, name: str) -> Any:
        # Only reached for names a Ranking does not have: DataFrame attributes of the former return value.
        if name.startswith("_") or "_table" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        if not hasattr(pd.DataFrame, name) and name not in self._table.columns:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return getattr(self._frame_for_old_code(f".{name}"), name)

    def __getitem__(self, key: Any) -> Any:
        return self._frame_for_old_code("[...]")[key]

    def __iter__(self):
        return iter(self._frame_for_old_code("iteration"))

    def __contains__(self, key: Any) -> bool:
        return key in self._frame_for_old_code("'in'")


@uses_config
def rank_measures(model: Any, layers: str | Sequence[str], table: pd.DataFrame, *,
                  columns: Sequence[str] | None = None,
                  data: str | os.PathLike | None = None, examples: Any = None,
                  classes: Sequence[str | int] | None = None,
                  class_names: Sequence[str] | Mapping[str, int] | None = None, n_random: int = 20,
                  target: str = "logit", seed: int = 0, preprocess: Callable | None = None, batch_size: int = 32,
                  correction: str = "holm", significance: float = 0.05, pool: str | bool = "auto",
                  cache_dir: str | os.PathLike | bool | None = None, progress: bool = True,
                  on_error: str = "raise", memory_budget: int | str | None = "2GB",
                  client: Any = None, config: Config | None = None) -> Ranking:
    """Rank every measure of ``table`` in every layer by held-out R² and Br, with significance.

    The class examples come from ``examples=`` or ``<data>/classes``; by default ``data`` is the
    folder two levels above the measured images (``data/classes/<class>/image.png``).

    Parameters
    ----------
    model : keras.Model or path
        As in :func:`concepts.score`.
    layers : str or list of str
        Layer names or ``outer/inner`` paths, in model order.
    table : pandas.DataFrame
        The measure table (one row per image, indexed by image path; :func:`concepts.measure_table`).
    columns : list of str, optional
        The measures to rank (default every column).
    config : concepts.Config, optional
        A reusable setting of the options; keywords given explicitly in the call win over it.
    **others
        ``n_random``, ``correction``, ``significance``, ``on_error``, ``memory_budget``, ``client``, ...
        as in :func:`concepts.score`; every one is validated before anything is computed.
        ``n_random`` defaults to 20 like everywhere else (intended change: it used to be 10 here;
        pass ``n_random=10`` for the former default, and the former tables).

    Returns
    -------
    Ranking
        A :class:`~concepts.Report` (plots, ``significant``, ``save``, HTML); ``.to_frame()`` is the
        tidy table of :func:`concepts.score` (``kind == "rcv"``), sorted by layer order, then by
        held-out R² and |Br|, with a ``rank`` column per (class, layer).

    Examples
    --------
    >>> table = concepts.measure_table("data/classes", masks="data/masks", n_jobs=1, progress=False,
    ...                                features=["firstorder_Mean", "glcm_Contrast"])
    >>> ranked = concepts.rank_measures(model, ["conv1", "conv2"], table).to_frame()
    >>> ranked[["class", "layer", "concept", "kind", "rank"]].head(2)
       class  layer                   concept kind  rank
    0  other  conv1    original_glcm_Contrast  rcv     1
    1  other  conv1  original_firstorder_Mean  rcv     2
    """
    from .reporting import report
    from .scoring import _as_layers

    assert config is not None  # resolved by @uses_config from the keywords above
    layers = _as_layers(layers)
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"table must be a pandas DataFrame of measures (one row per image), not {type(table).__name__}.")
    measures = measures_from_table(table, columns)
    if data is None and examples is None:
        first = Path(str(table.index[0]))
        if first.parent.parent.name == "classes":
            data = first.parent.parent.parent
    result = report(model, layers, concepts=[], classes=classes, data=data, measures=measures, examples=examples,
                    class_names=class_names, preprocess=preprocess, client=client, config=config,
                    title="Measure ranking")
    frame = result.to_frame()
    layer_order = {layer: i for i, layer in enumerate(layers)}
    frame["_layer"] = frame["layer"].map(layer_order)
    frame["_absbr"] = frame["br"].abs()
    frame = frame.sort_values(["class", "_layer", "r2_cv", "_absbr"], ascending=[True, True, False, False])
    frame["rank"] = frame.groupby(["class", "layer"]).cumcount() + 1
    return Ranking(result, frame.drop(columns=["_layer", "_absbr"]).reset_index(drop=True))
